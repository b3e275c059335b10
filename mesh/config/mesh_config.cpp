// meshd's configuration. Every key is declared once, in `key_table()`, with
// its type, bounds, doc and the member it lives in; parsing, `validate` and
// `mesh_config_keys()` all walk that table, so a key cannot be parsed without
// being bounded and documented. Defaults are the member initializers of
// `mesh_config`, read back through the table rather than repeated in it.
#include "mesh/config/mesh_config.hpp"

#include "mesh/config/yaml_guard.hpp"
#include "mesh/domain/error.hpp"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <optional>
#include <regex>
#include <sstream>
#include <variant>
#include <yaml-cpp/yaml.h>

namespace polymesh {

namespace {

using namespace std::chrono_literals;

constexpr int64_t kib = 1024;
constexpr int64_t mib = 1024 * kib;
constexpr int64_t gib = 1024 * mib;

constexpr int64_t ms_per_second = 1000;
constexpr int64_t ms_per_minute = 60 * ms_per_second;
constexpr int64_t ms_per_hour = 60 * ms_per_minute;
constexpr int64_t ms_per_day = 24 * ms_per_hour;

enum class value_kind { address, path, integer, duration, choice };

using member_ptr = std::variant<std::string mesh_config::*, int64_t mesh_config::*,
                                duration mesh_config::*>;

struct key_spec {
  std::string key;
  value_kind kind = value_kind::path;
  member_ptr member;
  std::string doc;
  /// Inclusive bounds: the value of an integer, milliseconds of a duration.
  int64_t min = 0;
  int64_t max = 0;
  /// A duration must be a multiple of this many milliseconds.
  int64_t step = 1;
  /// Integers counting bytes also show their bounds in KiB/MiB/GiB.
  bool bytes = false;
  /// Paths only: whether "" is a meaningful value.
  bool allow_empty = false;
  std::vector<std::string> choices;
};

key_spec make_spec(std::string key, value_kind kind, member_ptr member, std::string doc) {
  key_spec spec;
  spec.key = std::move(key);
  spec.kind = kind;
  spec.member = member;
  spec.doc = std::move(doc);
  return spec;
}

key_spec address_key(std::string key, std::string mesh_config::*member, std::string doc) {
  return make_spec(std::move(key), value_kind::address, member, std::move(doc));
}

key_spec path_key(std::string key, std::string mesh_config::*member, bool allow_empty,
                  std::string doc) {
  auto spec = make_spec(std::move(key), value_kind::path, member, std::move(doc));
  spec.allow_empty = allow_empty;
  return spec;
}

key_spec integer_key(std::string key, int64_t mesh_config::*member, int64_t min,
                     int64_t max, std::string doc) {
  auto spec = make_spec(std::move(key), value_kind::integer, member, std::move(doc));
  spec.min = min;
  spec.max = max;
  return spec;
}

key_spec bytes_key(std::string key, int64_t mesh_config::*member, int64_t min,
                   int64_t max, std::string doc) {
  auto spec = integer_key(std::move(key), member, min, max, std::move(doc));
  spec.bytes = true;
  return spec;
}

key_spec duration_key(std::string key, duration mesh_config::*member, duration min,
                      duration max, std::string doc, duration step = 1ms) {
  auto spec = make_spec(std::move(key), value_kind::duration, member, std::move(doc));
  spec.min = min.count();
  spec.max = max.count();
  spec.step = step.count();
  return spec;
}

key_spec choice_key(std::string key, std::string mesh_config::*member,
                    std::vector<std::string> choices, std::string doc) {
  auto spec = make_spec(std::move(key), value_kind::choice, member, std::move(doc));
  spec.choices = std::move(choices);
  return spec;
}

// The one table. Keys of a section must stay adjacent: the example file and
// the docs render sections in table order.
const std::vector<key_spec>& key_table() {
  static const std::vector<key_spec> table = {
      address_key("listen", &mesh_config::listen,
                  "HOST:PORT to listen on; port 0 picks a free port. IPv6 hosts go in "
                  "brackets, and the value in quotes (YAML reads [ as a list): "
                  "listen: \"[::1]:7700\". Not used when systemd passes meshd its "
                  "socket (socket activation: docs/operations.md, systemd)."),
      path_key("data_dir", &mesh_config::data_dir, false,
               "Directory for the database and admin.token."),

      integer_key("http.threads", &mesh_config::http_threads, 1, 65536,
                  "Worker threads; each open connection and each long-poll holds one."),
      integer_key("http.run_waits", &mesh_config::run_waits, 0, 65536,
                  "Clients that may wait on a run at once (`?wait=S` on `POST /v1/runs` "
                  "and `GET /v1/runs/{id}`), on worker threads added to http.threads "
                  "for them, so that they never take agents' places; a wait beyond "
                  "that is answered at once with the run as it is. 0: every such "
                  "wait is answered at once."),
      bytes_key("http.max_body_bytes", &mesh_config::max_body_bytes, kib, gib,
                "Largest accepted request body, in bytes."),
      duration_key("http.keep_alive_timeout", &mesh_config::keep_alive_timeout, 1s, 1h,
                   "Idle keep-alive connections are closed after this. Whole seconds "
                   "only: the HTTP library counts this timeout in seconds.",
                   1s),
      integer_key("http.keep_alive_max_requests", &mesh_config::keep_alive_max_requests,
                  1, 1000000,
                  "Requests served on one keep-alive connection before meshd closes "
                  "it. A connection holds a worker thread while it is open, so busy "
                  "clients take turns for the workers at this interval; each "
                  "reconnect costs a TCP handshake."),
      duration_key("http.read_timeout", &mesh_config::read_timeout, 1s, 1h,
                   "Longest wait for more bytes of a request being read (each wait, not "
                   "the whole request: a slow but steady sender is not cut off). Whole "
                   "seconds only: meshd applies it in seconds.",
                   1s),
      duration_key("http.write_timeout", &mesh_config::write_timeout, 1s, 1h,
                   "Longest wait for a client to take more of an answer (each wait, not "
                   "the whole answer). meshd writes again once half the connection's "
                   "send buffer (up to 2 MiB on Linux) is free, so a client reading an "
                   "artifact or a long log slower than that per wait is cut off, the "
                   "answer short of its Content-Length. A rate-limited client (curl "
                   "--limit-rate) reads the socket buffers (up to about 13 MB) at once "
                   "and then pauses for their size over its rate: 130 s at 100 KB/s. "
                   "Each waiting client holds an HTTP worker. Whole seconds only.",
                   1s),
      duration_key("http.stop_grace", &mesh_config::stop_grace, 0ms, 1h,
                   "When meshd stops, how long requests in progress may take to "
                   "finish (long-polls are answered at once). Connections still open "
                   "after it are cut, idle keep-alive ones too: an upload still being "
                   "received is not stored (its sender sends it again to the restarted "
                   "mesh), a download ends short of its length. A request waiting on "
                   "the store, or a download reading its next part from it, holds the "
                   "stop until the store answers (30 s at most): a stop takes up to "
                   "this plus 30 s. A second SIGTERM cuts the connections at once."),

      path_key("store.path", &mesh_config::store_path, true,
               "SQLite database file; empty means data_dir/mesh.db. A relative path is "
               "relative to meshd's working directory. Not ':memory:' (it would keep "
               "nothing)."),
      choice_key("store.synchronous", &mesh_config::store_synchronous, {"full", "normal"},
                 "full fsyncs each group commit and survives power loss; normal "
                 "survives process crashes only."),
      choice_key("store.secure_delete", &mesh_config::store_secure_delete,
                 {"fast", "full"},
                 "What the database file keeps of deleted runs (pruned by retention, "
                 "with their logs and artifacts). fast: content on pages that are "
                 "written anyway is zeroed, pages freed whole keep their old bytes "
                 "until SQLite reuses them. full: every freed page is zeroed too, which "
                 "writes each pruned byte again (into the WAL first): a retention pass "
                 "over runs with long logs takes about ten times as long, holding "
                 "every other write back, and the WAL grows to the size of what it "
                 "pruned."),
      integer_key("store.group_commit_max", &mesh_config::group_commit_max, 1, 1 << 20,
                  "Largest number of writes committed in one transaction."),

      choice_key("actors.scheduler", &mesh_config::actor_scheduler,
                 {"sharing", "stealing"},
                 "How CAF runs meshd's actors. sharing: one queue, idle workers "
                 "block, so an idle mesh uses no CPU. stealing: a queue per worker "
                 "that idle workers poll (CAF's default), which costs CPU when idle "
                 "(5 to 17 % of a core measured on 2 cores, more when other "
                 "processes compete) and pays off only with many cores."),

      duration_key("agents.offline_after", &mesh_config::offline_after, 1ms, 24h,
                   "An agent not heard from for this long is offline (counted from "
                   "meshd's start, or the end of a stall, at the earliest). Must exceed "
                   "agents.poll_wait_max and agents.heartbeat_interval."),
      duration_key("agents.token_ttl", &mesh_config::agent_token_ttl, 1min, 365 * 24h,
                   "Lifetime of an agent access token. Agents renew it at two thirds of "
                   "its life; one that cannot reach a running mesh until it expires "
                   "registers again, and the mesh ends the old session's runs. A token "
                   "that expires while meshd is down or does not run (stopped, its "
                   "host suspended) is honoured for agents.offline_after from when "
                   "it runs again (operations.md, Upgrading)."),
      duration_key("agents.poll_wait_max", &mesh_config::poll_wait_max, 0ms, 1h,
                   "Longest long-poll wait granted, to agents' polls and to clients' "
                   "waits for a run (`?wait=S` on `POST /v1/runs` and "
                   "`GET /v1/runs/{id}`); 0 makes every poll and wait return at once. "
                   "Whole seconds only: the protocol counts the wait in seconds.",
                   1s),
      duration_key("agents.heartbeat_interval", &mesh_config::heartbeat_interval, 1s, 24h,
                   "How often agents are told to send a request when idle, and to "
                   "report each running run's progress (mesh-agent does; that "
                   "heartbeat keeps a long, quiet run from ending error/expired). Must "
                   "be shorter than agents.offline_after and at most half of "
                   "runs.result_expiry. Whole seconds only: agents are told it in "
                   "seconds.",
                   1s),
      duration_key("agents.forget_after", &mesh_config::forget_after, 0ms, 3650 * 24h,
                   "An agent offline or deregistered for this long (since it was last "
                   "heard from) is forgotten, at the next of meshd's once-a-minute "
                   "checks: it leaves listings and metrics, its tokens are revoked, "
                   "its name is free and its row is deleted. "
                   "Its runs keep its id. 0 keeps agents for ever. A deregistered "
                   "agent leaves listings at meshd's next start already; its row "
                   "keeps its name for its scope until then. Must exceed "
                   "agents.offline_after."),
      duration_key("agents.hold_back_max", &mesh_config::hold_back_max, 0ms, 24h,
                   "An agent that was placed a run and did not start it within "
                   "runs.delivery_lease (it did not poll, or polled and never "
                   "started it) is held back: no run is placed with it for "
                   "runs.delivery_lease, twice that after its next hold in a row, "
                   "and so on, at most this long. A run it starts or reports the end "
                   "of, its next registration or its deregistration ends the hold "
                   "and the row; a restart of meshd forgets them. Runs it holds already "
                   "stay with it. 0 never "
                   "holds an agent back."),

      duration_key(
          "runs.delivery_lease", &mesh_config::delivery_lease, 1ms, 24h,
          "A delivered run not started within this goes back to the queue, and so "
          "does an assigned run no poll carried within this of its assignment. "
          "Must be shorter than runs.result_expiry."),
      duration_key("runs.result_expiry", &mesh_config::result_expiry, 2s, 30 * 24h,
                   "A sent run with no start, progress or result for this long ends "
                   "error/expired (counted from meshd's start, or the end of a stall, "
                   "at the earliest: an outage does not count). Must exceed "
                   "runs.delivery_lease and be at least twice "
                   "agents.heartbeat_interval."),
      duration_key("runs.cancel_grace", &mesh_config::cancel_grace, 0ms, 24h,
                   "After a cancel (a user's, or a timeout's) the agent is told to "
                   "stop; if it has not reported within this grace the run ends anyway: "
                   "canceled/canceled_by_user, or error/timeout. 0 ends it at the next "
                   "timer tick (routines.timer_resolution), answering the cancel first."),
      bytes_key("runs.max_result_bytes", &mesh_config::max_result_bytes, 0, gib,
                "Largest result text accepted from an agent, in bytes. Must be smaller "
                "than http.max_body_bytes."),
      bytes_key("runs.max_payload_bytes", &mesh_config::max_payload_bytes, 0, gib,
                "Largest payload accepted at submit, in bytes. Must be smaller than "
                "http.max_body_bytes."),
      bytes_key("runs.max_artifact_bytes", &mesh_config::max_artifact_bytes, 0, 512 * mib,
                "Largest artifact an agent may upload, in bytes (at most 512 MiB: "
                "artifacts are stored in the database). Artifacts are PUT as raw "
                "bodies, so http.max_body_bytes does not apply to them; an upload is "
                "received into an unlinked file in the database's directory and "
                "stored from it 1 MiB at a time (that directory needs free space of "
                "about twice the size of each upload in progress, the file and then "
                "the database's log, and room for the database to grow as its log is "
                "copied into it; an upload with a Content-Length that does not fit is "
                "refused before it is stored)."),
      integer_key("runs.max_artifacts", &mesh_config::max_artifacts, 0, 100000,
                  "Most artifacts one run may hold; 0 refuses every upload."),
      bytes_key("runs.max_log_bytes", &mesh_config::max_log_bytes, 0, 1024 * gib,
                "Most log bytes one run may hold, over all its chunks; a log request "
                "that would pass it is refused (413) and stores nothing. 0 = no "
                "limit. mesh-agent stops its output 4 KiB below it (half of a limit "
                "under 8 KiB), room for its notes on what it dropped (its own "
                "logs.max_run_bytes, 100 MiB by default, is the lower of the two); "
                "under about 400 bytes a note does not fit, and the request that "
                "carries it is refused with the output in it."),

      duration_key("routines.assignment_sweep", &mesh_config::assignment_sweep, 1ms, 1h,
                   "How often the assignment routine sweeps the queue as a safety net."),
      duration_key("routines.timer_resolution", &mesh_config::timer_resolution, 1ms, 1s,
                   "How often the liveness and expiry routines look at the clock. Must "
                   "be shorter than runs.delivery_lease."),

      duration_key("retention.finished_runs", &mesh_config::retention, 0ms, 3650 * 24h,
                   "Finished runs (and their logs) older than this are deleted, and so "
                   "are agent access tokens expired or revoked that long ago (other "
                   "tokens expired that long ago leave memory, not the history); 0 "
                   "keeps them forever."),
      duration_key("retention.interval", &mesh_config::retention_interval, 1s, 24h,
                   "How often retention runs."),
      duration_key("retention.max_hold", &mesh_config::retention_max_hold, 0ms, 10s,
                   "Longest one retention transaction holds every other write back: "
                   "once this has passed it commits the runs it deleted and goes on at "
                   "once in another (runs with long logs free about 1.4 GiB a second). "
                   "0 deletes one run per transaction."),

      choice_key("log.level", &mesh_config::log_level, {"error", "warn", "info", "debug"},
                 "Log verbosity."),
  };
  return table;
}

// -- rendering --------------------------------------------------------------

std::string in_quotes(const std::string& text) {
  return "'" + text + "'";
}

std::string join(const std::vector<std::string>& items, const char* separator) {
  std::string out;
  for (const auto& item : items) {
    if (!out.empty()) out += separator;
    out += item;
  }
  return out;
}

std::string human_bytes(int64_t n) {
  if (n > 0 && n % gib == 0) return std::to_string(n / gib) + " GiB";
  if (n > 0 && n % mib == 0) return std::to_string(n / mib) + " MiB";
  if (n > 0 && n % kib == 0) return std::to_string(n / kib) + " KiB";
  return std::to_string(n);
}

const char* type_name(value_kind kind) {
  switch (kind) {
  case value_kind::address: return "address";
  case value_kind::path: return "path";
  case value_kind::integer: return "integer";
  case value_kind::duration: return "duration";
  case value_kind::choice: return "enum";
  }
  return "?";
}

std::string bounds_text(const key_spec& spec) {
  switch (spec.kind) {
  case value_kind::address: return "HOST:PORT, port 0..65535";
  case value_kind::path: return spec.allow_empty ? "any, may be empty" : "non-empty";
  case value_kind::integer: {
    auto out = std::to_string(spec.min) + ".." + std::to_string(spec.max);
    if (spec.bytes)
      out += " (" + human_bytes(spec.min) + ".." + human_bytes(spec.max) + ")";
    return out;
  }
  case value_kind::duration: {
    auto out =
        format_duration(duration{spec.min}) + ".." + format_duration(duration{spec.max});
    if (spec.step == ms_per_second) out += ", whole seconds";
    return out;
  }
  case value_kind::choice: return join(spec.choices, ", ");
  }
  return {};
}

/// What a value of this key must look like, for error messages.
std::string expectation(const key_spec& spec) {
  switch (spec.kind) {
  case value_kind::address: return "HOST:PORT with a port in 0..65535";
  case value_kind::path: return spec.allow_empty ? "a path" : "a non-empty path";
  case value_kind::integer:
    return "an integer in " + std::to_string(spec.min) + ".." + std::to_string(spec.max);
  case value_kind::duration:
    return std::string{spec.step == ms_per_second ? "whole seconds" : "a duration"} +
           " in " + format_duration(duration{spec.min}) + ".." +
           format_duration(duration{spec.max});
  case value_kind::choice: return "one of " + join(spec.choices, ", ");
  }
  return {};
}

/// The current value of the key in `cfg`, as it would be written in YAML.
std::string value_text(const key_spec& spec, const mesh_config& cfg) {
  return std::visit(
      [&](auto member) -> std::string {
        const auto& value = cfg.*member;
        using value_type = std::decay_t<decltype(value)>;
        if constexpr (std::is_same_v<value_type, std::string>)
          return value;
        else if constexpr (std::is_same_v<value_type, int64_t>)
          return std::to_string(value);
        else
          return format_duration(value);
      },
      spec.member);
}

// -- checks ------------------------------------------------------------------

caf::error key_error(const std::string& key, const std::string& expected,
                     const std::string& got, int64_t position = -1) {
  return make_error(errc::invalid_argument,
                    key + ": expected " + expected + ", got " + got, key, position);
}

caf::error with_position(const caf::error& err, int64_t position) {
  if (!err || position < 0) return err;
  return make_error(code_of(err), message_of(err), field_of(err), position);
}

bool all_digits(const std::string& text) {
  if (text.empty()) return false;
  for (auto c : text)
    if (c < '0' || c > '9') return false;
  return true;
}

bool is_valid_address(const std::string& text) {
  auto colon = text.rfind(':');
  if (colon == std::string::npos) return false;
  auto host = text.substr(0, colon);
  auto port = text.substr(colon + 1);
  if (host.empty()) return false;
  for (auto c : host)
    if (c == ' ' || c == '\t' || c == '/') return false;
  if (host.front() == '[') {
    if (host.size() < 3 || host.back() != ']' ||
        host.find_first_of("[]", 1) != host.size() - 1)
      return false;
  } else if (host.find_first_of(":[]") != std::string::npos) {
    // An unbracketed IPv6 host would make the port ambiguous.
    return false;
  }
  if (!all_digits(port) || port.size() > 5 || (port.size() > 1 && port[0] == '0'))
    return false;
  return std::stoi(port) <= 65535;
}

/// Checks the key's current value in `cfg` against its bounds.
caf::error check_value(const key_spec& spec, const mesh_config& cfg) {
  auto got = [&] {
    auto text = value_text(spec, cfg);
    return spec.kind == value_kind::integer || spec.kind == value_kind::duration
               ? text
               : in_quotes(text);
  };
  switch (spec.kind) {
  case value_kind::address: {
    if (!is_valid_address(cfg.*std::get<std::string mesh_config::*>(spec.member)))
      return key_error(spec.key, expectation(spec), got());
    return {};
  }
  case value_kind::path: {
    const auto& value = cfg.*std::get<std::string mesh_config::*>(spec.member);
    if (!spec.allow_empty && value.empty())
      return key_error(spec.key, expectation(spec), "an empty string");
    // SQLite reads this name as a database in memory: nothing acknowledged
    // would outlive the process. "./:memory:" names a file.
    if (spec.key == "store.path" && value == ":memory:")
      return make_error(errc::invalid_argument,
                        "store.path: ':memory:' is SQLite's database in memory, which "
                        "keeps nothing when meshd stops; give a file ('./:memory:' for a "
                        "file of that name)",
                        spec.key);
    // A path that ends in '/' (or '/.', '/..') names a directory: the start
    // would fail on it, and leave a directory with a lock file behind.
    if (spec.key == "store.path" && !value.empty()) {
      std::filesystem::path p{value};
      auto last = p.filename().string();
      if (last.empty() || last == "." || last == "..")
        return make_error(errc::invalid_argument,
                          "store.path: '" + value +
                              "' names a directory; give the database file's path "
                              "(e.g. " +
                              (last.empty() ? value : value + "/") + "mesh.db)",
                          spec.key);
    }
    return {};
  }
  case value_kind::integer: {
    auto value = cfg.*std::get<int64_t mesh_config::*>(spec.member);
    if (value < spec.min || value > spec.max)
      return key_error(spec.key, expectation(spec), got());
    return {};
  }
  case value_kind::duration: {
    auto value = (cfg.*std::get<duration mesh_config::*>(spec.member)).count();
    if (value < spec.min || value > spec.max || value % spec.step != 0)
      return key_error(spec.key, expectation(spec), got());
    return {};
  }
  case value_kind::choice: {
    const auto& value = cfg.*std::get<std::string mesh_config::*>(spec.member);
    for (const auto& choice : spec.choices)
      if (value == choice) return {};
    return key_error(spec.key, expectation(spec), got());
  }
  }
  return {};
}

caf::error must_be_shorter(const std::string& key, duration value,
                           const std::string& other_key, duration other) {
  if (value < other) return {};
  return make_error(errc::invalid_argument,
                    key + " (" + format_duration(value) + ") must be shorter than " +
                        other_key + " (" + format_duration(other) + ")",
                    key);
}

caf::error must_be_smaller(const std::string& key, int64_t value,
                           const std::string& other_key, int64_t other) {
  if (value < other) return {};
  return make_error(errc::invalid_argument,
                    key + " (" + std::to_string(value) + ") must be smaller than " +
                        other_key + " (" + std::to_string(other) + ")",
                    key);
}

// -- YAML --------------------------------------------------------------------

int64_t position_in_text(const YAML::Node& node) {
  auto mark = node.Mark();
  return mark.is_null() ? -1 : static_cast<int64_t>(mark.pos);
}

/// Added to what an unquoted IPv6 address gives: YAML reads its `[` as the
/// start of a list.
constexpr const char* ipv6_hint =
    " (an IPv6 host in brackets must be quoted, as YAML reads [ as a list: "
    "listen: \"[::1]:7700\")";

std::string describe(const YAML::Node& node) {
  switch (node.Type()) {
  case YAML::NodeType::Null: return "an empty value";
  case YAML::NodeType::Map: return "a map";
  case YAML::NodeType::Sequence: return "a sequence";
  case YAML::NodeType::Scalar: return in_quotes(node.Scalar());
  case YAML::NodeType::Undefined: break;
  }
  return "nothing";
}

/// Tags yaml-cpp reports for an untagged plain scalar and a quoted one.
constexpr const char* plain_tag = "?";
constexpr const char* quoted_tag = "!";
constexpr const char* str_tag = "tag:yaml.org,2002:str";

/// YAML 1.1 reads these plain scalars as booleans; taking them as text would
/// hide a mistake such as `data_dir: yes`.
bool looks_boolean(const std::string& text) {
  static const char* const words[] = {
      "y",    "Y",    "yes",   "Yes",   "YES",   "n",  "N",  "no", "No",  "NO",  "true",
      "True", "TRUE", "false", "False", "FALSE", "on", "On", "ON", "off", "Off", "OFF"};
  for (const auto* word : words)
    if (text == word) return true;
  return false;
}

/// Parses a plain decimal integer. Leading zeros are refused because YAML
/// reads `010` as octal 8; refusing beats guessing which one was meant.
std::optional<int64_t> parse_integer(const std::string& text, std::string& reason) {
  auto digits = text;
  bool negative = false;
  if (!digits.empty() && digits[0] == '-') {
    negative = true;
    digits.erase(0, 1);
  }
  if (!all_digits(digits)) return std::nullopt;
  if (digits.size() > 1 && digits[0] == '0') {
    reason = " (leading zeros are not allowed: YAML reads them as octal)";
    return std::nullopt;
  }
  int64_t value = 0;
  for (auto c : digits) {
    auto digit = c - '0';
    if (value > (std::numeric_limits<int64_t>::max() - digit) / 10) {
      reason = " (out of range)";
      return std::nullopt;
    }
    value = value * 10 + digit;
  }
  return negative ? -value : value;
}

/// Reads one scalar key from `node` into `cfg` and checks its bounds; an
/// error points at the value, or at the key (`key_position`) when the value
/// was left empty (yaml-cpp marks an empty value where the next line starts).
caf::error read_key(const key_spec& spec, const YAML::Node& node, mesh_config& cfg,
                    int64_t key_position) {
  auto position = node.IsNull() ? key_position : position_in_text(node);
  if (!node.IsScalar())
    return key_error(
        spec.key, expectation(spec),
        describe(node) +
            (spec.kind == value_kind::address && node.IsSequence() ? ipv6_hint : ""),
        position);
  const auto& text = node.Scalar();
  const auto& tag = node.Tag();
  bool plain = tag == plain_tag;
  if (!plain && tag != quoted_tag && tag != str_tag)
    return key_error(spec.key, expectation(spec), "a value tagged " + tag, position);
  switch (spec.kind) {
  case value_kind::path:
    if (plain && looks_boolean(text))
      return key_error(spec.key, expectation(spec),
                       in_quotes(text) + ", which YAML reads as a boolean (quote it if "
                                         "it is meant as text)",
                       position);
    cfg.*std::get<std::string mesh_config::*>(spec.member) = text;
    break;
  case value_kind::address:
  case value_kind::choice:
    // A boolean-looking `on` simply is not a valid choice or address.
    cfg.*std::get<std::string mesh_config::*>(spec.member) = text;
    break;
  case value_kind::integer: {
    if (!plain)
      return key_error(spec.key, expectation(spec), "the string " + in_quotes(text),
                       position);
    std::string reason;
    auto value = parse_integer(text, reason);
    if (!value)
      return key_error(spec.key, expectation(spec), in_quotes(text) + reason, position);
    cfg.*std::get<int64_t mesh_config::*>(spec.member) = *value;
    break;
  }
  case value_kind::duration: {
    auto value = parse_duration(text, spec.key);
    if (!value) return with_position(value.error(), position);
    cfg.*std::get<duration mesh_config::*>(spec.member) = *value;
    break;
  }
  }
  return with_position(check_value(spec, cfg), position);
}

const key_spec* find_spec(const std::string& key) {
  for (const auto& spec : key_table())
    if (spec.key == key) return &spec;
  return nullptr;
}

bool is_section(const std::string& name) {
  auto prefix = name + ".";
  for (const auto& spec : key_table())
    if (spec.key.compare(0, prefix.size(), prefix) == 0) return true;
  return false;
}

/// Walks one map level. `section` is "" at the top and e.g. "http" below it;
/// `positions` remembers where each key was so that cross-field errors from
/// `validate` can point into the text too.
caf::error read_map(const YAML::Node& map, const std::string& section, mesh_config& cfg,
                    std::map<std::string, int64_t>& positions) {
  for (auto entry : map) {
    const auto& key_node = entry.first;
    if (!key_node.IsScalar())
      return make_error(errc::invalid_argument,
                        (section.empty() ? std::string{} : section + ": ") +
                            "expected a key name, got " + describe(key_node),
                        section, position_in_text(key_node));
    auto key = section.empty() ? key_node.Scalar() : section + "." + key_node.Scalar();
    auto key_position = position_in_text(key_node);
    if (!positions.emplace(key, key_position).second)
      return make_error(errc::invalid_argument, "duplicate key " + in_quotes(key), key,
                        key_position);
    const auto& value = entry.second;
    if (const auto* spec = find_spec(key);
        spec != nullptr && section.empty() == (key.find('.') == std::string::npos)) {
      if (auto err = read_key(*spec, value, cfg, key_position)) return err;
      continue;
    }
    if (section.empty() && is_section(key)) {
      // A section left empty (`http:`) keeps its defaults.
      if (value.IsNull()) continue;
      if (!value.IsMap())
        return make_error(errc::invalid_argument,
                          key + ": expected a map of keys, got " + describe(value), key,
                          position_in_text(value));
      if (auto err = read_map(value, key, cfg, positions)) return err;
      continue;
    }
    if (section.empty() && find_spec(key) != nullptr) {
      // `http.threads: 8` at the top level: known key, wrong layout.
      auto dot = key.find('.');
      return make_error(errc::invalid_argument,
                        "key " + in_quotes(key) + " must be nested: write " +
                            in_quotes(key.substr(dot + 1)) + " under " +
                            in_quotes(key.substr(0, dot) + ":"),
                        key, key_position);
    }
    return make_error(errc::invalid_argument, "unknown key " + in_quotes(key), key,
                      key_position);
  }
  return {};
}

/// Line `n` (from 0) of `text`.
std::string line_of(const std::string& text, int n) {
  size_t start = 0;
  for (int i = 0; i < n && start != std::string::npos; ++i) {
    start = text.find('\n', start);
    if (start != std::string::npos) ++start;
  }
  if (start == std::string::npos || start > text.size()) return {};
  return text.substr(start, text.find('\n', start) - start);
}

/// Whether `line` gives a key an unquoted bracketed host with a port
/// (`listen: [::1]:7700`), which YAML takes for a list and then fails on.
bool unquoted_ipv6_address(const std::string& line) {
  static const std::regex pattern{R"(^\s*[A-Za-z_.]+\s*:\s*\[[^\]'"]*\]:)"};
  return std::regex_search(line, pattern);
}

