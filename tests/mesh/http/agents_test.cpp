// Agent endpoints over real HTTP: registration superseding, deregistration,
// drain, runtime label changes, explain reasons and the agent list filters.
#include "mesh/domain/error.hpp"
#include "mesh/store/store.hpp"
#include "tests/support/mesh_fixture.hpp"

#include <httplib.h>
#include <map>

namespace polymesh::test {
namespace {

using agents = mesh_fixture;

std::string id_of(const response& r) {
  return r.body.value("id", "");
}

json names_of(const response& list) {
  json out = json::array();
  for (auto& a : list.body["agents"])
    out.push_back(a["name"]);
  return out;
}

// This test ensures registering again under the same name supersedes the
// session: the old token is 401, its running run ends error/agent_lost and
// its pending run goes back to created and reaches the new session.
TEST_F(agents, registering_the_same_name_supersedes_the_old_session) {
  auto old = register_agent("web-1", json{{"env", "dev"}}, json::array({"noop"}), 2);
  auto running = id_of(submit(json{{"plan", "noop"}}));
  auto pending = id_of(submit(json{{"plan", "noop"}}));
  ASSERT_EQ(old.take(2).size(), 2u);
  ASSERT_EQ(old.start(running).status, 200);

  auto fresh = register_agent("web-1", json{{"env", "dev"}}, json::array({"noop"}), 2);
  EXPECT_EQ(fresh.id, old.id) << "the name is the agent's identity";
  EXPECT_NE(fresh.token, old.token);
  auto stale = old.poll(0);
  EXPECT_EQ(stale.status, 401) << stale.raw;
  EXPECT_EQ(stale.body["error"]["code"], "unauthenticated");
  EXPECT_EQ(old.finish(running, "success").status, 401);

  EXPECT_TRUE(eventually([&] { return state_of(running).first == "error"; }));
  EXPECT_EQ(state_of(running).second, "agent_lost");
  auto got = fresh.take(1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0]["id"], pending);
  // The reassignment is stored with the next group commit after the offer.
  EXPECT_TRUE(eventually([&] {
    auto run = get_run(pending);
    return run["status"] == "pending" && run["assigned_agent"] == fresh.id &&
           run["attempts"].get<int>() >= 2;
  })) << get_run(pending).dump();
  ASSERT_EQ(fresh.start(pending).status, 200);
  EXPECT_EQ(call("GET", "/v1/agents", admin).body["agents"].size(), 1u);
}

// This test ensures a pending run of a superseded session goes to another
// matching agent when one is free.
TEST_F(agents, superseded_sessions_pending_run_is_reassigned_elsewhere) {
  auto old = register_agent("web-1", json{{"env", "dev"}});
  auto id = id_of(submit(json{{"plan", "noop"}, {"selector", "env=dev"}}));
  ASSERT_EQ(old.take(1).size(), 1u);
  auto other = register_agent("web-2", json{{"env", "dev"}});
  register_agent("web-1", json{{"env", "retired"}});
  auto got = other.take(1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0]["id"], id);
  // The poll carries a run as soon as it is offered; the stored assignment
  // lands with the next group commit (start waits for it).
  EXPECT_TRUE(eventually([&] { return get_run(id)["assigned_agent"] == other.id; }))
      << get_run(id).dump();
}

// This test ensures deregistration puts pending runs back to created and
// ends running runs canceled/agent_shutdown; the token then stops working.
TEST_F(agents, deregistration_requeues_pending_and_cancels_running) {
  auto agent = register_agent("leaving", json::object(), json::array({"noop"}), 2);
  auto running = id_of(submit(json{{"plan", "noop"}}));
  auto pending = id_of(submit(json{{"plan", "noop"}}));
  ASSERT_EQ(agent.take(2).size(), 2u);
  ASSERT_EQ(agent.start(running).status, 200);
  auto r = agent.deregister();
  ASSERT_EQ(r.status, 200) << r.raw;
  EXPECT_EQ(r.body["status"], "deregistered");
  EXPECT_TRUE(eventually([&] { return state_of(running).first == "canceled"; }));
  EXPECT_EQ(state_of(running).second, "agent_shutdown");
  EXPECT_TRUE(eventually([&] { return state_of(pending).first == "created"; }));
  EXPECT_EQ(agent.poll(0).status, 401);
  EXPECT_EQ(call("GET", "/v1/agents/leaving", admin).body["status"], "deregistered");
  auto again = call("POST", "/v1/agents/leaving/drain", admin);
  EXPECT_EQ(again.status, 409) << again.raw;
  auto relabel =
      call("PATCH", "/v1/agents/leaving", admin, json{{"labels", {{"tier", "gold"}}}});
  EXPECT_EQ(relabel.status, 409) << relabel.raw;
  EXPECT_EQ(call("GET", "/v1/agents/leaving", admin).body["labels"], json::object());
  // The requeued run reaches the next agent.
  auto next = register_agent("arriving", json::object());
  auto got = next.take(1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0]["id"], pending);
}

