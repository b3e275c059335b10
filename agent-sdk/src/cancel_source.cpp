#include "polymesh/sdk/cancel_source.hpp"

namespace polymesh::sdk {

cancel_source::cancel_source(std::optional<clock_type::time_point> deadline)
    : deadline_(deadline) {}

bool cancel_source::cancel(cancel_reason why) {
  if (why == cancel_reason::none) return false;
  std::lock_guard<std::mutex> guard{mtx_};
  check_deadline_locked();
  if (reason_ != cancel_reason::none) return false;
  reason_ = why;
  cv_.notify_all();
  return true;
}

void cancel_source::check_deadline_locked() const {
  if (reason_ == cancel_reason::none && deadline_ && clock_type::now() >= *deadline_) {
    reason_ = cancel_reason::timeout;
    cv_.notify_all();
  }
}

bool cancel_source::canceled() const {
  return reason() != cancel_reason::none;
}

cancel_reason cancel_source::reason() const {
  std::lock_guard<std::mutex> guard{mtx_};
  check_deadline_locked();
  return reason_;
}

std::optional<cancel_token::clock_type::time_point> cancel_source::deadline() const {
  return deadline_;
}

bool cancel_source::wait_for(std::chrono::milliseconds d) const {
  std::unique_lock<std::mutex> guard{mtx_};
  auto until = clock_type::now() + d;
  if (deadline_ && *deadline_ < until) until = *deadline_;
  cv_.wait_until(guard, until, [this] { return reason_ != cancel_reason::none; });
  check_deadline_locked();
  return reason_ != cancel_reason::none;
}

} // namespace polymesh::sdk
