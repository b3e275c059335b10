#include "polymesh/sdk/cancel_source.hpp"

#include <gtest/gtest.h>
#include <thread>

using namespace polymesh::sdk;
using namespace std::chrono_literals;

// This test ensures the first cancel reason wins and later ones are ignored.
TEST(cancel_source, first_reason_wins) {
  cancel_source c;
  EXPECT_FALSE(c.canceled());
  EXPECT_EQ(c.reason(), cancel_reason::none);
  EXPECT_TRUE(c.cancel(cancel_reason::canceled_by_user));
  EXPECT_FALSE(c.cancel(cancel_reason::agent_shutdown));
  EXPECT_EQ(c.reason(), cancel_reason::canceled_by_user);
}

// This test ensures a passed deadline reads as a timeout.
TEST(cancel_source, deadline_is_a_timeout) {
  cancel_source c{cancel_token::clock_type::now() - 1ms};
  EXPECT_TRUE(c.canceled());
  EXPECT_EQ(c.reason(), cancel_reason::timeout);
  EXPECT_FALSE(c.cancel(cancel_reason::canceled_by_user));
}

// This test ensures wait_for wakes as soon as another thread cancels.
TEST(cancel_source, wait_wakes_on_cancel) {
  cancel_source c;
  std::thread t{[&] { c.cancel(cancel_reason::agent_shutdown); }};
  auto begin = std::chrono::steady_clock::now();
  EXPECT_TRUE(c.wait_for(60s));
  EXPECT_LT(std::chrono::steady_clock::now() - begin, 30s);
  t.join();
}

// This test ensures wait_for returns false when nothing happens in time.
TEST(cancel_source, wait_times_out) {
  cancel_source c;
  EXPECT_FALSE(c.wait_for(1ms));
}