// This test ensures a delivered run whose cancel was requested before it
// started ends canceled when its agent goes away, instead of going back to the
// queue marked for cancel: there no poll would carry it and no timer end it,
// and it held a slot of the next agent for good. The user's cancel also wins
// for a run that named the agent (which would end `error/expired`).
TEST_F(agents, a_cancel_requested_run_of_a_leaving_agent_ends_canceled) {
  for (bool named : {false, true}) {
    std::string name = named ? "leaving-named" : "leaving-2";
    auto leaving = register_agent(name, json::object());
    auto request = json{{"plan", "noop"}};
    if (named) request["agent"] = name;
    auto id = id_of(submit(request));
    ASSERT_EQ(leaving.take(1).size(), 1u);
    ASSERT_TRUE(eventually([&] { return get_run(id)["skadi_status"] == "sent"; }));
    auto c = call("POST", "/v1/runs/" + id + "/cancel", admin);
    ASSERT_EQ(c.status, 200) << c.raw;
    ASSERT_EQ(c.body["cancel_requested"], true);
    ASSERT_EQ(leaving.deregister().status, 200);
    ASSERT_TRUE(becomes(id, "canceled")) << name;
    EXPECT_EQ(get_run(id)["reason"], "canceled_by_user") << name;
  }
  // The next agent's one slot is free for new work.
  auto next = register_agent("next-2", json::object());
  auto fresh = id_of(submit(json{{"plan", "noop"}}));
  auto got = next.take(1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0]["id"], fresh);
}

// This test ensures an admin can remove an agent by id, and that its runs
// say so: a running one ends canceled/agent_removed (not agent_shutdown, which
// is the agent's own leaving), a pending one goes back to created with reason
// agent_removed.
TEST_F(agents, admin_removes_an_agent) {
  auto agent = register_agent("doomed", json::object(), json::array({"noop"}), 2);
  auto running = id_of(submit(json{{"plan", "noop"}}));
  auto pending = id_of(submit(json{{"plan", "noop"}}));
  ASSERT_EQ(agent.take(2).size(), 2u);
  ASSERT_EQ(agent.start(running).status, 200);
  auto r = call("DELETE", "/v1/agents/" + agent.id, admin);
  ASSERT_EQ(r.status, 200) << r.raw;
  EXPECT_EQ(r.body["status"], "deregistered");
  EXPECT_EQ(agent.poll(0).status, 401);
  EXPECT_TRUE(eventually([&] { return state_of(running).first == "canceled"; }));
  EXPECT_EQ(state_of(running).second, "agent_removed");
  EXPECT_TRUE(eventually([&] { return state_of(pending).first == "created"; }));
  EXPECT_EQ(state_of(pending).second, "agent_removed");
}

// This test ensures a draining agent gets no new runs (explain says
// `draining`) while a run it already holds can still finish.
TEST_F(agents, draining_agent_gets_no_new_runs) {
  auto agent = register_agent("drainee", json::object(), json::array({"noop"}), 4);
  auto held = id_of(submit(json{{"plan", "noop"}}));
  ASSERT_EQ(agent.take(1).size(), 1u);
  ASSERT_EQ(agent.start(held).status, 200);
  auto d = call("POST", "/v1/agents/drainee/drain", admin);
  ASSERT_EQ(d.status, 200) << d.raw;
  EXPECT_EQ(d.body["status"], "draining");
  EXPECT_EQ(call("POST", "/v1/agents/drainee/drain", admin).status, 200) << "idempotent";

  auto id = id_of(submit(json{{"plan", "noop"}}));
  tick();
  auto polled = agent.poll(1);
  ASSERT_EQ(polled.status, 200);
  EXPECT_TRUE(polled.body["runs"].empty()) << polled.raw;
  EXPECT_EQ(get_run(id)["status"], "created");
  auto why = call("GET", "/v1/runs/" + id + "/explain", admin);
  ASSERT_EQ(why.body["agents"].size(), 1u) << why.raw;
  EXPECT_EQ(why.body["agents"][0]["reason"], "draining") << why.raw;
  EXPECT_EQ(agent.finish(held, "success").status, 200);
  EXPECT_EQ(get_run(held)["status"], "success");
}

// This test ensures undrain gives a drained agent runs again (the run that
// waited for it meanwhile included), is a no-op for an online agent, is for
// admins only, leaves a deregistered agent deregistered (it only lifts a
// drain kept for its next registration), and that an offline agent
// undrained comes back online instead of draining.
TEST_F(agents, undrain_gives_a_drained_agent_runs_again) {
  auto agent = register_agent("resting", json::object());
  ASSERT_EQ(call("POST", "/v1/agents/resting/drain", admin).status, 200);
  auto waiting = id_of(submit(json{{"plan", "noop"}}));
  tick();
  EXPECT_EQ(get_run(waiting)["status"], "created");

  EXPECT_EQ(call("POST", "/v1/agents/resting/undrain", agent.token).status, 403);
  EXPECT_EQ(call("POST", "/v1/agents/resting/undrain", make_token("submitter")).status,
            403);
  auto u = call("POST", "/v1/agents/resting/undrain", admin);
  ASSERT_EQ(u.status, 200) << u.raw;
  EXPECT_EQ(u.body["status"], "online");
  auto taken = agent.take(1);
  ASSERT_EQ(taken.size(), 1u);
  EXPECT_EQ(taken[0]["id"], waiting);
  auto again = call("POST", "/v1/agents/resting/undrain", admin);
  EXPECT_EQ(again.status, 200) << "a no-op for an online agent";
  EXPECT_EQ(again.body["status"], "online");

  // Drained, then silent: undrained while offline, it comes back online.
  ASSERT_EQ(call("POST", "/v1/agents/resting/drain", admin).status, 200);
  advance(cfg.offline_after + std::chrono::seconds{1});
  ASSERT_TRUE(eventually([&] {
    return call("GET", "/v1/agents/resting", admin).body["status"] == "offline";
  }));
  EXPECT_EQ(call("POST", "/v1/agents/resting/undrain", admin).body["status"], "offline");
  ASSERT_EQ(agent.poll(0).status, 200);
  EXPECT_TRUE(eventually([&] {
    return call("GET", "/v1/agents/resting", admin).body["status"] == "online";
  }));

  ASSERT_EQ(agent.deregister().status, 200);
  auto gone = call("POST", "/v1/agents/resting/undrain", admin);
  EXPECT_EQ(gone.status, 200) << gone.raw;
  EXPECT_EQ(gone.body["status"], "deregistered");
  EXPECT_EQ(call("POST", "/v1/agents/nobody/undrain", admin).status, 404);
}

