#include "routines/timers/timer_routine.hpp"

#include "mesh/actors/messages.hpp"
#include "mesh/domain/deadline_queue.hpp"
#include "mesh/domain/log.hpp"

#include <caf/actor_system.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/stateful_actor.hpp>
#include <cstdlib>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>

namespace polymesh {

namespace {

struct timer_state {
  static inline const char* name = "timers";
  context_ptr ctx;
  deadline_queue deadlines;
  std::unordered_map<std::string, caf::actor> targets;
  duration last_look{};
  /// The clock's last jump seen (`clock::last_jump`).
  timestamp seen_jump{};
};

using self_ptr = caf::stateful_actor<timer_state>*;

std::string seconds_text(duration d) {
  return std::to_string((std::llabs(d.count()) + 500) / 1000) + " s";
}

/// Logs a step of the host's wall clock that meshd's clock catches up with
/// gradually (`system_clock`), once, and when it has caught up.
void log_catch_up(mesh_context& ctx) {
  constexpr int64_t second = 1000;
  auto lead = ctx.clock->behind_wall().count();
  auto logged = ctx.logged_lead_ms.load();
  if (std::llabs(lead) < second) {
    if (logged != 0 && ctx.logged_lead_ms.compare_exchange_strong(logged, 0))
      log(log_level::info, "meshd's clock has caught up with the host's wall clock");
    return;
  }
  // Catching up: remembered silently, so that a new step is measured from here.
  if (std::llabs(lead) <= std::llabs(logged) && (lead < 0) == (logged < 0)) {
    ctx.logged_lead_ms.compare_exchange_strong(logged, lead);
    return;
  }
  if (std::llabs(lead - logged) < second ||
      !ctx.logged_lead_ms.compare_exchange_strong(logged, lead))
    return;
  auto step = duration{lead - logged};
  auto hours =
      (std::llabs(lead) * system_clock::catch_up_divisor + 1'800'000) / 3'600'000;
  log(log_level::warn,
      std::string{"the host's wall clock stepped "} +
          (step.count() > 0 ? "forward" : "back") + " by " + seconds_text(step) +
          "; meshd's clock is " + seconds_text(duration{lead}) +
          (lead > 0 ? " behind it" : " ahead of it") +
          " and catches up gradually (in about " + std::to_string(hours) +
          " h), so that the windows that wait on agents keep their length and no "
          "timestamp goes back; restart meshd to take the wall clock's time at once");
}

/// After meshd did not run, or its clock jumped, from `from` until `now`:
/// the agent access tokens that expired meanwhile, or would before their
/// agents can renew them, are honoured for the agents' window to be heard
/// from (`agents.offline_after`, at most `agents.token_ttl`), as after a
/// restart, and stored by the token registry. `authenticate` honoured them
/// until now (see `token_cache::mesh_ran`).
void keep_agents_sessions(self_ptr self, timestamp from, timestamp now,
                          const std::string& what,
                          std::optional<timestamp> made_by = {}) {
  auto& ctx = *self->state.ctx;
  auto until = now + ctx.config.agent_token_grace();
  auto kept = ctx.tokens->honour_through(from, until, made_by);
  if (kept.empty()) return;
  log(log_level::info,
      std::to_string(kept.size()) + " agent access tokens expired " + what +
          " or would before their agents could renew them; each is honoured until " +
          to_rfc3339(until) +
          " (agents.offline_after, at most agents.token_ttl), so that agents keep "
          "their sessions and runs");
  self->send(ctx.token_registry, update_atom::value, std::move(kept));
}

size_t fire_due(self_ptr self) {
  auto& st = self->state;
  // After a stall, the agents' requests are still queued in the sockets:
  // firing their deadlines first would find every one of them silent. The
  // windows that wait on agents restart now instead (the deadlines fire,
  // and their owners re-arm them from `listening_since`).
  // Both timer routines see a stall or a jump; the first says so and
  // honours the agent tokens that lapsed. One look at a time, so that the
  // other's look (`mesh_ran`, which ends `authenticate`'s own grace) cannot
  // come between the first's seeing it and its honouring them.
  std::unique_lock<std::mutex> look{st.ctx->looks};
  auto [now, looked] = st.ctx->clock->now_and_monotonic();
  auto gap = looked - st.last_look;
  auto jump = st.ctx->clock->last_jump();
  if (jump && jump->at == st.seen_jump) jump.reset();
  // Both decided before either moves `listening_since`.
  auto since = st.ctx->listening_since();
  bool first_to_stall = gap >= stall_gap && since + stall_gap <= now;
  bool first_to_jump = jump && since + stall_gap <= jump->at;
  if (jump) {
    st.seen_jump = jump->at;
    st.ctx->listening_again(jump->at);
  }
  if (gap >= stall_gap) st.ctx->listening_again(now);
  if (first_to_stall) {
    log(log_level::warn, "the mesh did not run for " + std::to_string(gap.count()) +
                             " ms (stopped, its host suspended, or starved): agents "
                             "and runs get their windows again from now");
    keep_agents_sessions(self, now - gap, now, "while the mesh did not run");
  }
  if (first_to_jump) {
    log(log_level::warn, "the host's wall clock stepped forward by " +
                             seconds_text(jump->by) +
                             " from a time before meshd existed (a host that learnt "
                             "the date late): meshd took its time at once, and agents "
                             "and runs get their windows again from now");
    // Only tokens made before the jump, at the wrong time: those loaded
    // from the store with the right one keep their expiry.
    keep_agents_sessions(self, jump->at - jump->by, jump->at, "at that step",
                         jump->at - jump->by);
  }
  st.last_look = looked;
  st.ctx->tokens->mesh_ran(now, looked);
  look.unlock();
  log_catch_up(*st.ctx);
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
  auto [now, looked] = self->state.ctx->clock->now_and_monotonic();
  self->state.last_look = looked;
  self->state.ctx->tokens->mesh_ran(now, looked);
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
