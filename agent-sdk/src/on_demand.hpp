// Starting a run's log shipper only when the run needs one.
//
// A shipper sends a run's output, its progress messages and a heartbeat every
// `heartbeat_interval_s`. A run that writes nothing, reports no progress and
// ends before its first heartbeat is due needs none of that, and starting a
// shipper for it anyway was a fifth of a busy agent's CPU (a thread hand-off
// to start it, one to close the log, one to wait for its end). So the shipper
// is an `on_demand_task`: the run's first output or progress message starts
// it, and so does the agent's `deadline_runner` when the first heartbeat is
// near.
//
// Thread-safety: all members may be called from any thread.
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace polymesh::sdk {

/// A task started at most once, when first asked for, and never after it
/// was closed.
class on_demand_task {
public:
  /// `launch` runs what it is given on a thread of its own
  /// (`thread_pool::run`); `task` is what `trigger` starts.
  on_demand_task(std::function<void(std::function<void()>)> launch,
                 std::function<void()> task);
  /// Waits for a started task (see `close`).
  ~on_demand_task();

  on_demand_task(const on_demand_task&) = delete;
  on_demand_task& operator=(const on_demand_task&) = delete;

  /// Starts the task unless it has started or was closed.
  void trigger();
  /// No start after this. Waits until a started task has ended; returns
  /// whether it had started.
  bool close();

private:
  enum class state { waiting, running, ended, closed };

  std::function<void(std::function<void()>)> launch_;
  std::function<void()> task_;
  std::mutex mtx_;
  std::condition_variable cv_;
  state state_ = state::waiting;
};

/// Triggers `on_demand_task`s at their times, on one thread of its own
/// (started with the first `at`). A time is a latest time: tasks due within
/// `slack` of one that is due go with it, so that under a steady stream of
/// runs the thread wakes at most once per `slack`, not once per run.
///
/// A task that is gone (its run ended) keeps its entry until its time, and
/// times are a heartbeat away: at a high run rate most entries are of
/// ended runs. They are dropped whenever the entries have doubled since
/// the last drop, so the entries follow the tasks alive, not the run rate.
class deadline_runner {
public:
  explicit deadline_runner(std::chrono::milliseconds slack);
  /// Stops the thread; tasks not due yet are not triggered.
  ~deadline_runner();

  deadline_runner(const deadline_runner&) = delete;
  deadline_runner& operator=(const deadline_runner&) = delete;

  /// Triggers `task` at `when`, unless it is gone by then.
  void at(std::chrono::steady_clock::time_point when, std::weak_ptr<on_demand_task> task);

  /// Entries waiting (also those whose task is gone already).
  [[nodiscard]] size_t waiting() const;

  /// Entries at which gone tasks are dropped, at least.
  static constexpr size_t min_drop_at = 1024;

private:
  struct entry {
    std::chrono::steady_clock::time_point when;
    std::weak_ptr<on_demand_task> task;
    // The earliest on top of the heap.
    bool operator<(const entry& o) const { return when > o.when; }
  };

  void serve();
  void drop_gone();

  const std::chrono::milliseconds slack_;
  mutable std::mutex mtx_;
  std::condition_variable cv_;
  std::vector<entry> heap_;
  size_t drop_at_ = min_drop_at;
  std::thread thread_;
  bool stopping_ = false;
};

} // namespace polymesh::sdk
