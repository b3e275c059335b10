#include "backoff.hpp"

#include <gtest/gtest.h>
#include <set>

using namespace polymesh::sdk;
using namespace std::chrono_literals;

// This test ensures the upper bound doubles up to the cap (jitter at its maximum).
TEST(backoff, grows_to_cap) {
  backoff b{{100ms, 1000ms}, [] { return 0.999999; }};
  std::vector<int64_t> got;
  for (int i = 0; i < 6; ++i)
    got.push_back(b.next().count());
  EXPECT_EQ(got, (std::vector<int64_t>{99, 199, 399, 799, 999, 999}));
}

// This test ensures the jitter never goes below half the current bound.
TEST(backoff, jitter_lower_half) {
  backoff b{{100ms, 1000ms}, [] { return 0.0; }};
  EXPECT_EQ(b.next(), 50ms);
  EXPECT_EQ(b.next(), 100ms);
  EXPECT_EQ(b.next(), 200ms);
}

// This test ensures reset starts over from the initial delay.
TEST(backoff, reset_starts_over) {
  backoff b{{100ms, 1000ms}, [] { return 0.0; }};
  (void)b.next();
  (void)b.next();
  b.reset();
  EXPECT_EQ(b.attempts(), 0);
  EXPECT_EQ(b.next(), 50ms);
}

// This test ensures the default random source stays inside the bounds.
TEST(backoff, default_random_in_bounds) {
  backoff b{{100ms, 400ms}};
  for (int i = 0; i < 100; ++i) {
    auto d = b.next();
    EXPECT_GE(d, 50ms);
    EXPECT_LE(d, 400ms);
  }
}

// This test ensures fresh backoffs do not all wait the same first delay:
// the jitter is what spreads a fleet of agents that lost the mesh together.
TEST(backoff, default_random_differs_between_backoffs) {
  std::set<int64_t> firsts;
  for (int i = 0; i < 20; ++i) {
    backoff b{{1000ms, 60000ms}};
    firsts.insert(b.next().count());
  }
  EXPECT_GT(firsts.size(), 1u);
}