// This test ensures an agent may drain itself with its own token (it does
// when told to stop) but not another agent, and a submitter may not drain.
TEST_F(agents, an_agent_may_drain_itself_and_no_other) {
  auto self = register_agent("self-drain", json::object());
  auto other = register_agent("bystander", json::object());
  auto foreign = call("POST", "/v1/agents/" + other.id + "/drain", self.token);
  EXPECT_EQ(foreign.status, 403) << foreign.raw;
  EXPECT_EQ(
      call("POST", "/v1/agents/" + other.id + "/drain", make_token("submitter")).status,
      403);
  EXPECT_EQ(call("GET", "/v1/agents/" + other.id, admin).body["status"], "online");
  auto own = call("POST", "/v1/agents/" + self.id + "/drain", self.token);
  ASSERT_EQ(own.status, 200) << own.raw;
  EXPECT_EQ(own.body["status"], "draining");
}

// This test ensures PATCH replaces an agent's labels and the next
// assignment uses them.
TEST_F(agents, patched_labels_take_effect_for_the_next_assignment) {
  auto agent = register_agent("mover", json{{"env", "dev"}});
  auto id = id_of(submit(json{{"plan", "noop"}, {"selector", "env=prod"}}));
  tick();
  auto why = call("GET", "/v1/runs/" + id + "/explain", admin);
  ASSERT_EQ(why.body["agents"].size(), 1u) << why.raw;
  EXPECT_NE(why.body["agents"][0]["reason"].get<std::string>().find("env=prod"),
            std::string::npos)
      << why.raw;
  EXPECT_TRUE(agent.poll(0).body["runs"].empty());

  auto bad =
      call("PATCH", "/v1/agents/mover", admin, json{{"labels", {{"env", "pr od"}}}});
  EXPECT_EQ(bad.status, 400) << bad.raw;
  EXPECT_EQ(call("GET", "/v1/agents/mover", admin).body["labels"],
            (json{{"env", "dev"}}));

  auto p = call("PATCH", "/v1/agents/mover", admin, json{{"labels", {{"env", "prod"}}}});
  ASSERT_EQ(p.status, 200) << p.raw;
  EXPECT_EQ(p.body["labels"], (json{{"env", "prod"}}));
  auto got = agent.take(1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0]["id"], id);
  // And back: a run for the old labels no longer matches.
  auto later = id_of(submit(json{{"plan", "noop"}, {"selector", "env=dev"}}));
  tick();
  EXPECT_EQ(get_run(later)["status"], "created");
}

