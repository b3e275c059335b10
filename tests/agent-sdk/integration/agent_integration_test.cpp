// End to end: a real meshd and real mesh-agent processes on 127.0.0.1,
// talking real HTTP. Each test starts its own meshd on port 0.
#include "mesh_process.hpp"

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <gtest/gtest.h>
#include <sstream>
#include <sys/stat.h>
#include <unistd.h>

using namespace polymesh::itest;

namespace {

class agent_integration : public ::testing::Test {
protected:
  void SetUp() override {
    mesh_ = std::make_unique<meshd_process>(dir_.path());
    api_ = std::make_unique<mesh_api>(mesh_->url(), mesh_->admin_token());
    reg_ = api_->create_registration_token("itest");
  }

  void TearDown() override {
    if (HasFailure()) {
      std::cerr << "---- meshd log ----\n" << mesh_->log();
      for (auto* a : agents_)
        std::cerr << "---- agent log ----\n" << a->log();
    }
  }

  /// An agent started in `dir`, not waited for.
  agent_process& launch_agent(const std::string& dir, const agent_options& o) {
    owned_.push_back(std::make_unique<agent_process>(dir, mesh_->url(), reg_, o));
    agents_.push_back(owned_.back().get());
    return *owned_.back();
  }

  agent_process& start_agent(agent_options o) {
    owned_.push_back(std::make_unique<agent_process>(dir_.path(), mesh_->url(), reg_, o));
    agents_.push_back(owned_.back().get());
    api_->wait_agent_online(o.name);
    return *owned_.back();
  }

  struct held_run {
    agent_process& agent;
    std::string id;
    pid_t pid; ///< 0 when the run's pid never showed in its log
  };
  /// Starts agent dev-1 with the shell plans and submits a run of `hold`,
  /// which waits until it is stopped.
  held_run start_held_run();

  scratch_dir dir_;
  std::unique_ptr<meshd_process> mesh_;
  std::unique_ptr<mesh_api> api_;
  std::string reg_;
  std::vector<std::unique_ptr<agent_process>> owned_;
  std::vector<agent_process*> agents_;
};

/// A shell plan whose `hold` shortcut prints its pid and then waits.
const char* shell_plans =
    R"({shell: {programs: [echo], shortcuts: [{short: hold, cmd: "echo pid=$$; exec sleep 600", shell: true}]}, sleep: {}, echo: {}})";

/// The plans `sleep` and `shell`, whose `gated` shortcut waits for a word on
/// the FIFO `gate` and prints `gate <word>`: a run that ends when the test
/// says, not after a time a loaded host might pass first.
std::string gated_plans(const std::string& gate) {
  EXPECT_EQ(::mkfifo(gate.c_str(), 0600), 0) << std::strerror(errno);
  return R"({sleep: {}, shell: {shortcuts: [{short: gated, cmd: "read word < ')" + gate +
         R"('; echo \"gate $word\"", shell: true}]}})";
}

/// Opens the gate of `gated_plans` once its run reads it (ENXIO until
/// then): the run prints `gate opened`.
bool open_gate(const std::string& gate) {
  int writer = -1;
  if (!eventually([&] {
        writer = ::open(gate.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC);
        return writer >= 0;
      }))
    return false;
  bool sent = ::write(writer, "opened\n", 7) == 7;
  ::close(writer);
  return sent;
}

pid_t pid_from_log(const mesh_api& api, const std::string& run) {
  pid_t pid = 0;
  eventually([&] {
    auto text = api.logs(run);
    auto at = text.find("pid=");
    if (at == std::string::npos || text.find('\n', at) == std::string::npos) return false;
    pid = static_cast<pid_t>(std::stol(text.substr(at + 4)));
    return true;
  });
  return pid;
}

} // namespace

// This test ensures runs are routed by selector to the env=prod or env=dev agent and
// succeed.
TEST_F(agent_integration, routes_by_selector) {
  start_agent({"prod-1", "{env: prod}"});
  start_agent({"dev-1", "{env: dev}"});
  auto prod_id = api_->wait_agent_online("prod-1");
  auto dev_id = api_->wait_agent_online("dev-1");
  for (int i = 0; i < 3; ++i) {
    auto p = api_->submit(
        {{"plan", "echo"}, {"selector", "env=prod"}, {"payload", "to prod"}});
    auto d =
        api_->submit({{"plan", "echo"}, {"selector", "env=dev"}, {"payload", "to dev"}});
    auto pr = api_->wait_terminal(p);
    auto dr = api_->wait_terminal(d);
    EXPECT_EQ(pr["status"], "success");
    EXPECT_EQ(pr["assigned_agent"], prod_id);
    EXPECT_EQ(pr["result"], "to prod");
    EXPECT_EQ(dr["status"], "success");
    EXPECT_EQ(dr["assigned_agent"], dev_id);
    EXPECT_EQ(api_->logs(d), "to dev");
  }
}

// This test ensures a failing plan ends error with its exit code.
TEST_F(agent_integration, error_with_exit_code) {
  start_agent({"dev-1", "{env: dev}"});
  auto id =
      api_->submit({{"plan", "echo"}, {"params", {{"exit_code", 3}}}, {"payload", "x"}});
  auto r = api_->wait_terminal(id);
  EXPECT_EQ(r["status"], "error");
  EXPECT_EQ(r["exit_code"], 3);
}

// This test ensures a cancel stops a running plan and its process is gone afterwards.
TEST_F(agent_integration, cancel_kills_the_process) {
  agent_options o{"dev-1", "{env: dev}"};
  o.plans_yaml = shell_plans;
  start_agent(o);
  auto id = api_->submit({{"plan", "shell"}, {"payload", "hold"}});
  auto pid = pid_from_log(*api_, id);
  ASSERT_GT(pid, 0);
  EXPECT_EQ(::kill(pid, 0), 0) << "the plan's process should be running";
  auto [status, body] = api_->call("POST", "/v1/runs/" + id + "/cancel");
  EXPECT_EQ(status, 200) << body.dump();
  auto r = api_->wait_terminal(id);
  EXPECT_EQ(r["status"], "canceled") << r.dump();
  EXPECT_TRUE(process_gone(pid));
}

