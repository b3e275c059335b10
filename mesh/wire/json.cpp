#include "mesh/wire/json.hpp"

#include "mesh/domain/error.hpp"
#include "mesh/domain/ids.hpp"
#include "mesh/domain/labels.hpp"
#include "mesh/domain/retry.hpp"
#include "mesh/domain/run_state.hpp"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <set>
#include <unordered_set>

namespace polymesh::wire {

json optional_time(const std::optional<timestamp>& t) {
  return t ? json(to_rfc3339(*t)) : json(nullptr);
}

namespace {

/// Reads the fields of one JSON object strictly: each accessor records the
/// key as known, the first problem wins, and `finish` rejects unknown keys.
class object_reader {
public:
  /// `prefix` goes before each field named in an error (`retry.` for the
  /// fields of a nested object).
  explicit object_reader(const json& j, std::string prefix = {})
      : j_(j)
      , prefix_(std::move(prefix)) {}

  /// `limit_key`: the setting that sets `max_len`, named in the refusal.
  void string(const char* key, std::string& out, bool required, size_t max_len = 1024,
              const char* limit_key = nullptr) {
    auto* v = find(key, required);
    if (!v) return;
    if (!v->is_string()) return fail(key, "must be a string");
    auto s = v->get<std::string>();
    if (s.size() > max_len)
      return fail(key, "must be at most " + std::to_string(max_len) + " bytes" +
                           (limit_key ? std::string{" ("} + limit_key + ")" : ""));
    out = std::move(s);
  }

  void integer(const char* key, int64_t& out, bool required, int64_t lo, int64_t hi) {
    auto* v = find(key, required);
    if (!v) return;
    if (!v->is_number_integer()) {
      // Digits beyond 64 bits arrive as a double: the range is what is wrong.
      if (v->is_number_float()) {
        auto d = v->get<double>();
        if (d == std::floor(d) &&
            (d < static_cast<double>(lo) || d > static_cast<double>(hi)))
          return fail(key, "must be between " + std::to_string(lo) + " and " +
                               std::to_string(hi));
      }
      return fail(key, "must be an integer");
    }
    auto x = v->get<int64_t>();
    if (v->is_number_unsigned() && v->get<uint64_t>() > static_cast<uint64_t>(INT64_MAX))
      return fail(key,
                  "must be between " + std::to_string(lo) + " and " + std::to_string(hi));
    if (x < lo || x > hi)
      return fail(key,
                  "must be between " + std::to_string(lo) + " and " + std::to_string(hi));
    out = x;
  }

  void optional_integer(const char* key, std::optional<int64_t>& out, int64_t lo,
                        int64_t hi) {
    auto* v = find(key, false);
    if (!v || v->is_null()) return;
    int64_t x = 0;
    integer(key, x, false, lo, hi);
    if (!err_) out = x;
  }

  void labels(const char* key, label_map& out, bool required) {
    auto* v = find(key, required);
    if (!v) return;
    if (!v->is_object()) return fail(key, "must be an object of string values");
    label_map m;
    for (auto& [k, val] : v->items()) {
      if (!val.is_string()) return fail(std::string{key} + "." + k, "must be a string");
      m.emplace(k, val.get<std::string>());
    }
    if (auto e = validate_labels(m); e && !err_) err_ = std::move(e);
    out = std::move(m);
  }

  void string_list(const char* key, std::vector<std::string>& out, bool required) {
    auto* v = find(key, required);
    if (!v) return;
    if (!v->is_array()) return fail(key, "must be an array of strings");
    std::vector<std::string> xs;
    for (size_t i = 0; i < v->size(); ++i) {
      if (!(*v)[i].is_string())
        return fail(std::string{key} + "[" + std::to_string(i) + "]", "must be a string");
      xs.push_back((*v)[i].get<std::string>());
    }
    out = std::move(xs);
  }

  /// Returns the raw value of `key` (marked as known) or nullptr.
  const json* raw(const char* key) { return find(key, false); }

  void fail(const std::string& field, const std::string& what) {
    if (!err_)
      err_ = make_error(errc::invalid_argument, "field '" + prefix_ + field + "' " + what,
                        prefix_ + field);
  }

  void check(caf::error e) {
    if (e && !err_) err_ = std::move(e);
  }

  [[nodiscard]] caf::error finish() {
    // A missing required field next to an unknown one is most likely a typo
    // of it (`pln`): name the unknown field first.
    if (err_ && missing_.empty()) return std::move(err_);
    for (auto& [k, v] : j_.items())
      if (known_.count(k) == 0)
        return make_error(errc::invalid_argument,
                          "unknown field '" + prefix_ + k + "'" +
                              (missing_.empty() ? std::string{}
                                                : " (and field '" + prefix_ + missing_ +
                                                      "' is required)"),
                          prefix_ + k);
    return std::move(err_);
  }

private:
  const json* find(const char* key, bool required) {
    known_.insert(key);
    auto it = j_.find(key);
    if (it == j_.end() || (it->is_null() && !required)) {
      if (required && !err_) {
        fail(key, "is required");
        missing_ = key;
      }
      return nullptr;
    }
    return &*it;
  }

