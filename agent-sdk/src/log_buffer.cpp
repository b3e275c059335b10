#include "log_buffer.hpp"

#include <utility>

namespace polymesh::sdk {

log_buffer::log_buffer(size_t chunk_bytes, size_t max_buffered,
                       const cancel_token* cancel, size_t max_total,
                       std::string max_total_key)
    : chunk_bytes_(chunk_bytes)
    , max_buffered_(max_buffered)
    , cancel_(cancel)
    , max_total_(max_total)
    , max_total_key_(std::move(max_total_key)) {}

void log_buffer::note_locked(std::string text) {
  buffered_ += text.size();
  chunks_.push_back(pending_chunk{next_seq_++, log_stream::err, std::move(text)});
  back_open_ = false;
  ready_cv_.notify_all();
}

size_t log_buffer::incomplete_utf8_tail(std::string_view s) {
  // Walk back over at most 3 continuation bytes to the lead byte.
  size_t n = 0;
  while (n < s.size() && n < 3 &&
         (static_cast<unsigned char>(s[s.size() - 1 - n]) & 0xC0) == 0x80)
    ++n;
  if (n == s.size()) return 0;
  auto lead = static_cast<unsigned char>(s[s.size() - 1 - n]);
  size_t need = (lead & 0xE0) == 0xC0   ? 2
                : (lead & 0xF0) == 0xE0 ? 3
                : (lead & 0xF8) == 0xF0 ? 4
                                        : 1;
  if (need == 1 || n + 1 >= need) return 0; // ASCII, not UTF-8, or complete
  return n + 1;
}

std::string log_buffer::replace_invalid_utf8(std::string_view s) {
  // RFC 3629's table: the second byte's range depends on the lead byte.
  auto length = [](unsigned char c, unsigned char& lo, unsigned char& hi) -> size_t {
    lo = 0x80;
    hi = 0xBF;
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF) return 2;
    if (c >= 0xE0 && c <= 0xEF) {
      if (c == 0xE0) lo = 0xA0;
      if (c == 0xED) hi = 0x9F;
      return 3;
    }
    if (c >= 0xF0 && c <= 0xF4) {
      if (c == 0xF0) lo = 0x90;
      if (c == 0xF4) hi = 0x8F;
      return 4;
    }
    return 0;
  };
  std::string out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    unsigned char lo = 0;
    unsigned char hi = 0;
    auto n = length(static_cast<unsigned char>(s[i]), lo, hi);
    size_t ok = n == 0 ? 0 : 1; // bytes of the character that are valid
    while (ok > 0 && ok < n && i + ok < s.size()) {
      auto c = static_cast<unsigned char>(s[i + ok]);
      if (c < (ok == 1 ? lo : 0x80) || c > (ok == 1 ? hi : 0xBF)) break;
      ++ok;
    }
    if (n > 0 && ok == n) {
      out.append(s.data() + i, n);
      i += n;
    } else if (n > 0 && i + ok == s.size()) {
      out.append(s.data() + i, ok); // cut short by the end: the next write ends it
      i += ok;
    } else {
      out += "\xEF\xBF\xBD";
      ++i;
    }
  }
  return out;
}

void log_buffer::on_first_write(std::function<void()> f) {
  std::lock_guard<std::mutex> guard{mtx_};
  on_first_write_ = std::move(f);
}

void log_buffer::write(log_stream stream, std::string_view data) {
  if (data.empty()) return;
  std::unique_lock<std::mutex> guard{mtx_};
  if (discarded_) return;
  if (on_first_write_) {
    // Taken out, so it runs once. Before the data goes in, so that whoever
    // drains the buffer runs before a writer can block on a full one.
    auto f = std::exchange(on_first_write_, nullptr);
    guard.unlock();
    f();
    guard.lock();
  }
  // Counted as the mesh will store it: invalid bytes become U+FFFD here. A
  // character cut short by the end of this write waits for the next write
  // of its stream (or `close`, which replaces it).
  auto& split = split_[stream == log_stream::err ? 1 : 0];
  auto clean = replace_invalid_utf8(split + std::string{data});
  auto tail = incomplete_utf8_tail(clean);
  split = clean.substr(clean.size() - tail);
  clean.resize(clean.size() - tail);
  if (clean.empty()) return;
  data = clean;
  auto cost = data.size();
  // A run's log has a ceiling: a plan printing without end would otherwise
  // fill the mesh's disk (and the agent's bandwidth) for a week of retention.
  bool capped_now = false;
  if (cost > max_total_ - written_) {
    auto keep = max_total_ - written_;
    keep -= incomplete_utf8_tail(data.substr(0, keep));
    capped_now = over_ == 0;
    over_ += data.size() - keep;
    data = data.substr(0, keep);
    // Bytes left by a character that did not fit stay unused: the log ends
    // where the note says.
    written_ = max_total_;
  } else {
    written_ += cost;
  }
  while (!data.empty()) {
    // Backpressure: the plan (and through the pipe its process) waits for
    // the mesh rather than the agent growing without bound.
    while (buffered_ >= max_buffered_ && !closed_ && !discarded_ &&
           !(cancel_ && cancel_->canceled()))
      space_cv_.wait_for(guard, std::chrono::milliseconds{100});
    if (discarded_) return;
    if (buffered_ >= max_buffered_ && !closed_) {
      // Canceled: the writer must not block (its process is being stopped),
      // and the buffer must not grow either (a plan ignoring SIGTERM could
      // write gigabytes in the grace). The rest is dropped, and said so.
      dropped_ += data.size();
      return;
    }
    if (!back_open_ || chunks_.back().stream != stream ||
        chunks_.back().data.size() >= chunk_bytes_) {
      chunks_.push_back(pending_chunk{next_seq_++, stream, {}});
      back_open_ = true;
    }
    auto& back = chunks_.back();
    auto room = chunk_bytes_ - back.data.size();
    auto n = std::min(data.size(), room);
    if (n < data.size()) {
      // The chunk fills up here: end it on a character boundary.
      auto cut = n - incomplete_utf8_tail(data.substr(0, n));
      if (cut > 0 || !back.data.empty()) n = cut;
    }
    back.data.append(data.data(), n);
    buffered_ += n;
    data.remove_prefix(n);
    if (!data.empty() || back.data.size() >= chunk_bytes_) {
      // Full (possibly a few bytes short of chunk_bytes_ at a boundary).
      back_open_ = false;
      ready_cv_.notify_all();
    }
  }
  if (capped_now)
    note_locked("\n[polymesh: this run's log reached " + std::to_string(max_total_) +
                " bytes, the limit set by " + max_total_key_ +
                "; further output is dropped]\n");
}

