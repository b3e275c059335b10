// The SQLite implementation of `store`.
//
// One `sqlite_store` owns one connection and the prepared statements cached
// on it. Every statement is reset as soon as its rows are read, so that a
// reader never pins an old WAL snapshot (it would neither see new commits nor
// let checkpoints finish). The schema lives in `sqlite_schema.hpp`.

#include "mesh/domain/error.hpp"
#include "mesh/domain/log.hpp"
#include "mesh/domain/run_state.hpp"
#include "mesh/store/sqlite_schema.hpp"
#include "mesh/store/store.hpp"

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>
#include <sqlite3.h>
#include <stdexcept>
#include <string_view>
#include <unistd.h>
#include <unordered_map>
#include <utility>

namespace polymesh {

namespace {

/// How long a statement waits for another connection's lock before it fails.
constexpr int busy_timeout_ms = 5000;
/// The WAL's size once checkpointed (SQLite's `journal_size_limit`).
constexpr int64_t wal_size_limit_bytes = 16 * 1024 * 1024;

/// Bounds of `run_filter::limit`.
constexpr size_t min_page = 1;
constexpr size_t max_page = 1000;

// -- RAII wrappers ------------------------------------------------------------

struct db_closer {
  void operator()(sqlite3* db) const { sqlite3_close_v2(db); }
};
using db_ptr = std::unique_ptr<sqlite3, db_closer>;

struct stmt_finalizer {
  void operator()(sqlite3_stmt* s) const { sqlite3_finalize(s); }
};
using stmt_ptr = std::unique_ptr<sqlite3_stmt, stmt_finalizer>;

/// A cached prepared statement lent out for one execution. The destructor
/// resets it and clears its bindings, which ends its read transaction.
class statement {
public:
  explicit statement(sqlite3_stmt* s)
      : s_(s) {}
  statement(statement&& other) noexcept
      : s_(std::exchange(other.s_, nullptr)) {}
  statement(const statement&) = delete;
  statement& operator=(const statement&) = delete;
  statement& operator=(statement&&) = delete;
  ~statement() {
    if (s_) {
      sqlite3_reset(s_);
      sqlite3_clear_bindings(s_);
    }
  }

  // A failed bind (only "too big" is possible here) is remembered and
  // reported by the next `step`, so call sites bind without checking.
  void bind(int i, const std::string& x) {
    keep(sqlite3_bind_text64(s_, i, x.data(), x.size(), SQLITE_TRANSIENT, SQLITE_UTF8));
  }
  void bind_blob(int i, std::string_view x) {
    // A null pointer would bind NULL, not an empty blob.
    keep(
        sqlite3_bind_blob64(s_, i, x.data() ? x.data() : "", x.size(), SQLITE_TRANSIENT));
  }
  void bind(int i, int64_t x) { keep(sqlite3_bind_int64(s_, i, x)); }
  void bind(int i, uint64_t x) { bind(i, static_cast<int64_t>(x)); }
  void bind(int i, bool x) { bind(i, int64_t{x ? 1 : 0}); }
  void bind(int i, timestamp x) { bind(i, to_unix_ms(x)); }
  template <class T> void bind(int i, const std::optional<T>& x) {
    if (x)
      bind(i, *x);
    else
      keep(sqlite3_bind_null(s_, i));
  }

  /// `SQLITE_ROW`, `SQLITE_DONE` or an error code.
  int step() { return bind_rc_ != SQLITE_OK ? bind_rc_ : sqlite3_step(s_); }

  [[nodiscard]] bool is_null(int i) const {
    return sqlite3_column_type(s_, i) == SQLITE_NULL;
  }
  [[nodiscard]] std::string text(int i) const {
    auto p = reinterpret_cast<const char*>(sqlite3_column_text(s_, i));
    return p ? std::string(p, static_cast<size_t>(sqlite3_column_bytes(s_, i)))
             : std::string{};
  }
  /// The column's bytes, valid until the statement steps or resets.
  [[nodiscard]] std::string_view blob_view(int i) const {
    auto p = static_cast<const char*>(sqlite3_column_blob(s_, i));
    return p ? std::string_view(p, static_cast<size_t>(sqlite3_column_bytes(s_, i)))
             : std::string_view{};
  }
  [[nodiscard]] int64_t int64(int i) const { return sqlite3_column_int64(s_, i); }
  [[nodiscard]] timestamp time(int i) const { return from_unix_ms(int64(i)); }
  [[nodiscard]] std::optional<int64_t> opt_int64(int i) const {
    return is_null(i) ? std::nullopt : std::optional<int64_t>{int64(i)};
  }
  [[nodiscard]] std::optional<timestamp> opt_time(int i) const {
    return is_null(i) ? std::nullopt : std::optional<timestamp>{time(i)};
  }

private:
  void keep(int rc) {
    if (bind_rc_ == SQLITE_OK) bind_rc_ = rc;
  }

  sqlite3_stmt* s_;
  int bind_rc_ = SQLITE_OK;
};

/// One database connection and its statement cache.
class connection {
public:
  explicit connection(db_ptr db)
      : db_(std::move(db)) {}

  [[nodiscard]] sqlite3* get() const { return db_.get(); }

  /// An error carrying SQLite's last message, prefixed with what we tried.
  [[nodiscard]] caf::error fail(const std::string& what) const {
    return make_error(errc::store_failure, what + ": " + sqlite3_errmsg(db_.get()));
  }

  /// The cached statement for `sql`, prepared on first use.
  [[nodiscard]] caf::expected<statement> prepare(const std::string& sql) {
    auto it = cache_.find(sql);
    if (it == cache_.end()) {
      sqlite3_stmt* raw = nullptr;
      if (sqlite3_prepare_v3(db_.get(), sql.c_str(), static_cast<int>(sql.size() + 1),
                             SQLITE_PREPARE_PERSISTENT, &raw, nullptr) != SQLITE_OK) {
        sqlite3_finalize(raw);
        return fail("cannot prepare statement");
      }
      it = cache_.emplace(sql, stmt_ptr{raw}).first;
    }
    return statement{it->second.get()};
  }

  /// Runs one statement that returns no rows we need.
  [[nodiscard]] caf::error exec(const std::string& sql, const std::string& what) {
    auto st = prepare(sql);
    if (!st) return std::move(st.error());
    int rc;
    while ((rc = st->step()) == SQLITE_ROW) {
    }
    return rc == SQLITE_DONE ? caf::error{} : fail(what);
  }

  /// Runs a script of several statements, uncached (schema migrations).
  [[nodiscard]] caf::error exec_script(const char* sql, const std::string& what) {
    return sqlite3_exec(db_.get(), sql, nullptr, nullptr, nullptr) == SQLITE_OK
               ? caf::error{}
               : fail(what);
  }

  /// The single integer that `sql` returns (a pragma or an aggregate).
  [[nodiscard]] caf::expected<int64_t> query_int(const std::string& sql,
                                                 const std::string& what) {
    auto st = prepare(sql);
    if (!st) return std::move(st.error());
    if (st->step() != SQLITE_ROW) return fail(what);
    return st->int64(0);
  }

private:
  // Declared first so that it is destroyed last, after the statements.
  db_ptr db_;
  std::unordered_map<std::string, stmt_ptr> cache_;
};

/// A transaction that rolls back unless committed. Rolling back is checked
/// against SQLite's own state: some errors end the transaction already.
class transaction {
public:
  explicit transaction(connection& db)
      : db_(db) {}
  transaction(const transaction&) = delete;
  transaction& operator=(const transaction&) = delete;
  ~transaction() {
    if (open_ && !sqlite3_get_autocommit(db_.get()))
      (void)db_.exec("ROLLBACK", "rollback");
  }

  /// `IMMEDIATE` takes the write lock up front, so a writer never fails
  /// halfway through upgrading a read transaction; readers begin deferred.
  [[nodiscard]] caf::error begin(bool immediate) {
    auto err =
        db_.exec(immediate ? "BEGIN IMMEDIATE" : "BEGIN", "cannot begin transaction");
    open_ = !err;
    return err;
  }

