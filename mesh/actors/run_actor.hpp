// The run actor: one per unfinished run. It owns the run's state machine
// (consulting `run_state.hpp`) and its single armed timer (`run_timers.hpp`,
// armed with the expiry routine). Every change is persisted through the
// store actor first; the actor awaits the commit (buffering other messages)
// and only then changes memory and answers.
//
// Messages (callers: the run registry routes HTTP calls here):
//   (admit_atom)                                   -> create_result   (fresh runs only)
//   (assign_atom, agent_id, agent actor)           -> bool            (assignment
//   routine) (deliver_atom, timestamp)                                          (agent
//   actor: a poll carried it) (start_atom, caller, id)                       ->
//   run_record (progress_atom, caller, id, message)           -> bool cancel_requested
//   (logs_atom, caller, id, log_request)           -> bool
//   (finish_atom, caller, id, finish_request)      -> run_record
//   (cancel_atom, caller, id)                      -> run_record
//   (lost_atom, reason, agent id)                                      (agent actor or
//   assignment:
//                                                                       `offline`,
//                                                                       `superseded`,
//                                                                       `deregistered`)
//   (fired_atom)                                                       (expiry routine)
//   (stop_atom)                                                        (run registry,
//   after `done`)
//
// When the run ends it tells the registry `(done_atom, id)`; the registry
// stops routing to it and sends `stop`.
#pragma once

#include "mesh/actors/context.hpp"
#include "mesh/actors/messages.hpp"
#include "mesh/domain/records.hpp"

#include <caf/fwd.hpp>

namespace polymesh {

/// Spawns the actor of `run`. `fresh` runs are not yet durable and wait for
/// `admit`; restored runs re-arm their timer and re-enter the queue (or
/// re-attach to `agent` when pending or running).
/// Spawned by its registry, which stops it when the run is done or the
/// registry exits (not linked: see the definition).
/// The answer to a submit whose idempotency key `holder` already has. A
/// submitter whose token has another scope gets a conflict, not the run: a
/// dev-scoped token could otherwise take a prod deploy's key first, and the
/// prod submit would answer with the dev run, succeeded.
[[nodiscard]] create_result answer_for_taken_key(run_record holder,
                                                 const run_record& attempt);

[[nodiscard]] caf::actor spawn_run_actor(caf::local_actor* parent, context_ptr ctx,
                                         run_record run, bool fresh, caf::actor agent);

} // namespace polymesh
