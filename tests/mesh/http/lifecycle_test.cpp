// End-to-end run lifecycle over real HTTP against an in-process meshd.
#include "tests/support/mesh_fixture.hpp"

#include <set>
#include <thread>

namespace polymesh::test {
namespace {

using lifecycle = mesh_fixture;

// This test ensures a run submitted over REST reaches a matching agent's
// poll, and start + finish move it to success with every field recorded.
TEST_F(lifecycle, submit_poll_start_finish_succeeds) {
  auto agent = register_agent("web-1", json{{"env", "dev"}});
  auto sub = submit(json{{"plan", "noop"}, {"selector", "env=dev"}, {"payload", "hi"}});
  ASSERT_EQ(sub.status, 201) << sub.raw;
  auto id = sub.body["id"].get<std::string>();
  EXPECT_EQ(sub.body["plan"], "noop");

  auto polled = agent.poll(5);
  ASSERT_EQ(polled.status, 200) << polled.raw;
  ASSERT_EQ(polled.body["runs"].size(), 1u) << polled.raw;
  EXPECT_EQ(polled.body["runs"][0]["id"], id);
  EXPECT_EQ(polled.body["runs"][0]["payload"], "hi");

  ASSERT_EQ(agent.start(id).status, 200);
  EXPECT_EQ(get_run(id)["status"], "running");
  EXPECT_EQ(get_run(id)["skadi_status"], "sent");
  ASSERT_EQ(agent.logs(id, 0, "hello\n").status, 200);
  auto fin = agent.finish(id, "success", 0, "done");
  ASSERT_EQ(fin.status, 200) << fin.raw;
  auto run = get_run(id);
  EXPECT_EQ(run["status"], "success");
  EXPECT_EQ(run["skadi_status"], "succeeded");
  EXPECT_EQ(run["result"], "done");
  EXPECT_EQ(run["exit_code"], 0);
  EXPECT_EQ(run["assigned_agent"], agent.id);
  EXPECT_FALSE(run["finished_at"].is_null());
  auto logs = call("GET", "/v1/runs/" + id + "/logs", admin);
  ASSERT_EQ(logs.status, 200);
  ASSERT_EQ(logs.body["chunks"].size(), 1u);
  EXPECT_EQ(logs.body["chunks"][0]["data"], "hello\n");
  // A repeated finish is idempotent; a different outcome is refused.
  EXPECT_EQ(agent.finish(id, "success").status, 200);
  EXPECT_EQ(agent.finish(id, "error").status, 409);
}

// This test ensures a cancel that crosses the poll carrying the run (its
// answer gone, its delivery not yet recorded) does not end the run as never
// sent: the agent holds it, so the cancel is a request the agent is told of,
// and the run is stored as delivered when that poll carried it. Whichever
// comes first, the run is either carried and cancel-requested, or not carried
// and canceled. (The cancel crosses the poll in about one try in six here;
// 30 tries.)
TEST_F(lifecycle, a_cancel_crossing_the_poll_that_carries_the_run_is_a_request) {
  auto agent = register_agent("a", json::object());
  for (int i = 0; i < 30; ++i) {
    auto id = submit(json{{"plan", "noop"}}).body["id"].get<std::string>();
    ASSERT_TRUE(becomes(id, "pending"));
    response poll;
    std::thread poller{[&] { poll = agent.poll(0); }};
    auto c = call("POST", "/v1/runs/" + id + "/cancel", admin, json::object());
    poller.join();
    ASSERT_EQ(c.status, 200) << c.raw;
    json carried;
    for (auto& r : poll.body["runs"])
      if (r["id"] == id) carried = r;
    if (carried.is_null()) {
      EXPECT_EQ(c.body["status"], "canceled") << c.raw;
      continue;
    }
    EXPECT_EQ(c.body["status"], "pending") << "carried, so sent: " << c.raw;
    EXPECT_EQ(c.body["cancel_requested"], true) << c.raw;
    EXPECT_EQ(c.body["delivered_at"], carried["delivered_at"]) << c.raw;
    ASSERT_EQ(agent.finish(id, "canceled").status, 200)
        << "the agent may still report it";
    EXPECT_EQ(get_run(id)["reason"], "canceled_by_user");
  }
}

} // namespace
} // namespace polymesh::test

namespace polymesh::test {
namespace {

// This test ensures a repeated submit with the same idempotency key answers
// 200 with the first run at once (regression: the repeat hung until the
// request timed out because its actor retired before answering).
TEST_F(lifecycle, idempotent_repeat_answers_with_the_first_run) {
  auto first = submit(json{{"plan", "noop"}, {"idempotency_key", "deploy-42"}});
  ASSERT_EQ(first.status, 201) << first.raw;
  auto repeat = submit(json{{"plan", "noop"}, {"idempotency_key", "deploy-42"}});
  ASSERT_EQ(repeat.status, 200) << repeat.raw;
  EXPECT_EQ(repeat.body["id"], first.body["id"]);
  auto list = call("GET", "/v1/runs", admin);
  EXPECT_EQ(list.body["runs"].size(), 1u);
}

} // namespace
} // namespace polymesh::test

namespace polymesh::test {
namespace {

// This test ensures the run a poll carries shows itself as delivered (sent),
// not as the queued copy taken at assignment.
TEST_F(lifecycle, polled_run_shows_delivered_at) {
  auto agent = register_agent("a", json::object());
  ASSERT_EQ(submit(json{{"plan", "noop"}}).status, 201);
  auto runs = agent.take(1);
  ASSERT_EQ(runs.size(), 1u);
  EXPECT_FALSE(runs[0]["delivered_at"].is_null());
  EXPECT_EQ(runs[0]["skadi_status"], "sent");
}

// This test ensures a delivered run whose cancel was requested before the
// agent started it is not carried again; the agent gets its id in `cancel`.
TEST_F(lifecycle, cancel_requested_unstarted_run_is_not_redelivered) {
  auto agent = register_agent("a", json::object());
  auto id = submit(json{{"plan", "noop"}}).body["id"].get<std::string>();
  ASSERT_EQ(agent.take(1).size(), 1u);
  ASSERT_TRUE(eventually([&] { return get_run(id)["skadi_status"] == "sent"; }));
  auto canceled = call("POST", "/v1/runs/" + id + "/cancel", admin, json::object());
  ASSERT_EQ(canceled.status, 200) << canceled.raw;
  EXPECT_EQ(canceled.body["cancel_requested"], true);
  clock.advance(std::chrono::seconds{3}); // past the redelivery pause
  std::set<std::string> told;
  ASSERT_TRUE(eventually([&] {
    auto p = agent.poll(1);
    EXPECT_EQ(p.body["runs"].size(), 0u) << p.raw;
    for (auto& c : p.body["cancel"])
      told.insert(c.get<std::string>());
    return told.count(id) == 1;
  }));
  ASSERT_EQ(agent.finish(id, "canceled").status, 200);
  EXPECT_EQ(get_run(id)["status"], "canceled");
  EXPECT_EQ(get_run(id)["reason"], "canceled_by_user");
}

} // namespace
} // namespace polymesh::test
