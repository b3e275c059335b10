// The threads that serve meshd's HTTP requests, and how a stop ends the
// requests still in progress.
//
// cpp-httplib runs each connection as one job of its task queue. Its own
// `ThreadPool` waits at a stop for every job to end, however long a client
// takes to send or read a body; this pool waits `http.stop_grace`, then has
// the connections still open cut (`cut_connections`), so a stop ends in
// bounded time. Owned by cpp-httplib's server while it serves.
//
// Threads: `enqueue` from cpp-httplib's accept loop; `shutdown` from the
// thread that ends `serve`; `cut_connections` from any thread.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <httplib.h>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

namespace polymesh {

/// Shuts down (without closing them: cpp-httplib does that) the TCP
/// connections this process accepted on `port`, so that a transfer still
/// running on one fails at its next read or write; `already_cut` holds the
/// ones cut before (a socket shut down answers `shutdown` with success
/// again). Returns how many it cut. The listener must be closed by then, so
/// that only accepted connections have `port` as their own. Found in
/// /proc/self/fd (Linux): cpp-httplib 0.11 keeps its sockets to itself.
size_t cut_connections(int port, std::set<int>& already_cut);

/// cpp-httplib's `ThreadPool`, except that a thread the system will not
/// create is an exception its owner can catch (`ThreadPool`'s constructor
/// throws with the threads it made still joinable, which is
/// `std::terminate`), and that its shutdown waits `grace` for the requests
/// in progress before calling `overdue` (which cuts their connections).
class worker_pool final : public httplib::TaskQueue {
public:
  /// Starts `n` threads; throws `std::system_error` when the system will not
  /// give them (the ones started are joined first).
  worker_pool(size_t n, std::chrono::milliseconds grace, std::function<void()> overdue);
  worker_pool(const worker_pool&) = delete;
  worker_pool& operator=(const worker_pool&) = delete;
  ~worker_pool() override;

  void enqueue(std::function<void()> fn) override;

  /// Lets the queued jobs run, for `grace` at most before `overdue` is
  /// called, then joins every thread. Idempotent.
  void shutdown() override;

private:
  void work();

  std::mutex mtx_;
  std::condition_variable ready_;
  /// Signalled as each thread ends.
  std::condition_variable done_;
  std::deque<std::function<void()>> jobs_;
  bool stopping_ = false;
  /// Threads not yet ended.
  size_t working_ = 0;
  std::chrono::milliseconds grace_;
  std::function<void()> overdue_;
  std::vector<std::thread> threads_;
};

} // namespace polymesh