agent_integration::held_run agent_integration::start_held_run() {
  agent_options o{"dev-1", "{env: dev}"};
  o.plans_yaml = shell_plans;
  auto& agent = start_agent(o);
  auto id = api_->submit({{"plan", "shell"}, {"payload", "hold"}});
  return {agent, id, pid_from_log(*api_, id)};
}

// This test ensures an agent keeps to the smaller limits a mesh states when
// it registers: 150,000 bytes of control characters (sent escaped, six bytes
// each) reach the log whole through a 64 KiB body limit, and the result is
// the last 2 KiB the mesh accepts. The agent used to send 128 KiB of output
// per request and a 60 KiB result whatever the mesh said: the log requests
// were refused and their chunks dropped, and the result was refused. A run
// whose output passes the mesh's runs.max_log_bytes keeps the start of it
// and a note from the agent, instead of refused requests.
TEST_F(agent_integration, an_agent_keeps_to_the_limits_of_its_mesh) {
  std::filesystem::create_directories(dir_.path() + "/small");
  mesh_ = std::make_unique<meshd_process>(dir_.path() + "/small", R"(
http: {max_body_bytes: 65536}
runs: {max_result_bytes: 2048, max_payload_bytes: 1024, max_log_bytes: 204800}
)");
  api_ = std::make_unique<mesh_api>(mesh_->url(), mesh_->admin_token());
  reg_ = api_->create_registration_token("itest");
  agent_options o{"dev-1", "{env: dev}"};
  o.plans_yaml =
      R"({shell: {result_tail_bytes: 50000, shortcuts: [{short: spew, cmd: 'head -c 150000 /dev/zero | tr "\0" "\1"; echo end', shell: true}, {short: flood, cmd: 'head -c 300000 /dev/zero | tr "\0" x', shell: true}]}})";
  start_agent(o);
  auto id = api_->submit({{"plan", "shell"}, {"payload", "spew"}});
  auto r = api_->wait_terminal(id);
  EXPECT_EQ(r["status"], "success") << r.dump();
  std::string expected(150000, '\x01');
  expected += "end\n";
  auto log = api_->logs(id);
  EXPECT_EQ(log.size(), expected.size());
  EXPECT_TRUE(log == expected) << "the log differs from the plan's output";
  EXPECT_EQ(r["result"], expected.substr(expected.size() - 2048));

  auto flood = api_->submit({{"plan", "shell"}, {"payload", "flood"}});
  auto f = api_->wait_terminal(flood);
  EXPECT_EQ(f["status"], "success") << f.dump();
  auto cut = api_->logs(flood);
  EXPECT_LE(cut.size(), 204800u);
  EXPECT_EQ(cut.find_first_not_of('x'), 204800u - 4096u) << cut.substr(200000);
  EXPECT_NE(cut.find("log reached 200704 bytes, the limit set by the mesh's "
                     "runs.max_log_bytes (204800, less 4096 bytes kept for notes); "
                     "further output is dropped"),
            std::string::npos)
      << cut.substr(200000);
  EXPECT_NE(
      cut.find("bytes of output past the limit set by the mesh's runs.max_log_bytes "
               "(204800, less 4096 bytes kept for notes) were dropped"),
      std::string::npos)
      << cut.substr(200000);
  EXPECT_EQ(agents_.front()->log().find("refused"), std::string::npos)
      << agents_.front()->log();
}

// This test ensures a plan's process does not outlive an agent killed with
// SIGKILL (it used to run on, reparented, with nobody to watch or stop it).
TEST_F(agent_integration, a_killed_agent_takes_its_plan_processes_along) {
  auto [agent, id, pid] = start_held_run();
  ASSERT_GT(pid, 0);
  ASSERT_EQ(::kill(pid, 0), 0) << "the plan's process should be running";
  agent.proc().signal(SIGKILL);
  ASSERT_TRUE(agent.proc().wait_exit().has_value());
  EXPECT_TRUE(process_gone(pid)) << "the plan outlived its agent";
}

// This test ensures an agent whose session an admin ended, and whose
// registration token was revoked, stops its runs and exits 1 saying why (it
// used to retry its polls with a dead token forever, its run going on).
TEST_F(agent_integration, a_removed_agent_that_cannot_register_again_exits_1) {
  auto [agent, id, pid] = start_held_run();
  ASSERT_GT(pid, 0);
  auto [ls, tokens] = api_->call("GET", "/v1/tokens");
  ASSERT_EQ(ls, 200) << tokens.dump();
  std::string reg_id;
  for (auto& t : tokens["tokens"])
    if (t.value("name", "") == "itest") reg_id = t.value("id", "");
  ASSERT_FALSE(reg_id.empty()) << tokens.dump();
  ASSERT_EQ(api_->call("DELETE", "/v1/tokens/" + reg_id).first, 200);
  ASSERT_EQ(api_->call("DELETE", "/v1/agents/dev-1").first, 200);
  auto code = agent.proc().wait_exit();
  ASSERT_TRUE(code.has_value()) << agent.log();
  EXPECT_EQ(*code, 1) << agent.log();
  EXPECT_TRUE(process_gone(pid)) << "the run went on";
  auto log = agent.log();
  EXPECT_NE(log.find("refused to register it again"), std::string::npos) << log;
}

/// How many zombie children process `parent` has.
int zombie_children_of(pid_t parent) {
  int n = 0;
  for (auto& e : std::filesystem::directory_iterator{"/proc"}) {
    auto name = e.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream stat{e.path() / "stat"};
    std::string line;
    std::getline(stat, line);
    auto close = line.rfind(')');
    if (close == std::string::npos || close + 4 >= line.size()) continue;
    std::istringstream rest{line.substr(close + 2)};
    char state = 0;
    pid_t ppid = 0;
    rest >> state >> ppid;
    if (state == 'Z' && ppid == parent) ++n;
  }
  return n;
}

