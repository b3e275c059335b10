#include "routines/timers/timer_routine.hpp"

#include "mesh/actors/messages.hpp"
#include "mesh/domain/deadline_queue.hpp"

#include <caf/actor_system.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/stateful_actor.hpp>
#include <unordered_map>

namespace polymesh {

namespace {

struct timer_state {
  static inline const char* name = "timers";
  context_ptr ctx;
  deadline_queue deadlines;
  std::unordered_map<std::string, caf::actor> targets;
};

using self_ptr = caf::stateful_actor<timer_state>*;

size_t fire_due(self_ptr self) {
  auto& st = self->state;
  auto due = st.deadlines.pop_due(st.ctx->now());
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