  [[nodiscard]] caf::error commit() {
    if (auto err = db_.exec("COMMIT", "cannot commit")) return err;
    open_ = false;
    return {};
  }

private:
  connection& db_;
  bool open_ = false;
};

// -- JSON columns -------------------------------------------------------------

// Invalid UTF-8 is replaced rather than thrown on: a write must not fail
// because of one label, and labels are validated long before they get here.
std::string dump_json(const nlohmann::json& j) {
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

std::optional<label_map> parse_labels(const std::string& text) {
  auto j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return std::nullopt;
  label_map out;
  for (auto& [k, v] : j.items()) {
    if (!v.is_string()) return std::nullopt;
    out.emplace(k, v.get<std::string>());
  }
  return out;
}

std::optional<std::vector<std::string>> parse_strings(const std::string& text) {
  auto j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_array()) return std::nullopt;
  std::vector<std::string> out;
  out.reserve(j.size());
  for (auto& v : j) {
    if (!v.is_string()) return std::nullopt;
    out.push_back(v.get<std::string>());
  }
  return out;
}

caf::error corrupt(const std::string& what, const std::string& id,
                   const std::string& value) {
  return make_error(errc::store_failure,
                    "stored " + what + " of '" + id + "' is corrupt: '" + value + "'");
}

// -- Row mapping --------------------------------------------------------------
//
// Each record has one column list; `bind_*` binds parameters ?1..?N in that
// order and `read_*` reads result columns 0..N-1 in that order. Keep the three
// in step: the round-trip tests catch a mismatch.

constexpr const char* run_columns[] = {
    "seq",
    "id",
    "plan",
    "selector",
    "scope",
    "target_agent",
    "assigned_agent",
    "params",
    "payload",
    "priority",
    "status",
    "reason",
    "exit_code",
    "result",
    "error",
    "attempts",
    "idempotency_key",
    "submitted_by",
    "timeout_s",
    "ttl_s",
    "cancel_requested",
    "cancel_reason",
    "progress",
    "created_at",
    "assigned_at",
    "delivered_at",
    "started_at",
    "finished_at",
    "last_activity_at",
    "cancel_requested_at",
    "concurrency_key",
    "retry_max",
    "retry_on",
    "retry_number",
    "retry_of",
    "retried_by",
    "queue_seq",
    // Last: every update sets it (see `update_run_sql`).
    "held_session",
};

void bind_run(statement& st, const run_record& r) {
  int i = 0;
  st.bind(++i, r.seq);
  st.bind(++i, r.id);
  st.bind(++i, r.plan);
  st.bind(++i, r.selector);
  st.bind(++i, r.scope);
  st.bind(++i, r.target_agent);
  st.bind(++i, r.assigned_agent);
  st.bind(++i, r.params);
  st.bind(++i, r.payload);
  st.bind(++i, r.priority);
  st.bind(++i, std::string{to_string(r.status)});
  st.bind(++i, r.reason);
  st.bind(++i, r.exit_code);
  st.bind(++i, r.result);
  st.bind(++i, r.error);
  st.bind(++i, r.attempts);
  st.bind(++i, r.idempotency_key);
  st.bind(++i, r.submitted_by);
  st.bind(++i, r.timeout_s);
  st.bind(++i, r.ttl_s);
  st.bind(++i, r.cancel_requested);
  st.bind(++i, r.cancel_reason);
  st.bind(++i, r.progress);
  st.bind(++i, r.created_at);
  st.bind(++i, r.assigned_at);
  st.bind(++i, r.delivered_at);
  st.bind(++i, r.started_at);
  st.bind(++i, r.finished_at);
  st.bind(++i, r.last_activity_at);
  st.bind(++i, r.cancel_requested_at);
  st.bind(++i, r.concurrency_key);
  st.bind(++i, r.retry_max);
  st.bind(++i, r.retry_on);
  st.bind(++i, r.retry_number);
  st.bind(++i, r.retry_of);
  st.bind(++i, r.retried_by);
  st.bind(++i, r.queue_seq);
  st.bind(++i, r.held_session);
}

caf::expected<run_record> read_run(const statement& st) {
  run_record r;
  int i = 0;
  r.seq = static_cast<uint64_t>(st.int64(i++));
  r.id = st.text(i++);
  r.plan = st.text(i++);
  r.selector = st.text(i++);
  r.scope = st.text(i++);
  r.target_agent = st.text(i++);
  r.assigned_agent = st.text(i++);
  r.params = st.text(i++);
  r.payload = st.text(i++);
  r.priority = st.int64(i++);
  auto status = st.text(i++);
  if (auto s = parse_run_status(status))
    r.status = *s;
  else
    return corrupt("status", r.id, status);
  r.reason = st.text(i++);
  r.exit_code = st.opt_int64(i++);
  r.result = st.text(i++);
  r.error = st.text(i++);
  r.attempts = st.int64(i++);
  r.idempotency_key = st.text(i++);
  r.submitted_by = st.text(i++);
  r.timeout_s = st.int64(i++);
  r.ttl_s = st.int64(i++);
  r.cancel_requested = st.int64(i++) != 0;
  r.cancel_reason = st.text(i++);
  r.progress = st.text(i++);
  r.created_at = st.time(i++);
  r.assigned_at = st.opt_time(i++);
  r.delivered_at = st.opt_time(i++);
  r.started_at = st.opt_time(i++);
  r.finished_at = st.opt_time(i++);
  r.last_activity_at = st.opt_time(i++);
  r.cancel_requested_at = st.opt_time(i++);
  r.concurrency_key = st.text(i++);
  r.retry_max = st.int64(i++);
  r.retry_on = st.text(i++);
  r.retry_number = st.int64(i++);
  r.retry_of = st.text(i++);
  r.retried_by = st.text(i++);
  r.queue_seq = static_cast<uint64_t>(st.int64(i++));
  r.held_session = st.int64(i++);
  return r;
}

constexpr const char* agent_columns[] = {
    "id",           "name",    "labels",   "plans",    "capacity",
    "status",       "version", "hostname", "scope",    "registered_at",
    "last_seen_at", "session", "drained",  "instance",
};

void bind_agent(statement& st, const agent_record& a) {
  int i = 0;
  st.bind(++i, a.id);
  st.bind(++i, a.name);
  st.bind(++i, dump_json(a.labels));
  st.bind(++i, dump_json(a.plans));
  st.bind(++i, a.capacity);
  st.bind(++i, std::string{to_string(a.status)});
  st.bind(++i, a.version);
  st.bind(++i, a.hostname);
  st.bind(++i, a.scope);
  st.bind(++i, a.registered_at);
  st.bind(++i, a.last_seen_at);
  st.bind(++i, a.session);
  // 1: drained; 2: drained by an admin, kept across registrations.
  st.bind(++i, int64_t{a.drained ? (a.drain_kept ? 2 : 1) : 0});
  st.bind(++i, a.instance);
}

caf::expected<agent_record> read_agent(const statement& st) {
  agent_record a;
  int i = 0;
  a.id = st.text(i++);
  a.name = st.text(i++);
  auto labels = st.text(i++);
  if (auto x = parse_labels(labels))
    a.labels = std::move(*x);
  else
    return corrupt("labels", a.id, labels);
  auto plans = st.text(i++);
  if (auto x = parse_strings(plans))
    a.plans = std::move(*x);
  else
    return corrupt("plans", a.id, plans);
  a.capacity = st.int64(i++);
  auto status = st.text(i++);
  if (auto s = parse_agent_status(status))
    a.status = *s;
  else
    return corrupt("status", a.id, status);
  a.version = st.text(i++);
  a.hostname = st.text(i++);
  a.scope = st.text(i++);
  a.registered_at = st.time(i++);
  a.last_seen_at = st.time(i++);
  a.session = st.int64(i++);
  // A `draining` agent stored before version 3 has no flag of its own.
  auto drained = st.int64(i++);
  a.drained = drained != 0 || a.status == agent_status::draining;
  a.drain_kept = drained == 2;
  a.instance = st.text(i++);
  return a;
}

constexpr const char* token_columns[] = {
    "id",       "kind",          "name",       "secret_hash", "scope",
    "agent_id", "agent_session", "created_at", "expires_at",  "revoked_at",
};

void bind_token(statement& st, const token_record& t) {
  int i = 0;
  st.bind(++i, t.id);
  st.bind(++i, std::string{to_string(t.kind)});
  st.bind(++i, t.name);
  st.bind(++i, t.secret_hash);
  st.bind(++i, t.scope);
  st.bind(++i, t.agent_id);
  st.bind(++i, t.agent_session);
  st.bind(++i, t.created_at);
  st.bind(++i, t.expires_at);
  st.bind(++i, t.revoked_at);
}

caf::expected<token_record> read_token(const statement& st) {
  token_record t;
  int i = 0;
  t.id = st.text(i++);
  auto kind = st.text(i++);
  if (auto k = parse_token_kind(kind))
    t.kind = *k;
  else
    return corrupt("kind", t.id, kind);
  t.name = st.text(i++);
  t.secret_hash = st.text(i++);
  t.scope = st.text(i++);
  t.agent_id = st.text(i++);
  t.agent_session = st.int64(i++);
  t.created_at = st.time(i++);
  t.expires_at = st.opt_time(i++);
  t.revoked_at = st.opt_time(i++);
  return t;
}

/// Columns run_id, name, size, sha256, created_at, in that order.
caf::expected<artifact_record> read_artifact(const statement& st) {
  artifact_record a;
  a.run_id = st.text(0);
  a.name = st.text(1);
  a.size = st.int64(2);
  a.sha256 = st.text(3);
  a.created_at = st.time(4);
  return a;
}

// -- SQL text -----------------------------------------------------------------

template <size_t N> std::string column_list(const char* const (&columns)[N]) {
  std::string out;
  for (auto c : columns) {
    if (!out.empty()) out += ", ";
    out += c;
  }
  return out;
}

template <size_t N> std::string placeholders(const char* const (&)[N]) {
  std::string out;
  for (size_t i = 1; i <= N; ++i)
    out += (i > 1 ? ", ?" : "?") + std::to_string(i);
  return out;
}

/// `INSERT ...` of every column, then `tail` (a conflict clause).
template <size_t N>
std::string insert_sql(const char* table, const char* const (&columns)[N],
                       const std::string& tail) {
  return std::string{"INSERT INTO "} + table + " (" + column_list(columns) +
         ") VALUES (" + placeholders(columns) + ") " + tail;
}

/// A whole-row upsert: every column but the key takes the new value.
template <size_t N>
std::string upsert_sql(const char* table, const char* const (&columns)[N],
                       const char* key) {
  std::string set;
  for (auto c : columns) {
    if (std::string_view{c} == key) continue;
    if (!set.empty()) set += ", ";
    set += std::string{c} + " = excluded." + c;
  }
  return insert_sql(table, columns,
                    std::string{"ON CONFLICT("} + key + ") DO UPDATE SET " + set);
}

template <size_t N>
std::string select_sql(const char* table, const char* const (&columns)[N]) {
  return std::string{"SELECT "} + column_list(columns) + " FROM " + table + " ";
}

const std::string& upsert_run_sql() {
  static const auto sql = upsert_sql("runs", run_columns, "id");
  return sql;
}

/// The columns a run's life changes; the others are fixed at submission.
/// A write sets those of them that changed: SQLite maintains an index on
/// every write that names one of its columns, changed or not (plan and
/// idempotency key never; status, finished_at and the agent only when they
/// move). Bit i of a `run_fields` stands for entry i; `same` compares the
/// field of two records.
struct mutable_column {
  const char* name;
  bool (*same)(const run_record&, const run_record&);
};

constexpr mutable_column run_mutable_columns[] = {
    {"assigned_agent",
     [](auto& a, auto& b) { return a.assigned_agent == b.assigned_agent; }},
    {"status", [](auto& a, auto& b) { return a.status == b.status; }},
    {"reason", [](auto& a, auto& b) { return a.reason == b.reason; }},
    {"exit_code", [](auto& a, auto& b) { return a.exit_code == b.exit_code; }},
    {"result", [](auto& a, auto& b) { return a.result == b.result; }},
    {"error", [](auto& a, auto& b) { return a.error == b.error; }},
    {"attempts", [](auto& a, auto& b) { return a.attempts == b.attempts; }},
    {"cancel_requested",
     [](auto& a, auto& b) { return a.cancel_requested == b.cancel_requested; }},
    {"cancel_reason",
     [](auto& a, auto& b) { return a.cancel_reason == b.cancel_reason; }},
    {"progress", [](auto& a, auto& b) { return a.progress == b.progress; }},
    {"assigned_at", [](auto& a, auto& b) { return a.assigned_at == b.assigned_at; }},
    {"delivered_at", [](auto& a, auto& b) { return a.delivered_at == b.delivered_at; }},
    {"started_at", [](auto& a, auto& b) { return a.started_at == b.started_at; }},
    {"finished_at", [](auto& a, auto& b) { return a.finished_at == b.finished_at; }},
    {"last_activity_at",
     [](auto& a, auto& b) { return a.last_activity_at == b.last_activity_at; }},
    {"cancel_requested_at",
     [](auto& a, auto& b) { return a.cancel_requested_at == b.cancel_requested_at; }},
    {"retried_by", [](auto& a, auto& b) { return a.retried_by == b.retried_by; }},
    {"held_session", [](auto& a, auto& b) { return a.held_session == b.held_session; }},
};
static_assert(std::size(run_mutable_columns) == run_lifecycle_fields,
              "run_lifecycle_fields counts run_mutable_columns");
static_assert(std::string_view{run_mutable_columns[run_lifecycle_fields - 1].name} ==
                  "held_session",
              "update_sql_for sets the last bit's column in every update");

/// The bit of the mutable column `name` in a `run_fields`.
constexpr run_fields run_field_bit(std::string_view name) {
  for (size_t i = 0; i < std::size(run_mutable_columns); ++i)
    if (name == run_mutable_columns[i].name) return run_fields{1} << i;
  throw std::logic_error{"not a mutable run column"};
}

/// `UPDATE runs SET <the mutable columns in fields> WHERE id`, with
/// `bind_run`'s numbering: the statement names ?N by the column's position
/// in `run_columns`.
std::string update_run_sql(run_fields fields) {
  auto position = [](std::string_view name) {
    for (size_t i = 0; i < std::size(run_columns); ++i)
      if (name == run_columns[i]) return i + 1;
    throw std::logic_error{"unknown run column"};
  };
  std::string set;
  for (size_t i = 0; i < std::size(run_mutable_columns); ++i) {
    if ((fields & (run_fields{1} << i)) == 0) continue;
    auto c = run_mutable_columns[i].name;
    if (!set.empty()) set += ", ";
    set += std::string{c} + " = ?" + std::to_string(position(c));
  }
  // bind_run binds every column, so the last one must be named
  // (`update_sql_for` always sets it).
  if (set.find(run_columns[std::size(run_columns) - 1]) == std::string::npos)
    throw std::logic_error{"last column not set"};
  return "UPDATE runs SET " + set + " WHERE id = ?" + std::to_string(position("id"));
}

// An `insert_only` run never overwrites: a taken key or id leaves the row
// alone. The conflict targets are named so that any other conflict (a taken
// `seq`, a bug) still fails the batch instead of vanishing.
const std::string& insert_run_sql() {
  static const auto sql =
      insert_sql("runs", run_columns,
                 "ON CONFLICT(idempotency_key) WHERE idempotency_key <> '' DO NOTHING "
                 "ON CONFLICT(id) DO NOTHING");
  return sql;
}

const std::string& select_runs_sql() {
  static const auto sql = select_sql("runs", run_columns);
  return sql;
}

const std::string& upsert_agent_sql() {
  static const auto sql = upsert_sql("agents", agent_columns, "id");
  return sql;
}

const std::string& select_agents_sql() {
  static const auto sql = select_sql("agents", agent_columns);
  return sql;
}

const std::string& upsert_token_sql() {
  static const auto sql = upsert_sql("tokens", token_columns, "id");
  return sql;
}

const std::string& select_tokens_sql() {
  static const auto sql = select_sql("tokens", token_columns);
  return sql;
}

/// Steps `st` to the end, reading each row with `read` into `out`, or
/// until `more()` says no before a row (the rows read are then the answer).
template <class T, class Read, class More = bool (*)()>
caf::error read_all(
    connection& db, statement& st, Read read, std::vector<T>& out,
    const std::string& what, More more = [] { return true; }) {
  int rc = SQLITE_DONE;
  while (more() && (rc = st.step()) == SQLITE_ROW) {
    auto x = read(st);
    if (!x) return std::move(x.error());
    out.push_back(std::move(*x));
  }
  return rc == SQLITE_DONE || rc == SQLITE_ROW ? caf::error{} : db.fail(what);
}

/// At most one row of `st`, read with `read`.
template <class Read>
auto read_one(connection& db, statement& st, Read read, const std::string& what)
    -> caf::expected<std::optional<typename decltype(read(st))::value_type>> {
  using value_type = typename decltype(read(st))::value_type;
  switch (st.step()) {
  case SQLITE_DONE: return std::optional<value_type>{};
  case SQLITE_ROW: {
    auto x = read(st);
    if (!x) return std::move(x.error());
    return std::optional<value_type>{std::move(*x)};
  }
  default: return db.fail(what);
  }
}

/// The bytes of an artifact's first part (in `run_artifacts`) and of each
/// part after it (in `run_artifact_parts`).
constexpr size_t artifact_part_bytes = size_t{1} << 20;

int64_t clamp_to_int64(size_t n) {
  return static_cast<int64_t>(
      std::min<uint64_t>(n, static_cast<uint64_t>(std::numeric_limits<int64_t>::max())));
}

// -- Cursors ------------------------------------------------------------------
//
// A cursor is "s" followed by the decimal seq of the last run of the previous
// page, without leading zeros. The next page holds runs with a smaller seq, so
// runs created meanwhile (larger seqs) never shift it.

std::string encode_cursor(uint64_t seq) {
  return "s" + std::to_string(seq);
}

caf::expected<int64_t> decode_cursor(const std::string& cursor) {
  auto bad = [&] {
    return make_error(errc::invalid_argument,
                      "cursor '" + cursor + "' is not one this server returned",
                      "cursor");
  };
  if (cursor.size() < 2 || cursor[0] != 's' || (cursor[1] == '0' && cursor.size() > 2))
    return bad();
  int64_t seq = 0;
  auto first = cursor.data() + 1;
  auto last = cursor.data() + cursor.size();
  if (!std::all_of(first, last, [](char c) { return c >= '0' && c <= '9'; }))
    return bad();
  auto [end, ec] = std::from_chars(first, last, seq);
  if (ec != std::errc{} || end != last) return bad();
  return seq;
}

// -- Opening ------------------------------------------------------------------

/// SQLite's special names: a private in-memory or temporary database, which
/// has no directory to create and may not support WAL.
bool is_special(const std::string& path) {
  return path.empty() || path == ":memory:";
}

caf::error check_options(const store_options& options) {
  if (options.synchronous != "full" && options.synchronous != "normal")
    return make_error(errc::invalid_argument,
                      "synchronous must be 'full' or 'normal', not '" +
                          options.synchronous + "'",
                      "store.synchronous");
  if (options.secure_delete != "fast" && options.secure_delete != "full")
    return make_error(errc::invalid_argument,
                      "secure_delete must be 'fast' or 'full', not '" +
                          options.secure_delete + "'",
                      "store.secure_delete");
  return {};
}

caf::error make_parent_dirs(const std::string& path) {
  if (is_special(path)) return {};
  auto parent = std::filesystem::path{path}.parent_path();
  if (parent.empty()) return {};
  std::error_code ec;
  std::filesystem::create_directories(parent, ec);
  if (ec)
    return make_error(errc::store_failure, "cannot create directory '" + parent.string() +
                                               "' for the database: " + ec.message());
  return {};
}

/// Brings a writable database to `sqlite_schema_version`, in one transaction
/// so that two processes opening a fresh file cannot both migrate it.
caf::error migrate(connection& db) {
  transaction txn{db};
  if (auto err = txn.begin(true)) return err;
  auto version = db.query_int("PRAGMA user_version", "cannot read schema version");
  if (!version) return std::move(version.error());
  if (*version < 0)
    return make_error(errc::store_failure, "database schema version " +
                                               std::to_string(*version) + " is invalid");
  if (*version > sqlite_schema_version)
    return make_error(errc::store_failure,
                      "database schema version " + std::to_string(*version) +
                          " is newer than this build supports (" +
                          std::to_string(sqlite_schema_version) + ")");
  for (auto v = *version; v < sqlite_schema_version; ++v) {
    auto to = std::to_string(v + 1);
    if (auto err = db.exec_script(sqlite_migrations[v],
                                  "cannot migrate schema to version " + to))
      return err;
    // Pragmas take no parameters; `to` is a number we formatted.
    if (auto err = db.exec_script(("PRAGMA user_version = " + to).c_str(),
                                  "cannot record schema version " + to))
      return err;
  }
  if (auto err = txn.commit()) return err;
  // An upgrade's one trace (a new database, version 0, says so elsewhere).
  if (*version > 0 && *version < sqlite_schema_version)
    log(log_level::info, "store: migrated the database's schema from version " +
                             std::to_string(*version) + " to " +
                             std::to_string(sqlite_schema_version));
  return {};
}

/// A read-only connection cannot migrate, so it insists on the exact version.
caf::error check_version(connection& db) {
  auto version = db.query_int("PRAGMA user_version", "cannot read schema version");
  if (!version) return std::move(version.error());
  if (*version != sqlite_schema_version)
    return make_error(errc::store_failure, "database schema version " +
                                               std::to_string(*version) +
                                               " is not this build's (" +
                                               std::to_string(sqlite_schema_version) +
                                               "); open it writable first to migrate it");
  return {};
}

// -- The store ----------------------------------------------------------------

class sqlite_store final : public store {
public:
  sqlite_store(connection db, duration prune_hold)
      : db_(std::move(db))
      , prune_hold_(prune_hold) {}