caf::error yaml_error(const YAML::Exception& ex, const std::string& yaml_text) {
  if (ex.mark.is_null())
    return make_error(errc::invalid_argument, "invalid YAML: " + ex.msg);
  return make_error(
      errc::invalid_argument,
      "invalid YAML at line " + std::to_string(ex.mark.line + 1) + ", column " +
          std::to_string(ex.mark.column + 1) + ": " + ex.msg +
          (unquoted_ipv6_address(line_of(yaml_text, ex.mark.line)) ? ipv6_hint : ""),
      std::string{}, ex.mark.pos);
}

} // namespace

std::string mesh_config::database_path() const {
  if (!store_path.empty()) return store_path;
  return (std::filesystem::path{data_dir} / "mesh.db").string();
}

caf::expected<mesh_config> parse_mesh_config(const std::string& yaml_text) {
  mesh_config cfg;
  std::map<std::string, int64_t> positions;
  try {
    auto documents = load_all_documents(yaml_text);
    if (documents.size() > 1)
      return make_error(errc::invalid_argument,
                        "expected one YAML document, got " +
                            std::to_string(documents.size()),
                        std::string{}, position_in_text(documents[1]));
    // An empty file (or one with only comments) means all defaults.
    if (!documents.empty() && !documents[0].IsNull()) {
      const auto& root = documents[0];
      if (!root.IsMap())
        return make_error(errc::invalid_argument,
                          "expected a map of keys at the top level, got " +
                              describe(root),
                          std::string{}, position_in_text(root));
      if (auto err = read_map(root, std::string{}, cfg, positions)) return err;
    }
  } catch (const YAML::Exception& ex) {
    return yaml_error(ex, yaml_text);
  }
  if (auto err = validate(cfg)) {
    // A rule between two keys is broken by the one the file sets; the
    // other may be at its default, which the message then says.
    auto found = positions.find(field_of(err));
    if (found != positions.end()) return with_position(err, found->second);
    auto message = message_of(err);
    for (auto& [key, position] : positions)
      if (message.find(key + " (") != std::string::npos)
        return make_error(code_of(err),
                          message + " (" + field_of(err) + " is at its default)", key,
                          position);
    return err;
  }
  return cfg;
}

