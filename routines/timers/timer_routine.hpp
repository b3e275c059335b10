// A timer routine: keeps one deadline per key and, when the injected clock
// passes it, sends `(fired_atom)` to the actor that armed it. meshd runs two:
// *liveness* (one deadline per agent: offline detection) and *expiry* (one
// per unfinished run: lease, result expiry, timeout, TTL).
//
// The routine only wakes its targets; each target re-checks its own state
// against the clock when it fires, so a stale or early wake-up is harmless.
// It looks at the clock every `routines.timer_resolution` of real time; a
// test with a manual clock advances the clock and sends `(tick_atom)`.
//
// Messages:
//   (arm_atom, key, timestamp, target)   set or replace the deadline of key
//   (disarm_atom, key)                   forget it
//   (tick_atom)                       -> size_t  fire everything due now
//   (count_atom)                      -> size_t  armed deadlines
#pragma once

#include "mesh/actors/context.hpp"

#include <caf/fwd.hpp>
#include <string>

namespace polymesh {

[[nodiscard]] caf::actor spawn_timer_routine(caf::actor_system& sys, context_ptr ctx,
                                             std::string name);

} // namespace polymesh