// This test ensures processes a plan put in the background, killed with its
// run, do not stay zombies of the agent (30 runs left 30 zombies, and with a
// process limit the agent's runs then failed with "Cannot fork").
TEST_F(agent_integration, background_processes_of_ended_runs_leave_no_zombies) {
  agent_options o{"dev-1", "{env: dev}"};
  o.capacity = 1;
  o.plans_yaml =
      R"({shell: {programs: [echo], shortcuts: [{short: bg, cmd: "sleep 30 & echo started", shell: true}]}, echo: {}})";
  auto& agent = start_agent(o);
  for (int i = 0; i < 5; ++i) {
    auto id = api_->submit({{"plan", "shell"}, {"payload", "bg"}});
    ASSERT_EQ(api_->wait_terminal(id)["status"], "success");
  }
  // The next run's end reaps what the earlier ones left (and so does a poll).
  auto id = api_->submit({{"plan", "echo"}, {"payload", "x"}});
  ASSERT_EQ(api_->wait_terminal(id)["status"], "success");
  EXPECT_TRUE(eventually([&] { return zombie_children_of(agent.proc().pid()) == 0; }))
      << zombie_children_of(agent.proc().pid()) << " zombies";
}

// This test ensures a run past its timeout ends error/timeout and its process is killed.
TEST_F(agent_integration, timeout_ends_the_run) {
  agent_options o{"dev-1", "{env: dev}"};
  o.plans_yaml = shell_plans;
  start_agent(o);
  auto id = api_->submit({{"plan", "shell"}, {"payload", "hold"}, {"timeout_s", 1}});
  auto pid = pid_from_log(*api_, id);
  auto r = api_->wait_terminal(id);
  EXPECT_EQ(r["status"], "error") << r.dump();
  EXPECT_EQ(r["reason"], "timeout");
  EXPECT_TRUE(pid <= 0 || process_gone(pid));
}

// This test ensures no more runs execute in parallel than the agent's capacity.
TEST_F(agent_integration, parallel_up_to_capacity) {
  agent_options o{"dev-1", "{env: dev}"};
  o.capacity = 2;
  start_agent(o);
  std::vector<std::string> ids;
  for (int i = 0; i < 3; ++i)
    ids.push_back(api_->submit({{"plan", "sleep"}, {"params", {{"seconds", 600}}}}));
  auto running = [&] {
    int n = 0;
    for (auto& id : ids)
      n += api_->run(id)["status"] == "running";
    return n;
  };
  ASSERT_TRUE(eventually([&] { return running() == 2; }));
  // Watch for a while that the third never starts while two are busy.
  EXPECT_FALSE(eventually([&] { return running() > 2; }, 1500ms));
  for (auto& id : ids)
    api_->call("POST", "/v1/runs/" + id + "/cancel");
  for (auto& id : ids)
    EXPECT_EQ(api_->wait_terminal(id)["status"], "canceled");
}

// This test ensures a shell injection attempt is refused and never runs a second command.
TEST_F(agent_integration, shell_injection_refused) {
  agent_options o{"dev-1", "{env: dev}"};
  o.plans_yaml = shell_plans;
  start_agent(o);
  auto marker = dir_.path() + "/pwned";
  auto id = api_->submit({{"plan", "shell"}, {"payload", "echo hi; touch " + marker}});
  auto r = api_->wait_terminal(id);
  EXPECT_EQ(r["status"], "error");
  EXPECT_NE(r["error"].get<std::string>().find("shell metacharacter ';'"),
            std::string::npos)
      << r.dump();
  EXPECT_FALSE(std::filesystem::exists(marker));
  auto ok =
      api_->wait_terminal(api_->submit({{"plan", "shell"}, {"payload", "echo 'a;b'"}}));
  EXPECT_EQ(ok["result"], "a;b\n");
}

// This test ensures a plan that replaces its artifacts directory itself with
// a symlink (here to a directory holding a "token") uploads nothing: the
// listing used to follow it and upload the target's files.
TEST_F(agent_integration, a_symlinked_artifacts_directory_is_not_followed) {
  agent_options o{"dev-1", "{env: dev}"};
  auto secret_dir = dir_.path() + "/not-yours";
  std::filesystem::create_directories(secret_dir);
  std::ofstream{secret_dir + "/reg.token"} << "secret";
  o.plans_yaml =
      R"({shell: {shortcuts: [{short: swap, shell: true, cmd: 'rmdir "$POLYMESH_ARTIFACTS_DIR" && ln -s )" +
      secret_dir + R"( "$POLYMESH_ARTIFACTS_DIR" && echo swapped'}]}})";
  auto& agent = start_agent(o);
  auto id = api_->submit({{"plan", "shell"}, {"payload", "swap"}});
  auto r = api_->wait_terminal(id);
  EXPECT_EQ(r["status"], "success") << r.dump();
  auto [status, list] = api_->call("GET", "/v1/runs/" + id + "/artifacts");
  ASSERT_EQ(status, 200);
  EXPECT_TRUE(list["artifacts"].empty()) << list.dump();
  EXPECT_TRUE(eventually([&] {
    return agent.log().find("artifacts directory was replaced by a symlink") !=
           std::string::npos;
  })) << agent.log();
  // Cleaning the run's directories removed the link, not what it points to.
  auto next = api_->submit({{"plan", "shell"}, {"payload", "swap"}});
  api_->wait_terminal(next);
  EXPECT_TRUE(std::filesystem::exists(secret_dir + "/reg.token"));
}

// This test ensures files a plan leaves in its artifacts directory are
// uploaded before the result and download byte-identical (NUL and 0xff
// bytes, a subdirectory), while a symlink planted there is not uploaded.
TEST_F(agent_integration, artifacts_upload_and_download_byte_identical) {
  agent_options o{"dev-1", "{env: dev}"};
  o.plans_yaml =
      R"({shell: {shortcuts: [{short: make-artifacts, shell: true, cmd: 'cd "$POLYMESH_ARTIFACTS_DIR" && printf "a\000b\377end" > bin.dat && mkdir reports && echo pass > reports/junit.txt && ln -s /etc/passwd secret && echo made'}]}})";
  start_agent(o);
  auto id = api_->submit({{"plan", "shell"}, {"payload", "make-artifacts"}});
  auto r = api_->wait_terminal(id);
  ASSERT_EQ(r["status"], "success") << r.dump();

  auto [status, list] = api_->call("GET", "/v1/runs/" + id + "/artifacts");
  ASSERT_EQ(status, 200) << list.dump();
  ASSERT_EQ(list["artifacts"].size(), 2u) << list.dump();
  EXPECT_EQ(list["artifacts"][0]["name"], "bin.dat");
  EXPECT_EQ(list["artifacts"][1]["name"], "reports/junit.txt");

  const std::string bin{"a\0b\xff"
                        "end",
                        7};
  auto [s1, bytes] = api_->get_raw("/v1/runs/" + id + "/artifacts/bin.dat");
  EXPECT_EQ(s1, 200);
  EXPECT_EQ(bytes, bin);
  EXPECT_EQ(list["artifacts"][0]["size"], bin.size());
  auto [s2, report] = api_->get_raw("/v1/runs/" + id + "/artifacts/reports/junit.txt");
  EXPECT_EQ(s2, 200);
  EXPECT_EQ(report, "pass\n");
  auto [s3, secret] = api_->get_raw("/v1/runs/" + id + "/artifacts/secret");
  EXPECT_EQ(s3, 404) << secret;
  EXPECT_NE(agents_.front()->log().find("'secret' skipped"), std::string::npos);
}

