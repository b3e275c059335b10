// Injected time. Every component that reads "now" takes a `clock&`; tests
// drive a `manual_clock` so that no test sleeps for a timeout to pass.
//
// Thread-safety: both implementations may be read from any thread; a
// `manual_clock` is advanced by the test thread only.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <utility>

namespace polymesh {

using timestamp = std::chrono::system_clock::time_point;
using duration = std::chrono::milliseconds;

/// A gap this long between two looks at `clock::monotonic` by a process
/// that looks every few hundred ms at most (the timer routines, every
/// `routines.timer_resolution`) means it did not run meanwhile: it was stopped
/// (`SIGSTOP`), its host suspended, or it starved.
inline constexpr std::chrono::milliseconds stall_gap{2000};

/// A step of the wall clock that a clock followed at once.
struct clock_jump {
  /// The clock's time after the jump.
  timestamp at;
  /// How far it jumped.
  duration by;
};

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
  /// How far the host's wall clock is ahead of `now` (negative: behind):
  /// steps of the wall clock that `now` has not caught up with yet.
  [[nodiscard]] virtual duration behind_wall() const { return duration{0}; }
  /// The last step of the wall clock this clock followed at once, if any.
  [[nodiscard]] virtual std::optional<clock_jump> last_jump() const {
    return std::nullopt;
  }
};

/// The real clock: the host's wall clock without its steps. A wall clock
/// steps (an NTP correction, an admin setting the date, a VM resumed): read
/// as it is, a step forward would end every window that waits on an agent
/// (offline, lease, expiry, token) at once, and a step back would hold them
/// off until it caught up, and make timestamps go backwards. This clock moves
/// with the monotonic clock from the wall time it read at its start, and
/// follows the wall clock's steps gradually, at `catch_up_rate` at most (a
/// step of an hour in 20 hours): its time never goes back, and a window it
/// measures is at most 5 % longer or shorter than on the monotonic clock.
/// Only a clock that read a time before `implausible_before` (a host that
/// booted with no real-time clock, and learnt the date later) takes a step
/// forward at once, as a jump: the windows that wait on agents restart from
/// then (the timer routine), as after a stall.
///
/// Thread-safety: any thread; reads take a mutex only while a step is caught
/// up with.
class system_clock final : public clock {
public:
  /// A clock reading, in nanoseconds.
  using source = std::function<int64_t()>;
  /// How much faster or slower than the monotonic clock this clock may move
  /// to catch up with a step of the wall clock: 1/20.
  static constexpr int64_t catch_up_divisor = 20;
  /// A time before this one (2026-11-01, before meshd existed) is plainly
  /// wrong: a step forward from it is taken at once.
  static constexpr timestamp implausible_before =
      timestamp{std::chrono::duration_cast<timestamp::duration>(
          std::chrono::milliseconds{1'793'491'200'000})};

  /// The host's clocks: CLOCK_REALTIME and CLOCK_BOOTTIME.
  system_clock();
  /// Given clocks (tests): `wall` may step, `mono` never goes back.
  system_clock(source wall, source mono);

  [[nodiscard]] timestamp now() const override;
  [[nodiscard]] duration monotonic() const override;
  [[nodiscard]] std::pair<timestamp, duration> now_and_monotonic() const override;
  /// How far the wall clock is ahead of `now` (behind it when negative):
  /// the part of its steps not caught up with yet.
  [[nodiscard]] duration behind_wall() const override;
  [[nodiscard]] std::optional<clock_jump> last_jump() const override;

private:
  /// Moves the clock to the sources' present; returns its time (ns) and the
  /// monotonic reading (ns).
  std::pair<int64_t, int64_t> read() const;

  source wall_;
  source mono_;
  mutable std::mutex mtx_;
  /// This clock's time and the monotonic clock's at the last read (ns).
  mutable int64_t last_now_ = 0;
  mutable int64_t last_mono_ = 0;
  /// The wall clock's lead over this clock at the last read (ns).
  mutable int64_t lead_ = 0;
  mutable std::optional<clock_jump> jump_;
  /// While `settled_` (nothing to catch up with): this clock's time is the
  /// monotonic clock's plus `offset_` (ns), read without the lock.
  mutable std::atomic<int64_t> offset_{0};
  mutable std::atomic<bool> settled_{false};
  /// Odd while a read holds the lock; changes with each such read.
  mutable std::atomic<uint64_t> generation_{0};
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
  /// What a `system_clock` does at a step of the wall clock forward from a
  /// time before `system_clock::implausible_before`: the clock jumps by `d`,
  /// and says so
  /// (`last_jump`).
  void jump(duration d);
  /// Sets what `behind_wall` answers: a step `system_clock` catches up with.
  void set_behind_wall(duration d);
  [[nodiscard]] duration behind_wall() const override;
  [[nodiscard]] std::optional<clock_jump> last_jump() const override;

private:
  std::atomic<int64_t> ms_since_epoch_;
  std::atomic<int64_t> monotonic_ms_{0};
  std::atomic<int64_t> behind_wall_ms_{0};
  mutable std::mutex stall_mtx_;
  std::optional<clock_jump> jump_;
};

/// Milliseconds since the Unix epoch, the store's representation.
[[nodiscard]] int64_t to_unix_ms(timestamp t);
[[nodiscard]] timestamp from_unix_ms(int64_t ms);

/// RFC 3339 UTC with millisecond precision, e.g. `2026-11-23T20:45:03.120Z`.
[[nodiscard]] std::string to_rfc3339(timestamp t);
/// Parses the form produced by `to_rfc3339` (fraction optional, `Z` only).
[[nodiscard]] std::optional<timestamp> parse_rfc3339(const std::string& text);

} // namespace polymesh
