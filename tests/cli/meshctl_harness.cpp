#include "tests/cli/meshctl_harness.hpp"

#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <httplib.h>
#include <poll.h>
#include <pty.h>
#include <sys/wait.h>
#include <unistd.h>

namespace polymesh::cli_test {

namespace {

http_response response_of(const httplib::Result& res) {
  http_response out;
  if (!res) return out;
  out.status = res->status;
  out.raw = res->body;
  out.body = json::parse(res->body, nullptr, false);
  return out;
}

} // namespace

http_response call(int port, const std::string& method, const std::string& path,
                   const std::string& token, const json& body) {
  httplib::Client http{"127.0.0.1", port};
  http.set_tcp_nodelay(true);
  http.set_read_timeout(60, 0);
  httplib::Headers headers;
  if (!token.empty()) headers.emplace("Authorization", "Bearer " + token);
  auto text = body.is_null() ? std::string{} : body.dump();
  httplib::Result res{nullptr, httplib::Error::Unknown};
  if (method == "GET")
    res = http.Get(path, headers);
  else if (method == "POST")
    res = http.Post(path, headers, text.empty() ? "{}" : text, "application/json");
  else if (method == "PATCH")
    res = http.Patch(path, headers, text, "application/json");
  else
    res = http.Delete(path, headers);
  return response_of(res);
}

bool eventually(const std::function<bool()>& cond, std::chrono::milliseconds limit) {
  auto until = std::chrono::steady_clock::now() + limit;
  auto pause = std::chrono::milliseconds{5};
  while (std::chrono::steady_clock::now() < until) {
    if (cond()) return true;
    std::this_thread::sleep_for(pause);
    pause = std::min(pause * 2, std::chrono::milliseconds{100});
  }
  return cond();
}

// -- meshctl_process ----------------------------------------------------------

namespace {

[[noreturn]] void exec_meshctl(const std::vector<std::string>& args,
                               const std::vector<std::string>& env,
                               const std::string& cwd) {
  if (!cwd.empty() && ::chdir(cwd.c_str()) != 0) ::_exit(126);
  std::vector<std::string> argv_s{MESHCTL_PATH};
  argv_s.insert(argv_s.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : argv_s)
    argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  std::vector<char*> envp;
  for (auto& e : env)
    envp.push_back(const_cast<char*>(e.c_str()));
  envp.push_back(nullptr);
  ::execve(MESHCTL_PATH, argv.data(), envp.data());
  ::_exit(127);
}

} // namespace

meshctl_process::meshctl_process(const std::vector<std::string>& args,
                                 const std::vector<std::string>& env, bool tty,
                                 const std::string& cwd) {
  if (tty) {
    pid_ = ::forkpty(&out_fd_, nullptr, nullptr, nullptr);
    if (pid_ < 0) throw std::runtime_error("forkpty failed");
    if (pid_ == 0) exec_meshctl(args, env, cwd);
  } else {
    int out[2];
    int err[2];
    if (::pipe(out) != 0 || ::pipe(err) != 0) throw std::runtime_error("pipe failed");
    pid_ = ::fork();
    if (pid_ < 0) throw std::runtime_error("fork failed");
    if (pid_ == 0) {
      ::dup2(out[1], STDOUT_FILENO);
      ::dup2(err[1], STDERR_FILENO);
      for (int fd : {out[0], out[1], err[0], err[1]})
        ::close(fd);
      exec_meshctl(args, env, cwd);
    }
    ::close(out[1]);
    ::close(err[1]);
    out_fd_ = out[0];
    err_fd_ = err[0];
  }
  reader_ = std::thread{[this] {
    // A negative fd (no separate stderr on a pty) is skipped by poll.
    pollfd fds[2] = {{out_fd_, POLLIN, 0}, {err_fd_, POLLIN, 0}};
    int open = err_fd_ < 0 ? 1 : 2;
    char buf[4096];
    while (open > 0) {
      if (::poll(fds, 2, -1) < 0) {
        if (errno == EINTR) continue;
        break;
      }
      for (int i = 0; i < 2; ++i) {
        if (fds[i].fd < 0 || (fds[i].revents & (POLLIN | POLLHUP | POLLERR)) == 0)
          continue;
        auto n = ::read(fds[i].fd, buf, sizeof buf);
        if (n <= 0) {
          fds[i].fd = -1;
          --open;
          continue;
        }
        std::lock_guard<std::mutex> guard{mtx_};
        (i == 0 ? out_ : err_).append(buf, static_cast<size_t>(n));
      }
    }
  }};
}

meshctl_process::~meshctl_process() {
  if (pid_ > 0) {
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
  }
  if (reader_.joinable()) reader_.join();
  ::close(out_fd_);
  if (err_fd_ >= 0) ::close(err_fd_);
}

std::string meshctl_process::out() const {
  std::lock_guard<std::mutex> guard{mtx_};
  return out_;
}

std::string meshctl_process::err() const {
  std::lock_guard<std::mutex> guard{mtx_};
  return err_;
}

bool meshctl_process::wait_for_out(const std::string& text) {
  return eventually([&] { return out().find(text) != std::string::npos; });
}

void meshctl_process::signal(int sig) const {
  if (pid_ > 0) ::kill(pid_, sig);
}

outcome meshctl_process::wait() {
  outcome o;
  int status = 0;
  bool exited = eventually([&] { return ::waitpid(pid_, &status, WNOHANG) == pid_; },
                           std::chrono::seconds{120});
  if (!exited) {
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, &status, 0);
  }
  pid_ = -1;
  if (reader_.joinable()) reader_.join();
  o.code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  std::lock_guard<std::mutex> guard{mtx_};
  o.out = out_;
  o.err = err_;
  return o;
}

