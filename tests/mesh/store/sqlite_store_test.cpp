#include "mesh/domain/error.hpp"
#include "mesh/domain/log.hpp"
#include "mesh/store/sqlite_schema.hpp"
#include "mesh/store/store.hpp"
#include "tests/support/varied_bytes.hpp"

#include <algorithm>
#include <bitset>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <gtest/gtest.h>
#include <iterator>
#include <set>
#include <sqlite3.h>
#include <sys/wait.h>
#include <tuple>
#include <unistd.h>

namespace polymesh {
namespace {

using namespace std::string_literals;
using test::varied_bytes;

// A fixed instant, so that every timestamp is whole milliseconds like the
// store's representation.
const timestamp t0 = from_unix_ms(1'800'000'000'000);

timestamp at(int64_t ms_after_t0) {
  return t0 + std::chrono::milliseconds{ms_after_t0};
}

run_record make_run(const std::string& id, uint64_t seq,
                    run_status status = run_status::created) {
  run_record r;
  r.id = id;
  r.seq = seq;
  r.plan = "build";
  r.status = status;
  r.created_at = at(static_cast<int64_t>(seq));
  if (is_terminal(status)) r.finished_at = at(1000 + static_cast<int64_t>(seq));
  return r;
}

/// Every field set to a value that differs from its default.
run_record full_run() {
  run_record r;
  r.id = "run_full";
  r.seq = 42;
  r.plan = "deploy";
  r.selector = "env=prod,region in (eu, us)";
  r.scope = "team=core";
  r.target_agent = "builder-7";
  r.assigned_agent = "agt_1";
  r.params = R"({"ref":"main","n":3})";
  r.payload = "bin\0ary \xc3\xa9 'quoted' \"x\""s;
  r.priority = -5;
  r.status = run_status::canceled;
  r.reason = "canceled_by_user";
  r.exit_code = -9;
  r.result = "partial";
  r.error = "killed";
  r.attempts = 3;
  r.idempotency_key = "key-1";
  r.submitted_by = "tok_1";
  r.timeout_s = 600;
  r.ttl_s = std::numeric_limits<int64_t>::max();
  r.cancel_requested = true;
  r.cancel_reason = "timeout";
  r.progress = "50%";
  r.created_at = at(1);
  r.assigned_at = at(2);
  r.delivered_at = at(3);
  r.started_at = at(4);
  r.finished_at = at(5);
  r.last_activity_at = at(6);
  r.cancel_requested_at = at(-7);
  r.concurrency_key = "tf:prod";
  r.held_session = 42;
  r.retry_max = 3;
  r.retry_on = "agent_lost,timeout";
  r.retry_number = 2;
  r.retry_of = "run_0";
  r.retried_by = "run_9";
  r.queue_seq = 1;
  return r;
}

agent_record make_agent(const std::string& id, const std::string& name,
                        agent_status status = agent_status::online) {
  agent_record a;
  a.id = id;
  a.name = name;
  a.status = status;
  a.registered_at = at(10);
  a.last_seen_at = at(20);
  return a;
}

token_record make_token(const std::string& id, int64_t created_ms) {
  token_record t;
  t.id = id;
  t.kind = token_kind::submitter;
  t.name = id + "-name";
  t.secret_hash = "ab12";
  t.created_at = at(created_ms);
  return t;
}

log_chunk make_chunk(int64_t seq, const std::string& data) {
  log_chunk c;
  c.seq = seq;
  c.data = data;
  c.at = at(seq);
  return c;
}

void expect_same(const run_record& a, const run_record& b) {
  EXPECT_EQ(a.id, b.id);
  EXPECT_EQ(a.seq, b.seq);
  EXPECT_EQ(a.plan, b.plan);
  EXPECT_EQ(a.selector, b.selector);
  EXPECT_EQ(a.scope, b.scope);
  EXPECT_EQ(a.target_agent, b.target_agent);
  EXPECT_EQ(a.assigned_agent, b.assigned_agent);
  EXPECT_EQ(a.params, b.params);
  EXPECT_EQ(a.payload, b.payload);
  EXPECT_EQ(a.priority, b.priority);
  EXPECT_EQ(a.status, b.status);
  EXPECT_EQ(a.reason, b.reason);
  EXPECT_EQ(a.exit_code, b.exit_code);
  EXPECT_EQ(a.result, b.result);
  EXPECT_EQ(a.error, b.error);
  EXPECT_EQ(a.attempts, b.attempts);
  EXPECT_EQ(a.idempotency_key, b.idempotency_key);
  EXPECT_EQ(a.submitted_by, b.submitted_by);
  EXPECT_EQ(a.timeout_s, b.timeout_s);
  EXPECT_EQ(a.ttl_s, b.ttl_s);
  EXPECT_EQ(a.cancel_requested, b.cancel_requested);
  EXPECT_EQ(a.cancel_reason, b.cancel_reason);
  EXPECT_EQ(a.progress, b.progress);
  EXPECT_EQ(a.created_at, b.created_at);
  EXPECT_EQ(a.assigned_at, b.assigned_at);
  EXPECT_EQ(a.delivered_at, b.delivered_at);
  EXPECT_EQ(a.started_at, b.started_at);
  EXPECT_EQ(a.finished_at, b.finished_at);
  EXPECT_EQ(a.last_activity_at, b.last_activity_at);
  EXPECT_EQ(a.cancel_requested_at, b.cancel_requested_at);
  EXPECT_EQ(a.concurrency_key, b.concurrency_key);
  EXPECT_EQ(a.held_session, b.held_session);
  EXPECT_EQ(a.retry_max, b.retry_max);
  EXPECT_EQ(a.retry_on, b.retry_on);
  EXPECT_EQ(a.retry_number, b.retry_number);
  EXPECT_EQ(a.retry_of, b.retry_of);
  EXPECT_EQ(a.retried_by, b.retried_by);
  EXPECT_EQ(a.queue_seq, b.queue_seq);
}

void expect_same(const agent_record& a, const agent_record& b) {
  EXPECT_EQ(a.id, b.id);
  EXPECT_EQ(a.name, b.name);
  EXPECT_EQ(a.labels, b.labels);
  EXPECT_EQ(a.plans, b.plans);
  EXPECT_EQ(a.capacity, b.capacity);
  EXPECT_EQ(a.status, b.status);
  EXPECT_EQ(a.version, b.version);
  EXPECT_EQ(a.hostname, b.hostname);
  EXPECT_EQ(a.scope, b.scope);
  EXPECT_EQ(a.registered_at, b.registered_at);
  EXPECT_EQ(a.last_seen_at, b.last_seen_at);
  EXPECT_EQ(a.session, b.session);
  EXPECT_EQ(a.drained, b.drained);
}

void expect_same(const token_record& a, const token_record& b) {
  EXPECT_EQ(a.id, b.id);
  EXPECT_EQ(a.kind, b.kind);
  EXPECT_EQ(a.name, b.name);
  EXPECT_EQ(a.secret_hash, b.secret_hash);
  EXPECT_EQ(a.scope, b.scope);
  EXPECT_EQ(a.agent_id, b.agent_id);
  EXPECT_EQ(a.agent_session, b.agent_session);
  EXPECT_EQ(a.created_at, b.created_at);
  EXPECT_EQ(a.expires_at, b.expires_at);
  EXPECT_EQ(a.revoked_at, b.revoked_at);
}

template <class T> std::vector<std::string> ids_of(const std::vector<T>& xs) {
  std::vector<std::string> out;
  for (auto& x : xs)
    out.push_back(x.id);
  return out;
}

/// A fresh directory per test, removed afterwards, and a writable store in it.
class sqlite_store_test : public ::testing::Test {
protected:
  void SetUp() override {
    auto tmpl =
        (std::filesystem::temp_directory_path() / "sqlite_store_test.XXXXXX").string();
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    path_ = (std::filesystem::path{dir_} / "mesh.db").string();
    db_ = open();
  }

