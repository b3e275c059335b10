// Overload: long-polls past the worker pool's headroom are answered 503 at
// once, and the threads kept free still serve every other request.
#include "tests/support/mesh_fixture.hpp"

#include <future>
#include <httplib.h>

namespace polymesh::test {
namespace {

class overload : public mesh_fixture {
protected:
  void configure(mesh_config& c) override { c.http_threads = 8; } // 4 for polls
};

// This test ensures a long-poll beyond the pool's headroom gets 503 with a
// message naming http.threads, while submits are still served.
TEST_F(overload, excess_long_polls_get_503_and_other_requests_still_work) {
  std::vector<scripted_agent> agents;
  for (int i = 0; i < 5; ++i)
    agents.push_back(
        register_agent("a" + std::to_string(i), json::object(), json::array({"other"})));
  std::vector<std::future<response>> waiting;
  for (int i = 0; i < 4; ++i)
    waiting.push_back(
        std::async(std::launch::async, [&, i] { return agents[i].poll(30); }));
  ASSERT_TRUE(eventually([&] {
    auto ready = call("GET", "/readyz", admin);
    return ready.body["http"]["long_polls"] == 4 &&
           ready.body["http"]["long_polls_max"] == 4;
  }));
  auto refused = agents[4].poll(30);
  ASSERT_EQ(refused.status, 503) << refused.raw;
  EXPECT_EQ(refused.body["error"]["code"], "unavailable");
  EXPECT_NE(refused.body["error"]["message"].get<std::string>().find("http.threads"),
            std::string::npos);
  EXPECT_EQ(agents[4].poll(0).status, 200)
      << "a poll that does not wait is always served";
  EXPECT_EQ(submit(json{{"plan", "noop"}}).status, 201);
  // Work for one waiting agent wakes its poll and frees its thread.
  ASSERT_EQ(submit(json{{"plan", "other"}, {"agent", "a0"}}).status, 201);
  EXPECT_EQ(waiting[0].get().body["runs"].size(), 1u);
  EXPECT_TRUE(eventually([&] { return agents[4].poll(1).status == 200; }));
  node_->begin_shutdown(); // answers the other waiting polls
  for (size_t i = 1; i < waiting.size(); ++i)
    EXPECT_EQ(waiting[i].get().status, 200);
}

/// `n` GET /healthz on one keep-alive connection; each answer's
/// `Connection` header ("" when absent).
std::vector<std::string> connection_headers(int port, int n, std::string* keep_alive) {
  httplib::Client cli{"127.0.0.1", port};
  cli.set_keep_alive(true);
  std::vector<std::string> out;
  for (int i = 0; i < n; ++i) {
    auto res = cli.Get("/healthz");
    if (!res) {
      out.push_back("no answer: " + httplib::to_string(res.error()));
      continue;
    }
    if (i == 0 && keep_alive) *keep_alive = res->get_header_value("Keep-Alive");
    out.push_back(res->get_header_value("Connection"));
  }
  return out;
}

class keep_alive_default : public mesh_fixture {};

// This test ensures a keep-alive client is not reconnected every few
// requests: the HTTP library's own default closes after 5.
TEST_F(keep_alive_default, a_connection_serves_100_requests) {
  std::string header;
  auto got = connection_headers(port, 12, &header);
  EXPECT_EQ(header, "timeout=2, max=100");
  for (size_t i = 0; i < got.size(); ++i)
    EXPECT_EQ(got[i], "") << "answer " << i + 1;
}

class keep_alive_limited : public mesh_fixture {
protected:
  void configure(mesh_config& c) override { c.keep_alive_max_requests = 3; }
};

// This test ensures http.keep_alive_max_requests closes a connection after
// that many answers, and the client's next connection is served again.
TEST_F(keep_alive_limited, the_last_answer_closes_the_connection) {
  auto got = connection_headers(port, 5, nullptr);
  ASSERT_EQ(got.size(), 5u);
  EXPECT_EQ(got[0], "");
  EXPECT_EQ(got[1], "");
  EXPECT_EQ(got[2], "close");
  EXPECT_EQ(got[3], "");
  EXPECT_EQ(got[4], "");
}

} // namespace
} // namespace polymesh::test