// This test ensures a change of an agent's labels may be made on the
// condition that they are what the client read: GET and PATCH answer the
// labels' ETag, a PATCH whose If-Match names another version is 412 and
// changes nothing, `*` and the current tag pass, a weak tag never matches,
// and a malformed If-Match is 400. Two read-edit-writes at once (`meshctl
// agents label`) lost one of the edits.
TEST_F(agents, a_labels_change_may_be_conditional_on_what_was_read) {
  register_agent("cond", json{{"env", "dev"}});
  httplib::Client cli{"127.0.0.1", port};
  auto get = [&] {
    auto r = cli.Get("/v1/agents/cond", {{"Authorization", "Bearer " + admin}});
    EXPECT_TRUE(r);
    return r ? r->get_header_value("ETag") : std::string{};
  };
  auto patch = [&](const json& labels, const std::string& if_match) {
    httplib::Headers h{{"Authorization", "Bearer " + admin}};
    if (!if_match.empty()) h.emplace("If-Match", if_match);
    auto r = cli.Patch("/v1/agents/cond", h, json{{"labels", labels}}.dump(),
                       "application/json");
    EXPECT_TRUE(r);
    return r ? std::make_tuple(r->status, r->get_header_value("ETag"), r->body)
             : std::make_tuple(0, std::string{}, std::string{});
  };
  auto labels = [&] { return call("GET", "/v1/agents/cond", admin).body["labels"]; };
  auto read = get();
  ASSERT_EQ(read.size(), 34u) << read;
  EXPECT_EQ(read.front(), '"');

  // Another edit lands first: the one made from the older read is refused.
  auto [s1, tag1, b1] = patch(json{{"env", "dev"}, {"a", "1"}}, read);
  ASSERT_EQ(s1, 200) << b1;
  EXPECT_NE(tag1, read);
  EXPECT_EQ(tag1, get());
  auto [s2, tag2, b2] = patch(json{{"env", "dev"}, {"b", "2"}}, read);
  EXPECT_EQ(s2, 412) << b2;
  EXPECT_NE(b2.find("\"precondition_failed\""), std::string::npos) << b2;
  EXPECT_NE(b2.find("\"If-Match\""), std::string::npos) << b2;
  EXPECT_NE(b2.find("changed since they were read"), std::string::npos) << b2;
  EXPECT_EQ(labels(), (json{{"env", "dev"}, {"a", "1"}}));

  // The current tag, in a list or alone, and `*` pass; a weak one does not.
  auto [s3, tag3, b3] =
      patch(json{{"env", "dev"}, {"a", "1"}, {"b", "2"}}, "\"x\", " + tag1);
  EXPECT_EQ(s3, 200) << b3;
  auto [s4, tag4, b4] = patch(json{{"env", "prod"}}, "W/" + tag3);
  EXPECT_EQ(s4, 412) << b4;
  auto [s5, tag5, b5] = patch(json{{"env", "prod"}}, "*");
  EXPECT_EQ(s5, 200) << b5;
  EXPECT_EQ(labels(), (json{{"env", "prod"}}));
  // Equal labels, equal tags.
  auto [s6, tag6, b6] = patch(json{{"env", "dev"}}, {});
  EXPECT_EQ(s6, 200) << b6;
  EXPECT_EQ(tag6, read);

  for (auto bad : {"abc", "\"open", ","}) {
    auto [s, tag, b] = patch(json{{"env", "x"}}, bad);
    EXPECT_EQ(s, 400) << bad << ": " << b;
    EXPECT_NE(b.find("\"If-Match\""), std::string::npos) << b;
  }
  EXPECT_EQ(labels(), (json{{"env", "dev"}}));
}

// This test ensures an agent a scoped token registered cannot be given
// labels outside that scope (it took runs of another scope, and its own
// token's next registration was refused for good: `agents remove` did not
// help), labels inside it can; and that an agent stored with labels outside
// its scope by an older meshd registers again with a token of that scope.
TEST_F(agents, labels_stay_within_the_scope_the_agent_registered_under) {
  auto dev = make_token("registration", "env=dev");
  auto reg = [&] {
    return call(
        "POST", "/v1/agents/register", dev,
        json{{"name", "dev-1"}, {"labels", {{"env", "dev"}}}, {"plans", {"noop"}}});
  };
  ASSERT_EQ(reg().status, 201);

  auto out =
      call("PATCH", "/v1/agents/dev-1", admin, json{{"labels", {{"env", "prod"}}}});
  EXPECT_EQ(out.status, 403) << out.raw;
  EXPECT_EQ(out.body["error"]["field"], "labels") << out.raw;
  EXPECT_NE(out.body["error"]["message"].get<std::string>().find(
                "labels outside the scope of the token agent 'dev-1' registered with "
                "(env=dev)"),
            std::string::npos)
      << out.raw;
  EXPECT_EQ(call("GET", "/v1/agents/dev-1", admin).body["labels"],
            (json{{"env", "dev"}}));

  auto in = call("PATCH", "/v1/agents/dev-1", admin,
                 json{{"labels", {{"env", "dev"}, {"tier", "gold"}}}});
  EXPECT_EQ(in.status, 200) << in.raw;

  stop_mesh();
  exec_sql(dir + "/mesh.db", "UPDATE agents SET labels = '{\"env\":\"prod\"}' WHERE "
                             "name = 'dev-1';");
  start_mesh();
  auto again = reg();
  EXPECT_EQ(again.status, 201) << again.raw;
  EXPECT_EQ(call("GET", "/v1/agents/dev-1", admin).body["labels"],
            (json{{"env", "dev"}}));
}

