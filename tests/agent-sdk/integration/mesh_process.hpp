// Integration test support: real meshd and mesh-agent processes on
// 127.0.0.1, and a small client for the REST API.
//
// `meshd_process` starts meshd on port 0 in a fresh data directory, reads
// the `listening on http://HOST:PORT` line from its stdout and the admin
// token from `<data>/admin.token`. `agent_process` writes a YAML config and
// starts mesh-agent with it. Every wait is a poll of an observable condition
// with a bounded deadline; nothing sleeps in place of synchronisation.
//
// Thread-safety: one test thread.
#pragma once

#include <chrono>
#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <sys/types.h>
#include <vector>

namespace polymesh::itest {

using json = nlohmann::json;
using namespace std::chrono_literals;

/// Polls `pred` every 20 ms until it holds or `limit` passes.
bool eventually(const std::function<bool()>& pred, std::chrono::milliseconds limit = 30s);

/// True once `pid` no longer exists (or is a zombie), within a bounded wait.
bool process_gone(pid_t pid, std::chrono::milliseconds limit = 15s);

/// A unique directory under $TMPDIR, removed on destruction.
class scratch_dir {
public:
  scratch_dir();
  ~scratch_dir();
  scratch_dir(const scratch_dir&) = delete;
  scratch_dir& operator=(const scratch_dir&) = delete;
  [[nodiscard]] const std::string& path() const { return path_; }

private:
  std::string path_;
};

/// A child process with stdout and stderr appended to files.
class child_process {
public:
  child_process() = default;
  child_process(std::vector<std::string> argv, const std::string& stdout_file,
                const std::string& stderr_file);
  ~child_process();
  child_process(child_process&& other) noexcept;
  child_process& operator=(child_process&& other) noexcept;

  [[nodiscard]] pid_t pid() const { return pid_; }
  void signal(int sig) const;
  /// The exit status (or 128 + signal), or nullopt if still running after `limit`.
  std::optional<int> wait_exit(std::chrono::milliseconds limit = 30s);

private:
  pid_t pid_ = -1;
};

/// Reads a whole file ("" when missing).
[[nodiscard]] std::string read_file(const std::string& path);

class meshd_process {
public:
  /// Starts meshd in a new data directory under `dir`, with `config_yaml`
  /// as its config file when not empty.
  explicit meshd_process(const std::string& dir, const std::string& config_yaml = "");
  /// Stops it with SIGTERM (and waits for the exit).
  void stop();
  /// Starts it again on the same port and data directory; with
  /// `config_yaml` as its config file from now on when not empty.
  void restart(const std::string& config_yaml = "");

  [[nodiscard]] const std::string& url() const { return url_; }
  [[nodiscard]] const std::string& admin_token() const { return admin_; }
  [[nodiscard]] std::string log() const;

private:
  void launch(const std::string& listen);

  std::string dir_;
  std::string config_file_;
  std::string url_;
  std::string listen_;
  std::string admin_;
  child_process proc_;
  int launches_ = 0;
};

/// The REST API as the tests need it. Fails the test on transport errors.
class mesh_api {
public:
  mesh_api(std::string url, std::string token);
  /// Returns {status, body}.
  std::pair<int, json> call(const std::string& method, const std::string& path,
                            const json& body = nullptr) const;
  /// GET returning the raw body (artifact downloads): {status, bytes}.
  std::pair<int, std::string> get_raw(const std::string& path) const;
  std::string create_registration_token(const std::string& name) const;
  /// POST /v1/runs; returns the run id (fails the test otherwise).
  std::string submit(const json& request) const;
  json run(const std::string& id) const;
  json agents() const;
  /// The concatenated log text of a run.
  std::string logs(const std::string& id) const;
  /// Waits until the run is terminal; returns it.
  json wait_terminal(const std::string& id, std::chrono::milliseconds limit = 30s) const;
  /// The agent id of the online agent named `name`, waiting for it to appear.
  std::string wait_agent_online(const std::string& name) const;

private:
  std::string url_;
  std::string token_;
};

struct agent_options {
  std::string name;
  std::string labels_yaml = "{}";
  int capacity = 2;
  std::string drain_deadline = "30s";
  std::string plans_yaml = "{echo: {}, sleep: {}}";
  std::string plugins_yaml = "[]";
  /// `agent.hostname` when not empty.
  std::string hostname{};
  /// `agent.work_dir` when not empty (else `<dir>/<name>/work`).
  std::string work_dir{};
  /// Top-level YAML appended to the config, e.g. `log: {level: error}\n`.
  std::string extra_yaml{};
  /// Arguments after `--config FILE`, e.g. `--check`.
  std::vector<std::string> extra_args{};
  /// The registration token file's mode (0600: no warning).
  std::filesystem::perms token_mode =
      std::filesystem::perms::owner_read | std::filesystem::perms::owner_write;
};

/// A mesh-agent process with its own config in `dir/<name>`.
class agent_process {
public:
  agent_process(const std::string& dir, const std::string& mesh_url,
                const std::string& registration_token, const agent_options& opts);
  child_process& proc() { return proc_; }
  [[nodiscard]] std::string log() const;
  [[nodiscard]] const std::string& work_dir() const { return work_; }

private:
  std::string home_;
  std::string work_;
  child_process proc_;
};

} // namespace polymesh::itest
