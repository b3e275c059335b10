// The store actor: the single writer. It group-commits: every `write`
// request that arrives while a commit is being prepared joins the same
// transaction, and each requester gets its own outcomes only after the
// transaction is durable. One commit per mailbox drain instead of one per
// request is what keeps durable acknowledgement fast.
//
// Messages:
//   (write_atom, write_batch)        -> write_outcomes  (after commit)
//   (prune_atom, timestamp, size_t)  -> size_t           (retention)
//
// Runs detached (its own thread): SQLite calls block.
#pragma once

#include "mesh/actors/context.hpp"
#include "mesh/store/store.hpp"

#include <caf/fwd.hpp>
#include <memory>

namespace polymesh {

/// `ctx->store_status` learns how each commit went.
[[nodiscard]] caf::actor spawn_store_actor(caf::actor_system& sys, context_ptr ctx,
                                           std::unique_ptr<store> db,
                                           size_t group_commit_max);

} // namespace polymesh
