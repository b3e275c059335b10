// Timers over real HTTP, driven by the fixture's manual clock: agent
// offline, delivery lease, result expiry, run timeout, queue TTL.
#include "mesh/domain/log.hpp"
#include "tests/support/mesh_fixture.hpp"

#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

namespace polymesh::test {
namespace {

using namespace std::chrono_literals;

class timers : public mesh_fixture {
protected:
  /// Moves the clock by `d` in steps, the agent polling between them so
  /// that only run timers (not agent liveness) can lapse.
  void advance_alive(const scripted_agent& a, duration d) {
    auto step = cfg.offline_after / 3;
    while (d.count() > 0) {
      auto s = std::min(d, std::chrono::duration_cast<duration>(step));
      advance(s);
      ASSERT_EQ(a.poll().status, 200);
      d -= s;
    }
  }
  std::string status_of(const std::string& id) { return get_run(id)["status"]; }
  std::string reason_of(const std::string& id) {
    auto r = get_run(id)["reason"];
    return r.is_null() ? "" : r.get<std::string>();
  }
  /// The agent as meshd shows it now.
  json agent_of(const scripted_agent& a) {
    return call("GET", "/v1/agents/" + a.id, admin).body;
  }
  /// Waits until `a`'s record shows a hold. The routine armed the hold's
  /// end before it told the record, so an `advance` from here cannot come
  /// before the hold began (a lapse's stored run is no such sign: the routine
  /// hears of it after the commit, and could start the hold from the
  /// advanced clock).
  bool held(const scripted_agent& a) {
    return eventually([&] { return !agent_of(a)["held_until"].is_null(); });
  }
  /// `/metrics`' value of an unlabelled metric, or -1.
  double metric(const std::string& name) {
    auto text = call("GET", "/metrics", admin).raw;
    auto at = text.find("\n" + name + " ");
    return at == std::string::npos ? -1 : std::stod(text.substr(at + name.size() + 2));
  }
};

// This test ensures an agent silent for the offline timeout goes offline:
// its pending run returns to created and goes to another agent, its running
// run ends error/agent_lost, and a run queued for it by name ends error/expired.
TEST_F(timers, agent_offline_requeues_pending_loses_running_expires_targeted) {
  auto a = register_agent("a", json{{"env", "dev"}}, json::array({"noop"}), 3);
  auto running =
      submit(json{{"plan", "noop"}, {"agent", "a"}}).body["id"].get<std::string>();
  ASSERT_EQ(a.take(1).size(), 1u);
  ASSERT_EQ(a.start(running).status, 200);
  auto pending =
      submit(json{{"plan", "noop"}, {"agent", "a"}}).body["id"].get<std::string>();
  auto roaming = submit(json{{"plan", "noop"}}).body["id"].get<std::string>();
  ASSERT_TRUE(becomes(pending, "pending"));
  ASSERT_TRUE(becomes(roaming, "pending"));
  // A third targeted run waits in the queue: capacity is 3, so drain first.
  ASSERT_EQ(call("POST", "/v1/agents/a/drain", admin).status, 200);
  auto queued =
      submit(json{{"plan", "noop"}, {"agent", "a"}}).body["id"].get<std::string>();
  EXPECT_EQ(status_of(queued), "created");

  advance(cfg.offline_after + 1s);
  ASSERT_TRUE(eventually(
      [&] { return call("GET", "/v1/agents/a", admin).body["status"] == "offline"; }));
  ASSERT_TRUE(becomes(running, "error"));
  EXPECT_EQ(reason_of(running), "agent_lost");
  ASSERT_TRUE(becomes(pending, "error"));
  EXPECT_EQ(reason_of(pending), "expired");
  ASSERT_TRUE(becomes(queued, "error"));
  EXPECT_EQ(get_run(queued)["skadi_status"], "expired");
  ASSERT_TRUE(becomes(roaming, "created"));

  auto b = register_agent("b", json{{"env", "dev"}});
  ASSERT_TRUE(becomes(roaming, "pending"));
  EXPECT_EQ(get_run(roaming)["assigned_agent"], b.id);
}

// This test ensures the plan's own outcome, reported after the mesh ended
// the run as agent_lost, is refused naming what the run ended as: it was
// answered 200 (the status matched) and nothing was stored. A repeat of
// the finish that ended a run is still answered 200.
TEST_F(timers, a_finish_after_the_mesh_ended_the_run_is_refused_saying_how_it_ended) {
  auto a = register_agent("a", json::object());
  auto lost = submit(json{{"plan", "noop"}}).body["id"].get<std::string>();
  ASSERT_EQ(a.take(1).size(), 1u);
  ASSERT_EQ(a.start(lost).status, 200);
  advance(cfg.offline_after + 1s);
  ASSERT_TRUE(becomes(lost, "error"));
  ASSERT_EQ(reason_of(lost), "agent_lost");
  auto late = a.finish(lost, "error", 5);
  EXPECT_EQ(late.status, 409) << late.raw;
  EXPECT_EQ(late.body["error"]["message"], "run already finished as error (agent_lost)");
  EXPECT_TRUE(get_run(lost)["exit_code"].is_null());

  auto done = submit(json{{"plan", "noop"}}).body["id"].get<std::string>();
  ASSERT_EQ(a.take(1).size(), 1u);
  ASSERT_EQ(a.start(done).status, 200);
  ASSERT_EQ(a.finish(done, "error", 3).status, 200);
  EXPECT_EQ(a.finish(done, "error", 3).status, 200) << "a repeat, its answer lost";
  auto other = a.finish(done, "error", 4);
  EXPECT_EQ(other.status, 409) << other.raw;
  EXPECT_EQ(other.body["error"]["message"],
            "run already finished as error (plan_failed)");
}

// This test ensures a mesh that did not run for longer than the offline
// timeout and the result expiry (stopped with SIGSTOP, its host suspended)
// does not take its agents for gone when it runs again: their requests are
// still queued in the sockets. Every agent went offline on the spot and
// every running run ended error/agent_lost. A silence after the stall still
// counts.
TEST_F(timers, a_mesh_that_did_not_run_gives_agents_and_runs_their_windows_again) {
  auto a = register_agent("a", json::object());
  auto id = submit(json{{"plan", "noop"}}).body["id"].get<std::string>();
  ASSERT_EQ(a.take(1).size(), 1u);
  ASSERT_EQ(a.start(id).status, 200);
  clock.stall(cfg.offline_after + cfg.result_expiry + 1min);
  tick();
  EXPECT_EQ(call("GET", "/v1/agents/a", admin).body["status"], "online");
  EXPECT_EQ(status_of(id), "running");
  ASSERT_EQ(a.progress(id).status, 200) << "the request that waited in the socket";
  // A request's liveness reaches the agent's actor as a message of its own,
  // read at the clock's time then: a poll, which that actor answers, has it
  // read before the clock moves (the test failed once under load).
  ASSERT_EQ(a.poll(0).status, 200);

  advance(cfg.offline_after + 1s);
  ASSERT_TRUE(becomes(id, "error"));
  EXPECT_EQ(reason_of(id), "agent_lost");
}

// This test ensures a mesh that did not run for longer than agents.token_ttl
// (stopped with SIGSTOP, its host suspended) ends no agent's session: the
// token that expired meanwhile is honoured for the request that waited in
// the socket, whether or not the timer routines noticed the stall yet, and
// then for agents.offline_after, so the running run finishes `success` and
// the agent's refresh keeps its session. Before, the agent got 401,
// registered again, and the mesh ended its runs. After the grace the old
// token is refused.
TEST_F(timers, a_stall_longer_than_the_token_ttl_keeps_agents_sessions) {
  auto a = register_agent("a", json::object());
  auto id = submit(json{{"plan", "noop"}}).body["id"].get<std::string>();
  ASSERT_EQ(a.take(1).size(), 1u);
  ASSERT_EQ(a.start(id).status, 200);
  clock.stall(cfg.agent_token_ttl + 1min);
  auto waited = a.progress(id);
  ASSERT_EQ(waited.status, 200) << waited.raw;
  tick();
  advance(cfg.offline_after - 1s);
  ASSERT_EQ(a.finish(id, "success").status, 200);
  EXPECT_EQ(status_of(id), "success");
  auto old = a.token;
  auto fresh = call("POST", "/v1/agents/" + a.id + "/token", a.token, json::object());
  ASSERT_EQ(fresh.status, 200) << fresh.raw;
  EXPECT_EQ(fresh.body["session"], 1) << "the session of the registration";
  a.token = fresh.body["access_token"].get<std::string>();
  advance(2s);
  EXPECT_EQ(a.poll(0).status, 200);
  auto r = call("GET", "/v1/agents/" + a.id + "/runs", old);
  EXPECT_EQ(r.status, 401) << r.raw;
}

// This test ensures a token that expired while the mesh ran stays expired
// through a later stall.
TEST_F(timers, a_token_that_expired_before_a_stall_stays_expired) {
  auto a = register_agent("a", json::object());
  advance(cfg.agent_token_ttl + 1s);
  ASSERT_EQ(a.poll(0).status, 401);
  clock.stall(1min);
  EXPECT_EQ(a.poll(0).status, 401);
  tick();
  EXPECT_EQ(a.poll(0).status, 401);
}

// This test ensures a step of the host's wall clock forward that meshd's clock
// follows at once (from a time before meshd existed: a host that booted with
// no real-time clock) does not take agents for gone and end their runs: the
// windows that wait on agents restart from it, as after a stall, and the
// agent tokens it expired are honoured for that window. A silence after it
// still counts.
TEST_F(timers, a_jump_of_the_clock_gives_agents_and_runs_their_windows_again) {
  auto a = register_agent("a", json::object());
  auto id = submit(json{{"plan", "noop"}}).body["id"].get<std::string>();
  ASSERT_EQ(a.take(1).size(), 1u);
  ASSERT_EQ(a.start(id).status, 200);
  clock.jump(std::chrono::duration_cast<duration>(std::chrono::hours{24 * 30}));
  tick();
  EXPECT_EQ(call("GET", "/v1/agents/a", admin).body["status"], "online");
  EXPECT_EQ(status_of(id), "running");
  // The jump expired the agent's token: honoured for the agent's window.
  auto r = a.poll(0);
  EXPECT_EQ(r.status, 200) << r.raw;

  advance(cfg.offline_after + 1s);
  ASSERT_TRUE(becomes(id, "error"));
  EXPECT_EQ(reason_of(id), "agent_lost");
}

// This test ensures a step of the wall clock that meshd's clock catches up
// with gradually is logged once, with its size and direction, a further step
// again, and the end of the catching up too.
TEST_F(timers, a_step_of_the_wall_clock_is_logged_once_and_its_catch_up_too) {
  std::vector<std::string> logged;
  std::mutex mtx;
  set_log_handler([&](log_level level, const std::string& text) {
    std::lock_guard<std::mutex> guard{mtx};
    if (text.find("clock") != std::string::npos)
      logged.push_back(std::string{to_string(level)} + " " + text);
  });
  auto restore = std::shared_ptr<void>{nullptr, [](void*) { set_log_handler(nullptr); }};
  auto lines = [&] {
    std::lock_guard<std::mutex> guard{mtx};
    return logged;
  };
  clock.set_behind_wall(3600s);
  tick();
  tick();
  clock.set_behind_wall(3000s); // catching up: nothing to say
  tick();
  clock.set_behind_wall(-1200s); // a step back of 4,200 s
  tick();
  clock.set_behind_wall(0s);
  tick();
  tick();
  auto seen = lines();
  ASSERT_EQ(seen.size(), 3u) << ::testing::PrintToString(seen);
  EXPECT_EQ(
      seen[0].rfind("warn the host's wall clock stepped forward by 3600 s; meshd's "
                    "clock is 3600 s behind it and catches up gradually (in about 20 h)",
                    0),
      0u)
      << seen[0];
  EXPECT_EQ(
      seen[1].rfind("warn the host's wall clock stepped back by 4200 s; meshd's clock "
                    "is 1200 s ahead of it",
                    0),
      0u)
      << seen[1];
  EXPECT_EQ(seen[2], "info meshd's clock has caught up with the host's wall clock");
}

// This test ensures any authenticated agent request counts as liveness.
TEST_F(timers, requests_keep_an_agent_online) {
  auto a = register_agent("a", json::object());
  for (int i = 0; i < 4; ++i) {
    advance(cfg.offline_after / 2);
    ASSERT_EQ(a.poll().status, 200);
  }
  advance(cfg.offline_after / 2);
  EXPECT_EQ(call("GET", "/v1/agents/a", admin).body["status"], "online");
}

// This test ensures a drain outlives a silence: a drained agent that goes
// offline comes back `draining`, not `online` (it used to be undrained and
// given new runs), and an offline agent that is drained stays offline (it
// was shown `draining` for good, never heard from) and comes back draining.
TEST_F(timers, a_drain_survives_the_agent_going_offline) {
  auto a = register_agent("drained-a", json::object());
  auto b = register_agent("drained-b", json::object());
  ASSERT_EQ(call("POST", "/v1/agents/drained-a/drain", admin).body["status"], "draining");
  advance(cfg.offline_after + 1s);
  auto status_of_agent = [&](const std::string& name) {
    return call("GET", "/v1/agents/" + name, admin).body["status"].get<std::string>();
  };
  ASSERT_TRUE(eventually([&] { return status_of_agent("drained-a") == "offline"; }));
  ASSERT_TRUE(eventually([&] { return status_of_agent("drained-b") == "offline"; }));
  auto late = call("POST", "/v1/agents/drained-b/drain", admin);
  ASSERT_EQ(late.status, 200) << late.raw;
  EXPECT_EQ(late.body["status"], "offline");

  auto id = submit(json{{"plan", "noop"}}).body["id"].get<std::string>();
  for (auto* agent : {&a, &b}) {
    SCOPED_TRACE(agent->name);
    auto polled = agent->poll(0);
    ASSERT_EQ(polled.status, 200) << polled.raw;
    EXPECT_TRUE(polled.body["runs"].empty()) << polled.raw;
    EXPECT_TRUE(eventually([&] { return status_of_agent(agent->name) == "draining"; }));
  }
  EXPECT_EQ(get_run(id)["status"], "created");
  (void)register_agent("drained-a", json::object());
  EXPECT_EQ(status_of_agent("drained-a"), "draining")
      << "an admin's drain outlasts the agent's restart";
}

// This test ensures an admin's drain is kept across the agent's
// registrations (a host under maintenance that restarts must not go back to
// work) and across a restart of meshd, until an undrain; the agent's own
// drain (it is stopping) ends with its next registration; an admin draining
// a self-drained agent makes the drain an admin's.
TEST_F(timers, an_admins_drain_outlasts_the_agents_restart_its_own_does_not) {
  auto a = register_agent("kept-a", json::object());
  auto b = register_agent("self-b", json::object());
  auto c = register_agent("upgraded-c", json::object());
  ASSERT_EQ(call("POST", "/v1/agents/kept-a/drain", admin).body["drained_by"], "admin");
  ASSERT_EQ(call("POST", "/v1/agents/" + b.id + "/drain", b.token).body["drained_by"],
            "agent");
  ASSERT_EQ(call("POST", "/v1/agents/" + c.id + "/drain", c.token).body["drained_by"],
            "agent");
  ASSERT_EQ(call("POST", "/v1/agents/upgraded-c/drain", admin).body["drained_by"],
            "admin");
  ASSERT_EQ(call("POST", "/v1/agents/" + c.id + "/drain", c.token).body["drained_by"],
            "admin")
      << "the agent's own drain does not lift an admin's";
  restart_mesh();
  auto agent = [&](const std::string& name) {
    return call("GET", "/v1/agents/" + name, admin).body;
  };
  EXPECT_EQ(agent("kept-a")["drained_by"], "admin");
  EXPECT_EQ(agent("self-b")["drained_by"], "agent");

  auto registration = make_token("registration");
  auto again = call("POST", "/v1/agents/register", registration,
                    json{{"name", "kept-a"}, {"plans", {"noop"}}});
  ASSERT_EQ(again.status, 201) << again.raw;
  EXPECT_EQ(again.body["status"], "draining") << "the answer says why no run comes";
  EXPECT_EQ(again.body["drained_by"], "admin");
  b = register_agent("self-b", json::object());
  c = register_agent("upgraded-c", json::object());
  for (auto name : {"kept-a", "upgraded-c"}) {
    EXPECT_EQ(agent(name)["status"], "draining") << name;
    EXPECT_EQ(agent(name)["drained_by"], "admin") << name;
  }
  EXPECT_EQ(agent("self-b")["status"], "online");
  EXPECT_TRUE(agent("self-b")["drained_by"].is_null());
  auto id = submit(json{{"plan", "noop"}}).body["id"].get<std::string>();
  EXPECT_TRUE(eventually([&] { return get_run(id)["assigned_agent"] == b.id; }));

  auto undrained = call("POST", "/v1/agents/kept-a/undrain", admin);
  EXPECT_EQ(undrained.body["status"], "online") << undrained.raw;
  EXPECT_TRUE(undrained.body["drained_by"].is_null()) << undrained.raw;
  a = register_agent("kept-a", json::object());
  EXPECT_EQ(agent("kept-a")["status"], "online");

  // Removed while drained, it keeps the drain for its next registration; an
  // undrain of the deregistered agent lifts it.
  ASSERT_EQ(call("POST", "/v1/agents/upgraded-c/drain", admin).status, 200);
  ASSERT_EQ(call("DELETE", "/v1/agents/upgraded-c", admin).status, 200);
  auto lifted = call("POST", "/v1/agents/upgraded-c/undrain", admin);
  ASSERT_EQ(lifted.status, 200) << lifted.raw;
  EXPECT_EQ(lifted.body["status"], "deregistered");
  EXPECT_FALSE(lifted.body["drained"].get<bool>());
  c = register_agent("upgraded-c", json::object());
  EXPECT_EQ(agent("upgraded-c")["status"], "online");
}

// This test ensures a drain is durable like every other 2xx: an offline
// agent drained (and a drained agent that went offline) comes back
// `draining` after meshd restarted in between, and an undrain of an offline
// agent outlives a restart too.
TEST_F(timers, a_drain_of_an_offline_agent_survives_a_restart) {
  auto a = register_agent("drained-a", json::object());
  auto b = register_agent("drained-b", json::object());
  auto c = register_agent("undrained-c", json::object());
  ASSERT_EQ(call("POST", "/v1/agents/drained-a/drain", admin).body["status"], "draining");
  ASSERT_EQ(call("POST", "/v1/agents/undrained-c/drain", admin).body["status"],
            "draining");
  advance(cfg.offline_after + 1s);
  auto status_of_agent = [&](const std::string& name) {
    return call("GET", "/v1/agents/" + name, admin).body["status"].get<std::string>();
  };
  for (auto name : {"drained-a", "drained-b", "undrained-c"})
    ASSERT_TRUE(eventually([&] { return status_of_agent(name) == "offline"; })) << name;
  ASSERT_EQ(call("POST", "/v1/agents/drained-b/drain", admin).status, 200);
  ASSERT_EQ(call("POST", "/v1/agents/undrained-c/undrain", admin).status, 200);
  restart_mesh();
  // Listed offline, and said to be drained (or not).
  for (auto [name, drained] : {std::pair{"drained-a", true}, std::pair{"drained-b", true},
                               std::pair{"undrained-c", false}}) {
    auto got = call("GET", std::string{"/v1/agents/"} + name, admin).body;
    EXPECT_EQ(got["status"], "offline") << name;
    EXPECT_EQ(got["drained"], drained) << name;
  }
  for (auto* agent : {&a, &b, &c})
    agent->port = port;

  auto id = submit(json{{"plan", "noop"}}).body["id"].get<std::string>();
  for (auto* agent : {&a, &b}) {
    SCOPED_TRACE(agent->name);
    auto polled = agent->poll(0);
    ASSERT_EQ(polled.status, 200) << polled.raw;
    EXPECT_TRUE(eventually([&] { return status_of_agent(agent->name) == "draining"; }));
  }
  ASSERT_EQ(c.poll(0).status, 200);
  EXPECT_TRUE(eventually([&] { return status_of_agent("undrained-c") == "online"; }));
  EXPECT_TRUE(eventually([&] { return get_run(id)["assigned_agent"] == c.id; }));
}

// This test ensures a delivered run that is never started is carried again
// by a later poll, and goes back to the queue once the delivery lease lapses.
TEST_F(timers, delivered_but_unstarted_run_is_redelivered_then_reassigned) {
  auto a = register_agent("a", json::object());
  auto id = submit(json{{"plan", "noop"}}).body["id"].get<std::string>();
  ASSERT_EQ(a.take(1).size(), 1u);
  // delivered_at is persisted just after the poll answered.
  ASSERT_TRUE(eventually([&] { return get_run(id)["skadi_status"] == "sent"; }));
  clock.advance(3s); // past the redelivery pause, within the lease
  ASSERT_EQ(a.poll().body["runs"].size(), 1u) << "an unstarted run is delivered again";
  advance(cfg.delivery_lease + 1s);
  ASSERT_TRUE(eventually([&] { return reason_of(id) == "delivery_lease_lapsed"; }));
  // Its only agent is held back for a lease (agents.hold_back_max), then
  // takes it again.
  EXPECT_EQ(status_of(id), "created");
  ASSERT_TRUE(held(a));
  advance(cfg.delivery_lease);
  ASSERT_TRUE(eventually([&] { return get_run(id)["attempts"] == 2; }));
  EXPECT_EQ(status_of(id), "pending");
  EXPECT_EQ(get_run(id)["assigned_agent"], a.id);
}

// This test ensures a run assigned to an agent that then stops polling (but
// stays online, reporting on its other run) goes back to the queue once the
// delivery lease passes from its assignment, and to another agent: it had no
// timer while no poll carried it, and waited with that agent for ever.
TEST_F(timers, a_run_no_poll_collects_goes_back_after_the_lease) {
  auto a = register_agent("a", json::object(), json::array({"noop"}), 2);
  auto first = submit(json{{"plan", "noop"}}).body["id"].get<std::string>();
  ASSERT_EQ(a.take(1).size(), 1u);
  ASSERT_EQ(a.start(first).status, 200);
  auto stuck = submit(json{{"plan", "noop"}}).body["id"].get<std::string>();
  ASSERT_TRUE(eventually([&] { return get_run(stuck)["assigned_agent"] == a.id; }));
  auto b = register_agent("b", json::object());
  advance(cfg.delivery_lease - 1s);
  ASSERT_EQ(a.progress(first, "still here").status, 200);
  EXPECT_EQ(get_run(stuck)["assigned_agent"], a.id);
  advance(2s);
  auto got = b.take(1);
  ASSERT_EQ(got.size(), 1u) << get_run(stuck).dump();
  EXPECT_EQ(got[0]["id"], stuck);
  // The offer may reach the agent before its assignment is stored.
  EXPECT_TRUE(eventually([&] { return get_run(stuck)["attempts"] == 2; }))
      << get_run(stuck).dump();
}

// This test ensures the agent a run was taken from (its delivery lease
// lapsed) can no longer upload artifacts to it: the run waits in the queue
// still naming its last agent, and an upload used to be accepted, taking the
// name from the agent that runs it next.
TEST_F(timers, an_agent_cannot_upload_to_a_run_taken_back_from_it) {
  auto a = register_agent("a", json::object());
  auto id = submit(json{{"plan", "noop"}}).body["id"].get<std::string>();
  ASSERT_EQ(a.take(1).size(), 1u);
  ASSERT_TRUE(eventually([&] { return get_run(id)["skadi_status"] == "sent"; }));
  ASSERT_EQ(call("POST", "/v1/agents/a/drain", admin).status, 200); // not given it again
  advance(cfg.delivery_lease + 1s);
  ASSERT_TRUE(eventually([&] { return status_of(id) == "created"; }));
  EXPECT_EQ(reason_of(id), "delivery_lease_lapsed");
  auto up = a.put_artifact(id, "report.txt", "stale");
  EXPECT_EQ(up.status, 403) << up.raw;
  EXPECT_NE(up.raw.find("back in the queue"), std::string::npos) << up.raw;
  EXPECT_TRUE(
      call("GET", "/v1/runs/" + id + "/artifacts", admin).body["artifacts"].empty());
  // Canceled while queued, it ended without the agent: still none of its
  // business (it used to take logs, artifacts and a finish from it again).
  ASSERT_EQ(call("POST", "/v1/runs/" + id + "/cancel", admin).status, 200);
  ASSERT_EQ(status_of(id), "canceled");
  for (auto r : {a.logs(id, 0, "late line"), a.put_artifact(id, "report.txt", "stale"),
                 a.finish(id, "canceled")}) {
    EXPECT_EQ(r.status, 403) << r.raw;
    EXPECT_NE(r.raw.find("ended while this agent did not hold it"), std::string::npos)
        << r.raw;
  }
  EXPECT_TRUE(call("GET", "/v1/runs/" + id + "/logs", admin).body["chunks"].empty());
  EXPECT_TRUE(
      call("GET", "/v1/runs/" + id + "/artifacts", admin).body["artifacts"].empty());
}

// This test ensures a long-poll parked right after an unstarted run was
// carried (the agent had no free slot yet) is woken to carry it again once
// the redelivery pause has passed, instead of holding it for the whole wait
// (regression: SDK agents stalled 30 s whenever a slot's next run came
// before the slot was free).
TEST_F(timers, parked_poll_carries_an_unstarted_run_again_after_the_pause) {
  auto a = register_agent("a", json::object());
  auto id = submit(json{{"plan", "noop"}}).body["id"].get<std::string>();
  ASSERT_EQ(a.take(1).size(), 1u);
  auto t0 = std::chrono::steady_clock::now();
  response again;
  std::thread poller{[&] { again = a.poll(20); }};
  // Parked (the run was carried just now), then the pause passes while it
  // waits; the wake is a real 2 s timer that reads the manual clock.
  ASSERT_TRUE(eventually(
      [&] { return call("GET", "/readyz", admin).body["http"]["long_polls"] == 1; }));
  clock.advance(3s);
  poller.join();
  auto waited = std::chrono::steady_clock::now() - t0;
  ASSERT_EQ(again.status, 200) << again.raw;
  ASSERT_EQ(again.body["runs"].size(), 1u) << again.raw;
  EXPECT_EQ(again.body["runs"][0]["id"], id);
  // Without the wake it would come only when the 20 s poll ends.
  EXPECT_LT(waited, 15s);
}

// This test ensures a sent run with no start, progress or result for the
// result expiry ends error/expired (Skadi's expired).
TEST_F(timers, silent_running_run_expires) {
  auto a = register_agent("a", json::object());
  auto id = submit(json{{"plan", "noop"}}).body["id"].get<std::string>();
  ASSERT_EQ(a.take(1).size(), 1u);
  ASSERT_EQ(a.start(id).status, 200);
  advance_alive(a, cfg.result_expiry / 2);
  ASSERT_EQ(a.progress(id, "half way").status, 200);
  advance_alive(a, cfg.result_expiry / 2 + 1s);
  EXPECT_EQ(status_of(id), "running") << "progress restarted the expiry window";
  advance_alive(a, cfg.result_expiry / 2);
  ASSERT_TRUE(becomes(id, "error"));
  EXPECT_EQ(reason_of(id), "expired");
  EXPECT_EQ(get_run(id)["skadi_status"], "expired");
  EXPECT_EQ(a.finish(id, "success").status, 409);
}

// This test ensures a run over its timeout is cancelled through the agent
// and ends error/timeout, whether the agent confirms or stays silent; a
// user's cancel after the timeout changes nothing (it made the run
// `canceled/canceled_by_user` and started the grace again).
TEST_F(timers, timeout_asks_the_agent_to_cancel_then_ends_error_timeout) {
  auto a = register_agent("a", json::object(), json::array({"noop"}), 2);
  auto confirmed =
      submit(json{{"plan", "noop"}, {"timeout_s", 60}}).body["id"].get<std::string>();
  auto silent =
      submit(json{{"plan", "noop"}, {"timeout_s", 60}}).body["id"].get<std::string>();
  ASSERT_EQ(a.take(2).size(), 2u);
  ASSERT_EQ(a.start(confirmed).status, 200);
  ASSERT_EQ(a.start(silent).status, 200);
  advance(61s);
  ASSERT_TRUE(eventually([&] { return get_run(confirmed)["cancel_requested"] == true; }));
  ASSERT_TRUE(eventually([&] { return get_run(silent)["cancel_requested"] == true; }));
  std::set<std::string> told;
  ASSERT_TRUE(eventually([&] {
    auto p = a.poll(1);
    EXPECT_EQ(p.status, 200) << p.raw;
    for (auto& id : p.body["cancel"])
      told.insert(id.get<std::string>());
    return told.size() == 2;
  })) << "the agent's poll carries both cancel requests";
  for (auto& id : {confirmed, silent}) {
    auto before = get_run(id);
    auto c = call("POST", "/v1/runs/" + id + "/cancel", admin);
    ASSERT_EQ(c.status, 200) << c.raw;
    EXPECT_EQ(c.body, before);
  }
  EXPECT_EQ(a.progress(confirmed).body["cancel_requested"], true);
  ASSERT_EQ(a.finish(confirmed, "canceled", 143).status, 200);
  EXPECT_EQ(status_of(confirmed), "error");
  EXPECT_EQ(reason_of(confirmed), "timeout");
  ASSERT_EQ(a.poll().status, 200);
  advance(cfg.cancel_grace + 1s);
  ASSERT_TRUE(becomes(silent, "error"));
  EXPECT_EQ(reason_of(silent), "timeout");
}

// This test ensures a run nobody takes within ttl_s ends error/no_agent_within_ttl.
TEST_F(timers, ttl_lapses_without_an_agent) {
  auto id = submit(json{{"plan", "deploy"}, {"ttl_s", 30}}).body["id"].get<std::string>();
  advance(29s);
  EXPECT_EQ(status_of(id), "created");
  advance(2s);
  ASSERT_TRUE(becomes(id, "error"));
  EXPECT_EQ(reason_of(id), "no_agent_within_ttl");
}

// This test ensures a run that would go back to the queue after its ttl_s
// (its delivery lease lapsed) ends error/no_agent_within_ttl, saying why,
// although an agent is free: it was placed again past its ttl_s whenever a
// slot was free at that moment, and ended only when none was.
TEST_F(timers, a_run_back_in_the_queue_after_its_ttl_ends) {
  auto a = register_agent("a", json::object());
  auto id = submit(json{{"plan", "noop"}, {"ttl_s", 2}}).body["id"].get<std::string>();
  ASSERT_EQ(a.take(1).size(), 1u);
  ASSERT_TRUE(eventually([&] { return get_run(id)["skadi_status"] == "sent"; }));
  advance(cfg.delivery_lease + 1s);
  ASSERT_TRUE(becomes(id, "error")) << get_run(id).dump();
  auto run = get_run(id);
  EXPECT_EQ(run["reason"], "no_agent_within_ttl");
  EXPECT_EQ(run["attempts"], 1);
  EXPECT_EQ(run["error"], "ended by the mesh: no_agent_within_ttl (its ttl_s of 2 s had "
                          "passed when it would have gone back to the queue: "
                          "delivery_lease_lapsed)");
  EXPECT_TRUE(a.poll().body["runs"].empty());
}

// This test ensures retention prunes finished runs (and their logs) older
// than the configured age and keeps unfinished ones.
TEST_F(timers, retention_prunes_old_finished_runs) {
  auto a = register_agent("a", json::object());
  auto done = submit(json{{"plan", "noop"}}).body["id"].get<std::string>();
  ASSERT_EQ(a.take(1).size(), 1u);
  ASSERT_EQ(a.start(done).status, 200);
  ASSERT_EQ(a.logs(done, 0, "x").status, 200);
  ASSERT_EQ(a.finish(done, "success").status, 200);
  auto waiting = submit(json{{"plan", "other"}}).body["id"].get<std::string>();
  clock.advance(cfg.retention + 1s);
  EXPECT_EQ(node_->prune_once(), 1u);
  EXPECT_EQ(call("GET", "/v1/runs/" + done, admin).status, 404);
  EXPECT_EQ(call("GET", "/v1/runs/" + waiting, admin).status, 200);
}

/// Retention transactions of one run each (`retention.max_hold: 0`).
class retention_one_at_a_time : public mesh_fixture {
protected:
  void configure(mesh_config& c) override { c.retention_max_hold = duration{0}; }
};

// This test ensures a retention pass whose transactions end early (past
// retention.max_hold; with 0 after one run each) goes on at once until every
// old finished run is gone, instead of one batch per retention.interval.
TEST_F(retention_one_at_a_time, a_pass_goes_on_until_every_old_run_is_pruned) {
  std::vector<std::string> ids;
  for (int i = 0; i < 3; ++i) {
    ids.push_back(submit(json{{"plan", "nobody"}}).body["id"].get<std::string>());
    ASSERT_EQ(call("POST", "/v1/runs/" + ids.back() + "/cancel", admin).status, 200);
  }
  clock.advance(cfg.retention + 1s);
  EXPECT_EQ(node_->prune_once(), 1u);
  EXPECT_TRUE(eventually([&] {
    return std::all_of(ids.begin(), ids.end(), [&](const std::string& id) {
      return call("GET", "/v1/runs/" + id, admin).status == 404;
    });
  }));
}

} // namespace
} // namespace polymesh::test

