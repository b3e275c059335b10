// The agent actor: one per agent name. It holds the agent's record (labels,
// plans, capacity, status), the runs assigned to it, its liveness, and the
// agent's one outstanding long-poll.
//
// Messages (the agent registry routes HTTP calls here):
//   (register_atom, caller, register_request)   -> agent_session_info  (new session)
//   (refresh_atom, caller)                      -> agent_session_info  (fresh token)
//   (poll_atom, caller, int64 wait_ms)          -> poll_result
//   (touch_atom)                                  any authenticated request: liveness
//   (dereg_atom, caller)                        -> agent_record
//   (drain_atom, by_admin)                      -> agent_record
//   (labels_atom, label_map, if_match tags)     -> agent_record (412 if none is current)
//   (get_atom)                                  -> agent_record
//   (offer_atom, run_record, run actor, session)  a run was assigned to that
//                                                 session (0: any, a restart's)
//   (withdraw_atom, run id, bool acted)           the run left this agent
//                                                 (acted: it started or ended it)
//   (recall_atom, run id)                       -> (bool, timestamp): true and
//                                                 when if a poll carried it; else
//                                                 the offer is taken back
//   (started_atom, run id)                        the agent started it
//   (held_atom, session, lapsed, until)           the assignment routine's
//                                                 hold (until: none = 0)
//   (cancel_atom, run id)                         tell the agent to cancel it
//   (fired_atom)                                  liveness timer
//   (shutdown_atom)                               answer the waiting poll now
#pragma once

#include "mesh/actors/context.hpp"
#include "mesh/domain/records.hpp"

#include <caf/fwd.hpp>

namespace polymesh {

/// Spawns the actor of `agent`. A restored agent (`restored`) is announced to
/// the assignment routine and given a fresh liveness deadline; a new one
/// waits for `register`.
/// Spawned by its registry and linked to it, so it ends with the registry.
[[nodiscard]] caf::actor spawn_agent_actor(caf::local_actor* parent, context_ptr ctx,
                                           agent_record agent, bool restored);

} // namespace polymesh
