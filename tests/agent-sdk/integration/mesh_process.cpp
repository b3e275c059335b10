#include "mesh_process.hpp"

#include <csignal>
#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <gtest/gtest.h>
#include <httplib.h>
#include <random>
#include <sstream>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

namespace polymesh::itest {

namespace fs = std::filesystem;

bool eventually(const std::function<bool()>& pred, std::chrono::milliseconds limit) {
  auto until = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < until) {
    if (pred()) return true;
    std::this_thread::sleep_for(20ms);
  }
  return pred();
}

bool process_gone(pid_t pid, std::chrono::milliseconds limit) {
  return eventually(
      [pid] {
        if (::kill(pid, 0) != 0 && errno == ESRCH) return true;
        std::ifstream stat{"/proc/" + std::to_string(pid) + "/stat"};
        std::string line;
        std::getline(stat, line);
        auto close = line.rfind(')');
        return close != std::string::npos && close + 2 < line.size() &&
               line[close + 2] == 'Z';
      },
      limit);
}

scratch_dir::scratch_dir() {
  std::random_device rd;
  path_ = (fs::temp_directory_path() /
           ("polymesh-itest-" + std::to_string(::getpid()) + "-" + std::to_string(rd())))
              .string();
  fs::create_directories(path_);
}

scratch_dir::~scratch_dir() {
  std::error_code ec;
  fs::remove_all(path_, ec);
}