  const json& j_;
  std::string prefix_;
  std::set<std::string> known_;
  caf::error err_;
  std::string missing_; // the required field `err_` is about, if that
};

bool name_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
         c == '-' || c == '_' || c == '.';
}

bool alnum(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

} // namespace

// -- responses ----------------------------------------------------------------

json to_json(const run_record& r) {
  auto params = json::parse(r.params, nullptr, false);
  if (params.is_discarded()) params = json::object();
  return json{
      {"id", r.id},
      {"plan", r.plan},
      {"selector", r.selector},
      {"scope", r.scope},
      {"target_agent", r.target_agent.empty() ? json(nullptr) : json(r.target_agent)},
      {"assigned_agent",
       r.assigned_agent.empty() ? json(nullptr) : json(r.assigned_agent)},
      {"params", std::move(params)},
      {"payload", r.payload},
      {"priority", r.priority},
      {"status", to_string(r.status)},
      {"skadi_status", skadi_status(r)},
      {"reason", r.reason.empty() ? json(nullptr) : json(r.reason)},
      {"exit_code", r.exit_code ? json(*r.exit_code) : json(nullptr)},
      {"result", r.result},
      {"error", r.error.empty() ? json(nullptr) : json(r.error)},
      {"attempts", r.attempts},
      {"idempotency_key",
       r.idempotency_key.empty() ? json(nullptr) : json(r.idempotency_key)},
      {"concurrency_key",
       r.concurrency_key.empty() ? json(nullptr) : json(r.concurrency_key)},
      {"timeout_s", r.timeout_s},
      {"ttl_s", r.ttl_s},
      {"cancel_requested", r.cancel_requested},
      {"progress", r.progress},
      {"created_at", to_rfc3339(r.created_at)},
      {"assigned_at", optional_time(r.assigned_at)},
      {"delivered_at", optional_time(r.delivered_at)},
      {"started_at", optional_time(r.started_at)},
      {"finished_at", optional_time(r.finished_at)},
      {"last_activity_at", optional_time(r.last_activity_at)},
      {"retry", retry_json(r.retry_max, r.retry_on)},
      {"retry_number", r.retry_number},
      {"retry_of", r.retry_of.empty() ? json(nullptr) : json(r.retry_of)},
      {"retried_by", r.retried_by.empty() ? json(nullptr) : json(r.retried_by)},
  };
}

json to_json(const agent_record& a) {
  return json{
      {"id", a.id},
      {"name", a.name},
      {"labels", a.labels},
      {"plans", a.plans},
      {"capacity", a.capacity},
      {"status", to_string(a.status)},
      {"drained", a.drained},
      {"drained_by", a.drained ? json(a.drain_kept ? "admin" : "agent") : json(nullptr)},
      {"version", a.version},
      {"hostname", a.hostname},
      {"scope", a.scope},
      {"registered_at", to_rfc3339(a.registered_at)},
      {"last_seen_at", to_rfc3339(a.last_seen_at)},
      {"lapsed_leases", a.lapsed_leases},
      {"held_until", optional_time(a.held_until)},
  };
}

json to_json(const token_record& t) {
  return json{
      {"id", t.id},
      {"kind", to_string(t.kind)},
      {"name", t.name},
      {"scope", t.scope},
      {"agent_id", t.agent_id.empty() ? json(nullptr) : json(t.agent_id)},
      {"created_at", to_rfc3339(t.created_at)},
      {"expires_at", optional_time(t.expires_at)},
      {"revoked_at", optional_time(t.revoked_at)},
  };
}

json to_json(const log_chunk& c) {
  return json{
      {"seq", c.seq}, {"stream", c.stream}, {"data", c.data}, {"at", to_rfc3339(c.at)}};
}

json to_json(const artifact_record& a) {
  return json{{"run_id", a.run_id},
              {"name", a.name},
              {"size", a.size},
              {"sha256", a.sha256},
              {"created_at", to_rfc3339(a.created_at)}};
}

json error_body(const caf::error& err) {
  json e{{"code", to_string(code_of(err))}, {"message", message_of(err)}};
  if (auto f = field_of(err); !f.empty()) e["field"] = f;
  if (auto p = position_of(err); p >= 0) e["position"] = p;
  return json{{"error", std::move(e)}};
}

std::string dump(const json& j) {
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

bool is_utf8(const std::string& text) {
  try {
    (void)json(text).dump();
    return true;
  } catch (const json::type_error&) {
    return false;
  }
}

namespace {

std::optional<timestamp> read_time(const json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_string()) return std::nullopt;
  return parse_rfc3339(it->get<std::string>());
}

std::string read_string(const json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : std::string{};
}

} // namespace

json retry_json(int64_t max, const std::string& on) {
  if (max == 0) return nullptr;
  json out{{"max", max}};
  if (!on.empty()) out["on"] = retry_on_list(on);
  return out;
}

void read_retry_json(const json& retry, int64_t& max, std::string& on) {
  if (!retry.is_object()) return;
  if (auto m = retry.find("max"); m != retry.end() && m->is_number_integer())
    max = m->get<int64_t>();
  if (auto list = retry.find("on"); list != retry.end() && list->is_array())
    for (auto& reason : *list)
      if (reason.is_string()) on += (on.empty() ? "" : ",") + reason.get<std::string>();
}

caf::expected<run_record> run_from_json(const json& j) {
  if (!j.is_object())
    return make_error(errc::invalid_argument, "a run must be a JSON object", "body");
  run_record r;
  r.id = read_string(j, "id");
  r.plan = read_string(j, "plan");
  r.selector = read_string(j, "selector");
  r.scope = read_string(j, "scope");
  r.target_agent = read_string(j, "target_agent");
  r.assigned_agent = read_string(j, "assigned_agent");
  r.params = j.contains("params") ? j["params"].dump() : "{}";
  r.payload = read_string(j, "payload");
  r.priority = j.value("priority", int64_t{0});
  auto status = parse_run_status(read_string(j, "status"));
  if (!status)
    return make_error(errc::invalid_argument, "run has no valid status", "status");
  r.status = *status;
  r.reason = read_string(j, "reason");
  if (j.contains("exit_code") && j["exit_code"].is_number_integer())
    r.exit_code = j["exit_code"].get<int64_t>();
  r.result = read_string(j, "result");
  r.error = read_string(j, "error");
  r.attempts = j.value("attempts", int64_t{0});
  r.idempotency_key = read_string(j, "idempotency_key");
  r.concurrency_key = read_string(j, "concurrency_key");
  if (auto retry = j.find("retry"); retry != j.end())
    read_retry_json(*retry, r.retry_max, r.retry_on);
  r.retry_number = j.value("retry_number", int64_t{0});
  r.retry_of = read_string(j, "retry_of");
  r.retried_by = read_string(j, "retried_by");
  r.timeout_s = j.value("timeout_s", int64_t{0});
  r.ttl_s = j.value("ttl_s", int64_t{0});
  r.cancel_requested = j.value("cancel_requested", false);
  r.progress = read_string(j, "progress");
  r.created_at = read_time(j, "created_at").value_or(timestamp{});
  r.assigned_at = read_time(j, "assigned_at");
  r.delivered_at = read_time(j, "delivered_at");
  r.started_at = read_time(j, "started_at");
  r.finished_at = read_time(j, "finished_at");
  r.last_activity_at = read_time(j, "last_activity_at");
  return r;
}

caf::expected<agent_record> agent_from_json(const json& j) {
  if (!j.is_object())
    return make_error(errc::invalid_argument, "an agent must be a JSON object", "body");
  agent_record a;
  a.id = read_string(j, "id");
  a.name = read_string(j, "name");
  if (auto it = j.find("labels"); it != j.end() && it->is_object())
    for (auto& [k, v] : it->items())
      if (v.is_string()) a.labels.emplace(k, v.get<std::string>());
  if (auto it = j.find("plans"); it != j.end() && it->is_array())
    for (auto& p : *it)
      if (p.is_string()) a.plans.push_back(p.get<std::string>());
  a.capacity = j.value("capacity", int64_t{1});
  a.status = parse_agent_status(read_string(j, "status")).value_or(agent_status::offline);
  a.version = read_string(j, "version");
  a.hostname = read_string(j, "hostname");
  a.scope = read_string(j, "scope");
  a.registered_at = read_time(j, "registered_at").value_or(timestamp{});
  a.last_seen_at = read_time(j, "last_seen_at").value_or(timestamp{});
  a.lapsed_leases = j.value("lapsed_leases", int64_t{0});
  a.held_until = read_time(j, "held_until");
  return a;
}

// -- requests -----------------------------------------------------------------

namespace {

/// Why `parse_strict` stopped: thrown from the parser's callback.
struct rejected_json {
  std::string message;
};

/// The keys of the objects being parsed, innermost last. Most objects have a
/// few keys; those with many get a hash set.
class key_tracker {
public:
  void open() {
    if (depth_ == levels_.size()) levels_.emplace_back();
    levels_[depth_].clear();
    ++depth_;
  }
  void close() { --depth_; }
  /// Whether `key` is new in the innermost object.
  bool add(const std::string& key) {
    auto& level = levels_[depth_ - 1];
    if (level.many.empty() && level.few.size() < 16) {
      if (std::find(level.few.begin(), level.few.end(), key) != level.few.end())
        return false;
      level.few.push_back(key);
      return true;
    }
    if (level.many.empty()) level.many.insert(level.few.begin(), level.few.end());
    return level.many.insert(key).second;
  }

private:
  struct keys {
    std::vector<std::string> few;
    std::unordered_set<std::string> many;
    void clear() {
      few.clear();
      many.clear();
    }
  };
  std::vector<keys> levels_; // reused: levels deeper than `depth_` are stale
  size_t depth_ = 0;
};

/// nlohmann's message without its id: "[json.exception.parse_error.101]
/// parse error at ..." becomes "parse error at ...".
std::string without_exception_id(const json::exception& e) {
  std::string detail = e.what();
  auto at = detail.find("] ");
  if (at != std::string::npos) detail.erase(0, at + 2);
  return detail;
}

} // namespace

caf::expected<std::string> canonical_selector(const selector& sel,
                                              const std::string& field) {
  auto text = sel.to_string();
  if (text.size() > max_selector_bytes)
    return make_error(errc::invalid_argument,
                      field + " is " + std::to_string(text.size()) +
                          " bytes in the canonical form it is stored in (sorted, `k in "
                          "(v)`), more than " +
                          std::to_string(max_selector_bytes) + "; shorten it",
                      field);
  return text;
}

caf::expected<json> parse_strict(const std::string& text, const std::string& what) {
  key_tracker keys;
  auto check = [&keys, &what](int depth, json::parse_event_t event, json& parsed) {
    switch (event) {
    case json::parse_event_t::object_start:
    case json::parse_event_t::array_start:
      if (depth >= max_json_depth)
        throw rejected_json{what + " nests deeper than " +
                            std::to_string(max_json_depth) + " levels"};
      if (event == json::parse_event_t::object_start) keys.open();
      break;
    case json::parse_event_t::object_end: keys.close(); break;
    case json::parse_event_t::key:
      if (!keys.add(parsed.get_ref<const std::string&>()))
        throw rejected_json{what + " has the key '" + parsed.get<std::string>() +
                            "' twice in one object"};
      break;
    default: break;
    }
    return true;
  };
  try {
    return json::parse(text, check);
  } catch (const rejected_json& e) {
    return make_error(errc::invalid_argument, e.message);
  } catch (const json::parse_error& e) {
    return make_error(errc::invalid_argument,
                      what + " is not valid JSON: " + without_exception_id(e), {},
                      e.byte > 0 ? static_cast<int64_t>(e.byte) - 1 : 0);
  } catch (const json::out_of_range& e) {
    // A number beyond a double's range, e.g. 1e309.
    return make_error(errc::invalid_argument,
                      what + " holds a number too large for a double (" +
                          without_exception_id(e) + ")");
  }
}

caf::expected<json> parse_object(const std::string& body) {
  auto j = parse_strict(body, "body");
  if (!j)
    return make_error(errc::invalid_argument, message_of(j.error()), "body",
                      position_of(j.error()));
  if (!j->is_object())
    return make_error(errc::invalid_argument, "body must be a JSON object", "body");
  return j;
}

caf::error validate_plan_name(const std::string& plan, const std::string& field) {
  if (plan.empty() || plan.size() > 128)
    return make_error(errc::invalid_argument, "plan name must be 1 to 128 characters",
                      field);
  if (!alnum(plan.front()))
    return make_error(errc::invalid_argument,
                      "plan name must start with a letter or digit", field);
  for (char c : plan)
    if (!name_char(c))
      return make_error(errc::invalid_argument,
                        "plan name may contain only letters, digits, '-', '_' and '.'",
                        field);
  return {};
}

std::string artifact_name_problem(const std::string& name) {
  if (name.empty() || name.size() > 200) return "must be 1 to 200 characters";
  size_t start = 0;
  for (;;) {
    auto end = name.find('/', start);
    auto segment = name.substr(start, end == std::string::npos ? end : end - start);
    if (segment.empty()) return "has an empty path segment";
    if (segment.front() == '.') return "has a segment starting with '.'";
    for (char c : segment)
      if (!name_char(c)) return "may contain only letters, digits, '-', '_', '.' and '/'";
    if (end == std::string::npos) return {};
    start = end + 1;
  }
}

caf::error validate_artifact_name(const std::string& name, const std::string& field) {
  auto why = artifact_name_problem(name);
  if (why.empty()) return {};
  // Quoted as printable ASCII, cut at 64 bytes: a name from the URL may
  // hold anything, a U+202E that turns the text around included.
  auto shown = printable_prefix(name, 64) + (name.size() > 64 ? "..." : "");
  return make_error(errc::invalid_argument, "artifact name '" + shown + "' " + why,
                    field);
}

caf::error validate_agent_name(const std::string& name, const std::string& field) {
  if (name.empty() || name.size() > 63)
    return make_error(errc::invalid_argument, "agent name must be 1 to 63 characters",
                      field);
  if (!alnum(name.front()) || !alnum(name.back()))
    return make_error(errc::invalid_argument,
                      "agent name must start and end with a letter or digit", field);
  for (char c : name)
    if (!name_char(c))
      return make_error(errc::invalid_argument,
                        "agent name may contain only letters, digits, '-', '_' and '.'",
                        field);
  // `/v1/agents/register` is the registration endpoint, never an agent.
  if (name == "register")
    return make_error(errc::invalid_argument,
                      "agent name 'register' is reserved (it is an API path)", field);
  return {};
}

std::string printable_prefix(const std::string& s, size_t n) {
  auto out = s.substr(0, n);
  for (auto& c : out)
    if (c < 0x20 || c > 0x7e) c = '?';
  return out;
}

caf::error printable(const std::string& value, const char* field) {
  auto refuse = [&](const std::string& what, size_t at) {
    return make_error(errc::invalid_argument,
                      std::string{"field '"} + field +
                          "' must not contain control characters (" + what +
                          " at offset " + std::to_string(at) + ")",
                      field);
  };
  for (size_t i = 0; i < value.size(); ++i) {
    auto c = static_cast<unsigned char>(value[i]);
    if (c < 0x20 || c == 0x7f) return refuse("byte " + std::to_string(c), i);
    // C1 controls, U+0080..U+009F, are C2 80..C2 9F in UTF-8 (the JSON
    // parser has checked that the text is UTF-8).
    auto next = i + 1 < value.size() ? static_cast<unsigned char>(value[i + 1]) : 0;
    if (c == 0xc2 && next >= 0x80 && next <= 0x9f) {
      char code[8];
      std::snprintf(code, sizeof code, "U+%04X", next);
      return refuse(code, i);
    }
    // The line and paragraph separators, U+2028 and U+2029, break a line
    // as a newline does.
    auto third = i + 2 < value.size() ? static_cast<unsigned char>(value[i + 2]) : 0;
    if (c == 0xe2 && next == 0x80 && (third == 0xa8 || third == 0xa9))
      return refuse(third == 0xa8 ? "U+2028" : "U+2029", i);
    // The bidirectional embeddings, overrides and isolates, U+202A..U+202E
    // and U+2066..U+2069, reorder what is shown after them: a name could
    // read as another in a listing.
    if (c == 0xe2 && ((next == 0x80 && third >= 0xaa && third <= 0xae) ||
                      (next == 0x81 && third >= 0xa6 && third <= 0xa9))) {
      char code[40];
      std::snprintf(code, sizeof code, "U+%04X, a bidirectional control",
                    next == 0x80 ? 0x2000 + (third - 0x80) : 0x2040 + (third - 0x80));
      return refuse(code, i);
    }
  }
  return {};
}

namespace {

/// Whether `value` (UTF-8) shows nothing: empty, or only spaces and
/// invisible or blank-looking characters, which would make an empty-looking
/// listing.
bool blank_text(const std::string& value) {
  // Two-byte ones (U+00A0, U+00AD, U+034F, U+061C) and three-byte ones
  // (U+115F, U+1160, U+1680, U+180E, U+2000..U+200F, U+202F, U+205F..U+2064, U+2800,
  // U+3000, U+3164, U+FEFF, U+FFA0), as UTF-8 bytes.
  static const std::set<std::string> blanks{
      "\xc2\xa0",     "\xc2\xad",     "\xcd\x8f",     "\xd8\x9c",     "\xe1\x85\x9f",
      "\xe1\x85\xa0", "\xe1\x9a\x80", "\xe1\xa0\x8e", "\xe2\x80\xaf", "\xe2\xa0\x80",
      "\xe3\x80\x80", "\xe3\x85\xa4", "\xef\xbb\xbf", "\xef\xbe\xa0"};
  size_t i = 0;
  while (i < value.size()) {
    if (value[i] == ' ') {
      i += 1;
      continue;
    }
    auto two = value.substr(i, 2);
    auto three = value.substr(i, 3);
    auto c2 = three.size() == 3 ? static_cast<unsigned char>(three[2]) : 0;
    if (blanks.count(two)) {
      i += 2;
    } else if (value.compare(i, 2, "\xf3\xa0") == 0 && i + 3 < value.size() &&
               (static_cast<unsigned char>(value[i + 2]) == 0x80 ||
                static_cast<unsigned char>(value[i + 2]) == 0x81)) {
      i += 4; // the tag characters, U+E0000..U+E007F
    } else if (blanks.count(three) ||
               (three.compare(0, 2, "\xe2\x80") == 0 && c2 >= 0x80 && c2 <= 0x8f) ||
               (three.compare(0, 2, "\xe2\x81") == 0 && c2 >= 0x9f && c2 <= 0xa4)) {
      i += 3; // and U+2000..U+200F, U+205F..U+2064
    } else {
      return false;
    }
  }
  return true;
}

} // namespace

caf::expected<token_request> parse_token_request(const json& j) {
  token_request r;
  object_reader in{j};
  std::string kind;
  in.string("kind", kind, true, 32);
  in.string("name", r.name, true, 128);
  in.integer("ttl_s", r.ttl_s, false, 0, int64_t{10} * 365 * 24 * 3600);
  in.string("scope", r.scope, false, max_selector_bytes);
  if (auto e = in.finish()) return e;
  auto k = parse_token_kind(kind);
  if (!k || *k == token_kind::agent)
    return make_error(
        errc::invalid_argument,
        "field 'kind' must be one of admin, submitter, reader, registration (got '" +
            printable_prefix(kind, 64) + "')",
        "kind");
  if (blank_text(r.name))
    return make_error(errc::invalid_argument,
                      "field 'name' must not be empty or blank (spaces and invisible "
                      "characters only)",
                      "name");
  if (auto e = printable(r.name, "name")) return e;
  // A blank scope would select every agent: a token of full reach made by
  // a variable left empty (`"scope": "$SCOPE"`).
  if (auto s = j.find("scope"); s != j.end() && s->is_string() && blank_text(r.scope))
    return make_error(
        errc::invalid_argument,
        "field 'scope' is empty or blank, which would scope nothing: give a "
        "selector (env=dev), or leave it out for a token of full reach",
        "scope");
  // A scope would confine nothing a reader does: it would only mislead.
  if (*k == token_kind::reader && !r.scope.empty())
    return make_error(
        errc::invalid_argument,
        "field 'scope' does not apply to reader tokens: reading is not scoped", "scope");
  r.kind = *k;
  return r;
}

caf::error validate_agent_identity(const std::string& name, const std::string& version,
                                   const std::string& hostname) {
  if (auto e = validate_agent_name(name, "name")) return e;
  if (name.rfind(agent_id_prefix, 0) == 0)
    return make_error(errc::invalid_argument,
                      std::string{"agent names starting with '"} + agent_id_prefix +
                          "' are reserved for agent ids",
                      "name");
  if (auto e = printable(version, "version")) return e;
  if (hostname.size() > 255)
    return make_error(errc::invalid_argument, "must be at most 255 bytes", "hostname");
  return printable(hostname, "hostname");
}

/// An error when `key` is given as "": for optional strings, where "" would
/// otherwise pass for "not given" unnoticed (`null` or leaving the key out
/// says that).
caf::error not_blank(const json& j, const char* key, const char* absent_means) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_string() || !it->get_ref<const std::string&>().empty())
    return {};
  return make_error(errc::invalid_argument,
                    std::string{"field '"} + key +
                        "' must not be empty; leave it out (or null) " + absent_means,
                    key);
}