  caf::expected<std::vector<write_outcome>>
  apply(const std::vector<write>& batch) override {
    std::vector<write_outcome> out;
    if (batch.empty()) return out;
    out.reserve(batch.size());
    transaction txn{db_};
    if (auto err = txn.begin(true)) return err;
    for (auto& w : batch) {
      auto outcome = std::visit([this](const auto& x) { return write_one(x); }, w);
      if (!outcome) return std::move(outcome.error());
      out.push_back(std::move(*outcome));
    }
    if (auto err = txn.commit()) return err;
    return out;
  }

  caf::expected<snapshot> load(timestamp deregistered_since) override {
    snapshot out;
    // One read transaction, so that the four reads see the same commit.
    transaction txn{db_};
    if (auto err = txn.begin(false)) return err;
    {
      // The bootstrap admin token even when revoked: a revoked
      // POLYMESH_ADMIN_TOKEN must not come back at the next start.
      auto st =
          db_.prepare(select_tokens_sql() +
                      "WHERE revoked_at IS NULL OR id = 'admin' ORDER BY created_at, id");
      if (!st) return std::move(st.error());
      if (auto err = read_all(db_, *st, read_token, out.tokens, "cannot load tokens"))
        return err;
    }
    {
      auto st = db_.prepare(select_agents_sql() +
                            "WHERE status <> 'deregistered' ORDER BY name, id");
      if (!st) return std::move(st.error());
      if (auto err = read_all(db_, *st, read_agent, out.agents, "cannot load agents"))
        return err;
    }
    {
      // SQLite takes a bare column of a MAX() aggregate from the row that
      // has the maximum: the labels of the name's agent last seen.
      auto st = db_.prepare(
          "SELECT name, labels, MAX(last_seen_at) FROM agents"
          " WHERE status = 'deregistered' AND last_seen_at >= ?1"
          " AND name NOT IN (SELECT name FROM agents WHERE status <> 'deregistered')"
          " GROUP BY name");
      if (!st) return std::move(st.error());
      st->bind(1, deregistered_since);
      auto read_left = [](const statement& row) -> caf::expected<left_agent> {
        left_agent a;
        a.name = row.text(0);
        auto labels = row.text(1);
        if (auto x = parse_labels(labels))
          a.labels = std::move(*x);
        else
          return corrupt("labels", a.name, labels);
        a.last_seen_at = row.time(2);
        return a;
      };
      if (auto err = read_all(db_, *st, read_left, out.left, "cannot load agents"))
        return err;
    }
    {
      // The WHERE clause repeats the partial index's own, which is what lets
      // SQLite use it; INDEXED BY turns a missing index into a loud failure
      // rather than a silent scan of every finished run.
      auto st = db_.prepare(std::string{"SELECT "} + column_list(run_columns) +
                            " FROM runs INDEXED BY runs_unfinished"
                            " WHERE status = 'created' OR status = 'pending'"
                            " OR status = 'running'"
                            " ORDER BY seq");
      if (!st) return std::move(st.error());
      if (auto err = read_all(db_, *st, read_run, out.runs, "cannot load runs"))
        return err;
    }
    auto max_seq = db_.query_int(
        "SELECT MAX(COALESCE((SELECT MAX(seq) FROM runs), 0),"
        " COALESCE((SELECT value FROM meta WHERE key = 'max_pruned_seq'), 0))",
        "cannot load the highest run seq");
    if (!max_seq) return std::move(max_seq.error());
    out.max_seq = static_cast<uint64_t>(*max_seq);
    auto alive_at = db_.query_int(
        "SELECT COALESCE((SELECT value FROM meta WHERE key = 'alive_at'), -1)",
        "cannot load when meshd last ran");
    if (!alive_at) return std::move(alive_at.error());
    if (*alive_at >= 0) out.alive_at = from_unix_ms(*alive_at);
    if (auto err = txn.commit()) return err;
    return out;
  }

