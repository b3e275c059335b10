// meshd's process behaviour: SIGTERM stops it cleanly, answering waiting
// long-polls, and it exits 0; bad start-up input fails with a message.
#include "mesh/store/sqlite_schema.hpp"
#include "tests/support/mesh_fixture.hpp"
#include "tests/support/meshd_process.hpp"

#include <csignal>
#include <filesystem>
#include <fstream>
#include <future>
#include <sqlite3.h>
#include <sstream>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

namespace polymesh::test {
namespace {

constexpr const char* admin = "signals-test-admin-token-0123456789";

// This test ensures SIGTERM answers a waiting long-poll at once (instead of
// after its wait) and meshd exits with status 0.
TEST(signals, sigterm_wakes_long_polls_and_exits_zero) {
  auto dir = make_temp_dir();
  meshd_process mesh{MESHD_PATH, dir, admin};
  auto reg = call(mesh.port(), "POST", "/v1/tokens", admin,
                  json{{"kind", "registration"}, {"name", "r"}});
  auto agent = call(mesh.port(), "POST", "/v1/agents/register",
                    reg.body["token"].get<std::string>(),
                    json{{"name", "a"}, {"plans", {"noop"}}});
  ASSERT_EQ(agent.status, 201) << agent.raw;
  scripted_agent a{mesh.port(), agent.body["id"], "a", agent.body["access_token"]};
  // Timestamps have millisecond resolution: let the clock move past the
  // registration so the poll's liveness stamp is distinguishable.
  auto seen = call(mesh.port(), "GET", "/v1/agents/a", admin)
                  .body["last_seen_at"]
                  .get<std::string>();
  ASSERT_TRUE(eventually([&] { return to_rfc3339(system_clock{}.now()) > seen; }));
  auto started = std::chrono::steady_clock::now();
  auto poll = std::async(std::launch::async, [&] { return a.poll(25); });
  // The poll is waiting once the agent was seen after registration.
  ASSERT_TRUE(eventually([&] {
    auto shown = call(mesh.port(), "GET", "/v1/agents/a", admin);
    return shown.body["last_seen_at"] != seen;
  }));
  auto status = mesh.kill_and_wait(SIGTERM);
  auto answered = poll.get();
  EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds{20})
      << "the long-poll ran out its wait instead of being answered at shutdown";
  EXPECT_TRUE(answered.status == 200 || answered.status == 503 || answered.status == -1)
      << answered.raw;
  ASSERT_TRUE(WIFEXITED(status)) << "meshd did not exit by itself";
  EXPECT_EQ(WEXITSTATUS(status), 0);
  remove_tree(dir);
}

/// The whole of a file, "" when it cannot be read.
std::string file_text(const std::string& path) {
  std::ifstream in{path};
  return {std::istreambuf_iterator<char>{in}, std::istreambuf_iterator<char>{}};
}

// This test ensures a second SIGTERM cuts the requests still in progress at
// once, instead of after http.stop_grace: an upload stalled mid-body (with
// `http.read_timeout` and the grace at an hour) held the stop for the hour.
TEST(signals, a_second_sigterm_cuts_the_requests_in_progress) {
  auto dir = make_temp_dir();
  std::ofstream{dir + "/mesh.yaml"} << "http:\n  read_timeout: 1h\n  stop_grace: 1h\n";
  auto log = dir + "/meshd.log";
  auto mesh = std::make_unique<meshd_process>(
      MESHD_PATH, dir + "/data", admin,
      std::vector<std::string>{"--config", dir + "/mesh.yaml"}, log);
  auto reg = call(mesh->port(), "POST", "/v1/tokens", admin,
                  json{{"kind", "registration"}, {"name", "r"}});
  auto agent = call(mesh->port(), "POST", "/v1/agents/register",
                    reg.body["token"].get<std::string>(),
                    json{{"name", "a"}, {"plans", {"noop"}}});
  ASSERT_EQ(agent.status, 201) << agent.raw;
  scripted_agent a{mesh->port(), agent.body["id"], "a", agent.body["access_token"]};
  auto run = call(mesh->port(), "POST", "/v1/runs", admin, json{{"plan", "noop"}});
  ASSERT_EQ(run.status, 201) << run.raw;
  auto id = run.body["id"].get<std::string>();
  ASSERT_EQ(a.take(1).size(), 1u);
  ASSERT_EQ(a.start(id).status, 200);
  // An upload whose body stops after its first bytes; the 100 says that
  // meshd is reading it.
  int fd = connect_local(mesh->port());
  ASSERT_GE(fd, 0);
  auto closer = std::shared_ptr<void>{nullptr, [fd](void*) { ::close(fd); }};
  auto head = "PUT /v1/runs/" + id +
              "/artifacts/stalled.bin HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer " +
              a.token + "\r\nContent-Length: 1048576\r\nExpect: 100-continue\r\n\r\n";
  ASSERT_EQ(::send(fd, head.data(), head.size(), MSG_NOSIGNAL),
            static_cast<ssize_t>(head.size()));
  char buf[256];
  auto n = ::recv(fd, buf, sizeof buf, 0);
  ASSERT_GT(n, 0);
  ASSERT_EQ(std::string(buf, static_cast<size_t>(n)), "HTTP/1.1 100 Continue\r\n\r\n");
  ASSERT_EQ(::send(fd, "abc", 3, MSG_NOSIGNAL), 3);

  ASSERT_EQ(::kill(mesh->pid(), SIGTERM), 0);
  // Signals of one kind do not queue: the second must follow the first's
  // handling.
  ASSERT_TRUE(eventually([&] {
    return file_text(log).find("received SIGTERM, shutting down") != std::string::npos;
  }));
  auto exited =
      std::async(std::launch::async, [&] { return mesh->kill_and_wait(SIGTERM); });
  if (exited.wait_for(std::chrono::seconds{30}) != std::future_status::ready) {
    ::kill(mesh->pid(), SIGKILL);
    FAIL() << "meshd did not stop at the second SIGTERM:\n" << file_text(log);
  }
  auto status = exited.get();
  ASSERT_TRUE(WIFEXITED(status)) << "meshd did not exit by itself";
  EXPECT_EQ(WEXITSTATUS(status), 0);
  auto text = file_text(log);
  EXPECT_NE(text.find("received SIGTERM again: cutting the requests still in progress"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("stopping: cut 1 connection still open at a further signal"),
            std::string::npos)
      << text;
  mesh.reset();
  remove_tree(dir);
}

// This test ensures SIGHUP (a closed terminal) shuts meshd down cleanly,
// exit 0, like SIGTERM, and what it acknowledged is there after a restart.
TEST(signals, sighup_shuts_down_cleanly) {
  auto dir = make_temp_dir();
  std::string run_id;
  {
    meshd_process mesh{MESHD_PATH, dir, admin};
    auto r = call(mesh.port(), "POST", "/v1/runs", admin, json{{"plan", "noop"}});
    ASSERT_EQ(r.status, 201) << r.raw;
    run_id = r.body["id"].get<std::string>();
    auto status = mesh.kill_and_wait(SIGHUP);
    ASSERT_TRUE(WIFEXITED(status)) << "meshd died of the signal";
    EXPECT_EQ(WEXITSTATUS(status), 0);
  }
  meshd_process again{MESHD_PATH, dir, admin};
  EXPECT_EQ(call(again.port(), "GET", "/v1/runs/" + run_id, admin).status, 200);
  remove_tree(dir);
}

// This test ensures a database placed outside the data directory
// (`store.path`) is readable by meshd's user only, as are the directories
// meshd creates for it: it holds payloads, logs and token hashes.
TEST(signals, store_outside_the_data_dir_is_private) {
  auto dir = make_temp_dir();
  auto db = dir + "/elsewhere/deep/mesh.db";
  {
    std::ofstream{dir + "/mesh.yaml"} << "store:\n  path: " << db << "\n";
    meshd_process mesh{
        MESHD_PATH, dir + "/data", admin, {"--config", dir + "/mesh.yaml"}};
    ASSERT_EQ(call(mesh.port(), "POST", "/v1/runs", admin, json{{"plan", "noop"}}).status,
              201);
    auto mode = [](const std::string& path) {
      struct stat st {};
      EXPECT_EQ(::stat(path.c_str(), &st), 0) << path;
      return st.st_mode & 0777;
    };
    EXPECT_EQ(mode(db), 0600u);
    EXPECT_EQ(mode(dir + "/elsewhere/deep"), 0700u);
    EXPECT_EQ(mode(dir + "/elsewhere"), 0700u);
    EXPECT_EQ(mode(db + "-wal"), 0600u);
  }
  remove_tree(dir);
}

// This test ensures a config file with an unknown key stops meshd at
// start-up with the key named.
TEST(signals, unknown_config_key_fails_start_up) {
  auto dir = make_temp_dir();
  auto file = dir + "/bad.yaml";
  FILE* f = std::fopen(file.c_str(), "w");
  std::fputs("http:\n  thread: 4\n", f);
  std::fclose(f);
  try {
    meshd_process mesh{MESHD_PATH, dir, admin, {"--config", file}};
    FAIL() << "meshd started with an unknown config key";
  } catch (const std::runtime_error& e) {
    SUCCEED() << e.what();
  }
  remove_tree(dir);
}

// This test ensures a POLYMESH_ADMIN_TOKEN too short to keep is refused
// before meshd creates anything in a new data directory.
TEST(signals, a_short_admin_token_fails_start_up_and_creates_nothing) {
  auto dir = make_temp_dir();
  auto data = dir + "/data";
  EXPECT_THROW(meshd_process(MESHD_PATH, data, "short-token"), std::runtime_error);
  EXPECT_FALSE(std::filesystem::exists(data)) << "meshd created " << data;
  remove_tree(dir);
}

// This test ensures the generated admin token is never written through a
// symlink planted as admin.token (start-up fails, the target is untouched),
// and a plain admin.token left readable by others becomes private.
TEST(signals, admin_token_file_is_not_followed_and_is_private) {
  auto dir = make_temp_dir();
  auto data = dir + "/data";
  std::filesystem::create_directories(data);
  std::filesystem::permissions(data, std::filesystem::perms::owner_all);
  std::ofstream{dir + "/elsewhere.txt"} << "untouched\n";
  std::filesystem::create_symlink(dir + "/elsewhere.txt", data + "/admin.token");
  EXPECT_THROW(meshd_process(MESHD_PATH, data, ""), std::runtime_error);
  std::ifstream target{dir + "/elsewhere.txt"};
  std::string line;
  std::getline(target, line);
  EXPECT_EQ(line, "untouched");

  std::filesystem::remove(data + "/admin.token");
  std::ofstream{data + "/admin.token"} << "old\n";
  std::filesystem::permissions(data + "/admin.token",
                               std::filesystem::perms::owner_read |
                                   std::filesystem::perms::owner_write |
                                   std::filesystem::perms::others_read);
  {
    meshd_process mesh{MESHD_PATH, data, ""};
    struct stat st {};
    ASSERT_EQ(::stat((data + "/admin.token").c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0600u);
  }
  remove_tree(dir);
}

// This test ensures a second meshd given a port that another meshd listens
// on fails at start-up: the listening socket must not share its port (with
// SO_REUSEPORT both bound and the kernel split the clients between them).
TEST(signals, a_port_in_use_fails_start_up) {
  auto first_dir = make_temp_dir();
  auto second_dir = make_temp_dir();
  meshd_process first{MESHD_PATH, first_dir, admin};
  auto port = std::to_string(first.port());
  EXPECT_THROW(
      meshd_process(MESHD_PATH, second_dir, admin, {"--listen", "127.0.0.1:" + port}),
      std::runtime_error);
  EXPECT_EQ(call(first.port(), "GET", "/v1/tokens", admin).status, 200);
  remove_tree(first_dir);
  remove_tree(second_dir);
}

} // namespace
} // namespace polymesh::test

namespace polymesh::test {
namespace {

// This test ensures a second meshd on the same data directory refuses to
// start while the first one runs, and starts once the first is gone.
TEST(signals, one_meshd_per_data_directory) {
  auto dir = make_temp_dir();
  auto first = std::make_unique<meshd_process>(MESHD_PATH, dir, admin);
  EXPECT_THROW(meshd_process(MESHD_PATH, dir, admin), std::runtime_error);
  first->kill_and_wait(SIGKILL); // a crash leaves no stale lock behind
  meshd_process second{MESHD_PATH, dir, admin};
  EXPECT_EQ(call(second.port(), "GET", "/healthz").status, 200);
  first.reset();
  remove_tree(dir);
}

// This test ensures two meshds with their own data directories cannot share
// one database through `store.path` (each believed it owned every run: a
// cancel through one was refused by the other's stale state), and the
// second starts once the first is gone.
TEST(signals, one_meshd_per_database) {
  auto dir = make_temp_dir();
  std::ofstream{dir + "/mesh.yaml"} << "store:\n  path: " << dir << "/shared/mesh.db\n";
  std::vector<std::string> args{"--config", dir + "/mesh.yaml"};
  auto first = std::make_unique<meshd_process>(MESHD_PATH, dir + "/a", admin, args);
  EXPECT_THROW(meshd_process(MESHD_PATH, dir + "/b", admin, args), std::runtime_error);
  first->kill_and_wait(SIGKILL);
  meshd_process second{MESHD_PATH, dir + "/b", admin, args};
  EXPECT_EQ(call(second.port(), "GET", "/healthz").status, 200);
  first.reset();
  // A database named `meshd` in the data directory: its lock is the data
  // directory's, which is not "in use by another meshd".
  std::ofstream{dir + "/own.yaml"} << "store:\n  path: " << dir << "/c/meshd\n";
  meshd_process own{MESHD_PATH, dir + "/c", admin, {"--config", dir + "/own.yaml"}};
  EXPECT_EQ(call(own.port(), "GET", "/healthz").status, 200);
  // A symlink or a hard link to the running meshd's database is that
  // database: both started (the hard link with a WAL of its own, reading
  // an old state).
  ::mkdir((dir + "/links").c_str(), 0700);
  ASSERT_EQ(
      ::symlink((dir + "/shared/mesh.db").c_str(), (dir + "/links/soft.db").c_str()), 0);
  ASSERT_EQ(::link((dir + "/shared/mesh.db").c_str(), (dir + "/links/hard.db").c_str()),
            0);
  for (auto name : {"soft.db", "hard.db"}) {
    std::ofstream{dir + "/link.yaml"} << "store:\n  path: " << dir << "/links/" << name
                                      << "\n";
    auto log = dir + "/link.log";
    EXPECT_THROW(meshd_process(MESHD_PATH, dir + "/d", admin,
                               {"--config", dir + "/link.yaml"}, log),
                 std::runtime_error)
        << name;
    std::stringstream out;
    out << std::ifstream{log}.rdbuf();
    EXPECT_NE(out.str().find("is in use by another meshd (it is the same file as that "
                             "meshd's database, through a link)"),
              std::string::npos)
        << name << ": " << out.str();
  }
  remove_tree(dir);
}

/// Runs the shell command `cmd`; its exit status and output.
std::pair<int, std::string> run_shell(const std::string& cmd) {
  FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) return {-1, "popen failed"};
  std::string out;
  char buf[512];
  while (size_t n = std::fread(buf, 1, sizeof buf, p))
    out.append(buf, n);
  int status = ::pclose(p);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

/// Runs `meshd ARGS 2>&1`; its exit status and output.
std::pair<int, std::string> run_meshd(const std::string& args) {
  return run_shell(std::string{MESHD_PATH} + " " + args + " 2>&1");
}

// This test ensures `meshd --check` checks the config and says where meshd
// would listen and keep its data without creating anything (checking by
// starting meshd made the data directory, a database and an admin token,
// owned by whoever checked), warns of a listener other hosts reach, and
// names a bad key with exit 2, and a limit on open files short of the
// threads.
TEST(signals, check_creates_nothing_and_names_what_it_would_use) {
  auto dir = make_temp_dir();
  auto data = dir + "/data";
  auto [code, out] = run_meshd("--check --data-dir " + data);
  EXPECT_EQ(code, 0) << out;
  EXPECT_EQ(out, "config OK: listen 127.0.0.1:7700, data_dir " + data +
                     " (not there yet: created at the first start), database " + data +
                     "/mesh.db (not there yet: created at the first start)\n");
  EXPECT_FALSE(std::filesystem::exists(data)) << "meshd --check created " << data;

  std::tie(code, out) = run_meshd("--check --listen 0.0.0.0:7700 --data-dir " + dir);
  EXPECT_EQ(code, 0) << out;
  EXPECT_NE(out.find("config OK: listen 0.0.0.0:7700, data_dir " + dir + ", database " +
                     dir + "/mesh.db (not there yet"),
            std::string::npos)
      << out;
  EXPECT_NE(
      out.find("  listen: 0.0.0.0:7700 is reachable from other hosts over plain HTTP"),
      std::string::npos)
      << out;

  // Loopback under any of its names is not warned of.
  for (auto host : {"LOCALHOST", "ip6-localhost", "IP6-Loopback", "127.0.0.2", "[::1]"}) {
    std::tie(code, out) =
        run_meshd("--check --listen " + std::string{host} + ":7700 --data-dir " + dir);
    EXPECT_EQ(code, 0) << out;
    EXPECT_EQ(out.find("reachable from other hosts"), std::string::npos) << out;
  }
  // Another host name in capitals still is.
  std::tie(code, out) =
      run_meshd("--check --listen Mesh.Example.COM:7700 --data-dir " + dir);
  EXPECT_EQ(code, 0) << out;
  EXPECT_NE(out.find("  listen: Mesh.Example.COM:7700 is reachable from other hosts"),
            std::string::npos)
      << out;

  std::ofstream{dir + "/bad.yaml"} << "http:\n  thread: 4\n";
  std::tie(code, out) = run_meshd("--check --config " + dir + "/bad.yaml");
  EXPECT_EQ(code, 2) << out;
  EXPECT_NE(out.find("unknown key 'http.thread'"), std::string::npos) << out;
  EXPECT_FALSE(std::filesystem::exists(dir + "/mesh.db"));

  // What a start would fail on, or start anew in, is said here already.
  std::ofstream{dir + "/a-file"} << "x\n";
  std::tie(code, out) = run_meshd("--check --data-dir " + dir + "/a-file");
  EXPECT_EQ(code, 2) << out;
  EXPECT_EQ(out, "meshd: data_dir " + dir + "/a-file is not a directory\n");
  std::filesystem::create_directories(dir + "/empty");
  std::ofstream{dir + "/empty/mesh.db"};
  std::tie(code, out) = run_meshd("--check --data-dir " + dir + "/empty");
  EXPECT_EQ(code, 0) << out;
  EXPECT_NE(
      out.find("/empty/mesh.db (an empty file: a new, empty mesh is started in it)"),
      std::string::npos)
      << out;

  // A limit on open files short of the threads is said (a start would warn).
  std::tie(code, out) = run_shell("ulimit -n 100 && " + std::string{MESHD_PATH} +
                                  " --check --data-dir " + dir + " 2>&1");
  EXPECT_EQ(code, 0) << out;
  EXPECT_NE(out.find("\n  open files: the limit is 100 (ulimit -n; LimitNOFILE= under "
                     "systemd), below the 144 that 80 connections"),
            std::string::npos)
      << out;
  remove_tree(dir);
}

// This test ensures `--check` says what a start would do to the database
// before it is done: migrate an older schema (said, exit 0), refuse a newer
// one, a file that is no database, or one meshd's user cannot read (exit 2,
// in a start's words). It read nothing of the file, and an upgrade's check
// said `config OK` for a database the new binary would then refuse or
// migrate. It still creates nothing (no -wal, no -shm).
TEST(signals, check_says_what_a_start_would_do_to_the_database) {
  auto dir = make_temp_dir();
  auto db = dir + "/mesh.db";
  auto set_version = [&](int v) {
    sqlite3* raw = nullptr;
    ASSERT_EQ(sqlite3_open(db.c_str(), &raw), SQLITE_OK);
    auto sql = "PRAGMA user_version = " + std::to_string(v);
    EXPECT_EQ(sqlite3_exec(raw, sql.c_str(), nullptr, nullptr, nullptr), SQLITE_OK);
    sqlite3_close(raw);
  };
  set_version(sqlite_schema_version - 1);
  auto [code, out] = run_meshd("--check --data-dir " + dir);
  EXPECT_EQ(code, 0) << out;
  EXPECT_NE(out.find("  database: schema version " +
                     std::to_string(sqlite_schema_version - 1) + ", migrated to " +
                     std::to_string(sqlite_schema_version) + " at the next start"),
            std::string::npos)
      << out;
  EXPECT_FALSE(std::filesystem::exists(db + "-wal"));
  EXPECT_FALSE(std::filesystem::exists(db + "-shm"));

  set_version(sqlite_schema_version);
  std::tie(code, out) = run_meshd("--check --data-dir " + dir);
  EXPECT_EQ(code, 0) << out;
  EXPECT_EQ(out.find("database: schema"), std::string::npos) << out;

  set_version(sqlite_schema_version + 1);
  std::tie(code, out) = run_meshd("--check --data-dir " + dir);
  EXPECT_EQ(code, 2) << out;
  EXPECT_EQ(out, "meshd: database '" + db + "': database schema version " +
                     std::to_string(sqlite_schema_version + 1) +
                     " is newer than this build supports (" +
                     std::to_string(sqlite_schema_version) + ")\n");

  // A version still in the WAL (a meshd killed, or an older one stopped
  // while a poll was open) is the one a start finds, not the header's.
  std::filesystem::remove(db);
  sqlite3* live = nullptr;
  ASSERT_EQ(sqlite3_open(db.c_str(), &live), SQLITE_OK);
  for (const auto& sql :
       {std::string{"PRAGMA journal_mode = WAL"},
        std::string{"PRAGMA wal_autocheckpoint = 0"},
        "PRAGMA user_version = " + std::to_string(sqlite_schema_version - 1)})
    EXPECT_EQ(sqlite3_exec(live, sql.c_str(), nullptr, nullptr, nullptr), SQLITE_OK)
        << sql;
  std::tie(code, out) = run_meshd("--check --data-dir " + dir);
  sqlite3_close(live);
  EXPECT_EQ(code, 0) << out;
  EXPECT_NE(out.find("  database: schema version " +
                     std::to_string(sqlite_schema_version - 1) + ", migrated to"),
            std::string::npos)
      << out;

  std::ofstream{db, std::ios::trunc} << "not a database, but not empty either\n";
  std::tie(code, out) = run_meshd("--check --data-dir " + dir);
  EXPECT_EQ(code, 2) << out;
  EXPECT_EQ(out, "meshd: database '" + db + "': file is not a database\n");
  remove_tree(dir);
}

/// Starts meshd on `dir` (POLYMESH_ADMIN_TOKEN=`admin_token`, empty for
/// none) until it answers, stops it; what it logged.
std::string log_of_a_start(const std::string& dir,
                           const std::string& admin_token = admin) {
  auto log = dir + "/meshd.log";
  {
    meshd_process mesh{MESHD_PATH, dir, admin_token, {}, log};
    EXPECT_EQ(call(mesh.port(), "GET", "/healthz").status, 200);
    mesh.kill_and_wait(SIGTERM);
  }
  return file_text(log);
}

// This test ensures an empty database file (what a failed restore leaves:
// an empty backup, a copy cut short) starts a new mesh with the same
// warning as a missing one; it was logged as a restore of nothing.
TEST(signals, an_empty_database_file_is_warned_of_as_a_new_mesh) {
  auto dir = make_temp_dir();
  std::ofstream{dir + "/mesh.db"};
  auto text = log_of_a_start(dir);
  EXPECT_NE(text.find("warn store " + dir +
                      "/mesh.db: the database file was empty (0 bytes); started a new, "
                      "empty mesh"),
            std::string::npos)
      << text;
  remove_tree(dir);
}

// This test ensures an admin.token left from a start without
// POLYMESH_ADMIN_TOKEN is warned of once the variable replaced it, and at
// the starts without the variable after that: clients following the
// README's MESH_TOKEN_FILE got 401 with no word in the log.
TEST(signals, a_stale_admin_token_file_is_warned_of) {
  auto dir = make_temp_dir();
  std::ofstream{dir + "/admin.token"} << "pm_admin.generated-before-0123456789\n";
  const std::string stale = "warn " + dir +
                            "/admin.token holds an earlier admin token, which no "
                            "longer works (POLYMESH_ADMIN_TOKEN replaced it)";
  auto text = log_of_a_start(dir);
  EXPECT_NE(text.find(stale), std::string::npos) << text;
  text = log_of_a_start(dir, "");
  EXPECT_NE(text.find(stale), std::string::npos) << text;
  // The file holding the variable's own value is not stale.
  std::ofstream{dir + "/admin.token"} << admin << "\n";
  for (const auto* token : {admin, ""}) {
    text = log_of_a_start(dir, token);
    EXPECT_EQ(text.find("admin.token holds"), std::string::npos) << text;
  }
  remove_tree(dir);
}

// This test ensures a POLYMESH_ADMIN_TOKEN that starts or ends with a blank
// or holds a control character (a line break read from its file, a tab)
// fails start-up: it became the admin token as it was, and no client could
// send it (meshctl refuses a token with a tab). A space inside (a
// passphrase) can be sent, and is taken.
TEST(signals, an_admin_token_no_client_could_send_is_refused) {
  auto dir = make_temp_dir();
  for (const auto* token :
       {"signals-test-admin-0123\n", " signals-test-admin-0123",
        "signals-test-admin-0123\t", "signals-test\radmin-0123",
        "signals-test-admin-0123\x7f", "signals-test\tadmin-0123", "                "}) {
    SCOPED_TRACE(token);
    auto [code, out] = run_shell("POLYMESH_ADMIN_TOKEN='" + std::string{token} + "' " +
                                 MESHD_PATH + " --check --data-dir " + dir + " 2>&1");
    EXPECT_EQ(code, 2) << out;
    EXPECT_NE(
        out.find("POLYMESH_ADMIN_TOKEN starts or ends with a blank, or holds a line "
                 "break or control character"),
        std::string::npos)
        << out;
  }
  auto [code, out] =
      run_shell("POLYMESH_ADMIN_TOKEN='correct horse battery staple' " +
                std::string{MESHD_PATH} + " --check --data-dir " + dir + " 2>&1");
  EXPECT_EQ(code, 0) << out;
  remove_tree(dir);
}

// This test ensures a pool of HTTP threads the system will not create
// (a limit on the user's threads, systemd's TasksMax) fails start-up with
// exit 2 naming http.threads, before meshd says it listens: it printed
// `listening on` and then aborted (exit 134).
TEST(signals, http_threads_the_system_refuses_fail_start_up_cleanly) {
  if (::geteuid() != 0)
    GTEST_SKIP() << "needs root, to run meshd as another user under a limit on threads";
  // meshd as uid 65534 with at most 300 processes and threads for that user.
  const std::string limited_meshd =
      "prlimit --nproc=300 setpriv --reuid=65534 --regid=65534 --clear-groups " +
      std::string{MESHD_PATH};
  // util-linux's prlimit and setpriv, and a meshd that user may run.
  if (run_shell(limited_meshd + " --version 2>&1").first != 0)
    GTEST_SKIP() << "cannot run meshd as uid 65534 through prlimit and setpriv here";
  auto dir = make_temp_dir();
  ASSERT_EQ(::chown(dir.c_str(), 65534, 65534), 0);
  std::ofstream{dir + "/mesh.yaml"} << "listen: 127.0.0.1:0\nhttp:\n  threads: 1000\n";
  // -1 when a signal ended it (the abort this test is about).
  auto [code, text] = run_shell(limited_meshd + " --config " + dir +
                                "/mesh.yaml --data-dir " + dir + " 2>&1");
  EXPECT_EQ(code, 2) << text;
  EXPECT_NE(text.find(" HTTP threads (http.threads + http.run_waits): "),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("ulimit -u, systemd TasksMax"), std::string::npos) << text;
  EXPECT_EQ(text.find("listening on"), std::string::npos) << text;
  remove_tree(dir);
}

// This test ensures a database meshd's user may not open is named as the
// store names a database it cannot open, with what to do: the message said
// `store.path: cannot open '…'`, a key the operator never set.
TEST(signals, a_database_the_user_may_not_open_is_named_as_the_database) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root, to run meshd as another user";
  const std::string as_nobody =
      "setpriv --reuid=65534 --regid=65534 --clear-groups " + std::string{MESHD_PATH};
  if (run_shell(as_nobody + " --version 2>&1").first != 0)
    GTEST_SKIP() << "cannot run meshd as uid 65534 through setpriv here";
  auto dir = make_temp_dir();
  ASSERT_EQ(::chown(dir.c_str(), 65534, 65534), 0);
  // A database root made: its user's alone.
  std::ofstream{dir + "/mesh.db"};
  ASSERT_EQ(::chmod((dir + "/mesh.db").c_str(), 0600), 0);
  auto [code, text] =
      run_shell(as_nobody + " --listen 127.0.0.1:0 --data-dir " + dir + " 2>&1");
  EXPECT_EQ(code, 2) << text;
  EXPECT_NE(text.find("meshd: database '" + dir +
                      "/mesh.db': cannot open it: Permission denied: give meshd's user "
                      "the file and its directory (chown), mode 0600"),
            std::string::npos)
      << text;
  EXPECT_EQ(text.find("store.path"), std::string::npos) << text;
  // `--check`, as the service's user, says so before a start.
  std::tie(code, text) = run_shell(as_nobody + " --check --data-dir " + dir + " 2>&1");
  EXPECT_EQ(code, 2) << text;
  EXPECT_EQ(text, "meshd: database '" + dir +
                      "/mesh.db': cannot open it: Permission denied: give meshd's user "
                      "the file and its directory (chown), mode 0600\n");
  // Run as a user who may not look into the data directory, it says so:
  // it said the directory and the database were "not there yet".
  ASSERT_EQ(::chmod(dir.c_str(), 0700), 0);
  ASSERT_EQ(::chown(dir.c_str(), 0, 0), 0);
  std::tie(code, text) = run_shell(as_nobody + " --check --data-dir " + dir + " 2>&1");
  EXPECT_EQ(code, 2) << text;
  EXPECT_NE(text.find("meshd: database '" + dir +
                      "/mesh.db': cannot reach it: Permission denied (run --check as "
                      "meshd's user"),
            std::string::npos)
      << text;
  ASSERT_EQ(::chown(dir.c_str(), 65534, 65534), 0);
  ASSERT_EQ(::chmod((dir + "/mesh.db").c_str(), 0644), 0);
  std::tie(code, text) = run_shell(as_nobody + " --check --data-dir " + dir + " 2>&1");
  EXPECT_EQ(code, 2) << text;
  EXPECT_NE(text.find("/mesh.db': meshd's user may read it but not write it"),
            std::string::npos)
      << text;
  // A database it may write in a directory it may not: SQLite cannot make
  // the -wal beside it. `--check` said OK, and a start failed with "attempt
  // to write a readonly database".
  ASSERT_EQ(::chmod((dir + "/mesh.db").c_str(), 0666), 0);
  ASSERT_EQ(::chown(dir.c_str(), 0, 0), 0);
  ASSERT_EQ(::chmod(dir.c_str(), 0755), 0);
  ASSERT_EQ(::chmod((dir + "/meshd.lock").c_str(), 0666), 0);
  ASSERT_EQ(::chmod((dir + "/mesh.db.lock").c_str(), 0666) == 0 || errno == ENOENT, true);
  for (auto* how : {" --check", " --listen 127.0.0.1:0"}) {
    std::tie(code, text) =
        run_shell(as_nobody + how + std::string{" --data-dir "} + dir + " 2>&1");
    EXPECT_EQ(code, 2) << how << ": " << text;
    EXPECT_NE(text.find("/mesh.db': meshd's user cannot make files in its directory '" +
                        dir + "', where SQLite keeps the database's -wal and -shm files"),
              std::string::npos)
        << how << ": " << text;
  }
  remove_tree(dir);
}

} // namespace
} // namespace polymesh::test
