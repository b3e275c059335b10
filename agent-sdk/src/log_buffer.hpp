// A run's log on its way to the mesh: output cut into numbered chunks, kept
// until the mesh has acknowledged them.
//
// The plan side writes (`write`); the run's shipper takes the chunks to send
// (`take`) and confirms them (`ack`). A chunk's seq and bytes never change
// once taken, so a resend after a failure carries the same chunk and the
// mesh, which ignores repeated seqs, keeps exactly one copy. Memory is
// bounded: a writer blocks while `max_buffered` bytes are unacknowledged,
// unless the run is canceled or the buffer closed (then it never blocks, so
// a cancel cannot deadlock on a mesh that is away).
//
// Chunks end on UTF-8 character boundaries: the mesh stores text, and a
// character cut in two would come back as two replacement characters. Bytes
// that are not UTF-8 at all become U+FFFD here, as the mesh would store them,
// so that the run's ceiling counts the bytes the mesh counts; a character
// split across two writes is held back until its end arrives.
//
// Thread-safety: all members may be called from any thread.
#pragma once

#include "polymesh/sdk/plan.hpp"

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>

namespace polymesh::sdk {

struct pending_chunk {
  int64_t seq = 0;
  log_stream stream = log_stream::out;
  std::string data;
};

class log_buffer final : public log_sink {
public:
  /// REQUIRES: `chunk_bytes > 0`, `max_buffered >= chunk_bytes`.
  /// Output past `max_total` bytes in all is dropped: a note naming
  /// `max_total_key` (the setting that set it) says so where it starts, and
  /// `close` says how much went.
  log_buffer(size_t chunk_bytes, size_t max_buffered,
             const cancel_token* cancel = nullptr, size_t max_total = SIZE_MAX,
             std::string max_total_key = "logs.max_run_bytes");

  void write(log_stream stream, std::string_view data) override;
  /// Calls `f` once, on the writer's thread, after the first write of
  /// something (the agent starts the run's shipper then). REQUIRES: called
  /// before any write.
  void on_first_write(std::function<void()> f);

  /// Returns chunks starting at the oldest unacknowledged one: at most
  /// `max_chunks`, and at most `max_bytes` of data (but always at least one
  /// chunk when one is ready). With `flush`, the chunk being filled is closed
  /// and included too; without, only full chunks (or ones followed by
  /// another) are returned.
  [[nodiscard]] std::vector<pending_chunk> take(size_t max_chunks, bool flush,
                                                size_t max_bytes = SIZE_MAX);
  /// Forgets chunks up to and including `seq`; wakes blocked writers.
  void ack(int64_t seq);
  /// Waits until a full chunk is ready, the buffer is closed, or `d` passed.
  void wait_ready(std::chrono::milliseconds d);
  /// No more writes will come; writers never block again.
  void close();
  /// Nothing of this log will be sent (the mesh refuses the run's reports):
  /// forgets every chunk, and drops every later write; writers never block
  /// again and `empty` holds from now on.
  void discard();

  [[nodiscard]] size_t buffered_bytes() const;
  /// True when every chunk written has been acknowledged.
  [[nodiscard]] bool empty() const;
  /// The seq the next new chunk gets (= the number of chunks created).
  [[nodiscard]] int64_t next_seq() const;

  /// How many bytes at the end of `s` start a UTF-8 character that is not
  /// complete yet (0 to 3).
  [[nodiscard]] static size_t incomplete_utf8_tail(std::string_view s);
  /// `s` with every byte that is not part of a UTF-8 character replaced by
  /// U+FFFD; a valid but incomplete character at the very end is kept.
  [[nodiscard]] static std::string replace_invalid_utf8(std::string_view s);

private:
  [[nodiscard]] bool has_full_chunk_locked() const;
  /// Appends a sealed stderr chunk holding `text` (a note from the agent).
  void note_locked(std::string text);

  const size_t chunk_bytes_;
  const size_t max_buffered_;
  const cancel_token* cancel_;
  const size_t max_total_;
  const std::string max_total_key_;
  mutable std::mutex mtx_;
  std::condition_variable space_cv_;
  std::condition_variable ready_cv_;
  std::deque<pending_chunk> chunks_;
  /// The back chunk may still grow; chunks before it are sealed.
  bool back_open_ = false;
  size_t buffered_ = 0;
  int64_t next_seq_ = 0;
  bool closed_ = false;
  bool discarded_ = false;
  /// Output dropped after a cancel because the buffer was full.
  size_t dropped_ = 0;
  /// Output taken in (at most `max_total_`), and dropped past it.
  size_t written_ = 0;
  size_t over_ = 0;
  /// Per stream (out, err): the start of a character the last write cut
  /// short, held until the next write of that stream completes it.
  std::string split_[2];
  /// Empty once called.
  std::function<void()> on_first_write_;
};

} // namespace polymesh::sdk
