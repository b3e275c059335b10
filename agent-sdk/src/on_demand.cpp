#include "on_demand.hpp"

#include <algorithm>

namespace polymesh::sdk {

on_demand_task::on_demand_task(std::function<void(std::function<void()>)> launch,
                               std::function<void()> task)
    : launch_(std::move(launch))
    , task_(std::move(task)) {}

on_demand_task::~on_demand_task() {
  close();
}

void on_demand_task::trigger() {
  std::lock_guard<std::mutex> guard{mtx_};
  if (state_ != state::waiting) return;
  state_ = state::running;
  // Launched under the lock: `close` cannot slip in between and return
  // while the task is about to start.
  launch_([this] {
    task_();
    std::lock_guard<std::mutex> done{mtx_};
    state_ = state::ended;
    cv_.notify_all();
  });
}

bool on_demand_task::close() {
  std::unique_lock<std::mutex> guard{mtx_};
  if (state_ == state::waiting) state_ = state::closed;
  cv_.wait(guard, [this] { return state_ != state::running; });
  return state_ == state::ended;
}

deadline_runner::deadline_runner(std::chrono::milliseconds slack)
    : slack_(slack) {}

deadline_runner::~deadline_runner() {
  {
    std::lock_guard<std::mutex> guard{mtx_};
    stopping_ = true;
    cv_.notify_all();
  }
  if (thread_.joinable()) thread_.join();
}

void deadline_runner::at(std::chrono::steady_clock::time_point when,
                         std::weak_ptr<on_demand_task> task) {
  std::lock_guard<std::mutex> guard{mtx_};
  if (stopping_) return;
  if (!thread_.joinable()) thread_ = std::thread{[this] { serve(); }};
  if (heap_.size() >= drop_at_) drop_gone();
  // Wake the thread only when it sleeps past the new time.
  bool sooner = heap_.empty() || when < heap_.front().when;
  heap_.push_back(entry{when, std::move(task)});
  std::push_heap(heap_.begin(), heap_.end());
  if (sooner) cv_.notify_one();
}

void deadline_runner::drop_gone() {
  heap_.erase(std::remove_if(heap_.begin(), heap_.end(),
                             [](const entry& e) { return e.task.expired(); }),
              heap_.end());
  std::make_heap(heap_.begin(), heap_.end());
  drop_at_ = std::max(min_drop_at, 2 * heap_.size());
}

size_t deadline_runner::waiting() const {
  std::lock_guard<std::mutex> guard{mtx_};
  return heap_.size();
}

void deadline_runner::serve() {
  std::unique_lock<std::mutex> guard{mtx_};
  std::vector<std::shared_ptr<on_demand_task>> due;
  while (!stopping_) {
    if (heap_.empty()) {
      cv_.wait(guard);
      continue;
    }
    auto now = std::chrono::steady_clock::now();
    if (heap_.front().when > now) {
      // A copy: `wait_until` reads its time point again after waking, and
      // an `at` meanwhile may have grown (reallocated) the heap.
      auto when = heap_.front().when;
      cv_.wait_until(guard, when);
      continue;
    }
    while (!heap_.empty() && heap_.front().when <= now + slack_) {
      std::pop_heap(heap_.begin(), heap_.end());
      if (auto task = heap_.back().task.lock()) due.push_back(std::move(task));
      heap_.pop_back();
    }
    guard.unlock();
    for (auto& task : due)
      task->trigger();
    due.clear(); // a task's last owner may be this thread
    guard.lock();
  }
}

} // namespace polymesh::sdk
