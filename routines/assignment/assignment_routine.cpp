#include "routines/assignment/assignment_routine.hpp"

#include "mesh/actors/messages.hpp"
#include "mesh/domain/clock.hpp"
#include "mesh/domain/log.hpp"
#include "routines/assignment/assigner.hpp"

#include <algorithm>
#include <caf/actor_system.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/stateful_actor.hpp>
#include <optional>
#include <set>
#include <unordered_map>
#include <vector>

namespace polymesh {

namespace {

struct assignment_state {
  static inline const char* name = "assignment";
  context_ptr ctx;
  assigner decisions;
  std::unordered_map<std::string, caf::actor> run_actors;
  std::unordered_map<std::string, caf::actor> agent_actors;
  /// Each agent's session as last announced: a placement is offered to that
  /// session only (a new registration may offer other plans, labels, slots).
  std::unordered_map<std::string, int64_t> sessions;
  /// Queued runs that name their agent: agent name -> run ids.
  std::unordered_map<std::string, std::set<std::string>> targeted;
  std::unordered_map<std::string, std::string> target_of;
  /// The latest announcement per agent name: its id and status.
  std::unordered_map<std::string, std::pair<std::string, agent_status>> by_name;
  /// Agents whose runs' delivery leases lapsed since they last acted on a
  /// run, for their current session (`agents.hold_back_max`).
  struct lapses {
    int64_t session = 0;
    /// Leases lapsed in a row, and holds in a row.
    int64_t leases = 0;
    int64_t holds = 0;
    /// While held back: until when; none once the hold ended.
    std::optional<timestamp> until;
  };
  std::unordered_map<std::string, lapses> lapsed;
  /// Whether a `rank` message to ourselves is on its way.
  bool rank_sent = false;
};

using self_ptr = caf::stateful_actor<assignment_state>*;

/// An agent that runs naming it can no longer wait for.
bool gone(agent_status s) {
  return s == agent_status::offline || s == agent_status::deregistered;
}

void forget(self_ptr self, const std::string& run_id) {
  auto& st = self->state;
  st.run_actors.erase(run_id);
  if (auto it = st.target_of.find(run_id); it != st.target_of.end()) {
    st.targeted[it->second].erase(run_id);
    st.target_of.erase(it);
  }
}

size_t place(self_ptr self) {
  auto& st = self->state;
  auto placements = st.decisions.place();
  for (auto& p : placements) {
    auto run = st.run_actors.find(p.run_id);
    auto agent = st.agent_actors.find(p.agent_id);
    if (run == st.run_actors.end() || agent == st.agent_actors.end()) {
      st.decisions.release(p.agent_id);
      st.decisions.release_hold(p.run_id);
      continue;
    }
    auto agent_id = p.agent_id;
    auto run_id = p.run_id;
    auto declined = [=] {
      self->state.decisions.release(agent_id);
      self->state.decisions.release_hold(run_id);
      place(self);
    };
    self->request(run->second, caf::infinite, assign_atom::value, p.agent_id,
                  agent->second, st.sessions[p.agent_id])
        .then(
            [=](bool taken) {
              if (!taken) declined();
            },
            [=](caf::error&) { declined(); });
    forget(self, p.run_id);
  }
  return placements.size();
}

/// The liveness routine's key for the end of `agent_id`'s hold (its own
/// key is the agent id).
std::string hold_timer(const std::string& agent_id) {
  return agent_id + "/hold";
}

/// What explain says of an agent held back.
std::string held_reason(const assignment_state& st, const std::string& agent_id) {
  auto it = st.lapsed.find(agent_id);
  if (it == st.lapsed.end() || !it->second.until) return {};
  auto& l = it->second;
  return "held back until " + to_rfc3339(*l.until) + ": " + std::to_string(l.leases) +
         (l.leases == 1 ? " run" : " runs") +
         " placed with it in a row not started within runs.delivery_lease (" +
         format_duration(st.ctx->config.delivery_lease) + ")";
}

/// Tells the agent's actor what its record shows of its lapsed leases.
void mirror_lapses(self_ptr self, const std::string& agent_id) {
  auto& st = self->state;
  auto actor = st.agent_actors.find(agent_id);
  if (actor == st.agent_actors.end()) return;
  auto it = st.lapsed.find(agent_id);
  if (it == st.lapsed.end()) {
    if (auto session = st.sessions.find(agent_id); session != st.sessions.end())
      self->send(actor->second, held_atom::value, session->second, int64_t{0},
                 timestamp{});
    return;
  }
  self->send(actor->second, held_atom::value, it->second.session, it->second.leases,
             it->second.until.value_or(timestamp{}));
}

void count_held(assignment_state& st) {
  st.ctx->metrics.agents_held(static_cast<int64_t>(
      std::count_if(st.lapsed.begin(), st.lapsed.end(),
                    [](const auto& kv) { return kv.second.until.has_value(); })));
}

/// A run placed with `agent_id`'s `session` was not started within the
/// delivery lease. Unless the agent is held back already, it is now:
/// `runs.delivery_lease` for its first hold in a row, twice that for the
/// next, and so on, at most `agents.hold_back_max`.
void lease_lapsed(self_ptr self, const std::string& agent_id, int64_t session,
                  const std::string& run_id) {
  auto& st = self->state;
  st.ctx->metrics.lease_lapsed();
  auto max = st.ctx->config.hold_back_max;
  auto current = st.sessions.find(agent_id);
  // Forgotten, or a run of an earlier session (0: a run restored at
  // start-up, of whichever session).
  if (current == st.sessions.end() || (session != 0 && session != current->second))
    return;
  auto& l = st.lapsed[agent_id];
  if (l.session != current->second) {
    l = {};
    l.session = current->second;
  }
  ++l.leases;
  auto now = st.ctx->now();
  // The row is kept also when agents are never held back (max 0).
  if (max.count() > 0 && (!l.until || now >= *l.until)) {
    ++l.holds;
    auto length = st.ctx->config.delivery_lease;
    for (int64_t i = 1; i < l.holds && length < max; ++i)
      length *= 2;
    length = std::min(length, max);
    l.until = now + length;
    // On the mesh's clock, as the windows that wait on agents are.
    self->send(st.ctx->liveness, arm_atom::value, hold_timer(agent_id), *l.until,
               caf::actor{self});
    auto name = st.decisions.name_of(agent_id);
    log(log_level::warn,
        "agent " + name + " (" + agent_id + ") held back until " + to_rfc3339(*l.until) +
            ": run " + run_id + " was not started within runs.delivery_lease (" +
            format_duration(st.ctx->config.delivery_lease) + "), " +
            std::to_string(l.leases) + " in a row; hold " + std::to_string(l.holds) +
            " in a row, for " + format_duration(length) +
            " (agents.hold_back_max: " + format_duration(max) + ")");
  }
  st.decisions.hold_back(agent_id, held_reason(st, agent_id));
  mirror_lapses(self, agent_id);
  count_held(st);
}

/// The hold ends: its time is up, or the agent acted on a run
/// (`acted`, which also clears the row).
void end_hold(self_ptr self, const std::string& agent_id, bool acted) {
  auto& st = self->state;
  auto it = st.lapsed.find(agent_id);
  if (it == st.lapsed.end()) return;
  bool was_held = it->second.until.has_value();
  if (acted)
    st.lapsed.erase(it);
  else
    it->second.until.reset();
  if (was_held) {
    self->send(st.ctx->liveness, disarm_atom::value, hold_timer(agent_id));
    st.decisions.hold_back(agent_id, {});
    log(log_level::info,
        "agent " + st.decisions.name_of(agent_id) + " (" + agent_id +
            ") takes runs again: " + (acted ? "it acted on a run" : "its hold is over"));
  }
  mirror_lapses(self, agent_id);
  count_held(st);
  if (was_held) place(self);
}

/// Forgets `agent_id`'s row and hold (its session ended, or the agent is
/// forgotten); true if it was held back.
bool drop_lapses(self_ptr self, const std::string& agent_id) {
  auto& st = self->state;
  auto it = st.lapsed.find(agent_id);
  if (it == st.lapsed.end()) return false;
  bool held = it->second.until.has_value();
  if (held) self->send(st.ctx->liveness, disarm_atom::value, hold_timer(agent_id));
  st.lapsed.erase(it);
  count_held(st);
  return held;
}

/// A new class ranks its agents one step per message, so the messages that
/// arrive meanwhile (other placements, agents, finishes) go between steps.
void keep_ranking(self_ptr self) {
  auto& st = self->state;
  if (st.rank_sent || !st.decisions.ranking()) return;
  st.rank_sent = true;
  self->send(self, rank_atom::value);
}

caf::behavior assignment_routine(self_ptr self, context_ptr ctx) {
  self->state.ctx = std::move(ctx);
  self->delayed_send(self, self->state.ctx->config.assignment_sweep, sweep_atom::value);
  return {
      [=](enqueue_atom, const run_record& run, const caf::actor& actor) {
        auto& st = self->state;
        queued_run q;
        q.id = run.id;
        q.seq = queue_order(run);
        q.priority = run.priority;
        q.plan = run.plan;
        // Both were validated at submit; a stored one that no longer parses
        // (a future grammar change) selects nothing rather than everything.
        auto sel = selector::parse(run.selector);
        auto scope = selector::parse(run.scope, "scope");
        if (!sel || !scope) return;
        q.sel = std::move(*sel);
        q.scope = std::move(*scope);
        q.target_agent = run.target_agent;
        q.concurrency_key = run.concurrency_key;
        if (auto named = st.by_name.find(run.target_agent); !run.target_agent.empty() &&
                                                            named != st.by_name.end() &&
                                                            gone(named->second.second)) {
          // Its agent went away after the submit checked it, before this
          // run was queued: it cannot wait for it (as below, on the news).
          self->send(actor, lost_atom::value, std::string{"offline"}, named->second.first,
                     int64_t{0});
          return;
        }
        st.run_actors[run.id] = actor;
        if (!run.target_agent.empty()) {
          st.targeted[run.target_agent].insert(run.id);
          st.target_of[run.id] = run.target_agent;
        }
        st.decisions.enqueue(std::move(q));
        place(self);
        keep_ranking(self);
      },
      [=](rank_atom) {
        auto& st = self->state;
        st.rank_sent = false;
        st.decisions.rank_more();
        place(self);
        keep_ranking(self);
      },
      [=](dequeue_atom, const std::string& run_id) {
        self->state.decisions.dequeue(run_id);
        forget(self, run_id);
      },
      [=](agent_atom, const agent_record& rec, const caf::actor& actor) {
        auto& st = self->state;
        agent_view v;
        v.id = rec.id;
        v.name = rec.name;
        v.labels = rec.labels;
        v.plans = std::set<std::string>(rec.plans.begin(), rec.plans.end());
        v.capacity = rec.capacity;
        v.status = rec.status;
        // A new registration starts with a clean row of leases, and an
        // agent that deregistered (or was removed) is held back no more.
        if (auto l = st.lapsed.find(rec.id); l != st.lapsed.end() &&
                                             (l->second.session != rec.session ||
                                              rec.status == agent_status::deregistered) &&
                                             drop_lapses(self, rec.id))
          log(log_level::info, "agent " + rec.name + " (" + rec.id +
                                   ") is held back no more: " +
                                   (rec.status == agent_status::deregistered
                                        ? "it deregistered or was removed"
                                        : "it registered again"));
        v.held = held_reason(st, rec.id);
        st.decisions.upsert_agent(std::move(v));
        st.agent_actors[rec.id] = actor;
        st.sessions[rec.id] = rec.session;
        st.by_name[rec.name] = {rec.id, rec.status};
        if (gone(rec.status)) {
          // Runs queued for this agent by name cannot wait for it any more.
          if (auto it = st.targeted.find(rec.name); it != st.targeted.end()) {
            auto ids = std::move(it->second);
            st.targeted.erase(it);
            for (auto& id : ids) {
              st.decisions.dequeue(id);
              st.target_of.erase(id);
              if (auto r = st.run_actors.find(id); r != st.run_actors.end()) {
                self->send(r->second, lost_atom::value, std::string{"offline"}, rec.id,
                           int64_t{0});
                st.run_actors.erase(r);
              }
            }
          }
        }
        place(self);
      },
      [=](forget_atom, const std::string& agent_id, const std::string& name) {
        // Already gone for placement; this drops what is kept of it.
        auto& st = self->state;
        st.decisions.remove_agent(agent_id);
        drop_lapses(self, agent_id);
        st.agent_actors.erase(agent_id);
        st.sessions.erase(agent_id);
        if (auto it = st.by_name.find(name);
            it != st.by_name.end() && it->second.first == agent_id)
          st.by_name.erase(it);
      },
      [=](release_atom, const std::string& agent_id, const std::string& run_id) {
        self->state.decisions.release(agent_id);
        self->state.decisions.release_hold(run_id);
        place(self);
      },
      [=](lapsed_atom, const std::string& agent_id, int64_t session,
          const std::string& run_id) { lease_lapsed(self, agent_id, session, run_id); },
      [=](fired_atom) {
        // A hold's end is due (a wake-up is never late, and may be early:
        // each hold's own time decides).
        auto& st = self->state;
        auto now = st.ctx->now();
        std::vector<std::string> over;
        for (auto& [id, l] : st.lapsed)
          if (l.until && now >= *l.until) over.push_back(id);
        for (auto& id : over)
          end_hold(self, id, false);
      },
      [=](started_atom, const std::string& agent_id, int64_t) {
        end_hold(self, agent_id, true);
      },
      [=](reserve_atom, const run_record& run) {
        auto& decisions = self->state.decisions;
        decisions.reserve(run.assigned_agent);
        if (run.concurrency_key.empty()) return;
        // A stored scope that no longer parses still holds the key under the
        // empty scope rather than not at all.
        auto scope = selector::parse(run.scope, "scope");
        decisions.hold(run.id, scope ? *scope : selector{}, run.concurrency_key);
      },
      [=](explain_atom, const std::string& run_id) {
        auto& decisions = self->state.decisions;
        return explanation{decisions.explain(run_id), decisions.key_holder(run_id),
                           decisions.key_first(run_id)};
      },
      [=](tick_atom) { return place(self); },
      [=](sweep_atom) {
        place(self);
        if (!self->state.ctx->stopping)
          self->delayed_send(self, self->state.ctx->config.assignment_sweep,
                             sweep_atom::value);
      },
  };
}

} // namespace

caf::actor spawn_assignment_routine(caf::actor_system& sys, context_ptr ctx) {
  return sys.spawn(assignment_routine, std::move(ctx));
}

} // namespace polymesh