bool valid_instance(const std::string& value) {
  return !value.empty() && value.size() <= max_instance_bytes &&
         std::all_of(value.begin(), value.end(), [](unsigned char c) {
           return std::isalnum(c) != 0 || c == '-' || c == '_';
         });
}

caf::expected<register_request> parse_register_request(const json& j) {
  register_request r;
  object_reader in{j};
  in.string("name", r.name, true, 63);
  in.labels("labels", r.labels, false);
  in.string_list("plans", r.plans, true);
  in.integer("capacity", r.capacity, false, 1, 4096);
  in.string("version", r.version, false, 128);
  in.string("hostname", r.hostname, false, 255);
  in.string("instance", r.instance, false, max_instance_bytes);
  if (auto e = in.finish()) return e;
  if (auto e = validate_agent_identity(r.name, r.version, r.hostname)) return e;
  if (auto e = not_blank(j, "instance", "when the agent keeps no instance")) return e;
  if (!r.instance.empty() && !valid_instance(r.instance))
    return make_error(errc::invalid_argument,
                      "field 'instance' may hold only letters, digits, '-' and '_'",
                      "instance");
  if (r.plans.empty())
    return make_error(errc::invalid_argument, "field 'plans' must list at least one plan",
                      "plans");
  if (r.plans.size() > max_agent_plans)
    return make_error(errc::invalid_argument,
                      "field 'plans' lists " + std::to_string(r.plans.size()) +
                          " plans; an agent offers at most " +
                          std::to_string(max_agent_plans),
                      "plans");
  std::set<std::string_view> seen;
  for (size_t i = 0; i < r.plans.size(); ++i) {
    auto field = "plans[" + std::to_string(i) + "]";
    if (auto e = validate_plan_name(r.plans[i], field)) return e;
    if (!seen.insert(r.plans[i]).second)
      return make_error(errc::invalid_argument,
                        "field 'plans' lists '" + r.plans[i] + "' twice", field);
  }
  return r;
}

