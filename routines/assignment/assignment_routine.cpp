#include "routines/assignment/assignment_routine.hpp"

#include "mesh/actors/messages.hpp"
#include "routines/assignment/assigner.hpp"

#include <caf/actor_system.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/stateful_actor.hpp>
#include <set>
#include <unordered_map>

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
        q.seq = run.seq;
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