  void TearDown() override {
    db_.reset();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  // A prune here deletes every run it may in one call however slow the
  // machine is (`prune_hold` is wall-clock time: a loaded CI host stopped
  // one early); the test of the hold sets its own.
  static store_options unhurried() {
    store_options options;
    options.prune_hold = std::chrono::hours{1};
    return options;
  }

  std::unique_ptr<store> open(store_options options = unhurried()) {
    auto db = open_sqlite_store(path_, options);
    EXPECT_TRUE(db) << message_of(db.error());
    return db ? std::move(*db) : nullptr;
  }

  std::vector<write_outcome> apply(const std::vector<write>& batch) {
    auto out = db_->apply(batch);
    EXPECT_TRUE(out) << message_of(out.error());
    return out ? *out : std::vector<write_outcome>{};
  }

  std::optional<run_record> get_run(const std::string& id) {
    auto r = db_->get_run(id);
    EXPECT_TRUE(r) << message_of(r.error());
    return r ? *r : std::nullopt;
  }

  run_page list(run_filter f) {
    auto page = db_->list_runs(f);
    EXPECT_TRUE(page) << message_of(page.error());
    return page ? *page : run_page{};
  }

  /// Replaces the store with a database built by the first `version`
  /// migrations only, as an older meshd left it; `open()` migrates it.
  void old_database(int version) {
    db_.reset();
    std::filesystem::remove(path_);
    for (int v = 0; v < version; ++v)
      raw_query(sqlite_migrations[v]);
    raw_query("PRAGMA user_version = " + std::to_string(version));
  }

  /// Stores run `run_old` with the columns of schema version 3, in `status`.
  void insert_version_3_run(const std::string& status, const std::string& agent,
                            int attempts) {
    raw_query("INSERT INTO runs (seq, id, plan, selector, scope, target_agent, "
              "assigned_agent, params, payload, priority, status, reason, result, "
              "error, attempts, idempotency_key, submitted_by, timeout_s, ttl_s, "
              "cancel_requested, cancel_reason, progress, created_at) VALUES (1, "
              "'run_old', 'noop', '', '', '', '" +
              agent + "', '{}', '', 0, '" + status + "', '', '', '', " +
              std::to_string(attempts) + ", '', 'tok_1', 0, 0, 0, '', '', 0)");
  }

  /// Runs `sql` on a separate raw connection, for what the store API cannot
  /// express: inspecting pragmas and tampering with the schema.
  std::string raw_query(const std::string& sql) {
    sqlite3* raw = nullptr;
    EXPECT_EQ(sqlite3_open(path_.c_str(), &raw), SQLITE_OK);
    sqlite3_busy_timeout(raw, 5000);
    std::string out;
    auto cb = [](void* p, int, char** values, char**) {
      *static_cast<std::string*>(p) = values[0] ? values[0] : "NULL";
      return 0;
    };
    char* err = nullptr;
    EXPECT_EQ(sqlite3_exec(raw, sql.c_str(), cb, &out, &err), SQLITE_OK) << err;
    sqlite3_free(err);
    sqlite3_close(raw);
    return out;
  }

  /// The opcodes of the program SQLite compiles for `sql` (not run).
  std::vector<std::string> opcodes(const std::string& sql) {
    sqlite3* raw = nullptr;
    EXPECT_EQ(sqlite3_open(path_.c_str(), &raw), SQLITE_OK);
    sqlite3_stmt* st = nullptr;
    EXPECT_EQ(sqlite3_prepare_v2(raw, ("EXPLAIN " + sql).c_str(), -1, &st, nullptr),
              SQLITE_OK)
        << sqlite3_errmsg(raw);
    std::vector<std::string> out;
    while (st && sqlite3_step(st) == SQLITE_ROW)
      out.emplace_back(reinterpret_cast<const char*>(sqlite3_column_text(st, 1)));
    sqlite3_finalize(st);
    sqlite3_close(raw);
    return out;
  }

  std::string dir_;
  std::string path_;
  std::unique_ptr<store> db_;
};

// -- Opening ------------------------------------------------------------------

// This test ensures that opening creates parent dirs, the file, the schema and WAL mode.
TEST_F(sqlite_store_test, open_creates_file_schema_and_wal) {
  path_ = (std::filesystem::path{dir_} / "a" / "b" / "mesh.db").string();
  auto db = open();
  ASSERT_TRUE(db);
  EXPECT_TRUE(std::filesystem::exists(path_));
  EXPECT_EQ(raw_query("PRAGMA user_version"), std::to_string(sqlite_schema_version));
  EXPECT_EQ(raw_query("PRAGMA journal_mode"), "wal");
}

// This test ensures that only `full` and `normal` pass as `store.synchronous`.
TEST_F(sqlite_store_test, synchronous_option_is_validated) {
  for (auto ok : {"full", "normal"}) {
    store_options opts;
    opts.synchronous = ok;
    EXPECT_TRUE(open_sqlite_store(path_, opts)) << ok;
  }
  for (auto bad : {"off", "", "FULL", "extra", "normal; DROP TABLE runs"}) {
    store_options opts;
    opts.synchronous = bad;
    auto db = open_sqlite_store(path_, opts);
    ASSERT_FALSE(db) << bad;
    EXPECT_EQ(code_of(db.error()), errc::invalid_argument);
    EXPECT_EQ(field_of(db.error()), "store.synchronous");
  }
}

// This test ensures the rows of forgotten agents are deleted: deregistered
// and last heard from before the bound, at most `max_rows` a write; agents
// of any other status, or heard from since, stay.
TEST_F(sqlite_store_test, forgotten_agents_rows_are_deleted) {
  std::vector<write> batch;
  for (int i = 0; i < 3; ++i)
    batch.emplace_back(
        put_agent{make_agent("agt_old" + std::to_string(i), "old" + std::to_string(i),
                             agent_status::deregistered)});
  auto recent = make_agent("agt_recent", "recent", agent_status::deregistered);
  recent.last_seen_at = at(50);
  batch.emplace_back(put_agent{recent});
  batch.emplace_back(
      put_agent{make_agent("agt_offline", "offline", agent_status::offline)});
  batch.emplace_back(put_agent{make_agent("agt_online", "online")});
  apply(batch);
  auto ids = [&] {
    std::vector<std::string> out;
    auto agents = db_->list_agents();
    EXPECT_TRUE(agents);
    for (auto& a : *agents)
      out.push_back(a.id);
    std::sort(out.begin(), out.end());
    return out;
  };
  apply({delete_forgotten_agents{at(30), 2}});
  EXPECT_EQ(ids().size(), 4u) << "two of the three old ones";
  apply({delete_forgotten_agents{at(30), 2}});
  EXPECT_EQ(ids(), (std::vector<std::string>{"agt_offline", "agt_online", "agt_recent"}));
}

// This test ensures that a database from a newer build is refused, not misread.
TEST_F(sqlite_store_test, newer_schema_version_is_refused) {
  db_.reset();
  raw_query("PRAGMA user_version = " + std::to_string(sqlite_schema_version + 1));
  auto db = open_sqlite_store(path_);
  ASSERT_FALSE(db);
  EXPECT_EQ(code_of(db.error()), errc::store_failure);
  EXPECT_NE(message_of(db.error()).find("newer"), std::string::npos);
}

// This test ensures a database meshd's user may read but not write (a
// backup restored by root, mode 0644) is refused at open, naming the file.
// SQLite opened it read-only without a word, and meshd looked healthy while
// every write failed. As root the open runs in a child that became nobody.
TEST_F(sqlite_store_test, a_database_it_cannot_write_is_refused) {
  db_.reset();
  namespace fs = std::filesystem;
  fs::permissions(path_,
                  fs::perms::owner_read | fs::perms::group_read | fs::perms::others_read);
  auto attempt = [&] {
    auto db = open_sqlite_store(path_);
    return db ? std::string{"opened"} : message_of(db.error());
  };
  std::string said;
  if (::geteuid() != 0) {
    said = attempt();
  } else {
    ASSERT_EQ(::chown(dir_.c_str(), 65534, 65534), 0);
    int fds[2];
    ASSERT_EQ(::pipe(fds), 0);
    pid_t child = ::fork();
    if (child == 0) {
      ::close(fds[0]);
      if (::setgid(65534) != 0 || ::setuid(65534) != 0) ::_exit(1);
      auto text = attempt();
      auto n = ::write(fds[1], text.data(), text.size());
      ::_exit(n == static_cast<ssize_t>(text.size()) ? 0 : 1);
    }
    ::close(fds[1]);
    char buf[512];
    for (ssize_t n; (n = ::read(fds[0], buf, sizeof buf)) > 0;)
      said.append(buf, static_cast<size_t>(n));
    ::close(fds[0]);
    int status = 0;
    ::waitpid(child, &status, 0);
    ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << said;
  }
  EXPECT_NE(
      said.find("database '" + path_ + "': meshd's user may read it but not write it"),
      std::string::npos)
      << said;
}

// This test ensures that a read-only store does not create a missing file.
TEST_F(sqlite_store_test, read_only_open_of_missing_file_fails) {
  store_options opts;
  opts.read_only = true;
  auto db =
      open_sqlite_store((std::filesystem::path{dir_} / "missing.db").string(), opts);
  ASSERT_FALSE(db);
  EXPECT_EQ(code_of(db.error()), errc::store_failure);
  EXPECT_FALSE(std::filesystem::exists(std::filesystem::path{dir_} / "missing.db"));
}

// -- Round trips --------------------------------------------------------------

// This test ensures that every run field, set optionals included, round-trips.
TEST_F(sqlite_store_test, run_round_trips_every_field) {
  auto run = full_run();
  apply({put_run{run}});
  auto got = get_run(run.id);
  ASSERT_TRUE(got);
  expect_same(*got, run);
}

// This test ensures that empty strings and unset optionals round-trip as such.
TEST_F(sqlite_store_test, run_round_trips_empty_values_and_unset_optionals) {
  run_record empty;
  empty.id = "run_empty";
  empty.params = "";
  apply({put_run{empty}});
  auto got = get_run(empty.id);
  ASSERT_TRUE(got);
  expect_same(*got, empty);
  EXPECT_FALSE(got->exit_code);
  EXPECT_FALSE(got->finished_at);

  auto zero = make_run("run_zero", 1);
  zero.exit_code = 0;
  apply({put_run{zero}});
  got = get_run(zero.id);
  ASSERT_TRUE(got);
  EXPECT_EQ(got->exit_code, std::optional<int64_t>{0});
}

// This test ensures that every agent field round-trips, awkward labels included.
TEST_F(sqlite_store_test, agent_round_trips_every_field) {
  auto a = make_agent("agt_1", "builder-1", agent_status::draining);
  a.labels = {{"env", "prod"},
              {"quote\"key", "back\\slash"},
              {"empty", ""},
              {"unicode", "\xc3\xa9\xe2\x82\xac"},
              {"ctl", "line\nbreak\ttab"}};
  a.plans = {"build", "deploy", "with \"quotes\"", ""};
  a.capacity = 16;
  a.version = "1.2.3";
  a.hostname = "host.example";
  a.scope = "team=core";
  a.session = 7;
  a.drained = true;
  auto bare = make_agent("agt_2", "builder-2", agent_status::offline);
  bare.capacity = 0;
  auto drained_offline = make_agent("agt_3", "builder-3", agent_status::offline);
  drained_offline.drained = true;
  apply({put_agent{a}, put_agent{bare}, put_agent{drained_offline}});

  auto got = db_->get_agent(a.id);
  ASSERT_TRUE(got && *got);
  expect_same(**got, a);
  got = db_->get_agent(bare.id);
  ASSERT_TRUE(got && *got);
  expect_same(**got, bare);
  EXPECT_TRUE((*got)->labels.empty());
  EXPECT_TRUE((*got)->plans.empty());
  got = db_->get_agent(drained_offline.id);
  ASSERT_TRUE(got && *got);
  expect_same(**got, drained_offline);
}

// This test ensures that every token field round-trips, optionals set and unset.
TEST_F(sqlite_store_test, token_round_trips_every_field) {
  auto full = make_token("tok_full", 1);
  full.kind = token_kind::agent;
  full.scope = "team=core";
  full.agent_id = "agt_1";
  full.agent_session = 3;
  full.expires_at = at(100);
  full.revoked_at = at(50);
  token_record bare;
  bare.id = "tok_bare";
  apply({put_token{full}, put_token{bare}});

  auto tokens = db_->list_tokens();
  ASSERT_TRUE(tokens);
  ASSERT_EQ(tokens->size(), 2u);
  // `bare` has the epoch as `created_at`, so it lists first.
  expect_same((*tokens)[0], bare);
  expect_same((*tokens)[1], full);
}

// This test ensures that every token kind, agent and run status reads back as itself.
TEST_F(sqlite_store_test, every_enum_value_round_trips) {
  std::vector<write> batch;
  for (auto k : {token_kind::admin, token_kind::submitter, token_kind::reader,
                 token_kind::registration, token_kind::agent}) {
    auto t = make_token(std::string{"tok_"} + to_string(k), static_cast<int64_t>(k));
    t.kind = k;
    batch.emplace_back(put_token{t});
  }
  for (auto s : {agent_status::online, agent_status::draining, agent_status::offline,
                 agent_status::deregistered})
    batch.emplace_back(
        put_agent{make_agent(std::string{"agt_"} + to_string(s), to_string(s), s)});
  uint64_t seq = 0;
  for (auto s : {run_status::created, run_status::pending, run_status::running,
                 run_status::success, run_status::error, run_status::canceled})
    batch.emplace_back(put_run{make_run(std::string{"run_"} + to_string(s), ++seq, s)});
  apply(batch);

  auto tokens = db_->list_tokens();
  ASSERT_TRUE(tokens);
  for (auto& t : *tokens)
    EXPECT_EQ(t.id, std::string{"tok_"} + to_string(t.kind));
  auto agents = db_->list_agents();
  ASSERT_TRUE(agents);
  ASSERT_EQ(agents->size(), 4u);
  for (auto& a : *agents)
    EXPECT_EQ(a.id, std::string{"agt_"} + to_string(a.status));
  auto page = list({});
  ASSERT_EQ(page.runs.size(), 6u);
  for (auto& r : page.runs)
    EXPECT_EQ(r.id, std::string{"run_"} + to_string(r.status));
}

// This test ensures that `logs` returns chunks in order after `after_seq`, up to `limit`.
TEST_F(sqlite_store_test, logs_round_trip_in_order_with_after_and_limit) {
  std::vector<write> batch;
  for (int64_t i : {3, 0, 2, 1}) {
    auto c = make_chunk(i, "line " + std::to_string(i) + "\n");
    c.stream = i % 2 ? "stderr" : "stdout";
    batch.emplace_back(append_log{"run_a", c});
  }
  batch.emplace_back(append_log{"run_b", make_chunk(0, "other")});
  apply(batch);

  auto all = db_->logs("run_a", -1, 100, SIZE_MAX);
  ASSERT_TRUE(all);
  ASSERT_EQ(all->chunks.size(), 4u);
  EXPECT_FALSE(all->more);
  for (int64_t i = 0; i < 4; ++i) {
    EXPECT_EQ(all->chunks[i].seq, i);
    EXPECT_EQ(all->chunks[i].data, "line " + std::to_string(i) + "\n");
    EXPECT_EQ(all->chunks[i].stream, i % 2 ? "stderr" : "stdout");
    EXPECT_EQ(all->chunks[i].at, at(i));
  }
  auto tail = db_->logs("run_a", 1, 1, SIZE_MAX);
  ASSERT_TRUE(tail);
  ASSERT_EQ(tail->chunks.size(), 1u);
  EXPECT_EQ(tail->chunks[0].seq, 2);
  EXPECT_TRUE(tail->more); // seq 3 follows
  auto last = db_->logs("run_a", 2, 1, SIZE_MAX);
  ASSERT_TRUE(last);
  ASSERT_EQ(last->chunks.size(), 1u);
  EXPECT_FALSE(last->more); // a full page that ends the log
  auto none = db_->logs("run_a", 3, SIZE_MAX, SIZE_MAX);
  ASSERT_TRUE(none);
  EXPECT_TRUE(none->chunks.empty());
  EXPECT_FALSE(none->more);
  auto unknown = db_->logs("run_x", -1, 10, SIZE_MAX);
  ASSERT_TRUE(unknown);
  EXPECT_TRUE(unknown->chunks.empty());
}

// This test ensures the WAL is cut back to 16 MiB once checkpointed after a
// large transaction (a soak left it at 55 MB for good, its high-water mark).
TEST_F(sqlite_store_test, the_wal_shrinks_after_a_large_transaction) {
  std::vector<write> batch;
  for (int64_t i = 0; i < 400; ++i) // 400 chunks of 64 KiB: 25 MiB in one commit
    batch.emplace_back(append_log{"run_big", make_chunk(i, std::string(64 * 1024, 'x'))});
  apply(batch);
  auto wal = path_ + "-wal";
  ASSERT_GT(std::filesystem::file_size(wal), 24u * 1024 * 1024);
  // Small commits: the first checkpoints the WAL past its 1,000 pages, a
  // later one starts it again from the beginning, and SQLite cuts it back.
  for (int64_t i = 0; i < 3; ++i)
    apply({append_log{"run_small", make_chunk(i, "x")}});
  EXPECT_LE(std::filesystem::file_size(wal), 16u * 1024 * 1024);
}

// This test ensures pruning runs with long logs writes little by default
// (`store.secure_delete: fast`: the freed pages are not zeroed, which with
// Debian's SQLite wrote every pruned byte into the WAL again and held the
// writer about a minute for 5,000 runs of 1 MiB), and zeroes them with
// `full`.
TEST_F(sqlite_store_test, pruning_long_logs_writes_little_unless_secure_delete_is_full) {
  for (auto mode : {"fast", "full"}) {
    SCOPED_TRACE(mode);
    db_.reset();
    for (auto* suffix : {"", "-wal", "-shm"})
      std::filesystem::remove(path_ + suffix);
    auto options = unhurried();
    options.secure_delete = mode;
    db_ = open(options);
    std::vector<write> batch;
    for (uint64_t s = 1; s <= 8; ++s) { // 8 runs with 1 MiB of log each
      auto r = make_run("run_" + std::to_string(s), s, run_status::success);
      batch.emplace_back(put_run{r});
      for (int64_t i = 0; i < 64; ++i)
        batch.emplace_back(append_log{r.id, make_chunk(i, std::string(16 * 1024, 'x'))});
    }
    apply(batch);
    // Checkpointed and cut back: what the prune writes is what the WAL holds.
    db_.reset();
    db_ = open(options);
    auto wal = path_ + "-wal";
    auto before = std::filesystem::exists(wal) ? std::filesystem::file_size(wal) : 0;
    auto n = db_->prune(at(2000), 100);
    ASSERT_TRUE(n);
    ASSERT_EQ(*n, 8u);
    auto written = std::filesystem::file_size(wal) - before;
    if (std::string{mode} == "fast")
      EXPECT_LT(written, 1u << 20) << "bytes written to the WAL";
    else
      EXPECT_GT(written, 7u << 20) << "bytes written to the WAL";
  }
}

// This test ensures an unknown `secure_delete` is refused, naming the key.
TEST_F(sqlite_store_test, an_unknown_secure_delete_is_refused) {
  store_options options;
  options.secure_delete = "on";
  auto db = open_sqlite_store(path_ + ".other", options);
  ASSERT_FALSE(db);
  EXPECT_EQ(field_of(db.error()), "store.secure_delete");
}

// This test ensures a page of log chunks ends once their data reaches
// `max_bytes`, and always holds at least one chunk (a chunk larger than the
// budget still comes back, so paging moves on).
TEST_F(sqlite_store_test, logs_page_ends_at_max_bytes) {
  std::vector<write> batch;
  for (int64_t i = 0; i < 5; ++i)
    batch.emplace_back(append_log{"run_a", make_chunk(i, std::string(10, 'x'))});
  apply(batch);
  auto page = db_->logs("run_a", -1, 100, 25);
  ASSERT_TRUE(page);
  ASSERT_EQ(page->chunks.size(), 3u); // 10, 20, 30 bytes: the third reaches 25
  EXPECT_EQ(page->chunks.back().seq, 2);
  EXPECT_TRUE(page->more);
  page = db_->logs("run_a", 2, 100, 25);
  ASSERT_TRUE(page);
  EXPECT_EQ(page->chunks.size(), 2u);
  EXPECT_FALSE(page->more);
  page = db_->logs("run_a", 2, 100, 20); // the budget reached by the log's last chunk
  ASSERT_TRUE(page);
  EXPECT_EQ(page->chunks.size(), 2u);
  EXPECT_FALSE(page->more);
  page = db_->logs("run_a", -1, 100, 0);
  ASSERT_TRUE(page);
  ASSERT_EQ(page->chunks.size(), 1u);
  EXPECT_EQ(page->chunks.front().seq, 0);
  EXPECT_TRUE(page->more);
}

// This test ensures that missing runs and agents read as "none", not errors.
TEST_F(sqlite_store_test, missing_entities_read_as_none) {
  auto run = db_->get_run("run_nope");
  ASSERT_TRUE(run);
  EXPECT_FALSE(*run);
  auto agent = db_->get_agent("agt_nope");
  ASSERT_TRUE(agent);
  EXPECT_FALSE(*agent);
}

// -- Writes -------------------------------------------------------------------

// This test ensures that `put_run` of a stored run replaces every lifecycle
// field, clearing dropped optionals, and keeps the fields fixed at
// submission.
TEST_F(sqlite_store_test, put_run_replaces_lifecycle_fields_and_keeps_fixed_ones) {
  auto run = full_run();
  apply({put_run{run}});
  auto next = make_run(run.id, run.seq, run_status::pending);
  next.assigned_agent = "agt_2";
  next.idempotency_key = "key-2"; // fixed at submission: not written
  next.plan = "other-plan";       // likewise
  apply({put_run{next}});
  auto got = get_run(run.id);
  ASSERT_TRUE(got);
  auto expected = next;
  expected.plan = run.plan;
  expected.selector = run.selector;
  expected.scope = run.scope;
  expected.target_agent = run.target_agent;
  expected.params = run.params;
  expected.payload = run.payload;
  expected.priority = run.priority;
  expected.idempotency_key = run.idempotency_key;
  expected.concurrency_key = run.concurrency_key;
  expected.submitted_by = run.submitted_by;
  expected.timeout_s = run.timeout_s;
  expected.ttl_s = run.ttl_s;
  expected.retry_max = run.retry_max;
  expected.retry_on = run.retry_on;
  expected.retry_number = run.retry_number;
  expected.retry_of = run.retry_of;
  expected.queue_seq = run.queue_seq;
  expected.created_at = run.created_at;
  expect_same(*got, expected);
  EXPECT_EQ(got->status, run_status::pending);
  EXPECT_EQ(got->assigned_agent, "agt_2");
  EXPECT_FALSE(got->finished_at);
  EXPECT_FALSE(got->exit_code);
}

// This test ensures that each lifecycle field a write changes is found by
// `changed_run_fields` and written when only the changed fields are set, so
// a write that names them loses no change.
TEST_F(sqlite_store_test, put_run_of_the_changed_fields_writes_each_change) {
  auto stored = make_run("run_1", 1, run_status::pending);
  apply({put_run{stored}});
  std::vector<std::function<void(run_record&)>> changes{
      [](run_record& r) { r.assigned_agent = "agt_9"; },
      [](run_record& r) { r.status = run_status::running; },
      [](run_record& r) { r.reason = "agent_lost"; },
      [](run_record& r) { r.exit_code = 3; },
      [](run_record& r) { r.result = "done"; },
      [](run_record& r) { r.error = "boom"; },
      [](run_record& r) { r.attempts = 7; },
      [](run_record& r) { r.cancel_requested = true; },
      [](run_record& r) { r.cancel_reason = "timeout"; },
      [](run_record& r) { r.progress = "1/2"; },
      [](run_record& r) { r.assigned_at = at(20); },
      [](run_record& r) { r.delivered_at = at(21); },
      [](run_record& r) { r.started_at = at(22); },
      [](run_record& r) { r.finished_at = at(23); },
      [](run_record& r) { r.last_activity_at = at(24); },
      [](run_record& r) { r.cancel_requested_at = at(25); },
      [](run_record& r) { r.retried_by = "run_2"; },
      [](run_record& r) { r.held_session = 5; },
  };
  run_fields seen = 0;
  for (size_t i = 0; i < changes.size(); ++i) {
    auto next = stored;
    changes[i](next);
    auto fields = changed_run_fields(stored, next);
    EXPECT_EQ(std::bitset<32>{fields}.count(), 1u) << "change " << i;
    EXPECT_EQ(seen & fields, 0u) << "change " << i << " shares a bit";
    seen |= fields;
    apply({put_run{next, false, fields}});
    auto got = get_run(next.id);
    ASSERT_TRUE(got);
    expect_same(*got, next);
    stored = next;
  }
  EXPECT_EQ(seen, all_run_fields) << "a lifecycle field without a change above";
  EXPECT_EQ(changed_run_fields(stored, stored), 0u);
}

// This test ensures that a write naming some lifecycle fields leaves the
// others as stored: that is what spares SQLite their indexes.
TEST_F(sqlite_store_test, put_run_leaves_the_fields_it_does_not_name) {
  auto stored = make_run("run_1", 1, run_status::pending);
  apply({put_run{stored}});
  auto delivered = stored;
  delivered.delivered_at = at(30);
  auto next = delivered;
  next.result = "not named";
  apply({put_run{next, false, changed_run_fields(stored, delivered)}});
  auto got = get_run(next.id);
  ASSERT_TRUE(got);
  EXPECT_EQ(got->delivered_at, at(30));
  EXPECT_EQ(got->result, stored.result);
}

// This test ensures that `put_run` of a run not stored yet writes it whole.
TEST_F(sqlite_store_test, put_run_of_a_new_run_writes_every_field) {
  auto run = full_run();
  apply({put_run{run, false}});
  auto got = get_run(run.id);
  ASSERT_TRUE(got);
  expect_same(*got, run);
}

// This test ensures that `put_agent` and `put_token` replace whole rows.
TEST_F(sqlite_store_test, put_agent_and_put_token_upsert_replace) {
  auto a = make_agent("agt_1", "one");
  a.labels = {{"k", "v"}};
  a.plans = {"p"};
  auto t = make_token("tok_1", 1);
  t.revoked_at = at(5);
  apply({put_agent{a}, put_token{t}});

  auto a2 = make_agent("agt_1", "renamed", agent_status::deregistered);
  a2.session = 2;
  auto t2 = make_token("tok_1", 2);
  t2.kind = token_kind::admin;
  apply({put_agent{a2}, put_token{t2}});

  auto got = db_->get_agent("agt_1");
  ASSERT_TRUE(got && *got);
  expect_same(**got, a2);
  auto tokens = db_->list_tokens();
  ASSERT_TRUE(tokens);
  ASSERT_EQ(tokens->size(), 1u);
  expect_same((*tokens)[0], t2);
}

// This test ensures that a taken key refuses one write; the rest of its batch commits.
TEST_F(sqlite_store_test, idempotency_conflict_refuses_one_write_and_commits_the_rest) {
  auto first = make_run("run_1", 1);
  first.idempotency_key = "k";
  apply({put_run{first, true}});

  auto dup = make_run("run_2", 2);
  dup.idempotency_key = "k";
  auto other = make_run("run_3", 3);
  other.idempotency_key = "k2";
  auto out = apply({put_agent{make_agent("agt_1", "a")}, put_run{dup, true},
                    put_run{other, true}, append_log{"run_3", make_chunk(0, "x")}});
  ASSERT_EQ(out.size(), 4u);
  EXPECT_TRUE(out[0].written);
  EXPECT_FALSE(out[1].written);
  EXPECT_EQ(out[1].existing_id, "run_1");
  EXPECT_TRUE(out[2].written);
  EXPECT_TRUE(out[2].existing_id.empty());
  EXPECT_TRUE(out[3].written);

  EXPECT_FALSE(get_run("run_2"));
  EXPECT_TRUE(get_run("run_3"));
  auto agent = db_->get_agent("agt_1");
  ASSERT_TRUE(agent);
  EXPECT_TRUE(*agent);
  auto logs = db_->logs("run_3", -1, 10, SIZE_MAX);
  ASSERT_TRUE(logs);
  EXPECT_EQ(logs->chunks.size(), 1u);
  // The holder is untouched.
  auto held = get_run("run_1");
  ASSERT_TRUE(held);
  expect_same(*held, first);
}

// This test ensures that two runs with one key in the same batch conflict too.
TEST_F(sqlite_store_test, idempotency_conflict_within_one_batch) {
  auto a = make_run("run_a", 1);
  a.idempotency_key = "same";
  auto b = make_run("run_b", 2);
  b.idempotency_key = "same";
  auto out = apply({put_run{a, true}, put_run{b, true}});
  ASSERT_EQ(out.size(), 2u);
  EXPECT_TRUE(out[0].written);
  EXPECT_FALSE(out[1].written);
  EXPECT_EQ(out[1].existing_id, "run_a");
}

// This test ensures that an empty idempotency key means none and never conflicts.
TEST_F(sqlite_store_test, empty_idempotency_keys_never_conflict) {
  auto out =
      apply({put_run{make_run("run_1", 1), true}, put_run{make_run("run_2", 2), true},
             put_run{make_run("run_3", 3), false}});
  for (auto& o : out)
    EXPECT_TRUE(o.written);
  EXPECT_EQ(list({}).runs.size(), 3u);
}

// This test ensures that `insert_only` never overwrites a run whose id exists.
TEST_F(sqlite_store_test, insert_only_does_not_overwrite_an_existing_id) {
  auto run = make_run("run_1", 1);
  run.idempotency_key = "k";
  apply({put_run{run, true}});
  auto again = run;
  again.status = run_status::running;
  auto out = apply({put_run{again, true}});
  ASSERT_EQ(out.size(), 1u);
  EXPECT_FALSE(out[0].written);
  EXPECT_EQ(out[0].existing_id, "run_1");
  auto no_key = make_run("run_2", 2);
  apply({put_run{no_key}});
  no_key.status = run_status::error;
  out = apply({put_run{no_key, true}});
  ASSERT_EQ(out.size(), 1u);
  EXPECT_FALSE(out[0].written);
  EXPECT_EQ(out[0].existing_id, "run_2");
  EXPECT_EQ(get_run("run_1")->status, run_status::created);
  EXPECT_EQ(get_run("run_2")->status, run_status::created);
}

// This test ensures that a repeated (run_id, seq) log chunk is ignored, the first kept.
TEST_F(sqlite_store_test, duplicate_log_seq_is_ignored) {
  auto out = apply({append_log{"run_1", make_chunk(0, "first")},
                    append_log{"run_1", make_chunk(0, "second")}});
  ASSERT_EQ(out.size(), 2u);
  EXPECT_TRUE(out[0].written);
  EXPECT_FALSE(out[1].written); // the run already had seq 0
  apply({append_log{"run_1", make_chunk(0, "third")}});
  auto logs = db_->logs("run_1", -1, 10, SIZE_MAX);
  ASSERT_TRUE(logs);
  ASSERT_EQ(logs->chunks.size(), 1u);
  EXPECT_EQ(logs->chunks[0].data, "first");
}

// This test ensures log_bytes sums the bytes (not characters) of one run's
// chunks only, and is 0 for a run without any.
TEST_F(sqlite_store_test, log_bytes_sums_one_runs_chunks) {
  apply({append_log{"run_1", make_chunk(0, "ab")},
         append_log{"run_1", make_chunk(1, "\xc3\xa9t\xc3\xa9")}, // "été": 5 bytes
         append_log{"run_2", make_chunk(0, "elsewhere")}});
  auto n = db_->log_bytes("run_1");
  ASSERT_TRUE(n) << message_of(n.error());
  EXPECT_EQ(*n, 7);
  auto none = db_->log_bytes("run_3");
  ASSERT_TRUE(none);
  EXPECT_EQ(*none, 0);
}

// This test ensures each run's log size is kept as its chunks are written
// (a retry adds nothing) and read from there, not summed from the log.
TEST_F(sqlite_store_test, log_bytes_is_kept_as_chunks_are_written) {
  apply({append_log{"run_1", make_chunk(0, "ab")},
         append_log{"run_1", make_chunk(1, "\xc3\xa9t\xc3\xa9")},
         append_log{"run_1", make_chunk(0, "a retry")},
         append_log{"run_2", make_chunk(0, "x")}});
  EXPECT_EQ(raw_query("SELECT bytes FROM run_log_sizes WHERE run_id = 'run_1'"), "7");
  EXPECT_EQ(raw_query("SELECT bytes FROM run_log_sizes WHERE run_id = 'run_2'"), "1");
  // A log changed behind meshd's back shows which one is read.
  raw_query("UPDATE run_logs SET data = 'x' WHERE run_id = 'run_1'");
  EXPECT_EQ(*db_->log_bytes("run_1"), 7);
}

// This test ensures that a failing write rolls back its whole batch and nothing else.
TEST_F(sqlite_store_test, failing_write_rolls_back_the_whole_batch) {
  auto holder = make_run("run_1", 1);
  holder.idempotency_key = "k";
  apply({put_run{holder}});

  // A plain upsert (not `insert_only`) of another run with a taken key
  // violates the unique index.
  auto clash = make_run("run_2", 2);
  clash.idempotency_key = "k";
  auto out =
      db_->apply({put_agent{make_agent("agt_1", "a")}, put_run{make_run("run_3", 3)},
                  append_log{"run_3", make_chunk(0, "x")}, put_run{clash},
                  put_token{make_token("tok_1", 1)}});
  ASSERT_FALSE(out);
  EXPECT_EQ(code_of(out.error()), errc::store_failure);
  EXPECT_NE(message_of(out.error()).find("UNIQUE"), std::string::npos)
      << message_of(out.error());
  EXPECT_NE(message_of(out.error()).find("run_2"), std::string::npos);

  EXPECT_FALSE(get_run("run_2"));
  EXPECT_FALSE(get_run("run_3"));
  EXPECT_FALSE(*db_->get_agent("agt_1"));
  EXPECT_TRUE(db_->logs("run_3", -1, 10, SIZE_MAX)->chunks.empty());
  EXPECT_TRUE(db_->list_tokens()->empty());

  out = db_->apply({put_run{make_run("run_4", 4)}});
  EXPECT_TRUE(out) << message_of(out.error());
  EXPECT_TRUE(get_run("run_4"));
}

// This test ensures that an error raised inside SQLite mid-batch rolls back too.
TEST_F(sqlite_store_test, sqlite_error_mid_batch_rolls_back) {
  raw_query("CREATE TRIGGER fail_boom BEFORE INSERT ON run_logs WHEN NEW.data = 'boom'"
            " BEGIN SELECT RAISE(ABORT, 'forced failure'); END");
  auto out =
      db_->apply({put_run{make_run("run_1", 1)}, append_log{"run_1", make_chunk(0, "ok")},
                  append_log{"run_1", make_chunk(1, "boom")}});
  ASSERT_FALSE(out);
  EXPECT_EQ(code_of(out.error()), errc::store_failure);
  EXPECT_NE(message_of(out.error()).find("forced failure"), std::string::npos);
  EXPECT_FALSE(get_run("run_1"));
  EXPECT_TRUE(db_->logs("run_1", -1, 10, SIZE_MAX)->chunks.empty());
}

// This test ensures that an empty batch commits nothing and succeeds.
TEST_F(sqlite_store_test, empty_batch_is_a_no_op) {
  auto out = db_->apply({});
  ASSERT_TRUE(out);
  EXPECT_TRUE(out->empty());
}

// -- Listing ------------------------------------------------------------------

/// What SQLite's planner says it does for `sql` on the database at `path`,
/// its lines joined.
std::string query_plan(const std::string& path, const std::string& sql) {
  sqlite3* db = nullptr;
  std::string out;
  if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) != SQLITE_OK) {
    sqlite3_close(db);
    return "cannot open " + path;
  }
  sqlite3_stmt* st = nullptr;
  if (sqlite3_prepare_v2(db, ("EXPLAIN QUERY PLAN " + sql).c_str(), -1, &st, nullptr) !=
      SQLITE_OK)
    out = std::string{"cannot prepare: "} + sqlite3_errmsg(db);
  while (st && sqlite3_step(st) == SQLITE_ROW)
    out += reinterpret_cast<const char*>(sqlite3_column_text(st, 3)) + std::string{"\n"};
  sqlite3_finalize(st);
  sqlite3_close(db);
  return out;
}

// This test ensures that a listing of an unfinished status with a plan, an
// agent or a concurrency key walks the status's index (the queue), and one
// of a finished status the other filter's, and that both still filter.
// Without statistics SQLite chose the plan's index: `plan=P&status=pending`
// walked every run of the plan, 1.5 s with a million finished runs.
TEST_F(sqlite_store_test, a_listing_of_an_unfinished_status_walks_the_status_index) {
  std::vector<write> batch;
  for (uint64_t s = 1; s <= 20; ++s)
    batch.emplace_back(
        put_run{make_run("run_" + std::to_string(s), s, run_status::success)});
  for (uint64_t s : {21, 23})
    batch.emplace_back(
        put_run{make_run("run_" + std::to_string(s), s, run_status::pending)});
  auto other = make_run("run_22", 22, run_status::pending);
  other.plan = "other";
  batch.emplace_back(put_run{other});
  apply(batch);

  run_filter f;
  f.status = run_status::pending;
  f.plan = "build";
  auto page = db_->list_runs(f);
  ASSERT_TRUE(page);
  EXPECT_EQ(ids_of(page->runs), (std::vector<std::string>{"run_23", "run_21"}));
  for (bool paged : {false, true}) {
    EXPECT_NE(query_plan(path_, sqlite_list_runs_sql(f, paged)).find("runs_by_status"),
              std::string::npos)
        << query_plan(path_, sqlite_list_runs_sql(f, paged));
  }
  run_filter by_agent;
  by_agent.status = run_status::running;
  by_agent.agent = "agt_1";
  EXPECT_NE(
      query_plan(path_, sqlite_list_runs_sql(by_agent, false)).find("runs_by_status"),
      std::string::npos);
  run_filter by_key;
  by_key.status = run_status::created;
  by_key.concurrency_key = "deploy";
  EXPECT_NE(query_plan(path_, sqlite_list_runs_sql(by_key, false)).find("runs_by_status"),
            std::string::npos);
  run_filter done;
  done.status = run_status::success;
  done.plan = "other";
  EXPECT_NE(query_plan(path_, sqlite_list_runs_sql(done, false)).find("runs_by_plan"),
            std::string::npos);
  auto none = db_->list_runs(done);
  ASSERT_TRUE(none);
  EXPECT_TRUE(none->runs.empty());
}

// This test ensures that pages list every run once, newest first, then end.
TEST_F(sqlite_store_test, list_runs_pages_newest_first) {
  std::vector<write> batch;
  for (uint64_t s = 1; s <= 10; ++s)
    batch.emplace_back(put_run{make_run("run_" + std::to_string(s), s)});
  apply(batch);

  run_filter f;
  f.limit = 3;
  std::vector<uint64_t> seen;
  int pages = 0;
  do {
    auto page = list(f);
    ++pages;
    for (auto& r : page.runs)
      seen.push_back(r.seq);
    f.cursor = page.next_cursor;
    ASSERT_LE(pages, 4);
  } while (!f.cursor.empty());
  EXPECT_EQ(pages, 4);
  EXPECT_EQ(seen, (std::vector<uint64_t>{10, 9, 8, 7, 6, 5, 4, 3, 2, 1}));

  // An exact fit ends without an empty extra page.
  f = {};
  f.limit = 10;
  auto page = list(f);
  EXPECT_EQ(page.runs.size(), 10u);
  EXPECT_TRUE(page.next_cursor.empty());
}

// This test ensures that runs created between pages do not shift later pages.
TEST_F(sqlite_store_test, list_runs_pagination_is_stable_under_inserts) {
  std::vector<write> batch;
  for (uint64_t s = 1; s <= 6; ++s)
    batch.emplace_back(put_run{make_run("run_" + std::to_string(s), s)});
  apply(batch);

  run_filter f;
  f.limit = 2;
  auto first = list(f);
  EXPECT_EQ(ids_of(first.runs), (std::vector<std::string>{"run_6", "run_5"}));
  apply({put_run{make_run("run_7", 7)}, put_run{make_run("run_8", 8)}});
  f.cursor = first.next_cursor;
  auto second = list(f);
  EXPECT_EQ(ids_of(second.runs), (std::vector<std::string>{"run_4", "run_3"}));
  f.cursor = second.next_cursor;
  auto third = list(f);
  EXPECT_EQ(ids_of(third.runs), (std::vector<std::string>{"run_2", "run_1"}));
  EXPECT_TRUE(third.next_cursor.empty());
}

// This test ensures that status, plan and agent filters work alone, together and paged.
TEST_F(sqlite_store_test, list_runs_filters) {
  std::vector<write> batch;
  for (uint64_t s = 1; s <= 12; ++s) {
    auto r = make_run("run_" + std::to_string(s), s,
                      s % 3 == 0 ? run_status::success : run_status::running);
    r.plan = s % 2 ? "odd" : "even";
    r.assigned_agent = s <= 6 ? "agt_a" : "agt_b";
    batch.emplace_back(put_run{r});
  }
  apply(batch);

  run_filter f;
  f.status = run_status::success;
  EXPECT_EQ(ids_of(list(f).runs),
            (std::vector<std::string>{"run_12", "run_9", "run_6", "run_3"}));
  f = {};
  f.plan = "odd";
  EXPECT_EQ(ids_of(list(f).runs), (std::vector<std::string>{"run_11", "run_9", "run_7",
                                                            "run_5", "run_3", "run_1"}));
  f = {};
  f.agent = "agt_a";
  EXPECT_EQ(list(f).runs.size(), 6u);
  EXPECT_EQ(list(f).runs.front().id, "run_6");
  f = {};
  f.status = run_status::running;
  f.plan = "even";
  f.agent = "agt_b";
  EXPECT_EQ(ids_of(list(f).runs), (std::vector<std::string>{"run_10", "run_8"}));
  f.limit = 1;
  auto page = list(f);
  EXPECT_EQ(ids_of(page.runs), (std::vector<std::string>{"run_10"}));
  f.cursor = page.next_cursor;
  page = list(f);
  EXPECT_EQ(ids_of(page.runs), (std::vector<std::string>{"run_8"}));
  EXPECT_TRUE(page.next_cursor.empty());
  f = {};
  f.plan = "none";
  page = list(f);
  EXPECT_TRUE(page.runs.empty());
  EXPECT_TRUE(page.next_cursor.empty());
}

// This test ensures that the page size is clamped to 1..1000.
TEST_F(sqlite_store_test, list_runs_limit_is_clamped) {
  std::vector<write> batch;
  for (uint64_t s = 1; s <= 1001; ++s)
    batch.emplace_back(put_run{make_run("run_" + std::to_string(s), s)});
  apply(batch);
  run_filter f;
  f.limit = 0;
  auto page = list(f);
  EXPECT_EQ(page.runs.size(), 1u);
  EXPECT_FALSE(page.next_cursor.empty());
  f.limit = 5000;
  page = list(f);
  EXPECT_EQ(page.runs.size(), 1000u);
  EXPECT_FALSE(page.next_cursor.empty());
  f.cursor = page.next_cursor;
  page = list(f);
  ASSERT_EQ(page.runs.size(), 1u);
  EXPECT_EQ(page.runs[0].seq, 1u);
  EXPECT_TRUE(page.next_cursor.empty());
}

// This test ensures that listing by concurrency key returns exactly the runs
// with that key, combines with the other filters, and is answered from the
// partial index of keyed runs rather than a scan of every run.
TEST_F(sqlite_store_test, list_runs_by_concurrency_key) {
  std::vector<write> batch;
  for (uint64_t seq = 1; seq <= 6; ++seq) {
    auto r = make_run("run_" + std::to_string(seq), seq,
                      seq == 2 ? run_status::running : run_status::created);
    r.concurrency_key = seq % 3 == 0 ? "" : seq % 3 == 1 ? "tf:prod" : "tf:dev";
    batch.emplace_back(put_run{r, true});
  }
  apply(batch);
  run_filter f;
  f.concurrency_key = "tf:prod";
  auto page = list(f);
  ASSERT_EQ(page.runs.size(), 2u);
  EXPECT_EQ(page.runs[0].id, "run_4");
  EXPECT_EQ(page.runs[1].id, "run_1");
  f.concurrency_key = "tf:dev";
  f.status = run_status::running;
  page = list(f);
  ASSERT_EQ(page.runs.size(), 1u);
  EXPECT_EQ(page.runs[0].id, "run_2");

  sqlite3* raw = nullptr;
  ASSERT_EQ(sqlite3_open(path_.c_str(), &raw), SQLITE_OK);
  std::string plan;
  auto cb = [](void* p, int n, char** values, char**) {
    if (n >= 4 && values[3])
      *static_cast<std::string*>(p) += std::string{values[3]} + ";";
    return 0;
  };
  ASSERT_EQ(sqlite3_exec(raw,
                         "EXPLAIN QUERY PLAN SELECT id FROM runs WHERE 1 AND "
                         "concurrency_key = 'tf:prod' AND concurrency_key <> '' "
                         "ORDER BY seq DESC LIMIT 51",
                         cb, &plan, nullptr),
            SQLITE_OK);
  sqlite3_close(raw);
  EXPECT_NE(plan.find("runs_by_concurrency_key"), std::string::npos) << plan;
}

// This test ensures that a malformed cursor is `invalid_argument` on field `cursor`.
TEST_F(sqlite_store_test, list_runs_rejects_bad_cursor) {
  for (auto bad : {"x", "s", "S5", "s-1", "s+1", "s01", "s1a", " s1", "s1 ", "5",
                   "s99999999999999999999", "s9223372036854775808"}) {
    run_filter f;
    f.cursor = bad;
    auto page = db_->list_runs(f);
    ASSERT_FALSE(page) << bad;
    EXPECT_EQ(code_of(page.error()), errc::invalid_argument) << bad;
    EXPECT_EQ(field_of(page.error()), "cursor") << bad;
  }
  run_filter f;
  f.cursor = "s9223372036854775807";
  EXPECT_TRUE(db_->list_runs(f));
}

// -- Maintenance --------------------------------------------------------------

// This test ensures that `prune` deletes only old terminal runs and their logs, bounded.
TEST_F(sqlite_store_test, prune_deletes_old_terminal_runs_and_their_logs) {
  std::vector<write> batch;
  // Terminal runs 1..5 finish at t0+1001..t0+1005; 6 is terminal but recent;
  // 7 is unfinished with an (odd) old `finished_at`; 8 is unfinished.
  for (uint64_t s = 1; s <= 5; ++s) {
    auto r = make_run("run_" + std::to_string(s), s, run_status::success);
    batch.emplace_back(put_run{r});
    batch.emplace_back(append_log{r.id, make_chunk(0, "log")});
  }
  auto recent = make_run("run_6", 6, run_status::error);
  recent.finished_at = at(5000);
  auto odd = make_run("run_7", 7, run_status::running);
  odd.finished_at = at(0);
  batch.emplace_back(put_run{recent});
  batch.emplace_back(put_run{odd});
  batch.emplace_back(put_run{make_run("run_8", 8, run_status::pending)});
  batch.emplace_back(append_log{"run_8", make_chunk(0, "keep")});
  apply(batch);

  auto n = db_->prune(at(2000), 2);
  ASSERT_TRUE(n);
  EXPECT_EQ(*n, 2u);
  EXPECT_FALSE(get_run("run_1"));
  EXPECT_FALSE(get_run("run_2"));
  EXPECT_TRUE(get_run("run_3"));
  EXPECT_TRUE(db_->logs("run_1", -1, 10, SIZE_MAX)->chunks.empty());
  EXPECT_EQ(raw_query("SELECT COUNT(*) FROM run_log_sizes WHERE run_id <= 'run_2'"), "0");
  EXPECT_EQ(db_->logs("run_3", -1, 10, SIZE_MAX)->chunks.size(), 1u);
  EXPECT_EQ(raw_query("SELECT bytes FROM run_log_sizes WHERE run_id = 'run_3'"), "3");

  n = db_->prune(at(2000), 100);
  ASSERT_TRUE(n);
  EXPECT_EQ(*n, 3u);
  n = db_->prune(at(2000), 100);
  ASSERT_TRUE(n);
  EXPECT_EQ(*n, 0u);
  n = db_->prune(at(9000), 0);
  ASSERT_TRUE(n);
  EXPECT_EQ(*n, 0u);
  EXPECT_EQ(ids_of(list({}).runs), (std::vector<std::string>{"run_8", "run_7", "run_6"}));
  EXPECT_EQ(db_->logs("run_8", -1, 10, SIZE_MAX)->chunks.size(), 1u);
  // The cutoff is exclusive.
  n = db_->prune(at(5000), 100);
  ASSERT_TRUE(n);
  EXPECT_EQ(*n, 0u);
}

// This test ensures a prune commits what it deleted once it held its
// transaction for `prune_hold` (at least one run a call: with 0, one), and
// the runs it left go at the next call.
TEST_F(sqlite_store_test, a_prune_stops_once_it_held_the_writer_long_enough) {
  apply({put_run{make_run("run_1", 1, run_status::success)},
         put_run{make_run("run_2", 2, run_status::error)},
         put_run{make_run("run_3", 3, run_status::canceled)},
         append_log{"run_2", make_chunk(0, "x")}});
  db_.reset();
  store_options opts;
  opts.prune_hold = duration{0};
  db_ = open(opts);
  ASSERT_TRUE(db_);
  for (size_t want : {1u, 1u, 1u, 0u}) {
    auto n = db_->prune(at(9000), 100);
    ASSERT_TRUE(n) << message_of(n.error());
    EXPECT_EQ(*n, want);
  }
  EXPECT_TRUE(list({}).runs.empty());
  EXPECT_TRUE(db_->logs("run_2", -1, 10, SIZE_MAX)->chunks.empty());
}

// This test ensures that `max_seq` survives pruning the newest runs and a restart.
TEST_F(sqlite_store_test, max_seq_survives_prune_and_reopen) {
  apply({put_run{make_run("run_1", 1, run_status::success)},
         put_run{make_run("run_9", 9, run_status::canceled)}});
  auto n = db_->prune(at(1'000'000), 100);
  ASSERT_TRUE(n);
  EXPECT_EQ(*n, 2u);
  db_ = open();
  ASSERT_TRUE(db_);
  auto snap = db_->load(timestamp{});
  ASSERT_TRUE(snap);
  EXPECT_TRUE(snap->runs.empty());
  EXPECT_EQ(snap->max_seq, 9u);
  // A later, higher seq wins over the remembered one.
  apply({put_run{make_run("run_12", 12)}});
  EXPECT_EQ(db_->load(timestamp{})->max_seq, 12u);
}

// This test ensures that the last `stamp_alive` (when meshd last ran) is
// what `load` gives after a reopen, and that a store never stamped gives
// none (meshd then honours no expired token).
TEST_F(sqlite_store_test, the_last_stamp_alive_is_loaded) {
  auto fresh = db_->load(timestamp{});
  ASSERT_TRUE(fresh);
  EXPECT_FALSE(fresh->alive_at);
  apply({stamp_alive{at(5)}});
  apply({put_run{make_run("run_1", 1)}, stamp_alive{at(7)}});
  db_ = open();
  ASSERT_TRUE(db_);
  auto snap = db_->load(timestamp{});
  ASSERT_TRUE(snap);
  ASSERT_TRUE(snap->alive_at);
  EXPECT_EQ(*snap->alive_at, at(7));
  EXPECT_EQ(snap->runs.size(), 1u);
}

// This test ensures that `count_runs` reports every status, zeros included.
TEST_F(sqlite_store_test, count_runs_counts_per_status) {
  apply({put_run{make_run("run_1", 1)}, put_run{make_run("run_2", 2)},
         put_run{make_run("run_3", 3, run_status::running)},
         put_run{make_run("run_4", 4, run_status::error)}});
  auto counts = db_->count_runs();
  ASSERT_TRUE(counts);
  std::vector<std::pair<run_status, int64_t>> want{
      {run_status::created, 2}, {run_status::pending, 0}, {run_status::running, 1},
      {run_status::success, 0}, {run_status::error, 1},   {run_status::canceled, 0}};
  EXPECT_EQ(*counts, want);
}

// This test ensures that the counts `count_runs` answers follow every write
// of a run: an insert, a status changed by a whole upsert or by the changed
// fields alone (into, out of and between finished statuses), a write that
// leaves the status alone, an `insert_only` that finds its id taken, and a
// prune, each checked against counting the rows.
TEST_F(sqlite_store_test, run_counts_follow_every_write_of_a_run) {
  auto check = [&](const char* step) {
    SCOPED_TRACE(step);
    auto counts = db_->count_runs();
    ASSERT_TRUE(counts) << message_of(counts.error());
    for (auto& [status, n] : *counts)
      EXPECT_EQ(std::to_string(n),
                raw_query(std::string{"SELECT COUNT(*) FROM runs WHERE status = '"} +
                          to_string(status) + "'"))
          << to_string(status);
  };
  apply({put_run{make_run("run_1", 1)}, put_run{make_run("run_2", 2)},
         put_run{make_run("run_3", 3, run_status::running)},
         put_run{make_run("run_4", 4, run_status::success)}});
  check("inserts");
  auto stored = *get_run("run_1");
  auto next = stored;
  next.status = run_status::pending;
  next.assigned_agent = "agt_1";
  apply({put_run{next, false, changed_run_fields(stored, next)}});
  check("the changed fields alone");
  auto same = next;
  same.progress = "half";
  apply({put_run{same, false, changed_run_fields(next, same)}});
  check("a write that leaves the status alone");
  apply({put_run{make_run("run_2", 2, run_status::canceled)}});
  check("a whole upsert");
  apply({put_run{make_run("run_4", 4, run_status::error)}});
  check("a finished status to another");
  apply({put_run{make_run("run_4", 4, run_status::success)}});
  check("and back");
  apply({put_run{make_run("run_4", 4, run_status::pending)}});
  check("out of a finished status");
  apply({put_run{make_run("run_4", 4, run_status::success)}});
  check("into one again");
  // A write of the changed fields alone that keeps `finished_at` (meshd's
  // own never do).
  auto done = *get_run("run_4");
  auto redone = done;
  redone.status = run_status::canceled;
  ASSERT_NE(changed_run_fields(done, redone), 0u);
  apply({put_run{redone, false, changed_run_fields(done, redone)}});
  check("a finished status to another, the time kept");
  apply({put_run{done, false, changed_run_fields(redone, done)}});
  check("and back, the time kept");
  apply({put_run{make_run("run_3", 3, run_status::error), true}});
  check("insert_only onto a taken id");
  apply({put_run{make_run("run_5", 5, run_status::canceled), true}});
  check("insert_only of a finished run");
  EXPECT_EQ(get_run("run_3")->status, run_status::running);
  auto n = db_->prune(at(9000), 10);
  ASSERT_TRUE(n);
  EXPECT_EQ(*n, 3u);
  check("a prune");
  std::vector<std::pair<run_status, int64_t>> want{
      {run_status::created, 0}, {run_status::pending, 1}, {run_status::running, 1},
      {run_status::success, 0}, {run_status::error, 0},   {run_status::canceled, 0}};
  EXPECT_EQ(*db_->count_runs(), want);
}

// This test ensures that a stored count that cannot be right (negative, or
// of an unfinished status, which is counted instead) is reported as corrupt
// rather than shown.
TEST_F(sqlite_store_test, a_stored_run_count_that_cannot_be_right_is_corrupt) {
  apply({put_run{make_run("run_1", 1, run_status::success)}});
  raw_query("UPDATE run_counts SET n = -1 WHERE status = 'success'");
  auto counts = db_->count_runs();
  ASSERT_FALSE(counts);
  EXPECT_NE(message_of(counts.error()).find("count of 'success' is corrupt: '-1'"),
            std::string::npos)
      << message_of(counts.error());
  raw_query("UPDATE run_counts SET status = 'running', n = 1");
  counts = db_->count_runs();
  ASSERT_FALSE(counts);
  EXPECT_NE(
      message_of(counts.error()).find("status of 'run_counts' is corrupt: 'running'"),
      std::string::npos)
      << message_of(counts.error());
}

// -- Load ---------------------------------------------------------------------

// This test ensures that `load` returns unrevoked tokens, live agents, unfinished runs.
TEST_F(sqlite_store_test, load_filters_what_memory_needs) {
  auto live = make_token("tok_live", 2);
  auto expired = make_token("tok_expired", 1);
  expired.expires_at = at(-1);
  auto revoked = make_token("tok_revoked", 0);
  revoked.revoked_at = at(3);
  std::vector<write> batch{
      put_token{live},
      put_token{expired},
      put_token{revoked},
      put_agent{make_agent("agt_1", "b-online")},
      put_agent{make_agent("agt_2", "a-offline", agent_status::offline)},
      put_agent{make_agent("agt_3", "c-gone", agent_status::deregistered)},
      put_agent{make_agent("agt_4", "d-drain", agent_status::draining)}};
  // Unfinished runs inserted out of seq order.
  for (auto [id, seq, status] :
       std::vector<std::tuple<std::string, uint64_t, run_status>>{
           {"run_5", 5, run_status::running},
           {"run_2", 2, run_status::created},
           {"run_9", 9, run_status::success},
           {"run_3", 3, run_status::pending},
           {"run_1", 1, run_status::error},
           {"run_7", 7, run_status::canceled}})
    batch.emplace_back(put_run{make_run(id, seq, status)});
  apply(batch);

  auto snap = db_->load(at(21));
  ASSERT_TRUE(snap) << message_of(snap.error());
  EXPECT_EQ(ids_of(snap->tokens), (std::vector<std::string>{"tok_expired", "tok_live"}));
  std::set<std::string> agents;
  for (auto& a : snap->agents)
    agents.insert(a.id);
  EXPECT_EQ(agents, (std::set<std::string>{"agt_1", "agt_2", "agt_4"}));
  // agt_3 left, last seen at 20 ms: forgotten for a load from 21 ms on.
  EXPECT_TRUE(snap->left.empty());
  auto names_left = [&](timestamp since) {
    std::vector<std::string> out;
    auto loaded = db_->load(since);
    EXPECT_TRUE(loaded);
    for (auto& a : loaded->left)
      out.push_back(a.name + "=" + a.labels["env"]);
    return out;
  };
  auto gone_again = make_agent("agt_5", "c-gone", agent_status::deregistered);
  gone_again.labels = {{"env", "later"}};
  gone_again.last_seen_at = at(30);
  apply({put_agent{gone_again}});
  EXPECT_EQ(names_left(at(20)), (std::vector<std::string>{"c-gone=later"}))
      << "the labels of the one last seen";
  // A name registered again is not a left one.
  apply({put_agent{make_agent("agt_6", "c-gone")}});
  EXPECT_TRUE(names_left(at(20)).empty());
  EXPECT_EQ(ids_of(snap->runs), (std::vector<std::string>{"run_2", "run_3", "run_5"}));
  EXPECT_EQ(snap->max_seq, 9u);
  // Loaded runs are whole records.
  expect_same(snap->runs[2], make_run("run_5", 5, run_status::running));
}

// This test ensures that `load` of a fresh database is empty with seq 0.
TEST_F(sqlite_store_test, load_of_empty_database) {
  auto snap = db_->load(timestamp{});
  ASSERT_TRUE(snap);
  EXPECT_TRUE(snap->tokens.empty());
  EXPECT_TRUE(snap->agents.empty());
  EXPECT_TRUE(snap->runs.empty());
  EXPECT_EQ(snap->max_seq, 0u);
}

// This test ensures that agents list by name and tokens by age, none left out.
TEST_F(sqlite_store_test, list_agents_by_name_and_tokens_by_age) {
  auto revoked = make_token("tok_a", 30);
  revoked.revoked_at = at(31);
  apply({put_agent{make_agent("agt_1", "zeta")},
         put_agent{make_agent("agt_2", "alpha", agent_status::deregistered)},
         put_agent{make_agent("agt_3", "mu")}, put_token{revoked},
         put_token{make_token("tok_b", 10)}, put_token{make_token("tok_c", 20)}});
  auto agents = db_->list_agents();
  ASSERT_TRUE(agents);
  std::vector<std::string> names;
  for (auto& a : *agents)
    names.push_back(a.name);
  EXPECT_EQ(names, (std::vector<std::string>{"alpha", "mu", "zeta"}));
  auto tokens = db_->list_tokens();
  ASSERT_TRUE(tokens);
  EXPECT_EQ(ids_of(*tokens), (std::vector<std::string>{"tok_b", "tok_c", "tok_a"}));
}

// -- Durability and concurrency -----------------------------------------------

// This test ensures that everything written is there after closing and reopening.
TEST_F(sqlite_store_test, reopen_persists_everything) {
  auto run = full_run();
  auto agent = make_agent("agt_1", "one");
  agent.labels = {{"k", "v"}};
  auto token = make_token("tok_1", 1);
  apply({put_run{run}, put_agent{agent}, put_token{token},
         append_log{run.id, make_chunk(0, "hello")}});
  db_.reset();
  db_ = open();
  ASSERT_TRUE(db_);

  auto got = get_run(run.id);
  ASSERT_TRUE(got);
  expect_same(*got, run);
  auto a = db_->get_agent(agent.id);
  ASSERT_TRUE(a && *a);
  expect_same(**a, agent);
  auto tokens = db_->list_tokens();
  ASSERT_TRUE(tokens);
  ASSERT_EQ(tokens->size(), 1u);
  expect_same((*tokens)[0], token);
  auto logs = db_->logs(run.id, -1, 10, SIZE_MAX);
  ASSERT_TRUE(logs);
  ASSERT_EQ(logs->chunks.size(), 1u);
  EXPECT_EQ(logs->chunks[0].data, "hello");
  EXPECT_EQ(raw_query("PRAGMA user_version"), std::to_string(sqlite_schema_version));
}

// This test ensures that a reader sees each writer commit and cannot write.
TEST_F(sqlite_store_test, read_only_store_sees_writer_commits) {
  store_options ro;
  ro.read_only = true;
  ro.synchronous = "normal";
  auto reader = open(ro);
  ASSERT_TRUE(reader);

  EXPECT_FALSE(*reader->get_run("run_1"));
  apply({put_run{make_run("run_1", 1)}});
  auto got = reader->get_run("run_1");
  ASSERT_TRUE(got && *got);
  EXPECT_EQ((*got)->status, run_status::created);

  auto page = reader->list_runs({});
  ASSERT_TRUE(page);
  EXPECT_EQ(page->runs.size(), 1u);
  apply({put_run{make_run("run_1", 1, run_status::running)},
         put_run{make_run("run_2", 2)}, append_log{"run_1", make_chunk(0, "x")}});
  got = reader->get_run("run_1");
  ASSERT_TRUE(got && *got);
  EXPECT_EQ((*got)->status, run_status::running);
  page = reader->list_runs({});
  ASSERT_TRUE(page);
  EXPECT_EQ(page->runs.size(), 2u);
  EXPECT_EQ(reader->logs("run_1", -1, 10, SIZE_MAX)->chunks.size(), 1u);
  auto snap = reader->load(timestamp{});
  ASSERT_TRUE(snap);
  EXPECT_EQ(snap->runs.size(), 2u);

  auto out = reader->apply({put_run{make_run("run_3", 3)}});
  ASSERT_FALSE(out);
  EXPECT_EQ(code_of(out.error()), errc::store_failure);
  EXPECT_FALSE(get_run("run_3"));
}

// This test ensures that a reader refuses a schema it would have to migrate.
TEST_F(sqlite_store_test, read_only_store_refuses_other_schema_version) {
  db_.reset();
  raw_query("PRAGMA user_version = 0");
  store_options ro;
  ro.read_only = true;
  auto reader = open_sqlite_store(path_, ro);
  ASSERT_FALSE(reader);
  EXPECT_EQ(code_of(reader.error()), errc::store_failure);
}

// -- Artifacts ----------------------------------------------------------------

put_artifact make_artifact(const std::string& run_id, const std::string& name,
                           const std::string& data) {
  put_artifact w;
  w.artifact.run_id = run_id;
  w.artifact.name = name;
  w.artifact.size = static_cast<int64_t>(data.size());
  w.artifact.sha256 = "sha-of-" + data;
  w.artifact.created_at = at(7);
  w.data = data;
  return w;
}

// This test ensures artifacts round-trip byte for byte (NULs included), are
// listed by name without their bytes, and a taken name is never overwritten.
TEST_F(sqlite_store_test, artifacts_round_trip_and_are_never_overwritten) {
  auto bytes = "a\0b\xff\x00end"s;
  auto out = apply({make_artifact("run_1", "z.bin", bytes),
                    make_artifact("run_1", "dir/a.txt", "text"),
                    make_artifact("run_2", "z.bin", "other run")});
  ASSERT_EQ(out.size(), 3u);
  EXPECT_TRUE(out[0].written && out[1].written && out[2].written);

  auto listed = db_->list_artifacts("run_1");
  ASSERT_TRUE(listed);
  ASSERT_EQ(listed->size(), 2u);
  EXPECT_EQ((*listed)[0].name, "dir/a.txt");
  EXPECT_EQ((*listed)[1].name, "z.bin");
  EXPECT_EQ((*listed)[1].size, static_cast<int64_t>(bytes.size()));
  EXPECT_EQ((*listed)[1].sha256, "sha-of-" + bytes);
  EXPECT_EQ((*listed)[1].created_at, at(7));
  EXPECT_EQ((*listed)[1].run_id, "run_1");

  auto blob = db_->get_artifact("run_1", "z.bin", 0, bytes.size());
  ASSERT_TRUE(blob && *blob);
  EXPECT_EQ((*blob)->data, bytes);
  EXPECT_EQ((*blob)->artifact.name, "z.bin");
  EXPECT_FALSE(*db_->get_artifact("run_1", "missing", 0, 1));
  // Parts: from an offset, at most the bytes asked for, none past the end.
  auto part = db_->get_artifact("run_1", "z.bin", 3, 5);
  ASSERT_TRUE(part && *part);
  EXPECT_EQ((*part)->data, bytes.substr(3, 5));
  EXPECT_EQ((*part)->offset, 3);
  EXPECT_EQ((*part)->artifact.size, static_cast<int64_t>(bytes.size()));
  EXPECT_EQ((*db_->get_artifact("run_1", "z.bin", 7, 1000))->data, bytes.substr(7));
  EXPECT_EQ((*db_->get_artifact("run_1", "z.bin", 0, 0))->data, "");
  EXPECT_EQ((*db_->get_artifact("run_1", "z.bin", static_cast<int64_t>(bytes.size()), 10))
                ->data,
            "");
  EXPECT_TRUE(db_->list_artifacts("run_none")->empty());

  auto again = apply({make_artifact("run_1", "z.bin", "replacement")});
  ASSERT_EQ(again.size(), 1u);
  EXPECT_FALSE(again[0].written);
  EXPECT_EQ(again[0].existing_sha256, "sha-of-" + bytes);
  EXPECT_EQ((*db_->get_artifact("run_1", "z.bin", 0, 1 << 20))->data, bytes);
}

// This test ensures an upload checked when written (`max_artifacts` set, as
// every upload is) is refused for a run that is not stored (retention
// deleted it after the upload's own check: its rows were left for good) and
// past the most artifacts a run may hold, counting those written before it
// in the same transaction (uploads at once all passed their own checks); a
// name the run holds is still answered as before.
TEST_F(sqlite_store_test, a_checked_artifact_needs_its_run_and_room) {
  apply({put_run{make_run("run_1", 1, run_status::success)}});
  auto checked = [](put_artifact w, int64_t max) {
    w.max_artifacts = max;
    return w;
  };
  auto out = apply({checked(make_artifact("run_1", "a", "1"), 2),
                    checked(make_artifact("run_1", "b", "2"), 2),
                    checked(make_artifact("run_1", "c", "3"), 2),
                    checked(make_artifact("run_1", "a", "1"), 2),
                    checked(make_artifact("run_gone", "a", "1"), 2)});
  ASSERT_EQ(out.size(), 5u);
  EXPECT_TRUE(out[0].written && out[1].written);
  EXPECT_FALSE(out[2].written);
  EXPECT_EQ(code_of(out[2].refused), errc::conflict);
  EXPECT_NE(message_of(out[2].refused).find("already holds 2 artifacts"),
            std::string::npos)
      << message_of(out[2].refused);
  EXPECT_FALSE(out[3].written); // the same name again: not refused, answered
  EXPECT_FALSE(out[3].refused);
  EXPECT_EQ(out[3].existing_sha256, "sha-of-1");
  EXPECT_FALSE(out[4].written);
  EXPECT_EQ(code_of(out[4].refused), errc::not_found);
  EXPECT_EQ(db_->list_artifacts("run_1")->size(), 2u);
  EXPECT_TRUE(db_->list_artifacts("run_gone")->empty());
  EXPECT_EQ(code_of(apply({checked(make_artifact("run_1", "d", "4"), 0)})[0].refused),
            errc::conflict);
}

// This test ensures a late log upload (a run that may have ended) is checked
// when written: refused whole for a run that is not stored, and when it
// would take the log past its limit counting what the same transaction
// wrote before it (two uploads at once both passed their own checks);
// chunks the run has add nothing (a retry overlapping its original was
// refused, though its chunk was stored).
TEST_F(sqlite_store_test, a_late_log_upload_needs_its_run_and_room) {
  apply({put_run{make_run("run_1", 1, run_status::success)}});
  auto late = [](const std::string& run, std::vector<log_chunk> chunks) {
    return append_late_logs{run, std::move(chunks), 10};
  };
  auto out = apply({late("run_1", {make_chunk(0, "123456")}),
                    late("run_1", {make_chunk(0, "123456")}),
                    late("run_1", {make_chunk(1, "abc"), make_chunk(2, "de")}),
                    late("run_1", {make_chunk(3, "xy"), make_chunk(4, "zz")}),
                    late("run_gone", {make_chunk(0, "x")})});
  ASSERT_EQ(out.size(), 5u);
  EXPECT_TRUE(out[0].written);
  EXPECT_FALSE(out[1].written); // a retry: harmless
  EXPECT_FALSE(out[1].refused);
  EXPECT_EQ(code_of(out[2].refused), errc::payload_too_large); // 6 + 5 > 10
  EXPECT_TRUE(out[3].written);                                 // 6 + 4
  EXPECT_EQ(code_of(out[4].refused), errc::not_found);
  auto logs = db_->logs("run_1", -1, 10, SIZE_MAX);
  ASSERT_TRUE(logs);
  std::vector<int64_t> seqs;
  for (auto& c : logs->chunks)
    seqs.push_back(c.seq);
  EXPECT_EQ(seqs, (std::vector<int64_t>{0, 3, 4}));
  EXPECT_EQ(*db_->log_bytes("run_gone"), 0);
}

// This test ensures pruning also deletes agent access tokens that expired or
// were revoked before the cutoff (an agent renews its token every two thirds
// of its life: a row each time, kept for good before), and no other token.
TEST_F(sqlite_store_test, prune_deletes_old_agent_tokens_only) {
  auto agent_token = [](const std::string& id) {
    auto t = make_token(id, 0);
    t.kind = token_kind::agent;
    t.agent_id = "agt_1";
    t.agent_session = 1;
    return t;
  };
  auto expired = agent_token("tok_expired");
  expired.expires_at = at(1000);
  auto revoked = agent_token("tok_revoked");
  revoked.revoked_at = at(1500);
  auto live = agent_token("tok_live");
  live.expires_at = at(3000);
  auto forever = agent_token("tok_forever");
  auto reader = make_token("tok_reader", 0);
  reader.kind = token_kind::reader;
  reader.expires_at = at(1000);
  apply({put_token{expired}, put_token{revoked}, put_token{live}, put_token{forever},
         put_token{reader}});
  ASSERT_TRUE(db_->prune(at(2000), 1));
  auto count = [&] { return db_->list_tokens()->size(); };
  EXPECT_EQ(count(), 4u) << "at most max_rows tokens per call";
  ASSERT_TRUE(db_->prune(at(2000), 100));
  auto tokens = db_->list_tokens();
  ASSERT_TRUE(tokens);
  EXPECT_EQ(ids_of(*tokens),
            (std::vector<std::string>{"tok_forever", "tok_live", "tok_reader"}));
}

/// `run_id`'s artifact `name` read part by part, as a download reads it;
/// no answer may hold more than `most` bytes.
std::string read_in_parts(store& db, const std::string& run_id, const std::string& name,
                          size_t most = size_t{1} << 20) {
  std::string out;
  for (;;) {
    auto part = db.get_artifact(run_id, name, static_cast<int64_t>(out.size()), 1 << 20);
    EXPECT_TRUE(part && *part);
    if (!part || !*part || (*part)->data.empty()) break;
    EXPECT_EQ((*part)->offset, static_cast<int64_t>(out.size()));
    EXPECT_LE((*part)->data.size(), most);
    out += (*part)->data;
  }
  return out;
}

// This test ensures an artifact over 1 MiB is stored in parts and read back
// a part at a time from any offset: never past the part holding it, never
// past the end, and whole when the parts are joined.
TEST_F(sqlite_store_test, a_large_artifact_is_stored_and_read_in_parts) {
  constexpr size_t mib = size_t{1} << 20;
  auto bytes = varied_bytes(2 * mib + mib / 2 + 7);
  apply({make_artifact("run_1", "big.bin", bytes)});
  EXPECT_EQ(raw_query("SELECT COUNT(*) FROM run_artifact_parts"), "2");
  EXPECT_EQ(raw_query("SELECT length(data) FROM run_artifacts"), std::to_string(mib));
  auto at_offset = [&](size_t offset, size_t max) {
    auto part = db_->get_artifact("run_1", "big.bin", static_cast<int64_t>(offset), max);
    EXPECT_TRUE(part && *part);
    return part && *part ? (*part)->data : std::string{"<none>"};
  };
  EXPECT_TRUE(at_offset(0, 10 * mib) == bytes.substr(0, mib));
  EXPECT_EQ(at_offset(mib - 3, 100), bytes.substr(mib - 3, 3));
  EXPECT_EQ(at_offset(mib + 5, 10), bytes.substr(mib + 5, 10));
  EXPECT_EQ(at_offset(2 * mib, 4), bytes.substr(2 * mib, 4));
  EXPECT_EQ(at_offset(bytes.size() - 2, 100), bytes.substr(bytes.size() - 2));
  EXPECT_EQ(at_offset(bytes.size(), 100), "");
  EXPECT_TRUE(read_in_parts(*db_, "run_1", "big.bin") == bytes);
  // A repeat (a retried upload) writes no parts of its own.
  auto again = apply({make_artifact("run_1", "big.bin", bytes)});
  ASSERT_EQ(again.size(), 1u);
  EXPECT_FALSE(again[0].written);
  EXPECT_EQ(raw_query("SELECT COUNT(*) FROM run_artifact_parts"), "2");
}

// This test ensures an artifact stored whole by schema version 8 (before
// parts) is still read a part at a time, from any offset, once migrated: an
// eighth of it at a time, since each read walks the value from its start.
TEST_F(sqlite_store_test, an_artifact_stored_before_parts_is_read_in_parts) {
  old_database(8);
  auto bytes = varied_bytes((size_t{3} << 20) + 11);
  sqlite3* raw = nullptr;
  ASSERT_EQ(sqlite3_open(path_.c_str(), &raw), SQLITE_OK);
  sqlite3_stmt* st = nullptr;
  ASSERT_EQ(
      sqlite3_prepare_v2(raw,
                         "INSERT INTO run_artifacts (run_id, name, size, sha256, data,"
                         " created_at) VALUES ('run_1', 'old.bin', ?1, 'x', ?2, 0)",
                         -1, &st, nullptr),
      SQLITE_OK);
  sqlite3_bind_int64(st, 1, static_cast<sqlite3_int64>(bytes.size()));
  sqlite3_bind_blob64(st, 2, bytes.data(), bytes.size(), SQLITE_STATIC);
  EXPECT_EQ(sqlite3_step(st), SQLITE_DONE);
  sqlite3_finalize(st);
  sqlite3_close(raw);
  db_ = open();
  ASSERT_TRUE(db_);
  auto eighth = (bytes.size() + 7) / 8;
  auto part = db_->get_artifact("run_1", "old.bin", (2 << 20) + 3, 5);
  ASSERT_TRUE(part && *part);
  EXPECT_TRUE((*part)->data == bytes.substr((2 << 20) + 3, eighth));
  part = db_->get_artifact("run_1", "old.bin", static_cast<int64_t>(bytes.size()) - 4, 5);
  ASSERT_TRUE(part && *part);
  EXPECT_EQ((*part)->data, bytes.substr(bytes.size() - 4));
  EXPECT_TRUE(read_in_parts(*db_, "run_1", "old.bin",
                            std::max(eighth, size_t{1} << 20)) == bytes);
}

// This test ensures prune deletes a pruned run's artifacts and keeps others'.
TEST_F(sqlite_store_test, prune_deletes_artifacts_with_their_run) {
  apply({put_run{make_run("run_1", 1, run_status::success)},
         put_run{make_run("run_2", 2, run_status::running)},
         make_artifact("run_1", "a", "1"), make_artifact("run_2", "a", "2"),
         make_artifact("run_1", "big", varied_bytes((size_t{1} << 20) + 1)),
         make_artifact("run_2", "big", varied_bytes((size_t{1} << 20) + 1))});
  EXPECT_EQ(raw_query("SELECT COUNT(*) FROM run_artifact_parts"), "2");
  auto n = db_->prune(at(9000), 10);
  ASSERT_TRUE(n);
  EXPECT_EQ(*n, 1u);
  EXPECT_TRUE(db_->list_artifacts("run_1")->empty());
  EXPECT_EQ(db_->list_artifacts("run_2")->size(), 2u);
  EXPECT_EQ(raw_query("SELECT run_id FROM run_artifact_parts"), "run_2");
}

// This test ensures a database written by schema version 1 (before
// artifacts) is migrated on open and keeps its runs.
TEST_F(sqlite_store_test, version_1_database_migrates_to_artifacts) {
  old_database(1);
  raw_query("INSERT INTO meta (key, value) VALUES ('max_pruned_seq', 9)");
  std::vector<std::string> logged;
  set_log_handler([&](log_level, const std::string& text) { logged.push_back(text); });
  db_ = open();
  set_log_handler(nullptr);
  ASSERT_TRUE(db_);
  // An operator upgrading sees that it happened, and from which version.
  EXPECT_EQ(logged, (std::vector<std::string>{
                        "store: migrated the database's schema from version 1 to " +
                        std::to_string(sqlite_schema_version)}));
  EXPECT_EQ(raw_query("PRAGMA user_version"), std::to_string(sqlite_schema_version));
  EXPECT_EQ(db_->load(timestamp{})->max_seq, 9u);
  auto out = apply({make_artifact("run_1", "a", "1")});
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(db_->list_artifacts("run_1")->size(), 1u);
}

// This test ensures a database of schema version 2 migrates to the
// agents' `drained` flag, and an agent stored `draining` before it reads
// as drained.
TEST_F(sqlite_store_test, version_2_database_migrates_to_drained_agents) {
  old_database(2);
  raw_query(
      "INSERT INTO agents (id, name, labels, plans, capacity, status, version, "
      "hostname, scope, registered_at, last_seen_at, session) VALUES ('agt_1', "
      "'old-1', '{}', '[]', 1, 'draining', '', '', '', 0, 0, 1), ('agt_2', 'old-2', "
      "'{}', '[]', 1, 'offline', '', '', '', 0, 0, 1)");
  db_ = open();
  ASSERT_TRUE(db_);
  EXPECT_EQ(raw_query("PRAGMA user_version"), std::to_string(sqlite_schema_version));
  EXPECT_TRUE((*db_->get_agent("agt_1"))->drained);
  EXPECT_FALSE((*db_->get_agent("agt_2"))->drained);
}

// This test ensures a database of schema version 3 migrates to runs'
// `held_session`: a run stored before it reads with none (0), and one
// written after keeps its own.
TEST_F(sqlite_store_test, version_3_database_migrates_to_held_sessions) {
  old_database(3);
  insert_version_3_run("success", "agt_1", 1);
  db_ = open();
  ASSERT_TRUE(db_);
  EXPECT_EQ(raw_query("PRAGMA user_version"), std::to_string(sqlite_schema_version));
  auto old = get_run("run_old");
  ASSERT_TRUE(old);
  EXPECT_EQ(old->held_session, 0);
  auto run = full_run();
  apply({put_run{run}});
  EXPECT_EQ(get_run(run.id)->held_session, 42);
}

// This test ensures a database of schema version 4 migrates to runs'
// `concurrency_key`: a run stored before it has none, and one written after
// keeps its own.
TEST_F(sqlite_store_test, version_4_database_migrates_to_concurrency_keys) {
  old_database(4);
  insert_version_3_run("created", "", 0);
  db_ = open();
  ASSERT_TRUE(db_);
  EXPECT_EQ(raw_query("PRAGMA user_version"), std::to_string(sqlite_schema_version));
  auto old = get_run("run_old");
  ASSERT_TRUE(old);
  EXPECT_EQ(old->concurrency_key, "");
  auto run = full_run();
  apply({put_run{run}});
  EXPECT_EQ(get_run(run.id)->concurrency_key, "tf:prod");
}

// This test ensures a database of schema version 5 migrates to the
// `runs_unfinished` index without `IN`, and start-up still loads exactly
// the unfinished runs through it.
TEST_F(sqlite_store_test, version_5_database_migrates_to_an_unfinished_index_without_in) {
  old_database(5);
  insert_version_3_run("created", "", 0);
  raw_query("UPDATE runs SET seq = 2, id = 'run_done', status = 'success'");
  insert_version_3_run("running", "agt_1", 1);
  db_ = open();
  ASSERT_TRUE(db_);
  EXPECT_EQ(raw_query("PRAGMA user_version"), std::to_string(sqlite_schema_version));
  auto index = raw_query("SELECT sql FROM sqlite_master WHERE name = 'runs_unfinished'");
  EXPECT_EQ(index.find(" IN "), std::string::npos) << index;
  auto snap = db_->load(timestamp{});
  ASSERT_TRUE(snap) << message_of(snap.error());
  ASSERT_EQ(snap->runs.size(), 1u);
  EXPECT_EQ(snap->runs[0].id, "run_old");
}

// This test ensures a database of schema version 9 (runs counted on each
// call) migrates to counts kept by triggers, which start from the runs it
// holds and follow the writes after, and that no trigger is left on inserts
// (version 11).
TEST_F(sqlite_store_test, version_9_database_migrates_to_kept_run_counts) {
  old_database(9);
  insert_version_3_run("running", "agt_1", 1);
  raw_query("UPDATE runs SET seq = 2, id = 'run_done', status = 'success'");
  insert_version_3_run("running", "agt_1", 1);
  db_ = open();
  ASSERT_TRUE(db_);
  EXPECT_EQ(raw_query("PRAGMA user_version"), std::to_string(sqlite_schema_version));
  std::vector<std::pair<run_status, int64_t>> want{
      {run_status::created, 0}, {run_status::pending, 0}, {run_status::running, 1},
      {run_status::success, 1}, {run_status::error, 0},   {run_status::canceled, 0}};
  EXPECT_EQ(*db_->count_runs(), want);
  apply({put_run{make_run("run_old", 1, run_status::error)}});
  want[2].second = 0;
  want[4].second = 1;
  EXPECT_EQ(*db_->count_runs(), want);
  EXPECT_EQ(raw_query("SELECT COUNT(*) FROM sqlite_master WHERE type = 'trigger'"
                      " AND tbl_name = 'runs' AND sql LIKE '%INSERT ON runs%'"),
            "0");
}

// This test ensures a database of schema version 11 migrates to kept log
// sizes: a log stored before is summed when read, and once, at the run's
// next chunk, from which its size is kept (a late upload checked by it).
TEST_F(sqlite_store_test, version_11_database_keeps_log_sizes_from_the_next_chunk) {
  old_database(11);
  raw_query(
      "INSERT INTO run_logs (run_id, seq, stream, data, at) VALUES"
      " ('run_1', 0, 'stdout', 'abc', 1), ('run_1', 1, 'stdout', '\xc3\xa9t\xc3\xa9', 1),"
      " ('run_2', 0, 'stdout', 'x', 1)");
  db_ = open();
  ASSERT_TRUE(db_);
  EXPECT_EQ(raw_query("PRAGMA user_version"), std::to_string(sqlite_schema_version));
  EXPECT_EQ(raw_query("SELECT COUNT(*) FROM run_log_sizes"), "0");
  EXPECT_EQ(*db_->log_bytes("run_1"), 8);
  apply({put_run{make_run("run_1", 1, run_status::success)},
         append_log{"run_1", make_chunk(2, "de")}});
  EXPECT_EQ(raw_query("SELECT bytes FROM run_log_sizes WHERE run_id = 'run_1'"), "10");
  auto out = apply({append_late_logs{"run_1", {make_chunk(3, "xyz")}, 12},
                    append_late_logs{"run_1", {make_chunk(4, "xy")}, 12}});
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(code_of(out[0].refused), errc::payload_too_large); // 10 + 3 > 12
  EXPECT_TRUE(out[1].written);
  EXPECT_EQ(*db_->log_bytes("run_1"), 12);
  EXPECT_EQ(*db_->log_bytes("run_2"), 1);
}

// This test ensures a database of schema version 6 migrates to telling an
// admin's drain from the agent's own: a drained agent still registered (or
// one stored `draining` with no flag) keeps its drain across registrations,
// a deregistered one (which drained itself as it stopped) does not, and an
// agent that was not drained stays so.
TEST_F(sqlite_store_test, version_6_database_keeps_drains_of_registered_agents) {
  old_database(6);
  raw_query("INSERT INTO agents (id, name, labels, plans, capacity, status, version, "
            "hostname, scope, registered_at, last_seen_at, session, drained) VALUES "
            "('agt_1', 'a-1', '{}', '[]', 1, 'offline', '', '', '', 0, 0, 1, 1), "
            "('agt_2', 'a-2', '{}', '[]', 1, 'draining', '', '', '', 0, 0, 1, 0), "
            "('agt_3', 'a-3', '{}', '[]', 1, 'deregistered', '', '', '', 0, 0, 1, 1), "
            "('agt_4', 'a-4', '{}', '[]', 1, 'online', '', '', '', 0, 0, 1, 0)");
  db_ = open();
  ASSERT_TRUE(db_);
  EXPECT_EQ(raw_query("PRAGMA user_version"), std::to_string(sqlite_schema_version));
  for (auto [id, drained, kept] :
       {std::tuple{"agt_1", true, true}, std::tuple{"agt_2", true, true},
        std::tuple{"agt_3", true, false}, std::tuple{"agt_4", false, false}}) {
    SCOPED_TRACE(id);
    auto agent = *db_->get_agent(id);
    ASSERT_TRUE(agent);
    EXPECT_EQ(agent->drained, drained);
    EXPECT_EQ(agent->drain_kept, kept);
  }
}

// This test ensures that inserting or updating a run builds no temporary
// table: SQLite checks each partial index's condition on every such write,
// and a three-value `IN` there (as `runs_unfinished` had until schema
// version 6) builds one each time.
TEST_F(sqlite_store_test, writing_a_run_builds_no_temporary_table) {
  for (const auto& sql :
       {std::string{"UPDATE runs SET status = 'success', finished_at = 1 WHERE id = 'r'"},
        std::string{"INSERT INTO runs (id, status) VALUES ('r', 'created')"}}) {
    auto ops = opcodes(sql);
    ASSERT_FALSE(ops.empty()) << sql;
    EXPECT_EQ(std::count(ops.begin(), ops.end(), "OpenEphemeral"), 0) << sql;
  }
}

// This test ensures operations.md names the schema version this build
// writes, so the upgrade notes do not fall behind a migration.
TEST(sqlite_schema_docs, operations_md_names_the_current_version) {
  std::ifstream in{POLYMESH_SOURCE_DIR "/docs/operations.md"};
  ASSERT_TRUE(in) << "cannot read docs/operations.md";
  std::string text{std::istreambuf_iterator<char>{in}, std::istreambuf_iterator<char>{}};
  auto wanted = "writes version " + std::to_string(sqlite_schema_version) + ")";
  EXPECT_NE(text.find(wanted), std::string::npos)
      << "operations.md should say: " << wanted;
}

} // namespace
} // namespace polymesh
