#include "thread_pool.hpp"

namespace polymesh::sdk {

thread_pool::thread_pool(std::chrono::milliseconds linger)
    : linger_(linger) {}

thread_pool::~thread_pool() {
  {
    std::unique_lock<std::mutex> guard{mtx_};
    stopping_ = true;
    cv_.notify_all();
    // Queued tasks still run: a thread takes each before it looks at
    // `stopping_`.
    cv_.wait(guard, [this] { return threads_.empty(); });
  }
  join_ended();
}

void thread_pool::run(std::function<void()> task) {
  join_ended();
  std::lock_guard<std::mutex> guard{mtx_};
  tasks_.push_back(std::move(task));
  if (idle_ >= tasks_.size()) {
    cv_.notify_one();
    return;
  }
  auto id = next_id_++;
  threads_.emplace(id, std::thread{[this, id] { serve(id); }});
}

void thread_pool::serve(uint64_t id) {
  std::unique_lock<std::mutex> guard{mtx_};
  for (;;) {
    if (tasks_.empty()) {
      if (stopping_) break;
      ++idle_;
      bool woken =
          cv_.wait_for(guard, linger_, [this] { return !tasks_.empty() || stopping_; });
      --idle_;
      if (!woken) break; // idle for `linger`
      continue;
    }
    auto task = std::move(tasks_.front());
    tasks_.pop_front();
    guard.unlock();
    task();
    task = nullptr; // what it captured goes before the next wait
    guard.lock();
  }
  auto self = threads_.find(id);
  ended_.push_back(std::move(self->second));
  threads_.erase(self);
  if (threads_.empty()) cv_.notify_all();
}

void thread_pool::join_ended() {
  std::vector<std::thread> ended;
  {
    std::lock_guard<std::mutex> guard{mtx_};
    ended.swap(ended_);
  }
  for (auto& t : ended)
    t.join();
}

size_t thread_pool::threads() const {
  std::lock_guard<std::mutex> guard{mtx_};
  return threads_.size();
}

size_t thread_pool::idle() const {
  std::lock_guard<std::mutex> guard{mtx_};
  return idle_;
}

uint64_t thread_pool::started() const {
  std::lock_guard<std::mutex> guard{mtx_};
  return next_id_;
}

} // namespace polymesh::sdk