json to_json(const register_request& r) {
  json out{{"name", r.name},         {"labels", r.labels},   {"plans", r.plans},
           {"capacity", r.capacity}, {"version", r.version}, {"hostname", r.hostname}};
  if (!r.instance.empty()) out["instance"] = r.instance;
  return out;
}

caf::expected<labels_patch> parse_labels_patch(const json& j) {
  labels_patch r;
  object_reader in{j};
  in.labels("labels", r.labels, true);
  if (auto e = in.finish()) return e;
  return r;
}

/// A run request's `retry` object into `r.retry_max` and `r.retry_on`.
caf::error read_retry(const json& retry, run_request& r) {
  if (!retry.is_object())
    return make_error(errc::invalid_argument,
                      "field 'retry' must be an object such as {\"max\": 2}", "retry");
  object_reader in{retry, "retry."};
  in.integer("max", r.retry_max, true, 1, max_retries);
  std::vector<std::string> on;
  in.string_list("on", on, false);
  if (auto e = in.finish()) return e;
  if (retry.contains("on") && !retry["on"].is_null() && on.empty())
    return make_error(errc::invalid_argument,
                      "field 'retry.on' is empty: name an end to retry, or leave 'on' "
                      "out for " +
                          std::string{default_retry_on},
                      "retry.on");
  if (on.empty()) {
    r.retry_on = std::string{default_retry_on};
    return {};
  }
  auto text = retry_on_text(on, "retry.on");
  if (!text) return text.error();
  r.retry_on = std::move(*text);
  return {};
}

