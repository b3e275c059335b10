// meshd killed with SIGKILL while clients submit runs concurrently: after a
// restart every run that got a 201 exists, none is duplicated, none is stuck.
#include "tests/support/mesh_fixture.hpp"
#include "tests/support/meshd_process.hpp"

#include <atomic>
#include <csignal>
#include <map>
#include <mutex>
#include <set>
#include <sys/wait.h>

namespace polymesh::test {
namespace {

constexpr const char* admin = "crash-test-admin-token-0123456789";

struct ledger {
  std::mutex mtx;
  /// idempotency key -> run id, for every 201 or 200 answer.
  std::map<std::string, std::string> acked;
  /// keys sent whose answer never came (in flight at the kill).
  std::set<std::string> unanswered;
};

// This test ensures that no acknowledged run is lost or duplicated when
// meshd dies by SIGKILL under concurrent submits, and that after a restart
// every run can still be driven to success.
TEST(crash, sigkill_under_concurrent_submits_loses_nothing_acknowledged) {
  auto dir = make_temp_dir();
  auto mesh = std::make_unique<meshd_process>(MESHD_PATH, dir, admin);
  auto tok = call(mesh->port(), "POST", "/v1/tokens", admin,
                  json{{"kind", "submitter"}, {"name", "crash clients"}});
  ASSERT_EQ(tok.status, 201) << tok.raw;
  auto submitter = tok.body["token"].get<std::string>();

  ledger book;
  std::atomic<bool> dead{false};
  std::atomic<int> acks{0};
  std::vector<std::thread> clients;
  int port = mesh->port();
  for (int c = 0; c < 4; ++c)
    clients.emplace_back([&, c] {
      for (int n = 0; !dead; ++n) {
        auto key = "client-" + std::to_string(c) + "-" + std::to_string(n);
        auto r = call(port, "POST", "/v1/runs", submitter,
                      json{{"plan", "noop"}, {"idempotency_key", key}});
        std::lock_guard<std::mutex> guard{book.mtx};
        if (r.status == 201 || r.status == 200) {
          book.acked[key] = r.body["id"].get<std::string>();
          ++acks;
        } else {
          book.unanswered.insert(key);
          return; // the mesh is gone
        }
      }
    });
  ASSERT_TRUE(eventually([&] { return acks >= 400; }, std::chrono::seconds{60}));
  auto status = mesh->kill_and_wait(SIGKILL);
  dead = true;
  for (auto& t : clients)
    t.join();
  ASSERT_TRUE(WIFSIGNALED(status));

  mesh = std::make_unique<meshd_process>(MESHD_PATH, dir, admin);
  port = mesh->port();
  // Every acknowledged run is there, exactly as acknowledged.
  for (auto& [key, id] : book.acked) {
    auto r = call(port, "GET", "/v1/runs/" + id, admin);
    ASSERT_EQ(r.status, 200) << "acknowledged run " << id << " (" << key << ") is lost";
    EXPECT_EQ(r.body["idempotency_key"], key);
  }
  // A client retrying an unanswered submit gets one run, never a second.
  for (auto& key : book.unanswered) {
    auto r = call(port, "POST", "/v1/runs", submitter,
                  json{{"plan", "noop"}, {"idempotency_key", key}});
    ASSERT_TRUE(r.status == 200 || r.status == 201) << r.raw;
    book.acked[key] = r.body["id"].get<std::string>();
  }
  // Count every stored run: exactly one per key.
  std::set<std::string> keys;
  std::string cursor;
  size_t total = 0;
  do {
    auto page =
        call(port, "GET",
             "/v1/runs?limit=1000" + (cursor.empty() ? "" : "&cursor=" + cursor), admin);
    ASSERT_EQ(page.status, 200) << page.raw;
    for (auto& r : page.body["runs"]) {
      ++total;
      EXPECT_TRUE(keys.insert(r["idempotency_key"].get<std::string>()).second)
          << "duplicate run for key " << r["idempotency_key"];
    }
    cursor = page.body["next_cursor"].is_null()
                 ? ""
                 : page.body["next_cursor"].get<std::string>();
  } while (!cursor.empty());
  EXPECT_EQ(total, book.acked.size());

  // None is stuck: one agent with many slots drives every run to success.
  auto reg = call(port, "POST", "/v1/tokens", admin,
                  json{{"kind", "registration"}, {"name", "r"}});
  auto agent =
      call(port, "POST", "/v1/agents/register", reg.body["token"].get<std::string>(),
           json{{"name", "drainer"}, {"plans", {"noop"}}, {"capacity", 64}});
  ASSERT_EQ(agent.status, 201) << agent.raw;
  scripted_agent a{port, agent.body["id"], "drainer", agent.body["access_token"]};
  size_t finished = 0;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds{120};
  while (finished < total && std::chrono::steady_clock::now() < deadline) {
    auto polled = a.poll(1);
    ASSERT_EQ(polled.status, 200) << polled.raw;
    for (auto& r : polled.body["runs"]) {
      auto id = r["id"].get<std::string>();
      ASSERT_EQ(a.start(id).status, 200);
      ASSERT_EQ(a.finish(id, "success").status, 200);
      ++finished;
    }
  }
  EXPECT_EQ(finished, total);
  auto left = call(port, "GET", "/v1/runs?status=created&limit=1", admin);
  EXPECT_EQ(left.body["runs"].size(), 0u);
  mesh.reset();
  remove_tree(dir);
}

} // namespace
} // namespace polymesh::test
