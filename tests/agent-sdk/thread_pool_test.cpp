// The agent's pool of run threads: reuse, a thread per concurrent task, idle
// threads ending, and the destructor waiting for tasks.
#include "eventually.hpp"
#include "thread_pool.hpp"

#include <atomic>
#include <condition_variable>
#include <gtest/gtest.h>
#include <set>

using namespace polymesh::sdk;
using namespace std::chrono_literals;
using polymesh::sdk::test_support::eventually;

namespace {

/// Set once; waited for.
class flag {
public:
  void set() {
    std::lock_guard<std::mutex> guard{mtx_};
    set_ = true;
    cv_.notify_all();
  }
  bool wait(std::chrono::milliseconds limit = 10s) {
    std::unique_lock<std::mutex> guard{mtx_};
    return cv_.wait_for(guard, limit, [this] { return set_; });
  }

private:
  std::mutex mtx_;
  std::condition_variable cv_;
  bool set_ = false;
};

} // namespace

// This test ensures tasks run one after another share one thread.
TEST(thread_pool, sequential_tasks_reuse_a_thread) {
  thread_pool pool{10s};
  std::set<std::thread::id> seen;
  for (int i = 0; i < 50; ++i) {
    flag done;
    std::thread::id id;
    pool.run([&] {
      id = std::this_thread::get_id();
      done.set();
    });
    ASSERT_TRUE(done.wait());
    // Reused once it waits again; a task that comes sooner gets a new one.
    ASSERT_TRUE(eventually([&] { return pool.idle() == 1; }));
    seen.insert(id);
  }
  EXPECT_EQ(seen.size(), 1u);
  EXPECT_EQ(pool.started(), 1u);
}

// This test ensures tasks never wait for each other: four tasks that each
// wait for all four to have started all finish.
TEST(thread_pool, concurrent_tasks_get_threads_of_their_own) {
  thread_pool pool{10s};
  std::mutex mtx;
  std::condition_variable cv;
  int arrived = 0;
  std::atomic<int> passed{0};
  for (int i = 0; i < 4; ++i)
    pool.run([&] {
      std::unique_lock<std::mutex> guard{mtx};
      ++arrived;
      cv.notify_all();
      if (cv.wait_for(guard, 10s, [&] { return arrived == 4; })) ++passed;
    });
  ASSERT_TRUE(eventually([&] { return passed == 4; }, 15s));
  EXPECT_EQ(pool.started(), 4u);
}

// This test ensures a thread idle for longer than the linger ends, and a
// later task gets a new one.
TEST(thread_pool, idle_threads_end_after_the_linger) {
  thread_pool pool{50ms};
  flag done;
  pool.run([&] { done.set(); });
  ASSERT_TRUE(done.wait());
  ASSERT_TRUE(eventually([&] { return pool.threads() == 0; }));
  flag again;
  pool.run([&] { again.set(); });
  ASSERT_TRUE(again.wait());
  EXPECT_EQ(pool.started(), 2u);
}

// This test ensures destroying the pool waits for the tasks it was given,
// also those still queued for a thread.
TEST(thread_pool, destructor_waits_for_tasks) {
  std::atomic<int> finished{0};
  {
    thread_pool pool{10s};
    flag release;
    pool.run([&] {
      release.wait();
      ++finished;
    });
    for (int i = 0; i < 3; ++i)
      pool.run([&] { ++finished; });
    release.set();
  }
  EXPECT_EQ(finished, 4);
}