caf::expected<run_request> parse_run_request(const json& j, const limits& lim) {
  run_request r;
  object_reader in{j};
  in.string("plan", r.plan, true, 128);
  in.string("selector", r.selector, false, max_selector_bytes);
  in.string("agent", r.agent, false, 63);
  if (auto* p = in.raw("params")) {
    if (!p->is_object())
      in.fail("params", "must be an object");
    else
      r.params = p->dump();
  }
  in.string("payload", r.payload, false, lim.max_payload_bytes, "runs.max_payload_bytes");
  in.integer("priority", r.priority, false, -1'000'000, 1'000'000);
  in.integer("timeout_s", r.timeout_s, false, 0, int64_t{30} * 24 * 3600);
  in.integer("ttl_s", r.ttl_s, false, 0, int64_t{30} * 24 * 3600);
  in.string("idempotency_key", r.idempotency_key, false, 256);
  in.string("concurrency_key", r.concurrency_key, false, max_concurrency_key_bytes);
  auto* retry = in.raw("retry");
  if (auto e = in.finish()) return e;
  if (retry)
    if (auto e = read_retry(*retry, r)) return e;
  if (auto e = not_blank(j, "agent", "to let the mesh pick an agent")) return e;
  if (auto e = not_blank(j, "idempotency_key", "for a submit that is not deduplicated"))
    return e;
  if (auto e = printable(r.idempotency_key, "idempotency_key")) return e;
  if (auto e = not_blank(j, "concurrency_key", "for a run that waits for no other"))
    return e;
  if (auto e = printable(r.concurrency_key, "concurrency_key")) return e;
  if (auto e = validate_plan_name(r.plan, "plan")) return e;
  if (!r.agent.empty())
    if (auto e = validate_agent_name(r.agent, "agent")) return e;
  return r;
}

