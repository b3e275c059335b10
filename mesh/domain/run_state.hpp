// The run state machine as a table: which event moves a run from which
// status to which, and what each refusal says. Actors consult it before they
// persist anything; it knows nothing of actors, HTTP or SQL.
//
// Thread-safety: pure functions.
#pragma once

#include "mesh/domain/records.hpp"

#include <caf/expected.hpp>
#include <cstdint>
#include <string_view>

namespace polymesh {

/// Everything that can happen to a run.
enum class run_event : uint8_t {
  /// The assignment routine picked an agent (created -> pending).
  assign,
  /// The agent's poll carried the run (pending -> pending, sets delivered_at).
  deliver,
  /// The assigned agent started it (pending -> running; running -> running is
  /// an idempotent repeat).
  start,
  /// Progress or log from the assigned agent (running -> running).
  progress,
  /// The agent reported the outcome (pending|running -> terminal).
  finish,
  /// A user asked to cancel (created|pending-undelivered -> canceled at once;
  /// delivered|running -> cancel requested, the agent reports the end).
  cancel,
  /// Back to the queue: lease lapsed, agent offline or deregistered while
  /// pending (pending -> created).
  requeue,
  /// The mesh gives up on it: expiry, TTL, timeout, agent lost
  /// (created|pending|running -> error/canceled).
  abort,
};

[[nodiscard]] const char* to_string(run_event x);

/// Returns the status after `event` in `from`, or an `illegal_transition`
/// error naming both. For `finish` and `abort`, `outcome` is the terminal
/// status asked for; it is ignored for other events.
[[nodiscard]] caf::expected<run_status>
next_status(run_status from, run_event event, run_status outcome = run_status::error);

/// The Skadi view of a run (DESIGN.md): queuing, sent, succeeded, expired,
/// failed, canceled.
[[nodiscard]] const char* skadi_status(const run_record& run);

/// What `check_holder`'s refusal says when another session of the agent
/// holds the run. Its code is `held_by_other_session`; a meshd before that
/// code answered `forbidden` with these words, by which agents still tell
/// it apart (they stop reporting on the run, agent-sdk's `mesh_client.hpp`).
inline constexpr std::string_view other_session_holds_run{
    "was started by another session of this agent"};

/// Refuses a report (start, progress, log, finish, artifact) on `run` by
/// session `session` of agent `agent_id` unless that session holds the run:
/// it is assigned to the agent and pending, or that session started it
/// (`held_session`), also after it ended. A run running since before
/// sessions were recorded (`held_session` 0) takes the agent's reports as
/// it did then. A `held_by_other_session` error when another session holds
/// it, a `forbidden` one when it is not the agent's, or none.
/// REQUIRES: `run` is not `created` (the callers answer that themselves).
[[nodiscard]] caf::error check_holder(const run_record& run, const std::string& agent_id,
                                      int64_t session);

/// The seqs of `chunks`, in order (to ask which ones a run's log has).
[[nodiscard]] std::vector<int64_t> seqs_of(const std::vector<log_chunk>& chunks);

/// Refuses log `chunks` that would take a run's log past `limit` bytes
/// (`runs.max_log_bytes`; 0 = no limit): `held` are the bytes stored; chunks
/// whose seq is in `stored` (a retried upload's) add nothing. A
/// `payload_too_large` error on field `chunks`, or none.
[[nodiscard]] caf::error check_log_room(int64_t limit, const std::string& run_id,
                                        int64_t held,
                                        const std::vector<log_chunk>& chunks,
                                        const std::vector<int64_t>& stored = {});

/// Refuses another artifact to a run that holds `held` of them, the most
/// allowed (`runs.max_artifacts`; 0 refuses every one). A `conflict` error on
/// field `name`, or none.
[[nodiscard]] caf::error check_artifact_room(int64_t max, const std::string& run_id,
                                             int64_t held);

} // namespace polymesh
