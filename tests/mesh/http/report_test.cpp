// POST /v1/agents/{id}/report: starts, finishes and a long-poll in one
// request, each item answered on its own.
#include "tests/support/mesh_fixture.hpp"

#include <future>
#include <httplib.h>

namespace polymesh::test {
namespace {

using report = mesh_fixture;

json finished_item(const std::string& run, const std::string& status,
                   const std::string& result = {}) {
  json j{{"run", run}, {"status", status}, {"exit_code", status == "success" ? 0 : 3}};
  if (!result.empty()) j["result"] = result;
  return j;
}

// This test ensures one report starts two runs and finishes one of them: the
// finished run records its start, result and exit code, the other is
// running, and every item says ok.
TEST_F(report, starts_and_finishes_in_one_request) {
  auto agent = register_agent("r-1", json::object(), json::array({"noop"}), 2);
  auto a = submit(json{{"plan", "noop"}});
  auto b = submit(json{{"plan", "noop"}});
  ASSERT_EQ(a.status, 201) << a.raw;
  ASSERT_EQ(b.status, 201) << b.raw;
  auto runs = agent.take(2);
  ASSERT_EQ(runs.size(), 2u);
  auto first = runs[0]["id"].get<std::string>();
  auto second = runs[1]["id"].get<std::string>();

  auto r = agent.report(
      json{{"started", json::array({first, second})},
           {"finished", json::array({finished_item(first, "success", "done")})}});
  ASSERT_EQ(r.status, 200) << r.raw;
  ASSERT_EQ(r.body["started"].size(), 2u) << r.raw;
  ASSERT_EQ(r.body["finished"].size(), 1u) << r.raw;
  for (auto& item : r.body["started"])
    EXPECT_TRUE(item["ok"].get<bool>()) << r.raw;
  EXPECT_EQ(r.body["started"][0]["run"], first);
  EXPECT_EQ(r.body["started"][1]["status"], "running");
  EXPECT_EQ(r.body["finished"][0]["run"], first);
  EXPECT_EQ(r.body["finished"][0]["status"], "success");
  EXPECT_TRUE(r.body["runs"].is_array());
  EXPECT_TRUE(r.body["cancel"].is_array());

  auto done = get_run(first);
  EXPECT_EQ(done["status"], "success");
  EXPECT_EQ(done["result"], "done");
  EXPECT_EQ(done["exit_code"], 0);
  EXPECT_FALSE(done["started_at"].is_null());
  EXPECT_FALSE(done["finished_at"].is_null());
  EXPECT_EQ(get_run(second)["status"], "running");

  // A repeat is idempotent, as with the single-run endpoint.
  auto again =
      agent.report(json{{"finished", json::array({finished_item(first, "success")})}});
  ASSERT_EQ(again.status, 200) << again.raw;
  EXPECT_TRUE(again.body["finished"][0]["ok"].get<bool>()) << again.raw;
}

// This test ensures items fail one by one with the error and status the
// single-run endpoints give, and a failed item changes nothing.
TEST_F(report, items_fail_on_their_own) {
  auto mine = register_agent("mine", json{{"team", "a"}});
  auto other = register_agent("other", json{{"team", "b"}});
  auto own = submit(json{{"plan", "noop"}, {"selector", "team=a"}});
  auto foreign = submit(json{{"plan", "noop"}, {"selector", "team=b"}});
  ASSERT_EQ(own.status, 201);
  ASSERT_EQ(foreign.status, 201);
  auto own_id = own.body["id"].get<std::string>();
  auto foreign_id = foreign.body["id"].get<std::string>();
  ASSERT_EQ(mine.take(1).size(), 1u);
  ASSERT_EQ(other.take(1).size(), 1u);
  ASSERT_TRUE(becomes(foreign_id, "pending"));

  auto r =
      mine.report(json{{"started", json::array({own_id, foreign_id, "no-such-run"})},
                       {"finished", json::array({finished_item(foreign_id, "error")})}});
  ASSERT_EQ(r.status, 200) << r.raw;
  EXPECT_TRUE(r.body["started"][0]["ok"].get<bool>()) << r.raw;
  EXPECT_FALSE(r.body["started"][1]["ok"].get<bool>()) << r.raw;
  EXPECT_EQ(r.body["started"][1]["http_status"], 403) << r.raw;
  EXPECT_EQ(r.body["started"][1]["error"]["code"], "forbidden") << r.raw;
  EXPECT_EQ(r.body["started"][2]["http_status"], 404) << r.raw;
  EXPECT_FALSE(r.body["finished"][0]["ok"].get<bool>()) << r.raw;
  EXPECT_EQ(r.body["finished"][0]["http_status"], 403) << r.raw;

  EXPECT_EQ(get_run(own_id)["status"], "running");
  EXPECT_EQ(get_run(foreign_id)["status"], "pending");
  EXPECT_EQ(get_run(foreign_id)["assigned_agent"], other.id);
  // A finish the state machine refuses is a 409 item: success after error.
  ASSERT_EQ(mine.finish(own_id, "error").status, 200);
  auto late =
      mine.report(json{{"finished", json::array({finished_item(own_id, "success")})}});
  ASSERT_EQ(late.status, 200) << late.raw;
  EXPECT_EQ(late.body["finished"][0]["http_status"], 409) << late.raw;
  EXPECT_EQ(get_run(own_id)["status"], "error");
}

// This test ensures a malformed report is refused whole, names the field,
// and changes nothing.
TEST_F(report, malformed_report_changes_nothing) {
  auto agent = register_agent("m-1", json::object());
  auto sub = submit(json{{"plan", "noop"}});
  ASSERT_EQ(sub.status, 201);
  auto id = sub.body["id"].get<std::string>();
  ASSERT_EQ(agent.take(1).size(), 1u);
  ASSERT_TRUE(becomes(id, "pending"));
  auto good = finished_item(id, "success");

  struct bad_case {
    json body;
    std::string field;
  };
  json no_run = good;
  no_run.erase("run");
  json bad_status = good;
  bad_status["status"] = "running";
  json extra = good;
  extra["colour"] = "red";
  json many = json::array();
  for (int i = 0; i < 1001; ++i)
    many.push_back("r-" + std::to_string(i));
  std::vector<bad_case> cases{
      {json{{"started", json::array({id})}, {"surprise", 1}}, "surprise"},
      {json{{"started", id}}, "started"},
      {json{{"started", json::array({id, id})}}, "started[1]"},
      {json{{"started", json::array({""})}}, "started[0]"},
      {json{{"started", many}}, "started"},
      {json{{"finished", good}}, "finished"},
      {json{{"finished", json::array({no_run})}}, "finished[0].run"},
      {json{{"finished", json::array({bad_status})}}, "finished[0].status"},
      {json{{"finished", json::array({extra})}}, "finished[0].colour"},
      {json{{"finished", json::array({good, good})}}, "finished[1].run"},
      {json{{"started", json::array({id})}, {"finished", json::array({1})}},
       "finished[0]"},
  };
  for (auto& c : cases) {
    auto r = agent.report(c.body);
    EXPECT_EQ(r.status, 400) << c.body.dump() << " -> " << r.raw;
    EXPECT_EQ(r.body["error"]["code"], "invalid_argument") << r.raw;
    EXPECT_EQ(r.body["error"]["field"], c.field) << c.body.dump() << " -> " << r.raw;
  }
  auto unknown_param = call("POST", "/v1/agents/" + agent.id + "/report?wiat=1",
                            agent.token, json::object());
  EXPECT_EQ(unknown_param.status, 400) << unknown_param.raw;
  auto not_json = call_body("POST", "/v1/agents/" + agent.id + "/report", agent.token,
                            "{\"started\": [");
  EXPECT_EQ(not_json.status, 400) << not_json.raw;
  EXPECT_EQ(get_run(id)["status"], "pending");
  EXPECT_TRUE(get_run(id)["started_at"].is_null());
}

// This test ensures only the agent itself may report: another agent's token
// and a submitter's token are refused before anything is read.
TEST_F(report, only_the_agent_itself_may_report) {
  auto agent = register_agent("o-1", json::object());
  // The other agent implements another plan, so the run goes to the first.
  auto other = register_agent("o-2", json::object(), json::array({"other"}));
  auto sub = submit(json{{"plan", "noop"}});
  auto id = sub.body["id"].get<std::string>();
  auto runs = agent.take(1);
  ASSERT_EQ(runs.size(), 1u);
  ASSERT_TRUE(becomes(id, "pending"));
  auto body = json{{"started", json::array({id})}};
  auto path = "/v1/agents/" + agent.id + "/report";
  EXPECT_EQ(call("POST", path, other.token, body).status, 403);
  EXPECT_EQ(call("POST", path, make_token("submitter"), body).status, 403);
  EXPECT_EQ(call("POST", path, "", body).status, 401);
  EXPECT_EQ(get_run(id)["status"], "pending");
}

// This test ensures a report that frees the agent's only slot, with a wait,
// comes back carrying the next queued run: finish and poll in one request.
TEST_F(report, finish_then_long_poll_carries_the_next_run) {
  auto agent = register_agent("p-1", json::object());
  auto a = submit(json{{"plan", "noop"}});
  auto b = submit(json{{"plan", "noop"}});
  ASSERT_EQ(a.status, 201);
  ASSERT_EQ(b.status, 201);
  auto runs = agent.take(1);
  ASSERT_EQ(runs.size(), 1u);
  auto first = runs[0]["id"].get<std::string>();
  auto next = first == a.body["id"] ? b.body["id"] : a.body["id"];

  auto r =
      agent.report(json{{"started", json::array({first})},
                        {"finished", json::array({finished_item(first, "success")})}},
                   10);
  ASSERT_EQ(r.status, 200) << r.raw;
  EXPECT_TRUE(r.body["finished"][0]["ok"].get<bool>()) << r.raw;
  ASSERT_EQ(r.body["runs"].size(), 1u) << r.raw;
  EXPECT_EQ(r.body["runs"][0]["id"], next);
  EXPECT_EQ(get_run(first)["status"], "success");
}

// This test ensures a report without `wait` does not poll: a long-poll the
// agent has parked meanwhile keeps waiting and carries the next run.
TEST_F(report, report_without_wait_leaves_the_parked_poll_alone) {
  auto agent = register_agent("w-1", json::object(), json::array({"noop"}), 2);
  auto first = submit(json{{"plan", "noop"}});
  ASSERT_EQ(first.status, 201);
  auto first_id = first.body["id"].get<std::string>();
  ASSERT_EQ(agent.take(1).size(), 1u);
  auto parked = std::async(std::launch::async, [&] { return agent.poll(20); });
  ASSERT_TRUE(eventually(
      [&] { return call("GET", "/readyz", admin).body["http"]["long_polls"] == 1; }));
  auto r = agent.report(json{{"started", json::array({first_id})}}, -1);
  ASSERT_EQ(r.status, 200) << r.raw;
  EXPECT_TRUE(r.body["started"][0]["ok"].get<bool>()) << r.raw;
  EXPECT_FALSE(r.body.contains("runs")) << r.raw;
  auto second = submit(json{{"plan", "noop"}});
  ASSERT_EQ(second.status, 201);
  auto polled = parked.get();
  ASSERT_EQ(polled.status, 200) << polled.raw;
  ASSERT_EQ(polled.body["runs"].size(), 1u) << polled.raw;
  EXPECT_EQ(polled.body["runs"][0]["id"], second.body["id"]);
}

// This test ensures a JSON body labelled as a form (what `curl -d` sends)
// is read as JSON: its text is not taken for unknown query parameters, and
// a real unknown query parameter is still refused.
TEST_F(report, json_body_sent_as_a_form_is_accepted) {
  auto agent = register_agent("f-1", json::object());
  auto sub = submit(json{{"plan", "noop"}});
  ASSERT_EQ(sub.status, 201);
  auto id = sub.body["id"].get<std::string>();
  ASSERT_EQ(agent.take(1).size(), 1u);
  ASSERT_TRUE(becomes(id, "pending"));
  httplib::Client cli{"127.0.0.1", port};
  httplib::Headers auth{{"Authorization", "Bearer " + agent.token}};
  auto body =
      json{{"started", json::array({id})},
           {"finished",
            json::array(
                {json{{"run", id}, {"status", "success"}, {"error", "a&wait=5&x=1"}}})}}
          .dump();
  const char* form = "application/x-www-form-urlencoded";
  auto bad = cli.Post("/v1/agents/" + agent.id + "/report?wiat=1", auth, body, form);
  ASSERT_TRUE(bad);
  EXPECT_EQ(bad->status, 400) << bad->body;
  EXPECT_EQ(get_run(id)["status"], "pending");
  auto res = cli.Post("/v1/agents/" + agent.id + "/report", auth, body, form);
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200) << res->body;
  auto answer = json::parse(res->body);
  EXPECT_TRUE(answer["finished"][0]["ok"].get<bool>()) << res->body;
  EXPECT_FALSE(answer.contains("runs")) << res->body; // "wait" in the body is no query
  EXPECT_EQ(get_run(id)["status"], "success");
}

// This test ensures an empty report is a plain poll.
TEST_F(report, empty_report_is_a_poll) {
  auto agent = register_agent("e-1", json::object());
  auto sub = submit(json{{"plan", "noop"}});
  ASSERT_EQ(sub.status, 201);
  auto r = agent.report(json::object(), 10);
  ASSERT_EQ(r.status, 200) << r.raw;
  ASSERT_EQ(r.body["runs"].size(), 1u) << r.raw;
  EXPECT_EQ(r.body["runs"][0]["id"], sub.body["id"]);
  EXPECT_TRUE(r.body["started"].empty());
  EXPECT_TRUE(r.body["finished"].empty());
}

} // namespace
} // namespace polymesh::test