// This test ensures explain names, per agent, why it is not a candidate:
// offline, draining, lacks the plan, failed selector requirement, no free
// slot; and reports an assigned run as assigned.
TEST_F(agents, explain_names_every_reason) {
  auto gone = register_agent("a-gone", json{{"env", "dev"}});
  advance(cfg.offline_after + std::chrono::seconds{1});
  ASSERT_TRUE(eventually([&] {
    return call("GET", "/v1/agents/a-gone", admin).body["status"] == "offline";
  }));
  auto busy = register_agent("b-busy", json{{"env", "dev"}});
  auto first = id_of(submit(json{{"plan", "noop"}, {"selector", "env=dev"}}));
  ASSERT_EQ(busy.take(1).size(), 1u);
  register_agent("c-draining", json{{"env", "dev"}});
  ASSERT_EQ(call("POST", "/v1/agents/c-draining/drain", admin).status, 200);
  register_agent("d-noplan", json{{"env", "dev"}}, json::array({"other"}));
  register_agent("e-prod", json{{"env", "prod"}});

  auto id = id_of(submit(json{{"plan", "noop"}, {"selector", "env=dev"}}));
  tick();
  auto why = call("GET", "/v1/runs/" + id + "/explain", make_token("reader"));
  ASSERT_EQ(why.status, 200) << why.raw;
  EXPECT_EQ(why.body["assigned"], false);
  std::map<std::string, std::string> reasons;
  for (auto& a : why.body["agents"]) {
    EXPECT_FALSE(a["candidate"].get<bool>()) << a.dump();
    reasons[a["agent_name"].get<std::string>()] =
        a["reason"].is_string() ? a["reason"].get<std::string>() : "";
  }
  ASSERT_EQ(reasons.size(), 5u) << why.raw;
  EXPECT_EQ(reasons["a-gone"], "offline");
  EXPECT_NE(reasons["b-busy"].find("no free slot"), std::string::npos)
      << reasons["b-busy"];
  EXPECT_EQ(reasons["c-draining"], "draining");
  EXPECT_NE(reasons["d-noplan"].find("lacks plan noop"), std::string::npos);
  EXPECT_NE(reasons["e-prod"].find("env=dev"), std::string::npos) << reasons["e-prod"];
  // b-busy could take it but for its slot: the run waits, nothing is wrong.
  EXPECT_EQ(why.body["message"],
            "every agent that could take this run is busy: it waits for a free slot");
  auto nobody = id_of(submit(json{{"plan", "noop"}, {"selector", "env=qa"}}));
  tick();
  EXPECT_EQ(call("GET", "/v1/runs/" + nobody + "/explain", admin).body["message"],
            "no agent can take this run; see each agent's reason");
  // Only the draining agent could take it: an undrain would.
  auto after_drain = id_of(
      submit(json{{"plan", "noop"}, {"selector", "env=dev"}, {"agent", "c-draining"}}));
  tick();
  EXPECT_EQ(call("GET", "/v1/runs/" + after_drain + "/explain", admin).body["message"],
            "no agent can take this run now; a draining agent could take it once "
            "undrained (see each agent's reason)");

  auto assigned = call("GET", "/v1/runs/" + first + "/explain", admin);
  ASSERT_EQ(assigned.status, 200);
  EXPECT_EQ(assigned.body["assigned"], true);
  EXPECT_EQ(assigned.body["assigned_agent"], busy.id);
}

// This test ensures GET /v1/agents filters by selector, status and plan,
// and GET /v1/agents/{id-or-name} finds an agent either way.
TEST_F(agents, list_filters_by_selector_status_and_plan) {
  auto a = register_agent("a-dev", json{{"env", "dev"}, {"cores", "8"}},
                          json::array({"noop", "shell"}));
  register_agent("b-prod", json{{"env", "prod"}, {"cores", "64"}});
  register_agent("c-bare", json::object(), json::array({"shell"}));
  ASSERT_EQ(call("POST", "/v1/agents/b-prod/drain", admin).status, 200);
  auto reader = make_token("reader");
  auto list = [&](const std::string& q) {
    return names_of(call("GET", "/v1/agents" + q, reader));
  };
  EXPECT_EQ(list(""), json::array({"a-dev", "b-prod", "c-bare"}));
  EXPECT_EQ(list("?selector=env%3Ddev"), json::array({"a-dev"}));
  EXPECT_EQ(list("?selector=env%21%3Dprod"), json::array({"a-dev", "c-bare"}));
  EXPECT_EQ(list("?selector=cores%3E10"), json::array({"b-prod"}));
  EXPECT_EQ(list("?selector=%21env"), json::array({"c-bare"}));
  EXPECT_EQ(list("?status=draining"), json::array({"b-prod"}));
  EXPECT_EQ(list("?status=online&plan=shell"), json::array({"a-dev", "c-bare"}));
  EXPECT_EQ(list("?plan=nothing"), json::array());
  auto bad_plan = call("GET", "/v1/agents?plan=.x", reader);
  EXPECT_EQ(bad_plan.status, 400) << bad_plan.raw;
  EXPECT_EQ(bad_plan.body["error"]["field"], "plan");

  auto by_name = call("GET", "/v1/agents/a-dev", reader);
  ASSERT_EQ(by_name.status, 200);
  EXPECT_EQ(by_name.body["id"], a.id);
  auto by_id = call("GET", "/v1/agents/" + a.id, reader);
  EXPECT_EQ(by_id.body["name"], "a-dev");
  EXPECT_EQ(by_id.body["plans"], json::array({"noop", "shell"}));

  auto bad = call("GET", "/v1/agents?selector=env%20in%20(a", reader);
  EXPECT_EQ(bad.status, 400) << bad.raw;
  EXPECT_EQ(bad.body["error"]["code"], "invalid_selector");
  EXPECT_EQ(bad.body["error"]["field"], "selector");
  EXPECT_TRUE(bad.body["error"]["position"].is_number_integer()) << bad.raw;
}