// This test ensures an artifact meshd refuses for good (413 over
// runs.max_artifact_bytes, 409 past runs.max_artifacts) is said in the run's
// own log, on stderr, once, in meshd's words naming the limit, and that the
// other artifacts and the result still go: the run's submitter saw only a
// missing artifact, the reason was in the agent's log alone.
TEST_F(agent_integration, an_artifact_the_mesh_refuses_is_said_in_the_runs_log) {
  std::filesystem::create_directories(dir_.path() + "/small");
  mesh_ = std::make_unique<meshd_process>(
      dir_.path() + "/small", "runs: {max_artifact_bytes: 1024, max_artifacts: 2}\n");
  api_ = std::make_unique<mesh_api>(mesh_->url(), mesh_->admin_token());
  reg_ = api_->create_registration_token("itest");
  agent_options o{"dev-1", "{env: dev}"};
  o.plans_yaml =
      R"({shell: {shortcuts: [{short: leave, shell: true, cmd: 'cd "$POLYMESH_ARTIFACTS_DIR" && echo a > a.txt && head -c 2000 /dev/zero > big.bin && echo c > c.txt && echo d > d.txt && echo left'}]}})";
  start_agent(o);
  auto id = api_->submit({{"plan", "shell"}, {"payload", "leave"}});
  auto r = api_->wait_terminal(id);
  EXPECT_EQ(r["status"], "success") << r.dump();

  auto [status, list] = api_->call("GET", "/v1/runs/" + id + "/artifacts");
  ASSERT_EQ(status, 200) << list.dump();
  ASSERT_EQ(list["artifacts"].size(), 2u) << list.dump();
  EXPECT_EQ(list["artifacts"][0]["name"], "a.txt");
  EXPECT_EQ(list["artifacts"][1]["name"], "c.txt");

  auto [got, page] = api_->call("GET", "/v1/runs/" + id + "/logs");
  ASSERT_EQ(got, 200) << page.dump();
  std::string out;
  std::string err;
  for (auto& c : page["chunks"])
    (c["stream"] == "stderr" ? err : out) += c["data"].get<std::string>();
  EXPECT_EQ(out, "left\n");
  EXPECT_EQ(err, "[polymesh: artifact 'big.bin' refused by the mesh: HTTP 413: request "
                 "body exceeds the limit of 1024 bytes (runs.max_artifact_bytes)]\n"
                 "[polymesh: artifact 'd.txt' refused by the mesh: HTTP 409: run '" +
                     id +
                     "' already holds 2 artifacts, the most allowed "
                     "(runs.max_artifacts = 2)]\n");
}

// This test ensures an artifact is sent from its file as it is read, not
// held in memory: uploading 60 MiB raises mesh-agent's peak RSS by far less
// than that (it grew by about four times the artifact's size: 810 MiB for
// 200 MiB). The growth is measured, not the peak itself, so that a build
// whose runtime is larger (AddressSanitizer's is about 80 MiB) checks the
// same thing. The mesh gets every byte (its size and sha256 are checked).
TEST_F(agent_integration, a_large_artifact_is_sent_without_being_held_in_memory) {
  agent_options o{"dev-1", "{env: dev}"};
  o.plans_yaml =
      R"({shell: {shortcuts: [{short: big, shell: true, cmd: 'head -c 60M /dev/urandom | tee "$POLYMESH_ARTIFACTS_DIR/big.bin" | sha256sum'}]}})";
  auto& agent = start_agent(o);
  auto peak_kib = [&] {
    std::ifstream in{"/proc/" + std::to_string(agent.proc().pid()) + "/status"};
    long kib = -1;
    for (std::string line; std::getline(in, line);)
      if (line.rfind("VmHWM:", 0) == 0) kib = std::stol(line.substr(6));
    return kib;
  };
  auto before_kib = peak_kib();
  ASSERT_GT(before_kib, 0);
  auto id = api_->submit({{"plan", "shell"}, {"payload", "big"}});
  auto r = api_->wait_terminal(id, 120s);
  ASSERT_EQ(r["status"], "success") << r.dump();
  auto [status, list] = api_->call("GET", "/v1/runs/" + id + "/artifacts");
  ASSERT_EQ(status, 200) << list.dump();
  ASSERT_EQ(list["artifacts"].size(), 1u) << list.dump();
  EXPECT_EQ(list["artifacts"][0]["size"], 60 << 20);
  EXPECT_EQ(r["result"].get<std::string>().substr(0, 64), list["artifacts"][0]["sha256"]);
  auto after_kib = peak_kib();
  EXPECT_LT(after_kib - before_kib, 24 * 1024)
      << "growth of the agent's peak RSS, KiB (from " << before_kib << ")";
}

