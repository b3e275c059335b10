#include "polymesh/sdk/output_tail.hpp"

#include "utf8_start.hpp"

namespace polymesh::sdk {

output_tail::output_tail(log_sink* next, size_t max_bytes)
    : next_(next)
    , max_bytes_(max_bytes) {}

void output_tail::write(log_stream stream, std::string_view data) {
  if (next_) next_->write(stream, data);
  std::lock_guard<std::mutex> guard{mtx_};
  tail_.append(data);
  if (tail_.size() > max_bytes_) {
    tail_.erase(0, tail_.size() - max_bytes_);
    cut_ = true;
  }
}

std::string output_tail::tail() const {
  std::lock_guard<std::mutex> guard{mtx_};
  if (!cut_) return tail_;
  // A cut line reads as garbage; start at the next full line if there is one,
  // else at the next whole UTF-8 character (the cut may split one).
  auto nl = tail_.find('\n');
  if (nl != std::string::npos && nl + 1 < tail_.size()) return tail_.substr(nl + 1);
  return tail_.substr(utf8_start(tail_, 0));
}

} // namespace polymesh::sdk
