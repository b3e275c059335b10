// Assignment as seen over HTTP: priority order, FIFO, no head-of-line
// blocking, spreading, capacity, and the long-poll waking on a submit.
#include "routines/assignment/assigner.hpp"
#include "tests/support/mesh_fixture.hpp"

#include <atomic>
#include <chrono>
#include <future>
#include <map>

namespace polymesh::test {
namespace {

using assignment = mesh_fixture;
using std::chrono::steady_clock;

std::string id_of(const response& r) {
  return r.body.value("id", "");
}

/// Takes one run, starts and finishes it; returns its id ("" if none came).
std::string run_one(const scripted_agent& agent) {
  auto got = agent.take(1);
  if (got.size() != 1) return {};
  auto id = got[0]["id"].get<std::string>();
  EXPECT_EQ(agent.start(id).status, 200);
  EXPECT_EQ(agent.finish(id, "success").status, 200);
  return id;
}

// This test ensures a long-poll waiting for work returns within a second of
// the submit's 201 carrying the run, rather than waiting out `wait`.
TEST_F(assignment, long_poll_returns_promptly_after_a_submit) {
  auto agent = register_agent("waiter", json::object());
  ASSERT_EQ(agent.poll(0).status, 200);
  auto submitter = make_token("submitter");
  std::atomic<bool> polling{false};
  auto waiting = std::async(std::launch::async, [&] {
    polling = true;
    auto r = agent.poll(10);
    return std::make_pair(r, steady_clock::now());
  });
  ASSERT_TRUE(eventually([&] { return polling.load(); }));
  auto poll_began = steady_clock::now();
  auto sub = submit(json{{"plan", "noop"}}, submitter);
  auto created = steady_clock::now();
  ASSERT_EQ(sub.status, 201) << sub.raw;
  auto [r, returned] = waiting.get();
  ASSERT_EQ(r.status, 200) << r.raw;
  ASSERT_EQ(r.body["runs"].size(), 1u) << "the poll timed out empty: " << r.raw;
  EXPECT_EQ(r.body["runs"][0]["id"], id_of(sub));
  EXPECT_LT(returned - created, std::chrono::seconds{1});
  EXPECT_LT(returned - poll_began, std::chrono::seconds{9})
      << "the poll waited out `wait`";
  // The delivery mark is stored right after the poll carried the run.
  EXPECT_TRUE(eventually([&] { return !get_run(id_of(sub))["delivered_at"].is_null(); }));
}

// This test ensures a long-poll with nothing to deliver waits and returns
// an empty list, and `wait` is capped by `poll_wait_max`.
TEST_F(assignment, empty_long_poll_returns_empty_after_wait) {
  auto agent = register_agent("idle", json::object());
  auto began = steady_clock::now();
  auto r = agent.poll(1);
  ASSERT_EQ(r.status, 200) << r.raw;
  EXPECT_TRUE(r.body["runs"].empty());
  EXPECT_TRUE(r.body["cancel"].empty());
  EXPECT_GE(steady_clock::now() - began, std::chrono::milliseconds{900});
}

// This test ensures higher priority runs are assigned first and FIFO holds
// within a priority.
TEST_F(assignment, priority_first_then_fifo) {
  std::vector<std::pair<int, std::string>> order;
  for (int prio : {0, 10, 5, 10, 0, 5}) {
    auto r = submit(json{{"plan", "noop"}, {"priority", prio}});
    ASSERT_EQ(r.status, 201);
    order.emplace_back(prio, id_of(r));
  }
  std::vector<std::string> expected{order[1].second, order[3].second, order[2].second,
                                    order[5].second, order[0].second, order[4].second};
  auto agent = register_agent("serial", json::object());
  std::vector<std::string> got;
  for (size_t i = 0; i < expected.size(); ++i)
    got.push_back(run_one(agent));
  EXPECT_EQ(got, expected);
}

// This test ensures a run nobody can take does not block runs behind it,
// even with a higher priority.
TEST_F(assignment, no_head_of_line_blocking) {
  auto blocked =
      id_of(submit(json{{"plan", "noop"}, {"selector", "gpu"}, {"priority", 100}}));
  auto other_plan = id_of(submit(json{{"plan", "missing"}, {"priority", 50}}));
  auto free = id_of(submit(json{{"plan", "noop"}}));
  auto agent = register_agent("cpu-only", json{{"cores", "4"}});
  auto got = agent.take(1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0]["id"], free);
  EXPECT_EQ(get_run(blocked)["status"], "created");
  EXPECT_EQ(get_run(other_plan)["status"], "created");
}

// This test ensures runs are spread across matching agents rather than
// piled on one.
TEST_F(assignment, load_is_spread_over_matching_agents) {
  auto a = register_agent("spread-a", json::object(), json::array({"noop"}), 4);
  auto b = register_agent("spread-b", json::object(), json::array({"noop"}), 4);
  std::vector<std::string> ids;
  for (int i = 0; i < 4; ++i)
    ids.push_back(id_of(submit(json{{"plan", "noop"}})));
  ASSERT_TRUE(eventually([&] {
    for (auto& id : ids)
      if (get_run(id)["status"] != "pending") return false;
    return true;
  }));
  std::map<std::string, int> per_agent;
  for (auto& id : ids)
    ++per_agent[get_run(id)["assigned_agent"].get<std::string>()];
  EXPECT_EQ(per_agent[a.id], 2);
  EXPECT_EQ(per_agent[b.id], 2);
}

// This test ensures an agent never holds more unfinished runs than its
// capacity, and a freed slot is refilled at once.
TEST_F(assignment, capacity_is_never_exceeded) {
  auto agent = register_agent("two-slots", json::object(), json::array({"noop"}), 2);
  std::vector<std::string> ids;
  for (int i = 0; i < 5; ++i)
    ids.push_back(id_of(submit(json{{"plan", "noop"}})));
  auto got = agent.take(2);
  ASSERT_EQ(got.size(), 2u);
  for (auto& r : got)
    ASSERT_EQ(agent.start(r["id"].get<std::string>()).status, 200);
  tick();
  auto more = agent.poll(1);
  ASSERT_EQ(more.status, 200);
  EXPECT_TRUE(more.body["runs"].empty()) << more.raw;
  auto count = [&](const char* status) {
    return call("GET", std::string{"/v1/runs?status="} + status, admin)
        .body["runs"]
        .size();
  };
  EXPECT_EQ(count("running"), 2u);
  EXPECT_EQ(count("pending"), 0u);
  EXPECT_EQ(count("created"), 3u);
  auto readyz = call("GET", "/readyz", admin);
  EXPECT_EQ(readyz.body["runs"]["created"], 3);

  ASSERT_EQ(agent.finish(got[0]["id"].get<std::string>(), "success").status, 200);
  auto next = agent.take(1);
  ASSERT_EQ(next.size(), 1u);
  EXPECT_EQ(next[0]["id"], ids[2]) << "FIFO refill";
  // A poll may carry a run one group commit before `pending` is durable
  // (architecture.md, "Submit"); the start waits for it, so after its 200
  // the store shows the refill.
  ASSERT_EQ(agent.start(ids[2]).status, 200);
  EXPECT_EQ(count("created"), 2u);
  EXPECT_EQ(count("running"), 2u);
}

// This test ensures a run naming an agent (Skadi style) goes only to that
// agent, and naming an offline agent is 409.
TEST_F(assignment, named_agent_gets_the_run) {
  auto a = register_agent("named-a", json::object(), json::array({"noop"}), 4);
  auto b = register_agent("named-b", json::object(), json::array({"noop"}), 4);
  auto r = submit(json{{"plan", "noop"}, {"agent", "named-b"}});
  ASSERT_EQ(r.status, 201) << r.raw;
  auto got = b.take(1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0]["id"], id_of(r));
  EXPECT_TRUE(a.poll(0).body["runs"].empty());
  ASSERT_EQ(a.deregister().status, 200);
  auto gone = submit(json{{"plan", "noop"}, {"agent", "named-a"}});
  EXPECT_EQ(gone.status, 409) << gone.raw;
  EXPECT_EQ(gone.body["error"]["field"], "agent");
}

