// Injected time. Every component that reads "now" takes a `clock&`; tests
// drive a `manual_clock` so that no test sleeps for a timeout to pass.
//
// Thread-safety: both implementations may be read from any thread; a
// `manual_clock` is advanced by the test thread only.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <utility>

namespace polymesh {

using timestamp = std::chrono::system_clock::time_point;
using duration = std::chrono::milliseconds;

class clock {
public:
  virtual ~clock() = default;
  /// The current wall-clock time, millisecond resolution.
  [[nodiscard]] virtual timestamp now() const = 0;
  /// Monotonic time, for measuring how long the process went without
  /// running (a `SIGSTOP`, a suspended host: it counts suspended time):
  /// never steps with the wall clock.
  [[nodiscard]] virtual duration monotonic() const = 0;
  /// `now` and `monotonic` read together: a test clock's `stall` moves both
  /// at once, and a reader must not see one moved without the other.
  [[nodiscard]] virtual std::pair<timestamp, duration> now_and_monotonic() const {
    return {now(), monotonic()};
  }
};

/// The real clock (`std::chrono::system_clock`).
class system_clock final : public clock {
public:
  [[nodiscard]] timestamp now() const override;
  [[nodiscard]] duration monotonic() const override;
};

/// A clock that only moves when told to. Starts at a fixed instant so that
/// test output is reproducible.
class manual_clock final : public clock {
public:
  manual_clock();
  explicit manual_clock(timestamp start);
  [[nodiscard]] timestamp now() const override;
  /// Moves with `stall` only: `advance` is time that passes while the
  /// process runs.
  [[nodiscard]] duration monotonic() const override;
  [[nodiscard]] std::pair<timestamp, duration> now_and_monotonic() const override;
  void advance(duration d);
  void set(timestamp t);
  /// Time that passes while the process does not run (stopped, or its host
  /// suspended): both the wall clock and `monotonic` move by `d`.
  void stall(duration d);

private:
  std::atomic<int64_t> ms_since_epoch_;
  std::atomic<int64_t> monotonic_ms_{0};
  mutable std::mutex stall_mtx_;
};

/// Milliseconds since the Unix epoch, the store's representation.
[[nodiscard]] int64_t to_unix_ms(timestamp t);
[[nodiscard]] timestamp from_unix_ms(int64_t ms);

/// RFC 3339 UTC with millisecond precision, e.g. `2026-11-23T20:45:03.120Z`.
[[nodiscard]] std::string to_rfc3339(timestamp t);
/// Parses the form produced by `to_rfc3339` (fraction optional, `Z` only).
[[nodiscard]] std::optional<timestamp> parse_rfc3339(const std::string& text);

} // namespace polymesh