  caf::expected<std::optional<run_record>> get_run(const std::string& id) override {
    auto st = db_.prepare(select_runs_sql() + "WHERE id = ?1");
    if (!st) return std::move(st.error());
    st->bind(1, id);
    return read_one(db_, *st, read_run, "cannot read run '" + id + "'");
  }

  caf::expected<run_page> list_runs(const run_filter& filter) override {
    std::optional<int64_t> before;
    if (!filter.cursor.empty()) {
      auto seq = decode_cursor(filter.cursor);
      if (!seq) return std::move(seq.error());
      before = *seq;
    }
    auto limit = std::clamp(filter.limit, min_page, max_page);
    auto st = db_.prepare(sqlite_list_runs_sql(filter, before.has_value()));
    if (!st) return std::move(st.error());
    if (filter.status) st->bind(1, std::string{to_string(*filter.status)});
    if (!filter.plan.empty()) st->bind(2, filter.plan);
    if (!filter.agent.empty()) st->bind(3, filter.agent);
    if (!filter.concurrency_key.empty()) st->bind(6, filter.concurrency_key);
    if (before) st->bind(4, *before);
    // One row more than asked tells whether another page follows.
    st->bind(5, static_cast<int64_t>(limit + 1));
    run_page out;
    if (auto err = read_all(db_, *st, read_run, out.runs, "cannot list runs")) return err;
    if (out.runs.size() > limit) {
      out.runs.pop_back();
      out.next_cursor = encode_cursor(out.runs.back().seq);
    }
    return out;
  }

