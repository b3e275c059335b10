// The query actor: owns a read-only store connection. It answers every read
// of the API (runs, logs, agents' history, tokens, counts) straight from the
// store, which is always at least as new as memory because every change is
// persisted before it is applied. It also answers agent calls about runs
// that have finished (and so have no run actor any more): idempotent repeats
// of `finish`, late log chunks, and 404/409 for the rest.
//
// Messages:
//   (get_atom, id)                          -> run_record | not_found
//   (list_atom, run_filter)                 -> run_page
//   (logs_atom, id, int64 after, size_t n)  -> log_page (at most n chunks,
//                                              ending once their data
//                                              reaches log_page_bytes)
//   (logs_atom, count_atom, id)             -> int64 (bytes of the run's log)
//   (logs_atom, list_atom, id, seqs)        -> the seqs the run's log has
//   (count_atom)                            -> status_counts
//   (list_atom, agent_atom)                 -> agent_list
//   (list_atom, tokens_atom)                -> token_list
//   run calls with no live actor: start/progress/logs/finish/cancel
//
// Runs detached (its own thread): SQLite calls block. Two run, each on its
// own connection: `ctx->query` for everything, `ctx->lists` for the listings
// of runs and tokens, which may walk many rows.
#pragma once

#include "mesh/actors/context.hpp"
#include "mesh/store/store.hpp"

#include <caf/fwd.hpp>
#include <memory>

namespace polymesh {

/// Where a page of a run's log ends: 10,000 chunks of 64 KiB would be
/// 640 MiB held, several times over, by one request's thread.
constexpr size_t log_page_bytes = 1024 * 1024;

[[nodiscard]] caf::actor spawn_query_actor(caf::actor_system& sys, context_ptr ctx,
                                           std::unique_ptr<store> reader);

} // namespace polymesh