namespace polymesh::test {
namespace {

using namespace std::chrono_literals;
using timer_retries = mesh_fixture;

size_t count_of(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (auto at = text.find(what); at != std::string::npos; at = text.find(what, at + 1))
    ++n;
  return n;
}

// This test ensures a timer action that cannot be stored (a full disk; here
// a trigger that refuses every run update) is retried with a growing delay,
// not at every timer tick, and is applied once writes work again; meanwhile
// /readyz says the store's commits fail (reads alone still work). The write
// that succeeds sets every field of the run, not only those it changes: a
// failed commit may still have reached the disk (a field changed behind
// meshd's back stands for it).
TEST_F(timer_retries, a_failed_timer_write_backs_off_and_applies_later) {
  auto id = submit(json{{"plan", "nobody"}, {"ttl_s", 60}}).body["id"].get<std::string>();
  EXPECT_EQ(call("GET", "/readyz", admin).status, 200);
  exec_sql(dir + "/mesh.db", "UPDATE runs SET progress = 'from the failed commit';"
                             "CREATE TRIGGER refuse BEFORE UPDATE ON runs BEGIN "
                             "SELECT RAISE(ABORT, 'disk full (test)'); END;");
  testing::internal::CaptureStderr();
  advance(61s);
  // The failed commit shows in /readyz; the run actor handles its answer
  // before any later timer message.
  bool failing = eventually([&] { return call("GET", "/readyz", admin).status == 503; });
  auto unready = call("GET", "/readyz", admin);
  // Ticks without time passing: the retry is due 1 s after the failure.
  for (int i = 0; i < 5; ++i)
    tick();
  exec_sql(dir + "/mesh.db", "DROP TRIGGER refuse;");
  advance(1s);
  bool ended = becomes(id, "error");
  auto log = testing::internal::GetCapturedStderr();
  ASSERT_TRUE(failing) << log;
  EXPECT_NE(unready.raw.find("the store's last commit failed"), std::string::npos)
      << unready.raw;
  EXPECT_NE(unready.raw.find("disk full (test)"), std::string::npos) << unready.raw;
  ASSERT_TRUE(ended) << log;
  EXPECT_EQ(call("GET", "/readyz", admin).status, 200) << "a good commit clears it";
  EXPECT_EQ(get_run(id)["reason"], "no_agent_within_ttl");
  EXPECT_EQ(count_of(log, "not persisted"), 1u) << log;
  EXPECT_NE(log.find("not persisted (attempt 1, retrying)"), std::string::npos) << log;
  EXPECT_EQ(
      query_text(dir + "/mesh.db", "SELECT progress FROM runs WHERE id = '" + id + "'"),
      "")
      << "the stored row is meshd's again";
}

/// A delivery lease longer than agents.offline_after, so that an assigned
/// run's agent goes offline before its lease lapses.
class timer_retries_long_lease : public mesh_fixture {
protected:
  void configure(mesh_config& c) override { c.delivery_lease = c.offline_after + 1min; }
};

// This test ensures a requeue that cannot be stored when an agent goes
// offline (a full disk at that moment) is tried again: the run, assigned
// and not yet delivered (its lease longer than the agent's offline time),
// used to stay with the lost agent until that agent came back or meshd
// restarted.
TEST_F(timer_retries_long_lease, a_failed_requeue_of_a_lost_agents_run_is_tried_again) {
  auto a = register_agent("a", json::object(), json::array({"noop"}), 1);
  auto id = submit(json{{"plan", "noop"}}).body["id"].get<std::string>();
  ASSERT_TRUE(becomes(id, "pending"));
  exec_sql(dir + "/mesh.db", "CREATE TRIGGER refuse BEFORE UPDATE ON runs BEGIN "
                             "SELECT RAISE(ABORT, 'disk full (test)'); END;");
  testing::internal::CaptureStderr();
  advance(cfg.offline_after + 1s);
  bool failing = eventually([&] { return call("GET", "/readyz", admin).status == 503; });
  exec_sql(dir + "/mesh.db", "DROP TRIGGER refuse;");
  advance(1s);
  bool requeued = becomes(id, "created");
  auto log = testing::internal::GetCapturedStderr();
  ASSERT_TRUE(failing) << log;
  ASSERT_TRUE(requeued) << log;
  EXPECT_EQ(get_run(id)["reason"], "agent_offline");
  EXPECT_NE(log.find("requeue not persisted (attempt 1, retrying)"), std::string::npos)
      << log;
}

// This test ensures a run that goes back to the queue while it holds its
// concurrency key (its delivery lease lapsed) keeps its turn: it is placed
// again before a later run of the same key.
TEST_F(timers, a_requeued_key_holder_keeps_its_turn) {
  auto a = register_agent("a", json::object());
  auto first = submit(json{{"plan", "noop"}, {"concurrency_key", "ws"}})
                   .body["id"]
                   .get<std::string>();
  auto second = submit(json{{"plan", "noop"}, {"concurrency_key", "ws"}})
                    .body["id"]
                    .get<std::string>();
  ASSERT_EQ(a.take(1).size(), 1u);
  ASSERT_TRUE(eventually([&] { return get_run(first)["skadi_status"] == "sent"; }));
  advance(cfg.delivery_lease + 1s);
  ASSERT_TRUE(eventually([&] { return status_of(first) == "created"; }));
  ASSERT_TRUE(held(a));
  advance(cfg.delivery_lease); // the agent's hold for the lapse ends
  ASSERT_TRUE(eventually(
      [&] { return get_run(first)["attempts"] == 2 || status_of(second) == "pending"; }));
  EXPECT_EQ(status_of(first), "pending");
  EXPECT_EQ(status_of(second), "created") << "the later run took the key first";
}

// -- agents that do not start their runs ---------------------------------------

// This test ensures an agent that was delivered a run and did not start it
// within the delivery lease is held back for a lease: the run goes to
// another agent though the first had more free slots (it went straight back
// to it, round after round), a run submitted meanwhile waits and explain
// says why, the agent's record and /metrics show the hold; once the hold is
// over the agent takes runs again, and a run it starts clears its row.
TEST_F(timers, an_agent_that_does_not_start_its_runs_is_held_back_for_a_lease) {
  auto a = register_agent("a", json::object(), json::array({"noop"}), 2);
  auto first = submit(json{{"plan", "noop"}}).body["id"].get<std::string>();
  ASSERT_EQ(a.take(1).size(), 1u);
  ASSERT_TRUE(eventually([&] { return get_run(first)["skadi_status"] == "sent"; }));
  auto b = register_agent("b", json::object());
  EXPECT_EQ(agent_of(a)["lapsed_leases"], 0);
  EXPECT_TRUE(agent_of(a)["held_until"].is_null());
  advance(cfg.delivery_lease + 1s);
  auto lapsed_at = clock.now();
  auto got = b.take(1);
  ASSERT_EQ(got.size(), 1u) << get_run(first).dump();
  EXPECT_EQ(got[0]["id"], first) << "a, with two free slots to b's one, took it back";
  ASSERT_EQ(b.start(first).status, 200);
  ASSERT_TRUE(eventually([&] { return agent_of(a)["lapsed_leases"] == 1; }))
      << agent_of(a).dump();
  EXPECT_EQ(agent_of(a)["held_until"], to_rfc3339(lapsed_at + cfg.delivery_lease));
  EXPECT_EQ(metric("polymesh_agents_held_back"), 1);
  EXPECT_EQ(metric("polymesh_delivery_lease_lapses_total"), 1);
  // The agent is told too, in its poll's answer.
  auto told = a.poll().body;
  EXPECT_EQ(told["held_until"], to_rfc3339(lapsed_at + cfg.delivery_lease))
      << told.dump();
  EXPECT_EQ(told["lapsed_leases"], 1);

  auto second = submit(json{{"plan", "noop"}}).body["id"].get<std::string>();
  auto why = call("GET", "/v1/runs/" + second + "/explain", admin).body;
  ASSERT_EQ(why["agents"].size(), 2u) << why.dump();
  EXPECT_EQ(why["agents"][0]["agent_name"], "a");
  EXPECT_EQ(why["agents"][0]["reason"],
            "held back until " + to_rfc3339(lapsed_at + cfg.delivery_lease) +
                ": 1 run placed with it in a row not started within "
                "runs.delivery_lease (30s)");
  EXPECT_EQ(why["agents"][1]["reason"], "no free slot (1 of 1 in use)");
  EXPECT_NE(why["message"].get<std::string>().find("held back"), std::string::npos)
      << why.dump();

  advance(cfg.delivery_lease);
  got = a.take(1);
  ASSERT_EQ(got.size(), 1u) << get_run(second).dump();
  EXPECT_EQ(got[0]["id"], second);
  EXPECT_TRUE(a.poll().body["held_until"].is_null());
  EXPECT_TRUE(eventually([&] { return agent_of(a)["held_until"].is_null(); }));
  EXPECT_EQ(agent_of(a)["lapsed_leases"], 1) << "the row ends with a start";
  EXPECT_EQ(metric("polymesh_agents_held_back"), 0);
  ASSERT_EQ(a.start(second).status, 200);
  EXPECT_TRUE(eventually([&] { return agent_of(a)["lapsed_leases"] == 0; }))
      << agent_of(a).dump();
}

// This test ensures an agent removed (or deregistered) while held back is
// held back no more: its record, and /metrics' count of held agents, said
// so until the hold's time ran out.
TEST_F(timers, a_removed_agent_is_held_back_no_more) {
  auto a = register_agent("a", json::object());
  submit(json{{"plan", "noop"}});
  ASSERT_EQ(a.take(1).size(), 1u);
  advance(cfg.delivery_lease + 1s);
  ASSERT_TRUE(held(a));
  EXPECT_EQ(metric("polymesh_agents_held_back"), 1);
  ASSERT_EQ(call("DELETE", "/v1/agents/" + a.id, admin).status, 200);
  EXPECT_TRUE(eventually([&] { return metric("polymesh_agents_held_back") == 0; }));
  EXPECT_TRUE(agent_of(a)["held_until"].is_null()) << agent_of(a).dump();
  EXPECT_EQ(agent_of(a)["lapsed_leases"], 0);
}

class mesh_ends_at_once : public timers {
protected:
  void configure(mesh_config& c) override { c.cancel_grace = duration{0}; }
};

// This test ensures an end the mesh decides for a run the held agent started
// (here its timeout, with no grace) does not end the hold: the agent did not
// act. It did, and a wedged agent's runs ending so wiped its hold and row.
TEST_F(mesh_ends_at_once, an_end_the_mesh_decides_does_not_end_a_hold) {
  auto a = register_agent("a", json::object(), json::array({"noop"}), 2);
  auto started =
      submit(json{{"plan", "noop"}, {"timeout_s", 40}}).body["id"].get<std::string>();
  ASSERT_EQ(a.take(1).size(), 1u);
  ASSERT_EQ(a.start(started).status, 200);
  submit(json{{"plan", "noop"}});
  ASSERT_EQ(a.take(1).size(), 1u);
  advance(cfg.delivery_lease + 1s);
  ASSERT_TRUE(eventually([&] { return agent_of(a)["lapsed_leases"] == 1; }));
  advance(10s); // past the started run's timeout_s, within the hold
  // The timeout asks for the cancel; the grace (0) lapses at the next tick.
  ASSERT_TRUE(eventually([&] {
    tick();
    return status_of(started) == "error";
  }));
  EXPECT_EQ(reason_of(started), "timeout");
  // Nothing to wait for if it holds: a bounded look for the wrong outcome.
  EXPECT_FALSE(eventually([&] { return agent_of(a)["lapsed_leases"] == 0; }, 1s))
      << agent_of(a).dump();
  EXPECT_FALSE(agent_of(a)["held_until"].is_null());
}

class held_back_at_most : public timers {
protected:
  void configure(mesh_config& c) override { c.hold_back_max = 45s; }
};

// This test ensures an agent's holds double while it goes on not starting
// its runs, up to agents.hold_back_max, and that its next registration ends
// the hold and the row at once.
TEST_F(held_back_at_most, holds_double_up_to_the_most_and_a_registration_ends_them) {
  auto a = register_agent("a", json::object());
  auto id = submit(json{{"plan", "noop"}}).body["id"].get<std::string>();
  ASSERT_EQ(a.take(1).size(), 1u);
  advance(cfg.delivery_lease + 1s);
  ASSERT_TRUE(eventually([&] { return get_run(id)["status"] == "created"; }));
  ASSERT_TRUE(held(a));
  advance(cfg.delivery_lease); // the first hold: one lease
  ASSERT_EQ(a.take(1).size(), 1u);
  advance(cfg.delivery_lease + 1s);
  auto second_lapse = clock.now();
  ASSERT_TRUE(eventually([&] { return agent_of(a)["lapsed_leases"] == 2; }));
  EXPECT_EQ(agent_of(a)["held_until"], to_rfc3339(second_lapse + 45s))
      << "twice the lease (60s), at most 45s";
  auto again = register_agent("a", json::object());
  EXPECT_EQ(agent_of(again)["lapsed_leases"], 0);
  EXPECT_TRUE(agent_of(again)["held_until"].is_null());
  auto got = again.take(1);
  ASSERT_EQ(got.size(), 1u) << get_run(id).dump();
  EXPECT_EQ(got[0]["id"], id);
}

class never_held_back : public timers {
protected:
  void configure(mesh_config& c) override { c.hold_back_max = duration{0}; }
};

// This test ensures agents.hold_back_max 0 never holds an agent back: the
// lapsed run goes straight back to its only agent.
TEST_F(never_held_back, a_lapsed_run_goes_back_to_the_agent_at_once) {
  auto a = register_agent("a", json::object());
  auto id = submit(json{{"plan", "noop"}}).body["id"].get<std::string>();
  ASSERT_EQ(a.take(1).size(), 1u);
  advance(cfg.delivery_lease + 1s);
  ASSERT_TRUE(eventually([&] { return get_run(id)["attempts"] == 2; }));
  EXPECT_EQ(get_run(id)["assigned_agent"], a.id);
  EXPECT_TRUE(agent_of(a)["held_until"].is_null());
  EXPECT_TRUE(eventually([&] { return agent_of(a)["lapsed_leases"] == 1; }))
      << "the row is kept all the same";
  EXPECT_EQ(metric("polymesh_agents_held_back"), 0);
}

} // namespace
} // namespace polymesh::test