  caf::expected<log_page> logs(const std::string& run_id, int64_t after_seq, size_t limit,
                               size_t max_bytes) override {
    auto st = db_.prepare("SELECT seq, stream, data, at FROM run_logs"
                          " WHERE run_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3");
    if (!st) return std::move(st.error());
    st->bind(1, run_id);
    st->bind(2, after_seq);
    // One row past the page tells whether more follows.
    st->bind(3, clamp_to_int64(limit == SIZE_MAX ? limit : limit + 1));
    log_page out;
    size_t bytes = 0;
    bool full = false;
    auto read = [&bytes](const statement& s) -> caf::expected<log_chunk> {
      log_chunk c;
      c.seq = s.int64(0);
      c.stream = s.text(1);
      c.data = s.text(2);
      c.at = s.time(3);
      bytes += c.data.size();
      return c;
    };
    const auto what = "cannot read logs of run '" + run_id + "'";
    if (auto err = read_all(db_, *st, read, out.chunks, what, [&] {
          full =
              out.chunks.size() == limit || (!out.chunks.empty() && bytes >= max_bytes);
          return !full;
        }))
      return err;
    if (full) {
      auto rc = st->step();
      if (rc != SQLITE_ROW && rc != SQLITE_DONE) return db_.fail(what);
      out.more = rc == SQLITE_ROW;
    }
    return out;
  }

  caf::expected<int64_t> log_bytes(const std::string& run_id) override {
    auto kept = db_.prepare("SELECT bytes FROM run_log_sizes WHERE run_id = ?1");
    if (!kept) return std::move(kept.error());
    kept->bind(1, run_id);
    auto rc = kept->step();
    if (rc == SQLITE_ROW) return kept->int64(0);
    if (rc != SQLITE_DONE) return db_.fail("cannot size the log of run '" + run_id + "'");
    // None kept: no log, or one stored before the schema's version 12.
    auto st = db_.prepare("SELECT COALESCE(SUM(length(CAST(data AS BLOB))), 0)"
                          " FROM run_logs WHERE run_id = ?1");
    if (!st) return std::move(st.error());
    st->bind(1, run_id);
    if (st->step() != SQLITE_ROW)
      return db_.fail("cannot size the log of run '" + run_id + "'");
    return st->int64(0);
  }

  caf::expected<std::vector<int64_t>>
  stored_log_seqs(const std::string& run_id, const std::vector<int64_t>& seqs) override {
    std::vector<int64_t> out;
    for (auto seq : seqs) {
      // A cached statement: preparing it again is a lookup, and its end
      // resets it for the next seq.
      auto st = db_.prepare("SELECT 1 FROM run_logs WHERE run_id = ?1 AND seq = ?2");
      if (!st) return std::move(st.error());
      st->bind(1, run_id);
      st->bind(2, seq);
      auto rc = st->step();
      if (rc == SQLITE_ROW)
        out.push_back(seq);
      else if (rc != SQLITE_DONE)
        return db_.fail("cannot look up log chunk " + std::to_string(seq) + " of run '" +
                        run_id + "'");
    }
    return out;
  }

  caf::expected<std::vector<artifact_record>>
  list_artifacts(const std::string& run_id) override {
    auto st = db_.prepare("SELECT run_id, name, size, sha256, created_at"
                          " FROM run_artifacts WHERE run_id = ?1 ORDER BY name");
    if (!st) return std::move(st.error());
    st->bind(1, run_id);
    std::vector<artifact_record> out;
    if (auto err = read_all(db_, *st, read_artifact, out,
                            "cannot list artifacts of run '" + run_id + "'"))
      return err;
    return out;
  }

  caf::expected<std::optional<artifact_blob>> get_artifact(const std::string& run_id,
                                                           const std::string& name,
                                                           int64_t offset,
                                                           size_t max_bytes) override {
    auto st =
        db_.prepare("SELECT run_id, name, size, sha256, created_at, rowid, length(data)"
                    " FROM run_artifacts WHERE run_id = ?1 AND name = ?2");
    if (!st) return std::move(st.error());
    st->bind(1, run_id);
    st->bind(2, name);
    auto what = "cannot read artifact '" + name + "' of run '" + run_id + "'";
    auto read = [&](const statement& s) -> caf::expected<artifact_blob> {
      auto meta = read_artifact(s);
      if (!meta) return std::move(meta.error());
      artifact_blob out{std::move(*meta), std::clamp<int64_t>(offset, 0, meta->size), {}};
      auto n =
          std::min<int64_t>(clamp_to_int64(max_bytes), out.artifact.size - out.offset);
      if (n <= 0) return out;
      auto first = s.int64(6);
      if (out.offset >= first) {
        if (auto err = read_artifact_part(run_id, name, out.offset, n, out.data))
          return err;
        return out;
      }
      // The first part: the incremental blob API reads only the pages
      // holding what is asked for. Of an artifact stored whole before
      // version 9, at least an eighth at a time (16 MiB at most): each read
      // at an offset walks the value's overflow pages from its start, so
      // parts of 1 MiB would cost a download time growing with the square of
      // its size.
      if (first > static_cast<int64_t>(artifact_part_bytes))
        n = std::max(n, std::min<int64_t>((first + 7) / 8, 16 * artifact_part_bytes));
      n = std::min(n, first - out.offset);
      sqlite3_blob* blob = nullptr;
      if (sqlite3_blob_open(db_.get(), "main", "run_artifacts", "data", s.int64(5), 0,
                            &blob) != SQLITE_OK) {
        sqlite3_blob_close(blob);
        return db_.fail(what);
      }
      out.data.resize(static_cast<size_t>(n));
      auto rc = sqlite3_blob_read(blob, out.data.data(), static_cast<int>(n),
                                  static_cast<int>(out.offset));
      if (rc != SQLITE_OK) {
        auto err = db_.fail(what);
        sqlite3_blob_close(blob);
        return err;
      }
      sqlite3_blob_close(blob);
      return out;
    };
    return read_one(db_, *st, read, what);
  }

