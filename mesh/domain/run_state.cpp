#include "mesh/domain/run_state.hpp"

#include "mesh/domain/error.hpp"

#include <algorithm>
#include <string>

namespace polymesh {

namespace {

constexpr size_t status_count = 6;
constexpr size_t event_count = 8;

// What one (status, event) cell allows. Most cells name a fixed target; the
// two that end a run (`finish`, `abort`) take the target from the caller's
// `outcome`, restricted to the terminal statuses that event may produce.
enum class cell_kind : uint8_t {
  /// The event is refused in this status.
  illegal,
  /// The event moves the run to `target`.
  fixed,
  /// The event moves the run to the caller's `outcome`, which must be in
  /// `outcomes`.
  outcome,
};

// Bit masks over the terminal statuses, for `cell_kind::outcome`.
constexpr uint8_t bit(run_status x) {
  return static_cast<uint8_t>(1u << static_cast<unsigned>(x));
}
constexpr uint8_t any_end =
    bit(run_status::success) | bit(run_status::error) | bit(run_status::canceled);
constexpr uint8_t mesh_end = bit(run_status::error) | bit(run_status::canceled);

struct cell {
  cell_kind kind = cell_kind::illegal;
  run_status target = run_status::created;
  uint8_t outcomes = 0;
};

constexpr cell to(run_status target) {
  return {cell_kind::fixed, target, 0};
}
constexpr cell end(uint8_t outcomes) {
  return {cell_kind::outcome, run_status::created, outcomes};
}

// The cells, named after where they lead.
constexpr cell no{};
constexpr cell created = to(run_status::created);
constexpr cell pending = to(run_status::pending);
constexpr cell running = to(run_status::running);
constexpr cell canceled = to(run_status::canceled);
/// Any terminal outcome: what the agent reports.
constexpr cell ended = end(any_end);
/// `error` or `canceled`: the mesh giving up never claims success.
constexpr cell gave_up = end(mesh_end);

// The whole state machine. Rows are `run_status`, columns `run_event`, both in
// declaration order. Terminal rows are all `no`: nothing moves a finished run.
//
// Notes on the cells that are not obvious:
// - pending/start: the agent reports start; running/start is an idempotent
//   repeat (the caller checks it is the same agent).
// - pending/finish: an agent may fail before it could report start.
// - pending/cancel: whether the cancel is immediate (undelivered) or only
//   requested (delivered) is the caller's decision; the target is `canceled`
//   either way. The same holds for running/cancel (always only requested).
// - progress needs `running`: a pending run has not been confirmed started.
// clang-format off
constexpr cell table[status_count][event_count] = {
  //             assign   deliver  start    progress finish   cancel    requeue  abort
  /* created */ {pending, no,      no,      no,      no,      canceled, no,      gave_up},
  /* pending */ {no,      pending, running, no,      ended,   canceled, created, gave_up},
  /* running */ {no,      no,      running, running, ended,   canceled, no,      gave_up},
  /* success */ {no,      no,      no,      no,      no,      no,       no,      no},
  /* error */   {no,      no,      no,      no,      no,      no,       no,      no},
  /* canceled */{no,      no,      no,      no,      no,      no,       no,      no},
};
// clang-format on

static_assert(static_cast<size_t>(run_status::canceled) + 1 == status_count,
              "the transition table needs a row per run_status");
static_assert(static_cast<size_t>(run_event::abort) + 1 == event_count,
              "the transition table needs a column per run_event");

} // namespace

const char* to_string(run_event x) {
  switch (x) {
  case run_event::assign: return "assign";
  case run_event::deliver: return "deliver";
  case run_event::start: return "start";
  case run_event::progress: return "progress";
  case run_event::finish: return "finish";
  case run_event::cancel: return "cancel";
  case run_event::requeue: return "requeue";
  case run_event::abort: return "abort";
  }
  return "unknown";
}

caf::expected<run_status> next_status(run_status from, run_event event,
                                      run_status outcome) {
  auto row = static_cast<size_t>(from);
  auto col = static_cast<size_t>(event);
  // Out-of-range values can only come from a cast bug; refuse rather than
  // read past the table.
  if (row >= status_count || col >= event_count)
    return make_error(errc::internal, "run status or event out of range");
  const auto& c = table[row][col];
  switch (c.kind) {
  case cell_kind::illegal: break;
  case cell_kind::fixed: return c.target;
  case cell_kind::outcome:
    // The transition itself is legal; only the caller's outcome can be wrong,
    // and that is a bad argument, not a state conflict.
    if (!is_terminal(outcome) || (c.outcomes & bit(outcome)) == 0)
      return make_error(errc::invalid_argument,
                        std::string{"cannot "} + to_string(event) + " a run as " +
                            to_string(outcome) + " (must be " +
                            (c.outcomes == any_end ? "success, error or canceled"
                                                   : "error or canceled") +
                            ")",
                        "outcome");
    return outcome;
  }
  return make_error(errc::illegal_transition,
                    std::string{"cannot "} + to_string(event) + " a run that is " +
                        to_string(from),
                    "status");
}

const char* skadi_status(const run_record& run) {
  switch (run.status) {
  case run_status::created: return "queuing";
  case run_status::pending:
    // Skadi only calls a run sent once the agent's poll has carried it.
    return run.delivered_at ? "sent" : "queuing";
  case run_status::running: return "sent";
  case run_status::success: return "succeeded";
  case run_status::error: return run.reason == "expired" ? "expired" : "failed";
  case run_status::canceled: return "canceled";
  }
  return "failed";
}

std::vector<int64_t> seqs_of(const std::vector<log_chunk>& chunks) {
  std::vector<int64_t> out;
  out.reserve(chunks.size());
  for (auto& c : chunks)
    out.push_back(c.seq);
  return out;
}

caf::error check_holder(const run_record& run, const std::string& agent_id,
                        int64_t session) {
  if (run.assigned_agent != agent_id)
    return make_error(errc::forbidden,
                      "run '" + run.id + "' is not assigned to this agent");
  // Pending: assigned, not started; the session that polls it holds it.
  if (run.status == run_status::pending) return {};
  if (run.held_session == 0) {
    // Started before meshd recorded sessions (schema version 3): as then.
    if (run.status == run_status::running) return {};
    return make_error(errc::forbidden, "run '" + run.id +
                                           "' ended while this agent did not hold it; "
                                           "it takes no reports");
  }
  if (run.held_session != session)
    return make_error(errc::held_by_other_session,
                      "run '" + run.id + "' " + std::string{other_session_holds_run} +
                          " (" + std::to_string(run.held_session) + "); this session (" +
                          std::to_string(session) + ") may not report on it");
  return {};
}

caf::error check_log_room(int64_t limit, const std::string& run_id, int64_t held,
                          const std::vector<log_chunk>& chunks,
                          const std::vector<int64_t>& stored) {
  int64_t adds = 0;
  for (auto& c : chunks)
    if (std::find(stored.begin(), stored.end(), c.seq) == stored.end())
      adds += static_cast<int64_t>(c.data.size());
  if (limit <= 0 || held + adds <= limit) return {};
  return make_error(errc::payload_too_large,
                    "run '" + run_id + "' may hold at most " + std::to_string(limit) +
                        " log bytes (runs.max_log_bytes): it holds " +
                        std::to_string(held) + " and these chunks add " +
                        std::to_string(adds) + "; nothing of them was stored",
                    "chunks");
}

caf::error check_artifact_room(int64_t max, const std::string& run_id, int64_t held) {
  if (max == 0)
    return make_error(errc::conflict,
                      "this mesh accepts no artifacts (runs.max_artifacts = 0)", "name");
  if (held < max) return {};
  return make_error(errc::conflict,
                    "run '" + run_id + "' already holds " + std::to_string(held) +
                        " artifacts, the most allowed (runs.max_artifacts = " +
                        std::to_string(max) + ")",
                    "name");
}

} // namespace polymesh
