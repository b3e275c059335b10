#include "mesh/domain/clock.hpp"

#include <algorithm>
#include <cstdio>
#include <ctime>
#include <limits>
#include <string_view>

namespace polymesh {

namespace {

int64_t nanoseconds_of(clockid_t id) {
  timespec ts{};
  ::clock_gettime(id, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

constexpr int64_t ns_per_ms = 1'000'000;

/// Whole milliseconds of `ns`, rounded down (so that a clock that never
/// goes back in nanoseconds never does in milliseconds either).
int64_t floor_ms(int64_t ns) {
  return ns >= 0 ? ns / ns_per_ms : -((-ns + ns_per_ms - 1) / ns_per_ms);
}

} // namespace

// CLOCK_BOOTTIME: like CLOCK_MONOTONIC (steady_clock), but it also counts
// the time the host spent suspended, as the wall clock does.
system_clock::system_clock()
    : system_clock([] { return nanoseconds_of(CLOCK_REALTIME); },
                   [] { return nanoseconds_of(CLOCK_BOOTTIME); }) {}

system_clock::system_clock(source wall, source mono)
    : wall_(std::move(wall))
    , mono_(std::move(mono))
    , last_now_(wall_())
    , last_mono_(mono_()) {
  offset_ = last_now_ - last_mono_;
  settled_ = true;
}

std::pair<int64_t, int64_t> system_clock::read() const {
  // The usual case, without the lock (a contended mutex on every read cost
  // 700 ns a read with 4 threads): no step to catch up with, and none since,
  // so this clock is the monotonic clock plus a fixed offset. The two clocks
  // are read one after the other, hence the tolerance. `generation_` is odd
  // while the slow path works, and changes with it: a read that overlapped
  // it goes the slow way, so that no thread sees an offset older than what
  // another has already returned.
  constexpr int64_t tolerance = ns_per_ms;
  auto before = generation_.load(std::memory_order_acquire);
  if (before % 2 == 0 && settled_.load(std::memory_order_acquire)) {
    auto mono = mono_();
    auto wall = wall_();
    auto now = mono + offset_.load(std::memory_order_acquire);
    std::atomic_thread_fence(std::memory_order_acquire);
    if (generation_.load(std::memory_order_relaxed) == before && wall - now < tolerance &&
        now - wall < tolerance)
      return {now, mono};
  }
  std::lock_guard<std::mutex> guard{mtx_};
  generation_.fetch_add(1, std::memory_order_seq_cst);
  // Read under the lock: a reading taken before it may be older than what
  // another thread has returned since.
  auto mono = mono_();
  auto wall = wall_();
  if (settled_.load(std::memory_order_relaxed)) {
    // The first read after settled ones: they moved with `mono`, none of
    // that time goes to catching up with the step seen now.
    last_now_ = std::max(last_now_, mono + offset_.load(std::memory_order_relaxed));
    last_mono_ = mono;
  }
  auto elapsed = std::max<int64_t>(0, mono - last_mono_);
  auto moved = last_now_ + elapsed;
  auto lead = wall - moved;
  // Forward only, and only from a time before meshd existed: this clock
  // never goes back, and never jumps from a plausible time.
  if (lead > 0 && floor_ms(moved) < to_unix_ms(implausible_before)) {
    jump_ = clock_jump{from_unix_ms(floor_ms(wall)), duration{lead / ns_per_ms}};
    moved = wall;
    lead = 0;
  } else {
    auto most = elapsed / catch_up_divisor;
    auto step = std::clamp(lead, -most, most);
    moved += step;
    lead -= step;
  }
  last_now_ = moved;
  last_mono_ = std::max(last_mono_, mono);
  lead_ = lead;
  offset_.store(moved - last_mono_, std::memory_order_release);
  settled_.store(lead == 0, std::memory_order_release);
  generation_.fetch_add(1, std::memory_order_seq_cst);
  return {moved, mono};
}

timestamp system_clock::now() const {
  return from_unix_ms(floor_ms(read().first));
}

duration system_clock::monotonic() const {
  return duration{floor_ms(mono_())};
}

std::pair<timestamp, duration> system_clock::now_and_monotonic() const {
  auto [now, mono] = read();
  return {from_unix_ms(floor_ms(now)), duration{floor_ms(mono)}};
}

std::optional<clock_jump> system_clock::last_jump() const {
  read();
  std::lock_guard<std::mutex> guard{mtx_};
  return jump_;
}

duration system_clock::behind_wall() const {
  read();
  std::lock_guard<std::mutex> guard{mtx_};
  return duration{lead_ / ns_per_ms};
}

std::pair<timestamp, duration> manual_clock::now_and_monotonic() const {
  std::lock_guard<std::mutex> guard{stall_mtx_};
  return {now(), monotonic()};
}

manual_clock::manual_clock()
    : manual_clock(from_unix_ms(1'800'000'000'000)) {}

manual_clock::manual_clock(timestamp start)
    : ms_since_epoch_(to_unix_ms(start)) {}

timestamp manual_clock::now() const {
  return from_unix_ms(ms_since_epoch_.load());
}

duration manual_clock::monotonic() const {
  return duration{monotonic_ms_.load()};
}

void manual_clock::advance(duration d) {
  ms_since_epoch_ += d.count();
}

void manual_clock::stall(duration d) {
  std::lock_guard<std::mutex> guard{stall_mtx_};
  monotonic_ms_ += d.count();
  ms_since_epoch_ += d.count();
}

void manual_clock::jump(duration d) {
  std::lock_guard<std::mutex> guard{stall_mtx_};
  ms_since_epoch_ += d.count();
  jump_ = clock_jump{now(), d};
}

void manual_clock::set_behind_wall(duration d) {
  behind_wall_ms_ = d.count();
}

duration manual_clock::behind_wall() const {
  return duration{behind_wall_ms_.load()};
}

std::optional<clock_jump> manual_clock::last_jump() const {
  std::lock_guard<std::mutex> guard{stall_mtx_};
  return jump_;
}

void manual_clock::set(timestamp t) {
  ms_since_epoch_ = to_unix_ms(t);
}

int64_t to_unix_ms(timestamp t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch())
      .count();
}

timestamp from_unix_ms(int64_t ms) {
  // The clock counts nanoseconds in 64 bits (1677 to 2262): a value beyond
  // that (a corrupt row, a hostile answer) is held at the edge, not wrapped.
  constexpr int64_t limit = std::numeric_limits<int64_t>::max() / 1'000'000;
  ms = std::clamp(ms, -limit, limit);
  return timestamp{
      std::chrono::duration_cast<timestamp::duration>(std::chrono::milliseconds{ms})};
}

std::string to_rfc3339(timestamp t) {
  auto ms = to_unix_ms(t);
  auto secs = static_cast<std::time_t>(ms >= 0 ? ms / 1000 : (ms - 999) / 1000);
  auto frac = static_cast<int>(ms - static_cast<int64_t>(secs) * 1000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ",
                tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                tm.tm_sec, frac);
  return buf;
}

std::optional<timestamp> parse_rfc3339(const std::string& text) {
  // YYYY-MM-DDTHH:MM:SS exactly: digits where digits go, nothing else.
  constexpr std::string_view layout = "dddd-dd-ddTdd:dd:dd";
  if (text.size() < layout.size()) return std::nullopt;
  for (size_t i = 0; i < layout.size(); ++i) {
    bool ok = layout[i] == 'd'   ? (text[i] >= '0' && text[i] <= '9')
              : layout[i] == 'T' ? (text[i] == 'T' || text[i] == 't')
                                 : text[i] == layout[i];
    if (!ok) return std::nullopt;
  }
  auto number = [&](size_t at, size_t len) {
    int v = 0;
    for (size_t i = at; i < at + len; ++i)
      v = v * 10 + (text[i] - '0');
    return v;
  };
  std::tm tm{};
  tm.tm_year = number(0, 4);
  tm.tm_mon = number(5, 2);
  tm.tm_mday = number(8, 2);
  tm.tm_hour = number(11, 2);
  tm.tm_min = number(14, 2);
  tm.tm_sec = number(17, 2);
  // Within what the clock holds: nanoseconds in 64 bits, 1677 to 2262.
  if (tm.tm_year < 1678 || tm.tm_year > 2261) return std::nullopt;
  int frac_len = 0;
  unsigned frac = 0;
  char z = 0;
  auto rest = text.substr(layout.size());
  if (!rest.empty() && rest[0] == '.') {
    size_t i = 1;
    while (i < rest.size() && rest[i] >= '0' && rest[i] <= '9') {
      if (frac_len < 3) {
        frac = frac * 10 + static_cast<unsigned>(rest[i] - '0');
        ++frac_len;
      }
      ++i;
    }
    if (i == 1) return std::nullopt;
    rest = rest.substr(i);
  }
  while (frac_len < 3) {
    frac *= 10;
    ++frac_len;
  }
  if (rest.size() != 1) return std::nullopt;
  z = rest[0];
  if (z != 'Z' && z != 'z') return std::nullopt;
  if (tm.tm_mon < 1 || tm.tm_mon > 12 || tm.tm_mday < 1 || tm.tm_mday > 31 ||
      tm.tm_hour > 23 || tm.tm_min > 59 || tm.tm_sec > 60)
    return std::nullopt;
  tm.tm_year -= 1900;
  tm.tm_mon -= 1;
  auto secs = timegm(&tm);
  return from_unix_ms(static_cast<int64_t>(secs) * 1000 + frac);
}

} // namespace polymesh