  /// At most `n` bytes from `offset` of the part of `run_id`'s artifact
  /// `name` that holds that byte, into `out`.
  caf::error read_artifact_part(const std::string& run_id, const std::string& name,
                                int64_t offset, int64_t n, std::string& out) {
    auto what = "cannot read artifact '" + name + "' of run '" + run_id + "' at byte " +
                std::to_string(offset);
    auto st = db_.prepare("SELECT start, data FROM run_artifact_parts"
                          " WHERE run_id = ?1 AND name = ?2 AND start <= ?3"
                          " ORDER BY start DESC LIMIT 1");
    if (!st) return std::move(st.error());
    st->bind(1, run_id);
    st->bind(2, name);
    st->bind(3, offset);
    auto rc = st->step();
    if (rc == SQLITE_DONE)
      return make_error(errc::store_failure, what + ": the part holding it is missing");
    if (rc != SQLITE_ROW) return db_.fail(what);
    auto start = st->int64(0);
    auto bytes = st->blob_view(1);
    auto skip = static_cast<size_t>(offset - start);
    if (skip >= bytes.size())
      return make_error(errc::store_failure, what + ": the part holding it is missing");
    out = bytes.substr(skip, static_cast<size_t>(n));
    return {};
  }

  caf::expected<std::optional<agent_record>> get_agent(const std::string& id) override {
    auto st = db_.prepare(select_agents_sql() + "WHERE id = ?1");
    if (!st) return std::move(st.error());
    st->bind(1, id);
    return read_one(db_, *st, read_agent, "cannot read agent '" + id + "'");
  }

  caf::expected<std::vector<agent_record>> list_agents() override {
    auto st = db_.prepare(select_agents_sql() + "ORDER BY name, id");
    if (!st) return std::move(st.error());
    std::vector<agent_record> out;
    if (auto err = read_all(db_, *st, read_agent, out, "cannot list agents")) return err;
    return out;
  }

  caf::expected<std::vector<token_record>> list_tokens() override {
    auto st = db_.prepare(select_tokens_sql() + "ORDER BY created_at, id");
    if (!st) return std::move(st.error());
    std::vector<token_record> out;
    if (auto err = read_all(db_, *st, read_token, out, "cannot list tokens")) return err;
    return out;
  }

  caf::expected<size_t> prune(timestamp cutoff, size_t max_rows) override {
    if (max_rows == 0) return size_t{0};
    auto began = std::chrono::steady_clock::now();
    transaction txn{db_};
    if (auto err = txn.begin(true)) return err;
    {
      // An agent renews its access token every two thirds of its life, and
      // each renewal is a row: those that expired, or were revoked, before
      // the cutoff go too (a few per run of the loop; the next one goes on).
      auto st =
          db_.prepare("DELETE FROM tokens WHERE id IN (SELECT id FROM tokens"
                      " WHERE kind = 'agent' AND (expires_at < ?1 OR revoked_at < ?1)"
                      " LIMIT ?2)");
      if (!st) return std::move(st.error());
      st->bind(1, cutoff);
      st->bind(2, clamp_to_int64(max_rows));
      if (st->step() != SQLITE_DONE) return db_.fail("cannot prune agent tokens");
    }
    std::vector<std::pair<int64_t, std::string>> victims;
    {
      // Without INDEXED BY the planner prefers `runs_by_status`, which here
      // means reading and sorting every finished run to delete a few.
      auto st = db_.prepare("SELECT seq, id FROM runs INDEXED BY runs_by_finished_at"
                            " WHERE finished_at < ?1"
                            " AND status IN ('success', 'error', 'canceled')"
                            " ORDER BY finished_at, seq LIMIT ?2");
      if (!st) return std::move(st.error());
      st->bind(1, cutoff);
      st->bind(2, clamp_to_int64(max_rows));
      auto read =
          [](const statement& s) -> caf::expected<std::pair<int64_t, std::string>> {
        return std::pair{s.int64(0), s.text(1)};
      };
      if (auto err = read_all(db_, *st, read, victims, "cannot select runs to prune"))
        return err;
    }
    if (victims.empty()) {
      if (auto err = txn.commit()) return err;
      return size_t{0};
    }
    // Remember the highest seq before it can vanish (see `meta` in the schema).
    if (auto err = db_.exec("INSERT INTO meta (key, value)"
                            " SELECT 'max_pruned_seq', COALESCE(MAX(seq), 0) FROM runs"
                            " WHERE 1 ON CONFLICT(key) DO UPDATE"
                            " SET value = MAX(value, excluded.value)",
                            "cannot record the highest run seq"))
      return err;
    // Every other write waits while this runs (0.7 s per GiB of logs): past
    // `prune_hold_` the runs deleted so far are committed, and the caller
    // asks again.
    size_t deleted = 0;
    for (auto& [seq, id] : victims) {
      if (deleted > 0 && std::chrono::steady_clock::now() - began >= prune_hold_) break;
      ++deleted;
      for (auto* table :
           {"run_logs", "run_log_sizes", "run_artifacts", "run_artifact_parts"}) {
        auto st = db_.prepare(std::string{"DELETE FROM "} + table + " WHERE run_id = ?1");
        if (!st) return std::move(st.error());
        st->bind(1, id);
        if (st->step() != SQLITE_DONE)
          return db_.fail(std::string{"cannot prune "} + table + " of run '" + id + "'");
      }
      auto st = db_.prepare("DELETE FROM runs WHERE seq = ?1");
      if (!st) return std::move(st.error());
      st->bind(1, seq);
      if (st->step() != SQLITE_DONE) return db_.fail("cannot prune run '" + id + "'");
    }
    if (auto err = txn.commit()) return err;
    return deleted;
  }

  caf::expected<std::vector<std::pair<run_status, int64_t>>> count_runs() override {
    static constexpr run_status all[] = {run_status::created, run_status::pending,
                                         run_status::running, run_status::success,
                                         run_status::error,   run_status::canceled};
    std::vector<std::pair<run_status, int64_t>> out;
    for (auto s : all)
      out.emplace_back(s, 0);
    // One read transaction, so that a run ending meanwhile is counted once.
    transaction txn{db_};
    if (auto err = txn.begin(false)) return err;
    // Unfinished runs are counted, each status on its own index range.
    for (auto s : all) {
      if (is_terminal(s)) continue;
      auto st = db_.prepare("SELECT COUNT(*) FROM runs WHERE status = ?1");
      if (!st) return std::move(st.error());
      st->bind(1, std::string{to_string(s)});
      if (st->step() != SQLITE_ROW) return db_.fail("cannot count runs");
      out[static_cast<size_t>(s)].second = st->int64(0);
    }
    // Finished runs are counted as they are written: by the schema's
    // triggers (versions 10, 11) and `write_one` for one inserted finished.
    auto st = db_.prepare("SELECT status, n FROM run_counts");
    if (!st) return std::move(st.error());
    int rc;
    while ((rc = st->step()) == SQLITE_ROW) {
      auto text = st->text(0);
      auto s = parse_run_status(text);
      if (!s || !is_terminal(*s)) return corrupt("status", "run_counts", text);
      auto n = st->int64(1);
      if (n < 0) return corrupt("count", text, std::to_string(n));
      out[static_cast<size_t>(*s)].second = n;
    }
    if (rc != SQLITE_DONE) return db_.fail("cannot read the counts of finished runs");
    return out;
  }

private:
  caf::expected<write_outcome> write_one(const put_run& w) {
    if (!w.insert_only) {
      // The usual case: a run already stored changes state.
      auto up = db_.prepare(update_sql_for(w.changed));
      if (!up) return std::move(up.error());
      bind_run(*up, w.run);
      if (up->step() != SQLITE_DONE)
        return db_.fail("cannot update run '" + w.run.id + "'");
      if (sqlite3_changes(db_.get()) > 0) return write_outcome{};
    }
    auto st = db_.prepare(w.insert_only ? insert_run_sql() : upsert_run_sql());
    if (!st) return std::move(st.error());
    bind_run(*st, w.run);
    if (st->step() != SQLITE_DONE) return db_.fail("cannot write run '" + w.run.id + "'");
    write_outcome out;
    // Here the upsert inserts (the update above found no row), and so does
    // an `insert_only` that changed something.
    bool inserted = !w.insert_only || sqlite3_changes(db_.get()) > 0;
    if (inserted && is_terminal(w.run.status)) {
      // The schema's triggers count the runs that end, not those inserted
      // ended (version 11).
      auto count = db_.prepare("INSERT INTO run_counts (status, n) VALUES (?1, 1)"
                               " ON CONFLICT(status) DO UPDATE SET n = n + 1");
      if (!count) return std::move(count.error());
      count->bind(1, std::string{to_string(w.run.status)});
      if (count->step() != SQLITE_DONE)
        return db_.fail("cannot count finished run '" + w.run.id + "'");
    }
    if (inserted) return out;
    // Refused: name the holder of the key, or else the run is already there.
    out.written = false;
    out.existing_id = w.run.id;
    if (!w.run.idempotency_key.empty()) {
      auto q = db_.prepare("SELECT id FROM runs"
                           " WHERE idempotency_key = ?1 AND idempotency_key <> ''");
      if (!q) return std::move(q.error());
      q->bind(1, w.run.idempotency_key);
      auto rc = q->step();
      if (rc == SQLITE_ROW)
        out.existing_id = q->text(0);
      else if (rc != SQLITE_DONE)
        return db_.fail("cannot find the holder of idempotency key '" +
                        w.run.idempotency_key + "'");
    }
    return out;
  }

