// Starting a run's log shipper on demand: a task that starts at most once and
// never after it was closed, and the runner that triggers tasks at their times.
#include "eventually.hpp"
#include "on_demand.hpp"
#include "thread_pool.hpp"

#include <atomic>
#include <gtest/gtest.h>

using namespace polymesh::sdk;
using namespace std::chrono_literals;
using polymesh::sdk::test_support::eventually;
using steady = std::chrono::steady_clock;

namespace {

/// Launches on a pool and counts the launches.
struct launcher {
  thread_pool pool{10s};
  std::atomic<int> launched{0};

  std::function<void(std::function<void()>)> fn() {
    return [this](std::function<void()> task) {
      ++launched;
      pool.run(std::move(task));
    };
  }
};

} // namespace

// This test ensures a task nobody asked for never runs, and closing it does
// not wait.
TEST(on_demand_task, never_triggered_never_runs) {
  launcher l;
  std::atomic<int> runs{0};
  on_demand_task t{l.fn(), [&] { ++runs; }};
  EXPECT_FALSE(t.close());
  t.trigger();
  EXPECT_EQ(runs.load(), 0);
  EXPECT_EQ(l.launched.load(), 0);
}

// This test ensures the task starts once however often it is triggered, and
// close waits for it to end.
TEST(on_demand_task, starts_once_and_close_waits_for_it) {
  launcher l;
  std::atomic<int> runs{0};
  std::atomic<bool> release{false};
  std::atomic<bool> ended{false};
  on_demand_task t{l.fn(), [&] {
                     ++runs;
                     while (!release)
                       std::this_thread::yield();
                     ended = true;
                   }};
  for (int i = 0; i < 10; ++i)
    t.trigger();
  ASSERT_TRUE(eventually([&] { return runs.load() == 1; }));
  std::thread closer{[&] {
    EXPECT_TRUE(t.close());
    // Returns only after the task has ended.
    EXPECT_TRUE(ended.load());
  }};
  release = true;
  closer.join();
  t.trigger();
  EXPECT_EQ(runs.load(), 1);
  EXPECT_EQ(l.launched.load(), 1);
}

// This test ensures triggers racing with close either start the task, which
// close then waits for, or do nothing.
TEST(on_demand_task, triggers_racing_close_are_safe) {
  launcher l;
  for (int round = 0; round < 200; ++round) {
    std::atomic<int> runs{0};
    std::atomic<int> after_close{0};
    std::atomic<bool> closed{false};
    {
      on_demand_task t{l.fn(), [&] {
                         ++runs;
                         if (closed) ++after_close;
                       }};
      std::thread a{[&] { t.trigger(); }};
      bool ran = t.close();
      closed = true;
      a.join();
      EXPECT_EQ(ran, runs.load() == 1);
    }
    EXPECT_LE(runs.load(), 1);
    EXPECT_EQ(after_close.load(), 0);
  }
}

// This test ensures a task whose time has come is triggered.
TEST(deadline_runner, triggers_a_due_task) {
  launcher l;
  std::atomic<int> runs{0};
  auto t = std::make_shared<on_demand_task>(l.fn(), [&] { ++runs; });
  deadline_runner r{10ms};
  r.at(steady::now(), t);
  ASSERT_TRUE(eventually([&] { return runs.load() == 1; }));
  EXPECT_TRUE(t->close());
  EXPECT_EQ(r.waiting(), 0u);
}

// This test ensures an earlier time added after a far later one is not held
// up by it.
TEST(deadline_runner, an_earlier_time_wakes_the_runner) {
  launcher l;
  std::atomic<int> late{0};
  std::atomic<int> soon{0};
  auto far = std::make_shared<on_demand_task>(l.fn(), [&] { ++late; });
  auto near = std::make_shared<on_demand_task>(l.fn(), [&] { ++soon; });
  deadline_runner r{10ms};
  r.at(steady::now() + 1h, far);
  ASSERT_TRUE(eventually([&] { return r.waiting() == 1; }));
  r.at(steady::now(), near);
  ASSERT_TRUE(eventually([&] { return soon.load() == 1; }));
  EXPECT_EQ(late.load(), 0);
  EXPECT_EQ(r.waiting(), 1u);
  EXPECT_FALSE(far->close());
}

