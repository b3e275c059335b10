// The runtime's side of a `cancel_token`: the object that fires it.
//
// A `cancel_source` is created per run with an optional deadline. `cancel`
// fires it once (the first reason wins); passing the deadline fires it with
// `timeout` the next time anyone looks. Waiters are woken at once.
//
// Thread-safety: every member may be called from any thread.
#pragma once

#include "polymesh/sdk/plan.hpp"

#include <condition_variable>
#include <mutex>

namespace polymesh::sdk {

class cancel_source final : public cancel_token {
public:
  cancel_source() = default;
  explicit cancel_source(std::optional<clock_type::time_point> deadline);

  /// Fires the token; later calls keep the first reason. Returns true if
  /// this call fired it.
  bool cancel(cancel_reason why);

  [[nodiscard]] bool canceled() const override;
  [[nodiscard]] cancel_reason reason() const override;
  [[nodiscard]] std::optional<clock_type::time_point> deadline() const override;
  bool wait_for(std::chrono::milliseconds d) const override;

private:
  /// Fires with `timeout` when the deadline has passed. REQUIRES: `mtx_` held.
  void check_deadline_locked() const;

  mutable std::mutex mtx_;
  mutable std::condition_variable cv_;
  mutable cancel_reason reason_ = cancel_reason::none;
  std::optional<clock_type::time_point> deadline_;
};

} // namespace polymesh::sdk
