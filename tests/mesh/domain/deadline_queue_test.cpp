#include "mesh/domain/deadline_queue.hpp"

#include <gtest/gtest.h>
#include <set>
#include <string>
#include <vector>

namespace polymesh {
namespace {

using strings = std::vector<std::string>;

timestamp at(int64_t ms) {
  return from_unix_ms(ms);
}

// This test ensures due keys come out earliest first and later ones stay.
TEST(DeadlineQueue, PopsDueKeysInDeadlineOrder) {
  deadline_queue q;
  q.arm("c", at(300));
  q.arm("a", at(100));
  q.arm("d", at(400));
  q.arm("b", at(200));
  EXPECT_EQ(q.pop_due(at(99)), strings{});
  EXPECT_EQ(q.pop_due(at(300)), (strings{"a", "b", "c"}));
  EXPECT_EQ(q.size(), 1u);
  EXPECT_EQ(q.next(), at(400));
}

// This test ensures a deadline equal to `now` is due.
TEST(DeadlineQueue, DeadlineAtNowIsDue) {
  deadline_queue q;
  q.arm("a", at(100));
  EXPECT_EQ(q.pop_due(at(100)), strings{"a"});
}

// This test ensures keys due at the same instant come out in arming order.
TEST(DeadlineQueue, TiesComeOutInArmingOrder) {
  deadline_queue q;
  for (auto key : {"x", "b", "z", "a"})
    q.arm(key, at(5));
  EXPECT_EQ(q.pop_due(at(5)), (strings{"x", "b", "z", "a"}));
}

// This test ensures re-arming to an earlier deadline replaces the old one.
TEST(DeadlineQueue, RearmEarlierReplaces) {
  deadline_queue q;
  q.arm("a", at(500));
  q.arm("b", at(300));
  q.arm("a", at(100));
  EXPECT_EQ(q.size(), 2u);
  EXPECT_EQ(q.next(), at(100));
  EXPECT_EQ(q.pop_due(at(200)), strings{"a"});
  // The stale entry at 500 must not bring "a" back.
  EXPECT_EQ(q.pop_due(at(1000)), strings{"b"});
  EXPECT_EQ(q.size(), 0u);
}

// This test ensures re-arming to a later deadline postpones the key.
TEST(DeadlineQueue, RearmLaterReplaces) {
  deadline_queue q;
  q.arm("a", at(100));
  q.arm("a", at(500));
  EXPECT_EQ(q.size(), 1u);
  EXPECT_EQ(q.next(), at(500));
  EXPECT_EQ(q.pop_due(at(100)), strings{});
  EXPECT_EQ(q.pop_due(at(500)), strings{"a"});
  EXPECT_FALSE(q.next());
}

// This test ensures a canceled key is never returned, and canceling an unknown
// key changes nothing.
TEST(DeadlineQueue, CancelForgetsKey) {
  deadline_queue q;
  q.arm("a", at(100));
  q.arm("b", at(200));
  q.cancel("a");
  q.cancel("nope");
  EXPECT_EQ(q.size(), 1u);
  EXPECT_EQ(q.pop_due(at(1000)), strings{"b"});
}

// This test ensures a key canceled and armed again fires once, at its new time.
TEST(DeadlineQueue, CancelThenRearm) {
  deadline_queue q;
  q.arm("a", at(100));
  q.cancel("a");
  q.arm("a", at(300));
  EXPECT_EQ(q.pop_due(at(200)), strings{});
  EXPECT_EQ(q.pop_due(at(300)), strings{"a"});
}

// This test ensures `pop_due` returns each key once, even after many re-arms.
TEST(DeadlineQueue, PopDueReturnsEachKeyOnce) {
  deadline_queue q;
  for (int i = 0; i < 50; ++i)
    q.arm("a", at(100 + i));
  q.arm("b", at(120));
  EXPECT_EQ(q.pop_due(at(10'000)), (strings{"b", "a"}));
  EXPECT_EQ(q.pop_due(at(10'000)), strings{});
  EXPECT_EQ(q.size(), 0u);
}

// This test ensures `next` skips entries made stale by cancel and re-arm.
TEST(DeadlineQueue, NextSkipsStaleEntries) {
  deadline_queue q;
  EXPECT_FALSE(q.next());
  q.arm("a", at(100));
  q.arm("b", at(200));
  q.arm("c", at(300));
  q.cancel("a");
  q.arm("b", at(400));
  EXPECT_EQ(q.next(), at(300));
  const auto& view = q;
  EXPECT_EQ(view.next(), at(300));
  q.cancel("c");
  EXPECT_EQ(q.next(), at(400));
  q.cancel("b");
  EXPECT_FALSE(q.next());
}

// This test ensures negative (pre-epoch) deadlines order correctly.
TEST(DeadlineQueue, PreEpochDeadlines) {
  deadline_queue q;
  q.arm("late", at(5));
  q.arm("early", at(-5));
  EXPECT_EQ(q.pop_due(at(0)), strings{"early"});
}

// This test ensures 100,000 keys, each re-armed and half canceled, come out
// complete and in order (a sanity check of the lazy deletion, not timed).
TEST(DeadlineQueue, HundredThousandKeys) {
  constexpr int n = 100'000;
  deadline_queue q;
  for (int i = 0; i < n; ++i)
    q.arm("k" + std::to_string(i), at((i * 7919) % n));
  // Re-arm every key to its final deadline, i + n, which reverses nothing but
  // leaves n stale entries behind.
  for (int i = 0; i < n; ++i)
    q.arm("k" + std::to_string(i), at(n + i));
  for (int i = 0; i < n; i += 2)
    q.cancel("k" + std::to_string(i));
  EXPECT_EQ(q.size(), static_cast<size_t>(n / 2));
  EXPECT_EQ(q.pop_due(at(n - 1)), strings{});
  EXPECT_EQ(q.next(), at(n + 1));
  auto due = q.pop_due(at(2 * n));
  ASSERT_EQ(due.size(), static_cast<size_t>(n / 2));
  for (size_t j = 0; j < due.size(); ++j)
    ASSERT_EQ(due[j], "k" + std::to_string(2 * j + 1));
  EXPECT_EQ(q.size(), 0u);
  EXPECT_FALSE(q.next());
}

// This test ensures a key re-armed forever keeps working (stale entries are
// compacted rather than piling up without bound).
TEST(DeadlineQueue, EndlessRearmOfOneKey) {
  deadline_queue q;
  for (int i = 0; i < 200'000; ++i)
    q.arm("lease", at(1'000 + i));
  q.arm("other", at(500));
  EXPECT_EQ(q.size(), 2u);
  EXPECT_EQ(q.pop_due(at(1'000'000)), (strings{"other", "lease"}));
}

} // namespace
} // namespace polymesh
