// Threads for the agent's runs and log shippers, kept between runs.
//
// Each task gets a thread at once: an idle one when there is one, a new one
// otherwise, so tasks never wait for each other (a run's worker waits for
// its shipper; queueing one behind the other could deadlock). A thread that
// stays idle for `linger` ends, so a burst does not leave thousands behind.
// Starting a thread per task was 11 % of a busy agent's CPU (`clone3`).
//
// Thread-safety: `run` and `threads` may be called from any thread, also
// from a task. The destructor waits for running tasks, then joins.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

namespace polymesh::sdk {

class thread_pool {
public:
  explicit thread_pool(std::chrono::milliseconds linger);
  ~thread_pool();

  thread_pool(const thread_pool&) = delete;
  thread_pool& operator=(const thread_pool&) = delete;

  /// Runs `task` on a thread of its own (idle or new).
  void run(std::function<void()> task);

  /// Threads alive now, busy or idle.
  [[nodiscard]] size_t threads() const;

  /// Threads waiting for a task.
  [[nodiscard]] size_t idle() const;

  /// Threads started so far.
  [[nodiscard]] uint64_t started() const;

private:
  void serve(uint64_t id);
  /// Joins the threads that ended. REQUIRES: `mtx_` not held.
  void join_ended();

  const std::chrono::milliseconds linger_;
  mutable std::mutex mtx_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> tasks_;
  std::map<uint64_t, std::thread> threads_;
  std::vector<std::thread> ended_;
  size_t idle_ = 0;
  uint64_t next_id_ = 0;
  bool stopping_ = false;
};

} // namespace polymesh::sdk
