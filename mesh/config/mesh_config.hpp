// meshd's configuration: one table of keys (each with type, bounds, default
// and doc) drives YAML parsing, validation, `config/mesh.example.yaml` and
// docs/config.md. Unknown keys and bad values are errors naming the key.
//
// Thread-safety: a `mesh_config` is a plain value; parse once at start-up.
#pragma once

#include "mesh/domain/clock.hpp"

#include <algorithm>
#include <caf/expected.hpp>
#include <cstdint>
#include <string>
#include <vector>

namespace polymesh {

struct mesh_config {
  // -- network --------------------------------------------------------------
  /// `HOST:PORT` to listen on; port 0 picks a free port. Key `listen`.
  std::string listen = "127.0.0.1:7700";
  /// Directory for the database and `admin.token`. Key `data_dir`.
  std::string data_dir = "./polymesh-data";

  // -- http -----------------------------------------------------------------
  /// Worker threads; each open connection and each long-poll holds one.
  /// Key `http.threads`.
  int64_t http_threads = 64;
  /// Clients that may wait on a run at once, on worker threads of their own
  /// added to `http_threads`. Key `http.run_waits`.
  int64_t run_waits = 16;
  /// Largest accepted request body. Key `http.max_body_bytes`.
  int64_t max_body_bytes = 1 << 20;
  /// Idle keep-alive connections are closed after this. Key
  /// `http.keep_alive_timeout`.
  duration keep_alive_timeout = std::chrono::seconds{2};
  /// Requests served on one keep-alive connection before meshd closes it.
  /// Key `http.keep_alive_max_requests`.
  int64_t keep_alive_max_requests = 100;
  /// Time allowed to read one request. Key `http.read_timeout`.
  duration read_timeout = std::chrono::seconds{10};
  /// Time allowed for a client to take more of an answer. Key
  /// `http.write_timeout`.
  duration write_timeout = std::chrono::minutes{5};
  /// When meshd stops, how long requests in progress may take before their
  /// connections are cut. Key `http.stop_grace`.
  duration stop_grace = std::chrono::seconds{10};

  // -- store ----------------------------------------------------------------
  /// SQLite file; "" means `<data_dir>/mesh.db`. Key `store.path`.
  std::string store_path;
  /// `full` (fsync each group commit: survives power loss) or `normal`
  /// (survives process crashes). Key `store.synchronous`.
  std::string store_synchronous = "full";
  /// `fast` (pages freed by deletes keep their bytes until reused) or `full`
  /// (they are zeroed). Key `store.secure_delete`.
  std::string store_secure_delete = "fast";
  /// Largest number of writes committed in one transaction. Key
  /// `store.group_commit_max`.
  int64_t group_commit_max = 4096;

  // -- actors ---------------------------------------------------------------
  /// CAF scheduler policy, `sharing` or `stealing`. Key `actors.scheduler`.
  std::string actor_scheduler = "sharing";

  // -- agents ---------------------------------------------------------------
  /// An agent not heard from for this long is offline. Key
  /// `agents.offline_after`.
  duration offline_after = std::chrono::minutes{3};
  /// Lifetime of an agent access token. Key `agents.token_ttl`.
  duration agent_token_ttl = std::chrono::hours{1};
  /// How long an agent access token that lapsed while meshd could not hear
  /// its agent (down, stopped, its clock jumped) is honoured from then: the
  /// agent's window to be heard from, at most a token's life.
  [[nodiscard]] duration agent_token_grace() const {
    return std::min(offline_after, agent_token_ttl);
  }
  /// Longest long-poll wait granted. Key `agents.poll_wait_max`.
  duration poll_wait_max = std::chrono::seconds{30};
  /// How often agents are told to report when idle. Key
  /// `agents.heartbeat_interval`.
  duration heartbeat_interval = std::chrono::seconds{30};
  /// An agent offline or deregistered for this long is forgotten; 0 = never.
  /// Key `agents.forget_after`.
  duration forget_after = std::chrono::hours{7 * 24};
  /// Longest an agent is held back (placed no run) after runs placed with it
  /// were not started within `delivery_lease`; 0 = never. Key
  /// `agents.hold_back_max`.
  duration hold_back_max = std::chrono::minutes{10};