  caf::expected<write_outcome> write_one(const put_agent& w) {
    auto st = db_.prepare(upsert_agent_sql());
    if (!st) return std::move(st.error());
    bind_agent(*st, w.agent);
    if (st->step() != SQLITE_DONE)
      return db_.fail("cannot write agent '" + w.agent.id + "'");
    return write_outcome{};
  }

  caf::expected<write_outcome> write_one(const put_token& w) {
    auto st = db_.prepare(upsert_token_sql());
    if (!st) return std::move(st.error());
    bind_token(*st, w.token);
    if (st->step() != SQLITE_DONE)
      return db_.fail("cannot write token '" + w.token.id + "'");
    return write_outcome{};
  }

  caf::expected<write_outcome> write_one(const delete_forgotten_agents& w) {
    auto st =
        db_.prepare("DELETE FROM agents WHERE id IN (SELECT id FROM agents"
                    " WHERE status = 'deregistered' AND last_seen_at < ?1 LIMIT ?2)");
    if (!st) return std::move(st.error());
    st->bind(1, w.last_seen_before);
    st->bind(2, w.max_rows);
    if (st->step() != SQLITE_DONE) return db_.fail("cannot delete forgotten agents");
    return write_outcome{};
  }

  caf::expected<write_outcome> write_one(const stamp_alive& w) {
    auto st = db_.prepare("INSERT INTO meta (key, value) VALUES ('alive_at', ?1)"
                          " ON CONFLICT(key) DO UPDATE SET value = excluded.value");
    if (!st) return std::move(st.error());
    st->bind(1, w.at);
    if (st->step() != SQLITE_DONE) return db_.fail("cannot record that meshd runs");
    return write_outcome{};
  }

  caf::expected<write_outcome> write_one(const append_log& w) {
    auto st = db_.prepare("INSERT OR IGNORE INTO run_logs (run_id, seq, stream, data, at)"
                          " VALUES (?1, ?2, ?3, ?4, ?5)");
    if (!st) return std::move(st.error());
    st->bind(1, w.run_id);
    st->bind(2, w.chunk.seq);
    st->bind(3, w.chunk.stream);
    st->bind(4, w.chunk.data);
    st->bind(5, w.chunk.at);
    if (st->step() != SQLITE_DONE)
      return db_.fail("cannot append log chunk " + std::to_string(w.chunk.seq) +
                      " of run '" + w.run_id + "'");
    // A chunk whose seq the run already has is a retried upload: not written.
    write_outcome out;
    out.written = sqlite3_changes(db_.get()) > 0;
    if (out.written)
      if (auto err = count_log_bytes(w.run_id, static_cast<int64_t>(w.chunk.data.size())))
        return err;
    return out;
  }

  /// Adds a chunk just written to its run's kept log size (the schema's
  /// version 12); the first chunk of a run without a kept size sums the
  /// run's whole log, this chunk included.
  caf::error count_log_bytes(const std::string& run_id, int64_t bytes) {
    auto what = "cannot count the log bytes of run '" + run_id + "'";
    auto add =
        db_.prepare("UPDATE run_log_sizes SET bytes = bytes + ?2 WHERE run_id = ?1");
    if (!add) return std::move(add.error());
    add->bind(1, run_id);
    add->bind(2, bytes);
    if (add->step() != SQLITE_DONE) return db_.fail(what);
    if (sqlite3_changes(db_.get()) > 0) return {};
    auto first = db_.prepare("INSERT INTO run_log_sizes (run_id, bytes)"
                             " SELECT ?1, SUM(length(CAST(data AS BLOB)))"
                             " FROM run_logs WHERE run_id = ?1");
    if (!first) return std::move(first.error());
    first->bind(1, run_id);
    if (first->step() != SQLITE_DONE) return db_.fail(what);
    return {};
  }

  /// Whether run `run_id` is stored (retention may have deleted it).
  caf::expected<bool> run_stored(const std::string& run_id) {
    auto st = db_.prepare("SELECT 1 FROM runs WHERE id = ?1");
    if (!st) return std::move(st.error());
    st->bind(1, run_id);
    auto rc = st->step();
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
      return db_.fail("cannot look up run '" + run_id + "'");
    return rc == SQLITE_ROW;
  }

  static write_outcome refused(caf::error why) {
    write_outcome out;
    out.written = false;
    out.refused = std::move(why);
    return out;
  }

  static caf::error no_run(const std::string& run_id) {
    return make_error(errc::not_found, "no run with id '" + run_id + "'", "id");
  }

  caf::expected<write_outcome> write_one(const append_late_logs& w) {
    auto stored_run = run_stored(w.run_id);
    if (!stored_run) return std::move(stored_run.error());
    if (!*stored_run) return refused(no_run(w.run_id));
    if (w.max_bytes > 0) {
      auto held = log_bytes(w.run_id);
      if (!held) return std::move(held.error());
      auto stored = stored_log_seqs(w.run_id, seqs_of(w.chunks));
      if (!stored) return std::move(stored.error());
      if (auto err = check_log_room(w.max_bytes, w.run_id, *held, w.chunks, *stored))
        return refused(std::move(err));
    }
    write_outcome out;
    out.written = false;
    for (auto& chunk : w.chunks) {
      auto one = write_one(append_log{w.run_id, chunk});
      if (!one) return one;
      out.written = out.written || one->written;
    }
    return out;
  }

  caf::expected<write_outcome> write_one(const put_artifact& w) {
    auto& a = w.artifact;
    if (w.max_artifacts) {
      auto stored_run = run_stored(a.run_id);
      if (!stored_run) return std::move(stored_run.error());
      if (!*stored_run) return refused(no_run(a.run_id));
      auto count = db_.prepare("SELECT COUNT(*), COALESCE(SUM(name = ?2), 0)"
                               " FROM run_artifacts WHERE run_id = ?1");
      if (!count) return std::move(count.error());
      count->bind(1, a.run_id);
      count->bind(2, a.name);
      if (count->step() != SQLITE_ROW)
        return db_.fail("cannot count the artifacts of run '" + a.run_id + "'");
      // A name it holds is answered below (the same bytes, or a conflict).
      if (count->int64(1) == 0)
        if (auto err = check_artifact_room(*w.max_artifacts, a.run_id, count->int64(0)))
          return refused(std::move(err));
    }
    auto st = db_.prepare("INSERT INTO run_artifacts"
                          " (run_id, name, size, sha256, data, created_at)"
                          " VALUES (?1, ?2, ?3, ?4, ?5, ?6)"
                          " ON CONFLICT(run_id, name) DO NOTHING");
    if (!st) return std::move(st.error());
    st->bind(1, a.run_id);
    st->bind(2, a.name);
    st->bind(3, a.size);
    st->bind(4, a.sha256);
    // One part in memory at a time, read from the upload's spool file.
    std::string buffer;
    auto part_of = [&](int64_t start) {
      return w.data.read_part(start, static_cast<int64_t>(artifact_part_bytes), buffer);
    };
    auto first = part_of(0);
    if (!first) return std::move(first.error());
    st->bind_blob(5, *first);
    st->bind(6, a.created_at);
    auto what = "artifact '" + a.name + "' of run '" + a.run_id + "'";
    if (st->step() != SQLITE_DONE) return db_.fail("cannot write " + what);
    write_outcome out;
    if (sqlite3_changes(db_.get()) > 0) {
      // The rest in parts (the schema's version 9).
      for (auto start = static_cast<int64_t>(artifact_part_bytes); start < w.data.size();
           start += static_cast<int64_t>(artifact_part_bytes)) {
        auto bytes = part_of(start);
        if (!bytes) return std::move(bytes.error());
        auto part =
            db_.prepare("INSERT INTO run_artifact_parts (run_id, name, start, data)"
                        " VALUES (?1, ?2, ?3, ?4)");
        if (!part) return std::move(part.error());
        part->bind(1, a.run_id);
        part->bind(2, a.name);
        part->bind(3, start);
        part->bind_blob(4, *bytes);
        if (part->step() != SQLITE_DONE) return db_.fail("cannot write " + what);
      }
      return out;
    }
    out.written = false;
    auto q =
        db_.prepare("SELECT sha256 FROM run_artifacts WHERE run_id = ?1 AND name = ?2");
    if (!q) return std::move(q.error());
    q->bind(1, a.run_id);
    q->bind(2, a.name);
    if (q->step() != SQLITE_ROW) return db_.fail("cannot read back " + what);
    out.existing_sha256 = q->text(0);
    return out;
  }