// -- scripted_agent -------------------------------------------------------------

json scripted_agent::take() {
  json run;
  eventually([&] {
    auto r = call(port, "GET", "/v1/agents/" + id + "/runs?wait=1", token);
    if (r.status == 200 && !r.body["runs"].empty()) {
      run = r.body["runs"][0];
      return true;
    }
    return false;
  });
  return run;
}

http_response scripted_agent::start(const std::string& run) const {
  return call(port, "POST", "/v1/runs/" + run + "/start", token, json::object());
}

http_response scripted_agent::log(const std::string& run, int64_t seq,
                                  const std::string& data,
                                  const std::string& stream) const {
  return call(
      port, "POST", "/v1/runs/" + run + "/logs", token,
      json{{"chunks",
            json::array({json{{"seq", seq}, {"stream", stream}, {"data", data}}})}});
}

http_response scripted_agent::finish(const std::string& run, const std::string& status,
                                     int exit_code, const std::string& result) const {
  json body{{"status", status}, {"exit_code", exit_code}};
  if (!result.empty()) body["result"] = result;
  return call(port, "POST", "/v1/runs/" + run + "/finish", token, body);
}

http_response scripted_agent::put_artifact(const std::string& run,
                                           const std::string& name,
                                           const std::string& bytes) const {
  httplib::Client http{"127.0.0.1", port};
  auto res =
      http.Put("/v1/runs/" + run + "/artifacts/" + name,
               {{"Authorization", "Bearer " + token}}, bytes, "application/octet-stream");
  return response_of(res);
}

// -- meshctl_test ---------------------------------------------------------------

void meshctl_test::SetUp() {
  auto base = std::filesystem::temp_directory_path() / "meshctl-test-XXXXXX";
  std::string templ = base.string();
  ASSERT_NE(::mkdtemp(templ.data()), nullptr);
  dir = templ;
  std::vector<std::string> extra;
  if (auto yaml = meshd_config_yaml(); !yaml.empty()) {
    std::ofstream{dir + "/meshd.yaml"} << yaml;
    extra = {"--config", dir + "/meshd.yaml"};
  }
  meshd = std::make_unique<test::meshd_process>(MESHD_PATH, dir + "/data", admin, extra);
  port = meshd->port();
  url = "http://127.0.0.1:" + std::to_string(port);
  registration_ = make_token("registration");
}

void meshctl_test::TearDown() {
  meshd.reset();
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
}

std::vector<std::string> meshctl_test::base_env() const {
  const char* path = std::getenv("PATH");
  return {"HOME=" + dir, "PATH=" + std::string{path ? path : "/usr/bin:/bin"}};
}

outcome meshctl_test::ctl(const std::vector<std::string>& args) {
  std::vector<std::string> all{"--mesh", url, "--token", admin};
  all.insert(all.end(), args.begin(), args.end());
  return ctl_raw(all);
}

outcome meshctl_test::ctl_raw(const std::vector<std::string>& args,
                              const std::vector<std::string>& env) {
  auto e = base_env();
  e.insert(e.end(), env.begin(), env.end());
  return meshctl_process{args, e, false, dir}.wait();
}

std::unique_ptr<meshctl_process>
meshctl_test::ctl_async(const std::vector<std::string>& args, bool tty,
                        const std::vector<std::string>& env) {
  std::vector<std::string> all{"--mesh", url, "--token", admin};
  all.insert(all.end(), args.begin(), args.end());
  auto e = base_env();
  e.insert(e.end(), env.begin(), env.end());
  return std::make_unique<meshctl_process>(all, e, tty, dir);
}

std::string meshctl_test::make_token(const std::string& kind, const std::string& scope) {
  json body{{"kind", kind}, {"name", kind + " for meshctl tests"}};
  if (!scope.empty()) body["scope"] = scope;
  auto r = call(port, "POST", "/v1/tokens", admin, body);
  EXPECT_EQ(r.status, 201) << r.raw;
  return r.body.value("token", "");
}

scripted_agent meshctl_test::register_agent(const std::string& name, const json& labels,
                                            const json& plans, int capacity) {
  auto r = call(
      port, "POST", "/v1/agents/register", registration_,
      json{{"name", name}, {"labels", labels}, {"plans", plans}, {"capacity", capacity}});
  EXPECT_EQ(r.status, 201) << r.raw;
  return scripted_agent{port, r.body.value("id", ""), name,
                        r.body.value("access_token", "")};
}

std::string meshctl_test::submit(const json& body) {
  auto r = call(port, "POST", "/v1/runs", admin, body);
  EXPECT_EQ(r.status, 201) << r.raw;
  return r.body.value("id", "");
}

json meshctl_test::get_run(const std::string& id) {
  return call(port, "GET", "/v1/runs/" + id, admin).body;
}

} // namespace polymesh::cli_test
