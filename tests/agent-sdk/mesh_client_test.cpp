// The agent's REST client and its keep-alive connections, against a small
// cpp-httplib server that records which connection (client port) carried
// each request.
#include "eventually.hpp"
#include "mesh/domain/error.hpp"
#include "mesh/domain/run_state.hpp"
#include "mesh_client.hpp"
#include "tests/support/tls_cert.hpp"

#include <arpa/inet.h>
#include <atomic>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <gtest/gtest.h>
#include <httplib.h>
#include <map>
#include <netinet/in.h>
#include <set>
#include <sstream>
#include <sys/socket.h>
#include <thread>
#include <unistd.h>

using namespace polymesh::sdk;
using namespace std::chrono_literals;
using nlohmann::json;
using polymesh::sdk::test_support::eventually;

namespace {

/// Established TCP connections whose local end is `port` (the server's side
/// of each open connection), from /proc/net/tcp.
int open_connections_to(int port) {
  std::ifstream in{"/proc/net/tcp"};
  std::string line;
  std::getline(in, line); // header
  int n = 0;
  while (std::getline(in, line)) {
    std::istringstream fields{line};
    std::string slot, local, remote, state;
    fields >> slot >> local >> remote >> state;
    auto colon = local.find(':');
    if (colon == std::string::npos || state != "01") continue; // 01: ESTABLISHED
    if (std::stoi(local.substr(colon + 1), nullptr, 16) == port) ++n;
  }
  return n;
}

class recording_mesh {
public:
  explicit recording_mesh(size_t keep_alive_max = 100) {
    svr_.set_tcp_nodelay(true);
    svr_.set_keep_alive_max_count(keep_alive_max);
    svr_.set_keep_alive_timeout(60); // only the client closes idle connections
    svr_.new_task_queue = [] { return new httplib::ThreadPool(16); };
    svr_.Post("/v1/agents/register",
              [this](const httplib::Request& req, httplib::Response& res) {
                record(req);
                res.status = 201;
                res.set_content(json{{"id", "a1"}, {"access_token", "tok"}}.dump(),
                                "application/json");
              });
    svr_.Post(R"(/v1/runs/([^/]+)/start)", [this](const httplib::Request& req,
                                                  httplib::Response& res) {
      record(req);
      std::unique_lock<std::mutex> g{mtx_};
      ++waiting_;
      cv_.notify_all();
      // With a barrier set, answer only once that many calls are
      // here at the same time (or give up after a while).
      cv_.wait_for(g, 10s, [this] { return waiting_ >= barrier_; });
      res.status = waiting_ >= barrier_ ? 200 : 504;
      res.set_content(json{{"id", req.matches[1].str()}}.dump(), "application/json");
    });
    port_ = svr_.bind_to_any_port("127.0.0.1");
    thread_ = std::thread{[this] { svr_.listen_after_bind(); }};
    // A stop before the loop runs is lost, and the join would wait for good.
    eventually([this] { return svr_.is_running(); });
  }

  ~recording_mesh() {
    svr_.stop();
    thread_.join();
  }

  recording_mesh(const recording_mesh&) = delete;
  recording_mesh& operator=(const recording_mesh&) = delete;

  [[nodiscard]] std::string url() const {
    return "http://127.0.0.1:" + std::to_string(port_);
  }
  [[nodiscard]] int port() const { return port_; }

  void set_barrier(int n) {
    std::lock_guard<std::mutex> g{mtx_};
    barrier_ = n;
    waiting_ = 0;
  }

  /// The client ports of the requests so far, in order.
  [[nodiscard]] std::vector<int> ports() {
    std::lock_guard<std::mutex> g{mtx_};
    return ports_;
  }

private:
  void record(const httplib::Request& req) {
    std::lock_guard<std::mutex> g{mtx_};
    ports_.push_back(req.remote_port);
  }

  httplib::Server svr_;
  std::thread thread_;
  int port_ = 0;
  std::mutex mtx_;
  std::condition_variable cv_;
  std::vector<int> ports_;
  int barrier_ = 0;
  int waiting_ = 0;
};

polymesh::wire::register_request registration() {
  polymesh::wire::register_request r;
  r.name = "a";
  return r;
}

std::set<int> distinct(const std::vector<int>& v) {
  return {v.begin(), v.end()};
}

} // namespace