std::string read_file(const std::string& path) {
  std::ifstream in{path};
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

child_process::child_process(std::vector<std::string> argv,
                             const std::string& stdout_file,
                             const std::string& stderr_file) {
  std::vector<char*> args;
  for (auto& a : argv)
    args.push_back(a.data());
  args.push_back(nullptr);
  pid_ = ::fork();
  if (pid_ == 0) {
    int out = ::open(stdout_file.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    int err = ::open(stderr_file.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    ::dup2(out, 1);
    ::dup2(err, 2);
    ::execv(args[0], args.data());
    ::_exit(127);
  }
}

child_process::~child_process() {
  if (pid_ > 0) {
    ::kill(pid_, SIGKILL);
    int status = 0;
    ::waitpid(pid_, &status, 0);
  }
}

child_process::child_process(child_process&& other) noexcept
    : pid_(other.pid_) {
  other.pid_ = -1;
}

child_process& child_process::operator=(child_process&& other) noexcept {
  if (this != &other) {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      int status = 0;
      ::waitpid(pid_, &status, 0);
    }
    pid_ = other.pid_;
    other.pid_ = -1;
  }
  return *this;
}

void child_process::signal(int sig) const {
  if (pid_ > 0) ::kill(pid_, sig);
}

std::optional<int> child_process::wait_exit(std::chrono::milliseconds limit) {
  if (pid_ <= 0) return std::nullopt;
  std::optional<int> code;
  eventually(
      [&] {
        int status = 0;
        if (::waitpid(pid_, &status, WNOHANG) != pid_) return false;
        code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        return true;
      },
      limit);
  if (code) pid_ = -1;
  return code;
}

// -- meshd --------------------------------------------------------------------

meshd_process::meshd_process(const std::string& dir, const std::string& config_yaml)
    : dir_(dir) {
  if (!config_yaml.empty()) {
    config_file_ = dir_ + "/meshd.yaml";
    std::ofstream{config_file_} << config_yaml;
  }
  launch("127.0.0.1:0");
}

void meshd_process::launch(const std::string& listen) {
  auto n = std::to_string(++launches_);
  auto out = dir_ + "/meshd." + n + ".out";
  std::vector<std::string> argv{POLYMESH_MESHD, "--listen", listen, "--data-dir",
                                dir_ + "/data"};
  if (!config_file_.empty()) argv.insert(argv.end(), {"--config", config_file_});
  // A restart binds the port the first start got: for a moment another
  // socket may still hold that number (a client's source port), and meshd
  // exits 2 "cannot listen on". It is started again then, as an operator
  // would, for as long as `eventually` waits.
  auto err_seen = log().size();
  proc_ = child_process{argv, out, dir_ + "/meshd.err"};
  std::string line;
  ASSERT_TRUE(eventually([&] {
    auto text = read_file(out);
    auto at = text.find("listening on http://");
    if (at != std::string::npos && text.find('\n', at) != std::string::npos) {
      line = text.substr(at, text.find('\n', at) - at);
      return true;
    }
    if (listen != "127.0.0.1:0" && proc_.wait_exit(0ms).has_value() &&
        log().find("cannot listen on", err_seen) != std::string::npos) {
      err_seen = log().size();
      proc_ = child_process{argv, out, dir_ + "/meshd.err"};
    }
    return false;
  })) << "meshd did not start: "
      << log();
  url_ = line.substr(std::string{"listening on "}.size());
  listen_ = url_.substr(std::string{"http://"}.size());
  ASSERT_TRUE(eventually([&] { return !read_file(dir_ + "/data/admin.token").empty(); }));
  admin_ = read_file(dir_ + "/data/admin.token");
  while (!admin_.empty() && std::isspace(static_cast<unsigned char>(admin_.back())))
    admin_.pop_back();
}

void meshd_process::stop() {
  proc_.signal(SIGTERM);
  ASSERT_TRUE(proc_.wait_exit().has_value()) << "meshd did not stop";
}

void meshd_process::restart(const std::string& config_yaml) {
  if (!config_yaml.empty()) {
    config_file_ = dir_ + "/meshd.yaml";
    std::ofstream{config_file_} << config_yaml;
  }
  launch(listen_);
}

std::string meshd_process::log() const {
  return read_file(dir_ + "/meshd.err");
}

// -- API ------------------------------------------------------------------------

mesh_api::mesh_api(std::string url, std::string token)
    : url_(std::move(url))
    , token_(std::move(token)) {}

std::pair<int, json> mesh_api::call(const std::string& method, const std::string& path,
                                    const json& body) const {
  httplib::Client cli{url_};
  cli.set_tcp_nodelay(true);
  cli.set_keep_alive(false);
  cli.set_read_timeout(30s);
  httplib::Headers h{{"Authorization", "Bearer " + token_}};
  auto res = [&] {
    if (method == "GET") return cli.Get(path, h);
    if (method == "DELETE") return cli.Delete(path, h);
    return cli.Post(path, h, body.is_null() ? "{}" : body.dump(), "application/json");
  }();
  if (!res) {
    ADD_FAILURE() << method << " " << path << ": " << httplib::to_string(res.error());
    return {0, nullptr};
  }
  return {res->status, json::parse(res->body, nullptr, false)};
}

std::pair<int, std::string> mesh_api::get_raw(const std::string& path) const {
  httplib::Client cli{url_};
  cli.set_keep_alive(false);
  cli.set_read_timeout(30s);
  auto res = cli.Get(path, {{"Authorization", "Bearer " + token_}});
  if (!res) {
    ADD_FAILURE() << "GET " << path << ": " << httplib::to_string(res.error());
    return {0, {}};
  }
  return {res->status, res->body};
}

std::string mesh_api::create_registration_token(const std::string& name) const {
  auto [status, body] =
      call("POST", "/v1/tokens", json{{"kind", "registration"}, {"name", name}});
  EXPECT_EQ(status, 201) << body.dump();
  return body.value("token", std::string{});
}

std::string mesh_api::submit(const json& request) const {
  auto [status, body] = call("POST", "/v1/runs", request);
  EXPECT_EQ(status, 201) << body.dump();
  return body.value("id", std::string{});
}

json mesh_api::run(const std::string& id) const {
  return call("GET", "/v1/runs/" + id).second;
}

json mesh_api::agents() const {
  return call("GET", "/v1/agents").second;
}

std::string mesh_api::logs(const std::string& id) const {
  // Page by page (a page ends at 1 MiB) while `more` says so.
  std::string out;
  int64_t after = -1;
  for (;;) {
    auto body =
        call("GET", "/v1/runs/" + id + "/logs?after=" + std::to_string(after)).second;
    if (!body.is_object() || !body.contains("chunks") || body["chunks"].empty())
      return out;
    for (auto& c : body["chunks"])
      out += c.value("data", std::string{});
    after = body.value("next_after", after);
    if (!body.value("more", true)) return out;
  }
}

json mesh_api::wait_terminal(const std::string& id,
                             std::chrono::milliseconds limit) const {
  json last;
  eventually(
      [&] {
        last = run(id);
        auto s = last.value("status", std::string{});
        return s == "success" || s == "error" || s == "canceled";
      },
      limit);
  return last;
}

std::string mesh_api::wait_agent_online(const std::string& name) const {
  std::string id;
  eventually([&] {
    for (auto& a : agents().value("agents", json::array()))
      if (a["name"] == name && a["status"] == "online") {
        id = a["id"].get<std::string>();
        return true;
      }
    return false;
  });
  EXPECT_FALSE(id.empty()) << "agent " << name << " never came online";
  return id;
}

// -- mesh-agent --------------------------------------------------------------------

agent_process::agent_process(const std::string& dir, const std::string& mesh_url,
                             const std::string& registration_token,
                             const agent_options& o) {
  home_ = dir + "/" + o.name;
  work_ = o.work_dir.empty() ? home_ + "/work" : o.work_dir;
  fs::create_directories(home_);
  std::ofstream{home_ + "/reg.token"} << registration_token << "\n";
  fs::permissions(home_ + "/reg.token", o.token_mode);
  std::ofstream{home_ + "/agent.yaml"}
      << "mesh: {url: \"" << mesh_url << "\", registration_token_file: reg.token}\n"
      << "agent:\n  name: " << o.name << "\n  labels: " << o.labels_yaml
      << "\n  capacity: " << o.capacity << "\n  work_dir: " << work_
      << "\n  drain_deadline: " << o.drain_deadline
      << (o.hostname.empty() ? "" : "\n  hostname: " + o.hostname)
      << "\n  kill_grace: 2s\n  poll_wait: 5s\n"
      << "backoff: {initial: 50ms, max: 500ms}\n"
      << "logs: {flush_interval: 50ms}\n"
      << "plugins: " << o.plugins_yaml << "\n"
      << "plans: " << o.plans_yaml << "\n"
      << o.extra_yaml;
  std::vector<std::string> argv{POLYMESH_MESH_AGENT, "--config", home_ + "/agent.yaml"};
  argv.insert(argv.end(), o.extra_args.begin(), o.extra_args.end());
  proc_ = child_process{argv, home_ + "/agent.out", home_ + "/agent.err"};
}

std::string agent_process::log() const {
  return read_file(home_ + "/agent.err");
}

} // namespace polymesh::itest