// This test ensures registration answers the session fields of the
// contract.
TEST_F(agents, registration_answers_the_session_fields) {
  auto r = call("POST", "/v1/agents/register", make_token("registration"),
                json{{"name", "full-1"},
                     {"labels", {{"env", "dev"}}},
                     {"plans", {"noop"}},
                     {"version", "1.2.3"},
                     {"hostname", "host-1"}});
  ASSERT_EQ(r.status, 201) << r.raw;
  for (auto* key : {"id", "name", "access_token", "token_expires_at",
                    "token_expires_in_s", "poll_wait_max_s", "heartbeat_interval_s"})
    EXPECT_TRUE(r.body.contains(key)) << key;
  // The token's life (agents.token_ttl, 1 h by default) as seconds from now.
  EXPECT_EQ(r.body["token_expires_in_s"], 3600) << r.raw;
  auto a = call("GET", "/v1/agents/full-1", admin);
  EXPECT_EQ(a.body["capacity"], 1) << "capacity defaults to one slot";
  EXPECT_EQ(a.body["version"], "1.2.3");
  EXPECT_EQ(a.body["hostname"], "host-1");
  EXPECT_EQ(a.body["status"], "online");
}

// This test ensures a second agent started elsewhere under a name in use
// does not take the name: a registration from another installation on
// another host is refused 409 `name_in_use` while the agent is connected,
// changing nothing (its session, token and running run stay), also after a
// restart of meshd. The same installation (a crash restart, also with a new
// host name), the same host, or a registration without an installation
// supersedes as before; the name is free once the agent deregisters, goes
// offline or is removed.
TEST_F(agents, another_installation_cannot_take_a_connected_agents_name) {
  auto reg = make_token("registration");
  auto registration = [&](const std::string& instance, const std::string& host) {
    json body{{"name", "web-1"},
              {"labels", {{"env", "dev"}}},
              {"plans", {"noop"}},
              {"hostname", host}};
    if (!instance.empty()) body["instance"] = instance;
    return call("POST", "/v1/agents/register", reg, body);
  };
  auto registered_at = [&] {
    return call("GET", "/v1/agents/web-1", admin).body["registered_at"];
  };
  // The agent a registration answered.
  auto agent_of = [&](const response& r) {
    EXPECT_EQ(r.status, 201) << r.raw;
    scripted_agent out;
    out.port = port;
    out.id = r.body.value("id", "");
    out.token = r.body.value("access_token", "");
    return out;
  };
  auto a = agent_of(registration("inst-a", "host-a"));
  auto run = id_of(submit(json{{"plan", "noop"}}));
  ASSERT_EQ(a.take(1).size(), 1u);
  ASSERT_EQ(a.start(run).status, 200);

  auto refused = [&](const std::string& why) {
    auto r = registration("inst-b", "host-b");
    EXPECT_EQ(r.status, 409) << why << ": " << r.raw;
    EXPECT_EQ(r.body["error"]["code"], "name_in_use") << r.raw;
    EXPECT_EQ(r.body["error"]["field"], "name") << r.raw;
    auto msg = r.body["error"]["message"].get<std::string>();
    EXPECT_NE(msg.find("'web-1' is connected from another installation on host "
                       "'host-a' (session 1"),
              std::string::npos)
        << msg;
    EXPECT_NE(msg.find("meshctl agents remove web-1"), std::string::npos) << msg;
  };
  auto since = registered_at();
  refused("connected");
  EXPECT_EQ(registered_at(), since) << "no new session";
  EXPECT_EQ(a.poll(0).status, 200) << "the connected agent's token still works";
  EXPECT_EQ(get_run(run)["status"], "running");
  restart_mesh();
  a.port = port;
  refused("after a restart of meshd");
  EXPECT_EQ(a.poll(0).status, 200);
  EXPECT_EQ(get_run(run)["status"], "running");
  EXPECT_EQ(registered_at(), since);

  // The same installation under a new host name: a restart; it supersedes.
  auto again = registration("inst-a", "host-a2");
  ASSERT_EQ(again.status, 201) << again.raw;
  EXPECT_EQ(again.body["session"], 2);
  EXPECT_EQ(a.poll(0).status, 401);
  // The same host, another installation (a container started again with an
  // empty work directory): supersedes.
  EXPECT_EQ(registration("inst-c", "host-a2").body["session"], 3);
  // Without an installation, as before it existed: supersedes.
  EXPECT_EQ(registration("", "host-z").body["session"], 4);
  EXPECT_EQ(registration("inst-d", "host-d").body["session"], 5)
      << "the session had none";

  // Once it is offline, or deregistered, or removed, the name is free.
  EXPECT_EQ(registration("inst-b", "host-b").status, 409);
  clock.advance(cfg.offline_after + std::chrono::seconds{1});
  tick();
  ASSERT_TRUE(eventually([&] {
    return call("GET", "/v1/agents/web-1", admin).body["status"] == "offline";
  }));
  auto b = agent_of(registration("inst-b", "host-b"));
  EXPECT_EQ(registration("inst-e", "host-e").status, 409);
  ASSERT_EQ(b.deregister().status, 200);
  ASSERT_EQ(registration("inst-e", "host-e").status, 201);
  EXPECT_EQ(registration("inst-f", "host-f").status, 409);
  ASSERT_EQ(call("DELETE", "/v1/agents/web-1", admin).status, 200);
  EXPECT_EQ(registration("inst-f", "host-f").status, 201);
}

