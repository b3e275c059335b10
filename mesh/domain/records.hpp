// The durable entities of the mesh: runs, agents, tokens and log chunks.
//
// These are plain values. The store persists them whole; actors own the live
// copy of unfinished runs and of agents; the wire layer renders them as JSON.
// No field here knows about HTTP, SQL or actors.
#pragma once

#include "mesh/domain/clock.hpp"

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace polymesh {

/// Lifecycle of a run (see DESIGN.md "Run lifecycle").
enum class run_status : uint8_t {
  /// Accepted and durable; no agent holds it.
  created,
  /// Assigned to one agent with a reserved slot; `delivered_at` tells whether
  /// the agent's poll has carried it yet.
  pending,
  /// The assigned agent confirmed that it started the run.
  running,
  /// Terminal: the plan succeeded.
  success,
  /// Terminal: the plan failed or the mesh gave up (see `reason`).
  error,
  /// Terminal: stopped on request or by shutdown (see `reason`).
  canceled,
};

/// Liveness and willingness of an agent.
enum class agent_status : uint8_t {
  /// Heard from recently and taking new runs.
  online,
  /// Heard from recently; finishes what it has but takes no new runs.
  draining,
  /// Not heard from within the offline timeout.
  offline,
  /// Said goodbye (or was removed by an admin); its tokens are revoked.
  deregistered,
};

/// What a token may do.
enum class token_kind : uint8_t {
  /// Everything.
  admin,
  /// Create, read and cancel runs.
  submitter,
  /// Read runs and agents.
  reader,
  /// Register agents, nothing else.
  registration,
  /// One agent's access token, issued at registration.
  agent,
};

[[nodiscard]] const char* to_string(run_status x);
[[nodiscard]] const char* to_string(agent_status x);
[[nodiscard]] const char* to_string(token_kind x);
[[nodiscard]] std::optional<run_status> parse_run_status(const std::string& text);
[[nodiscard]] std::optional<agent_status> parse_agent_status(const std::string& text);
[[nodiscard]] std::optional<token_kind> parse_token_kind(const std::string& text);

/// True for `success`, `error` and `canceled`.
[[nodiscard]] bool is_terminal(run_status x);

using label_map = std::map<std::string, std::string>;

struct run_record {
  std::string id;
  /// Submission order, strictly increasing; FIFO within a priority.
  uint64_t seq = 0;
  std::string plan;
  /// The selector in canonical form (`selector::to_string`); "" selects
  /// every agent.
  std::string selector;
  /// The submitting token's scope selector ("" for none).
  std::string scope;
  /// Skadi style: the name of the one agent that may run it ("" for any).
  std::string target_agent;
  /// Id of the agent holding it while pending or running, and of the last
  /// one that did afterwards ("" if none ever did).
  std::string assigned_agent;
  /// The run's parameters, a JSON object in text form.
  std::string params = "{}";
  std::string payload;
  int64_t priority = 0;
  run_status status = run_status::created;
  /// Why it ended or went back (`plan_failed`, `expired`, `agent_lost`, ...).
  std::string reason;
  std::optional<int64_t> exit_code;
  /// Bounded text result reported by the agent.
  std::string result;
  /// Error text reported by the agent or the mesh.
  std::string error;
  /// Number of times it was assigned to an agent.
  int64_t attempts = 0;
  std::string idempotency_key;
  /// At most one run per key and scope is pending or running at a time
  /// ("" for none): the others wait queued, in priority and FIFO order.
  std::string concurrency_key;
  /// Id of the token that submitted it.
  std::string submitted_by;
  /// Seconds; 0 means no limit.
  int64_t timeout_s = 0;
  int64_t ttl_s = 0;
  bool cancel_requested = false;
  /// Why the cancel was requested (`canceled_by_user`, `timeout`).
  std::string cancel_reason;
  std::string progress;
  timestamp created_at{};
  std::optional<timestamp> assigned_at;
  std::optional<timestamp> delivered_at;
  std::optional<timestamp> started_at;
  std::optional<timestamp> finished_at;
  /// Last start, progress, log or finish report from the agent.
  std::optional<timestamp> last_activity_at;
  std::optional<timestamp> cancel_requested_at;
  /// The session of `assigned_agent` that started it (0: none since it was
  /// last queued). Only that session may report on it, also once it ended
  /// (a late log chunk or artifact): a later session of the same agent did
  /// not run it.
  int64_t held_session = 0;
  /// Automatic retries (submitted as `retry`): when it ends with a reason
  /// named in `retry_on`, the mesh submits it again, at most `retry_max`
  /// times in the chain (0: never). See `mesh/domain/retry.hpp`.
  int64_t retry_max = 0;
  /// The end reasons that retry it, comma separated ("" when `retry_max` is 0).
  std::string retry_on;
  /// How many runs came before it in its chain of retries (0: submitted).
  int64_t retry_number = 0;
  /// The run it retries ("" for a run submitted).
  std::string retry_of;
  /// The run that retries it, once it ended so ("" until then).
  std::string retried_by;
  /// Its place in the queue: the seq of its chain's first run, so that a
  /// retry is placed as its first run would have been (0: `seq`).
  uint64_t queue_seq = 0;
};

/// The seq that orders `run` in the queue (see `run_record::queue_seq`).
[[nodiscard]] inline uint64_t queue_order(const run_record& run) {
  return run.queue_seq != 0 ? run.queue_seq : run.seq;
}

struct agent_record {
  std::string id;
  /// Unique; the agent's identity across sessions.
  std::string name;
  label_map labels;
  std::vector<std::string> plans;
  int64_t capacity = 1;
  agent_status status = agent_status::online;
  std::string version;
  std::string hostname;
  /// Scope of the registration token it registered with ("" for none).
  std::string scope;
  timestamp registered_at{};
  timestamp last_seen_at{};
  /// Incremented on every registration; a superseded session's token dies.
  int64_t session = 0;
  /// Drained: it comes back from `offline` as `draining`. Set by a drain
  /// (also of an offline agent), cleared by an undrain, and by the next
  /// registration unless `drain_kept`.
  bool drained = false;
  /// An admin's drain, kept across the agent's registrations (a restart of
  /// a host under maintenance must not put it back to work); the agent's own
  /// drain, when it is told to stop, ends with its next registration.
  bool drain_kept = false;
  /// The installation the current session registered from (an agent's work
  /// directory keeps it across restarts; "" when the agent sent none). Not
  /// shown in the API.
  std::string instance;
  /// Runs placed with the current session whose delivery lease lapsed in a
  /// row (not started within `runs.delivery_lease`); a start or the next
  /// registration clears it. Kept by the assignment routine, not stored.
  int64_t lapsed_leases = 0;
  /// Until when no run is placed with the agent after such a lapse
  /// (`agents.hold_back_max`); not stored.
  std::optional<timestamp> held_until;
};

struct token_record {
  std::string id;
  token_kind kind = token_kind::reader;
  std::string name;
  /// Hex SHA-256 of the secret part; the secret itself is never stored.
  std::string secret_hash;
  /// Selector limiting what it may target or register ("" for none).
  std::string scope;
  /// For `agent` tokens: the agent id and its session.
  std::string agent_id;
  int64_t agent_session = 0;
  timestamp created_at{};
  std::optional<timestamp> expires_at;
  std::optional<timestamp> revoked_at;
};

struct log_chunk {
  /// Sequence number chosen by the agent, starting at 0; repeats are ignored.
  int64_t seq = 0;
  /// `stdout` or `stderr`.
  std::string stream = "stdout";
  std::string data;
  timestamp at{};
};

/// A file an agent uploaded for a run. The bytes travel separately.
struct artifact_record {
  std::string run_id;
  /// Relative path such as `plan.txt` or `reports/junit.xml`.
  std::string name;
  int64_t size = 0;
  /// Lowercase hex SHA-256 of the bytes.
  std::string sha256;
  timestamp created_at{};
};

} // namespace polymesh
