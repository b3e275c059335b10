// A log sink that forwards everything and keeps the last bytes of output,
// which plans such as `shell` return as their result.
//
// Thread-safety: `write` may be called from several threads.
#pragma once

#include "polymesh/sdk/plan.hpp"

#include <mutex>
#include <string>

namespace polymesh::sdk {

class output_tail final : public log_sink {
public:
  /// Forwards to `next` (may be null) and keeps the last `max_bytes`.
  output_tail(log_sink* next, size_t max_bytes);

  void write(log_stream stream, std::string_view data) override;

  /// The kept tail of stdout and stderr, in arrival order. When output was
  /// cut, the tail starts at the beginning of a line where one exists.
  [[nodiscard]] std::string tail() const;

private:
  log_sink* next_;
  size_t max_bytes_;
  mutable std::mutex mtx_;
  std::string tail_;
  bool cut_ = false;
};

} // namespace polymesh::sdk
