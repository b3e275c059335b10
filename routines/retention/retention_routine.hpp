// The retention routine: deletes finished runs (and their logs) older than
// `retention.finished_runs`, in batches, every `retention.interval`. A zero
// retention keeps everything. Deletion goes through the store actor, the
// only writer. Tokens that expired before the same cutoff leave the token
// cache (an expired token is refused either way). Once a minute it also
// hands the heap's free pages back to the kernel (`malloc_trim`), so that
// meshd's RSS falls after a burst. Runs detached (its own thread).
//
// Messages:
//   (tick_atom) -> size_t runs pruned now (tests drive it with a manual clock)
#pragma once

#include "mesh/actors/context.hpp"

#include <caf/fwd.hpp>

namespace polymesh {

[[nodiscard]] caf::actor spawn_retention_routine(caf::actor_system& sys, context_ptr ctx);

} // namespace polymesh
