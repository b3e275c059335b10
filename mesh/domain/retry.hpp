// Automatic retries: which ends of a run make the mesh submit it again, and
// what that new run is.
//
// A run submitted with `retry: {max, on}` is submitted again when it ends
// with a reason `on` names, at most `max` times along its chain. The retry
// is a new run, with its own id, log, artifacts and result, linked both ways
// (`retry_of`, `retried_by`); the run actor writes it in the transaction
// that ends the run it retries, so that an end acknowledged never loses its
// retry. It takes its chain's first place in the queue (`queue_seq`): a
// retried deploy still goes before the newer deploys of its concurrency key.
//
// Thread-safety: pure functions.
#pragma once

#include "mesh/domain/records.hpp"

#include <caf/expected.hpp>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace polymesh {

/// The end reasons `retry.on` may name, in the order `retry_on` keeps them.
inline constexpr std::string_view retry_reasons[] = {
    "agent_lost", "agent_shutdown", "agent_removed", "expired", "plan_failed", "timeout"};
/// What a `retry` without `on` retries: ends where the run's agent went away
/// before it finished (lost, shut down, removed by an admin).
inline constexpr std::string_view default_retry_on =
    "agent_lost,agent_shutdown,agent_removed";
/// The most retries one run may ask for.
inline constexpr int64_t max_retries = 10;

/// `names` as `run_record::retry_on` (in `retry_reasons` order), or an
/// `invalid_argument` error naming the first entry that is not a reason a
/// retry may name, or that repeats one; `field` prefixes the entry's field.
[[nodiscard]] caf::expected<std::string>
retry_on_text(const std::vector<std::string>& names, const std::string& field);

/// The reasons in a `run_record::retry_on`.
[[nodiscard]] std::vector<std::string> retry_on_list(std::string_view text);

/// Whether the mesh retries `ended` (a run in a terminal status): it has
/// retries left, ended with a reason its `retry_on` names, no retry was made
/// of it yet, and nobody asked to cancel it (a run whose `timeout_s` passed
/// is retried when `on` names `timeout`). A run for one agent (Skadi style)
/// is not retried after its agent left (`agent_lost`, `agent_shutdown`,
/// `agent_removed`; nor, by its run actor, `expired` for that reason): its
/// retry could only go to that agent.
[[nodiscard]] bool retried(const run_record& ended);

/// The retry of `ended`: the same request (plan, selector, target agent,
/// params, payload, priority, limits, concurrency key, submitter and scope;
/// no idempotency key, which stays with the run submitted), new, queued in
/// its chain's first place.
[[nodiscard]] run_record make_retry(const run_record& ended, std::string id, uint64_t seq,
                                    timestamp now);

} // namespace polymesh
