// The three registries: small actors that own a name space and route.
//
// run registry — owns run ids and the submission sequence. It creates runs
//   (spawning a run actor that persists itself, so creation never waits on
//   the registry) and routes every run call to the live run actor, or to the
//   query actor once the run has finished.
//     (create_atom, caller, run_request)              -> create_result
//     (start|progress|logs|finish|cancel_atom, caller, id, ...) -> routed
//     (done_atom, id)                                   from a finished run actor
//     (admit_atom, run_record, agent actor)          -> ok  (start-up restore)
//     (admit_atom, run_record, retry_atom)           -> run actor (a retry stored
//                                                       by the run it retries)
//
// agent registry — owns agent names and ids, routes agent calls, and keeps a
//   mirror of every agent's record for listings.
//     (register_atom, caller, register_request)      -> agent_session_info
//     (refresh_atom|poll_atom|dereg_atom, caller, id, ...) -> routed
//     (touch_atom, id), (get_atom, id-or-name), (list_atom),
//     (drain_atom, id-or-name, by_admin), (undrain_atom, id-or-name),
//     (labels_atom, id-or-name, labels, if_match tags)
//     (update_atom, agent_record)                       mirror refresh from agent actors
//     (admit_atom, agent_record)                     -> caf::actor (start-up restore)
//     (forget_atom)                                  -> size_t: forgets the agents
//         offline or deregistered for agents.forget_after (also every minute)
//
// token registry — owns tokens: mints, revokes, and keeps the token cache
//   that HTTP threads authenticate against.
//     (create_atom, token_request)                   -> issued_token
//     (issue_atom, agent id, session)                -> issued_token (agent access token)
//     (revoke_atom, id)                              -> token_record
//     (revoke_atom, agent_atom, agent id)            -> bool
//   (start-up fills the token cache directly from the store snapshot)
#pragma once

#include "mesh/actors/context.hpp"

#include <caf/fwd.hpp>

namespace polymesh {

[[nodiscard]] caf::actor spawn_run_registry(caf::actor_system& sys, context_ptr ctx,
                                            uint64_t max_seq);
[[nodiscard]] caf::actor spawn_agent_registry(caf::actor_system& sys, context_ptr ctx);
[[nodiscard]] caf::actor spawn_token_registry(caf::actor_system& sys, context_ptr ctx);

} // namespace polymesh