// This test ensures a run naming an online agent that does not offer its
// plan, or whose labels its selector refuses, is refused with 409 naming
// the problem, and nothing is stored; one that fits is accepted.
TEST_F(assignment, a_named_agent_that_cannot_take_the_run_is_refused_at_submit) {
  auto a =
      register_agent("named-a", json{{"env", "dev"}}, json::array({"noop", "shell"}));
  auto stored = [&] { return call("GET", "/v1/runs", admin).body["runs"].size(); };
  auto before = stored();
  auto no_plan = submit(json{{"plan", "deploy"}, {"agent", "named-a"}});
  EXPECT_EQ(no_plan.status, 409) << no_plan.raw;
  EXPECT_EQ(no_plan.body["error"]["field"], "plan");
  EXPECT_EQ(no_plan.body["error"]["message"],
            "agent 'named-a' does not offer plan 'deploy' (it offers: noop, shell)");
  auto wrong_env =
      submit(json{{"plan", "noop"}, {"agent", "named-a"}, {"selector", "env=prod"}});
  EXPECT_EQ(wrong_env.status, 409) << wrong_env.raw;
  EXPECT_EQ(wrong_env.body["error"]["field"], "selector");
  EXPECT_EQ(wrong_env.body["error"]["message"],
            "agent 'named-a' does not meet the selector's requirement env=prod");
  auto batch =
      call("POST", "/v1/runs/batch", admin,
           json{{"runs", json::array({json{{"plan", "deploy"}, {"agent", "named-a"}}})}});
  EXPECT_EQ(batch.status, 409) << batch.raw;
  EXPECT_EQ(batch.body["error"]["field"], "runs[0].plan");
  EXPECT_EQ(stored(), before) << "a refused run is not stored";
  auto fits =
      submit(json{{"plan", "shell"}, {"agent", "named-a"}, {"selector", "env=dev"}});
  ASSERT_EQ(fits.status, 201) << fits.raw;
  auto got = a.take(1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0]["id"], id_of(fits));
}