caf::expected<mesh_config> load_mesh_config(const std::string& path) {
  auto cannot_read = [&](const std::string& why) {
    return make_error(errc::invalid_argument,
                      "cannot read config file " + in_quotes(path) + ": " + why);
  };
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) return cannot_read("is a directory");
  std::ifstream in{path, std::ios::binary};
  if (!in) return cannot_read(std::strerror(errno));
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) return cannot_read(std::strerror(errno));
  auto cfg = parse_mesh_config(text.str());
  if (!cfg) {
    // Name the file so that an operator with several configs knows which
    // one, and the line (`FILE:LINE:`, as compilers do) where the key or
    // value is; YAML's own syntax errors name line and column already.
    const auto& err = cfg.error();
    auto where = path;
    auto position = position_of(err);
    auto message = message_of(err);
    if (position >= 0 && message.find("line ") == std::string::npos) {
      auto all = text.str();
      auto upto =
          all.substr(0, std::min<size_t>(static_cast<size_t>(position), all.size()));
      where += ":" + std::to_string(std::count(upto.begin(), upto.end(), '\n') + 1);
    }
    return make_error(code_of(err), where + ": " + message, field_of(err), position);
  }
  return cfg;
}

caf::error validate(const mesh_config& cfg) {
  for (const auto& spec : key_table())
    if (auto err = check_value(spec, cfg)) return err;
  // A lease that outlives the expiry would expire runs that were never late.
  if (auto err = must_be_shorter("runs.delivery_lease", cfg.delivery_lease,
                                 "runs.result_expiry", cfg.result_expiry))
    return err;
  // The timer routines cannot enforce a lease finer than they look.
  if (auto err = must_be_shorter("routines.timer_resolution", cfg.timer_resolution,
                                 "runs.delivery_lease", cfg.delivery_lease))
    return err;
  // An agent waiting in a long-poll, or idling between heartbeats, must not
  // look offline meanwhile.
  if (auto err = must_be_shorter("agents.poll_wait_max", cfg.poll_wait_max,
                                 "agents.offline_after", cfg.offline_after))
    return err;
  if (auto err = must_be_shorter("agents.heartbeat_interval", cfg.heartbeat_interval,
                                 "agents.offline_after", cfg.offline_after))
    return err;
  // mesh-agent sends a running run's progress at this interval too: that is
  // what keeps a long, quiet run from ending error/expired, and one late
  // report (a flush, a retry) must not end it.
  if (cfg.heartbeat_interval * 2 > cfg.result_expiry)
    return make_error(errc::invalid_argument,
                      "agents.heartbeat_interval (" +
                          format_duration(cfg.heartbeat_interval) +
                          ") must be at most half of runs.result_expiry (" +
                          format_duration(cfg.result_expiry) +
                          "): mesh-agent reports a running run's progress at this "
                          "interval, and one late report must not end the run",
                      "agents.heartbeat_interval");
  // An agent is offline before it can be forgotten.
  if (cfg.forget_after.count() > 0)
    if (auto err = must_be_shorter("agents.offline_after", cfg.offline_after,
                                   "agents.forget_after", cfg.forget_after))
      return err;
  // Results and payloads arrive inside a JSON body, so a limit at or above the
  // body limit could never be reached.
  if (auto err = must_be_smaller("runs.max_result_bytes", cfg.max_result_bytes,
                                 "http.max_body_bytes", cfg.max_body_bytes))
    return err;
  if (auto err = must_be_smaller("runs.max_payload_bytes", cfg.max_payload_bytes,
                                 "http.max_body_bytes", cfg.max_body_bytes))
    return err;
  return {};
}

