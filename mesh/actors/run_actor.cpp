#include "mesh/actors/run_actor.hpp"

#include "mesh/actors/messages.hpp"
#include "mesh/domain/error.hpp"
#include "mesh/domain/ids.hpp"
#include "mesh/domain/log.hpp"
#include "mesh/domain/retry.hpp"
#include "mesh/domain/run_state.hpp"
#include "mesh/domain/run_timers.hpp"

#include <algorithm>
#include <caf/actor_system.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/send.hpp>
#include <caf/stateful_actor.hpp>
#include <chrono>
#include <functional>
#include <optional>
#include <utility>
#include <vector>

namespace polymesh {

namespace {

struct run_actor_state {
  static inline const char* name = "run";
  context_ptr ctx;
  run_record run;
  /// The agent actor holding the run while it is pending or running.
  caf::actor agent;
  /// The agent's session the run was placed with, or that started it when
  /// restored at start-up (0: unknown, a pending run's or one started before
  /// sessions were recorded); its offers are for that one only, and a word
  /// of another session's is not about it.
  int64_t session = 0;
  /// Whether its agent reported its end (`finish`): the agent acted on it,
  /// which ends a hold its lapsed leases earned (a start says so itself).
  bool finished_by_agent = false;
  /// Whether the timer routine currently has a deadline for this run.
  bool armed = false;
  /// Writes of a timer's (or a lost agent's) action that failed in a row.
  int failed_writes = 0;
  /// Whether `run` is known to be the stored row, so that a write need set
  /// only the fields it changes. A failed commit may still have reached the
  /// disk, so after one the next write sets every field.
  bool stored_as_run = true;
  /// A lost agent's word whose action could not be stored: tried again when
  /// the retry timer fires (a pending run not yet delivered has no timer
  /// that would otherwise act for it).
  struct lost_word {
    std::string why;
    std::string agent_id;
    int64_t session = 0;
  };
  std::optional<lost_word> lost_retry;
  /// Bytes of the run's stored log chunks, for `runs.max_log_bytes`; unknown
  /// for a run restored at start-up until its first log call asks the store.
  std::optional<int64_t> log_bytes;
  /// Clients waiting for the run to change (`GET /v1/runs/{id}?wait=S`).
  struct watcher {
    uint64_t id;
    std::optional<run_status> while_status;
    caf::typed_response_promise<run_record> rp;
  };
  std::vector<watcher> watchers;
  uint64_t last_watcher = 0;
};

using self_ptr = caf::stateful_actor<run_actor_state>*;

// -- helpers ---------------------------------------------------------------------

/// Arms the one timer the run's state calls for, or disarms it.
void rearm(self_ptr self) {
  auto& st = self->state;
  if (is_terminal(st.run.status)) {
    if (st.armed) self->send(st.ctx->expiry, disarm_atom::value, st.run.id);
    st.armed = false;
    return;
  }
  if (auto at = next_deadline(st.run, st.ctx->run_timing_now())) {
    self->send(st.ctx->expiry, arm_atom::value, st.run.id, *at, caf::actor{self});
    st.armed = true;
  } else if (st.armed) {
    self->send(st.ctx->expiry, disarm_atom::value, st.run.id);
    st.armed = false;
  }
}

/// Whether a client waiting `while_status` (none: while the run is
/// unfinished) still waits on `run`.
bool keeps_waiting(const run_record& run, const std::optional<run_status>& while_status) {
  return while_status ? run.status == *while_status : !is_terminal(run.status);
}

/// Answers the waiting clients the run's durable state now releases.
void wake_watchers(self_ptr self) {
  auto& st = self->state;
  auto& ws = st.watchers;
  ws.erase(std::remove_if(ws.begin(), ws.end(),
                          [&](run_actor_state::watcher& w) {
                            if (keeps_waiting(st.run, w.while_status)) return false;
                            w.rp.deliver(st.run);
                            return true;
                          }),
           ws.end());
}

/// Gives the retry `retry` of our run, durable, its actor (through the
/// registry, which routes its calls) and queues it, then calls `then`. The
/// retry is queued by us, before our end lets go of the concurrency key
/// (`finalize`), so that the key's next run cannot slip ahead of it.
void admit_retry(self_ptr self, const run_record& retry, std::function<void()> then) {
  auto& st = self->state;
  st.ctx->metrics.run_retried(st.run);
  log(log_level::info, "run " + st.run.id + " ended " + to_string(st.run.status) + "/" +
                           st.run.reason + ": retried as run " + retry.id + " (retry " +
                           std::to_string(retry.retry_number) + " of " +
                           std::to_string(retry.retry_max) + ")");
  self->request(st.ctx->runs, caf::infinite, admit_atom::value, retry, retry_atom::value)
      .await(
          [=](const caf::actor& actor) {
            self->send(self->state.ctx->assignment, enqueue_atom::value, retry, actor);
            then();
          },
          [=](caf::error& err) {
            // Only while meshd stops: the retry is stored, and the next
            // start queues it with the other unfinished runs.
            log(log_level::warn, "run " + retry.id + ": retry stored but not queued (" +
                                     message_of(err) + "); meshd's next start queues it");
            then();
          });
}

/// Persists `next` (plus `extra` writes) and, once durable, makes it the
/// run's state and calls `then` with the writes' outcomes (the run's first).
/// On failure nothing changes and `fail` gets the error. Other messages wait
/// until the commit answers. An end that the run's `retry` follows writes
/// the retry in the same transaction (after `extra`), so that an end
/// acknowledged never lacks its retry, and queues it before `then`; unless
/// `may_retry` is false (an end whose retry could not be placed).
void persist_with(self_ptr self, run_record next, write_batch extra,
                  std::function<void(const write_outcomes&)> then,
                  std::function<void(caf::error)> fail, bool may_retry = true) {
  auto& st = self->state;
  std::optional<run_record> retry;
  if (may_retry && !is_terminal(st.run.status) && retried(next)) {
    retry = make_retry(next, new_id("run"), st.ctx->next_run_seq(), st.ctx->now());
    next.retried_by = retry->id;
  }
  write_batch batch;
  batch.emplace_back(put_run{
      next, false, st.stored_as_run ? changed_run_fields(st.run, next) : all_run_fields});
  for (auto& w : extra)
    batch.push_back(std::move(w));
  if (retry) batch.emplace_back(put_run{*retry, true});
  self->request(st.ctx->store, caf::infinite, write_atom::value, std::move(batch))
      .await(
          [=](const write_outcomes& out) mutable {
            self->state.run = std::move(next);
            self->state.stored_as_run = true;
            self->state.failed_writes = 0;
            rearm(self);
            if (!self->state.watchers.empty()) wake_watchers(self);
            if (retry)
              admit_retry(self, *retry, [then, out] { then(out); });
            else
              then(out);
          },
          [=](caf::error& err) mutable {
            self->state.stored_as_run = false;
            fail(std::move(err));
          });
}

/// `persist_with` for a `then` that needs no outcomes.
void persist(self_ptr self, run_record next, write_batch extra,
             std::function<void()> then, std::function<void(caf::error)> fail,
             bool may_retry = true) {
  persist_with(
      self, std::move(next), std::move(extra),
      [then = std::move(then)](const write_outcomes&) { then(); }, std::move(fail),
      may_retry);
}

template <class T>
std::function<void(caf::error)> fail_to(caf::typed_response_promise<T> rp) {
  return [rp](caf::error err) mutable { rp.deliver(std::move(err)); };
}

std::function<void(caf::error)> log_failure(self_ptr self, const char* what) {
  return [self, what](caf::error err) {
    // The change is not durable, so it did not happen; the timer retries it,
    // 1 s after the first failure, doubling to at most a minute (a full disk
    // would otherwise be retried, and logged, every timer tick for every due
    // run). Logged at attempts 1, 2, 4, 8, ….
    auto& st = self->state;
    auto n = ++st.failed_writes;
    if ((n & (n - 1)) == 0)
      log(log_level::warn, "run " + st.run.id + ": " + what + " not persisted (attempt " +
                               std::to_string(n) + ", retrying): " + message_of(err));
    auto delay = std::min<duration>(
        std::chrono::seconds{int64_t{1} << std::min(n - 1, 6)}, std::chrono::minutes{1});
    self->send(st.ctx->expiry, arm_atom::value, st.run.id, st.ctx->now() + delay,
               caf::actor{self});
    st.armed = true;
  };
}

/// Lets go of the agent: its slot is free and its poll stops carrying us.
void detach_agent(self_ptr self) {
  auto& st = self->state;
  if (st.agent) {
    // Whether the agent reported the run's end, also of a run it never said
    // it started: that ends a hold its lapsed leases earned
    // (`agents.hold_back_max`). An end the mesh decided (a cancel, expiry,
    // a lost agent) is no sign of the agent's.
    self->send(st.agent, withdraw_atom::value, st.run.id, st.finished_by_agent);
    self->send(st.ctx->assignment, release_atom::value, st.run.assigned_agent, st.run.id);
    st.agent = nullptr;
  }
}

/// Called once the run reached a terminal state durably.
void finalize(self_ptr self) {
  auto& st = self->state;
  st.ctx->metrics.run_ended(st.run);
  detach_agent(self);
  self->send(st.ctx->assignment, dequeue_atom::value, st.run.id);
  self->send(st.ctx->runs, done_atom::value, st.run.id);
}

void enqueue(self_ptr self) {
  self->send(self->state.ctx->assignment, enqueue_atom::value, self->state.run,
             caf::actor{self});
}

/// The state after ending with `status`/`reason` now.
run_record ended(const run_record& run, run_status status, std::string reason,
                 timestamp now) {
  auto next = run;
  next.status = status;
  next.reason = std::move(reason);
  next.finished_at = now;
  return next;
}

/// Persists the terminal state `next`, retires the run and answers `rp`
/// with it (an agent's finish, a user's cancel of an unsent run).
void end_and_answer(self_ptr self, run_record next,
                    caf::typed_response_promise<run_record> rp,
                    std::function<void(caf::error)> fail = nullptr) {
  persist(
      self, std::move(next), {},
      [=]() mutable {
        finalize(self);
        rp.deliver(self->state.run);
      },
      fail ? std::move(fail) : fail_to(rp));
}

/// Ends the run on the mesh's own initiative (expiry, TTL, agent lost ...).
/// `fail` defaults to `log_failure`; `may_retry` false makes no retry of
/// the end (see `persist_with`).
void abort_run(self_ptr self, run_status status, std::string reason,
               std::function<void(caf::error)> fail = nullptr, bool may_retry = true) {
  auto& st = self->state;
  auto next = ended(st.run, status, std::move(reason), st.ctx->now());
  if (next.error.empty()) next.error = "ended by the mesh: " + next.reason;
  persist(
      self, std::move(next), {}, [self] { finalize(self); },
      fail ? std::move(fail) : log_failure(self, "abort"), may_retry);
}

/// Puts a pending run back into the queue for another agent; one whose
/// cancel was requested (it never started) ends canceled instead: queued, no
/// poll would carry it and no timer would end it. `fail` defaults to
/// `log_failure`.
void requeue(self_ptr self, std::string why,
             std::function<void(caf::error)> fail = nullptr) {
  auto& st = self->state;
  // Its agent did not start it within the delivery lease: the assignment
  // routine hears of it before the run is queued again, so that an agent it
  // holds back for that is not given the run straight back. A run whose
  // cancel was asked for was rightly not started.
  auto lapsed = [self, agent_id = st.run.assigned_agent, session = st.session,
                 tell = why == "delivery_lease_lapsed" && !st.run.cancel_requested] {
    if (tell)
      self->send(self->state.ctx->assignment, lapsed_atom::value, agent_id, session,
                 self->state.run.id);
  };
  if (st.run.cancel_requested) {
    auto reason = st.run.cancel_reason.empty() ? std::string{"canceled_by_user"}
                                               : st.run.cancel_reason;
    persist(
        self, ended(st.run, run_status::canceled, std::move(reason), st.ctx->now()), {},
        [self] { finalize(self); }, fail ? std::move(fail) : log_failure(self, "cancel"));
    return;
  }
  auto next = st.run;
  next.status = run_status::created;
  next.reason = why;
  next.assigned_at.reset();
  next.delivered_at.reset();
  next.last_activity_at.reset();
  next.held_session = 0;
  // Back in the queue after its ttl_s: had it waited there, it would have
  // ended then, so it ends now. It was placed again past its ttl_s when a
  // slot was free at once, and ended only when none was.
  if (due_action(next, st.ctx->run_timing_now(), st.ctx->now()) ==
      timer_action::ttl_lapsed) {
    auto over = ended(st.run, run_status::error, "no_agent_within_ttl", st.ctx->now());
    over.error = "ended by the mesh: no_agent_within_ttl (its ttl_s of " +
                 std::to_string(st.run.ttl_s) +
                 " s had passed when it would have gone back to the queue: " + why + ")";
    persist(
        self, std::move(over), {},
        [self, lapsed] {
          lapsed();
          finalize(self);
        },
        fail ? std::move(fail) : log_failure(self, "abort"));
    return;
  }
  persist(
      self, std::move(next), {},
      [self, lapsed] {
        lapsed();
        // Queued before it lets go of its concurrency key, so that it keeps
        // its turn before later runs of the key.
        enqueue(self);
        detach_agent(self);
      },
      fail ? std::move(fail) : log_failure(self, "requeue"));
}

/// Records that the run should stop (`reason`: `canceled_by_user` or
/// `timeout`) and, once durable, tells its agent, whose poll carries it.
/// `delivered` marks a pending run delivered at that time too (a poll carried
/// it and its `deliver` is still on the way).
void request_cancel(self_ptr self, const char* reason, std::function<void()> then,
                    std::function<void(caf::error)> fail,
                    std::optional<timestamp> delivered = std::nullopt) {
  auto next = self->state.run;
  if (delivered && next.status == run_status::pending && !next.delivered_at)
    next.delivered_at = delivered;
  next.cancel_requested = true;
  next.cancel_reason = reason;
  next.cancel_requested_at = self->state.ctx->now();
  persist(
      self, std::move(next), {},
      [self, then] {
        if (self->state.agent)
          self->send(self->state.agent, cancel_atom::value, self->state.run.id);
        then();
      },
      std::move(fail));
}

/// Checks that `c` is the agent the run is assigned to.
caf::error check_own(self_ptr self, const caller& c) {
  auto& run = self->state.run;
  if (c.kind != token_kind::agent || c.agent_id.empty())
    return make_error(errc::forbidden, "only the assigned agent may report on a run");
  // A created run is held by no agent: starting or reporting on it is an
  // illegal transition for every agent, not a question of ownership.
  if (run.status == run_status::created)
    return make_error(errc::illegal_transition,
                      "run '" + run.id + "' is created and not assigned to any agent",
                      "status");
  return check_holder(run, c.agent_id, c.agent_session);
}

caf::error check_transition(const run_record& run, run_event ev,
                            run_status outcome = run_status::error) {
  auto next = next_status(run.status, ev, outcome);
  return next ? caf::error{} : next.error();
}

/// Stores `req`'s chunks and answers `rp` (the room for them is checked);
/// the run has not ended, so this actor alone appends to its log.
void store_logs(self_ptr self, wire::log_request req,
                caf::typed_response_promise<bool> rp) {
  auto& st = self->state;
  std::vector<int64_t> sizes;
  for (auto& chunk : req.chunks)
    sizes.push_back(static_cast<int64_t>(chunk.data.size()));
  auto now = st.ctx->now();
  auto next = st.run;
  next.last_activity_at = now;
  write_batch logs;
  for (auto& chunk : req.chunks) {
    chunk.at = now;
    logs.emplace_back(append_log{st.run.id, std::move(chunk)});
  }
  persist_with(
      self, std::move(next), std::move(logs),
      [=](const write_outcomes& out) mutable {
        // out[0] is the run; a chunk the run already had is not counted again.
        for (size_t i = 1; i < out.size() && i <= sizes.size(); ++i)
          if (out[i].written) *self->state.log_bytes += sizes[i - 1];
        rp.deliver(true);
      },
      fail_to(rp));
}

/// Stores `req`'s chunks if the run's log has room for them
/// (`runs.max_log_bytes`) and answers `rp`; the log's size must be known.
void append_logs(self_ptr self, wire::log_request req,
                 caf::typed_response_promise<bool> rp) {
  auto& st = self->state;
  auto limit = st.ctx->config.max_log_bytes;
  if (!check_log_room(limit, st.run.id, *st.log_bytes, req.chunks)) {
    store_logs(self, std::move(req), rp);
    return;
  }
  // Past the limit, unless some chunks are a retry of ones stored already
  // (which add nothing): asked only here, so the usual append costs no read.
  self->request(st.ctx->query, caf::infinite, logs_atom::value, list_atom::value,
                st.run.id, seqs_of(req.chunks))
      .await(
          [=, req = std::move(req)](const std::vector<int64_t>& stored) mutable {
            auto& st = self->state;
            if (auto err =
                    check_log_room(limit, st.run.id, *st.log_bytes, req.chunks, stored))
              rp.deliver(std::move(err));
            else
              store_logs(self, std::move(req), rp);
          },
          [=](caf::error& err) mutable { rp.deliver(std::move(err)); });
}

} // namespace

caf::result<bool> append_late(caf::event_based_actor* self, const caf::actor& store,
                              const std::string& id, std::vector<log_chunk> chunks,
                              timestamp at, int64_t max_bytes, bool suspend) {
  for (auto& chunk : chunks)
    chunk.at = at;
  auto promise = self->make_response_promise<bool>();
  write_batch batch{append_late_logs{id, std::move(chunks), max_bytes}};
  auto answer = [promise](write_outcomes& out) mutable {
    if (!out.empty() && out.front().refused)
      promise.deliver(std::move(out.front().refused));
    else
      promise.deliver(true);
  };
  auto fail = [promise](caf::error& err) mutable { promise.deliver(std::move(err)); };
  auto sent = self->request(store, caf::infinite, write_atom::value, std::move(batch));
  if (suspend)
    std::move(sent).await(std::move(answer), std::move(fail));
  else
    std::move(sent).then(std::move(answer), std::move(fail));
  return promise;
}

namespace {

// -- behavior --------------------------------------------------------------------

caf::behavior run_actor(self_ptr self, context_ptr ctx, run_record run, run_origin origin,
                        caf::actor agent) {
  auto& st = self->state;
  st.ctx = std::move(ctx);
  st.run = std::move(run);
  st.agent = std::move(agent);
  if (origin != run_origin::restored) st.log_bytes = 0;
  if (origin == run_origin::retried) {
    rearm(self);
  } else if (origin == run_origin::restored) {
    rearm(self);
    if (st.run.status == run_status::created)
      enqueue(self);
    else if (st.agent) {
      if (st.run.status == run_status::running) st.session = st.run.held_session;
      self->send(st.agent, offer_atom::value, st.run, caf::actor{self}, st.session);
    } else { // its agent is gone for good: handled as lost
      self->send(self, lost_atom::value, std::string{"offline"}, st.run.assigned_agent,
                 int64_t{0});
    }
  }
  return {
      [=](admit_atom) -> caf::result<create_result> {
        auto rp = self->make_response_promise<create_result>();
        write_batch batch{put_run{self->state.run, true}};
        self->request(self->state.ctx->store, caf::infinite, write_atom::value,
                      std::move(batch))
            .await(
                [=](const write_outcomes& out) mutable {
                  auto& st = self->state;
                  if (out.empty() || out[0].written) {
                    st.ctx->metrics.runs_submitted(1);
                    rearm(self);
                    enqueue(self);
                    rp.deliver(create_result{st.run, true, {}});
                    return;
                  }
                  // The idempotency key is taken: answer with the run that has it,
                  // and only then retire (the registry stops us on `done`).
                  self->request(st.ctx->query, caf::infinite, get_atom::value,
                                out[0].existing_id)
                      .await(
                          [=](run_record& existing) mutable {
                            rp.deliver(answer_for_taken_key(std::move(existing),
                                                            self->state.run));
                            self->send(self->state.ctx->runs, done_atom::value,
                                       self->state.run.id);
                          },
                          [=](caf::error& err) mutable {
                            rp.deliver(std::move(err));
                            self->send(self->state.ctx->runs, done_atom::value,
                                       self->state.run.id);
                          });
                },
                [=](caf::error& err) mutable {
                  rp.deliver(std::move(err));
                  self->send(self->state.ctx->runs, done_atom::value, self->state.run.id);
                });
        return rp;
      },
      [=](assign_atom, const std::string& agent_id, const caf::actor& agent,
          int64_t session) -> caf::result<bool> {
        auto& st = self->state;
        if (st.run.status != run_status::created) return false;
        auto next = st.run;
        next.status = run_status::pending;
        next.assigned_agent = agent_id;
        next.assigned_at = st.ctx->now();
        next.delivered_at.reset();
        next.reason.clear();
        next.attempts += 1;
        // Offer before the commit, so that dispatch does not wait for an
        // fsync. Nothing can act on the offer early: `persist` awaits the
        // store, so the agent's `start` (and the poll's `deliver`) stay in our
        // mailbox until `pending` is durable. If the write fails the offer is
        // withdrawn; if meshd dies first the run restarts as `created` and a
        // `start` for it is refused, so no agent runs it unassigned.
        auto rp = self->make_response_promise<bool>();
        st.agent = agent;
        st.session = session;
        self->send(agent, offer_atom::value, next, caf::actor{self}, session);
        persist(
            self, std::move(next), {}, [=]() mutable { rp.deliver(true); },
            [=](caf::error err) mutable {
              log(log_level::warn, "run " + self->state.run.id +
                                       ": assignment not persisted: " + message_of(err));
              self->send(agent, withdraw_atom::value, self->state.run.id, false);
              self->state.agent = nullptr;
              // The routine forgot it when it placed it. Queued before the
              // answer frees its concurrency key, so that it keeps its turn.
              enqueue(self);
              rp.deliver(false);
            });
        return rp;
      },
      [=](deliver_atom, timestamp at) {
        auto& st = self->state;
        if (st.run.status != run_status::pending || st.run.delivered_at) return;
        auto next = st.run;
        next.delivered_at = at;
        persist(
            self, std::move(next), {}, [] {}, log_failure(self, "delivery"));
      },
      [=](start_atom, const caller& c, const std::string&) -> caf::result<run_record> {
        auto& st = self->state;
        if (auto err = check_own(self, c)) return err;
        if (st.run.status == run_status::running)
          return st.run; // an idempotent repeat by the same agent
        if (auto err = check_transition(st.run, run_event::start)) return err;
        auto next = st.run;
        auto now = st.ctx->now();
        next.status = run_status::running;
        next.started_at = now;
        next.held_session = c.agent_session;
        next.last_activity_at = now;
        if (!next.delivered_at) next.delivered_at = now;
        auto rp = self->make_response_promise<run_record>();
        persist(
            self, std::move(next), {},
            [=]() mutable {
              if (self->state.agent)
                self->send(self->state.agent, started_atom::value, self->state.run.id);
              rp.deliver(self->state.run);
            },
            fail_to(rp));
        return rp;
      },
      [=](progress_atom, const caller& c, const std::string&,
          const std::string& message) -> caf::result<bool> {
        auto& st = self->state;
        if (auto err = check_own(self, c)) return err;
        if (auto err = check_transition(st.run, run_event::progress)) return err;
        auto next = st.run;
        next.last_activity_at = st.ctx->now();
        if (!message.empty()) next.progress = message;
        auto rp = self->make_response_promise<bool>();
        persist(
            self, std::move(next), {},
            [=]() mutable { rp.deliver(self->state.run.cancel_requested); }, fail_to(rp));
        return rp;
      },
      [=](logs_atom, const caller& c, const std::string&,
          wire::log_request& req) -> caf::result<bool> {
        auto& st = self->state;
        if (auto err = check_own(self, c)) return err;
        if (is_terminal(st.run.status)) {
          // Ended: requests of this run reach the query actor too now, and
          // retention may delete it; the store checks, in its own order.
          // Awaited: the registry's `stop` may follow in the mailbox, and an
          // actor gone before the store answers would leave its caller
          // without an answer (CAF 0.17 drops a pending promise silently).
          return append_late(self, st.ctx->store, st.run.id, std::move(req.chunks),
                             st.ctx->now(), st.ctx->config.max_log_bytes, true);
        }
        auto rp = self->make_response_promise<bool>();
        if (st.log_bytes) {
          append_logs(self, std::move(req), rp);
          return rp;
        }
        // Restored at start-up: what the log holds is asked once, and other
        // messages wait meanwhile so that two requests cannot both fit.
        self->request(st.ctx->query, caf::infinite, logs_atom::value, count_atom::value,
                      st.run.id)
            .await(
                [=, req = std::move(req)](int64_t held) mutable {
                  self->state.log_bytes = held;
                  append_logs(self, std::move(req), rp);
                },
                [=](caf::error& err) mutable { rp.deliver(std::move(err)); });
        return rp;
      },
      [=](finish_atom, const caller& c, const std::string&,
          const wire::finish_request& req) -> caf::result<run_record> {
        auto& st = self->state;
        if (auto err = check_own(self, c)) return err;
        if (is_terminal(st.run.status)) {
          if (auto err = refuse_finish_of_ended(st.run, req)) return err;
          return st.run; // an idempotent repeat
        }
        auto [status, reason] = finish_outcome(st.run, req);
        // A report that starts and finishes the run in one go: both
        // transitions, one durable write.
        auto base = st.run;
        if (req.implicit_start && base.status == run_status::pending) {
          if (auto err = check_transition(base, run_event::start)) return err;
          auto now = st.ctx->now();
          base.status = run_status::running;
          base.started_at = now;
          base.held_session = c.agent_session;
          if (!base.delivered_at) base.delivered_at = now;
        }
        if (auto err = check_transition(base, run_event::finish, req.status)) return err;
        auto next = ended(base, status, std::move(reason), st.ctx->now());
        // The session that reports the end holds it from here: a finish
        // from `pending` (the plan failed before its start was reported),
        // or of a run started before sessions were recorded, may be
        // repeated and followed by late chunks.
        if (next.held_session == 0) next.held_session = c.agent_session;
        next.exit_code = req.exit_code;
        next.result = req.result;
        next.error = req.error;
        next.last_activity_at = next.finished_at;
        auto rp = self->make_response_promise<run_record>();
        st.finished_by_agent = true;
        end_and_answer(self, std::move(next), rp);
        return rp;
      },
      [=](cancel_atom, const caller& c, const std::string&) -> caf::result<run_record> {
        auto& st = self->state;
        if (!c.scope.empty() && st.run.scope != c.scope)
          return make_error(errc::forbidden, "run is outside this token's scope");
        if (auto err = check_transition(st.run, run_event::cancel)) return err;
        bool sent = st.run.status == run_status::running ||
                    (st.run.status == run_status::pending && st.run.delivered_at);
        // A repeat answers the run unchanged, and so does a cancel after the
        // run's timeout asked it to stop: it ends `error/timeout` within the
        // grace counted from then. (Returned before the promise: once a
        // promise exists, a returned value reaches nobody.)
        if (sent && st.run.cancel_requested) return st.run;
        auto rp = self->make_response_promise<run_record>();
        auto answer = [=]() mutable { rp.deliver(self->state.run); };
        if (sent) {
          request_cancel(self, "canceled_by_user", answer, fail_to(rp));
          return rp;
        }
        // Not sent: it ends here and now.
        auto end_now = [=](std::function<void(caf::error)> fail) mutable {
          auto& st = self->state;
          end_and_answer(
              self,
              ended(st.run, run_status::canceled, "canceled_by_user", st.ctx->now()), rp,
              std::move(fail));
        };
        if (st.run.status != run_status::pending || !st.agent) {
          end_now(fail_to(rp));
          return rp;
        }
        // Unless a poll carried it a moment ago and its `deliver` is still on
        // the way here: the agent takes the offer back only if none did, and
        // a carried run's cancel is a request the agent is told of.
        self->request(st.agent, caf::infinite, recall_atom::value, st.run.id)
            .await(
                [=](bool carried, timestamp carried_at) mutable {
                  if (carried) {
                    request_cancel(self, "canceled_by_user", answer, fail_to(rp),
                                   carried_at);
                    return;
                  }
                  end_now([=](caf::error err) mutable {
                    // Still pending: offered again, so that it is not left
                    // with nobody to carry it until its delivery lease ends.
                    if (auto& agent = self->state.agent)
                      self->send(agent, offer_atom::value, self->state.run,
                                 caf::actor{self}, self->state.session);
                    rp.deliver(std::move(err));
                  });
                },
                [=](caf::error&) mutable { end_now(fail_to(rp)); });
        return rp;
      },
      [=](lost_atom, const std::string& why, const std::string& agent_id,
          int64_t session) {
        auto& st = self->state;
        // A late word from an agent that no longer holds the run (its
        // `withdraw` was still queued when it let its runs go), or from an
        // earlier session of the agent that holds it now (the run went back
        // to the queue and was placed with the new one meanwhile), must not
        // take the run from the agent that holds it now.
        if ((st.run.status == run_status::pending ||
             st.run.status == run_status::running) &&
            (st.run.assigned_agent != agent_id ||
             (session != 0 && st.session != 0 && session != st.session)))
          return;
        st.lost_retry.reset();
        // Not stored: kept to be tried again when the retry timer fires.
        auto retry = [self, why, agent_id, session](const char* what) {
          return [self, why, agent_id, session, what](caf::error err) {
            self->state.lost_retry = run_actor_state::lost_word{why, agent_id, session};
            log_failure(self, what)(std::move(err));
          };
        };
        switch (st.run.status) {
        case run_status::created:
          // Only runs that target the lost agent by name are told; such a
          // run stays queued for the agent's new session. A run the old
          // session held comes here too when its `withdraw` crossed the new
          // registration (the delivery lease had put it back in the queue).
          // Not retried: its retry would name the same agent, gone.
          if (!st.run.target_agent.empty() && why != "superseded")
            abort_run(self, run_status::error, "expired", retry("abort"), false);
          break;
        case run_status::pending:
          // A cancel requested before the start wins (`requeue` ends it
          // canceled), also for a run that named the agent.
          if (!st.run.target_agent.empty() && why != "superseded" &&
              !st.run.cancel_requested)
            abort_run(self, run_status::error, "expired", retry("abort"), false);
          else
            requeue(self, "agent_" + why, retry("requeue"));
          break;
        case run_status::running:
          if (why == "deregistered")
            abort_run(self, run_status::canceled, "agent_shutdown", retry("abort"));
          else if (why == "removed")
            abort_run(self, run_status::canceled, "agent_removed", retry("abort"));
          else
            abort_run(self, run_status::error, "agent_lost", retry("abort"));
          break;
        default: break;
        }
      },
      [=](fired_atom) {
        auto& st = self->state;
        st.armed = false;
        switch (due_action(st.run, st.ctx->run_timing_now(), st.ctx->now())) {
        case timer_action::none:
          rearm(self);
          if (auto word = std::exchange(st.lost_retry, std::nullopt))
            self->send(self, lost_atom::value, word->why, word->agent_id, word->session);
          break;
        case timer_action::ttl_lapsed:
          abort_run(self, run_status::error, "no_agent_within_ttl");
          break;
        case timer_action::lease_lapsed: requeue(self, "delivery_lease_lapsed"); break;
        case timer_action::result_expired:
          abort_run(self, run_status::error, "expired");
          break;
        case timer_action::timed_out:
          request_cancel(
              self, "timeout", [] {}, log_failure(self, "timeout"));
          break;
        case timer_action::cancel_grace_lapsed:
          if (st.run.cancel_reason == "timeout")
            abort_run(self, run_status::error, "timeout");
          else
            abort_run(self, run_status::canceled, "canceled_by_user");
          break;
        }
      },
      [=](watch_atom, const watch_request& w) -> caf::result<run_record> {
        auto& st = self->state;
        // Once meshd is stopping (see `shutdown` below) nobody waits.
        if (w.wait_ms <= 0 || st.ctx->stopping || !keeps_waiting(st.run, w.while_status))
          return st.run;
        auto id = ++st.last_watcher;
        auto rp = self->make_response_promise<run_record>();
        st.watchers.push_back({id, w.while_status, rp});
        // The deadline goes through the registry, and without us as its
        // sender: a scheduled message holds its receiver and its sender
        // until it is due, which would keep this actor alive long after the
        // run ended and the registry let it go.
        caf::delayed_anon_send(st.ctx->runs, std::chrono::milliseconds{w.wait_ms},
                               watch_atom::value, st.run.id, id);
        return rp;
      },
      [=](watch_atom, uint64_t id) {
        // The wait is over (the registry passes the deadline on): the run as
        // it is, unchanged.
        auto& ws = self->state.watchers;
        auto it =
            std::find_if(ws.begin(), ws.end(),
                         [&](const run_actor_state::watcher& w) { return w.id == id; });
        if (it == ws.end()) return; // answered when the run changed
        it->rp.deliver(self->state.run);
        ws.erase(it);
      },
      [=](shutdown_atom) {
        // meshd is stopping: waiting clients get the run as it is.
        for (auto& w : self->state.watchers)
          w.rp.deliver(self->state.run);
        self->state.watchers.clear();
      },
      [=](stop_atom) { self->quit(); },
  };
}

} // namespace

std::pair<run_status, std::string> finish_outcome(const run_record& run,
                                                  const wire::finish_request& req) {
  auto status = req.status;
  std::string reason = req.reason;
  if (status == run_status::error && reason.empty()) reason = "plan_failed";
  if (status == run_status::canceled && reason.empty())
    reason = run.cancel_reason.empty() ? "canceled_by_agent" : run.cancel_reason;
  if (status == run_status::canceled && run.cancel_reason == "timeout") {
    status = run_status::error; // the agent stopped it because it ran too long
    reason = "timeout";
  }
  return {status, reason};
}

caf::error refuse_finish_of_ended(const run_record& run,
                                  const wire::finish_request& req) {
  auto [status, reason] = finish_outcome(run, req);
  if (run.status == status && run.reason == reason && run.exit_code == req.exit_code)
    return {};
  return make_error(errc::illegal_transition,
                    "run already finished as " + std::string{to_string(run.status)} +
                        (run.reason.empty() ? "" : " (" + run.reason + ")"),
                    "status");
}

create_result answer_for_taken_key(run_record holder, const run_record& attempt) {
  if (holder.scope == attempt.scope) return create_result{std::move(holder), false, {}};
  return create_result{{},
                       false,
                       make_error(errc::conflict,
                                  "idempotency key '" + attempt.idempotency_key +
                                      "' is held by a run submitted with another scope",
                                  "idempotency_key")};
}

caf::actor spawn_run_actor(caf::local_actor* parent, context_ptr ctx, run_record run,
                           run_origin origin, caf::actor agent) {
  // Not linked: a link costs the parent a linear scan of all its links
  // whenever one ends, and runs end all the time. The registry stops its
  // run actors itself (see `run_registry`).
  return parent->spawn(run_actor, std::move(ctx), std::move(run), origin,
                       std::move(agent));
}

} // namespace polymesh
