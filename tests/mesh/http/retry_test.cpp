// Automatic retries over real HTTP: which ends make the mesh submit a run
// again, what the retry is, where it goes in the queue, and that a bad
// `retry` is refused.
#include "tests/support/mesh_fixture.hpp"

namespace polymesh::test {
namespace {

using namespace std::chrono_literals;
using retry = mesh_fixture;

std::string id_of(const response& r) {
  return r.body["id"].get<std::string>();
}

// This test ensures a run whose agent deregistered while running it
// (`canceled/agent_shutdown`) is submitted again by the mesh: a new run,
// linked both ways, with the same request but no idempotency key, that
// another agent runs to success; the success is not retried, and
// `/metrics` counts the retry by the end it followed.
TEST_F(retry, a_run_whose_agent_left_while_running_it_is_retried_on_another) {
  auto a = register_agent("a", json{{"env", "dev"}});
  auto sub = submit(json{{"plan", "noop"},
                         {"selector", "env=dev"},
                         {"params", {{"n", 1}}},
                         {"payload", "p"},
                         {"priority", 5},
                         {"timeout_s", 60},
                         {"idempotency_key", "deploy-1"},
                         {"retry", {{"max", 2}}}});
  ASSERT_EQ(sub.status, 201) << sub.raw;
  EXPECT_EQ(
      sub.body["retry"],
      (json{{"max", 2}, {"on", {"agent_lost", "agent_shutdown", "agent_removed"}}}));
  EXPECT_EQ(sub.body["retry_number"], 0);
  EXPECT_TRUE(sub.body["retry_of"].is_null());
  EXPECT_TRUE(sub.body["retried_by"].is_null());
  auto first = id_of(sub);
  ASSERT_EQ(a.take(1).size(), 1u);
  ASSERT_EQ(a.start(first).status, 200);
  auto b = register_agent("b", json{{"env", "dev"}});
  ASSERT_EQ(a.deregister().status, 200);

  ASSERT_TRUE(becomes(first, "canceled"));
  auto ended = get_run(first);
  EXPECT_EQ(ended["reason"], "agent_shutdown");
  ASSERT_TRUE(ended["retried_by"].is_string()) << ended.dump();
  auto second = ended["retried_by"].get<std::string>();
  auto got = b.take(1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0]["id"], second);
  auto r = get_run(second);
  EXPECT_EQ(r["retry_of"], first);
  EXPECT_EQ(r["retry_number"], 1);
  EXPECT_EQ(r["retry"], ended["retry"]);
  for (auto* field : {"plan", "selector", "params", "payload", "priority", "timeout_s"})
    EXPECT_EQ(r[field], ended[field]) << field;
  EXPECT_TRUE(r["idempotency_key"].is_null()) << "the key stays with the run submitted";
  EXPECT_EQ(r["attempts"], 1);
  ASSERT_EQ(b.start(second).status, 200);
  ASSERT_EQ(b.finish(second, "success").status, 200);
  EXPECT_TRUE(get_run(second)["retried_by"].is_null()) << "a success is not retried";
  // A repeated submit still finds the run submitted, which names its retry.
  auto again = submit(json{{"plan", "noop"}, {"idempotency_key", "deploy-1"}});
  EXPECT_EQ(again.status, 200);
  EXPECT_EQ(again.body["retried_by"], second);

  auto text = call("GET", "/metrics", admin).raw;
  EXPECT_EQ(metric_value(text, "polymesh_runs_retried_total{reason=\"agent_shutdown\"}"),
            1)
      << text;
  EXPECT_EQ(metric_value(text, "polymesh_runs_retried_total{reason=\"agent_lost\"}"), 0);
}

// This test ensures a run lost with its agent (offline while running:
// `error/agent_lost`) is retried, and the retry waits in the queue for an
// agent that can take it.
TEST_F(retry, a_run_lost_with_its_agent_is_retried) {
  auto a = register_agent("a", json::object());
  auto first = id_of(submit(json{{"plan", "noop"}, {"retry", {{"max", 1}}}}));
  ASSERT_EQ(a.take(1).size(), 1u);
  ASSERT_EQ(a.start(first).status, 200);
  advance(cfg.offline_after + 1s);
  ASSERT_TRUE(becomes(first, "error"));
  auto ended = get_run(first);
  EXPECT_EQ(ended["reason"], "agent_lost");
  ASSERT_TRUE(ended["retried_by"].is_string()) << ended.dump();
  auto second = ended["retried_by"].get<std::string>();
  EXPECT_EQ(get_run(second)["status"], "created");
  auto b = register_agent("b", json::object());
  auto got = b.take(1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0]["id"], second);
}

