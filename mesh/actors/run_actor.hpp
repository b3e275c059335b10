// The run actor: one per unfinished run. It owns the run's state machine
// (consulting `run_state.hpp`) and its single armed timer (`run_timers.hpp`,
// armed with the expiry routine). Every change is persisted through the
// store actor first; the actor awaits the commit (buffering other messages)
// and only then changes memory and answers.
//
// Messages (callers: the run registry routes HTTP calls here):
//   (admit_atom)                         -> create_result  submitted runs only
//   (assign_atom, agent_id, agent actor, session)
//                                        -> bool           assignment routine
//   (deliver_atom, timestamp)                              agent actor: a poll
//                                                          carried it
//   (start_atom, caller, id)             -> run_record
//   (progress_atom, caller, id, message) -> bool           cancel_requested
//   (logs_atom, caller, id, log_request) -> bool
//   (finish_atom, caller, id, finish_request)
//                                        -> run_record
//   (cancel_atom, caller, id)            -> run_record
//   (lost_atom, reason, agent id, session)                 agent actor or
//                                                          assignment: `offline`,
//                                                          `superseded`,
//                                                          `deregistered`,
//                                                          `removed`
//   (fired_atom)                                           expiry routine
//   (stop_atom)                                            run registry, after
//                                                          `done`
//
// When the run ends it tells the registry `(done_atom, id)`; the registry
// stops routing to it and sends `stop`.
#pragma once

#include "mesh/actors/context.hpp"
#include "mesh/actors/messages.hpp"
#include "mesh/domain/records.hpp"

#include <caf/fwd.hpp>

namespace polymesh {

/// Asks `store` to append `chunks`, received `at`, to the log of run `id`,
/// which may have ended (`append_late_logs`: the store checks the run is
/// there and the log's room, `max_bytes`, in its own order); answers true,
/// or why not. With `suspend`, `self` takes no other message until the
/// store answers.
[[nodiscard]] caf::result<bool>
append_late(caf::event_based_actor* self, const caf::actor& store, const std::string& id,
            std::vector<log_chunk> chunks, timestamp at, int64_t max_bytes, bool suspend);

/// The answer to a submit whose idempotency key `holder` already has. A
/// submitter whose token has another scope gets a conflict, not the run: a
/// dev-scoped token could otherwise take a prod deploy's key first, and the
/// prod submit would answer with the dev run, succeeded.
[[nodiscard]] create_result answer_for_taken_key(run_record holder,
                                                 const run_record& attempt);

/// The status and reason an agent's finish gives `run`: the reason the mesh
/// fills in when the agent sent none, and `error/timeout` for a run the
/// agent stopped because it overran its timeout.
[[nodiscard]] std::pair<run_status, std::string>
finish_outcome(const run_record& run, const wire::finish_request& req);

/// The answer to a finish of a run that has ended (live or in the store):
/// none when `req` repeats the finish that ended it (its answer was lost),
/// else the conflict naming how it ended. Any other outcome, such as the
/// plan's own after the mesh ended the run as `agent_lost`, is refused: a
/// 200 would say it was stored.
[[nodiscard]] caf::error refuse_finish_of_ended(const run_record& run,
                                                const wire::finish_request& req);

/// Where a run actor's run comes from.
enum class run_origin {
  /// Submitted, not yet durable: waits for `admit`, which persists it.
  submitted,
  /// Durable (a restart, a batch submit): re-arms its timer and re-enters
  /// the queue, or re-attaches to its agent when pending or running.
  restored,
  /// A retry, durable: arms its timer; the run it retries queues it (ahead
  /// of that run's release of its concurrency key: see `retry.hpp`).
  retried,
};

/// Spawns the actor of `run` (see `run_origin`); `agent` is the agent
/// holding a restored run that is pending or running.
/// Spawned by its registry, which stops it when the run is done or the
/// registry exits (not linked: see the definition).
[[nodiscard]] caf::actor spawn_run_actor(caf::local_actor* parent, context_ptr ctx,
                                         run_record run, run_origin origin,
                                         caf::actor agent);

} // namespace polymesh