  // -- runs -----------------------------------------------------------------
  /// A delivered run not started within this goes back to the queue, as
  /// does an assigned run no poll carried within this of its assignment. Key
  /// `runs.delivery_lease`.
  duration delivery_lease = std::chrono::seconds{30};
  /// A sent run with no start, progress or result for this long ends
  /// error/expired. Key `runs.result_expiry`.
  duration result_expiry = std::chrono::minutes{10};
  /// After a timeout the agent is told to cancel; if it has not reported
  /// within this grace the run ends error/timeout anyway. Key
  /// `runs.cancel_grace`.
  duration cancel_grace = std::chrono::seconds{30};
  /// Largest `result` text accepted from an agent. Key `runs.max_result_bytes`.
  int64_t max_result_bytes = 64 * 1024;
  /// Largest `payload` accepted at submit. Key `runs.max_payload_bytes`.
  int64_t max_payload_bytes = 256 * 1024;
  /// Largest artifact an agent may upload. Key `runs.max_artifact_bytes`.
  int64_t max_artifact_bytes = 64 << 20;
  /// Most artifacts one run may hold. Key `runs.max_artifacts`.
  int64_t max_artifacts = 100;
  /// Most log bytes one run may hold, over all its chunks; 0 = no limit.
  /// Key `runs.max_log_bytes`.
  int64_t max_log_bytes = int64_t{128} << 20;

  // -- routines -------------------------------------------------------------
  /// How often the assignment routine sweeps the queue as a safety net. Key
  /// `routines.assignment_sweep`.
  duration assignment_sweep = std::chrono::seconds{1};
  /// How often the liveness and expiry routines look at the clock. Key
  /// `routines.timer_resolution`.
  duration timer_resolution = std::chrono::milliseconds{100};
  /// Finished runs (and their logs) older than this are deleted; 0 keeps
  /// them forever. Key `retention.finished_runs`.
  duration retention = std::chrono::hours{24 * 7};
  /// How often retention runs. Key `retention.interval`.
  duration retention_interval = std::chrono::minutes{1};
  /// Longest one retention transaction holds the writer. Key
  /// `retention.max_hold`.
  duration retention_max_hold = std::chrono::milliseconds{200};

  // -- logging --------------------------------------------------------------
  /// `error`, `warn`, `info` or `debug`. Key `log.level`.
  std::string log_level = "info";

  /// The effective database path.
  [[nodiscard]] std::string database_path() const;
};

/// Parses YAML text. Errors are `invalid_argument` with the dotted key as
/// field, e.g. `unknown key 'http.thread'` or `agents.offline_after: expected
/// a duration like 90s, 10m or 2h`.
[[nodiscard]] caf::expected<mesh_config> parse_mesh_config(const std::string& yaml_text);
/// Reads and parses a file; a missing or unreadable file is an error.
[[nodiscard]] caf::expected<mesh_config> load_mesh_config(const std::string& path);
/// Checks every key against its bounds, then the cross-field rules (e.g.
/// `delivery_lease < result_expiry`). `parse_mesh_config` calls it; call it
/// again after applying command-line overrides such as `--listen`.
[[nodiscard]] caf::error validate(const mesh_config& cfg);

/// One documented key of the table, for the example file and the docs.
struct config_key_doc {
  std::string key;
  std::string type;
  std::string default_value;
  std::string doc;
  /// Accepted values, e.g. `1..65536`, `1ms..1d` or `full, normal`.
  std::string bounds;
};
[[nodiscard]] std::vector<config_key_doc> mesh_config_keys();

/// Parses `90s`, `10m`, `2h`, `7d`, `250ms`, `0` into a duration.
[[nodiscard]] caf::expected<duration> parse_duration(const std::string& text,
                                                     const std::string& field);
/// Renders a duration in the largest exact unit (`3m`, `30s`, `100ms`).
[[nodiscard]] std::string format_duration(duration d);

} // namespace polymesh
