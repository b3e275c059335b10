// The HTTP worker pool's stop: it waits for the requests in progress, and
// past its grace has their connections cut instead of waiting on.
#include "mesh/http/worker_pool.hpp"

#include <atomic>
#include <chrono>
#include <future>
#include <gtest/gtest.h>

namespace polymesh {
namespace {

using namespace std::chrono_literals;

// This test ensures a stop runs every queued job and, when they end within
// the grace, never calls `overdue`.
TEST(worker_pool, a_stop_within_the_grace_runs_every_job_and_cuts_nothing) {
  std::atomic<int> ran{0};
  std::atomic<bool> overdue{false};
  {
    worker_pool pool{2, 1h, [&] { overdue = true; }};
    for (int i = 0; i < 50; ++i)
      pool.enqueue([&] { ++ran; });
    pool.shutdown();
    EXPECT_EQ(ran.load(), 50);
  }
  EXPECT_FALSE(overdue.load());
}

// This test ensures a job still running when the grace is over has
// `overdue` called (which cuts its connection, here: lets it end), once,
// and that the stop then returns.
TEST(worker_pool, a_job_that_outlasts_the_grace_is_overdue_once) {
  std::promise<void> cut;
  auto released = cut.get_future().share();
  std::promise<void> running;
  std::atomic<int> overdue{0};
  worker_pool pool{1, 0ms, [&] {
                     ++overdue;
                     cut.set_value();
                   }};
  pool.enqueue([&, released] {
    running.set_value();
    released.wait(); // a transfer that goes on until its connection is cut
  });
  running.get_future().wait();
  pool.shutdown();
  pool.shutdown();
  EXPECT_EQ(overdue.load(), 1);
}

} // namespace
} // namespace polymesh
