// The wire contract: the JSON form of every request and response of the REST
// API v1 (docs/api.md). meshd, agent-sdk and meshctl all build against this
// target, so the three cannot drift.
//
// Parsing is strict: unknown fields, wrong types and out-of-range values are
// `invalid_argument` errors naming the field; nothing throws.
//
// Thread-safety: pure functions.
#pragma once

#include "mesh/domain/records.hpp"
#include "mesh/domain/selector.hpp"

#include <caf/error.hpp>
#include <caf/expected.hpp>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace polymesh::wire {

using json = nlohmann::json;

// -- responses ----------------------------------------------------------------

[[nodiscard]] json to_json(const run_record& run);
[[nodiscard]] json to_json(const agent_record& agent);
/// A token's metadata; never the secret or its hash.
[[nodiscard]] json to_json(const token_record& token);
[[nodiscard]] json to_json(const log_chunk& chunk);
[[nodiscard]] json to_json(const artifact_record& artifact);
/// A time as RFC 3339 text, or null for none.
[[nodiscard]] json optional_time(const std::optional<timestamp>& t);
/// `{"error":{"code","message","field"?,"position"?}}`.
[[nodiscard]] json error_body(const caf::error& err);
/// Serializes without throwing on invalid UTF-8 (replaced by U+FFFD).
[[nodiscard]] std::string dump(const json& j);
/// Whether `text` is UTF-8, as a JSON string must be (the strict dump
/// throws on anything else).
[[nodiscard]] bool is_utf8(const std::string& text);

[[nodiscard]] caf::expected<run_record> run_from_json(const json& j);
/// A run's `retry`: `{"max": max, "on": [...]}` (`on` left out when empty),
/// null when `max` is 0.
[[nodiscard]] json retry_json(int64_t max, const std::string& on);
/// `retry_json`'s object back into `max` and `on` (comma separated), as a
/// run object shows it: what is not there is 0 and "", anything else null.
void read_retry_json(const json& retry, int64_t& max, std::string& on);
[[nodiscard]] caf::expected<agent_record> agent_from_json(const json& j);

// -- requests -----------------------------------------------------------------

/// How deep objects and arrays may nest in what `parse_strict` accepts.
/// Serializing JSON recurses once per level: an unbounded depth would let a
/// 200 KB body overflow a thread's stack.
constexpr int max_json_depth = 64;

/// How long a selector or a token's scope may be, as sent and as stored (in
/// canonical form, which a rerun sends back).
constexpr size_t max_selector_bytes = 4096;

/// `sel` as it is stored: in canonical form (sorted, `k in (v)`), which a
/// rerun sends back, so it is held to `max_selector_bytes` too (`in(` and
/// `notin(` grow by a space). An `invalid_argument` error on `field`
/// otherwise.
[[nodiscard]] caf::expected<std::string> canonical_selector(const selector& sel,
                                                            const std::string& field);

/// Parses JSON text, refusing what nlohmann's parser lets through: nesting
/// deeper than `max_json_depth` and a key repeated in one object (where the
/// last would win silently). Errors are `invalid_argument` without a field,
/// their messages start with `what`; a syntax error has the byte position.
[[nodiscard]] caf::expected<json> parse_strict(const std::string& text,
                                               const std::string& what = "JSON");

/// Parses a request body into a JSON object with `parse_strict`; every
/// problem, or a body that is not an object, is `invalid_argument` with
/// field `body`.
[[nodiscard]] caf::expected<json> parse_object(const std::string& body);

/// Size limits that come from configuration, checked while parsing.
struct limits {
  size_t max_payload_bytes = 256 * 1024;
  size_t max_result_bytes = 64 * 1024;
};

/// POST /v1/tokens
struct token_request {
  token_kind kind = token_kind::reader;
  std::string name;
  int64_t ttl_s = 0; ///< 0 = never expires
  std::string scope;
};
[[nodiscard]] caf::expected<token_request> parse_token_request(const json& j);

/// POST /v1/agents/register
struct register_request {
  std::string name;
  label_map labels;
  std::vector<std::string> plans;
  int64_t capacity = 1;
  std::string version;
  std::string hostname;
  /// The installation registering (optional): a registration from another
  /// installation than that of a connected agent of the same name is refused
  /// (`name_in_use`); one from the same installation, an agent restarting
  /// after a crash, supersedes the old session.
  std::string instance;
};
/// The longest `instance` accepted.
inline constexpr size_t max_instance_bytes = 64;
/// The plans one agent may offer (a registration listing more is refused).
inline constexpr size_t max_agent_plans = 1000;
/// Whether `value` is an `instance` the mesh keeps: 1 to
/// `max_instance_bytes` of letters, digits, '-' and '_'.
[[nodiscard]] bool valid_instance(const std::string& value);
[[nodiscard]] caf::expected<register_request> parse_register_request(const json& j);
[[nodiscard]] json to_json(const register_request& r);

