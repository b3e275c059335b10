// `GET /metrics` over real HTTP: who may read it, and that its counters
// follow what happened to runs, agents, requests and the store.
#include "mesh/domain/log.hpp"
#include "tests/support/mesh_fixture.hpp"

#include <memory>
#include <mutex>
#include <vector>

namespace polymesh::test {
namespace {

using metrics = mesh_fixture;

// This test ensures users' tokens (a reader's too) may read the metrics and
// agent or registration tokens and callers without a token may not.
TEST_F(metrics, readers_may_read_them_and_agents_may_not) {
  auto reader = make_token("reader");
  auto ok = call("GET", "/metrics", reader);
  ASSERT_EQ(ok.status, 200) << ok.raw;
  EXPECT_EQ(ok.headers["Content-Type"], "text/plain; version=0.0.4; charset=utf-8");
  EXPECT_NE(ok.raw.find("# TYPE polymesh_runs gauge\n"), std::string::npos) << ok.raw;
  EXPECT_EQ(call("GET", "/metrics", {}).status, 401);
  EXPECT_EQ(call("GET", "/metrics", make_token("registration")).status, 403);
  auto agent = register_agent("a", json::object());
  EXPECT_EQ(call("GET", "/metrics", agent.token).status, 403);
  EXPECT_EQ(call("GET", "/metrics?x=1", reader).status, 400) << "unknown parameter";
}

// This test ensures the counters follow a run's life: submits (single and
// batch), its end by status and reason, its wait, the requests that carried
// it, the store's commits, and the agent and run gauges.
TEST_F(metrics, counters_follow_runs_requests_and_the_store) {
  auto agent = register_agent("web-1", json{{"env", "dev"}});
  auto sub = submit(json{{"plan", "noop"}, {"selector", "env=dev"}});
  ASSERT_EQ(sub.status, 201) << sub.raw;
  auto id = sub.body["id"].get<std::string>();
  auto batch =
      call("POST", "/v1/runs/batch", admin,
           json{{"runs", json::array({json{{"plan", "other"}, {"ttl_s", 60}},
                                      json{{"plan", "other"}, {"ttl_s", 60}}})}});
  ASSERT_EQ(batch.status, 201) << batch.raw;
  auto queued = batch.body["results"][0]["run"]["id"].get<std::string>();
  ASSERT_EQ(agent.take(1).size(), 1u);
  advance(std::chrono::seconds{2});
  ASSERT_EQ(agent.start(id).status, 200);
  advance(std::chrono::seconds{3});
  ASSERT_EQ(agent.finish(id, "error", 3).status, 200);
  ASSERT_EQ(call("POST", "/v1/runs/" + queued + "/cancel", admin).status, 200);
  ASSERT_EQ(call("GET", "/v1/runs/nope", admin).status, 404);
  ASSERT_EQ(call("GET", "/v1/nowhere", admin).status, 404);
  // A fixed path asked with another method reaches no endpoint either.
  ASSERT_EQ(call("GET", "/v1/runs/batch", admin).status, 405);

  // A canceled queued run ends through its actor: wait until it is stored.
  ASSERT_TRUE(becomes(queued, "canceled"));
  auto m = call("GET", "/metrics", admin);
  ASSERT_EQ(m.status, 200) << m.raw;
  auto& t = m.raw;
  EXPECT_EQ(metric_value(t, "polymesh_runs_submitted_total"), 3) << t;
  EXPECT_EQ(metric_value(
                t, "polymesh_runs_ended_total{status=\"error\",reason=\"plan_failed\"}"),
            1)
      << t;
  EXPECT_EQ(
      metric_value(t, "polymesh_runs_ended_total{status=\"canceled\",reason=\"canceled_"
                      "by_user\"}"),
      1)
      << t;
  // The run waited 2 s (manual clock) before it started, and ran 3 s.
  EXPECT_EQ(metric_value(t, "polymesh_run_wait_seconds_count"), 1) << t;
  EXPECT_EQ(metric_value(t, "polymesh_run_wait_seconds_sum"), 2) << t;
  EXPECT_EQ(metric_value(t, "polymesh_run_duration_seconds_sum"), 3) << t;
  EXPECT_EQ(metric_value(t, "polymesh_runs{status=\"error\"}"), 1) << t;
  EXPECT_EQ(metric_value(t, "polymesh_runs{status=\"created\"}"), 1) << t;
  EXPECT_EQ(metric_value(t, "polymesh_agents{status=\"online\"}"), 1) << t;
  EXPECT_EQ(
      metric_value(t, "polymesh_http_requests_total{method=\"POST\",route=\"/v1/runs\","
                      "code=\"201\"}"),
      1)
      << t;
  EXPECT_EQ(metric_value(t,
                         "polymesh_http_requests_total{method=\"POST\",route=\"/v1/runs/"
                         "batch\",code=\"201\"}"),
            1)
      << t;
  EXPECT_EQ(metric_value(t,
                         "polymesh_http_requests_total{method=\"GET\",route=\"/v1/runs/"
                         "{id}\",code=\"404\"}"),
            1)
      << t;
  EXPECT_EQ(
      metric_value(
          t, "polymesh_http_requests_total{method=\"\",route=\"other\",code=\"404\"}"),
      1)
      << t;
  EXPECT_EQ(
      metric_value(
          t, "polymesh_http_requests_total{method=\"\",route=\"other\",code=\"405\"}"),
      1)
      << t;
  EXPECT_EQ(t.find("route=\"/v1/runs/{id}\",code=\"405\""), std::string::npos) << t;
  EXPECT_EQ(metric_value(t,
                         "polymesh_http_request_duration_seconds_count{method=\"POST\","
                         "route=\"/v1/runs/{id}/finish\"}"),
            1)
      << t;
  EXPECT_GE(metric_value(t, "polymesh_store_commits_total"), 5) << t;
  EXPECT_EQ(metric_value(t, "polymesh_store_commit_failures_total"), 0) << t;
  EXPECT_EQ(metric_value(t, "polymesh_store_healthy"), 1) << t;
  EXPECT_GT(metric_value(t, "process_resident_memory_bytes"), 0) << t;
  EXPECT_NE(t.find("polymesh_build_info{version=\""), std::string::npos) << t;
}

// This test ensures a failing store shows in the metrics: the failed commit
// is counted and `polymesh_store_healthy` drops to 0.
TEST_F(metrics, a_failing_store_is_counted) {
  auto sub = submit(json{{"plan", "noop"}, {"ttl_s", 60}});
  ASSERT_EQ(sub.status, 201) << sub.raw;
  auto id = sub.body["id"].get<std::string>();
  exec_sql(dir + "/mesh.db", "CREATE TRIGGER refuse BEFORE UPDATE ON runs BEGIN SELECT "
                             "RAISE(ABORT, 'refused by test'); END;");
  EXPECT_GE(call("POST", "/v1/runs/" + id + "/cancel", admin).status, 500);
  auto t = call("GET", "/metrics", admin).raw;
  EXPECT_GE(metric_value(t, "polymesh_store_commit_failures_total"), 1) << t;
  EXPECT_EQ(metric_value(t, "polymesh_store_healthy"), 0) << t;
}

// This test ensures a retention prune that fails is counted and logged as a
// warning, that the log says so again once pruning works, and that pruned
// runs are counted.
TEST_F(metrics, retention_counts_pruned_runs_and_logs_failed_prunes) {
  std::vector<std::string> warnings;
  std::mutex mtx;
  set_log_handler([&](log_level level, const std::string& text) {
    std::lock_guard<std::mutex> guard{mtx};
    if (text.rfind("retention:", 0) == 0)
      warnings.push_back(std::string{to_string(level)} + " " + text);
  });
  auto restore = std::shared_ptr<void>{nullptr, [](void*) { set_log_handler(nullptr); }};
  auto agent = register_agent("a", json::object());
  auto id = submit(json{{"plan", "noop"}}).body["id"].get<std::string>();
  ASSERT_EQ(agent.take(1).size(), 1u);
  ASSERT_EQ(agent.start(id).status, 200);
  ASSERT_EQ(agent.finish(id, "success").status, 200);
  clock.advance(cfg.retention + std::chrono::seconds{1});
  exec_sql(dir + "/mesh.db", "CREATE TRIGGER refuse BEFORE DELETE ON runs BEGIN SELECT "
                             "RAISE(ABORT, 'refused by test'); END;");
  EXPECT_EQ(node_->prune_once(), 0u);
  EXPECT_EQ(node_->prune_once(), 0u);
  auto t = call("GET", "/metrics", admin).raw;
  EXPECT_EQ(metric_value(t, "polymesh_retention_failures_total"), 2) << t;
  EXPECT_EQ(metric_value(t, "polymesh_runs_pruned_total"), 0) << t;
  EXPECT_EQ(call("GET", "/v1/runs/" + id, admin).status, 200)
      << "a failed prune deletes nothing";

  exec_sql(dir + "/mesh.db", "DROP TRIGGER refuse;");
  EXPECT_EQ(node_->prune_once(), 1u);
  t = call("GET", "/metrics", admin).raw;
  EXPECT_EQ(metric_value(t, "polymesh_retention_failures_total"), 2) << t;
  EXPECT_EQ(metric_value(t, "polymesh_runs_pruned_total"), 1) << t;
  std::lock_guard<std::mutex> guard{mtx};
  ASSERT_EQ(warnings.size(), 3u) << ::testing::PrintToString(warnings);
  EXPECT_EQ(warnings[0].rfind("warn retention: pruning finished runs failed (1 time,", 0),
            0u)
      << warnings[0];
  EXPECT_NE(warnings[0].find("refused by test"), std::string::npos) << warnings[0];
  EXPECT_EQ(warnings[1].rfind("warn retention: pruning finished runs failed (2 times", 0),
            0u)
      << warnings[1];
  EXPECT_EQ(warnings[2], "info retention: pruning works again after 2 failed attempts");
}

} // namespace
} // namespace polymesh::test