// This test ensures retries follow only the ends `on` names and stop after
// `max` along the chain: the plan fails three times, the first two are
// retried, the third is not; a run of the same policy that its agent left
// is not retried either.
TEST_F(retry, retries_follow_the_ends_named_and_stop_at_max) {
  auto a = register_agent("a", json::object());
  json policy{{"max", 2}, {"on", {"plan_failed"}}};
  auto id = id_of(submit(json{{"plan", "noop"}, {"retry", policy}}));
  std::vector<std::string> chain{id};
  for (int i = 0; i < 3; ++i) {
    auto got = a.take(1);
    ASSERT_EQ(got.size(), 1u) << "try " << i;
    ASSERT_EQ(got[0]["id"], chain.back());
    ASSERT_EQ(a.start(chain.back()).status, 200);
    auto fin = a.finish(chain.back(), "error", 1);
    ASSERT_EQ(fin.status, 200) << fin.raw;
    EXPECT_EQ(fin.body["reason"], "plan_failed");
    auto run = get_run(chain.back());
    EXPECT_EQ(run["retry_number"], i);
    if (i < 2) {
      ASSERT_TRUE(run["retried_by"].is_string()) << "try " << i << ": " << run.dump();
      chain.push_back(run["retried_by"].get<std::string>());
      EXPECT_EQ(get_run(chain.back())["retry_of"], run["id"]);
    } else {
      EXPECT_TRUE(run["retried_by"].is_null()) << "max reached: " << run.dump();
    }
  }
  EXPECT_TRUE(a.poll(0).body["runs"].empty());

  auto left = id_of(submit(json{{"plan", "noop"}, {"retry", policy}}));
  ASSERT_EQ(a.take(1).size(), 1u);
  ASSERT_EQ(a.start(left).status, 200);
  ASSERT_EQ(a.deregister().status, 200);
  ASSERT_TRUE(becomes(left, "canceled"));
  EXPECT_TRUE(get_run(left)["retried_by"].is_null()) << "agent_shutdown is not named";
}

// This test ensures a run someone asked to cancel is not retried, even when
// its agent then reports an end `on` names.
TEST_F(retry, a_run_asked_to_cancel_is_not_retried) {
  auto a = register_agent("a", json::object());
  auto id = id_of(
      submit(json{{"plan", "noop"}, {"retry", {{"max", 3}, {"on", {"plan_failed"}}}}}));
  ASSERT_EQ(a.take(1).size(), 1u);
  ASSERT_EQ(a.start(id).status, 200);
  ASSERT_EQ(call("POST", "/v1/runs/" + id + "/cancel", admin).status, 200);
  ASSERT_EQ(a.finish(id, "error", 1).status, 200);
  auto run = get_run(id);
  EXPECT_EQ(run["reason"], "plan_failed");
  EXPECT_TRUE(run["retried_by"].is_null()) << run.dump();
  auto all = call("GET", "/v1/runs", admin);
  EXPECT_EQ(all.body["runs"].size(), 1u) << all.raw;
}

// This test ensures a retry keeps its first run's place in the queue: a
// deploy retried after its agent left goes before a newer deploy of its
// concurrency key, which waits for it, although the newer one was queued
// first and an agent was free when the key was let go.
TEST_F(retry, a_retry_goes_before_newer_runs_of_its_concurrency_key) {
  auto a = register_agent("a", json::object());
  auto older = id_of(submit(
      json{{"plan", "noop"}, {"concurrency_key", "deploy"}, {"retry", {{"max", 1}}}}));
  ASSERT_EQ(a.take(1).size(), 1u);
  ASSERT_EQ(a.start(older).status, 200);
  auto newer = id_of(submit(json{{"plan", "noop"}, {"concurrency_key", "deploy"}}));
  auto b = register_agent("b", json::object(), json::array({"noop"}), 2);
  EXPECT_TRUE(b.poll(0).body["runs"].empty()) << "the newer deploy waits for the key";
  ASSERT_EQ(a.deregister().status, 200);
  ASSERT_TRUE(becomes(older, "canceled"));
  auto retried = get_run(older)["retried_by"];
  ASSERT_TRUE(retried.is_string());
  auto got = b.take(1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0]["id"], retried) << "the retry goes first with the key";
  EXPECT_EQ(get_run(newer)["status"], "created");
  ASSERT_EQ(b.start(retried.get<std::string>()).status, 200);
  ASSERT_EQ(b.finish(retried.get<std::string>(), "success").status, 200);
  got = b.take(1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0]["id"], newer);
}

// This test ensures a retry is stored with the end it follows: after a
// restart it is still there, queued in its first run's place (before a run
// submitted in between), and an agent takes it.
TEST_F(retry, a_retry_is_queued_again_after_a_restart) {
  auto a = register_agent("a", json::object());
  auto first = id_of(submit(json{{"plan", "noop"}, {"retry", {{"max", 1}}}}));
  ASSERT_EQ(a.take(1).size(), 1u);
  ASSERT_EQ(a.start(first).status, 200);
  auto later = id_of(submit(json{{"plan", "noop"}}));
  ASSERT_EQ(a.deregister().status, 200);
  ASSERT_TRUE(becomes(first, "canceled"));
  restart_mesh();
  auto second = get_run(first)["retried_by"];
  ASSERT_TRUE(second.is_string());
  EXPECT_EQ(get_run(second.get<std::string>())["status"], "created");
  auto b = register_agent("b", json::object());
  auto got = b.take(1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0]["id"], second)
      << "before " << later << ", submitted after its first run";
  EXPECT_EQ(get_run(later)["status"], "created");
}

