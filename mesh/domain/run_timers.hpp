// Which timer governs a run right now, and what happens when it fires.
//
// A run has at most one armed deadline: the earliest of the rules below that
// apply to its current state. All deadlines derive from stored timestamps,
// so after a restart the same deadlines come back without extra state.
//
//   created, ttl_s > 0            created_at + ttl          -> error/no_agent_within_ttl
//   pending, delivered, unstarted delivered_at + lease      -> back to created
//   pending, never delivered      assigned_at + lease       -> back to created
//   running (or pending delivered) last activity + expiry   -> error/expired
//   running, timeout_s > 0        started_at + timeout      -> ask the agent to cancel
//   cancel requested, sent        cancel_requested_at+grace -> end without the agent
//
// The three windows that wait on an agent (lease, expiry, grace) count from
// no earlier than `run_timing::windows_from`, the mesh's start or the end of
// its last stall: no agent could reach a mesh that was down or stopped, so
// an outage longer than the result expiry does not end every running run
// the moment the mesh is back. The TTL and the run's own timeout are the
// submitter's, counted in wall time.
//
// Thread-safety: pure functions.
#pragma once

#include "mesh/domain/records.hpp"

#include <cstdint>
#include <optional>

namespace polymesh {

struct run_timing {
  duration delivery_lease = std::chrono::seconds{30};
  duration result_expiry = std::chrono::minutes{10};
  duration cancel_grace = std::chrono::seconds{30};
  /// Since when agents could reach the mesh (see above); the epoch counts
  /// nothing.
  timestamp windows_from{};
};

enum class timer_action : uint8_t {
  /// Nothing is due (the timer fired early or the run moved on).
  none,
  /// Waited longer than `ttl_s` for an agent: error/no_agent_within_ttl.
  ttl_lapsed,
  /// Delivered but never started within the lease, or never delivered
  /// (its agent did not poll) within the lease: back to created.
  lease_lapsed,
  /// Sent with no start, progress or result for `result_expiry`: error/expired.
  result_expired,
  /// Ran longer than `timeout_s`: tell the agent to cancel, reason timeout.
  timed_out,
  /// The agent did not confirm a requested cancel within the grace.
  cancel_grace_lapsed,
};

[[nodiscard]] const char* to_string(timer_action x);

/// The earliest deadline that applies to `run`, if any.
[[nodiscard]] std::optional<timestamp> next_deadline(const run_record& run,
                                                     const run_timing& timing);

/// What is due for `run` at `now` (the most urgent action if several are).
[[nodiscard]] timer_action due_action(const run_record& run, const run_timing& timing,
                                      timestamp now);

} // namespace polymesh
