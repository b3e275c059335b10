// The assignment routine: the actor around `assigner`. Event driven — a
// submit (enqueue), a change of an agent (labels, status, capacity) and a
// freed slot each trigger placement at once — plus a periodic sweep as a
// safety net. For every placement it asks the run actor to take the agent;
// a run that has moved on meanwhile (canceled, say) declines and the slot is
// freed again.
//
// Messages:
//   (enqueue_atom, run_record, run actor)   a run is waiting for an agent
//   (dequeue_atom, run id)                  it no longer is
//   (agent_atom, agent_record, agent actor) an agent appeared or changed
//   (release_atom, agent id, run id)        the run let go of its slot (and of
//                                           its concurrency key)
//   (reserve_atom, run_record)              a pending or running run holds a
//                                           slot and its key (start-up restore)
//   (lapsed_atom, agent id, session, run id) the run's delivery lease lapsed:
//                                           the agent is held back
//                                           (`agents.hold_back_max`)
//   (started_atom, agent id, session)       an agent with lapsed leases acted
//                                           on a run: its hold ends
//   (explain_atom, run id)               -> explanation
//   (tick_atom)                          -> size_t placements (the sweep)
#pragma once

#include "mesh/actors/context.hpp"

#include <caf/fwd.hpp>

namespace polymesh {

[[nodiscard]] caf::actor spawn_assignment_routine(caf::actor_system& sys,
                                                  context_ptr ctx);

} // namespace polymesh
