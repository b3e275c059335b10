// meshctl's error messages and exit codes: unreachable mesh, 401, 403, 404,
// validation with a caret, usage errors.
#include "tests/cli/meshctl_harness.hpp"

#include <arpa/inet.h>
#include <csignal>
#include <fcntl.h>
#include <fstream>
#include <iterator>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

namespace polymesh::cli_test {
namespace {

using failure_cmd = meshctl_test;

/// A 127.0.0.1 port nobody listens on: bound by the kernel, then released.
int closed_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  socklen_t len = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

// This test ensures an unreachable mesh is reported with its URL and exit
// code 69, distinct from errors the mesh answers.
TEST_F(failure_cmd, unreachable_mesh_names_the_url) {
  auto dead = "http://127.0.0.1:" + std::to_string(closed_port());
  auto o = ctl_raw({"--mesh", dead, "--token", admin, "agents", "list"});
  EXPECT_EQ(o.code, 69);
  EXPECT_NE(o.err.find("cannot reach the mesh at " + dead), std::string::npos) << o.err;
}

// This test ensures `--help` lists the exit codes meshctl gives, as
// docs/cli.md does: 3 (a refused request), 75 (no answer) and 141 (a closed
// pipe) among them.
TEST_F(failure_cmd, help_lists_every_exit_code) {
  auto o = ctl_raw({"--help"});
  EXPECT_EQ(o.code, 0);
  for (auto code : {"0 ok", "1 the waited-for run ended in error", "2 it was canceled",
                    "3 refused or failed", "64 usage error", "69 mesh unreachable",
                    "75 a change was sent but no answer came", "130 interrupted",
                    "141 standard output closed", "143 terminated"})
    EXPECT_NE(o.out.find(code), std::string::npos) << code << "\n" << o.out;
}

// This test ensures a closed standard output (`meshctl ... | head -0`) ends
// meshctl quietly by SIGPIPE (141 in a shell), also when its parent left
// SIGPIPE blocked: then the write failed and meshctl said "a full disk"
// (exit 3).
TEST_F(failure_cmd, a_closed_standard_output_ends_quietly_by_sigpipe) {
  for (bool blocked : {false, true}) {
    SCOPED_TRACE(blocked ? "SIGPIPE blocked" : "SIGPIPE as usual");
    int out[2];
    ASSERT_EQ(::pipe(out), 0);
    ::close(out[0]); // the reader is gone before meshctl writes
    auto err_file = dir + "/err";
    std::vector<std::string> argv_s{MESHCTL_PATH, "--mesh", url,
                                    "--token",    admin,    "status"};
    std::vector<char*> argv;
    for (auto& a : argv_s)
      argv.push_back(a.data());
    argv.push_back(nullptr);
    auto env_s = base_env();
    std::vector<char*> envp;
    for (auto& e : env_s)
      envp.push_back(e.data());
    envp.push_back(nullptr);
    pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      if (blocked) {
        sigset_t set;
        sigemptyset(&set);
        sigaddset(&set, SIGPIPE);
        ::sigprocmask(SIG_BLOCK, &set, nullptr);
      }
      int err = ::open(err_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
      ::dup2(out[1], STDOUT_FILENO);
      ::dup2(err, STDERR_FILENO);
      ::execve(MESHCTL_PATH, argv.data(), envp.data());
      ::_exit(127);
    }
    ::close(out[1]);
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    std::ifstream in{err_file};
    std::string err{std::istreambuf_iterator<char>{in}, std::istreambuf_iterator<char>{}};
    EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGPIPE)
        << "exit " << (WIFEXITED(status) ? WEXITSTATUS(status) : -1) << ": " << err;
    EXPECT_EQ(err, "");
  }
}

// This test ensures a bad selector fails before anything is sent, with exit
// code 64, the selector echoed and a caret under the offending position.
TEST_F(failure_cmd, bad_selector_shows_a_caret) {
  auto o = ctl({"agents", "list", "-l", "env=prod,tier in (a b"});
  EXPECT_EQ(o.code, 64);
  EXPECT_NE(o.err.find("error: "), std::string::npos);
  auto at = o.err.find("  env=prod,tier in (a b\n");
  ASSERT_NE(at, std::string::npos) << o.err;
  auto caret_line = o.err.substr(o.err.find('\n', at) + 1);
  auto caret = caret_line.find('^');
  ASSERT_NE(caret, std::string::npos) << o.err;
  // The caret points into the selector text, at or after `in (`.
  EXPECT_GE(caret - 2, std::string{"env=prod,tier in ("}.size()) << o.err;

  auto s = ctl({"runs", "submit", "noop", "-l", "!"});
  EXPECT_EQ(s.code, 64);
  EXPECT_NE(s.err.find("  !\n   ^\n"), std::string::npos) << s.err;
}

// This test ensures 401 says that no token was given and where tokens come
// from, and 403 names the token kinds the endpoint needs.
TEST_F(failure_cmd, unauthenticated_and_forbidden_are_explained) {
  auto none = ctl_raw({"--mesh", url, "runs", "list"});
  EXPECT_EQ(none.code, 3);
  EXPECT_NE(none.err.find("not authenticated"), std::string::npos) << none.err;
  EXPECT_NE(none.err.find("MESH_TOKEN"), std::string::npos) << none.err;

  auto reader = make_token("reader");
  auto denied = ctl_raw({"--mesh", url, "--token", reader, "runs", "submit", "noop"});
  EXPECT_EQ(denied.code, 3);
  EXPECT_NE(denied.err.find("permission denied"), std::string::npos) << denied.err;
  EXPECT_NE(denied.err.find("submitter"), std::string::npos) << denied.err;
  EXPECT_NE(denied.err.find("HTTP 403"), std::string::npos) << denied.err;
}

// This test ensures a missing run or agent is reported as not found, with
// exit 3 (the mesh refused the request), which CI tells apart from a run
// that failed (1).
TEST_F(failure_cmd, not_found) {
  auto run = ctl({"runs", "show", "no-such-run"});
  EXPECT_EQ(run.code, 3);
  EXPECT_NE(run.err.find("not found"), std::string::npos) << run.err;
  auto agent = ctl({"agents", "drain", "no-such-agent"});
  EXPECT_EQ(agent.code, 3);
  EXPECT_NE(agent.err.find("not found"), std::string::npos) << agent.err;
}

// This test ensures validation errors name the field, and bad command lines
// exit 64 without contacting the mesh.
TEST_F(failure_cmd, validation_and_usage_errors) {
  auto plan = ctl({"runs", "submit", "bad plan!"});
  EXPECT_EQ(plan.code, 64);
  EXPECT_NE(plan.err.find("plan"), std::string::npos) << plan.err;
  auto flag = ctl({"runs", "list", "--no-such-flag"});
  EXPECT_EQ(flag.code, 64);
  auto missing = ctl({"runs"});
  EXPECT_EQ(missing.code, 64);
  EXPECT_NE(missing.err.find("'meshctl runs' needs a command: submit, rerun, list"),
            std::string::npos)
      << missing.err;
  auto unknown = ctl({"runs", "frobnicate"});
  EXPECT_EQ(unknown.code, 64);
  EXPECT_NE(unknown.err.find("unknown command 'frobnicate' for 'meshctl runs'"),
            std::string::npos)
      << unknown.err;
  auto top = ctl({"frobnicate"});
  EXPECT_EQ(top.code, 64);
  EXPECT_NE(top.err.find("unknown command 'frobnicate' for 'meshctl'; commands: agents"),
            std::string::npos)
      << top.err;
  // Names given to list filters are checked locally too.
  for (auto args :
       std::vector<std::vector<std::string>>{{"runs", "list", "--plan", ".x"},
                                             {"runs", "list", "--agent", "-bad"},
                                             {"agents", "list", "--plan", ".x"}}) {
    auto r = ctl(args);
    EXPECT_EQ(r.code, 64) << args[0] << " " << args[1] << " " << args[2] << ": " << r.err;
    EXPECT_NE(r.err.find(args[2] + ":"), std::string::npos) << r.err;
  }
  auto output = ctl({"status", "-o", "xml"});
  EXPECT_EQ(output.code, 64);
  auto bad_url = ctl_raw({"--mesh", "127.0.0.1:1", "status"});
  EXPECT_EQ(bad_url.code, 64);
  EXPECT_NE(bad_url.err.find("http://"), std::string::npos) << bad_url.err;
}

// This test ensures an empty value (an unset shell variable) is refused for
// every option and argument that takes one, naming it, with exit 64 and
// nothing sent: it was taken as "not given" (`--ttl ""` a token that never
// expires, `--priority ""` priority 0, `-l ""` every agent).
TEST_F(failure_cmd, an_empty_value_is_refused_for_every_option) {
  auto runs_before = call(port, "GET", "/v1/runs", admin).body["runs"].size();
  auto tokens_before = call(port, "GET", "/v1/tokens", admin).body["tokens"].size();
  using args = std::vector<std::string>;
  std::vector<std::pair<args, std::string>> cases{
      {{"--mesh", "", "status"}, "--mesh"},
      {{"--token", "", "status"}, "--token"},
      {{"--token-file", "", "status"}, "--token-file"},
      {{"--ca-file", "", "status"}, "--ca-file"},
      {{"-o", "", "status"}, "--output"},
      {{"--config", "", "status"}, "--config"},
      {{"agents", "list", "-l", ""}, "--selector"},
      {{"agents", "list", "--selector", ""}, "--selector"},
      {{"agents", "list", "--status", ""}, "--status"},
      {{"agents", "list", "--plan", ""}, "--plan"},
      {{"agents", "show", ""}, "NAME"},
      {{"agents", "label", "", "a=b"}, "NAME"},
      {{"agents", "label", "web-1", ""}, "EDITS"},
      {{"agents", "drain", ""}, "NAME"},
      {{"agents", "undrain", ""}, "NAME"},
      {{"agents", "remove", ""}, "NAME"},
      {{"runs", "submit", ""}, "PLAN"},
      {{"runs", "submit", "noop", "-l", ""}, "--selector"},
      {{"runs", "submit", "noop", "--agent", ""}, "--agent"},
      {{"runs", "submit", "noop", "--param", ""}, "--param"},
      {{"runs", "submit", "noop", "--params-file", ""}, "--params-file"},
      {{"runs", "submit", "noop", "--payload", ""}, "--payload"},
      {{"runs", "submit", "noop", "--priority", ""}, "--priority"},
      {{"runs", "submit", "noop", "--timeout", ""}, "--timeout"},
      {{"runs", "submit", "noop", "--ttl", ""}, "--ttl"},
      {{"runs", "submit", "noop", "--idempotency-key", ""}, "--idempotency-key"},
      {{"runs", "submit", "noop", "--concurrency-key", ""}, "--concurrency-key"},
      {{"runs", "rerun", ""}, "ID"},
      {{"runs", "rerun", "run_x", "--priority", ""}, "--priority"},
      {{"runs", "rerun", "run_x", "--idempotency-key", ""}, "--idempotency-key"},
      {{"runs", "list", "--status", ""}, "--status"},
      {{"runs", "list", "--plan", ""}, "--plan"},
      {{"runs", "list", "--agent", ""}, "--agent"},
      {{"runs", "list", "--concurrency-key", ""}, "--concurrency-key"},
      {{"runs", "list", "--limit", ""}, "--limit"},
      {{"runs", "list", "--cursor", ""}, "--cursor"},
      {{"runs", "show", ""}, "ID"},
      {{"runs", "logs", ""}, "ID"},
      {{"runs", "cancel", ""}, "ID"},
      {{"runs", "explain", ""}, "ID"},
      {{"runs", "wait", ""}, "ID"},
      {{"runs", "artifacts", ""}, "ID"},
      {{"runs", "artifacts", "run_x", "--get", ""}, "--get"},
      {{"runs", "artifacts", "run_x", "--get", "a", "-O", ""}, "--file"},
      {{"runs", "artifacts", "run_x", "--get", "a", "--file", ""}, "--file"},
      {{"tokens", "create", "--kind", "", "--name", "n"}, "--kind"},
      {{"tokens", "create", "--kind", "reader", "--name", ""}, "--name"},
      {{"tokens", "create", "--kind", "reader", "--name", "n", "--ttl", ""}, "--ttl"},
      {{"tokens", "create", "--kind", "submitter", "--name", "n", "--scope", ""},
       "--scope"},
      {{"tokens", "list", "--kind", ""}, "--kind"},
      {{"tokens", "revoke", ""}, "ID"},
  };
  for (auto& [argv, name] : cases) {
    std::string shown;
    for (auto& a : argv)
      shown += (shown.empty() ? "" : " ") + (a.empty() ? std::string{"''"} : a);
    SCOPED_TRACE(shown);
    // A global flag alone: `ctl` gives --mesh and --token already.
    auto r = argv.front().front() == '-' ? ctl_raw(argv) : ctl(argv);
    EXPECT_EQ(r.code, 64) << r.out << r.err;
    EXPECT_NE(r.err.find("error: " + name + ": needs a value, not an empty one"),
              std::string::npos)
        << r.err;
  }
  EXPECT_EQ(call(port, "GET", "/v1/runs", admin).body["runs"].size(), runs_before);
  EXPECT_EQ(call(port, "GET", "/v1/tokens", admin).body["tokens"].size(), tokens_before);
}

} // namespace
} // namespace polymesh::cli_test