bool log_buffer::has_full_chunk_locked() const {
  return chunks_.size() > 1 ||
         (!chunks_.empty() && chunks_.front().data.size() >= chunk_bytes_);
}

std::vector<pending_chunk> log_buffer::take(size_t max_chunks, bool flush,
                                            size_t max_bytes) {
  std::lock_guard<std::mutex> guard{mtx_};
  std::vector<pending_chunk> out;
  size_t bytes = 0;
  for (size_t i = 0; i < chunks_.size() && out.size() < max_chunks; ++i) {
    if (!out.empty() && bytes + chunks_[i].data.size() > max_bytes) break;
    bool is_back = i + 1 == chunks_.size();
    if (is_back && back_open_) {
      if (!flush && chunks_[i].data.size() < chunk_bytes_) break;
      // Taken chunks never change. A character still incomplete at the end
      // moves to a new chunk, unless no more output can complete it.
      auto tail = closed_ ? 0 : incomplete_utf8_tail(chunks_[i].data);
      if (tail == chunks_[i].data.size()) break;
      back_open_ = false;
      if (tail > 0) {
        auto& d = chunks_[i].data;
        pending_chunk rest{next_seq_++, chunks_[i].stream, d.substr(d.size() - tail)};
        d.resize(d.size() - tail);
        chunks_.push_back(std::move(rest));
        back_open_ = true;
      }
    }
    bytes += chunks_[i].data.size();
    out.push_back(chunks_[i]);
  }
  return out;
}

void log_buffer::ack(int64_t seq) {
  std::lock_guard<std::mutex> guard{mtx_};
  while (!chunks_.empty() && chunks_.front().seq <= seq) {
    if (chunks_.size() == 1 && back_open_) break; // never taken, so never sent
    buffered_ -= chunks_.front().data.size();
    chunks_.pop_front();
  }
  space_cv_.notify_all();
}

void log_buffer::wait_ready(std::chrono::milliseconds d) {
  std::unique_lock<std::mutex> guard{mtx_};
  ready_cv_.wait_for(guard, d,
                     [this] { return closed_ || discarded_ || has_full_chunk_locked(); });
}

void log_buffer::close() {
  std::lock_guard<std::mutex> guard{mtx_};
  if (discarded_) {
    closed_ = true;
    return;
  }
  // A character never finished: its bytes are U+FFFD, as the mesh would
  // store them, within the ceiling.
  for (auto stream : {log_stream::out, log_stream::err}) {
    auto& split = split_[stream == log_stream::err ? 1 : 0];
    if (split.empty() || closed_) continue;
    std::string text;
    for (size_t i = 0; i < split.size(); ++i)
      text += "\xEF\xBF\xBD";
    split.clear();
    if (text.size() > max_total_ - written_) {
      over_ += text.size();
      continue;
    }
    written_ += text.size();
    buffered_ += text.size();
    chunks_.push_back(pending_chunk{next_seq_++, stream, std::move(text)});
    back_open_ = false;
  }
  if (dropped_ > 0 && !closed_)
    note_locked("\n[polymesh: " + std::to_string(dropped_) +
                " bytes of output after the cancel were dropped: the log buffer "
                "(logs.buffer_bytes) was full]\n");
  if (over_ > 0 && !closed_)
    note_locked("[polymesh: " + std::to_string(over_) +
                " bytes of output past the limit set by " + max_total_key_ +
                " were dropped]\n");
  closed_ = true;
  space_cv_.notify_all();
  ready_cv_.notify_all();
}

void log_buffer::discard() {
  std::lock_guard<std::mutex> guard{mtx_};
  discarded_ = true;
  chunks_.clear();
  back_open_ = false;
  buffered_ = 0;
  split_[0].clear();
  split_[1].clear();
  space_cv_.notify_all();
  ready_cv_.notify_all();
}

size_t log_buffer::buffered_bytes() const {
  std::lock_guard<std::mutex> guard{mtx_};
  return buffered_;
}

bool log_buffer::empty() const {
  std::lock_guard<std::mutex> guard{mtx_};
  return chunks_.empty();
}

int64_t log_buffer::next_seq() const {
  std::lock_guard<std::mutex> guard{mtx_};
  return next_seq_;
}

} // namespace polymesh::sdk
