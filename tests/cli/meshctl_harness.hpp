// Test harness for meshctl: a real meshd process on 127.0.0.1:0, meshctl run
// as a subprocess against it, and a scripted agent speaking plain HTTP.
//
// Nothing here sleeps to synchronise: waits re-check a condition until a
// bounded deadline passes.
#pragma once

#include "tests/support/meshd_process.hpp"

#include <chrono>
#include <functional>
#include <gtest/gtest.h>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <sys/types.h>
#include <thread>
#include <vector>

namespace polymesh::cli_test {

using json = nlohmann::json;

constexpr auto deadline = std::chrono::seconds{30};

struct http_response {
  int status = 0;
  json body;
  std::string raw;
};

/// One plain HTTP call to 127.0.0.1:`port`, with a bearer token when given.
http_response call(int port, const std::string& method, const std::string& path,
                   const std::string& token, const json& body = nullptr);

/// Re-evaluates `cond` until it holds or `limit` elapses; true if it held.
bool eventually(const std::function<bool()>& cond,
                std::chrono::milliseconds limit = deadline);

/// How a meshctl run ended.
struct outcome {
  int code = -1;
  std::string out;
  std::string err;
  /// stdout parsed as JSON (discarded when it is not).
  [[nodiscard]] json json_out() const { return json::parse(out, nullptr, false); }
};

/// A running meshctl; its stdout and stderr are collected as they come.
class meshctl_process {
public:
  /// With `tty`, stdout and stderr are one pseudo-terminal, collected as `out`.
  /// It runs in `cwd` ("": the test's own working directory).
  meshctl_process(const std::vector<std::string>& args,
                  const std::vector<std::string>& env, bool tty = false,
                  const std::string& cwd = {});
  ~meshctl_process();

  /// A snapshot of what it printed so far.
  [[nodiscard]] std::string out() const;
  /// A snapshot of what it printed on stderr so far (empty with a tty).
  [[nodiscard]] std::string err() const;
  /// Waits (bounded) until stdout contains `text`; false if it never did.
  bool wait_for_out(const std::string& text);
  /// Waits (bounded) for the exit; a process still running then is killed.
  outcome wait();
  /// Sends `sig` to it.
  void signal(int sig) const;

private:
  pid_t pid_ = -1;
  int out_fd_ = -1;
  int err_fd_ = -1;
  mutable std::mutex mtx_;
  std::string out_;
  std::string err_;
  std::thread reader_;
};

/// A scripted agent: registers with a registration token, then polls,
/// starts, logs and finishes runs over plain HTTP.
struct scripted_agent {
  int port = 0;
  std::string id;
  std::string name;
  std::string token;

  /// Long-polls until a run arrives (bounded); returns it, null if none came.
  json take();
  http_response start(const std::string& run) const;
  http_response log(const std::string& run, int64_t seq, const std::string& data,
                    const std::string& stream = "stdout") const;
  http_response finish(const std::string& run, const std::string& status,
                       int exit_code = 0, const std::string& result = {}) const;
  /// PUT /v1/runs/{run}/artifacts/{name} with `bytes` as the raw body.
  http_response put_artifact(const std::string& run, const std::string& name,
                             const std::string& bytes) const;
};

/// A fresh meshd per test, an admin token, and helpers to run meshctl.
class meshctl_test : public ::testing::Test {
protected:
  void SetUp() override;
  void TearDown() override;
  /// meshd's config file for this fixture ("" for none: the defaults).
  [[nodiscard]] virtual std::string meshd_config_yaml() const { return {}; }

  /// The environment meshctl runs with: a private HOME, no MESH_* variables.
  [[nodiscard]] std::vector<std::string> base_env() const;
  /// Runs meshctl with `--mesh URL --token admin` and `args`, to completion.
  outcome ctl(const std::vector<std::string>& args);
  /// Runs meshctl with exactly `args` and `env` (added to `base_env`).
  outcome ctl_raw(const std::vector<std::string>& args,
                  const std::vector<std::string>& env = {});
  /// Starts meshctl like `ctl` without waiting for it; on a pseudo-terminal
  /// with `tty`, and with `env` added.
  std::unique_ptr<meshctl_process> ctl_async(const std::vector<std::string>& args,
                                             bool tty = false,
                                             const std::vector<std::string>& env = {});

  /// Creates a token of `kind` through the API; returns its secret.
  std::string make_token(const std::string& kind, const std::string& scope = {});
  scripted_agent register_agent(const std::string& name, const json& labels,
                                const json& plans = json::array({"noop"}),
                                int capacity = 1);
  /// Submits a run through the API with the admin token; returns its id.
  std::string submit(const json& body);
  json get_run(const std::string& id);

  std::string dir;
  std::string url;
  int port = 0;
  const std::string admin = "meshctl-test-admin-token-0123456789";
  std::unique_ptr<test::meshd_process> meshd;

private:
  std::string registration_;
};

} // namespace polymesh::cli_test