// This test ensures SIGTERM drains: a short run finishes, a long one is canceled as
// agent_shutdown, then deregister and exit 0. The short run ends when the
// test opens its gate, once the agent drains (a 1 s sleep inside a 3 s
// drain was wall-clock luck on a loaded host).
TEST_F(agent_integration, sigterm_drains) {
  auto gate = dir_.path() + "/gate";
  agent_options o{"dev-1", "{env: dev}"};
  o.drain_deadline = "3s";
  o.plans_yaml = gated_plans(gate);
  auto& agent = start_agent(o);
  auto agent_id = api_->wait_agent_online("dev-1");
  auto short_run = api_->submit({{"plan", "shell"}, {"payload", "gated"}});
  auto long_run = api_->submit({{"plan", "sleep"}, {"params", {{"seconds", 600}}}});
  ASSERT_TRUE(eventually([&] {
    return api_->run(short_run)["status"] == "running" &&
           api_->run(long_run)["status"] == "running";
  }));
  agent.proc().signal(SIGTERM);
  ASSERT_TRUE(eventually([&] {
    auto [status, body] = api_->call("GET", "/v1/agents/" + agent_id);
    return status == 200 && body["status"] == "draining";
  })) << agent.log();
  ASSERT_TRUE(open_gate(gate));
  auto code = agent.proc().wait_exit();
  ASSERT_TRUE(code.has_value());
  EXPECT_EQ(*code, 0);
  EXPECT_EQ(api_->run(short_run)["status"], "success");
  auto r = api_->run(long_run);
  EXPECT_EQ(r["status"], "canceled");
  EXPECT_EQ(r["reason"], "agent_shutdown");
  auto a = api_->call("GET", "/v1/agents/" + agent_id).second;
  EXPECT_EQ(a["status"], "deregistered") << a.dump();
}

// This test ensures SIGHUP (a closed terminal or ssh session) drains like
// SIGTERM: the run's process does not outlive the agent and the agent
// deregisters, where it used to die at once and leave the process behind.
TEST_F(agent_integration, sighup_drains_and_leaves_no_process) {
  agent_options o{"dev-1", "{env: dev}"};
  o.plans_yaml = shell_plans;
  o.drain_deadline = "1s";
  auto& agent = start_agent(o);
  auto agent_id = api_->wait_agent_online("dev-1");
  auto id = api_->submit({{"plan", "shell"}, {"payload", "hold"}});
  auto pid = pid_from_log(*api_, id);
  ASSERT_GT(pid, 0);
  agent.proc().signal(SIGHUP);
  auto code = agent.proc().wait_exit();
  ASSERT_TRUE(code.has_value());
  EXPECT_EQ(*code, 0);
  EXPECT_TRUE(process_gone(pid));
  EXPECT_EQ(api_->run(id)["reason"], "agent_shutdown");
  EXPECT_EQ(api_->call("GET", "/v1/agents/" + agent_id).second["status"], "deregistered");
  EXPECT_NE(agent.log().find("received SIGHUP: draining"), std::string::npos)
      << agent.log();
}

// This test ensures an agent told to stop tells the mesh first (while its
// run still drains, the mesh lists it `draining` and gives a new run to no
// one rather than to it), and a second signal cancels at once instead of
// waiting for the drain deadline.
TEST_F(agent_integration,
       a_drain_is_told_to_the_mesh_and_a_second_signal_cancels_at_once) {
  agent_options o{"dev-1", "{env: dev}"};
  o.drain_deadline = "10m";
  auto& agent = start_agent(o);
  auto id = api_->submit({{"plan", "sleep"}, {"params", {{"seconds", 600}}}});
  ASSERT_TRUE(eventually([&] { return api_->run(id)["status"] == "running"; }));
  agent.proc().signal(SIGTERM);
  ASSERT_TRUE(eventually([&] {
    auto [status, body] = api_->call("GET", "/v1/agents/dev-1");
    return status == 200 && body["status"] == "draining";
  })) << agent.log();
  EXPECT_EQ(api_->run(id)["status"], "running") << "the drain waits for its run";
  auto next = api_->submit({{"plan", "sleep"}, {"params", {{"seconds", 1}}}});
  auto [status, why] = api_->call("GET", "/v1/runs/" + next + "/explain");
  ASSERT_EQ(status, 200) << why;
  EXPECT_EQ(why["agents"][0]["reason"], "draining") << why;
  agent.proc().signal(SIGINT);
  auto code = agent.proc().wait_exit();
  ASSERT_TRUE(code.has_value());
  EXPECT_EQ(*code, 0);
  EXPECT_EQ(api_->run(id)["reason"], "agent_shutdown");
}

// This test ensures a result produced while meshd is down arrives after its restart,
// exactly once. The run ends when the test opens its gate, once meshd has
// stopped (a 1 s sleep could end before a loaded host had stopped meshd).
TEST_F(agent_integration, meshd_restart_keeps_result) {
  auto gate = dir_.path() + "/gate";
  agent_options o{"dev-1", "{env: dev}"};
  o.plans_yaml = gated_plans(gate);
  auto& agent = start_agent(o);
  auto id = api_->submit({{"plan", "shell"}, {"payload", "gated"}});
  ASSERT_TRUE(eventually([&] { return api_->run(id)["status"] == "running"; }));
  mesh_->stop();
  // The run ends while the mesh is away; the agent keeps the result.
  ASSERT_TRUE(open_gate(gate));
  ASSERT_TRUE(eventually([&] {
    return agent.log().find("run " + id + ": cannot send") != std::string::npos;
  })) << agent.log();
  mesh_->restart();
  mesh_api api{mesh_->url(), mesh_->admin_token()};
  auto r = api.wait_terminal(id, 60s);
  EXPECT_EQ(r["status"], "success") << r.dump();
  EXPECT_EQ(r["result"], "gate opened\n");
  // The log line is stored once, not once per retry.
  EXPECT_EQ(api.logs(id), "gate opened\n");
}

namespace {

/// Copies meshd's database files (those there are) from `from` to `to`,
/// as operations.md's restore does while meshd is stopped.
void copy_database(const std::string& from, const std::string& to) {
  namespace fs = std::filesystem;
  fs::create_directories(to);
  for (const char* name : {"mesh.db", "mesh.db-wal", "mesh.db-shm"}) {
    fs::remove(fs::path{to} / name);
    if (fs::exists(fs::path{from} / name))
      fs::copy_file(fs::path{from} / name, fs::path{to} / name);
  }
}

} // namespace

