#include "tests/support/mesh_fixture.hpp"

#include "mesh/domain/error.hpp"

#include <arpa/inet.h>
#include <cstdlib>
#include <fstream>
#include <ftw.h>
#include <httplib.h>
#include <netinet/in.h>
#include <set>
#include <sqlite3.h>
#include <sstream>
#include <sys/socket.h>
#include <unistd.h>

namespace polymesh::test {

int connect_local(int port, int receive_buffer) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  timeval tv{10, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  if (receive_buffer > 0)
    ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &receive_buffer, sizeof receive_buffer);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

std::string exchange_raw(int port, const std::string& bytes) {
  int fd = connect_local(port);
  if (fd < 0) return "connect failed";
  std::string out;
  if (::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL) ==
      static_cast<ssize_t>(bytes.size())) {
    char buf[4096];
    for (ssize_t n; (n = ::recv(fd, buf, sizeof buf, 0)) > 0;)
      out.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return out;
}

std::string exchange_after_answer(int port, const std::string& first,
                                  const std::string& then) {
  bool head = first.rfind("HEAD ", 0) == 0;
  int fd = connect_local(port);
  if (fd < 0) return "connect failed";
  std::string out;
  if (::send(fd, first.data(), first.size(), MSG_NOSIGNAL) !=
      static_cast<ssize_t>(first.size())) {
    ::close(fd);
    return "send failed";
  }
  char buf[4096];
  // The first answer is whole once its headers and Content-Length bytes are in.
  for (;;) {
    auto head_end = out.find("\r\n\r\n");
    if (head_end != std::string::npos) {
      auto at = out.find("Content-Length: ");
      size_t length =
          at == std::string::npos || head ? 0 : std::stoul(out.substr(at + 16));
      if (out.size() >= head_end + 4 + length) break;
    }
    auto n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  (void)::send(fd, then.data(), then.size(), MSG_NOSIGNAL);
  for (ssize_t n; (n = ::recv(fd, buf, sizeof buf, 0)) > 0;)
    out.append(buf, static_cast<size_t>(n));
  ::close(fd);
  return out;
}

void exec_sql(const std::string& db, const std::string& sql) {
  sqlite3* h = nullptr;
  ASSERT_EQ(sqlite3_open(db.c_str(), &h), SQLITE_OK);
  sqlite3_busy_timeout(h, 5000);
  char* err = nullptr;
  EXPECT_EQ(sqlite3_exec(h, sql.c_str(), nullptr, nullptr, &err), SQLITE_OK)
      << (err ? err : "");
  sqlite3_free(err);
  sqlite3_close(h);
}

std::string query_text(const std::string& db, const std::string& sql) {
  sqlite3* h = nullptr;
  std::string out;
  if (sqlite3_open(db.c_str(), &h) == SQLITE_OK) {
    sqlite3_busy_timeout(h, 5000);
    sqlite3_stmt* st = nullptr;
    if (sqlite3_prepare_v2(h, sql.c_str(), -1, &st, nullptr) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
      if (auto text = sqlite3_column_text(st, 0))
        out = reinterpret_cast<const char*>(text);
    sqlite3_finalize(st);
  }
  sqlite3_close(h);
  return out;
}

std::string make_temp_dir() {
  const char* base = std::getenv("TMPDIR");
  std::string tmpl = std::string{base && *base ? base : "/tmp"} + "/polymesh-test-XXXXXX";
  if (!::mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
  return tmpl;
}

void remove_tree(const std::string& dir) {
  ::nftw(
      dir.c_str(),
      [](const char* path, const struct stat*, int, struct FTW*) {
        return ::remove(path);
      },
      16, FTW_DEPTH | FTW_PHYS);
}

response call(int port, const std::string& method, const std::string& path,
              const std::string& token, const json& body, const std::string* raw_body) {
  std::string payload =
      raw_body ? *raw_body : (body.is_null() ? std::string{} : body.dump());
  return call_raw(port, method, path, token.empty() ? "" : "Bearer " + token, payload);
}

response call_raw(int port, const std::string& method, const std::string& path,
                  const std::string& authorization, const std::string& raw_body) {
  httplib::Client cli{"127.0.0.1", port};
  cli.set_read_timeout(std::chrono::seconds{120});
  httplib::Headers headers;
  if (!authorization.empty()) headers.emplace("Authorization", authorization);
  httplib::Result res{nullptr, httplib::Error::Unknown};
  if (method == "GET")
    res = cli.Get(path, headers);
  else if (method == "POST")
    res = cli.Post(path, headers, raw_body, "application/json");
  else if (method == "PATCH")
    res = cli.Patch(path, headers, raw_body, "application/json");
  else if (method == "PUT")
    res = cli.Put(path, headers, raw_body, "application/octet-stream");
  else if (method == "DELETE")
    res = cli.Delete(path, headers);
  response out;
  if (!res) {
    out.status = -1;
    out.raw = httplib::to_string(res.error());
    return out;
  }
  out.status = res->status;
  out.raw = res->body;
  out.body = json::parse(res->body, nullptr, false);
  for (auto& [k, v] : res->headers)
    out.headers[k] = v;
  return out;
}

double metric_value(const std::string& text, const std::string& head) {
  std::istringstream in{text};
  for (std::string line; std::getline(in, line);)
    if (line.rfind(head + " ", 0) == 0) return std::stod(line.substr(head.size() + 1));
  return -1;
}

bool eventually(const std::function<bool()>& cond, std::chrono::milliseconds limit) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  while (!cond()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::yield();
  }
  return true;
}

response scripted_agent::poll(int wait_s) const {
  return call(port, "GET", "/v1/agents/" + id + "/runs?wait=" + std::to_string(wait_s),
              token);
}
json scripted_agent::take(size_t n) const {
  json out = json::array();
  std::set<std::string> seen;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds{10};
  while (out.size() < n && std::chrono::steady_clock::now() < deadline) {
    auto r = poll(1);
    if (r.status != 200) break;
    for (auto& run : r.body["runs"])
      if (seen.insert(run["id"].get<std::string>()).second) out.push_back(run);
  }
  return out;
}

response scripted_agent::start(const std::string& run_id) const {
  return call(port, "POST", "/v1/runs/" + run_id + "/start", token, json::object());
}
response scripted_agent::progress(const std::string& run_id,
                                  const std::string& msg) const {
  return call(port, "POST", "/v1/runs/" + run_id + "/progress", token,
              json{{"message", msg}});
}
response scripted_agent::logs(const std::string& run_id, int64_t seq,
                              const std::string& data) const {
  return call(port, "POST", "/v1/runs/" + run_id + "/logs", token,
              json{{"chunks", json::array({json{{"seq", seq}, {"data", data}}})}});
}
response scripted_agent::finish(const std::string& run_id, const std::string& status,
                                int exit_code, const std::string& result) const {
  return call(port, "POST", "/v1/runs/" + run_id + "/finish", token,
              json{{"status", status}, {"exit_code", exit_code}, {"result", result}});
}
response scripted_agent::deregister() const {
  return call(port, "DELETE", "/v1/agents/" + id, token);
}

response scripted_agent::report(const json& body, int wait_s) const {
  auto path = "/v1/agents/" + id + "/report";
  if (wait_s >= 0) path += "?wait=" + std::to_string(wait_s);
  return call(port, "POST", path, token, body);
}

response scripted_agent::put_artifact(const std::string& run_id, const std::string& name,
                                      const std::string& bytes) const {
  return call(port, "PUT", "/v1/runs/" + run_id + "/artifacts/" + name, token, nullptr,
              &bytes);
}

void mesh_fixture::SetUp() {
  dir = make_temp_dir();
  cfg = mesh_config{};
  cfg.data_dir = dir;
  cfg.listen = "127.0.0.1:0";
  cfg.http_threads = 32;
  cfg.store_synchronous = "normal";
  configure(cfg);
  start_mesh();
  // With POLYMESH_ADMIN_TOKEN set meshd writes no admin.token file.
  if (const char* env = std::getenv("POLYMESH_ADMIN_TOKEN"); env && *env) {
    admin = env;
    return;
  }
  std::ifstream in{dir + "/admin.token"};
  std::getline(in, admin);
  ASSERT_FALSE(admin.empty()) << "meshd wrote no admin.token";
}

void mesh_fixture::TearDown() {
  stop_mesh();
  remove_tree(dir);
}

void mesh_fixture::start_mesh() {
  auto node = mesh_node::start(cfg, clock);
  ASSERT_TRUE(node) << message_of(node.error());
  node_ = std::move(*node);
  server_ = std::make_unique<http_server>(*node_);
  auto bound = server_->bind("127.0.0.1", 0);
  ASSERT_TRUE(bound) << message_of(bound.error());
  port = *bound;
  serving_ = std::thread{[this] { server_->serve(); }};
  ASSERT_TRUE(eventually([this] { return call("GET", "/healthz", "").status == 200; }));
}

void mesh_fixture::begin_stopping() {
  if (!node_ || stopping_) return;
  stopping_ = true;
  node_->begin_shutdown();
  server_->stop();
}

void mesh_fixture::await_served() {
  if (serving_.joinable()) serving_.join();
}

void mesh_fixture::stop_mesh() {
  if (!node_) return;
  begin_stopping();
  stopping_ = false;
  if (serving_.joinable()) serving_.join();
  server_.reset();
  node_->shutdown();
  node_.reset();
}

void mesh_fixture::restart_mesh() {
  stop_mesh();
  start_mesh();
}

std::string mesh_fixture::make_token(const std::string& kind, const std::string& scope,
                                     int64_t ttl_s) {
  json body{{"kind", kind}, {"name", kind + " for a test"}};
  if (!scope.empty()) body["scope"] = scope;
  if (ttl_s > 0) body["ttl_s"] = ttl_s;
  auto r = call("POST", "/v1/tokens", admin, body);
  EXPECT_EQ(r.status, 201) << r.raw;
  return r.body.value("token", "");
}

scripted_agent mesh_fixture::register_agent(const std::string& name, const json& labels,
                                            const json& plans, int capacity) {
  if (registration_.empty()) registration_ = make_token("registration");
  auto r = call(
      "POST", "/v1/agents/register", registration_,
      json{{"name", name}, {"labels", labels}, {"plans", plans}, {"capacity", capacity}});
  EXPECT_EQ(r.status, 201) << r.raw;
  scripted_agent a;
  a.port = port;
  a.name = name;
  a.id = r.body.value("id", "");
  a.token = r.body.value("access_token", "");
  return a;
}

response mesh_fixture::submit(const json& body, const std::string& token) {
  if (token.empty() && submitter_.empty()) submitter_ = make_token("submitter");
  return call("POST", "/v1/runs", token.empty() ? submitter_ : token, body);
}

json mesh_fixture::get_run(const std::string& id) {
  auto r = call("GET", "/v1/runs/" + id, admin);
  EXPECT_EQ(r.status, 200) << r.raw;
  return r.body;
}

bool mesh_fixture::becomes(const std::string& id, const std::string& status) {
  return eventually([&] { return get_run(id)["status"] == status; });
}

std::pair<std::string, std::string> mesh_fixture::state_of(const std::string& run_id) {
  auto run = get_run(run_id);
  return {run.value("status", ""),
          run["reason"].is_string() ? run["reason"].get<std::string>() : std::string{}};
}

} // namespace polymesh::test