// This test ensures an `instance` the mesh cannot keep is a 400 naming it.
TEST_F(agents, a_bad_instance_is_refused) {
  auto reg = make_token("registration");
  for (auto& bad : {json(""), json("a b"), json(std::string(65, 'x')), json(7),
                    json("inst/1"), json("é")}) {
    auto r = call("POST", "/v1/agents/register", reg,
                  json{{"name", "web-1"}, {"plans", {"noop"}}, {"instance", bad}});
    EXPECT_EQ(r.status, 400) << bad.dump() << ": " << r.raw;
    EXPECT_EQ(r.body["error"]["field"], "instance") << r.raw;
  }
  EXPECT_EQ(call("GET", "/v1/agents/web-1", admin).status, 404) << "nothing registered";
  auto ok = call("POST", "/v1/agents/register", reg,
                 json{{"name", "web-1"},
                      {"plans", {"noop"}},
                      {"instance", std::string(64, 'x')},
                      {"hostname", "h"}});
  EXPECT_EQ(ok.status, 201) << ok.raw;
}

class forgetting : public mesh_fixture {
protected:
  void configure(mesh_config& c) override { c.forget_after = std::chrono::minutes{30}; }

  /// Moves the clock on while `alive` keeps polling, then runs the routines.
  void pass(duration d, const scripted_agent& alive) {
    clock.advance(d);
    ASSERT_EQ(alive.poll(0).status, 200);
    tick();
  }

  json listed() { return names_of(call("GET", "/v1/agents", admin)); }
};

// This test ensures agents offline or deregistered for agents.forget_after
// are forgotten: gone from listings and lookups, their tokens dead, their
// names free, their rows deleted (they were kept for ever), and not back
// after a restart; their runs keep their id, and a live agent is never
// forgotten.
TEST_F(forgetting, quiet_agents_are_forgotten_after_forget_after) {
  auto left = register_agent("left", json::object());
  auto quiet = register_agent("quiet", json::object());
  auto alive = register_agent("alive", json::object());
  auto run = id_of(submit(json{{"plan", "noop"}, {"agent", "quiet"}}));
  ASSERT_EQ(quiet.take(1).size(), 1u);
  ASSERT_EQ(quiet.finish(run, "success").status, 200);
  ASSERT_EQ(left.deregister().status, 200);

  pass(std::chrono::minutes{20}, alive); // quiet goes offline; nothing is forgotten
  ASSERT_TRUE(eventually([&] {
    return call("GET", "/v1/agents/quiet", admin).body["status"] == "offline";
  }));
  EXPECT_EQ(listed(), json::array({"alive", "left", "quiet"}));

  const auto rows = [&] {
    return query_text(dir + "/mesh.db", "SELECT group_concat(name || ':' || status, ' ')"
                                        " FROM (SELECT name, status FROM agents"
                                        " ORDER BY name)");
  };
  EXPECT_EQ(rows(), "alive:online left:deregistered quiet:offline");
  pass(std::chrono::minutes{11}, alive); // 31 min since left and quiet were heard
  EXPECT_EQ(listed(), json::array({"alive"}));
  EXPECT_EQ(rows(), "alive:online");
  EXPECT_EQ(call("GET", "/v1/agents/quiet", admin).status, 404);
  EXPECT_EQ(call("GET", "/v1/agents/" + quiet.id, admin).status, 404);
  EXPECT_EQ(quiet.poll(0).status, 401); // its token was revoked
  EXPECT_EQ(get_run(run)["assigned_agent"], quiet.id);
  EXPECT_EQ(call("GET", "/v1/runs?agent=" + quiet.id, admin).body["runs"].size(), 1u);
  // A run naming it is refused, as for any unknown name.
  EXPECT_EQ(submit(json{{"plan", "noop"}, {"agent", "quiet"}}).status, 404);

  // The name is free: registering it makes a new agent, which takes runs.
  auto again = register_agent("quiet", json::object());
  EXPECT_NE(again.id, quiet.id);
  auto named = submit(json{{"plan", "noop"}, {"agent", "quiet"}});
  ASSERT_EQ(named.status, 201) << named.raw;
  EXPECT_EQ(again.take(1).size(), 1u);

  // A row an earlier version kept of an agent forgotten long ago goes at
  // the next start.
  exec_sql(dir + "/mesh.db",
           "CREATE TABLE t AS SELECT * FROM agents WHERE name = 'alive';"
           "UPDATE t SET id = 'agt_legacy', name = 'legacy',"
           " status = 'deregistered', last_seen_at = 0;"
           "INSERT INTO agents SELECT * FROM t; DROP TABLE t;");
  EXPECT_EQ(rows(), "alive:online legacy:deregistered quiet:online");
  restart_mesh();
  EXPECT_EQ(listed(), json::array({"alive", "quiet"}));
  EXPECT_EQ(call("GET", "/v1/agents/quiet", admin).body["id"], again.id);
  EXPECT_EQ(rows(), "alive:online quiet:online");
}

