#include "mesh/http/worker_pool.hpp"

#include <charconv>
#include <dirent.h>
#include <netinet/in.h>
#include <string_view>
#include <sys/socket.h>
#include <system_error>

namespace polymesh {

size_t cut_connections(int port, std::set<int>& already_cut) {
  DIR* fds = ::opendir("/proc/self/fd");
  if (fds == nullptr) return 0;
  size_t cut = 0;
  while (const dirent* entry = ::readdir(fds)) {
    int fd = 0;
    auto name = std::string_view{entry->d_name};
    auto [end, ec] = std::from_chars(name.data(), name.data() + name.size(), fd);
    if (ec != std::errc{} || end != name.data() + name.size() || fd == ::dirfd(fds))
      continue;
    int type = 0;
    int listening = 0;
    socklen_t len = sizeof type;
    if (::getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) != 0 || type != SOCK_STREAM)
      continue;
    len = sizeof listening;
    if (::getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) != 0 || listening)
      continue;
    sockaddr_storage local{};
    len = sizeof local;
    if (::getsockname(fd, reinterpret_cast<sockaddr*>(&local), &len) != 0) continue;
    int local_port = -1;
    if (local.ss_family == AF_INET)
      local_port = ntohs(reinterpret_cast<const sockaddr_in&>(local).sin_port);
    else if (local.ss_family == AF_INET6)
      local_port = ntohs(reinterpret_cast<const sockaddr_in6&>(local).sin6_port);
    // A socket shut down before answers `shutdown` with success again.
    if (local_port == port && already_cut.insert(fd).second &&
        ::shutdown(fd, SHUT_RDWR) == 0)
      ++cut;
  }
  ::closedir(fds);
  return cut;
}

worker_pool::worker_pool(size_t n, std::chrono::milliseconds grace,
                         std::function<void()> overdue)
    : grace_(grace)
    , overdue_(std::move(overdue)) {
  threads_.reserve(n);
  try {
    for (size_t i = 0; i < n; ++i) {
      threads_.emplace_back([this] { work(); });
      std::lock_guard<std::mutex> guard{mtx_};
      ++working_;
    }
  } catch (...) {
    shutdown();
    throw;
  }
}

worker_pool::~worker_pool() {
  shutdown();
}

void worker_pool::enqueue(std::function<void()> fn) {
  {
    std::lock_guard<std::mutex> guard{mtx_};
    jobs_.push_back(std::move(fn));
  }
  ready_.notify_one();
}

void worker_pool::shutdown() {
  {
    std::unique_lock<std::mutex> lock{mtx_};
    stopping_ = true;
    ready_.notify_all();
    bool late = !done_.wait_for(lock, grace_, [&] { return working_ == 0; });
    if (late && overdue_) {
      auto overdue = std::move(overdue_);
      overdue_ = nullptr;
      lock.unlock();
      overdue();
    }
  }
  for (auto& t : threads_)
    if (t.joinable()) t.join();
}

void worker_pool::work() {
  for (;;) {
    std::function<void()> fn;
    {
      std::unique_lock<std::mutex> lock{mtx_};
      ready_.wait(lock, [&] { return !jobs_.empty() || stopping_; });
      if (jobs_.empty()) { // stopping, and nothing left to do
        --working_;
        done_.notify_all();
        return;
      }
      fn = std::move(jobs_.front());
      jobs_.pop_front();
    }
    fn();
  }
}

} // namespace polymesh