// This test ensures a new kind of run reaches an eligible agent that its
// class's first ranking step did not look at: the routine keeps ranking in
// steps until it has looked at every agent of the plan.
TEST_F(assignment, new_kind_of_run_reaches_an_agent_beyond_the_first_ranking_step) {
  // Agents with two free slots rank ahead of the one with one, so the first
  // step looks only at agents the selector refuses.
  auto wide = static_cast<int>(assigner::default_rank_step) + 1;
  for (int i = 0; i < wide; ++i)
    (void)register_agent("wide-" + std::to_string(i), json{{"env", "dev"}},
                         json::array({"noop"}), 2);
  auto narrow = register_agent("narrow", json{{"env", "prod"}});
  auto sub = submit(json{{"plan", "noop"}, {"selector", "env=prod"}});
  ASSERT_EQ(sub.status, 201) << sub.raw;
  auto got = narrow.take(1);
  ASSERT_EQ(got.size(), 1u) << "the run never reached the only eligible agent";
  EXPECT_EQ(got[0]["id"], id_of(sub));
}

// This test ensures runs sharing a concurrency key run one at a time, in
// FIFO order, while a run without a key uses the free slots meanwhile;
// explain names the run holding the key, and the run shows its key.
TEST_F(assignment, runs_with_one_concurrency_key_run_one_at_a_time) {
  auto agent = register_agent("four-slots", json::object(), json::array({"noop"}), 4);
  std::vector<std::string> keyed;
  for (int i = 0; i < 3; ++i) {
    auto r = submit(json{{"plan", "noop"}, {"concurrency_key", "tf:prod"}});
    ASSERT_EQ(r.status, 201) << r.raw;
    EXPECT_EQ(r.body["concurrency_key"], "tf:prod");
    keyed.push_back(id_of(r));
  }
  auto free = id_of(submit(json{{"plan", "noop"}}));
  EXPECT_TRUE(get_run(free)["concurrency_key"].is_null());
  auto got = agent.take(2);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0]["id"], keyed[0]);
  EXPECT_EQ(got[1]["id"], free);
  ASSERT_EQ(agent.start(keyed[0]).status, 200);
  tick();
  EXPECT_TRUE(agent.poll(0).body["runs"].empty()) << "two slots are free, the key is not";
  EXPECT_EQ(get_run(keyed[1])["status"], "created");
  auto why = call("GET", "/v1/runs/" + keyed[1] + "/explain", admin);
  ASSERT_EQ(why.status, 200) << why.raw;
  ASSERT_EQ(why.body["agents"].size(), 1u) << why.raw;
  EXPECT_EQ(why.body["agents"][0]["reason"],
            "concurrency key tf:prod is held by run " + keyed[0]);
  EXPECT_EQ(
      why.body["waiting_for"],
      (json{{"run", keyed[0]}, {"concurrency_key", "tf:prod"}, {"holds_key", true}}));
  EXPECT_EQ(why.body["message"],
            "waits for run " + keyed[0] + ", which holds concurrency key tf:prod");
  EXPECT_TRUE(
      call("GET", "/v1/runs/" + free + "/explain", admin).body["waiting_for"].is_null());

  auto listed = call("GET", "/v1/runs?concurrency_key=tf:prod&status=created", admin);
  ASSERT_EQ(listed.status, 200) << listed.raw;
  ASSERT_EQ(listed.body["runs"].size(), 2u) << listed.raw;
  EXPECT_EQ(listed.body["runs"][0]["id"], keyed[2]);
  EXPECT_EQ(listed.body["runs"][1]["id"], keyed[1]);
  auto empty = call("GET", "/v1/runs?concurrency_key=", admin);
  EXPECT_EQ(empty.status, 400) << empty.raw;
  EXPECT_EQ(empty.body["error"]["field"], "concurrency_key") << empty.raw;

  ASSERT_EQ(agent.finish(keyed[0], "success").status, 200);
  auto next = agent.take(1);
  ASSERT_EQ(next.size(), 1u);
  EXPECT_EQ(next[0]["id"], keyed[1]);
  // A run that ends without starting (canceled while pending) frees it too.
  ASSERT_EQ(call("POST", "/v1/runs/" + keyed[1] + "/cancel", admin).status, 200);
  ASSERT_EQ(agent.finish(keyed[1], "canceled").status, 200);
  auto last = agent.take(1);
  ASSERT_EQ(last.size(), 1u);
  EXPECT_EQ(last[0]["id"], keyed[2]);
}

