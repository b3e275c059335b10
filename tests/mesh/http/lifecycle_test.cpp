// End-to-end run lifecycle over real HTTP against an in-process meshd.
#include "tests/support/mesh_fixture.hpp"

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