// This test ensures a run that meshd, restored from a backup taken before
// the run was assigned, offers again to the agent that ran it ends with the
// outcome and result it had, and is run once: the agent let the offer go
// unanswered, and the restored meshd offered the run again every delivery
// lease for good.
TEST_F(agent_integration, a_run_restored_from_an_older_backup_gets_its_outcome_again) {
  auto id = api_->submit({{"plan", "echo"}, {"payload", "done before the restore"}});
  auto data = dir_.path() + "/data";
  auto backup = dir_.path() + "/backup";
  mesh_->stop();
  copy_database(data, backup);
  mesh_->restart();
  auto& agent = start_agent({"dev-1"});
  auto done = api_->wait_terminal(id);
  ASSERT_EQ(done["status"], "success") << done.dump();
  mesh_->stop();
  copy_database(backup, data);
  mesh_->restart();
  auto again = api_->wait_terminal(id, 60s);
  EXPECT_EQ(again["status"], "success") << again.dump();
  EXPECT_EQ(again["result"], "done before the restore");
  auto count = [&](const std::string& what) {
    auto log = agent.log();
    size_t n = 0;
    for (auto at = log.find(what); at != std::string::npos; at = log.find(what, at + 1))
      ++n;
    return n;
  };
  EXPECT_EQ(count("run " + id + " (echo) started"), 1u) << agent.log();
  EXPECT_EQ(count("run " + id + " offered again, which this agent already ran"), 1u)
      << agent.log();
}

// This test ensures an agent that stays connected while meshd restarts with
// lower limits keeps to the new ones: it learns them from its next poll
// answer, so the next run's log stops below the new runs.max_log_bytes and
// its result fits the new runs.max_result_bytes. It used to keep the limits
// of its registration: every log request of the run was refused and
// dropped, and the refused result left a successful run to expire.
TEST_F(agent_integration, an_agent_keeps_to_the_limits_of_a_restarted_mesh) {
  agent_options o{"dev-1", "{env: dev}"};
  o.plans_yaml =
      R"({shell: {shortcuts: [{short: flood, cmd: 'head -c 300000 /dev/zero | tr "\0" x', shell: true}]}})";
  start_agent(o);
  mesh_->stop();
  mesh_->restart("runs: {max_log_bytes: 65536, max_result_bytes: 100}\n");
  mesh_api api{mesh_->url(), mesh_->admin_token()};
  auto id = api.submit({{"plan", "shell"}, {"payload", "flood"}});
  auto r = api.wait_terminal(id, 60s);
  EXPECT_EQ(r["status"], "success") << r.dump();
  EXPECT_EQ(r["result"].get<std::string>().size(), 100u) << r.dump();
  auto log = api.logs(id);
  EXPECT_LE(log.size(), 65536u);
  EXPECT_EQ(log.find_first_not_of('x'), 65536u - 4096u) << log.substr(60000);
  EXPECT_NE(log.find("the mesh's runs.max_log_bytes"), std::string::npos)
      << log.substr(60000);
  EXPECT_EQ(agents_.front()->log().find("refused"), std::string::npos)
      << agents_.front()->log();
}

// This test ensures a plugin plan runs end to end.
TEST_F(agent_integration, plugin_plan_runs) {
  agent_options o{"dev-1", "{env: dev}"};
  o.plugins_yaml = std::string{"[\""} + POLYMESH_HELLO_PLUGIN + "\"]";
  o.plans_yaml = "{hello: {greeting: Howdy}}";
  start_agent(o);
  auto r = api_->wait_terminal(api_->submit({{"plan", "hello"}, {"payload", "mesh"}}));
  EXPECT_EQ(r["status"], "success");
  EXPECT_EQ(r["result"], "Howdy, mesh!");
}

// This test ensures a plugin plan that segfaults ends its run as an error
// saying so, with its output, while mesh-agent stays online and serves the
// next run (plugins are isolated in a child process by default).
TEST_F(agent_integration, a_crashing_plugin_plan_does_not_take_the_agent_down) {
  agent_options o{"dev-1", "{env: dev}"};
  o.plugins_yaml = std::string{"[\""} + POLYMESH_CRASHING_PLUGIN + "\"]";
  o.plans_yaml = "{misbehave: {}}";
  start_agent(o);
  auto crashed = api_->wait_terminal(
      api_->submit({{"plan", "misbehave"}, {"params", {{"do", "segv"}}}}));
  EXPECT_EQ(crashed["status"], "error") << crashed.dump();
  EXPECT_NE(crashed["error"].get<std::string>().find(
                "plugin plan 'misbehave' crashed: killed by signal 11"),
            std::string::npos)
      << crashed.dump();
  EXPECT_NE(api_->logs(crashed["id"]).find("before the end"), std::string::npos);
  auto next = api_->wait_terminal(api_->submit({{"plan", "misbehave"}}));
  EXPECT_EQ(next["status"], "success") << next.dump();
  EXPECT_FALSE(agents_.front()->proc().wait_exit(0ms).has_value()) << "mesh-agent ended";
  EXPECT_NE(agents_.front()->log().find("plugin plan 'misbehave' crashed"),
            std::string::npos)
      << agents_.front()->log();
}

// This test ensures mesh-agent refuses a plugin of another ABI version, naming the file,
// and exits 2.
TEST_F(agent_integration, plugin_abi_mismatch_refused) {
  agent_options o{"bad-1", "{env: dev}"};
  o.plugins_yaml = std::string{"[\""} + POLYMESH_ABI_MISMATCH_PLUGIN + "\"]";
  agent_process agent{dir_.path(), mesh_->url(), reg_, o};
  auto code = agent.proc().wait_exit();
  ASSERT_TRUE(code.has_value());
  EXPECT_EQ(*code, 2);
  auto log = read_file(dir_.path() + "/bad-1/agent.err");
  EXPECT_NE(log.find(POLYMESH_ABI_MISMATCH_PLUGIN), std::string::npos) << log;
  EXPECT_NE(log.find("plugin ABI version 999"), std::string::npos) << log;
}

