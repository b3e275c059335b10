// meshd restarted in the middle of work: nothing acknowledged is lost and
// every run carries on from the state the store holds.
#include "tests/support/mesh_fixture.hpp"

namespace polymesh::test {
namespace {

using namespace std::chrono_literals;
using restart = mesh_fixture;

// This test ensures a restart keeps tokens, agents, queued, pending and
// running runs, and that each carries on: the running run can finish, the
// pending one is re-offered, the queued one is assigned when a slot frees.
TEST_F(restart, runs_agents_and_tokens_survive_and_carry_on) {
  auto a = register_agent("a", json{{"env", "prod"}}, json::array({"noop"}), 2);
  auto submitter = make_token("submitter");
  auto running = submit(json{{"plan", "noop"}}, submitter).body["id"].get<std::string>();
  ASSERT_EQ(a.take(1).size(), 1u);
  ASSERT_EQ(a.start(running).status, 200);
  ASSERT_EQ(a.logs(running, 0, "before restart\n").status, 200);
  auto pending = submit(json{{"plan", "noop"}}, submitter).body["id"].get<std::string>();
  ASSERT_TRUE(becomes(pending, "pending"));
  auto queued = submit(json{{"plan", "noop"}, {"priority", 5}}, submitter)
                    .body["id"]
                    .get<std::string>();
  auto done_before = submit(json{{"plan", "other"}}, submitter);
  ASSERT_EQ(done_before.status, 201);

  restart_mesh();
  a.port = port;

  EXPECT_EQ(get_run(running)["status"], "running");
  EXPECT_EQ(get_run(pending)["status"], "pending");
  EXPECT_EQ(get_run(queued)["status"], "created");
  EXPECT_EQ(call("GET", "/v1/agents/a", admin).body["status"], "online");
  // The agent's token and the submitter's token still work.
  auto offered = a.take(1);
  ASSERT_EQ(offered.size(), 1u) << "the pending run is offered again";
  EXPECT_EQ(offered[0]["id"], pending);
  EXPECT_EQ(submit(json{{"plan", "noop"}}, submitter).status, 201);

  ASSERT_EQ(a.logs(running, 1, "after restart\n").status, 200);
  ASSERT_EQ(a.finish(running, "success").status, 200);
  ASSERT_TRUE(becomes(queued, "pending"))
      << "the freed slot goes to the queued run with the highest priority";
  auto logs = call("GET", "/v1/runs/" + running + "/logs", admin);
  ASSERT_EQ(logs.body["chunks"].size(), 2u);
}

// This test ensures run ids keep increasing in submission order across a
// restart, so newest-first listing stays right.
TEST_F(restart, listing_order_survives_restart) {
  auto first = submit(json{{"plan", "noop"}}).body["id"].get<std::string>();
  restart_mesh();
  auto second = submit(json{{"plan", "noop"}}).body["id"].get<std::string>();
  auto list = call("GET", "/v1/runs?limit=2", admin);
  ASSERT_EQ(list.status, 200);
  ASSERT_EQ(list.body["runs"].size(), 2u);
  EXPECT_EQ(list.body["runs"][0]["id"], second);
  EXPECT_EQ(list.body["runs"][1]["id"], first);
}

// This test ensures timers come back from stored timestamps: a run whose
// TTL ran out while meshd was down ends as soon as it is up again.
TEST_F(restart, timers_resume_from_stored_timestamps) {
  auto id = submit(json{{"plan", "nobody"}, {"ttl_s", 60}}).body["id"].get<std::string>();
  stop_mesh();
  clock.advance(61s);
  start_mesh();
  tick();
  ASSERT_TRUE(becomes(id, "error"));
  EXPECT_EQ(get_run(id)["reason"], "no_agent_within_ttl");
}

// This test ensures a running run survives a mesh outage longer than the
// result expiry: its agent, which could not reach a mesh that was down, gets
// a full window from the restart and its result is stored. Every such run
// ended error/expired the moment the mesh was back.
TEST_F(restart, an_outage_longer_than_the_result_expiry_loses_no_running_run) {
  auto a = register_agent("long", json::object());
  auto id = submit(json{{"plan", "noop"}}).body["id"].get<std::string>();
  ASSERT_EQ(a.take(1).size(), 1u);
  ASSERT_EQ(a.start(id).status, 200);
  stop_mesh();
  clock.advance(15min); // result_expiry is 10 min
  start_mesh();
  a.port = port;
  tick();
  EXPECT_EQ(get_run(id)["status"], "running");
  ASSERT_EQ(a.finish(id, "success").status, 200);
  EXPECT_EQ(get_run(id)["status"], "success");
}

// This test ensures an outage longer than agents.token_ttl ends no agent's
// session: the token that expired while meshd was down is honoured for
// agents.offline_after from the restart, so the agent's running run
// finishes `success` and its token refresh keeps its session. Before, the
// agent got 401, registered again, and the mesh ended its runs.
TEST_F(restart, an_outage_longer_than_the_token_ttl_keeps_agents_sessions) {
  auto a = register_agent("through", json::object());
  auto id = submit(json{{"plan", "noop"}}).body["id"].get<std::string>();
  ASSERT_EQ(a.take(1).size(), 1u);
  ASSERT_EQ(a.start(id).status, 200);
  stop_mesh();
  clock.advance(cfg.agent_token_ttl + std::chrono::hours{1});
  start_mesh();
  a.port = port;
  clock.advance(cfg.offline_after - std::chrono::seconds{1});
  tick();
  ASSERT_EQ(a.finish(id, "success").status, 200);
  EXPECT_EQ(get_run(id)["status"], "success");
  auto fresh = call("POST", "/v1/agents/" + a.id + "/token", a.token, json::object());
  ASSERT_EQ(fresh.status, 200) << fresh.raw;
  EXPECT_EQ(fresh.body["id"], a.id);
  EXPECT_EQ(fresh.body["session"], 1) << "the session of the first registration";
  a.token = fresh.body["access_token"].get<std::string>();
  // Honoured for the grace only; the refreshed token has a life of its own.
  clock.advance(std::chrono::seconds{2});
  EXPECT_EQ(a.poll(0).status, 200);
}

// This test ensures the grace a restart gives an expired agent token is
// stored: a second restart within it (before the agent came back) keeps it.
TEST_F(restart, a_second_restart_keeps_the_grace_of_the_first) {
  auto a = register_agent("patient", json::object());
  stop_mesh();
  clock.advance(cfg.agent_token_ttl + std::chrono::hours{1});
  start_mesh();
  stop_mesh();
  clock.advance(std::chrono::minutes{1});
  start_mesh();
  a.port = port;
  auto r = a.poll(0);
  EXPECT_EQ(r.status, 200) << r.raw;
}

// This test ensures the grace a stall longer than agents.token_ttl gives an
// agent's token is stored: a restart within it keeps it (the record that
// meshd ran is from after the stall, which would otherwise leave the token
// expired while meshd ran).
TEST_F(restart, the_grace_of_a_stall_is_stored) {
  auto a = register_agent("stalled", json::object());
  clock.stall(cfg.agent_token_ttl + std::chrono::minutes{1});
  tick();
  // Answered by the token registry after it stored the honoured token.
  auto fresh = call("POST", "/v1/agents/" + a.id + "/token", a.token, json::object());
  ASSERT_EQ(fresh.status, 200) << fresh.raw;
  stop_mesh();
  clock.advance(std::chrono::minutes{1});
  start_mesh();
  a.port = port;
  auto r = a.poll(0);
  EXPECT_EQ(r.status, 200) << r.raw;
}

// This test ensures only tokens that expired while meshd was down are
// honoured after a restart: one that expired while meshd ran stays expired
// (the last record that meshd ran is when it stopped).
TEST_F(restart, a_token_that_expired_while_meshd_ran_stays_expired) {
  auto a = register_agent("lapsed", json::object());
  advance(cfg.agent_token_ttl + std::chrono::seconds{1});
  ASSERT_EQ(a.poll(0).status, 401);
  stop_mesh();
  clock.advance(std::chrono::minutes{1});
  start_mesh();
  a.port = port;
  auto r = call("POST", "/v1/agents/" + a.id + "/token", a.token, json::object());
  EXPECT_EQ(r.status, 401) << r.raw;
  EXPECT_EQ(a.poll(0).status, 401);
}

// This test ensures a pending run held by an agent that is offline when it
// is offered (here: a crash between the agent's `offline` and its runs'
// requeue, so the restart re-offers the run to the offline agent; live, an
// assignment crossing the status change does the same) goes back to the
// queue and reaches another agent, instead of staying pending for good.
TEST_F(restart, a_run_offered_to_an_offline_agent_is_requeued) {
  auto gone = register_agent("gone", json::object());
  auto id = submit(json{{"plan", "noop"}}).body["id"].get<std::string>();
  ASSERT_TRUE(becomes(id, "pending"));
  stop_mesh();
  exec_sql(dir + "/mesh.db",
           "UPDATE agents SET status = 'offline' WHERE id = '" + gone.id + "'");
  start_mesh();
  ASSERT_TRUE(becomes(id, "created"));
  EXPECT_EQ(get_run(id)["reason"], "agent_offline");
  auto next = register_agent("next", json::object());
  auto got = next.take(1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0]["id"], id);
}

// This test ensures runs restored at start-up stay with the session that
// took them: when their agent registered again just before meshd stopped
// (their words of it not yet stored), the new session, offering another
// plan, got the pending run, and the running one stayed running though no
// session could report on it. Now the pending run goes back to the queue
// and the running one ends error/agent_lost, as when the agent registers
// again while meshd runs.
TEST_F(restart, restored_runs_do_not_go_to_a_later_session) {
  auto a = register_agent("a", json::object(), json::array({"noop"}), 2);
  auto running = submit(json{{"plan", "noop"}}).body["id"].get<std::string>();
  ASSERT_EQ(a.take(1).size(), 1u);
  ASSERT_EQ(a.start(running).status, 200);
  auto pending = submit(json{{"plan", "noop"}}).body["id"].get<std::string>();
  ASSERT_TRUE(becomes(pending, "pending"));
  stop_mesh();
  exec_sql(dir + "/mesh.db",
           "UPDATE agents SET session = session + 1, plans = '[\"other\"]', "
           "registered_at = (SELECT MAX(assigned_at) + 1 FROM runs) WHERE id = '" +
               a.id +
               "'; UPDATE tokens SET agent_session = agent_session + 1 "
               "WHERE agent_id = '" +
               a.id + "'");
  start_mesh();
  a.port = port;
  ASSERT_TRUE(becomes(running, "error"));
  EXPECT_EQ(get_run(running)["reason"], "agent_lost");
  ASSERT_TRUE(becomes(pending, "created"));
  EXPECT_EQ(get_run(pending)["reason"], "agent_superseded");
  auto polled = a.poll(0);
  ASSERT_EQ(polled.status, 200) << polled.raw;
  EXPECT_TRUE(polled.body["runs"].empty()) << polled.raw;
}

// This test ensures a queued run that names an agent which is offline by the
// time the run reaches the queue ends error/expired rather than wait for good
// (live, a submit racing the agent's removal; here a restart that restores
// the run after its agent, which went offline while meshd was down).
TEST_F(restart, a_run_queued_for_an_agent_already_gone_expires) {
  // Its one slot is taken, so the run naming it stays queued.
  auto gone = register_agent("gone-away", json::object());
  ASSERT_EQ(submit(json{{"plan", "noop"}}).status, 201);
  ASSERT_EQ(gone.take(1).size(), 1u);
  auto id = submit(json{{"plan", "noop"}, {"agent", "gone-away"}})
                .body["id"]
                .get<std::string>();
  stop_mesh();
  exec_sql(dir + "/mesh.db",
           "UPDATE agents SET status = 'offline' WHERE id = '" + gone.id + "'");
  start_mesh();
  ASSERT_TRUE(becomes(id, "error"));
  EXPECT_EQ(get_run(id)["reason"], "expired");
}

// This test ensures a cancel acknowledged for a delivered, unstarted run
// still holds after a restart: the agent's polls tell it in `cancel` and
// never carry the run again (they carried it, and it could be run).
TEST_F(restart, a_cancel_requested_before_the_start_holds_after_a_restart) {
  auto a = register_agent("holder", json::object());
  auto id = submit(json{{"plan", "noop"}}).body["id"].get<std::string>();
  ASSERT_EQ(a.take(1).size(), 1u);
  ASSERT_TRUE(becomes(id, "pending"));
  auto canceled = call("POST", "/v1/runs/" + id + "/cancel", admin);
  ASSERT_EQ(canceled.status, 200) << canceled.raw;
  ASSERT_EQ(canceled.body["cancel_requested"], true);

  restart_mesh();
  a.port = port;
  auto polled = a.poll(0);
  ASSERT_EQ(polled.status, 200) << polled.raw;
  EXPECT_TRUE(polled.body["runs"].empty()) << polled.raw;
  EXPECT_EQ(polled.body["cancel"], json::array({id})) << polled.raw;
  auto again = a.poll(0);
  EXPECT_TRUE(again.body["runs"].empty()) << again.raw;
}

// This test ensures a running run keeps its concurrency key across a
// restart: the queued run of the same key waits until it finishes.
TEST_F(restart, a_running_run_keeps_its_concurrency_key) {
  auto a = register_agent("a", json::object(), json::array({"noop"}), 2);
  auto holder = submit(json{{"plan", "noop"}, {"concurrency_key", "ws"}})
                    .body["id"]
                    .get<std::string>();
  ASSERT_EQ(a.take(1).size(), 1u);
  ASSERT_EQ(a.start(holder).status, 200);
  auto waiting = submit(json{{"plan", "noop"}, {"concurrency_key", "ws"}})
                     .body["id"]
                     .get<std::string>();

  restart_mesh();
  a.port = port;

  tick();
  EXPECT_TRUE(a.poll(0).body["runs"].empty()) << "the key is still held";
  EXPECT_EQ(get_run(waiting)["status"], "created");
  EXPECT_EQ(get_run(waiting)["concurrency_key"], "ws");
  ASSERT_EQ(a.finish(holder, "success").status, 200);
  auto next = a.take(1);
  ASSERT_EQ(next.size(), 1u);
  EXPECT_EQ(next[0]["id"], waiting);
}

// This test ensures a restart cannot place a queued run of a key beside the
// key's holder when the queued run was submitted first (lower seq): the
// holder's key is reserved before any queued run re-enters the queue. Many
// runs restored in between give the race room.
TEST_F(restart, a_key_holder_submitted_later_still_holds_after_restart) {
  auto a = register_agent("a", json::object(), json::array({"noop"}), 4);
  auto first = submit(json{{"plan", "noop"}, {"concurrency_key", "ws"}})
                   .body["id"]
                   .get<std::string>();
  ASSERT_EQ(a.take(1).size(), 1u);
  ASSERT_EQ(a.start(first).status, 200);
  auto low = submit(json{{"plan", "noop"}, {"concurrency_key", "ws"}})
                 .body["id"]
                 .get<std::string>();
  json fillers = json::array();
  for (int i = 0; i < 1000; ++i)
    fillers.push_back(json{{"plan", "other"}});
  for (int b = 0; b < 3; ++b)
    ASSERT_EQ(call("POST", "/v1/runs/batch", admin, json{{"runs", fillers}}).status, 201);
  auto high = submit(json{{"plan", "noop"}, {"concurrency_key", "ws"}, {"priority", 10}})
                  .body["id"]
                  .get<std::string>();
  ASSERT_EQ(a.finish(first, "success").status, 200);
  auto got = a.take(1);
  ASSERT_EQ(got.size(), 1u);
  ASSERT_EQ(got[0]["id"], high) << "priority first";
  ASSERT_EQ(a.start(high).status, 200);

  restart_mesh();
  a.port = port;

  // Until the routine has queued `low`, explain lists no agent for it; once
  // it has, `low` is either waiting (right) or already placed (the race).
  ASSERT_TRUE(eventually([&] {
    auto why = call("GET", "/v1/runs/" + low + "/explain", admin);
    return why.body["assigned"] == true || !why.body["agents"].empty();
  }));
  tick();
  EXPECT_EQ(get_run(high)["status"], "running");
  EXPECT_EQ(get_run(low)["status"], "created") << "two runs of key ws at once";
}

} // namespace
} // namespace polymesh::test