// This test ensures a run of a concurrency key waits for the key's earlier
// run even when another agent could take it at once, and explain says whom
// it waits for: the agents of the first run busy, a later run went first.
TEST_F(assignment, a_free_key_goes_to_its_first_run_whichever_agent_is_free) {
  auto zone_a = register_agent("zone-a", json{{"zone", "a"}}, json::array({"noop"}), 1);
  auto zone_b = register_agent("zone-b", json{{"zone", "b"}}, json::array({"noop"}), 1);
  auto busy = id_of(submit(json{{"plan", "noop"}, {"selector", "zone=a"}}));
  ASSERT_EQ(zone_a.take(1).size(), 1u);
  auto first = id_of(
      submit(json{{"plan", "noop"}, {"selector", "zone=a"}, {"concurrency_key", "k"}}));
  auto second = id_of(
      submit(json{{"plan", "noop"}, {"selector", "zone=b"}, {"concurrency_key", "k"}}));
  tick();
  EXPECT_TRUE(zone_b.poll(0).body["runs"].empty()) << "the later run took the key first";
  auto why = call("GET", "/v1/runs/" + second + "/explain", admin);
  ASSERT_EQ(why.status, 200) << why.raw;
  EXPECT_EQ(why.body["waiting_for"],
            (json{{"run", first}, {"concurrency_key", "k"}, {"holds_key", false}}));
  EXPECT_EQ(why.body["message"], "waits for run " + first +
                                     ", which goes first with concurrency key k (queued "
                                     "before it, or of a higher priority)");
  ASSERT_EQ(zone_a.finish(busy, "success").status, 200);
  auto got = zone_a.take(1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0]["id"], first);
  ASSERT_EQ(zone_a.finish(first, "success").status, 200);
  got = zone_b.take(1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0]["id"], second);
}

// This test ensures a concurrency key that is empty, not a string or holds
// a control character is refused naming the field, and nothing is stored.
TEST_F(assignment, a_bad_concurrency_key_is_refused) {
  auto stored = [&] { return call("GET", "/v1/runs", admin).body["runs"].size(); };
  auto before = stored();
  for (const auto& key : {json(""), json(7), json("a\tb"), json(std::string(257, 'k'))}) {
    auto r = submit(json{{"plan", "noop"}, {"concurrency_key", key}});
    EXPECT_EQ(r.status, 400) << key.dump() << ": " << r.raw;
    EXPECT_EQ(r.body["error"]["field"], "concurrency_key") << r.raw;
  }
  EXPECT_EQ(stored(), before);
}

} // namespace
} // namespace polymesh::test