caf::error within(const std::string& prefix, const caf::error& err) {
  auto field = field_of(err);
  return make_error(code_of(err), prefix + ": " + message_of(err),
                    field.empty() ? prefix : prefix + "." + field, position_of(err));
}

caf::expected<std::vector<run_request>> parse_run_batch(const json& j,
                                                        const limits& lim) {
  object_reader in{j};
  auto* runs = in.raw("runs");
  if (auto e = in.finish()) return e;
  if (!runs || !runs->is_array() || runs->empty() || runs->size() > max_batch_runs)
    return make_error(errc::invalid_argument,
                      "field 'runs' must be an array of 1 to " +
                          std::to_string(max_batch_runs) + " runs",
                      "runs");
  std::vector<run_request> out;
  out.reserve(runs->size());
  for (size_t i = 0; i < runs->size(); ++i) {
    auto prefix = "runs[" + std::to_string(i) + "]";
    auto& item = (*runs)[i];
    if (!item.is_object())
      return make_error(errc::invalid_argument,
                        "field '" + prefix + "' must be an object", prefix);
    auto r = parse_run_request(item, lim);
    if (!r) return within(prefix, r.error());
    out.push_back(std::move(*r));
  }
  return out;
}

json to_json(const run_request& r) {
  json j{{"plan", r.plan}};
  if (!r.selector.empty()) j["selector"] = r.selector;
  if (!r.agent.empty()) j["agent"] = r.agent;
  j["params"] = json::parse(r.params, nullptr, false);
  if (j["params"].is_discarded()) j["params"] = json::object();
  if (!r.payload.empty()) j["payload"] = r.payload;
  if (r.priority != 0) j["priority"] = r.priority;
  if (r.timeout_s != 0) j["timeout_s"] = r.timeout_s;
  if (r.ttl_s != 0) j["ttl_s"] = r.ttl_s;
  if (!r.idempotency_key.empty()) j["idempotency_key"] = r.idempotency_key;
  if (!r.concurrency_key.empty()) j["concurrency_key"] = r.concurrency_key;
  if (r.retry_max != 0) j["retry"] = retry_json(r.retry_max, r.retry_on);
  return j;
}

