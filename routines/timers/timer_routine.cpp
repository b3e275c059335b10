#include "routines/timers/timer_routine.hpp"

#include "mesh/actors/messages.hpp"
#include "mesh/domain/deadline_queue.hpp"
#include "mesh/domain/log.hpp"

#include <caf/actor_system.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/stateful_actor.hpp>
#include <unordered_map>

namespace polymesh {

namespace {

/// A gap this long between two looks at the clock (100 ms apart by
/// default) means the process did not run meanwhile: it was stopped
/// (`SIGSTOP`), its host suspended, or it starved.
constexpr duration stall_gap = std::chrono::seconds{2};

struct timer_state {
  static inline const char* name = "timers";
  context_ptr ctx;
  deadline_queue deadlines;
  std::unordered_map<std::string, caf::actor> targets;
  duration last_look{};
};

using self_ptr = caf::stateful_actor<timer_state>*;

size_t fire_due(self_ptr self) {
  auto& st = self->state;
  // After a stall, the agents' requests are still queued in the sockets:
  // firing their deadlines first would find every one of them silent. The
  // windows that wait on agents restart now instead (the deadlines fire,
  // and their owners re-arm them from `listening_since`).
  auto [now, looked] = st.ctx->clock->now_and_monotonic();
  if (looked - st.last_look >= stall_gap) {
    // Both timer routines see the stall; the first says so.
    if (st.ctx->listening_again(now) + stall_gap <= now)
      log(log_level::warn,
          "the mesh did not run for " + std::to_string((looked - st.last_look).count()) +
              " ms (stopped, its host suspended, or starved): agents and "
              "runs get their windows again from now");
  }
  st.last_look = looked;
  auto due = st.deadlines.pop_due(now);
  for (auto& key : due) {
    auto it = st.targets.find(key);
    if (it == st.targets.end()) continue;
    self->send(it->second, fired_atom::value);
    st.targets.erase(it);
  }
  return due.size();
}

caf::behavior timer_routine(self_ptr self, context_ptr ctx) {
  self->state.ctx = std::move(ctx);
  self->state.last_look = self->state.ctx->clock->monotonic();
  self->delayed_send(self, self->state.ctx->config.timer_resolution, sweep_atom::value);
  return {
      [=](arm_atom, const std::string& key, timestamp deadline,
          const caf::actor& target) {
        self->state.deadlines.arm(key, deadline);
        self->state.targets[key] = target;
      },
      [=](disarm_atom, const std::string& key) {
        self->state.deadlines.cancel(key);
        self->state.targets.erase(key);
      },
      [=](tick_atom) { return fire_due(self); },
      [=](count_atom) { return self->state.deadlines.size(); },
      [=](sweep_atom) {
        fire_due(self);
        if (!self->state.ctx->stopping)
          self->delayed_send(self, self->state.ctx->config.timer_resolution,
                             sweep_atom::value);
      },
  };
}

} // namespace

caf::actor spawn_timer_routine(caf::actor_system& sys, context_ptr ctx,
                               std::string name) {
  (void)name; // CAF 0.17 takes actor names from the state type; kept for logs
  return sys.spawn(timer_routine, std::move(ctx));
}

} // namespace polymesh