TEST(mesh_client, sequential_calls_share_one_connection) {
  recording_mesh mesh;
  mesh_client client{mesh.url(), 5s, 1min};
  ASSERT_TRUE(client.register_agent("reg", registration()).ok());
  for (int i = 0; i < 5; ++i)
    ASSERT_TRUE(client.start("r" + std::to_string(i)).ok());
  auto ports = mesh.ports();
  ASSERT_EQ(ports.size(), 6u);
  EXPECT_EQ(distinct(ports).size(), 1u);
}

// This test ensures a mesh URL whose host name does not resolve is said to
// be that, as meshctl says it: the agent said "nothing is listening there,
// or the host is unreachable", sending its operator to look at the mesh.
TEST(mesh_client, a_host_name_that_does_not_resolve_is_named) {
  mesh_client client{"http://no-such-host.invalid:7700", 5s, 1min};
  auto r = client.register_agent("reg", registration());
  EXPECT_EQ(r.status, 0);
  EXPECT_EQ(r.error.rfind("the host name 'no-such-host.invalid' does not resolve (", 0),
            0u)
      << r.error;
}

// This test ensures a mesh that takes the connection and never answers is
// reported as a timeout naming the setting, not as a broken connection
// (cpp-httplib reports both as a failed read).
TEST(mesh_client, a_mesh_that_never_answers_is_a_timeout_named_by_its_setting) {
  // A listener nobody accepts on: the kernel completes the connection.
  int silent = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(silent, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(silent, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(::listen(silent, 8), 0);
  socklen_t len = sizeof addr;
  ASSERT_EQ(::getsockname(silent, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  mesh_client client{"http://127.0.0.1:" + std::to_string(ntohs(addr.sin_port)), 300ms,
                     1min};
  auto r = client.register_agent("reg", registration());
  ::close(silent);
  EXPECT_EQ(r.status, 0);
  EXPECT_EQ(r.error, "timed out after mesh.request_timeout (300ms)");
}

TEST(mesh_client, idle_connection_is_closed_after_the_linger) {
  recording_mesh mesh;
  mesh_client client{mesh.url(), 5s, 50ms};
  ASSERT_TRUE(client.register_agent("reg", registration()).ok());
  // The client closes it; the server's side of it goes away too.
  EXPECT_TRUE(eventually([&] { return open_connections_to(mesh.port()) == 0; }));
  ASSERT_TRUE(client.start("r1").ok());
  auto ports = mesh.ports();
  ASSERT_EQ(ports.size(), 2u);
  EXPECT_NE(ports[0], ports[1]) << "a closed connection was not replaced";
}

TEST(mesh_client, connection_closed_by_the_server_is_replaced) {
  recording_mesh mesh{1}; // every answer says `Connection: close`
  mesh_client client{mesh.url(), 5s, 1min};
  ASSERT_TRUE(client.register_agent("reg", registration()).ok());
  for (int i = 0; i < 3; ++i)
    ASSERT_TRUE(client.start("r" + std::to_string(i)).ok());
  EXPECT_EQ(distinct(mesh.ports()).size(), 4u);
}

TEST(mesh_client, concurrent_calls_get_their_own_connections) {
  recording_mesh mesh;
  mesh_client client{mesh.url(), 15s, 1min};
  ASSERT_TRUE(client.register_agent("reg", registration()).ok());
  // Each `start` is answered only when all four are in the server at once,
  // which needs four connections.
  mesh.set_barrier(4);
  std::vector<std::thread> callers;
  std::vector<int> status(4);
  for (int i = 0; i < 4; ++i)
    callers.emplace_back([&, i] {
      status[static_cast<size_t>(i)] = client.start("r" + std::to_string(i)).status;
    });
  for (auto& t : callers)
    t.join();
  EXPECT_EQ(status, (std::vector<int>{200, 200, 200, 200}));
  // Afterwards they are kept for reuse: a fifth call opens none.
  mesh.set_barrier(0);
  auto before = distinct(mesh.ports());
  ASSERT_TRUE(client.start("r5").ok());
  EXPECT_EQ(distinct(mesh.ports()), before);
}

namespace {

/// A mesh whose registrations each make a new session; only the newest
/// session's token is valid. `answers` says how each registration answers
/// (201 by default): 502 makes the session and loses the answer, 401 refuses.
class session_mesh {
public:
  explicit session_mesh(std::map<int, int> answers)
      : answers_(std::move(answers)) {
    svr_.Post(
        "/v1/agents/register", [this](const httplib::Request&, httplib::Response& res) {
          std::lock_guard<std::mutex> g{mtx_};
          int call = ++calls_;
          auto status = answers_.count(call) ? answers_[call] : 201;
          if (status == 401) {
            res.status = 401;
            res.set_content(R"({"error":{"code":"unauthenticated","message":"revoked"}})",
                            "application/json");
            return;
          }
          ++session_;
          ended_ = false;
          res.status = status;
          res.set_content(json{{"id", "a1"},
                               {"session", session_},
                               {"access_token", "tok-" + std::to_string(session_)}}
                              .dump(),
                          "application/json");
        });
    auto refuse_old = [this](const httplib::Request& req, httplib::Response& res) {
      std::lock_guard<std::mutex> g{mtx_};
      if (ended_ || req.get_header_value("Authorization") !=
                        "Bearer tok-" + std::to_string(session_)) {
        res.status = 401;
        res.set_content(R"({"error":{"code":"unauthenticated","message":"ended"}})",
                        "application/json");
        return;
      }
      res.status = 200;
      res.set_content(R"({"runs":[],"cancel":[]})", "application/json");
    };
    svr_.Get("/v1/agents/a1/runs", refuse_old);
    svr_.Post("/v1/agents/a1/token", refuse_old);
    port_ = svr_.bind_to_any_port("127.0.0.1");
    thread_ = std::thread{[this] { svr_.listen_after_bind(); }};
    // A stop before the loop runs is lost, and the join would wait for good.
    eventually([this] { return svr_.is_running(); });
  }
  ~session_mesh() {
    svr_.stop();
    thread_.join();
  }
  session_mesh(const session_mesh&) = delete;
  session_mesh& operator=(const session_mesh&) = delete;

  [[nodiscard]] std::string url() const {
    return "http://127.0.0.1:" + std::to_string(port_);
  }
  /// Ends the current session, as an admin's removal does.
  void end_session() {
    std::lock_guard<std::mutex> g{mtx_};
    ended_ = true;
  }

private:
  httplib::Server svr_;
  std::thread thread_;
  int port_ = 0;
  std::mutex mtx_;
  std::map<int, int> answers_;
  int calls_ = 0;
  int session_ = 0;
  bool ended_ = false;
};

} // namespace

// This test ensures a session change reports the registrations whose answer
// was lost, so a gap they explain is not taken for another agent under our
// name (one lost answer used to make mesh-agent stop with exit 1).
TEST(mesh_client, a_lost_registration_answer_is_counted_in_the_session_change) {
  session_mesh mesh{{{2, 502}}};
  mesh_client client{mesh.url(), 5s};
  std::vector<mesh_client::session_change> changes;
  client.on_session_change([&](const auto& c) { changes.push_back(c); });
  ASSERT_TRUE(client.register_agent("reg", registration()).ok());
  mesh.end_session();
  EXPECT_EQ(client.poll(0).status, 401) << "the second registration's answer was lost";
  EXPECT_TRUE(changes.empty());
  EXPECT_TRUE(client.poll(0).ok());
  ASSERT_EQ(changes.size(), 1u);
  EXPECT_EQ(changes[0].old_session, 1);
  EXPECT_EQ(changes[0].session, 3) << "session 2 was made, its answer lost";
  EXPECT_EQ(changes[0].unanswered, 1);
  EXPECT_FALSE(client.registration_refused());
}

// This test ensures a registration the mesh refuses after our session ended
// (a revoked registration token) is kept for the agent to see.
TEST(mesh_client, a_refused_registration_after_a_session_ends_is_reported) {
  session_mesh mesh{{{2, 401}}};
  mesh_client client{mesh.url(), 5s};
  ASSERT_TRUE(client.register_agent("reg", registration()).ok());
  EXPECT_FALSE(client.registration_refused());
  mesh.end_session();
  EXPECT_EQ(client.poll(0).status, 401);
  auto refused = client.registration_refused();
  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->status, 401);
}

namespace {

/// A logs request as the agent sends it when every byte is a control byte
/// (escaped as six): `chunks` chunks of `chunk_bytes`.
size_t worst_logs_body(size_t chunks, size_t chunk_bytes) {
  polymesh::wire::log_request req;
  for (size_t i = 0; i < chunks; ++i) {
    polymesh::log_chunk c;
    c.seq = INT64_MAX;
    c.data.assign(chunk_bytes, '\x01');
    req.chunks.push_back(std::move(c));
  }
  return polymesh::wire::to_json(req).dump().size();
}

size_t worst_finish_body(size_t result_bytes, size_t error_bytes) {
  polymesh::wire::finish_request req;
  req.status = polymesh::run_status::error;
  req.exit_code = INT32_MIN;
  req.reason = "plan_failed";
  req.result = std::string(result_bytes, '\x01');
  req.error = std::string(error_bytes, '\x02');
  return polymesh::wire::to_json(req).dump().size();
}

} // namespace

// This test ensures the agent recognises meshd's refusal of a report on a
// run another session of the agent started, by its code or, from an older
// meshd, by its words in a `forbidden`, and no other refusal.
TEST(mesh_client, a_run_held_by_another_session_is_told_from_other_refusals) {
  auto reply_to = [](const caf::error& err) {
    http_reply r;
    r.status = polymesh::http_status(polymesh::code_of(err));
    r.body = polymesh::wire::error_body(err);
    r.error = polymesh::message_of(err);
    return r;
  };
  polymesh::run_record run;
  run.id = "run_1";
  run.assigned_agent = "a1";
  run.status = polymesh::run_status::running;
  run.held_session = 1;
  EXPECT_TRUE(
      run_held_by_another_session(reply_to(polymesh::check_holder(run, "a1", 2))));
  EXPECT_FALSE(
      run_held_by_another_session(reply_to(polymesh::check_holder(run, "a2", 2))));
  run.held_session = 0;
  run.status = polymesh::run_status::success;
  EXPECT_FALSE(
      run_held_by_another_session(reply_to(polymesh::check_holder(run, "a1", 2))));
  auto not_found = reply_to(polymesh::make_error(
      polymesh::errc::not_found,
      "run 'run_1' " + std::string{polymesh::other_session_holds_run}));
  EXPECT_FALSE(run_held_by_another_session(not_found));
  EXPECT_FALSE(run_held_by_another_session(http_reply{}));
  auto older_mesh = reply_to(polymesh::make_error(
      polymesh::errc::forbidden, "run 'run_1' " +
                                     std::string{polymesh::other_session_holds_run} +
                                     " (1); this session (2) may not report on it"));
  EXPECT_TRUE(run_held_by_another_session(older_mesh));
}

// This test ensures the agent's default request sizes are kept with meshd's
// default limits.
TEST(mesh_limits, defaults_keep_the_agents_own_sizes) {
  mesh_limits lim;
  EXPECT_EQ(lim.log_chunk_bytes(16384), 16384u);
  EXPECT_EQ(lim.log_bytes_per_request(64, 128 * 1024), 128u * 1024);
  EXPECT_EQ(lim.result_bytes(4000), 64u * 1024);
}

// This test ensures a run's output keeps to the mesh's log limit with room
// for the agent's notes, and a small limit still lets output through: below
// 4 KiB it let none.
TEST(mesh_limits, a_run_logs_below_the_mesh_limit_whatever_its_size) {
  mesh_limits lim;
  EXPECT_EQ(lim.run_log_bytes(), SIZE_MAX) << "0 is no limit";
  lim.max_log_bytes = 1024 * 1024;
  EXPECT_EQ(lim.run_log_bytes(), 1024u * 1024 - 4096);
  lim.max_log_bytes = 8192;
  EXPECT_EQ(lim.run_log_bytes(), 4096u);
  lim.max_log_bytes = 1000;
  EXPECT_EQ(lim.run_log_bytes(), 500u);
  lim.max_log_bytes = 1;
  EXPECT_EQ(lim.run_log_bytes(), 1u);
}

// This test ensures logs requests and results sized by the limits fit the
// mesh's body limit even when every byte must be escaped, and that the
// result keeps to the mesh's result limit.
TEST(mesh_limits, worst_case_requests_fit_the_body_limit) {
  for (size_t body :
       {size_t{1024}, size_t{4096}, size_t{8192}, size_t{65536}, size_t{300000}}) {
    mesh_limits lim;
    lim.max_body_bytes = body;
    lim.max_result_bytes = body - 1;
    auto chunk = lim.log_chunk_bytes(65536);
    ASSERT_GE(chunk, 1u);
    EXPECT_LE(worst_logs_body(1, chunk), body) << "one chunk, body limit " << body;
    auto per_request = lim.log_bytes_per_request(64, 128 * 1024);
    if (per_request >= chunk) {
      auto n = std::min<size_t>(64, per_request / chunk);
      EXPECT_LE(worst_logs_body(n, chunk), body) << n << " chunks, body limit " << body;
    }
    if (per_request > 0) { // else each request takes one chunk
      EXPECT_LE(worst_logs_body(64, per_request / 64), body) << "64 chunks, " << body;
    }
    for (size_t error : {size_t{0}, size_t{100}, size_t{4000}}) {
      auto result = lim.result_bytes(error);
      if (result > 0) {
        EXPECT_LE(worst_finish_body(result, error), body)
            << "result " << result << ", error " << error << ", body limit " << body;
      }
    }
  }
  mesh_limits small_result;
  small_result.max_result_bytes = 2048;
  EXPECT_EQ(small_result.result_bytes(4000), 2048u);
}

// This test ensures an https mesh whose certificate a private CA signed is
// reached with that CA as the client's CA file, and refused (no answer,
// nothing registered, the reason in words) without it: the system's CAs do
// not know it.
TEST(mesh_client, an_https_mesh_is_trusted_through_the_ca_file) {
  char dir[] = "/tmp/polymesh-tls-XXXXXX";
  ASSERT_NE(::mkdtemp(dir), nullptr);
  auto tls = polymesh::test::write_self_signed_cert(dir);
  httplib::SSLServer svr{tls.cert.c_str(), tls.key.c_str()};
  ASSERT_TRUE(svr.is_valid());
  std::atomic<int> registered{0};
  svr.Post("/v1/agents/register", [&](const httplib::Request&, httplib::Response& res) {
    ++registered;
    res.status = 201;
    res.set_content(json{{"id", "a1"}, {"access_token", "tok"}}.dump(),
                    "application/json");
  });
  auto port = svr.bind_to_any_port("127.0.0.1");
  std::thread server{[&] { svr.listen_after_bind(); }};
  ASSERT_TRUE(eventually([&] { return svr.is_running(); }));
  auto url = "https://127.0.0.1:" + std::to_string(port);
  {
    mesh_client untrusted{url, 5s};
    auto r = untrusted.register_agent("reg", registration());
    EXPECT_EQ(r.status, 0) << r.describe();
    EXPECT_EQ(r.describe(),
              "no answer from the mesh: the server's TLS certificate is not trusted");
    EXPECT_EQ(registered, 0);
    mesh_client trusted{url, 5s, connection_linger, tls.cert};
    auto ok = trusted.register_agent("reg", registration());
    EXPECT_TRUE(ok.ok()) << ok.describe();
    EXPECT_EQ(registered, 1);
  }
  svr.stop();
  server.join();
  std::filesystem::remove_all(dir);
}

// This test ensures an artifact is sent from its file as it is read: the
// mesh gets the file's bytes, and a file with fewer bytes than announced
// (cut short while it was sent) fails the call instead of sending less.
TEST(mesh_client, an_artifact_is_sent_from_its_file) {
  httplib::Server svr;
  std::mutex mtx;
  std::map<std::string, std::string> got;
  svr.Post("/v1/agents/register", [](const httplib::Request&, httplib::Response& res) {
    res.status = 201;
    res.set_content(json{{"id", "a1"}, {"access_token", "tok"}}.dump(),
                    "application/json");
  });
  svr.Put(R"(/v1/runs/r1/artifacts/(.+))",
          [&](const httplib::Request& req, httplib::Response& res) {
            std::lock_guard<std::mutex> g{mtx};
            got[req.matches[1].str()] = req.body;
            res.status = 201;
            res.set_content("{}", "application/json");
          });
  auto port = svr.bind_to_any_port("127.0.0.1");
  std::thread server{[&] { svr.listen_after_bind(); }};
  ASSERT_TRUE(eventually([&] { return svr.is_running(); }));
  std::string bytes{"a\0b\xff", 4};
  for (int i = 0; bytes.size() < 300 * 1024; ++i)
    bytes += std::to_string(i * 7919) + '\n';
  char path[] = "/tmp/polymesh-artifact-XXXXXX";
  int fd = ::mkstemp(path);
  ASSERT_GE(fd, 0);
  ::unlink(path);
  ASSERT_EQ(::write(fd, bytes.data(), bytes.size()), static_cast<ssize_t>(bytes.size()));
  {
    mesh_client client{"http://127.0.0.1:" + std::to_string(port), 5s};
    ASSERT_TRUE(client.register_agent("reg", registration()).ok());
    EXPECT_EQ(client.put_artifact("r1", "whole.bin", fd, bytes.size()).status, 201);
    EXPECT_EQ(client.put_artifact("r1", "short.bin", fd, bytes.size() + 10).status, 0);
  }
  ::close(fd);
  svr.stop();
  server.join();
  std::lock_guard<std::mutex> g{mtx};
  EXPECT_TRUE(got["whole.bin"] == bytes) << got["whole.bin"].size() << " bytes arrived";
  EXPECT_EQ(got.count("short.bin"), 0u);
}