  /// The update's text for `fields`, made once per set of fields (a few
  /// dozen sets occur: one per kind of transition).
  const std::string& update_sql_for(run_fields fields) {
    // `held_session`, the last column, is always set.
    fields = (fields & all_run_fields) | run_fields{1} << (run_lifecycle_fields - 1);
    auto it = update_sql_.find(fields);
    if (it == update_sql_.end())
      it = update_sql_.emplace(fields, update_run_sql(fields)).first;
    return it->second;
  }

  connection db_;
  duration prune_hold_;
  std::unordered_map<run_fields, std::string> update_sql_;
};

} // namespace

run_fields changed_run_fields(const run_record& stored, const run_record& next) {
  run_fields out = 0;
  for (size_t i = 0; i < std::size(run_mutable_columns); ++i)
    if (!run_mutable_columns[i].same(stored, next)) out |= run_fields{1} << i;
  // The counts of finished runs (schema version 10) follow writes that set
  // `finished_at`: a change of status into, out of or between finished ones
  // sets it, even when its value stays.
  constexpr auto finished_at = run_field_bit("finished_at");
  if (stored.status != next.status &&
      (is_terminal(stored.status) || is_terminal(next.status)))
    out |= finished_at;
  return out;
}

namespace {

/// A database meshd's user may read but not write.
caf::error read_only_database() {
  return make_error(errc::store_failure,
                    "meshd's user may read it but not write it: give that user "
                    "the file and its directory (chown), mode 0600");
}

caf::expected<std::unique_ptr<store>> open_at(const std::string& path,
                                              const store_options& options) {
  if (!options.read_only)
    if (auto err = make_parent_dirs(path)) return err;
  // NOMUTEX: a store is used by one thread at a time (see store.hpp).
  int flags = SQLITE_OPEN_NOMUTEX |
              (options.read_only ? SQLITE_OPEN_READONLY
                                 : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
  sqlite3* raw = nullptr;
  auto rc = sqlite3_open_v2(path.c_str(), &raw, flags, nullptr);
  connection db{db_ptr{raw}};
  if (rc != SQLITE_OK) {
    std::string why = raw ? sqlite3_errmsg(raw) : sqlite3_errstr(rc);
    // "unable to open database file" does not say why; the OS error does.
    if (int os = raw ? sqlite3_system_errno(raw) : 0; os != 0)
      why += " (" + std::string{std::strerror(os)} + ")";
    return make_error(errc::store_failure, "cannot open it: " + why);
  }
  // SQLite opens a file it may not write read-only, without an error: every
  // write would then fail while meshd looked healthy.
  if (!options.read_only && sqlite3_db_readonly(raw, "main") == 1)
    return read_only_database();
  // A file it may write in a directory it may not: SQLite fails at the
  // first write, "attempt to write a readonly database".
  if (!options.read_only && !is_special(path))
    if (auto err = check_database_writable(path)) return err;
  sqlite3_extended_result_codes(raw, 1);
  // Set before anything else touches the file, so that opening next to a
  // busy writer waits instead of failing.
  if (sqlite3_busy_timeout(raw, busy_timeout_ms) != SQLITE_OK)
    return db.fail("cannot set busy timeout");
  if (!options.read_only) {
    // WAL lets the reader connection read while the writer commits; the mode
    // is stored in the file, so a reader inherits it.
    auto st = db.prepare("PRAGMA journal_mode = WAL");
    if (!st) return std::move(st.error());
    if (st->step() != SQLITE_ROW) return db.fail("cannot enable WAL");
    auto mode = st->text(0);
    if (mode != "wal" && !is_special(path))
      return make_error(errc::store_failure,
                        "cannot enable WAL on '" + path + "': journal mode is " + mode);
    // A large transaction (a retention pass over runs with long logs) grows
    // the WAL, which SQLite then reuses at that size for good: 55 MB in a
    // soak. Past this size it is cut back once checkpointed.
    auto limit = "PRAGMA journal_size_limit = " + std::to_string(wal_size_limit_bytes);
    if (auto err = db.exec_script(limit.c_str(), "cannot set journal_size_limit"))
      return err;
  }
  // Pragmas take no parameters; the value was checked against a fixed list.
  if (auto err = db.exec_script(("PRAGMA synchronous = " + options.synchronous).c_str(),
                                "cannot set synchronous"))
    return err;
  if (auto err = db.exec_script("PRAGMA foreign_keys = ON", "cannot enable foreign keys"))
    return err;
  // Debian's SQLite zeroes every freed page (SQLITE_SECURE_DELETE), unless
  // told otherwise: a retention pass of 5,000 runs with 1 MiB of log each
  // held the writer about a minute and grew the WAL to 5 GB.
  auto secure_delete = options.secure_delete == "full" ? "PRAGMA secure_delete = ON"
                                                       : "PRAGMA secure_delete = FAST";
  if (auto err = db.exec_script(secure_delete, "cannot set secure_delete")) return err;
  if (auto err = options.read_only ? check_version(db) : migrate(db)) return err;
  return std::unique_ptr<store>{new sqlite_store(std::move(db), options.prune_hold)};
}

} // namespace

/// One SQL text per combination of filters, each cached like any other.
std::string sqlite_list_runs_sql(const run_filter& filter, bool paged) {
  // With no statistics (meshd runs no ANALYZE: it would hold the writer for
  // seconds on a large store), SQLite walks the index of plan or agent
  // rather than status's when both are asked for. An unfinished status
  // matches the queue, not history: walk its index and check the other
  // filters row by row (`+` keeps SQLite from their indexes). With a
  // million finished runs of one plan, `plan=P&status=pending` took 1.5 s
  // and now a few ms. A finished status still walks plan's or agent's
  // index: a rare outcome within a large plan is slow to list.
  bool few = filter.status && !is_terminal(*filter.status);
  std::string and_ = few ? " AND +" : " AND ";
  std::string sql = select_runs_sql() + "WHERE 1";
  if (filter.status) sql += " AND status = ?1";
  if (!filter.plan.empty()) sql += and_ + "plan = ?2";
  if (!filter.agent.empty()) sql += and_ + "assigned_agent = ?3";
  // The second term lets SQLite use the partial index of keyed runs.
  if (!filter.concurrency_key.empty())
    sql += and_ + "concurrency_key = ?6 AND concurrency_key <> ''";
  if (paged) sql += " AND seq < ?4";
  sql += " ORDER BY seq DESC LIMIT ?5";
  return sql;
}

std::string database_permission_hint(int os) {
  return os == EACCES
             ? ": give meshd's user the file and its directory (chown), mode 0600"
             : "";
}

caf::error check_database_writable(const std::string& path) {
  auto refused = [](const std::string& file) {
    return ::access(file.c_str(), W_OK) != 0 && errno == EACCES;
  };
  if (refused(path)) return read_only_database();
  auto dir = std::filesystem::path{path}.parent_path().string();
  if (dir.empty()) dir = ".";
  if (::access(dir.c_str(), W_OK | X_OK) != 0 && errno == EACCES)
    return make_error(errc::store_failure,
                      "meshd's user cannot make files in its directory '" + dir +
                          "', where SQLite keeps the database's -wal and -shm files: "
                          "give that user the directory (chown), mode 0700");
  for (auto* suffix : {"-wal", "-shm"})
    if (refused(path + suffix))
      return make_error(errc::store_failure,
                        "meshd's user may not write '" + path + suffix +
                            "', SQLite's file beside it: give that user the file "
                            "(chown), mode 0600");
  return {};
}

caf::expected<std::unique_ptr<store>> open_sqlite_store(const std::string& path,
                                                        const store_options& options) {
  if (auto err = check_options(options)) return err;
  auto opened = open_at(path, options);
  // Every problem names the file: there may be more than one database.
  if (!opened)
    return make_error(code_of(opened.error()),
                      "database '" + path + "': " + message_of(opened.error()));
  return opened;
}

} // namespace polymesh