// This test ensures the embedded-mode example runs an agent thread that serves a run,
// then exits 0.
TEST_F(agent_integration, embedded_example) {
  auto token_file = dir_.path() + "/embedded.token";
  { std::ofstream{token_file} << reg_; }
  child_process example{{POLYMESH_EMBEDDED_EXAMPLE, "--mesh", mesh_->url(),
                         "--token-file", token_file, "--name", "embedded-1", "--label",
                         "env=embedded", "--runs", "1"},
                        dir_.path() + "/embedded.out",
                        dir_.path() + "/embedded.err"};
  api_->wait_agent_online("embedded-1");
  auto r = api_->wait_terminal(
      api_->submit({{"plan", "greet"}, {"selector", "env=embedded"}, {"payload", "hi"}}));
  EXPECT_EQ(r["status"], "success");
  EXPECT_EQ(r["result"], "embedded says: hi");
  auto code = example.wait_exit();
  ASSERT_TRUE(code.has_value());
  EXPECT_EQ(*code, 0);
  EXPECT_NE(read_file(dir_.path() + "/embedded.out").find("agent stopped after 1 runs"),
            std::string::npos);
}

// This test ensures mesh-agent exits 2 on a config error and names the dotted key.
TEST_F(agent_integration, config_error_names_the_key) {
  agent_options o{"cfg-1", "{env: dev}"};
  o.plans_yaml = "{shell: {programs: [echo], shortcuts: [{short: x, cmd: \"a | b\"}]}}";
  agent_process agent{dir_.path(), mesh_->url(), reg_, o};
  auto code = agent.proc().wait_exit();
  ASSERT_TRUE(code.has_value());
  EXPECT_EQ(*code, 2);
  auto log = read_file(dir_.path() + "/cfg-1/agent.err");
  EXPECT_NE(log.find("plans.shell.shortcuts[0].cmd: shell metacharacter '|'"),
            std::string::npos)
      << log;
  // With the file and the line of the setting, as meshd names them.
  auto config = read_file(dir_.path() + "/cfg-1/agent.yaml");
  auto line =
      1 + std::count(config.begin(), config.begin() + config.find("plans:"), '\n');
  EXPECT_NE(log.find("/cfg-1/agent.yaml:" + std::to_string(line) +
                     ": plans.shell.shortcuts[0].cmd: "),
            std::string::npos)
      << log;
}

// This test ensures `mesh-agent --check` passes a shell plan whose program
// is not installed, but prints the warning naming the key under its verdict
// even when `log.level` hides warnings, and that the agent logs the same
// warning when it starts and serves the plan's other programs.
TEST_F(agent_integration, check_warns_of_a_program_not_installed) {
  agent_options o{"chk-1", "{env: chk}"};
  o.plans_yaml = "{shell: {programs: [echo, no-such-program-xyz]}}";
  o.extra_yaml = "log: {level: error}\n";
  o.extra_args = {"--check"};
  o.token_mode = std::filesystem::perms::owner_read |
                 std::filesystem::perms::owner_write |
                 std::filesystem::perms::others_read;
  agent_process check{dir_.path(), mesh_->url(), reg_, o};
  auto code = check.proc().wait_exit();
  ASSERT_TRUE(code.has_value());
  EXPECT_EQ(*code, 0);
  const std::string warning =
      "plans.shell.programs[1]: 'no-such-program-xyz' is not an executable in the "
      "plan's path (/usr/local/bin:/usr/bin:/bin); runs that need it fail until it is "
      "there\n";
  const std::string token_warning = "mesh.registration_token_file: '" + dir_.path() +
                                    "/chk-1/reg.token' is readable by every user (mode "
                                    "0604); chmod 600 it\n";
  EXPECT_EQ(read_file(dir_.path() + "/chk-1/agent.out"),
            "config OK: agent 'chk-1', 1 plan, 2 warnings:\n  " + token_warning + "  " +
                warning);
  EXPECT_EQ(check.log().find(warning), std::string::npos) << check.log();
  o.token_mode = std::filesystem::perms::owner_read | std::filesystem::perms::owner_write;
  o.extra_args.clear();
  o.extra_yaml.clear();
  auto& agent = start_agent(o);
  auto r = api_->wait_terminal(
      api_->submit({{"plan", "shell"}, {"selector", "env=chk"}, {"payload", "echo hi"}}));
  EXPECT_EQ(r["status"], "success") << r.dump();
  EXPECT_NE(agent.log().find(" warn " + warning), std::string::npos) << agent.log();
}