caf::expected<progress_request> parse_progress_request(const json& j) {
  progress_request r;
  object_reader in{j};
  in.string("message", r.message, false, max_progress_bytes);
  if (auto e = in.finish()) return e;
  return r;
}

caf::expected<log_request> parse_log_request(const json& j) {
  log_request r;
  object_reader in{j};
  auto* chunks = in.raw("chunks");
  if (auto e = in.finish()) return e;
  if (!chunks || !chunks->is_array() || chunks->empty())
    return make_error(errc::invalid_argument, "field 'chunks' must be a non-empty array",
                      "chunks");
  std::unordered_set<int64_t> seqs;
  for (size_t i = 0; i < chunks->size(); ++i) {
    auto field = "chunks[" + std::to_string(i) + "]";
    auto& c = (*chunks)[i];
    if (!c.is_object())
      return make_error(errc::invalid_argument, "field '" + field + "' must be an object",
                        field);
    log_chunk chunk;
    object_reader cin{c};
    cin.integer("seq", chunk.seq, true, 0, INT64_MAX);
    cin.string("stream", chunk.stream, false, 16);
    cin.string("data", chunk.data, true, SIZE_MAX);
    if (auto e = cin.finish())
      return make_error(code_of(e), field + ": " + message_of(e),
                        field + "." + field_of(e));
    if (chunk.stream != "stdout" && chunk.stream != "stderr")
      return make_error(errc::invalid_argument,
                        field + ": stream must be stdout or stderr (got '" +
                            printable_prefix(chunk.stream, 64) + "')",
                        field + ".stream");
    // The run keeps the first chunk of a seq and ignores repeats (a retried
    // upload); two different chunks under one seq in one request are a bug.
    if (!seqs.insert(chunk.seq).second)
      return make_error(errc::invalid_argument,
                        "seq " + std::to_string(chunk.seq) +
                            " appears twice in this request; each chunk needs its own",
                        field + ".seq");
    r.chunks.push_back(std::move(chunk));
  }
  return r;
}