// This test ensures the name of an agent that left stays its own across a
// restart of meshd until it is forgotten (a restart used to free it): a
// registration token scoped elsewhere cannot take the name of a prod agent
// that stopped (and then receive the runs sent to that name), one of its
// own scope can; once forgotten, the name is free. Agents that left are
// not loaded as agents after a restart (listings, lookups).
TEST_F(forgetting, a_left_agent_keeps_its_name_across_a_restart_until_forgotten) {
  auto prod = make_token("registration", "env=prod");
  auto dev = make_token("registration", "env=dev");
  auto as = [](const char* name, const char* env) {
    return json{{"name", name}, {"labels", {{"env", env}}}, {"plans", {"noop"}}};
  };
  for (auto* name : {"prod-1", "prod-2"}) {
    auto first = call("POST", "/v1/agents/register", prod, as(name, "prod"));
    ASSERT_EQ(first.status, 201) << first.raw;
    scripted_agent a;
    a.port = port;
    a.id = first.body.value("id", "");
    a.token = first.body.value("access_token", "");
    ASSERT_EQ(a.deregister().status, 200);
  }
  EXPECT_EQ(call("POST", "/v1/agents/register", dev, as("prod-1", "dev")).status, 403);

  restart_mesh();
  auto taken = call("POST", "/v1/agents/register", dev, as("prod-1", "dev"));
  EXPECT_EQ(taken.status, 403) << taken.raw;
  EXPECT_EQ(taken.body["error"]["field"], "name") << taken.raw;
  EXPECT_EQ(call("GET", "/v1/agents/prod-1", admin).status, 404);
  EXPECT_EQ(listed(), json::array());
  auto back = call("POST", "/v1/agents/register", prod, as("prod-2", "prod"));
  EXPECT_EQ(back.status, 201) << "its own scope may: " << back.raw;

  // Forgotten 30 minutes after it was last heard from: the name is free.
  clock.advance(std::chrono::minutes{31});
  tick();
  auto free = call("POST", "/v1/agents/register", dev, as("prod-1", "dev"));
  EXPECT_EQ(free.status, 201) << free.raw;
}

// This test ensures the row of an agent that left before a restart (only
// its name is kept then, for its scope) is deleted when it is forgotten,
// exactly `agents.forget_after` after it was last heard from: it stayed
// until a sweep forgot another agent, or the next start.
TEST_F(forgetting, the_row_of_an_agent_that_left_before_a_restart_goes_when_forgotten) {
  auto left = register_agent("left", json::object());
  auto alive = register_agent("alive", json::object());
  ASSERT_EQ(left.deregister().status, 200);
  restart_mesh();
  alive.port = port;
  const auto rows = [&] {
    return query_text(dir + "/mesh.db", "SELECT group_concat(name, ' ')"
                                        " FROM (SELECT name FROM agents ORDER BY name)");
  };
  EXPECT_EQ(rows(), "alive left");
  pass(std::chrono::minutes{30}, alive); // exactly forget_after
  EXPECT_EQ(rows(), "alive");
}

// This test ensures that of several stored agents of one name that left (a
// restart used to let a left agent's name register under a new id), the
// last one's labels keep the name, and none is listed.
TEST_F(forgetting, of_several_stored_agents_of_a_name_the_last_keeps_it) {
  stop_mesh();
  {
    auto db = open_sqlite_store(cfg.database_path());
    ASSERT_TRUE(db) << message_of(db.error());
    agent_record older;
    older.id = "agt_older";
    older.name = "dup";
    older.labels = {{"env", "prod"}};
    older.plans = {"noop"};
    older.status = agent_status::deregistered;
    older.registered_at = older.last_seen_at = clock.now() - std::chrono::minutes{5};
    auto later = older;
    later.id = "agt_later";
    later.labels = {{"env", "dev"}};
    later.last_seen_at = clock.now() - std::chrono::minutes{2};
    auto quiet = older;
    quiet.id = "agt_quiet";
    quiet.name = "dup2";
    quiet.status = agent_status::offline;
    auto applied = (*db)->apply({put_agent{older}, put_agent{later}, put_agent{quiet}});
    ASSERT_TRUE(applied) << message_of(applied.error());
  }
  start_mesh();
  EXPECT_EQ(listed(), json::array({"dup2"}));
  auto as = [](const char* env) {
    return json{{"name", "dup"}, {"labels", {{"env", env}}}, {"plans", {"noop"}}};
  };
  auto by_prod = call("POST", "/v1/agents/register",
                      make_token("registration", "env=prod"), as("prod"));
  EXPECT_EQ(by_prod.status, 403) << by_prod.raw;
  auto by_dev = call("POST", "/v1/agents/register", make_token("registration", "env=dev"),
                     as("dev"));
  EXPECT_EQ(by_dev.status, 201) << by_dev.raw;
}

// This test ensures an agent offline across a restart is forgotten counting
// from when it was last heard, not from the restart.
TEST_F(forgetting, a_restart_does_not_reset_an_offline_agents_clock) {
  auto quiet = register_agent("quiet", json::object());
  advance(std::chrono::minutes{10});
  ASSERT_TRUE(eventually([&] {
    return call("GET", "/v1/agents/quiet", admin).body["status"] == "offline";
  }));
  restart_mesh();
  advance(std::chrono::minutes{10});
  EXPECT_EQ(listed(), json::array({"quiet"}));
  advance(std::chrono::minutes{11});
  EXPECT_EQ(listed(), json::array()) << "forgotten 31 min after it was last heard";
}

} // namespace
} // namespace polymesh::test