/// PATCH /v1/agents/{id}
struct labels_patch {
  label_map labels;
};
[[nodiscard]] caf::expected<labels_patch> parse_labels_patch(const json& j);

/// POST /v1/runs
struct run_request {
  std::string plan;
  std::string selector;
  std::string agent;
  std::string params = "{}"; ///< a JSON object as text
  std::string payload;
  int64_t priority = 0;
  int64_t timeout_s = 0;
  int64_t ttl_s = 0;
  std::string idempotency_key;
  std::string concurrency_key;
  /// `retry`: `{"max": 1..10, "on": [reasons]}` (see `mesh/domain/retry.hpp`);
  /// 0 and "" when absent. `on` defaults to `default_retry_on`.
  int64_t retry_max = 0;
  std::string retry_on;
};
inline constexpr size_t max_concurrency_key_bytes = 256;
[[nodiscard]] caf::expected<run_request> parse_run_request(const json& j,
                                                           const limits& lim);
[[nodiscard]] json to_json(const run_request& r);

/// POST /v1/runs/batch: `{"runs":[run_request, ...]}`, 1 to
/// `max_batch_runs` of them. An error names the item: `runs[3].plan`.
inline constexpr size_t max_batch_runs = 1000;
[[nodiscard]] caf::expected<std::vector<run_request>> parse_run_batch(const json& j,
                                                                      const limits& lim);
/// Prefixes an error's field (and message) with `prefix`, e.g. `runs[3]`.
[[nodiscard]] caf::error within(const std::string& prefix, const caf::error& err);

/// POST /v1/runs/{id}/progress
struct progress_request {
  std::string message;
};
/// The longest progress `message`, in bytes.
inline constexpr size_t max_progress_bytes = 4096;
[[nodiscard]] caf::expected<progress_request> parse_progress_request(const json& j);

/// POST /v1/runs/{id}/logs
struct log_request {
  std::vector<log_chunk> chunks;
};
[[nodiscard]] caf::expected<log_request> parse_log_request(const json& j);
[[nodiscard]] json to_json(const log_request& r);

/// POST /v1/runs/{id}/finish
struct finish_request {
  run_status status = run_status::success;
  std::optional<int64_t> exit_code;
  std::string result;
  std::string error;
  /// Why it ended, snake_case (e.g. `agent_shutdown`); "" lets the mesh choose.
  std::string reason;
  /// Set by the report endpoint when the same report also starts the run:
  /// start and finish become one durable write. Never read from JSON.
  bool implicit_start = false;
};
[[nodiscard]] caf::expected<finish_request> parse_finish_request(const json& j,
                                                                 const limits& lim);
[[nodiscard]] json to_json(const finish_request& r);

/// POST /v1/agents/{id}/report: runs the agent started and runs it
/// finished, in one request (each list at most `max_report_items`, no id
/// twice in a list). A finished item is a finish request plus `"run"`.
struct report_request {
  std::vector<std::string> started;
  std::vector<std::pair<std::string, finish_request>> finished;
};
inline constexpr size_t max_report_items = 1000;
[[nodiscard]] caf::expected<report_request> parse_report_request(const json& j,
                                                                 const limits& lim);
[[nodiscard]] json to_json(const report_request& r);

/// The plan name rule: 1..128 chars of [A-Za-z0-9._-], alphanumeric first.
[[nodiscard]] caf::error validate_plan_name(const std::string& plan,
                                            const std::string& field);
/// The artifact name rule: 1..200 chars of `/`-separated segments, each of
/// [A-Za-z0-9._-] and not starting with '.' (no hidden files, no `..`).
[[nodiscard]] caf::error validate_artifact_name(const std::string& name,
                                                const std::string& field);
/// Why `name` breaks the artifact name rule ("must be 1 to 200 characters"),
/// or "": for a caller that shows the name itself, escaped.
[[nodiscard]] std::string artifact_name_problem(const std::string& name);
/// The agent name rule: like a label value, 1..63 chars.
[[nodiscard]] caf::error validate_agent_name(const std::string& name,
                                             const std::string& field);
/// What a registration's name, version and hostname must be, beyond their
/// JSON types: the name rule, no agent-id prefix, a printable version, a
/// printable hostname of at most 255 bytes. The mesh checks it on
/// registration, and an agent before it registers.
[[nodiscard]] caf::error validate_agent_identity(const std::string& name,
                                                 const std::string& version,
                                                 const std::string& hostname);
/// An error when `value` holds a control character (C0, DEL or C1: a NUL, a
/// newline, an escape sequence): names and keys are shown in listings and
/// terminals.
[[nodiscard]] caf::error printable(const std::string& value, const char* field);
/// The first `n` bytes of `s` with anything but printable ASCII as `?`, to
/// quote a refused value in an error.
[[nodiscard]] std::string printable_prefix(const std::string& s, size_t n);

} // namespace polymesh::wire