// This test ensures the runner's wait survives its heap growing meanwhile:
// it used to wait on a reference into the heap, which the next `at` could
// reallocate, and read freed memory on waking. Only AddressSanitizer sees
// that read, and only when the growth comes while the runner waits, which
// this test cannot wait for; its rounds make that likely.
TEST(deadline_runner, a_wait_survives_the_heap_growing_under_it) {
  launcher l;
  std::atomic<int> soon{0};
  std::vector<std::shared_ptr<on_demand_task>> far;
  std::vector<std::shared_ptr<on_demand_task>> near;
  deadline_runner r{10ms};
  for (int round = 1; round <= 8; ++round) {
    // Each round doubles the heap past its capacity, then wakes the runner.
    for (size_t i = 0, n = far.size() + 1; i < n; ++i) {
      far.push_back(std::make_shared<on_demand_task>(l.fn(), [] {}));
      r.at(steady::now() + 1h, far.back());
    }
    near.push_back(std::make_shared<on_demand_task>(l.fn(), [&] { ++soon; }));
    r.at(steady::now(), near.back());
    ASSERT_TRUE(eventually([&] { return soon.load() == round; }));
    EXPECT_EQ(r.waiting(), far.size());
  }
}

// This test ensures tasks due within the slack of a due one go with it, and a
// task that is gone by its time is skipped.
TEST(deadline_runner, coalesces_within_slack_and_skips_gone_tasks) {
  launcher l;
  std::atomic<int> runs{0};
  auto now = steady::now();
  auto first = std::make_shared<on_demand_task>(l.fn(), [&] { ++runs; });
  auto within = std::make_shared<on_demand_task>(l.fn(), [&] { ++runs; });
  auto gone = std::make_shared<on_demand_task>(l.fn(), [&] { ++runs; });
  // A slack far longer than the test: `within` can only run with `first`.
  deadline_runner r{1h};
  r.at(now + 30min, within);
  r.at(now + 1min, gone);
  gone.reset();
  r.at(now, first);
  ASSERT_TRUE(eventually([&] { return runs.load() == 2 && r.waiting() == 0; }));
  EXPECT_TRUE(first->close());
  EXPECT_TRUE(within->close());
}

// This test ensures the runner's destructor stops its thread with tasks still
// waiting, and triggers none of them.
TEST(deadline_runner, stops_with_tasks_waiting) {
  launcher l;
  std::atomic<int> runs{0};
  auto t = std::make_shared<on_demand_task>(l.fn(), [&] { ++runs; });
  {
    deadline_runner r{10ms};
    r.at(steady::now() + 1h, t);
  }
  EXPECT_FALSE(t->close());
  EXPECT_EQ(runs.load(), 0);
}

// This test ensures entries of gone tasks do not pile up until their times (a
// busy agent ends runs long before their first heartbeat), while the entries
// of live tasks stay and still trigger.
TEST(deadline_runner, drops_gone_tasks_and_keeps_live_ones) {
  launcher l;
  std::atomic<int> runs{0};
  deadline_runner r{10ms};
  std::vector<std::shared_ptr<on_demand_task>> live;
  for (int i = 0; i < 100; ++i) {
    live.push_back(std::make_shared<on_demand_task>(l.fn(), [&] { ++runs; }));
    r.at(steady::now() + 1h, live.back());
  }
  // Push entries of gone tasks until the runner drops them: then only the
  // live entries and the one just pushed are left.
  size_t before = r.waiting();
  size_t pushed = 0;
  for (; pushed < 2 * deadline_runner::min_drop_at; ++pushed) {
    r.at(steady::now() + 1h, std::make_shared<on_demand_task>(l.fn(), [&] { ++runs; }));
    if (r.waiting() <= before) break;
    before = r.waiting();
  }
  EXPECT_LT(pushed, deadline_runner::min_drop_at);
  EXPECT_EQ(r.waiting(), live.size() + 1);

  auto soon = std::make_shared<on_demand_task>(l.fn(), [&] { ++runs; });
  r.at(steady::now(), soon);
  ASSERT_TRUE(eventually([&] { return runs.load() == 1; }));
  EXPECT_TRUE(soon->close());
  for (auto& t : live)
    EXPECT_FALSE(t->close());
}