std::vector<config_key_doc> mesh_config_keys() {
  const mesh_config defaults;
  std::vector<config_key_doc> out;
  out.reserve(key_table().size());
  for (const auto& spec : key_table())
    out.push_back(config_key_doc{spec.key, type_name(spec.kind),
                                 value_text(spec, defaults), spec.doc,
                                 bounds_text(spec)});
  return out;
}

caf::expected<duration> parse_duration(const std::string& text,
                                       const std::string& field) {
  auto fail = [&](const std::string& reason = {}) {
    return make_error(
        errc::invalid_argument,
        (field.empty() ? std::string{} : field + ": ") +
            "expected a duration like 90s, 10m or 2h (units ms, s, m, h, d), "
            "got " +
            in_quotes(text) + reason,
        field);
  };
  if (text == "0") return duration{0};
  if (!text.empty() && text[0] == '-') return fail(" (durations cannot be negative)");
  size_t digits_end = 0;
  while (digits_end < text.size() && text[digits_end] >= '0' && text[digits_end] <= '9')
    ++digits_end;
  auto digits = text.substr(0, digits_end);
  auto unit = text.substr(digits_end);
  if (digits.empty()) return fail();
  if (unit.empty()) return fail(" (a unit is required unless the value is 0)");
  int64_t unit_ms = 0;
  if (unit == "ms")
    unit_ms = 1;
  else if (unit == "s")
    unit_ms = ms_per_second;
  else if (unit == "m")
    unit_ms = ms_per_minute;
  else if (unit == "h")
    unit_ms = ms_per_hour;
  else if (unit == "d")
    unit_ms = ms_per_day;
  else
    return fail();
  if (digits.size() > 1 && digits[0] == '0')
    return fail(" (leading zeros are not allowed)");
  int64_t count = 0;
  for (auto c : digits) {
    auto digit = c - '0';
    if (count > (std::numeric_limits<int64_t>::max() - digit) / 10)
      return fail(" (too large)");
    count = count * 10 + digit;
  }
  if (count > std::numeric_limits<int64_t>::max() / unit_ms) return fail(" (too large)");
  return duration{count * unit_ms};
}

std::string format_duration(duration d) {
  auto ms = d.count();
  if (ms == 0) return "0";
  if (ms < 0) {
    // Not produced by parse_duration, but a log line should still say it.
    if (ms == std::numeric_limits<int64_t>::min()) return std::to_string(ms) + "ms";
    return "-" + format_duration(duration{-ms});
  }
  static constexpr std::pair<int64_t, const char*> units[] = {
      {ms_per_day, "d"}, {ms_per_hour, "h"}, {ms_per_minute, "m"}, {ms_per_second, "s"}};
  for (const auto& [size, suffix] : units)
    if (ms % size == 0) return std::to_string(ms / size) + suffix;
  return std::to_string(ms) + "ms";
}

} // namespace polymesh
