#include "mesh/domain/clock.hpp"

#include <gtest/gtest.h>
#include <string>
#include <vector>

namespace polymesh {
namespace {

using namespace std::chrono_literals;

// This test ensures a manual clock starts at a fixed instant and only moves
// when told to.
TEST(Clock, ManualClockStartsFixedAndAdvances) {
  manual_clock a;
  manual_clock b;
  EXPECT_EQ(a.now(), b.now());
  auto t0 = a.now();
  EXPECT_EQ(a.now(), t0);
  a.advance(1500ms);
  EXPECT_EQ(a.now() - t0, 1500ms);
  a.advance(std::chrono::duration_cast<duration>(3min));
  EXPECT_EQ(to_unix_ms(a.now()) - to_unix_ms(t0), 181'500);
}

// This test ensures `set` jumps anywhere, backwards included, and a clock may
// start at a given instant.
TEST(Clock, ManualClockSet) {
  manual_clock c{from_unix_ms(42)};
  EXPECT_EQ(to_unix_ms(c.now()), 42);
  c.set(from_unix_ms(1'000'000));
  EXPECT_EQ(to_unix_ms(c.now()), 1'000'000);
  c.set(from_unix_ms(-5));
  EXPECT_EQ(to_unix_ms(c.now()), -5);
  c.advance(10ms);
  EXPECT_EQ(to_unix_ms(c.now()), 5);
}

// This test ensures the system clock reads milliseconds near the real time.
TEST(Clock, SystemClockHasMillisecondResolution) {
  system_clock c;
  auto t = c.now();
  EXPECT_EQ(from_unix_ms(to_unix_ms(t)), t);
  // Any time after 2020 is a sane wall clock.
  EXPECT_GT(to_unix_ms(t), 1'577'836'800'000);
}

/// A host's clocks as a test drives them, in nanoseconds.
struct host_clocks {
  int64_t wall = 1'800'000'000'000 * int64_t{1'000'000};
  int64_t mono = 5'000 * int64_t{1'000'000};
  void run(duration d) {
    wall += d.count() * 1'000'000;
    mono += d.count() * 1'000'000;
  }
  void step(duration d) { wall += d.count() * 1'000'000; }
  system_clock clock() {
    return system_clock{[this] { return wall; }, [this] { return mono; }};
  }
};

int64_t ms_of(timestamp t) {
  return to_unix_ms(t);
}

// This test ensures the system clock reads the host's wall clock while it
// does not step, and reports nothing to catch up with.
TEST(Clock, SystemClockFollowsAWallClockThatDoesNotStep) {
  host_clocks host;
  auto c = host.clock();
  auto start = ms_of(c.now());
  EXPECT_EQ(start, host.wall / 1'000'000);
  for (int i = 0; i < 1000; ++i)
    host.run(7ms);
  EXPECT_EQ(ms_of(c.now()) - start, 7000);
  EXPECT_EQ(c.behind_wall(), 0ms);
  EXPECT_FALSE(c.last_jump());
}

// This test ensures a step of the wall clock forward is caught up with at
// 1/20 of the time that passes, so that a window measured meanwhile keeps
// 95 % of its length at least (an agent's 3 minutes of silence are not
// over at the step), and then reads the wall clock again.
TEST(Clock, SystemClockCatchesUpWithAStepForwardGradually) {
  host_clocks host;
  auto c = host.clock();
  // Ten settled minutes first: none of them goes to catching up.
  host.run(std::chrono::duration_cast<duration>(10min));
  auto before = c.now();
  host.step(std::chrono::duration_cast<duration>(1h));
  EXPECT_EQ(c.now(), before);
  EXPECT_EQ(c.behind_wall(), std::chrono::duration_cast<duration>(1h));
  host.run(std::chrono::duration_cast<duration>(3min));
  EXPECT_EQ(c.now() - before, std::chrono::duration_cast<duration>(3min) + 9s);
  // 3,591 s left to catch up with, 3 s a minute: 1,197 minutes.
  for (int i = 0; i < 1196; ++i)
    host.run(std::chrono::duration_cast<duration>(1min));
  EXPECT_EQ(c.behind_wall(), 3s);
  for (int i = 0; i < 2; ++i)
    host.run(std::chrono::duration_cast<duration>(1min));
  EXPECT_EQ(ms_of(c.now()), host.wall / 1'000'000);
  EXPECT_EQ(c.behind_wall(), 0ms);
  EXPECT_FALSE(c.last_jump());
}

// This test ensures a step of the wall clock back never makes the clock go
// back: it moves on, 5 % slower, until the wall clock catches up.
TEST(Clock, SystemClockNeverGoesBackWhenTheWallClockSteps) {
  host_clocks host;
  auto c = host.clock();
  auto last = c.now();
  host.step(-std::chrono::duration_cast<duration>(1h));
  EXPECT_EQ(c.behind_wall(), -std::chrono::duration_cast<duration>(1h));
  for (int i = 0; i < 21 * 60; ++i) {
    host.run(std::chrono::duration_cast<duration>(1min));
    auto t = c.now();
    ASSERT_GE(t, last) << i;
    ASSERT_GE(t - last, 57s) << i; // 95 % of a minute
    last = t;
  }
  EXPECT_EQ(ms_of(c.now()), host.wall / 1'000'000);
  EXPECT_EQ(c.behind_wall(), 0ms);
}

// This test ensures a clock that read a time before meshd existed (a host
// that booted with no real-time clock) takes the step forward to the real
// date at once, and reports it as a jump, while a step of 400 days from a
// plausible time is caught up with gradually like any other (taken at once,
// it ended every running run, token and TTL, and let retention prune).
TEST(Clock, SystemClockJumpsOnlyFromATimeBeforeMeshdExisted) {
  host_clocks booted;
  booted.wall = int64_t{86'400'000} * 1'000'000; // 1970-01-02
  auto c = booted.clock();
  booted.run(10ms);
  auto years = std::chrono::duration_cast<duration>(std::chrono::hours{24 * 365 * 56});
  booted.step(years);
  EXPECT_EQ(ms_of(c.now()), booted.wall / 1'000'000);
  auto jump = c.last_jump();
  ASSERT_TRUE(jump);
  EXPECT_EQ(jump->by, years);
  EXPECT_EQ(jump->at, c.now());
  EXPECT_EQ(c.behind_wall(), 0ms);

  host_clocks host;
  auto plausible = host.clock();
  auto before = plausible.now();
  auto days = std::chrono::duration_cast<duration>(std::chrono::hours{24 * 400});
  host.step(days);
  EXPECT_EQ(plausible.now(), before); // catching up from this read on
  host.run(10s);
  EXPECT_EQ(plausible.now() - before, 10s + 500ms);
  EXPECT_FALSE(plausible.last_jump());
  EXPECT_EQ(plausible.behind_wall(), days - 500ms);
}

// This test ensures milliseconds convert both ways, negative ones included.
TEST(Clock, UnixMillisecondsRoundTrip) {
  for (int64_t ms : {int64_t{0}, int64_t{1}, int64_t{-1}, int64_t{-1001},
                     int64_t{1'800'000'000'123}, int64_t{-86'400'000}})
    EXPECT_EQ(to_unix_ms(from_unix_ms(ms)), ms) << ms;
}

// This test ensures the RFC 3339 text has the documented shape.
TEST(Clock, FormatsRfc3339) {
  EXPECT_EQ(to_rfc3339(from_unix_ms(0)), "1970-01-01T00:00:00.000Z");
  EXPECT_EQ(to_rfc3339(from_unix_ms(1'795'466'703'120)), "2026-11-23T20:45:03.120Z");
  EXPECT_EQ(to_rfc3339(from_unix_ms(951'782'400'007)), "2000-02-29T00:00:00.007Z");
}

// This test ensures instants before the epoch format with a positive fraction
// of the previous second.
TEST(Clock, FormatsPreEpoch) {
  EXPECT_EQ(to_rfc3339(from_unix_ms(-1)), "1969-12-31T23:59:59.999Z");
  EXPECT_EQ(to_rfc3339(from_unix_ms(-1000)), "1969-12-31T23:59:59.000Z");
  EXPECT_EQ(to_rfc3339(from_unix_ms(-1001)), "1969-12-31T23:59:58.999Z");
}

// This test ensures formatting then parsing gives back the same millisecond,
// before and after the epoch.
TEST(Clock, Rfc3339RoundTrip) {
  const std::vector<int64_t> samples = {
      0,
      1,
      999,
      1000,
      -1,
      -999,
      -1000,
      -1001,
      -86'400'000,
      1'795'466'703'120,
      951'782'400'007,
      4'102'444'799'999,
      -2'208'988'800'000,
  };
  for (auto ms : samples) {
    auto text = to_rfc3339(from_unix_ms(ms));
    auto back = parse_rfc3339(text);
    ASSERT_TRUE(back) << text;
    EXPECT_EQ(to_unix_ms(*back), ms) << text;
  }
}

// This test ensures the fraction is optional and shorter or longer fractions
// are read as milliseconds (extra digits truncated).
TEST(Clock, ParsesFractionVariants) {
  EXPECT_EQ(parse_rfc3339("2026-11-23T20:45:03Z"), from_unix_ms(1'795'466'703'000));
  EXPECT_EQ(parse_rfc3339("2026-11-23T20:45:03.1Z"), from_unix_ms(1'795'466'703'100));
  EXPECT_EQ(parse_rfc3339("2026-11-23T20:45:03.12Z"), from_unix_ms(1'795'466'703'120));
  EXPECT_EQ(parse_rfc3339("2026-11-23T20:45:03.123456Z"),
            from_unix_ms(1'795'466'703'123));
}

// This test ensures text that is not the documented form, or a time the
// clock cannot hold, is refused.
TEST(Clock, RejectsBadText) {
  const std::vector<std::string> bad = {
      "",
      "now",
      "2026-11-23",
      "2026-11-23T20:45",
      "2026-11-23T20:45:03",
      "2026-11-23T20:45:03.120",
      "2026-11-23T20:45:03.Z",
      "2026-11-23T20:45:03.120+01:00",
      "2026-11-23T20:45:03+00:00",
      "2026-11-23T20:45:03.120ZZ",
      "2026-11-23T20:45:03.120Z ",
      "2026-11-23 20:45:03.120Z",
      "2026/11/23T20:45:03.120Z",
      // Not the fixed layout (sscanf read these once).
      "5-1-3T0:4:0Z",
      " 2026-11-23T20:45:03Z",
      "+2026-11-23T20:45:03Z",
      "2026-1-23T20:45:03Z",
      // Beyond what the clock holds (nanoseconds in 64 bits): UB before.
      "2262-04-12T00:00:00Z",
      "1677-01-01T00:00:00Z",
      "9999-12-31T23:59:59Z",
  };
  for (const auto& text : bad)
    EXPECT_FALSE(parse_rfc3339(text)) << "'" << text << "'";
}

} // namespace
} // namespace polymesh

namespace polymesh {
namespace {

// This test ensures out-of-range fields are refused rather than rolled over.
TEST(ClockRfc3339, RejectsOutOfRangeFields) {
  for (auto bad : {"2026-13-01T00:00:00Z", "2026-00-01T00:00:00Z", "2026-01-32T00:00:00Z",
                   "2026-01-01T24:00:00Z", "2026-01-01T00:60:00Z"})
    EXPECT_FALSE(parse_rfc3339(bad)) << bad;
}

} // namespace
} // namespace polymesh
