#include "mesh/actors/agent_actor.hpp"

#include "mesh/actors/messages.hpp"
#include "mesh/domain/error.hpp"
#include "mesh/domain/labels.hpp"
#include "mesh/domain/log.hpp"
#include "mesh/domain/selector.hpp"

#include <algorithm>
#include <caf/actor_system.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/stateful_actor.hpp>
#include <map>
#include <optional>
#include <set>

namespace polymesh {

namespace {

/// A delivered run that is still not started is carried again by a poll
/// after this long (the agent may have lost the earlier answer).
constexpr auto redeliver_after = std::chrono::seconds{2};

struct offered_run {
  run_record run;
  caf::actor actor;
  std::optional<timestamp> carried_at;
  /// A cancel was requested before the agent started it: never carry it
  /// again (the agent is told through `cancel` instead).
  bool cancel_requested = false;
};

struct agent_actor_state {
  static inline const char* name = "agent";
  context_ptr ctx;
  agent_record agent;
  /// Runs assigned here and not started, in assignment order (by seq).
  std::map<uint64_t, offered_run> offered;
  std::map<std::string, caf::actor> running;
  /// Runs whose cancel the agent has not been told yet.
  std::set<std::string> cancel_untold;
  /// The waiting long-poll, if any, its number, and the id of the token
  /// that asked it.
  std::optional<caf::typed_response_promise<poll_result>> poll;
  uint64_t poll_seq = 0;
  std::string poll_token;
  timestamp last_mirrored{};
  /// Why the runs were last let go (`lose_runs`): told to runs offered while
  /// the agent is offline or deregistered.
  std::string gone_why = "offline";
};

using self_ptr = caf::stateful_actor<agent_actor_state>*;

void announce(self_ptr self) {
  auto& st = self->state;
  st.last_mirrored = st.agent.last_seen_at;
  self->send(st.ctx->assignment, agent_atom::value, st.agent, caf::actor{self});
  self->send(st.ctx->agents, update_atom::value, st.agent);
}

/// When the agent counts as offline if it stays silent: its last contact,
/// or the moment the mesh could hear it again after a stall or restart,
/// plus `agents.offline_after`.
timestamp offline_at(const agent_actor_state& st) {
  return std::max(st.agent.last_seen_at, st.ctx->listening_since()) +
         st.ctx->config.offline_after;
}

void arm_liveness(self_ptr self) {
  auto& st = self->state;
  self->send(st.ctx->liveness, arm_atom::value, st.agent.id, offline_at(st),
             caf::actor{self});
}

/// Persists `next` and, once durable, applies it and announces it.
void persist(self_ptr self, agent_record next, std::function<void()> then,
             std::function<void(caf::error)> fail) {
  write_batch batch{put_agent{next}};
  self->request(self->state.ctx->store, caf::infinite, write_atom::value,
                std::move(batch))
      .await(
          [=](const write_outcomes&) mutable {
            self->state.agent = std::move(next);
            announce(self);
            then();
          },
          [=](caf::error& err) mutable { fail(std::move(err)); });
}

/// The offer of `run_id`, or `offered.end()` (offers are keyed by seq).
std::map<uint64_t, offered_run>::iterator find_offered(agent_actor_state& st,
                                                       const std::string& run_id) {
  return std::find_if(st.offered.begin(), st.offered.end(),
                      [&](const auto& kv) { return kv.second.run.id == run_id; });
}

/// Tells every run this agent's `session` holds that it is gone (`why`).
void lose_runs(self_ptr self, const std::string& why, int64_t session) {
  auto& st = self->state;
  st.gone_why = why;
  for (auto& [seq, o] : st.offered)
    self->send(o.actor, lost_atom::value, why, st.agent.id, session);
  for (auto& [id, actor] : st.running)
    self->send(actor, lost_atom::value, why, st.agent.id, session);
  st.offered.clear();
  st.running.clear();
  st.cancel_untold.clear();
}

/// The agent acted on a run (started it, reported its end): the assignment
/// routine ends a hold its lapsed leases earned, and tells us.
void clear_lapses(self_ptr self) {
  auto& st = self->state;
  if (st.agent.lapsed_leases > 0)
    self->send(st.ctx->assignment, started_atom::value, st.agent.id, st.agent.session);
}

/// Whether the agent is heard from: `online` or `draining`.
bool connected(const agent_record& a) {
  return a.status == agent_status::online || a.status == agent_status::draining;
}

/// Builds what a poll carries now; empty if there is nothing to say.
poll_result collect(self_ptr self) {
  auto& st = self->state;
  poll_result out;
  auto now = st.ctx->now();
  if (connected(st.agent)) {
    for (auto& [seq, o] : st.offered) {
      if (o.cancel_requested || (o.carried_at && now - *o.carried_at < redeliver_after))
        continue;
      if (!o.carried_at) self->send(o.actor, deliver_atom::value, now);
      o.carried_at = now;
      // The copy the agent gets shows what the run actor is about to store.
      if (!o.run.delivered_at) o.run.delivered_at = now;
      out.runs.push_back(o.run);
    }
  }
  out.cancel.assign(st.cancel_untold.begin(), st.cancel_untold.end());
  st.cancel_untold.clear();
  out.held_until = st.agent.held_until;
  out.lapsed_leases = st.agent.lapsed_leases;
  return out;
}

/// Answers the waiting poll if there is something to carry (or `force`).
/// A poll whose token was revoked, or expired, while it waited is answered
/// 401 and carries nothing: a run's payload and params are not handed to a
/// token that no longer opens the mesh.
void wake(self_ptr self, bool force = false) {
  auto& st = self->state;
  if (!st.poll) return;
  if (!st.poll_token.empty() && st.ctx->tokens->refusal_of(st.poll_token)) {
    st.poll->deliver(make_error(errc::unauthenticated,
                                "this agent's token was revoked, or expired, while its "
                                "poll waited: no run is carried with it (register "
                                "again, or refresh the token before it expires)",
                                "Authorization"));
    st.poll.reset();
    return;
  }
  auto out = collect(self);
  if (out.runs.empty() && out.cancel.empty() && !force) return;
  st.poll->deliver(std::move(out));
  st.poll.reset();
}

/// Stores the agent `offline` and then lets its runs go (`lose_runs`) and
/// answers its poll; a failed write is tried again by the liveness timer.
void go_offline(self_ptr self) {
  auto next = self->state.agent;
  next.status = agent_status::offline;
  persist(
      self, std::move(next),
      [=] {
        lose_runs(self, "offline", self->state.agent.session);
        wake(self, true);
      },
      [=](caf::error) { arm_liveness(self); });
}

void touch(self_ptr self) {
  auto& st = self->state;
  st.agent.last_seen_at = st.ctx->now();
  if (st.agent.status == agent_status::offline) {
    auto next = st.agent;
    next.status = st.agent.drained ? agent_status::draining : agent_status::online;
    persist(
        self, std::move(next), [self] { arm_liveness(self); }, [](caf::error) {});
  } else if (st.agent.last_seen_at - st.last_mirrored >= std::chrono::seconds{1}) {
    st.last_mirrored = st.agent.last_seen_at;
    self->send(st.ctx->agents, update_atom::value, st.agent);
  }
}

/// Refuses a registration from another installation than the connected
/// session's: a second agent started under a name in use must not take the
/// name (and the runs) from the agent using it, which would then register
/// again and take it back. The installation registering again, as after a
/// crash, supersedes its old session, also under a new host name; so does a
/// registration from the same host (a container started again with an empty
/// work directory is another installation), one when either side sent no
/// installation, and any once the session is offline or deregistered.
caf::error check_installation(self_ptr self, const wire::register_request& req) {
  auto& a = self->state.agent;
  if (a.session == 0 || !connected(a) || a.instance.empty() || req.instance.empty())
    return {};
  if (a.instance == req.instance || (!a.hostname.empty() && a.hostname == req.hostname))
    return {};
  auto& ctx = *self->state.ctx;
  auto seen =
      std::chrono::duration_cast<std::chrono::seconds>(ctx.now() - a.last_seen_at);
  auto offline_after =
      std::chrono::duration_cast<std::chrono::seconds>(ctx.config.offline_after);
  return make_error(
      errc::name_in_use,
      "an agent named '" + a.name + "' is connected from another installation" +
          (a.hostname.empty() ? std::string{} : " on host '" + a.hostname + "'") +
          " (session " + std::to_string(a.session) + ", last seen " +
          std::to_string(std::max<int64_t>(0, seen.count())) +
          "s ago); give each agent a name of its own. The name is free once that "
          "agent stops (it deregisters) or goes offline (silent for "
          "agents.offline_after, " +
          std::to_string(offline_after.count()) +
          "s); when its process is gone, `meshctl agents remove " + a.name +
          "` frees it at once (a running agent registers again)",
      "name");
}

/// Checks that `c` is this agent's current session.
caf::error check_self(self_ptr self, const caller& c) {
  auto& a = self->state.agent;
  if (c.kind != token_kind::agent || c.agent_id != a.id)
    return make_error(errc::forbidden, "this token belongs to another agent");
  if (c.agent_session != a.session || a.status == agent_status::deregistered)
    return make_error(
        errc::unauthenticated,
        "this agent session was superseded or deregistered; register again");
  return {};
}

/// Issues an access token for the current session and answers with it.
void answer_with_token(self_ptr self,
                       caf::typed_response_promise<agent_session_info> rp) {
  auto& st = self->state;
  self->request(st.ctx->token_registry, caf::infinite, issue_atom::value, st.agent.id,
                st.agent.session)
      .await(
          [=](issued_token& tok) mutable {
            rp.deliver(agent_session_info{self->state.agent, tok.token,
                                          tok.record.expires_at.value_or(timestamp{})});
          },
          [=](caf::error& err) mutable { rp.deliver(std::move(err)); });
}

caf::behavior agent_actor(self_ptr self, context_ptr ctx, agent_record agent,
                          bool restored) {
  auto& st = self->state;
  st.ctx = std::move(ctx);
  st.agent = std::move(agent);
  if (restored) {
    // Give a restored agent a full offline window from our start; one that
    // was offline or deregistered already keeps when it was last heard from,
    // which `agents.forget_after` counts from.
    if (connected(st.agent)) st.agent.last_seen_at = st.ctx->now();
    announce(self);
    if (st.agent.status != agent_status::deregistered) arm_liveness(self);
  }
  return {
      [=](register_atom, const caller& c,
          const wire::register_request& req) -> caf::result<agent_session_info> {
        auto& st = self->state;
        auto now = st.ctx->now();
        if (auto err = check_installation(self, req)) return err;
        auto next = st.agent;
        next.labels = req.labels;
        next.plans = req.plans;
        next.capacity = req.capacity;
        next.version = req.version;
        next.hostname = req.hostname;
        next.instance = req.instance;
        next.scope = c.scope;
        next.status = agent_status::online;
        next.registered_at = now;
        next.last_seen_at = now;
        next.session += 1;
        // A new session starts with a clean record (the assignment routine
        // forgets the old session's lapsed leases too).
        next.lapsed_leases = 0;
        next.held_until.reset();
        // A new session starts online, unless an admin's drain holds it.
        next.drained = st.agent.drain_kept;
        if (next.drained) next.status = agent_status::draining;
        auto superseded = st.agent.session;
        auto rp = self->make_response_promise<agent_session_info>();
        persist(
            self, std::move(next),
            [=]() mutable {
              if (superseded > 0) {
                lose_runs(self, "superseded", superseded);
                wake(self, true);
              }
              arm_liveness(self);
              answer_with_token(self, rp);
            },
            [=](caf::error err) mutable { rp.deliver(std::move(err)); });
        return rp;
      },
      [=](refresh_atom, const caller& c) -> caf::result<agent_session_info> {
        if (auto err = check_self(self, c)) return err;
        touch(self);
        auto rp = self->make_response_promise<agent_session_info>();
        answer_with_token(self, rp);
        return rp;
      },
      [=](poll_atom, const caller& c, int64_t wait_ms) -> caf::result<poll_result> {
        auto& st = self->state;
        if (auto err = check_self(self, c)) return err;
        touch(self);
        if (st.poll) {
          // One outstanding poll per agent: the older one returns empty.
          st.poll->deliver(poll_result{});
          st.poll.reset();
        }
        auto out = collect(self);
        if (!out.runs.empty() || !out.cancel.empty() || wait_ms <= 0 || st.ctx->stopping)
          return out;
        auto rp = self->make_response_promise<poll_result>();
        st.poll = rp;
        st.poll_token = c.token_id;
        auto seq = ++st.poll_seq;
        // Answered (401) by the time its token expires, if that is sooner.
        auto wait = std::chrono::milliseconds{wait_ms};
        if (auto t = st.ctx->tokens->find(c.token_id); t && t->expires_at)
          wait = std::min(wait, std::chrono::ceil<std::chrono::milliseconds>(
                                    *t->expires_at - st.ctx->now()));
        self->delayed_send(self, std::max(wait, std::chrono::milliseconds{0}),
                           polltmo_atom::value, seq);
        // A run carried moments ago but not started (the agent had no free
        // slot yet, or lost the answer) is carried again once
        // `redeliver_after` has passed, without waiting for the poll to end.
        bool carried_unstarted =
            std::any_of(st.offered.begin(), st.offered.end(), [](auto& kv) {
              return kv.second.carried_at && !kv.second.cancel_requested;
            });
        if (carried_unstarted)
          self->delayed_send(self, redeliver_after, redeliver_atom::value, seq);
        return rp;
      },
      [=](polltmo_atom, uint64_t seq) {
        if (self->state.poll_seq == seq) wake(self, true);
      },
      [=](redeliver_atom, uint64_t seq) {
        if (self->state.poll_seq == seq) wake(self);
      },
      [=](touch_atom) { touch(self); },
      [=](revoked_atom, const std::string& token_id) {
        // An admin revoked one of this agent's tokens: a poll it waits on
        // is answered 401 now. Without a live token of its session the
        // agent can no longer reach the mesh: it is offline at once (its
        // runs go as they would after agents.offline_after), not after a
        // silence in which runs were still placed with it.
        auto& st = self->state;
        if (st.poll && st.poll_token == token_id) wake(self, true);
        if (!connected(st.agent)) return;
        for (auto& t : st.ctx->tokens->of_agent(st.agent.id))
          if (t.agent_session == st.agent.session && !st.ctx->tokens->refusal_of(t.id))
            return;
        log(log_level::info, "agent " + st.agent.name +
                                 ": its token was revoked and its session has no other: "
                                 "offline now (it registers again to come back)");
        go_offline(self);
      },
      [=](dereg_atom, const caller& c) -> caf::result<agent_record> {
        auto& st = self->state;
        if (c.kind != token_kind::admin)
          if (auto err = check_self(self, c)) return err;
        if (st.agent.status == agent_status::deregistered) return st.agent;
        auto next = st.agent;
        next.status = agent_status::deregistered;
        // Its session is over, and with it any hold (the assignment routine
        // drops it on the news).
        next.lapsed_leases = 0;
        next.held_until.reset();
        auto rp = self->make_response_promise<agent_record>();
        persist(
            self, std::move(next),
            [=]() mutable {
              // An admin's removal is told apart from the agent's own leaving.
              lose_runs(self, c.kind == token_kind::admin ? "removed" : "deregistered",
                        self->state.agent.session);
              wake(self, true);
              self->send(self->state.ctx->liveness, disarm_atom::value,
                         self->state.agent.id);
              self->request(self->state.ctx->token_registry, caf::infinite,
                            revoke_atom::value, agent_atom::value, self->state.agent.id)
                  .await([=](bool) mutable { rp.deliver(self->state.agent); },
                         [=](caf::error& err) mutable { rp.deliver(std::move(err)); });
            },
            [=](caf::error err) mutable { rp.deliver(std::move(err)); });
        return rp;
      },
      [=](drain_atom, bool by_admin) -> caf::result<agent_record> {
        auto& st = self->state;
        if (st.agent.status == agent_status::deregistered)
          return make_error(errc::illegal_transition, "cannot drain a deregistered agent",
                            "status");
        auto next = st.agent;
        next.drained = true;
        // An admin's drain outlasts the agent's restarts; the agent's own
        // (it is stopping) does not, nor does it lift an admin's.
        next.drain_kept = st.agent.drain_kept || by_admin;
        // An offline agent stays offline (it is not heard from, and runs
        // naming it are refused); it is draining when it comes back, also
        // after a restart of meshd.
        if (st.agent.status == agent_status::online) next.status = agent_status::draining;
        if (next.drained == st.agent.drained && next.drain_kept == st.agent.drain_kept &&
            next.status == st.agent.status)
          return st.agent;
        auto rp = self->make_response_promise<agent_record>();
        persist(
            self, std::move(next), [=]() mutable { rp.deliver(self->state.agent); },
            [=](caf::error err) mutable { rp.deliver(std::move(err)); });
        return rp;
      },
      [=](undrain_atom) -> caf::result<agent_record> {
        auto& st = self->state;
        // A deregistered agent keeps an admin's drain for its next
        // registration; an undrain lifts it (the agent stays deregistered).
        // Online already: nothing to do. Offline: it is online when it is
        // heard from.
        if (!st.agent.drained && st.agent.status != agent_status::draining)
          return st.agent;
        auto next = st.agent;
        next.drained = false;
        next.drain_kept = false;
        if (next.status == agent_status::draining) next.status = agent_status::online;
        // (A deregistered agent's flags alone change.)
        auto rp = self->make_response_promise<agent_record>();
        persist(
            self, std::move(next), [=]() mutable { rp.deliver(self->state.agent); },
            [=](caf::error err) mutable { rp.deliver(std::move(err)); });
        return rp;
      },
      [=](labels_atom, const label_map& labels,
          const std::vector<std::string>& if_match) -> caf::result<agent_record> {
        // Its next registration replaces the labels anyway.
        if (self->state.agent.status == agent_status::deregistered)
          return make_error(errc::illegal_transition,
                            "cannot change the labels of a deregistered agent; it "
                            "registers with its own",
                            "status");
        // A read-edit-write of the labels (meshctl agents label) sends the
        // tag of the labels it read: checked here, where the labels change,
        // so that of two edits at once the second is refused, not lost.
        if (!if_match.empty()) {
          auto now = labels_etag(self->state.agent.labels);
          if (std::find(if_match.begin(), if_match.end(), "*") == if_match.end() &&
              std::find(if_match.begin(), if_match.end(), now) == if_match.end())
            return make_error(errc::precondition_failed,
                              "the labels of agent '" + self->state.agent.name +
                                  "' changed since they were read (they are now " + now +
                                  "); read the agent again and apply the change to "
                                  "what it has now",
                              "If-Match");
        }
        // Labels outside the scope it registered under would give it runs of
        // another scope, and make its own token's next registration fail.
        if (auto& scope = self->state.agent.scope; !scope.empty()) {
          auto allowed = selector::parse(scope, "scope");
          if (!allowed || !allowed->matches(labels))
            return make_error(errc::forbidden,
                              "labels outside the scope of the token agent '" +
                                  self->state.agent.name + "' registered with (" + scope +
                                  "): it would take runs of another scope, and that "
                                  "token could not register it again; register it "
                                  "with a token whose scope holds them",
                              "labels");
        }
        auto next = self->state.agent;
        next.labels = labels;
        auto rp = self->make_response_promise<agent_record>();
        persist(
            self, std::move(next), [=]() mutable { rp.deliver(self->state.agent); },
            [=](caf::error err) mutable { rp.deliver(std::move(err)); });
        return rp;
      },
      [=](get_atom) -> agent_record { return self->state.agent; },
      [=](offer_atom, const run_record& run, const caf::actor& actor, int64_t session) {
        auto& st = self->state;
        if (!connected(st.agent)) {
          // Offered while (or just before) the agent went offline or away: an
          // assignment that crossed the status change in the mailbox, or a
          // restart's re-offer. Holding it would leave it pending for good.
          self->send(actor, lost_atom::value, st.gone_why, st.agent.id, session);
          return;
        }
        // Placed with an earlier session's plans, labels and slots, and
        // offered while a new registration replaced them: the new session
        // may not take the plan, meet the selector or have the slot. A run
        // restored at start-up (session 0) pending since before this session
        // began was placed with an earlier one too.
        bool earlier = session != 0
                           ? session != st.agent.session
                           : run.status == run_status::pending && run.assigned_at &&
                                 *run.assigned_at < st.agent.registered_at;
        if (earlier) {
          self->send(actor, lost_atom::value, std::string{"superseded"}, st.agent.id,
                     session);
          return;
        }
        if (run.status == run_status::running) {
          st.running[run.id] = actor;
          if (run.cancel_requested) st.cancel_untold.insert(run.id);
        } else {
          // A cancel requested before the start (known again after a
          // restart) is told through `cancel`; the run is not carried.
          st.offered[run.seq] =
              offered_run{run, actor, std::nullopt, run.cancel_requested};
          if (run.cancel_requested) st.cancel_untold.insert(run.id);
        }
        wake(self);
      },
      [=](withdraw_atom, const std::string& run_id, bool acted) {
        auto& st = self->state;
        if (acted) clear_lapses(self);
        st.running.erase(run_id);
        st.cancel_untold.erase(run_id);
        if (auto it = find_offered(st, run_id); it != st.offered.end())
          st.offered.erase(it);
      },
      [=](recall_atom, const std::string& run_id) -> std::tuple<bool, timestamp> {
        auto& st = self->state;
        if (auto it = find_offered(st, run_id); it != st.offered.end()) {
          if (auto at = it->second.carried_at) return {true, *at};
          st.offered.erase(it);
          st.cancel_untold.erase(run_id);
        }
        return {false, timestamp{}};
      },
      [=](started_atom, const std::string& run_id) {
        auto& st = self->state;
        clear_lapses(self);
        if (auto it = find_offered(st, run_id); it != st.offered.end()) {
          st.running[run_id] = it->second.actor;
          st.offered.erase(it);
        }
      },
      [=](held_atom, int64_t session, int64_t lapsed, timestamp until) {
        // The assignment routine's word on the agent's lapsed leases, shown
        // in the agent's record; it decides, the record only mirrors it.
        auto& st = self->state;
        if (session != st.agent.session || st.agent.status == agent_status::deregistered)
          return;
        bool begins = !st.agent.held_until && until != timestamp{};
        st.agent.lapsed_leases = lapsed;
        st.agent.held_until =
            until == timestamp{} ? std::nullopt : std::optional<timestamp>{until};
        self->send(st.ctx->agents, update_atom::value, st.agent);
        // The agent hears of a hold at once: its parked poll is answered.
        if (begins) wake(self, true);
      },
      [=](cancel_atom, const std::string& run_id) {
        auto& st = self->state;
        st.cancel_untold.insert(run_id);
        if (auto it = find_offered(st, run_id); it != st.offered.end())
          it->second.cancel_requested = true;
        wake(self);
      },
      [=](fired_atom) {
        auto& st = self->state;
        if (!connected(st.agent)) return;
        if (st.ctx->now() < offline_at(st)) {
          arm_liveness(self);
          return;
        }
        go_offline(self);
      },
      [=](shutdown_atom) { wake(self, true); },
      [=](forget_atom) -> caf::result<bool> {
        // Asked by the registry, whose mailbox waits for the answer, so no
        // call for this agent can arrive between our yes and our end.
        auto& st = self->state;
        auto after = st.ctx->config.forget_after;
        bool gone = st.agent.status == agent_status::offline ||
                    st.agent.status == agent_status::deregistered;
        if (after.count() == 0 || !gone || st.ctx->now() < st.agent.last_seen_at + after)
          return false;
        // Its tokens are revoked (again, for a deregistered agent: a forget
        // that failed after storing it left them alive), then it ends.
        auto rp = self->make_response_promise<bool>();
        auto leave = [=]() mutable {
          self->request(self->state.ctx->token_registry, caf::infinite,
                        revoke_atom::value, agent_atom::value, self->state.agent.id)
              .await(
                  [=](bool) mutable {
                    rp.deliver(true);
                    self->quit();
                  },
                  [=](caf::error& err) mutable { rp.deliver(std::move(err)); });
        };
        if (st.agent.status == agent_status::deregistered) {
          leave();
          return rp;
        }
        // Offline: stored as deregistered (a restart does not bring it back),
        // without announcing it: the registry drops its mirror once we answer.
        auto next = st.agent;
        next.status = agent_status::deregistered;
        self->request(st.ctx->store, caf::infinite, write_atom::value,
                      write_batch{put_agent{next}})
            .await(
                [=](const write_outcomes&) mutable {
                  self->state.agent = next;
                  leave();
                },
                [=](caf::error& err) mutable { rp.deliver(std::move(err)); });
        return rp;
      },
  };
}

} // namespace

caf::actor spawn_agent_actor(caf::local_actor* parent, context_ptr ctx,
                             agent_record agent, bool restored) {
  return parent->spawn<caf::linked>(agent_actor, std::move(ctx), std::move(agent),
                                    restored);
}

} // namespace polymesh