// This test ensures `mesh-agent --check` prints its warnings escaped as the
// log writes them: a control character in a setting reached the terminal.
TEST_F(agent_integration, check_prints_warnings_escaped_as_the_log_does) {
  agent_options o{"esc-1", "{env: chk}"};
  o.plans_yaml =
      R"({shell: {shortcuts: [{short: x, dir: "/no-such-\e[31m-dir", cmd: "echo hi"}]}})";
  o.extra_args = {"--check"};
  agent_process check{dir_.path(), mesh_->url(), reg_, o};
  auto code = check.proc().wait_exit();
  ASSERT_TRUE(code.has_value());
  EXPECT_EQ(*code, 0);
  auto out = read_file(dir_.path() + "/esc-1/agent.out");
  EXPECT_NE(out.find("'/no-such-\\x1b[31m-dir' is not a directory"), std::string::npos)
      << out;
  EXPECT_EQ(out.find('\x1b'), std::string::npos) << out;
}

// This test ensures a registration token the mesh refuses stops mesh-agent with exit 1.
TEST_F(agent_integration, refused_registration_exits_1) {
  agent_options o{"nope-1", "{env: dev}"};
  agent_process agent{dir_.path(), mesh_->url(), "pm_tok_bogus.bogus", o};
  auto code = agent.proc().wait_exit();
  ASSERT_TRUE(code.has_value());
  EXPECT_EQ(*code, 1);
  EXPECT_NE(
      read_file(dir_.path() + "/nope-1/agent.err").find("registration refused: HTTP 401"),
      std::string::npos);
}

// This test ensures that when an admin removes a busy agent, the runs the
// mesh ended with its session stop on the agent's machine at once (they
// used to run on, holding their slots), are not reported again, and the
// agent comes back under a new session with its slots free.
TEST_F(agent_integration, removed_session_stops_its_runs_here) {
  agent_options o{"dev-1", "{env: dev}"};
  o.plans_yaml = shell_plans;
  o.capacity = 1;
  auto& agent = start_agent(o);
  auto id = api_->submit({{"plan", "shell"}, {"payload", "hold"}});
  auto pid = pid_from_log(*api_, id);
  ASSERT_GT(pid, 0);
  auto [status, body] = api_->call("DELETE", "/v1/agents/dev-1");
  ASSERT_EQ(status, 200) << body.dump();
  auto r = api_->wait_terminal(id);
  EXPECT_EQ(r["status"], "canceled") << r.dump();
  EXPECT_EQ(r["reason"], "agent_removed") << r.dump();
  EXPECT_TRUE(process_gone(pid)) << "the removed session's run still runs";
  // The one slot is free again: a new run on the new session succeeds.
  auto next = api_->submit({{"plan", "echo"}, {"payload", "after"}});
  EXPECT_EQ(api_->wait_terminal(next)["status"], "success");
  auto log = agent.log();
  EXPECT_NE(log.find("the mesh ended session 1 of"), std::string::npos) << log;
  EXPECT_NE(log.find("; stopping its 1 run here, which the mesh ended with it"),
            std::string::npos)
      << log;
  EXPECT_NE(log.find("stopped: the mesh ended it with the agent's session"),
            std::string::npos)
      << log;
  EXPECT_EQ(log.find("result refused"), std::string::npos) << log;
}

// This test ensures a second mesh-agent started on another host under a
// name in use leaves the running one alone: it says why it cannot register
// and waits, the first keeps its session and serves runs, and once the
// first has stopped (and deregistered) the second takes the name.
TEST_F(agent_integration, a_second_agent_under_a_used_name_waits_for_it) {
  agent_options o{"twin-1", "{env: dev}"};
  o.hostname = "host-a";
  auto& first = start_agent(o);
  auto first_id = api_->wait_agent_online("twin-1");
  auto second_opts = o;
  second_opts.hostname = "host-b";
  auto& second = launch_agent(dir_.path() + "/second", second_opts);
  ASSERT_TRUE(eventually([&] {
    return second.log().find("cannot register yet: an agent named 'twin-1' is connected "
                             "from another installation on host 'host-a'") !=
           std::string::npos;
  })) << second.log();
  auto r = api_->wait_terminal(api_->submit({{"plan", "echo"}, {"payload", "still"}}));
  EXPECT_EQ(r["status"], "success") << r.dump();
  auto agent = api_->call("GET", "/v1/agents/twin-1").second;
  EXPECT_EQ(agent["hostname"], "host-a") << agent.dump();
  EXPECT_EQ(agent["status"], "online") << agent.dump();
  EXPECT_EQ(first.log().find("another agent registered"), std::string::npos)
      << first.log();

  first.proc().signal(SIGTERM);
  auto code = first.proc().wait_exit();
  ASSERT_TRUE(code.has_value());
  EXPECT_EQ(*code, 0) << first.log();
  ASSERT_TRUE(eventually([&] {
    auto a = api_->call("GET", "/v1/agents/twin-1").second;
    return a["hostname"] == "host-b" && a["status"] == "online";
  })) << second.log();
  EXPECT_EQ(api_->wait_agent_online("twin-1"), first_id) << "the name keeps its id";
  r = api_->wait_terminal(api_->submit({{"plan", "echo"}, {"payload", "taken over"}}));
  EXPECT_EQ(r["status"], "success") << r.dump();
  second.proc().signal(SIGTERM);
  code = second.proc().wait_exit();
  ASSERT_TRUE(code.has_value());
  EXPECT_EQ(*code, 0) << second.log();
}

// This test ensures a second mesh-agent on the same work directory under the
// same name is refused before it registers (exit 1, naming the first one's
// pid) while the first keeps its session; and that an agent killed without
// a word takes its name back at once when it starts again, here under
// another host name: its installation, kept in the work directory, is the
// same.
TEST_F(agent_integration,
       one_work_dir_runs_one_agent_of_a_name_and_a_restart_takes_it_back) {
  agent_options o{"solo-1", "{env: dev}"};
  o.hostname = "host-a";
  auto& first = start_agent(o);
  auto second_opts = o;
  second_opts.hostname = "host-b";
  second_opts.work_dir = first.work_dir();
  agent_process second{dir_.path() + "/second", mesh_->url(), reg_, second_opts};
  auto code = second.proc().wait_exit();
  ASSERT_TRUE(code.has_value()) << second.log();
  EXPECT_EQ(*code, 1);
  EXPECT_NE(second.log().find("work_dir: agent 'solo-1' already runs from " +
                              first.work_dir() + " (pid " +
                              std::to_string(first.proc().pid()) + ")"),
            std::string::npos)
      << second.log();
  auto agent = api_->call("GET", "/v1/agents/solo-1").second;
  EXPECT_EQ(agent["hostname"], "host-a") << agent.dump();

  first.proc().signal(SIGKILL);
  ASSERT_TRUE(first.proc().wait_exit().has_value());
  auto& again = launch_agent(dir_.path() + "/again", second_opts);
  ASSERT_TRUE(eventually([&] {
    auto a = api_->call("GET", "/v1/agents/solo-1").second;
    return a["hostname"] == "host-b" && a["status"] == "online";
  })) << again.log();
  EXPECT_EQ(again.log().find("cannot register yet"), std::string::npos) << again.log();
  auto r = api_->wait_terminal(api_->submit({{"plan", "echo"}, {"payload", "back"}}));
  EXPECT_EQ(r["status"], "success") << r.dump();
}

// This test ensures two agents started under one name on one host (so the
// mesh cannot tell them from a restart) do not supersede each other
// forever: each one that finds its session taken over by another
// registration stops with exit 1 and says why.
TEST_F(agent_integration, two_agents_with_one_name_stop) {
  agent_options o{"twin-1", "{env: dev}"};
  auto& first = start_agent(o);
  agent_process second{dir_.path() + "/second", mesh_->url(), reg_, o};
  auto code = first.proc().wait_exit();
  ASSERT_TRUE(code.has_value()) << first.log();
  EXPECT_EQ(*code, 1);
  EXPECT_NE(first.log().find("another agent registered under the name 'twin-1'"),
            std::string::npos)
      << first.log();
  auto second_code = second.proc().wait_exit();
  ASSERT_TRUE(second_code.has_value()) << second.log();
  EXPECT_EQ(*second_code, 1);
}