json to_json(const log_request& r) {
  json chunks = json::array();
  for (auto& c : r.chunks)
    chunks.push_back(json{{"seq", c.seq}, {"stream", c.stream}, {"data", c.data}});
  return json{{"chunks", std::move(chunks)}};
}

caf::expected<finish_request> parse_finish_request(const json& j, const limits& lim) {
  finish_request r;
  object_reader in{j};
  std::string status;
  in.string("status", status, true, 16);
  in.optional_integer("exit_code", r.exit_code, INT32_MIN, INT32_MAX);
  in.string("result", r.result, false, lim.max_result_bytes, "runs.max_result_bytes");
  in.string("error", r.error, false, 4096);
  in.string("reason", r.reason, false, 64);
  if (auto e = in.finish()) return e;
  if (auto e = not_blank(j, "reason", "for the default reason")) return e;
  for (char c : r.reason)
    if (!((c >= 'a' && c <= 'z') || c == '_'))
      return make_error(errc::invalid_argument,
                        "field 'reason' must be snake_case (a-z and '_')", "reason");
  auto s = parse_run_status(status);
  if (!s || !is_terminal(*s))
    return make_error(errc::invalid_argument,
                      "field 'status' must be one of success, error, canceled", "status");
  r.status = *s;
  return r;
}

namespace {

/// A run id as an agent quotes it back (1 to 128 bytes), not yet in `seen`
/// (the ids of the same list so far), which it joins.
caf::error check_run_ref(const std::string& id, const std::string& field,
                         std::set<std::string>& seen) {
  if (id.empty() || id.size() > 128)
    return make_error(errc::invalid_argument,
                      "field '" + field + "' must be a run id of 1 to 128 bytes", field);
  if (!seen.insert(id).second)
    return make_error(errc::invalid_argument,
                      "field '" + field + "' repeats run '" + id + "'", field);
  return {};
}

} // namespace

caf::expected<report_request> parse_report_request(const json& j, const limits& lim) {
  report_request r;
  object_reader in{j};
  in.string_list("started", r.started, false);
  auto* finished = in.raw("finished");
  if (auto e = in.finish()) return e;
  auto too_many = [](const char* key) {
    return make_error(errc::invalid_argument,
                      std::string{"field '"} + key + "' must have at most " +
                          std::to_string(max_report_items) + " items",
                      key);
  };
  if (r.started.size() > max_report_items) return too_many("started");
  std::set<std::string> seen;
  for (size_t i = 0; i < r.started.size(); ++i)
    if (auto e = check_run_ref(r.started[i], "started[" + std::to_string(i) + "]", seen))
      return e;
  if (!finished || finished->is_null()) return r;
  if (!finished->is_array())
    return make_error(errc::invalid_argument,
                      "field 'finished' must be an array of finish objects", "finished");
  if (finished->size() > max_report_items) return too_many("finished");
  seen.clear();
  for (size_t i = 0; i < finished->size(); ++i) {
    auto prefix = "finished[" + std::to_string(i) + "]";
    auto item = (*finished)[i];
    if (!item.is_object())
      return make_error(errc::invalid_argument,
                        "field '" + prefix + "' must be an object", prefix);
    auto run = item.find("run");
    if (run == item.end() || !run->is_string())
      return make_error(errc::invalid_argument,
                        "field '" + prefix + ".run' must be a string (the run id)",
                        prefix + ".run");
    auto id = run->get<std::string>();
    if (auto e = check_run_ref(id, prefix + ".run", seen)) return e;
    item.erase("run");
    auto f = parse_finish_request(item, lim);
    if (!f) return within(prefix, f.error());
    r.finished.emplace_back(std::move(id), std::move(*f));
  }
  return r;
}

json to_json(const finish_request& r) {
  json j{{"status", to_string(r.status)}};
  if (r.exit_code) j["exit_code"] = *r.exit_code;
  if (!r.result.empty()) j["result"] = r.result;
  if (!r.error.empty()) j["error"] = r.error;
  if (!r.reason.empty()) j["reason"] = r.reason;
  return j;
}

json to_json(const report_request& r) {
  json j = json::object();
  if (!r.started.empty()) j["started"] = r.started;
  if (!r.finished.empty()) {
    auto& finished = j["finished"] = json::array();
    for (auto& [run, req] : r.finished) {
      auto item = to_json(req);
      item["run"] = run;
      finished.push_back(std::move(item));
    }
  }
  return j;
}

} // namespace polymesh::wire