// This test ensures a run for one named agent is not retried once that
// agent left (a retry for it would end `error/expired` at once), neither
// the running run nor the queued one its leaving expired, and is retried
// after a plan failure while its agent is there.
TEST_F(retry, a_run_for_one_agent_is_not_retried_once_that_agent_left) {
  auto a = register_agent("a", json::object());
  json policy{{"max", 3}, {"on", {"agent_shutdown", "expired", "plan_failed"}}};
  auto running = id_of(submit(json{{"plan", "noop"}, {"agent", "a"}, {"retry", policy}}));
  ASSERT_EQ(a.take(1).size(), 1u);
  ASSERT_EQ(a.start(running).status, 200);
  auto queued = id_of(submit(json{{"plan", "noop"}, {"agent", "a"}, {"retry", policy}}));
  ASSERT_EQ(a.deregister().status, 200);
  ASSERT_TRUE(becomes(running, "canceled"));
  ASSERT_TRUE(becomes(queued, "error"));
  EXPECT_EQ(get_run(queued)["reason"], "expired");
  EXPECT_TRUE(get_run(running)["retried_by"].is_null()) << get_run(running).dump();
  EXPECT_TRUE(get_run(queued)["retried_by"].is_null()) << get_run(queued).dump();
  EXPECT_EQ(call("GET", "/v1/runs", admin).body["runs"].size(), 2u);

  auto b = register_agent("b", json::object());
  auto failed = id_of(submit(json{{"plan", "noop"}, {"agent", "b"}, {"retry", policy}}));
  ASSERT_EQ(b.take(1).size(), 1u);
  ASSERT_EQ(b.start(failed).status, 200);
  ASSERT_EQ(b.finish(failed, "error", 1).status, 200);
  auto retried = get_run(failed)["retried_by"];
  ASSERT_TRUE(retried.is_string());
  EXPECT_EQ(get_run(retried.get<std::string>())["target_agent"], "b");
}

// This test ensures a batch item carries its `retry` too.
TEST_F(retry, a_batch_item_carries_its_retry) {
  auto r =
      call("POST", "/v1/runs/batch", admin,
           json{{"runs",
                 {json{{"plan", "noop"}},
                  json{{"plan", "noop"},
                       {"retry", {{"max", 3}, {"on", {"timeout", "agent_lost"}}}}}}}});
  ASSERT_EQ(r.status, 201) << r.raw;
  EXPECT_TRUE(r.body["results"][0]["run"]["retry"].is_null());
  EXPECT_EQ(r.body["results"][1]["run"]["retry"],
            (json{{"max", 3}, {"on", {"agent_lost", "timeout"}}}));
}

// This test ensures a malformed `retry` is a 400 naming the field, and
// stores nothing.
TEST_F(retry, a_malformed_retry_is_refused_naming_the_field) {
  struct bad {
    json retry;
    std::string field;
    std::string says;
  };
  std::vector<bad> cases{
      {2, "retry", "must be an object"},
      {json::object(), "retry.max", "is required"},
      {{{"max", 0}}, "retry.max", "between 1 and 10"},
      {{{"max", 11}}, "retry.max", "between 1 and 10"},
      {{{"max", "2"}}, "retry.max", "must be an integer"},
      {{{"max", 1}, {"on", "agent_lost"}}, "retry.on", "array of strings"},
      {{{"max", 1}, {"on", json::array()}}, "retry.on", "is empty"},
      {{{"max", 1}, {"on", {"agent_lost", "canceled_by_user"}}},
       "retry.on[1]",
       "not an end a retry may follow"},
      {{{"max", 1}, {"on", {"timeout", "timeout"}}}, "retry.on[1]", "a second time"},
      {{{"max", 1}, {"times", 2}}, "retry.times", "unknown"},
  };
  for (auto& c : cases) {
    auto r = submit(json{{"plan", "noop"}, {"retry", c.retry}});
    EXPECT_EQ(r.status, 400) << c.retry.dump() << ": " << r.raw;
    EXPECT_EQ(r.body["error"]["field"], c.field) << c.retry.dump() << ": " << r.raw;
    EXPECT_NE(r.raw.find(c.says), std::string::npos) << c.retry.dump() << ": " << r.raw;
  }
  auto all = call("GET", "/v1/runs", admin);
  EXPECT_TRUE(all.body["runs"].empty()) << all.raw;
}

} // namespace
} // namespace polymesh::test
