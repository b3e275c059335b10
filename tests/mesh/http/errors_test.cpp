// Bad input over real HTTP: malformed, empty, oversized and mistyped bodies,
// unknown fields, bad query parameters, unknown paths and ids, selector
// errors with their position, and 503 while shutting down. Each refused
// request must change nothing.
#include "tests/support/mesh_fixture.hpp"

#include <httplib.h>
#include <sys/socket.h>
#include <tuple>
#include <unistd.h>

namespace polymesh::test {
namespace {

using errors = mesh_fixture;

void expect_error(const response& r, int status, const std::string& code,
                  const std::string& field = {}) {
  EXPECT_EQ(r.status, status) << r.raw;
  ASSERT_TRUE(r.body.is_object()) << "not JSON: " << r.raw;
  EXPECT_EQ(r.body["error"]["code"], code) << r.raw;
  EXPECT_TRUE(r.body["error"]["message"].is_string()) << r.raw;
  auto msg = r.body["error"]["message"].get<std::string>();
  EXPECT_FALSE(msg.empty());
  EXPECT_NE(msg.back(), '.') << "trailing period: " << msg;
  if (!field.empty()) {
    EXPECT_EQ(r.body["error"]["field"], field) << r.raw;
  }
}

// This test ensures malformed JSON, an empty body and a non-object body are
// 400 on field `body` for every endpoint that takes a body.
TEST_F(errors, malformed_empty_and_non_object_bodies_are_400) {
  auto agent = register_agent("body-agent", json::object());
  const std::vector<std::pair<std::string, std::string>> targets{
      {"/v1/runs", admin},
      {"/v1/tokens", admin},
      {"/v1/agents/register", admin},
      {"/v1/runs/run_x/logs", agent.token},
      {"/v1/runs/run_x/finish", agent.token},
  };
  for (auto& [path, token] : targets) {
    for (std::string raw : {"{", "", "[1,2]", "\"plan\"", "{\"plan\":}", "nul"}) {
      auto r = call_body("POST", path, token, raw);
      SCOPED_TRACE(path + " with body '" + raw + "'");
      expect_error(r, 400, "invalid_argument", "body");
    }
  }
  auto patch = call_body("PATCH", "/v1/agents/" + agent.id, admin, "{labels:");
  expect_error(patch, 400, "invalid_argument", "body");
  EXPECT_TRUE(call("GET", "/v1/runs", admin).body["runs"].empty());
  EXPECT_EQ(call("GET", "/v1/agents", admin).body["agents"].size(), 1u);
}

// This test ensures a body nested past the depth limit is refused before it
// can exhaust a stack (a 200 KB body of 100,000 brackets crashed meshd), a
// key given twice in one object is refused rather than the last one winning
// silently, and a syntax error names its position. Nothing is created.
TEST_F(errors, deep_nesting_duplicate_keys_and_syntax_errors_are_400) {
  auto tokens_at_start = call("GET", "/v1/tokens", admin).body["tokens"].size();
  std::string deep = "{\"plan\":\"noop\",\"params\":{\"a\":" + std::string(100000, '[') +
                     std::string(100000, ']') + "}}";
  auto r = call_body("POST", "/v1/runs", admin, deep);
  expect_error(r, 400, "invalid_argument", "body");
  EXPECT_NE(r.body["error"]["message"].get<std::string>().find("deeper than 64"),
            std::string::npos)
      << r.raw;
  // Just inside the limit: the body, `params` and 62 arrays are 64 levels.
  std::string ok = "{\"plan\":\"noop\",\"params\":{\"a\":" + std::string(62, '[') +
                   std::string(62, ']') + "}}";
  EXPECT_EQ(call_body("POST", "/v1/runs", admin, ok).status, 201);
  std::string too_deep = "{\"plan\":\"noop\",\"params\":{\"a\":" + std::string(63, '[') +
                         std::string(63, ']') + "}}";
  expect_error(call_body("POST", "/v1/runs", admin, too_deep), 400, "invalid_argument",
               "body");

  auto dup = call_body("POST", "/v1/tokens", admin,
                       R"({"kind":"reader","name":"x","kind":"admin"})");
  expect_error(dup, 400, "invalid_argument", "body");
  EXPECT_NE(
      dup.body["error"]["message"].get<std::string>().find("has the key 'kind' twice"),
      std::string::npos)
      << dup.raw;
  // Nested objects and many keys: the same key in different objects is fine.
  std::string many = R"({"plan":"noop","params":{)";
  for (int i = 0; i < 40; ++i)
    many += "\"k" + std::to_string(i) + "\":{\"k0\":1},";
  auto twice = many + R"("k7":2}})";
  expect_error(call_body("POST", "/v1/runs", admin, twice), 400, "invalid_argument",
               "body");
  many.back() = '}';
  EXPECT_EQ(call_body("POST", "/v1/runs", admin, many + "}").status, 201);
  expect_error(
      call_body("POST", "/v1/agents/register", admin,
                R"({"name":"d-1","plans":["noop"],"labels":{"env":"a","env":"b"}})"),
      400, "invalid_argument", "body");
  EXPECT_EQ(call("GET", "/v1/agents/d-1", admin).status, 404);

  auto syntax = call_body("POST", "/v1/runs", admin, R"({"plan":"noop",})");
  expect_error(syntax, 400, "invalid_argument", "body");
  EXPECT_EQ(syntax.body["error"]["position"], 15) << syntax.raw;
  auto said = syntax.body["error"]["message"].get<std::string>();
  EXPECT_EQ(said.rfind("body is not valid JSON: parse error at line 1, column 16", 0), 0u)
      << said;
  EXPECT_EQ(said.find("json.exception"), std::string::npos) << said;

  EXPECT_EQ(call("GET", "/v1/runs", admin).body["runs"].size(), 2u);
  EXPECT_EQ(call("GET", "/v1/tokens", admin).body["tokens"].size(), tokens_at_start);
}

// This test ensures unknown fields are 400 naming the field, on every
// endpoint that takes a body.
TEST_F(errors, unknown_fields_are_400_naming_the_field) {
  auto agent = register_agent("strict-agent", json::object());
  expect_error(submit(json{{"plan", "noop"}, {"colour", "red"}}), 400, "invalid_argument",
               "colour");
  // A misspelt required field is named as the unknown one, not as missing.
  auto typo = submit(json{{"pln", "noop"}});
  expect_error(typo, 400, "invalid_argument", "pln");
  EXPECT_EQ(typo.body["error"]["message"],
            "unknown field 'pln' (and field 'plan' is required)");
  auto batch_typo = call("POST", "/v1/runs/batch", admin,
                         json{{"runs", {{{"plan", "noop"}}, {{"pln", "x"}}}}});
  EXPECT_EQ(batch_typo.status, 400) << batch_typo.raw;
  EXPECT_NE(batch_typo.raw.find("unknown field 'pln'"), std::string::npos)
      << batch_typo.raw;
  expect_error(call("POST", "/v1/tokens", admin,
                    json{{"kind", "reader"}, {"name", "r"}, {"role", "x"}}),
               400, "invalid_argument", "role");
  expect_error(call("POST", "/v1/agents/register", admin,
                    json{{"name", "n-1"}, {"plans", {"noop"}}, {"slots", 2}}),
               400, "invalid_argument", "slots");
  expect_error(call("PATCH", "/v1/agents/" + agent.id, admin,
                    json{{"labels", json::object()}, {"plans", {"x"}}}),
               400, "invalid_argument", "plans");
  expect_error(call("POST", "/v1/runs/run_x/progress", agent.token,
                    json{{"message", "m"}, {"percent", 5}}),
               400, "invalid_argument", "percent");
  expect_error(call("POST", "/v1/runs/run_x/finish", agent.token,
                    json{{"status", "success"}, {"output", ""}}),
               400, "invalid_argument", "output");
  expect_error(call("POST", "/v1/runs/run_x/logs", agent.token,
                    json{{"chunks", {{{"seq", 0}, {"data", "x"}, {"colour", 1}}}}}),
               400, "invalid_argument", "chunks[0].colour");
  EXPECT_TRUE(call("GET", "/v1/runs", admin).body["runs"].empty());
  EXPECT_EQ(call("GET", "/v1/agents/n-1", admin).status, 404);
  EXPECT_EQ(call("GET", "/v1/agents/" + agent.id, admin).body["labels"], json::object());
}

// This test ensures wrong types and out-of-range values are 400 naming the
// field, and nothing is created.
TEST_F(errors, wrong_types_and_bad_values_are_400_naming_the_field) {
  const std::vector<std::pair<json, std::string>> runs{
      {json{{"selector", "env=dev"}}, "plan"},
      {json{{"plan", 5}}, "plan"},
      {json{{"plan", ""}}, "plan"},
      {json{{"plan", "no spaces"}}, "plan"},
      {json{{"plan", "noop"}, {"priority", "high"}}, "priority"},
      {json{{"plan", "noop"}, {"priority", 1.5}}, "priority"},
      {json{{"plan", "noop"}, {"priority", 2000000}}, "priority"},
      {json{{"plan", "noop"}, {"params", json::array()}}, "params"},
      {json{{"plan", "noop"}, {"params", "a=b"}}, "params"},
      {json{{"plan", "noop"}, {"payload", 42}}, "payload"},
      {json{{"plan", "noop"}, {"ttl_s", -1}}, "ttl_s"},
      {json{{"plan", "noop"}, {"timeout_s", "10"}}, "timeout_s"},
      {json{{"plan", "noop"}, {"selector", json::array()}}, "selector"},
      {json{{"plan", "noop"}, {"agent", "-bad-"}}, "agent"},
      {json{{"plan", "noop"}, {"idempotency_key", 7}}, "idempotency_key"},
      // "" is not "absent": it would skip deduplication or the named agent.
      {json{{"plan", "noop"}, {"idempotency_key", ""}}, "idempotency_key"},
      {json{{"plan", "noop"}, {"agent", ""}}, "agent"},
  };
  for (auto& [body, field] : runs) {
    SCOPED_TRACE(body.dump());
    expect_error(submit(body), 400, "invalid_argument", field);
  }
  const std::vector<std::pair<json, std::string>> registrations{
      {json{{"plans", {"noop"}}}, "name"},
      {json{{"name", "a-1"}}, "plans"},
      {json{{"name", "a-1"}, {"plans", json::array()}}, "plans"},
      {json{{"name", "a-1"}, {"plans", {"noop", 3}}}, "plans[1]"},
      {json{{"name", "a-1"}, {"plans", {"noop"}}, {"capacity", 0}}, "capacity"},
      {json{{"name", "a-1"}, {"plans", {"noop"}}, {"capacity", "2"}}, "capacity"},
      {json{{"name", "a-1"}, {"plans", {"noop"}}, {"labels", {{"env", 1}}}},
       "labels.env"},
      {json{{"name", "a-1"}, {"plans", {"noop"}}, {"labels", "env=dev"}}, "labels"},
      {json{{"name", "a 1"}, {"plans", {"noop"}}}, "name"},
  };
  for (auto& [body, field] : registrations) {
    SCOPED_TRACE(body.dump());
    expect_error(call("POST", "/v1/agents/register", admin, body), 400,
                 "invalid_argument", field);
  }
  auto bad_label =
      call("POST", "/v1/agents/register", admin,
           json{{"name", "a-1"}, {"plans", {"noop"}}, {"labels", {{"bad key!", "x"}}}});
  EXPECT_EQ(bad_label.status, 400) << bad_label.raw;
  EXPECT_TRUE(call("GET", "/v1/runs", admin).body["runs"].empty());
  EXPECT_TRUE(call("GET", "/v1/agents", admin).body["agents"].empty());
}

// This test ensures a malformed selector is 400 with `field` and the
// `position` of the error, on submit and on the agent list.
TEST_F(errors, malformed_selector_is_400_with_position) {
  auto r = submit(json{{"plan", "noop"}, {"selector", "env in (a,b"}});
  EXPECT_EQ(r.status, 400) << r.raw;
  EXPECT_EQ(r.body["error"]["code"], "invalid_selector") << r.raw;
  EXPECT_EQ(r.body["error"]["field"], "selector");
  ASSERT_TRUE(r.body["error"]["position"].is_number_integer()) << r.raw;
  EXPECT_EQ(r.body["error"]["position"], 11) << r.raw;

  auto bad_op = submit(json{{"plan", "noop"}, {"selector", "env=dev,tier=>web"}});
  EXPECT_EQ(bad_op.status, 400) << bad_op.raw;
  ASSERT_TRUE(bad_op.body["error"]["position"].is_number_integer()) << bad_op.raw;
  EXPECT_GE(bad_op.body["error"]["position"].get<int>(), 8) << bad_op.raw;

  auto list = call("GET", "/v1/agents?selector=env%3D%3D%3Dx", admin);
  EXPECT_EQ(list.status, 400) << list.raw;
  EXPECT_EQ(list.body["error"]["field"], "selector");
  EXPECT_TRUE(list.body["error"]["position"].is_number_integer()) << list.raw;

  auto tok = call("POST", "/v1/tokens", admin,
                  json{{"kind", "submitter"}, {"name", "s"}, {"scope", "env in ("}});
  EXPECT_EQ(tok.status, 400) << tok.raw;
  EXPECT_EQ(tok.body["error"]["field"], "scope");
  EXPECT_TRUE(tok.body["error"]["position"].is_number_integer()) << tok.raw;
  EXPECT_TRUE(call("GET", "/v1/runs", admin).body["runs"].empty());
}

// This test ensures a selector or a scope is held to 4096 bytes in the
// canonical form it is stored in (and a rerun sends back) as well as sent:
// `k in(v)` is stored as `k in (v)`, one byte longer.
TEST_F(errors, a_selector_longer_than_the_limit_once_canonical_is_refused) {
  auto requirements = [](size_t bytes) {
    std::string out;
    for (int i = 0; out.size() + 12 <= bytes; ++i)
      out += (out.empty() ? "" : ",") + std::string{"k"} + std::to_string(i) + " in(v)";
    return out;
  };
  auto sent = requirements(4000);
  ASSERT_LE(sent.size(), 4096u);
  ASSERT_GT(sent.size() + sent.size() / 8, 4096u); // one byte per requirement
  auto r = submit(json{{"plan", "noop"}, {"selector", sent}});
  expect_error(r, 400, "invalid_argument", "selector");
  EXPECT_NE(r.body["error"]["message"].get<std::string>().find(
                "bytes in the canonical form it is stored in"),
            std::string::npos)
      << r.raw;
  auto tokens = call("GET", "/v1/tokens", admin).body["tokens"].size();
  auto tok = call("POST", "/v1/tokens", admin,
                  json{{"kind", "submitter"}, {"name", "s"}, {"scope", sent}});
  expect_error(tok, 400, "invalid_argument", "scope");
  // What fits once canonical is stored, and may be sent again as stored.
  auto fits = requirements(3500);
  auto ok = submit(json{{"plan", "noop"}, {"selector", fits}});
  ASSERT_EQ(ok.status, 201) << ok.raw;
  auto stored = ok.body["selector"].get<std::string>();
  EXPECT_GT(stored.size(), fits.size());
  EXPECT_EQ(submit(json{{"plan", "noop"}, {"selector", stored}}).status, 201);
  EXPECT_EQ(call("GET", "/v1/runs", admin).body["runs"].size(), 2u);
  EXPECT_EQ(call("GET", "/v1/tokens", admin).body["tokens"].size(), tokens);
}

// This test ensures bad query parameters (not an integer, out of range,
// unknown name, unknown enum value) are 400 naming the parameter.
TEST_F(errors, bad_query_parameters_are_400_naming_the_parameter) {
  auto agent = register_agent("query-agent", json::object());
  const std::vector<std::tuple<std::string, std::string, std::string>> cases{
      {"/v1/agents/" + agent.id + "/runs?wait=abc", agent.token, "wait"},
      {"/v1/agents/" + agent.id + "/runs?wait=-1", agent.token, "wait"},
      {"/v1/agents/" + agent.id + "/runs?wait=1x", agent.token, "wait"},
      {"/v1/agents/" + agent.id + "/runs?wait=", agent.token, "wait"},
      {"/v1/agents/" + agent.id + "/runs?timeout=1", agent.token, "timeout"},
      {"/v1/runs?limit=0", admin, "limit"},
      {"/v1/runs?limit=1001", admin, "limit"},
      {"/v1/runs?limit=ten", admin, "limit"},
      {"/v1/runs?status=done", admin, "status"},
      {"/v1/runs?sort=asc", admin, "sort"},
      {"/v1/agents?status=busy", admin, "status"},
      {"/v1/agents?name=x", admin, "name"},
      {"/v1/runs/run_x/logs?after=x", admin, "after"},
      {"/v1/runs/run_x/logs?limit=0", admin, "limit"},
      {"/v1/runs/run_x/logs?from=0", admin, "from"},
      {"/v1/runs?limit=%2B1", admin, "limit"},
      {"/v1/runs?limit=01", admin, "limit"},
      {"/v1/runs?limit=%201", admin, "limit"},
      {"/v1/runs?plan=-bad", admin, "plan"},
  };
  for (auto& [path, token, field] : cases) {
    SCOPED_TRACE(path);
    expect_error(call("GET", path, token), 400, "invalid_argument", field);
  }
  EXPECT_EQ(call("GET", "/v1/runs?limit=01", admin).body["error"]["message"],
            "query parameter 'limit' must be an integer in plain digits (no '+', spaces "
            "or leading zeros), got '01'");
  // Plain digits beyond 64 bits are out of range, not "not plain digits".
  EXPECT_EQ(call("GET", "/v1/runs/run_x/logs?after=9223372036854775808", admin)
                .body["error"]["message"],
            "query parameter 'after' must be between -1 and 9223372036854775807");
}

// This test ensures a HEAD on an agent's poll is a 405 that hands nothing
// over: its answer has no body, yet it marked the run delivered, which
// started its delivery lease and made a later cancel wait for the agent.
TEST_F(errors, a_head_on_the_poll_hands_no_run_over) {
  auto agent = register_agent("head-agent", json::object());
  auto run = submit(json{{"plan", "noop"}, {"agent", "head-agent"}})
                 .body["id"]
                 .get<std::string>();
  httplib::Client cli{"127.0.0.1", port};
  auto head = cli.Head("/v1/agents/" + agent.id + "/runs",
                       {{"Authorization", "Bearer " + agent.token}});
  ASSERT_TRUE(head);
  EXPECT_EQ(head->status, 405);
  EXPECT_EQ(head->get_header_value("Allow"), "GET");
  EXPECT_TRUE(get_run(run)["delivered_at"].is_null()) << get_run(run).dump();
  auto taken = agent.take(1);
  ASSERT_EQ(taken.size(), 1u);
  // A poll may carry a run up to one group commit before its delivery is
  // stored (api.md, "Durability").
  EXPECT_TRUE(eventually([&] { return !get_run(run)["delivered_at"].is_null(); }));
}

// This test ensures a finish's reason is validated before anything else:
// empty (it used to pass as "no reason"), not snake_case, or a status that
// does not end a run are 400 naming the field.
TEST_F(errors, bad_finish_bodies_are_400_naming_the_field) {
  auto agent = register_agent("fin-agent", json::object());
  auto run = submit(json{{"plan", "noop"}}).body["id"].get<std::string>();
  ASSERT_EQ(agent.take(1).size(), 1u);
  ASSERT_EQ(agent.start(run).status, 200);
  for (auto& [body, field] : std::vector<std::pair<json, std::string>>{
           {json{{"status", "error"}, {"reason", ""}}, "reason"},
           {json{{"status", "error"}, {"reason", "Not-Snake"}}, "reason"},
           {json{{"status", "running"}}, "status"}}) {
    SCOPED_TRACE(body.dump());
    expect_error(call("POST", "/v1/runs/" + run + "/finish", agent.token, body), 400,
                 "invalid_argument", field);
  }
  EXPECT_EQ(get_run(run)["status"], "running");
}

// This test ensures every endpoint refuses query parameters it does not
// know (they used to be ignored everywhere but five endpoints, so a typo
// such as `?force=1` on a cancel went unnoticed while the cancel happened),
// and a parameter given twice, and that nothing changes when it does.
TEST_F(errors, unknown_and_repeated_query_parameters_are_400_everywhere) {
  auto agent = register_agent("q-agent", json::object());
  auto run = submit(json{{"plan", "noop"}}).body["id"].get<std::string>();
  auto reader = make_token("reader");
  const std::vector<std::tuple<std::string, std::string, std::string, std::string>> cases{
      {"POST", "/v1/runs/" + run + "/cancel?force=1", admin, "force"},
      {"POST", "/v1/runs?dry_run=1", admin, "dry_run"},
      {"GET", "/v1/runs/" + run + "?verbose=1", admin, "verbose"},
      {"GET", "/v1/tokens?all=1", admin, "all"},
      {"POST", "/v1/agents/" + agent.id + "/drain?undo=1", admin, "undo"},
      {"DELETE", "/v1/agents/" + agent.id + "?hard=1", admin, "hard"},
      {"GET", "/readyz?x=1", reader, "x"},
      {"GET", "/v1/runs?limit=2&limit=3", admin, "limit"},
      {"GET", "/v1/agents/" + agent.id + "/runs?wait=0&wait=5", agent.token, "wait"},
      {"GET", "/v1/runs?=x", admin, "query"},
  };
  for (auto& [method, path, token, field] : cases) {
    SCOPED_TRACE(method + " " + path);
    auto body = method == "POST" && path.rfind("/v1/runs?", 0) == 0
                    ? json{{"plan", "noop"}}
                    : json(nullptr);
    expect_error(call(method, path, token, body), 400, "invalid_argument", field);
  }
  EXPECT_NE(get_run(run)["status"], "canceled");
  EXPECT_FALSE(get_run(run)["cancel_requested"].get<bool>());
  EXPECT_EQ(call("GET", "/v1/runs", admin).body["runs"].size(), 1u);
  EXPECT_EQ(call("GET", "/v1/agents/" + agent.id, admin).body["status"], "online");
  // Known parameters still work, also percent-encoded values.
  EXPECT_EQ(call("GET", "/v1/runs?limit=1&status=created", admin).status, 200);
  EXPECT_EQ(call("GET", "/v1/agents?selector=env%20in%20(a)", admin).status, 200);
}

// This test ensures an endpoint that takes no body refuses one (a garbage
// body on `start` used to be ignored and the run started), accepts none or
// `{}`, and nothing changes when it refuses.
TEST_F(errors, bodies_on_endpoints_without_one_are_400) {
  auto agent = register_agent("nobody", json::object());
  auto run = submit(json{{"plan", "noop"}}).body["id"].get<std::string>();
  ASSERT_EQ(agent.take(1).size(), 1u);
  for (auto& [path, token, raw] :
       std::vector<std::tuple<std::string, std::string, std::string>>{
           {"/v1/runs/" + run + "/start", agent.token, "garbage{"},
           {"/v1/runs/" + run + "/cancel", admin, R"({"reason":"because"})"},
           {"/v1/agents/" + agent.id + "/drain", admin, R"({"undrain":true})"},
           {"/v1/agents/" + agent.id + "/token", agent.token, R"({"ttl":5})"}}) {
    SCOPED_TRACE(path + " with " + raw);
    expect_error(call_body("POST", path, token, raw), 400, "invalid_argument", "body");
  }
  EXPECT_EQ(get_run(run)["status"], "pending");
  EXPECT_FALSE(get_run(run)["cancel_requested"].get<bool>());
  EXPECT_EQ(call("GET", "/v1/agents/" + agent.id, admin).body["status"], "online");
  EXPECT_EQ(call_body("POST", "/v1/runs/" + run + "/start", agent.token, " { } ").status,
            200);
  EXPECT_EQ(call_body("POST", "/v1/runs/" + run + "/cancel", admin, "").status, 200);
}

// This test ensures an unknown path answers 404 with the JSON error body,
// and unknown ids are 404 on every endpoint that takes one.
TEST_F(errors, unknown_paths_and_ids_are_404_json) {
  for (auto& [method, path] :
       std::vector<std::pair<std::string, std::string>>{{"GET", "/v1/nope"},
                                                        {"GET", "/"},
                                                        {"POST", "/v2/runs"},
                                                        {"GET", "/v1/runs/a/b/c"}}) {
    auto r = call(method, path, admin, json::object());
    SCOPED_TRACE(method + " " + path);
    expect_error(r, 404, "not_found");
  }
  auto agent = register_agent("lonely", json::object());
  for (auto& [method, path, token] :
       std::vector<std::tuple<std::string, std::string, std::string>>{
           {"GET", "/v1/runs/run_missing", admin},
           {"GET", "/v1/runs/run_missing/logs", admin},
           {"GET", "/v1/runs/run_missing/explain", admin},
           {"POST", "/v1/runs/run_missing/cancel", admin},
           {"POST", "/v1/runs/run_missing/start", agent.token},
           {"POST", "/v1/runs/run_missing/progress", agent.token},
           {"GET", "/v1/agents/agt_missing", admin},
           {"PATCH", "/v1/agents/agt_missing", admin},
           {"POST", "/v1/agents/agt_missing/drain", admin},
           {"DELETE", "/v1/agents/agt_missing", admin},
           {"DELETE", "/v1/tokens/tok_missing", admin}}) {
    json body = method == "PATCH" ? json{{"labels", json::object()}} : json::object();
    auto r = call(method, path, token, body);
    SCOPED_TRACE(method + " " + path);
    expect_error(r, 404, "not_found");
  }
  auto fin = call("POST", "/v1/runs/run_missing/finish", agent.token,
                  json{{"status", "success"}});
  expect_error(fin, 404, "not_found");
  auto logs = agent.logs("run_missing", 0, "x");
  expect_error(logs, 404, "not_found");
  auto named = submit(json{{"plan", "noop"}, {"agent", "ghost"}});
  expect_error(named, 404, "not_found", "agent");
  // An id is quoted cut to 64 bytes (an 8 KiB one came back whole).
  auto long_id = call("GET", "/v1/runs/run_" + std::string(5000, 'x'), admin);
  expect_error(long_id, 404, "not_found", "id");
  EXPECT_LT(long_id.raw.size(), 300u) << long_id.raw.size();
  auto long_agent = call("GET", "/v1/agents/" + std::string(5000, 'a'), admin);
  EXPECT_LT(long_agent.raw.size(), 300u) << long_agent.raw.size();
  // An agent token naming another agent's path says which part is wrong.
  auto other = call("GET", "/v1/agents/agt_missing/runs?wait=0", agent.token);
  expect_error(other, 403, "forbidden", "id");
  EXPECT_TRUE(call("GET", "/v1/runs", admin).body["runs"].empty());
}

// This test ensures what cpp-httplib refuses before any handler runs still
// gets a JSON error that says what to do: a wrong method on a known path is
// 405 with `Allow`, an unknown method 405, multipart and compressed bodies
// name their header. A JSON body labelled as a form (curl -d's default) is
// read as JSON, at any size under http.max_body_bytes (cpp-httplib held
// form-labelled bodies to 8 KiB while it read bodies itself).
TEST_F(errors, requests_refused_by_the_http_layer_say_why) {
  httplib::Client cli{"127.0.0.1", port};
  httplib::Headers auth{{"Authorization", "Bearer " + admin}};
  auto del = cli.Delete("/v1/runs/run_x", auth);
  ASSERT_TRUE(del);
  EXPECT_EQ(del->status, 405);
  EXPECT_EQ(del->get_header_value("Allow"), "GET, HEAD");
  auto put = cli.Put("/v1/runs", auth, "{}", "application/json");
  ASSERT_TRUE(put);
  EXPECT_EQ(put->status, 405);
  EXPECT_EQ(put->get_header_value("Allow"), "POST, GET, HEAD");
  auto err_of = [](const httplib::Result& r) {
    return json::parse(r->body, nullptr, false)["error"];
  };
  EXPECT_EQ(err_of(put)["code"], "method_not_allowed");
  auto trace = cli.send([&] {
    httplib::Request r;
    r.method = "TRACE";
    r.path = "/v1/runs";
    r.headers = auth;
    return r;
  }());
  ASSERT_TRUE(trace);
  EXPECT_EQ(trace->status, 405);
  // A fixed path that a placeholder also matches is that endpoint's, not an
  // id: `GET /v1/runs/batch` is a wrong method, not "no run 'batch'".
  for (auto [method, path, allow] :
       {std::tuple{"GET", "/v1/runs/batch", "POST"},
        std::tuple{"GET", "/v1/agents/register", "POST"},
        std::tuple{"DELETE", "/v1/agents/register", "POST"}}) {
    SCOPED_TRACE(std::string{method} + " " + path);
    auto r = call(method, path, admin);
    expect_error(r, 405, "method_not_allowed");
    EXPECT_EQ(r.headers.count("Allow") ? r.headers.find("Allow")->second : "", allow);
  }
  // So no agent may be named after that path.
  auto reserved = call("POST", "/v1/agents/register", admin,
                       json{{"name", "register"}, {"plans", {"noop"}}});
  expect_error(reserved, 400, "invalid_argument", "name");
  EXPECT_NE(reserved.body["error"]["message"].get<std::string>().find("reserved"),
            std::string::npos)
      << reserved.raw;

  std::string big = json{{"plan", "noop"}, {"payload", std::string(9000, 'x')}}.dump();
  auto form = cli.Post("/v1/runs", auth, big, "application/x-www-form-urlencoded");
  ASSERT_TRUE(form);
  EXPECT_EQ(form->status, 201) << form->body;
  auto small = cli.Post("/v1/runs", auth, R"({"plan":"noop"})",
                        "application/x-www-form-urlencoded");
  ASSERT_TRUE(small);
  EXPECT_EQ(small->status, 201) << small->body;

  auto multipart =
      cli.Post("/v1/runs", auth, R"({"plan":"noop"})", "multipart/form-data; boundary=x");
  ASSERT_TRUE(multipart);
  EXPECT_EQ(multipart->status, 400);
  EXPECT_NE(err_of(multipart)["message"].get<std::string>().find("multipart"),
            std::string::npos);
  // Other kinds of multipart, and other spellings, which the library passes
  // through as they came, are refused the same way, with the connection
  // closed (it was kept; a client that keeps its connections shows it), and
  // answered however large the body (read and dropped, not left unread).
  httplib::Client keeping{"127.0.0.1", port};
  keeping.set_keep_alive(true);
  const std::string large(1 << 20, 'x');
  for (std::string type :
       {"multipart/form-data; boundary=x", "multipart/mixed; boundary=x",
        "Multipart/Form-Data; boundary=x", "MULTIPART/mixed; boundary=x"}) {
    SCOPED_TRACE(type);
    bool form_data = type.rfind("multipart/form-data", 0) == 0;
    auto r =
        keeping.Post("/v1/runs", auth, form_data ? R"({"plan":"noop"})" : large, type);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 400) << r->body;
    EXPECT_EQ(r->get_header_value("Connection"), "close");
    EXPECT_NE(err_of(r)["message"].get<std::string>().find("multipart"),
              std::string::npos)
        << r->body;
  }
  // A well-formed multipart body (curl -F) is taken apart by the library
  // before any handler; it is refused all the same, and on a body-less
  // endpoint it does not pass for "no body": the run is not canceled.
  auto victim = submit(json{{"plan", "noop"}}).body["id"].get<std::string>();
  httplib::MultipartFormDataItems form_items{{"plan", "noop", "", ""}};
  for (const std::string& path :
       std::vector<std::string>{"/v1/runs", "/v1/runs/" + victim + "/cancel"}) {
    SCOPED_TRACE(path);
    auto r = cli.Post(path, auth, form_items);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 400);
    EXPECT_NE(err_of(r)["message"].get<std::string>().find("multipart"),
              std::string::npos)
        << r->body;
  }
  EXPECT_EQ(get_run(victim)["status"], "created");
  auto gz = auth;
  gz.emplace("Content-Encoding", "gzip");
  auto gzipped = cli.Post("/v1/runs", gz, R"({"plan":"noop"})", "application/json");
  ASSERT_TRUE(gzipped);
  EXPECT_EQ(gzipped->status, 400);
  EXPECT_NE(err_of(gzipped)["message"].get<std::string>().find("Content-Encoding 'gzip'"),
            std::string::npos)
      << gzipped->body;
  EXPECT_EQ(call("GET", "/v1/runs", admin).body["runs"].size(), 3u);
}

// A mesh with a small body limit.
class small_bodies : public mesh_fixture {
protected:
  void configure(mesh_config& c) override { c.max_body_bytes = 4096; }
};

// This test ensures a body over `http.max_body_bytes` is 413 with a JSON
// error naming the limit, and nothing is created; one under it is accepted.
TEST_F(small_bodies, body_over_the_limit_is_413) {
  auto huge = json{{"plan", "noop"}, {"payload", std::string(8192, 'x')}}.dump();
  auto r = call_body("POST", "/v1/runs", admin, huge);
  EXPECT_EQ(r.status, 413) << r.raw;
  ASSERT_TRUE(r.body.is_object()) << r.raw;
  EXPECT_EQ(r.body["error"]["code"], "payload_too_large");
  EXPECT_EQ(r.body["error"]["field"], "body");
  EXPECT_NE(r.body["error"]["message"].get<std::string>().find("4096"),
            std::string::npos);
  auto reg = call_body("POST", "/v1/agents/register", admin,
                       json{{"name", "big"},
                            {"plans", {"noop"}},
                            {"labels", {{"k", std::string(60, 'v')}}},
                            {"hostname", std::string(5000, 'h')}}
                           .dump());
  EXPECT_EQ(reg.status, 413) << reg.raw;
  EXPECT_TRUE(call("GET", "/v1/runs", admin).body["runs"].empty());
  EXPECT_TRUE(call("GET", "/v1/agents", admin).body["agents"].empty());
  auto small = submit(json{{"plan", "noop"}, {"payload", std::string(2048, 'x')}});
  EXPECT_EQ(small.status, 201) << small.raw;
}

// A mesh with small payload and result limits.
class small_texts : public mesh_fixture {
protected:
  void configure(mesh_config& c) override {
    c.max_payload_bytes = 100;
    c.max_result_bytes = 100;
  }
};

// This test ensures a payload or result over its limit is refused naming
// the setting that sets it, as the body's and the log's limits are, and
// changes nothing.
TEST_F(small_texts, a_payload_or_result_over_its_limit_names_the_setting) {
  auto r = submit(json{{"plan", "noop"}, {"payload", std::string(101, 'p')}});
  expect_error(r, 400, "invalid_argument", "payload");
  EXPECT_EQ(r.body["error"]["message"],
            "field 'payload' must be at most 100 bytes (runs.max_payload_bytes)")
      << r.raw;
  EXPECT_TRUE(call("GET", "/v1/runs", admin).body["runs"].empty());
  auto agent = register_agent("texts", json::object());
  auto id = submit(json{{"plan", "noop"}, {"payload", std::string(100, 'p')}})
                .body["id"]
                .get<std::string>();
  ASSERT_EQ(agent.take(1).size(), 1u);
  ASSERT_EQ(agent.start(id).status, 200);
  auto f = agent.finish(id, "success", 0, std::string(101, 'r'));
  expect_error(f, 400, "invalid_argument", "result");
  EXPECT_EQ(f.body["error"]["message"],
            "field 'result' must be at most 100 bytes (runs.max_result_bytes)")
      << f.raw;
  EXPECT_EQ(call("GET", "/v1/runs/" + id, admin).body["status"], "running");
}

// This test ensures that while meshd shuts down, /readyz and submits are
// 503 `unavailable` and no run is created, while /healthz still answers.
TEST_F(errors, shutting_down_is_503) {
  auto reader = make_token("reader");
  auto submitter = make_token("submitter");
  node_->begin_shutdown();
  auto ready = call("GET", "/readyz", reader);
  expect_error(ready, 503, "unavailable");
  auto r = submit(json{{"plan", "noop"}}, submitter);
  expect_error(r, 503, "unavailable");
  EXPECT_EQ(call("GET", "/healthz", "").status, 200);
  auto list = call("GET", "/v1/runs", admin);
  ASSERT_EQ(list.status, 200) << list.raw;
  EXPECT_TRUE(list.body["runs"].empty());
}

} // namespace
} // namespace polymesh::test

namespace polymesh::test {
namespace {

size_t count_of(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (auto at = text.find(what); at != std::string::npos; at = text.find(what, at + 1))
    ++n;
  return n;
}

using http_framing = mesh_fixture;

// This test ensures requests the HTTP layer refuses get the right status and
// a message naming the cause: a URL over the request-line limit is 414, a
// request line that does not parse is 400, a method the path lacks is 405
// with the path's own methods in Allow (fixed paths included), and a number
// too large for a double is 400, not 500.
TEST_F(http_framing, refused_requests_get_their_own_status_and_cause) {
  auto auth = "Authorization: Bearer " + admin + "\r\n";
  auto long_url = exchange_raw(port, "GET /v1/runs/" + std::string(9000, 'x') +
                                         " HTTP/1.1\r\nHost: t\r\n" + auth +
                                         "Connection: close\r\n\r\n");
  EXPECT_EQ(long_url.rfind("HTTP/1.1 414", 0), 0u) << long_url.substr(0, 300);
  EXPECT_NE(long_url.find("\"uri_too_long\""), std::string::npos) << long_url;
  EXPECT_NE(long_url.find("8192 bytes"), std::string::npos) << long_url;

  auto version = exchange_raw(port, "GET /healthz HTTP/9.9\r\nHost: t\r\n\r\n");
  EXPECT_EQ(version.rfind("HTTP/1.1 400", 0), 0u) << version.substr(0, 300);
  EXPECT_NE(version.find("meshd speaks HTTP/1.0 and HTTP/1.1"), std::string::npos)
      << version;

  for (auto [method, path, allow] : {std::tuple{"TRACE", "/v1/runs", "POST, GET, HEAD"},

                                     std::tuple{"PUT", "/v1/runs/batch", "POST"},
                                     std::tuple{"PUT", "/v1/agents/register", "POST"}}) {
    SCOPED_TRACE(std::string{method} + " " + path);
    auto r =
        exchange_raw(port, std::string{method} + " " + path + " HTTP/1.1\r\nHost: t\r\n" +
                               auth + "Content-Length: 0\r\nConnection: close\r\n\r\n");
    EXPECT_EQ(r.rfind("HTTP/1.1 405", 0), 0u) << r.substr(0, 300);
    EXPECT_NE(r.find("\r\nAllow: " + std::string{allow} + "\r\n"), std::string::npos)
        << r;
  }
  auto nowhere = exchange_raw(port, "TRACE /v1/nowhere HTTP/1.1\r\nHost: t\r\n" + auth +
                                        "Connection: close\r\n\r\n");
  EXPECT_EQ(nowhere.rfind("HTTP/1.1 404", 0), 0u) << nowhere.substr(0, 300);
  auto unknown = exchange_raw(port, "FOO /v1/runs HTTP/1.1\r\nHost: t\r\n" + auth +
                                        "Connection: close\r\n\r\n");
  EXPECT_EQ(unknown.rfind("HTTP/1.1 400", 0), 0u) << unknown.substr(0, 300);
  EXPECT_NE(unknown.find("method 'FOO' is not one meshd serves"), std::string::npos)
      << unknown;

  for (std::string body : {R"({"plan":"noop","priority":1e309})",
                           R"({"runs":[{"plan":"noop","params":{"x":-1e400}}]})"}) {
    SCOPED_TRACE(body);
    auto r = call_body(
        "POST", body.find("runs") != std::string::npos ? "/v1/runs/batch" : "/v1/runs",
        admin, body);
    expect_error(r, 400, "invalid_argument", "body");
    EXPECT_NE(
        r.body["error"]["message"].get<std::string>().find("too large for a double"),
        std::string::npos)
        << r.raw;
  }
  // An integer beyond 64 bits is out of range, not "not an integer".
  for (std::string n :
       {"99999999999999999999999", "-99999999999999999999999", "9223372036854775808"}) {
    auto r =
        call_body("POST", "/v1/runs", admin, R"({"plan":"noop","priority":)" + n + "}");
    expect_error(r, 400, "invalid_argument", "priority");
    EXPECT_EQ(r.body["error"]["message"],
              "field 'priority' must be between -1000000 and 1000000")
        << r.raw;
  }
  EXPECT_TRUE(call("GET", "/v1/runs", admin).body["runs"].empty());
}

// This test ensures a request whose length a proxy could read otherwise (two
// Content-Length headers, or one with Transfer-Encoding) is refused and its
// connection closed, so the bytes after it are never served as a request of
// their own.
TEST_F(http_framing, ambiguous_body_lengths_are_refused_and_close_the_connection) {
  std::string smuggled = "POST /v1/runs HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer " +
                         admin + "\r\nContent-Length: 15\r\n\r\n{\"plan\":\"noop\"}";
  for (std::string framing :
       {"Content-Length: 0\r\nContent-Length: " + std::to_string(smuggled.size()) +
            "\r\n",
        std::string{"Content-Length: 0\r\nTransfer-Encoding: chunked\r\n"}}) {
    SCOPED_TRACE(framing);
    auto r =
        exchange_raw(port, "POST /v1/runs HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer " +
                               admin + "\r\n" + framing + "\r\n" + smuggled);
    EXPECT_EQ(r.rfind("HTTP/1.1 400", 0), 0u) << r.substr(0, 300);
    EXPECT_NE(r.find("\"field\":\"Content-Length\""), std::string::npos) << r;
    EXPECT_EQ(count_of(r, "HTTP/1.1 "), 1u) << "the bytes after it were served: " << r;
  }
  EXPECT_TRUE(call("GET", "/v1/runs", admin).body["runs"].empty());
  // One Content-Length still works.
  EXPECT_EQ(call_body("POST", "/v1/runs", admin, R"({"plan":"noop"})").status, 201);
}

// This test ensures a head cpp-httplib would read otherwise than a proxy (a
// line over its limit, a version it does not speak, a URL over its limit,
// an empty or folded Content-Length or Transfer-Encoding, a line ended by a
// line feed alone) is refused and its connection closed: the body a proxy
// sends after it, a request of its own, is never served (an admin token was
// made so).
TEST_F(http_framing, heads_cpp_httplib_would_misread_are_refused_and_close) {
  std::string smuggled =
      "POST /v1/tokens HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer " + admin +
      "\r\nContent-Type: application/json\r\nContent-Length: 35\r\n\r\n"
      R"({"kind":"reader","name":"smuggled"})";
  auto length = std::to_string(smuggled.size());
  auto auth = "Authorization: Bearer " + admin + "\r\n";
  std::vector<std::pair<std::string, std::string>> heads{
      {"POST /healthz HTTP/1.1\r\nHost: t\r\nX-Big: " + std::string(9000, 'a') +
           "\r\nContent-Length: " + length + "\r\n\r\n",
       "HTTP/1.1 431"},
      {"POST /healthz HTTP/9.9\r\nHost: t\r\nContent-Length: " + length + "\r\n\r\n",
       "HTTP/1.1 400"},
      {"POST /v1/runs?" + std::string(9000, 'a') +
           " HTTP/1.1\r\nHost: t\r\nContent-Length: " + length + "\r\n\r\n",
       "HTTP/1.1 414"},
      {"GET /healthz HTTP/1.1\r\nHost: t\r\nContent-Length:\r\n " + length + "\r\n\r\n",
       "HTTP/1.1 400"},
      {"POST /v1/runs/batch HTTP/1.1\r\nHost: t\r\n" + auth + "Content-Length: \r\n\r\n",
       "HTTP/1.1 400"},
      {"POST /v1/runs/batch HTTP/1.1\r\nHost: t\r\n" + auth +
           "Transfer-Encoding:\r\n\r\n",
       "HTTP/1.1 400"},
      {"GET /healthz HTTP/1.1\r\nHost: t\r\nContent-Length: " + length + "\n\r\n",
       "HTTP/1.1 400"}};
  for (auto& [head, status] : heads) {
    SCOPED_TRACE(head.substr(0, 60));
    auto r = exchange_after_answer(port, head, smuggled);
    EXPECT_EQ(r.rfind(status, 0), 0u) << r.substr(0, 300);
    EXPECT_EQ(count_of(r, "HTTP/1.1 "), 1u) << "the bytes after it were served: " << r;
    EXPECT_NE(r.find("Connection: close"), std::string::npos) << r.substr(0, 300);
    EXPECT_EQ(r.find("Keep-Alive"), std::string::npos) << r.substr(0, 300);
  }
  auto tokens = call("GET", "/v1/tokens", admin).raw;
  EXPECT_EQ(tokens.find("smuggled"), std::string::npos) << tokens;
}

// This test ensures a header section meshd would have to hold without
// limit is refused as soon as it passes one (100 lines, 64 KiB), and an
// encoded '/' in a path is not a separator (`/v1%2Ftokens` listed tokens).
TEST_F(http_framing, header_sections_are_limited_and_paths_taken_as_sent) {
  std::string many = "GET /healthz HTTP/1.1\r\nHost: t\r\n";
  for (int i = 0; i < 101; ++i)
    many += "X-" + std::to_string(i) + ": v\r\n";
  auto lines = exchange_raw(port, many + "\r\n");
  EXPECT_EQ(lines.rfind("HTTP/1.1 431", 0), 0u) << lines.substr(0, 300);
  EXPECT_NE(lines.find("\"header_too_large\""), std::string::npos) << lines;
  std::string big = "GET /healthz HTTP/1.1\r\nHost: t\r\n";
  for (int i = 0; i < 20; ++i)
    big += "X-" + std::to_string(i) + ": " + std::string(4000, 'a') + "\r\n";
  auto bytes = exchange_raw(port, big);
  EXPECT_EQ(bytes.rfind("HTTP/1.1 431", 0), 0u) << bytes.substr(0, 300);
  EXPECT_NE(bytes.find("larger than 64 KiB"), std::string::npos) << bytes.substr(0, 300);

  auto encoded =
      exchange_raw(port, "GET /v1%2Ftokens HTTP/1.1\r\nHost: t\r\nAuthorization: "
                         "Bearer " +
                             admin + "\r\nConnection: close\r\n\r\n");
  EXPECT_EQ(encoded.rfind("HTTP/1.1 400", 0), 0u) << encoded.substr(0, 300);
  EXPECT_NE(encoded.find("encoded '/' (%2F)"), std::string::npos) << encoded;
  EXPECT_EQ(encoded.find("\"tokens\""), std::string::npos) << encoded;
}

// This test ensures requests a client sends back to back in one write are
// each answered, in order (cpp-httplib's buffer per request lost the
// second), and a connection kept alive serves the next request.
TEST_F(http_framing, requests_sent_back_to_back_are_each_answered) {
  auto two = exchange_raw(port, "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"
                                "GET /healthz HTTP/1.1\r\nHost: t\r\n"
                                "Connection: close\r\n\r\n");
  EXPECT_EQ(count_of(two, "HTTP/1.1 200"), 2u) << two;
}

// This test ensures answers carry what a client needs to act on them: a 401
// how to authenticate, a 503 when to try again, a 201 where the new run or
// agent is (relative, so that it holds under a proxy's prefix), and an
// HTTP/1.0 answer that the connection closes (it said Keep-Alive, then
// closed).
TEST_F(http_framing, answers_say_how_to_authenticate_retry_and_find_what_was_made) {
  auto unauthenticated = exchange_raw(port, "GET /v1/runs HTTP/1.1\r\nHost: t\r\n"
                                            "Connection: close\r\n\r\n");
  EXPECT_EQ(unauthenticated.rfind("HTTP/1.1 401", 0), 0u) << unauthenticated;
  EXPECT_NE(unauthenticated.find("\r\nWWW-Authenticate: Bearer\r\n"), std::string::npos)
      << unauthenticated;
  std::string body = R"({"plan":"noop"})";
  auto created = exchange_raw(port, "POST /v1/runs HTTP/1.1\r\nHost: t\r\nAuthorization: "
                                    "Bearer " +
                                        admin +
                                        "\r\nContent-Type: application/json\r\n"
                                        "Content-Length: " +
                                        std::to_string(body.size()) +
                                        "\r\nConnection: close\r\n\r\n" + body);
  EXPECT_EQ(created.rfind("HTTP/1.1 201", 0), 0u) << created;
  EXPECT_NE(created.find("\r\nLocation: runs/run_"), std::string::npos) << created;
  auto old = exchange_raw(port, "GET /healthz HTTP/1.0\r\n\r\n");
  EXPECT_EQ(old.rfind("HTTP/1.1 200", 0), 0u) << old;
  EXPECT_NE(old.find("\r\nConnection: close\r\n"), std::string::npos) << old;
  EXPECT_EQ(old.find("Keep-Alive"), std::string::npos) << old;
  node_->begin_shutdown();
  auto stopping = exchange_raw(port, "GET /readyz HTTP/1.1\r\nHost: t\r\nAuthorization: "
                                     "Bearer " +
                                         admin + "\r\nConnection: close\r\n\r\n");
  EXPECT_EQ(stopping.rfind("HTTP/1.1 503", 0), 0u) << stopping;
  EXPECT_NE(stopping.find("\r\nRetry-After: 1\r\n"), std::string::npos) << stopping;
}

// This test ensures the answer to a chunked request closes its connection:
// cpp-httplib's chunk decoder ends a body early at anything after a chunk's
// data where CRLF belongs, and the bytes after that were served as a
// request of their own (a token made by a request nobody sent alone).
TEST_F(http_framing, the_answer_to_a_chunked_request_closes_the_connection) {
  std::string body = R"({"kind":"reader","name":"outer"})";
  std::string smuggled =
      "POST /v1/tokens HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer " + admin +
      "\r\nContent-Type: application/json\r\nContent-Length: 35\r\n\r\n"
      R"({"kind":"reader","name":"smuggled"})";
  char size[16];
  std::snprintf(size, sizeof size, "%zx", body.size());
  auto head = "POST /v1/tokens HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer " + admin +
              "\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
  for (std::string framing : {std::string{size} + "\r\n" + body + "X\r\n",
                              std::string{size} + "\r\n" + body + "\r\n0\r\n\r\n"}) {
    SCOPED_TRACE(framing);
    auto r = exchange_after_answer(port, head + framing, smuggled);
    EXPECT_EQ(count_of(r, "HTTP/1.1 "), 1u) << "the bytes after it were served: " << r;
    EXPECT_NE(r.find("Connection: close"), std::string::npos) << r.substr(0, 300);
    EXPECT_EQ(count_of(r, "Content-Type: "), 1u) << r.substr(0, 300);
    EXPECT_EQ(r.find("Keep-Alive"), std::string::npos) << r.substr(0, 300);
  }
  auto tokens = call("GET", "/v1/tokens", admin).raw;
  EXPECT_EQ(tokens.find("smuggled"), std::string::npos) << tokens;
}

/// The chunk-size line and data of one chunk of `data` (no last chunk).
std::string chunk_of(const std::string& data) {
  char size[20];
  std::snprintf(size, sizeof size, "%zx", data.size());
  return std::string{size} + "\r\n" + data + "\r\n";
}

// This test ensures a POST with neither Content-Length nor Transfer-Encoding
// has no body (RFC 9112, 6.3) and is answered at once, the next request on
// the connection served as one of its own. cpp-httplib read such a body
// until the client closed the connection, taking the next request for it.
TEST_F(http_framing, a_request_without_length_or_chunks_has_no_body) {
  auto id = call_body("POST", "/v1/runs", admin, R"({"plan":"noop"})")
                .body["id"]
                .get<std::string>();
  auto r = exchange_after_answer(
      port,
      "POST /v1/runs/" + id + "/cancel HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer " +
          admin + "\r\n\r\n",
      "GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
  EXPECT_EQ(r.rfind("HTTP/1.1 200", 0), 0u) << r.substr(0, 300);
  EXPECT_EQ(count_of(r, "HTTP/1.1 200"), 2u) << r;
  EXPECT_EQ(call("GET", "/v1/runs/" + id, admin).body["status"], "canceled");
}

// A mesh with small body limits, for bodies sent in chunks: JSON 4 KiB,
// artifacts (the largest limit, up to which a refused body is dropped) 8 KiB.
class chunked_bodies : public mesh_fixture {
protected:
  void configure(mesh_config& c) override {
    c.max_body_bytes = 4096;
    c.max_artifact_bytes = 8192;
  }
};

// This test ensures a chunked body is held to http.max_body_bytes as it
// arrives: a 413, the rest dropped without being kept up to the largest
// limit of any endpoint, and then the connection closed without waiting for
// the body's end. cpp-httplib read a chunked body whole into memory,
// however long, before meshd looked at it.
TEST_F(chunked_bodies, a_chunked_body_is_refused_once_it_passes_the_limit) {
  auto head = "POST /v1/runs HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer " + admin +
              "\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
  // No last chunk: the client would go on sending.
  auto r = exchange_raw(
      port, head + chunk_of(R"({"plan":"noop","payload":")" + std::string(9000, 'p')));
  EXPECT_EQ(r.rfind("HTTP/1.1 413", 0), 0u) << r.substr(0, 300);
  EXPECT_NE(r.find("http.max_body_bytes"), std::string::npos) << r;
  EXPECT_NE(r.find("Connection: close"), std::string::npos) << r.substr(0, 300);
  // Under the limit, in chunks, it is a run.
  auto ok = exchange_raw(port, head + chunk_of(R"({"plan":)") + chunk_of(R"("noop"})") +
                                   "0\r\n\r\n");
  EXPECT_EQ(ok.rfind("HTTP/1.1 201", 0), 0u) << ok.substr(0, 300);
  EXPECT_EQ(call("GET", "/v1/runs", admin).body["runs"].size(), 1u);
}

// This test ensures a request refused before its body is looked at (no
// token, a path or method no endpoint takes) gets its answer without meshd
// holding the body: a chunked one is dropped up to the largest limit and
// then the connection is closed; one with a Content-Length is dropped whole
// and the connection serves the next request. cpp-httplib read every body
// whole before any check (a chunked one however long).
TEST_F(chunked_bodies, a_request_refused_before_its_body_is_answered_without_it) {
  auto endless = chunk_of(std::string(9000, 'x'));
  auto no_token = exchange_raw(port, "POST /v1/runs HTTP/1.1\r\nHost: t\r\n"
                                     "Transfer-Encoding: chunked\r\n\r\n" +
                                         endless);
  EXPECT_EQ(no_token.rfind("HTTP/1.1 401", 0), 0u) << no_token.substr(0, 300);
  EXPECT_NE(no_token.find("Connection: close"), std::string::npos)
      << no_token.substr(0, 300);
  auto auth = "Authorization: Bearer " + admin + "\r\n";
  auto nowhere = exchange_raw(port, "POST /v1/nowhere HTTP/1.1\r\nHost: t\r\n" + auth +
                                        "Transfer-Encoding: chunked\r\n\r\n" + endless);
  EXPECT_EQ(nowhere.rfind("HTTP/1.1 404", 0), 0u) << nowhere.substr(0, 300);
  EXPECT_NE(nowhere.find("\"not_found\""), std::string::npos) << nowhere;
  // A chunked body under the limit, read to its end: the answer still closes
  // the connection, as every chunked request's does.
  auto smuggled = "POST /v1/tokens HTTP/1.1\r\nHost: t\r\n" + auth +
                  "Content-Length: 35\r\n\r\n"
                  R"({"kind":"reader","name":"smuggled"})";
  auto ended = exchange_after_answer(port,
                                     "POST /v1/nowhere HTTP/1.1\r\nHost: t\r\n" + auth +
                                         "Transfer-Encoding: chunked\r\n\r\n" +
                                         chunk_of("{}") + "0\r\n\r\n",
                                     smuggled);
  EXPECT_EQ(ended.rfind("HTTP/1.1 404", 0), 0u) << ended.substr(0, 300);
  EXPECT_EQ(count_of(ended, "HTTP/1.1 "), 1u)
      << "the bytes after it were served: " << ended;
  EXPECT_EQ(call("GET", "/v1/tokens", admin).raw.find("smuggled"), std::string::npos);
  auto wrong_method =
      exchange_raw(port, "PATCH /v1/runs HTTP/1.1\r\nHost: t\r\n" + auth +
                             "Transfer-Encoding: chunked\r\n\r\n" + endless);
  EXPECT_EQ(wrong_method.rfind("HTTP/1.1 405", 0), 0u) << wrong_method.substr(0, 300);
  EXPECT_NE(wrong_method.find("\r\nAllow: POST, GET, HEAD\r\n"), std::string::npos)
      << wrong_method;
  // With a Content-Length the body is dropped and the connection goes on.
  std::string body(6000, 'y');
  auto kept = exchange_after_answer(
      port,
      "POST /v1/runs HTTP/1.1\r\nHost: t\r\nContent-Length: " +
          std::to_string(body.size()) + "\r\n\r\n" + body,
      "GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
  EXPECT_EQ(kept.rfind("HTTP/1.1 401", 0), 0u) << kept.substr(0, 300);
  EXPECT_EQ(count_of(kept, "HTTP/1.1 200"), 1u) << kept;
  EXPECT_TRUE(call("GET", "/v1/runs", admin).body["runs"].empty());
}

// A mesh whose JSON limit is small and whose largest limit (an artifact's,
// 64 MiB by default) is not.
class body_drops : public mesh_fixture {
protected:
  void configure(mesh_config& c) override { c.max_body_bytes = 4096; }
};

// This test ensures a client that sends its whole body before it reads the
// answer (as cpp-httplib's client and Python's http.client do) gets its 413
// for a chunked body over the limit: the rest of the body is dropped, not
// left unread, since closing a socket with unread bytes resets the
// connection and the answer with it. A DELETE with a chunked body, which
// cpp-httplib would not read at all, is refused and changes nothing; a
// Content-Length with leading zeros is its number.
TEST_F(body_drops, a_client_that_sends_everything_first_gets_its_answer) {
  auto head = "POST /v1/runs HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer " + admin +
              "\r\nTransfer-Encoding: chunked\r\n\r\n";
  // More than the sockets' buffers hold, so that the client is still
  // sending when meshd answers.
  std::string body;
  for (int i = 0; i < 16; ++i)
    body += chunk_of(std::string(1 << 20, 'z'));
  auto r = exchange_raw(port, head + body + "0\r\n\r\n");
  EXPECT_EQ(r.rfind("HTTP/1.1 413", 0), 0u) << r.substr(0, 300);
  EXPECT_NE(r.find("http.max_body_bytes"), std::string::npos) << r;

  auto token = call_body("POST", "/v1/tokens", admin, R"({"kind":"reader","name":"r"})");
  ASSERT_EQ(token.status, 201) << token.raw;
  auto id = token.body["id"].get<std::string>();
  auto del = exchange_raw(port, "DELETE /v1/tokens/" + id +
                                    " HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer " +
                                    admin + "\r\nTransfer-Encoding: chunked\r\n\r\n" +
                                    chunk_of("{}") + "0\r\n\r\n");
  EXPECT_EQ(del.rfind("HTTP/1.1 400", 0), 0u) << del.substr(0, 300);
  EXPECT_NE(del.find("a DELETE request takes no body"), std::string::npos) << del;
  EXPECT_NE(call("GET", "/v1/tokens", admin).raw.find(id), std::string::npos);

  std::string run = R"({"plan":"noop"})";
  auto zeros = exchange_raw(
      port, "POST /v1/runs HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer " + admin +
                "\r\nContent-Length: 000000000000000000000" + std::to_string(run.size()) +
                "\r\nConnection: close\r\n\r\n" + run);
  EXPECT_EQ(zeros.rfind("HTTP/1.1 201", 0), 0u) << zeros.substr(0, 300);
}

// This test ensures a Content-Length that is not digits alone, a transfer
// coding other than chunked, and any Content-Encoding are refused before the
// body is read, naming the header, with the connection closed and nothing
// changed. cpp-httplib read the leading digits of a length (`37x` was 37,
// `abc` 0), decoded a gzip body itself and passed an unknown coding through.
TEST_F(http_framing, bad_lengths_and_codings_are_refused_and_change_nothing) {
  auto victim = call_body("POST", "/v1/runs", admin, R"({"plan":"noop"})")
                    .body["id"]
                    .get<std::string>();
  std::string body = R"({"plan":"noop","selector":"nomatch=1"})";
  auto post = [&](const std::string& path, const std::string& headers,
                  const std::string& content) {
    return exchange_raw(port, "POST " + path +
                                  " HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer " +
                                  admin + "\r\n" + headers + "\r\n" + content);
  };
  auto length = std::to_string(body.size());
  for (std::string value : {length + "x", "+" + length, length + ".0",
                            length + " garbage", length + ", 9999", std::string{"-1"}}) {
    SCOPED_TRACE(value);
    auto r = post("/v1/runs", "Content-Length: " + value + "\r\n", body);
    EXPECT_EQ(r.rfind("HTTP/1.1 400", 0), 0u) << r.substr(0, 300);
    EXPECT_NE(r.find("\"field\":\"Content-Length\""), std::string::npos) << r;
    EXPECT_NE(r.find("is not a number of bytes"), std::string::npos) << r;
    EXPECT_NE(r.find("Connection: close"), std::string::npos) << r;
  }
  // Read as 0 before: a body-less call went through.
  auto cancel = post("/v1/runs/" + victim + "/cancel", "Content-Length: abc\r\n", "");
  EXPECT_EQ(cancel.rfind("HTTP/1.1 400", 0), 0u) << cancel.substr(0, 300);

  const std::string gzipped{"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\x03\xab\x56\x2a\xc8"
                            "\x49\xcc\x53\xb2\x52\xca\xcb\xcf\x2f\x50\xaa\x05\x00\xc1"
                            "\x64\xaf\x9d\x0f\x00\x00\x00",
                            35}; // {"plan":"noop"}
  for (auto [coding, content] : {std::pair<std::string, std::string>{"gzip", gzipped},
                                 {"identity", body},
                                 {"bogus", body}}) {
    SCOPED_TRACE(coding);
    auto r = post("/v1/runs",
                  "Content-Encoding: " + coding +
                      "\r\nContent-Length: " + std::to_string(content.size()) + "\r\n",
                  content);
    EXPECT_EQ(r.rfind("HTTP/1.1 400", 0), 0u) << r.substr(0, 300);
    EXPECT_NE(r.find("\"field\":\"Content-Encoding\""), std::string::npos) << r;
    EXPECT_NE(r.find("Content-Encoding '" + coding + "' is not accepted"),
              std::string::npos)
        << r;
    EXPECT_NE(r.find("Connection: close"), std::string::npos) << r;
  }
  auto br = post("/v1/runs/" + victim + "/cancel",
                 "Content-Encoding: br\r\nContent-Length: 3\r\n", "xyz");
  EXPECT_EQ(br.rfind("HTTP/1.1 400", 0), 0u) << br.substr(0, 300);

  auto coding = post("/v1/runs", "Transfer-Encoding: gzip\r\n", body);
  EXPECT_EQ(coding.rfind("HTTP/1.1 400", 0), 0u) << coding.substr(0, 300);
  EXPECT_NE(coding.find("\"field\":\"Transfer-Encoding\""), std::string::npos) << coding;
  EXPECT_NE(coding.find("Connection: close"), std::string::npos) << coding;
  auto twice =
      post("/v1/runs", "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
           "0\r\n\r\n");
  EXPECT_NE(twice.find("more than one Transfer-Encoding header"), std::string::npos)
      << twice;

  EXPECT_EQ(get_run(victim)["status"], "created");
  EXPECT_EQ(call("GET", "/v1/runs", admin).body["runs"].size(), 1u);
  // Digits alone, and chunked in any case, still work.
  auto plain =
      post("/v1/runs", "Content-Length: " + length + "\r\nConnection: close\r\n", body);
  EXPECT_EQ(plain.rfind("HTTP/1.1 201", 0), 0u) << plain.substr(0, 300);
  char size[16];
  std::snprintf(size, sizeof size, "%zx", body.size());
  auto chunked = post("/v1/runs", "Transfer-Encoding: Chunked\r\nConnection: close\r\n",
                      std::string{size} + "\r\n" + body + "\r\n0\r\n\r\n");
  EXPECT_EQ(chunked.rfind("HTTP/1.1 201", 0), 0u) << chunked.substr(0, 300);
  // A chunk size that does not parse says so.
  auto bad_chunk = post("/v1/runs", "Transfer-Encoding: chunked\r\nConnection: close\r\n",
                        "zz\r\n" + body + "\r\n0\r\n\r\n");
  EXPECT_EQ(bad_chunk.rfind("HTTP/1.1 400", 0), 0u) << bad_chunk.substr(0, 300);
  EXPECT_NE(bad_chunk.find("chunked body does not parse"), std::string::npos)
      << bad_chunk;
  // A multipart body is refused as such whatever else is wrong with it, in
  // any spelling of its type.
  for (std::string type : {"multipart/mixed", "MULTIPART/Mixed", "multipart/form-data",
                           "Multipart/Form-Data"}) {
    SCOPED_TRACE(type);
    auto r =
        post("/v1/runs",
             "Content-Type: " + type +
                 "; boundary=x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n",
             "zz\r\n" + body + "\r\n0\r\n\r\n");
    EXPECT_EQ(r.rfind("HTTP/1.1 400", 0), 0u) << r.substr(0, 300);
    EXPECT_NE(r.find("multipart bodies are not accepted"), std::string::npos) << r;
  }
  EXPECT_EQ(call("GET", "/v1/runs", admin).body["runs"].size(), 3u);
}

// This test ensures a GET that announces a body (which the HTTP library does
// not read) is refused and its connection closed, so the announced bytes are
// never served as a request of their own; two Authorization headers are
// refused the same way. A GET with `Content-Length: 0` is served.
TEST_F(http_framing, a_body_on_a_get_and_two_credentials_are_refused) {
  std::string smuggled = "GET /v1/tokens HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer " +
                         admin + "\r\nConnection: close\r\n\r\n";
  for (std::string framing : {"Content-Length: " + std::to_string(smuggled.size()),
                              std::string{"Transfer-Encoding: chunked"}}) {
    SCOPED_TRACE(framing);
    auto r = exchange_after_answer(
        port, "GET /healthz HTTP/1.1\r\nHost: t\r\n" + framing + "\r\n\r\n", smuggled);
    EXPECT_EQ(r.rfind("HTTP/1.1 400", 0), 0u) << r.substr(0, 300);
    EXPECT_NE(r.find("\"field\":\"body\""), std::string::npos) << r;
    EXPECT_NE(r.find("a GET request takes no body"), std::string::npos) << r;
    EXPECT_EQ(count_of(r, "HTTP/1.1 "), 1u) << "the announced bytes were served: " << r;
  }
  // The same for a POST whose length is ambiguous: closed after the answer,
  // whenever the bytes after it come.
  auto twice = exchange_after_answer(
      port,
      "POST /v1/runs HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer " + admin +
          "\r\nContent-Length: 0\r\nContent-Length: " + std::to_string(smuggled.size()) +
          "\r\n\r\n",
      smuggled);
  EXPECT_EQ(twice.rfind("HTTP/1.1 400", 0), 0u) << twice.substr(0, 300);
  EXPECT_EQ(count_of(twice, "HTTP/1.1 "), 1u)
      << "the bytes after it were served: " << twice;
  // HEAD too: cpp-httplib writes it no body, so it is answered as a GET.
  auto head =
      exchange_after_answer(port,
                            "HEAD /healthz HTTP/1.1\r\nHost: t\r\nContent-Length: " +
                                std::to_string(smuggled.size()) + "\r\n\r\n",
                            smuggled);
  EXPECT_EQ(head.rfind("HTTP/1.1 400", 0), 0u) << head.substr(0, 300);
  EXPECT_EQ(count_of(head, "HTTP/1.1 "), 1u)
      << "the announced bytes were served: " << head;
  // A Range on a refused request: the whole error, and nothing after it.
  auto ranged = exchange_raw(port, "GET /healthz HTTP/1.1\r\nHost: t\r\nContent-Length: 5"
                                   "\r\nRange: bytes=0-4000\r\n\r\n");
  auto body_at = ranged.find("\r\n\r\n");
  ASSERT_NE(body_at, std::string::npos) << ranged;
  auto body = ranged.substr(body_at + 4);
  EXPECT_EQ(ranged.find("Content-Range"), std::string::npos) << ranged.substr(0, body_at);
  EXPECT_EQ(
      body,
      R"({"error":{"code":"invalid_argument","field":"body","message":"a GET request )"
      R"(takes no body"}})");
  for (auto length : {"0", "00"}) {
    auto zero = exchange_raw(
        port, std::string{"GET /healthz HTTP/1.1\r\nHost: t\r\nContent-Length: "} +
                  length + "\r\nConnection: close\r\n\r\n");
    EXPECT_EQ(zero.rfind("HTTP/1.1 200", 0), 0u) << length << ": " << zero.substr(0, 300);
  }

  auto reader = call("POST", "/v1/tokens", admin, json{{"kind", "reader"}, {"name", "r"}})
                    .body["token"]
                    .get<std::string>();
  for (auto [first, second] : {std::pair{admin, reader}, std::pair{reader, admin}}) {
    auto r = exchange_raw(port, "GET /v1/tokens HTTP/1.1\r\nHost: t\r\nAuthorization: "
                                "Bearer " +
                                    first + "\r\nAuthorization: Bearer " + second +
                                    "\r\nConnection: close\r\n\r\n");
    EXPECT_EQ(r.rfind("HTTP/1.1 400", 0), 0u) << r.substr(0, 300);
    EXPECT_NE(r.find("more than one Authorization header"), std::string::npos) << r;
  }
  // One of the two empty or blank: the library drops it, and took the other
  // (which a proxy in front may not have checked). Either order, any case.
  for (std::string pair : {"Authorization: Bearer " + admin + "\r\nAuthorization:",
                           "authorization:   \r\nAuthorization: Bearer " + admin,
                           "Authorization:\t\r\nAUTHORIZATION: Bearer " + admin}) {
    auto r = exchange_raw(port, "GET /v1/tokens HTTP/1.1\r\nHost: t\r\n" + pair +
                                    "\r\nConnection: keep-alive\r\n\r\n");
    EXPECT_EQ(r.rfind("HTTP/1.1 400", 0), 0u) << pair << ": " << r.substr(0, 300);
    EXPECT_NE(r.find("more than one Authorization header"), std::string::npos) << r;
    EXPECT_NE(r.find("Connection: close"), std::string::npos) << r.substr(0, 300);
  }
  auto typed = exchange_raw(
      port, "POST /v1/runs HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer " + admin +
                "\r\nContent-Type: application/json\r\nContent-Type:\r\n"
                "Content-Length: 15\r\nConnection: close\r\n\r\n{\"plan\":\"noop\"}");
  EXPECT_EQ(typed.rfind("HTTP/1.1 400", 0), 0u) << typed.substr(0, 300);
  EXPECT_NE(typed.find("more than one Content-Type header"), std::string::npos) << typed;
  EXPECT_TRUE(call("GET", "/v1/runs", admin).body["runs"].empty());
}

// This test ensures a header whose name is not a token (a space in it or
// before its colon, or no name at all) is refused and its connection closed:
// a proxy could take `Content-Length : 5` for the length meshd did not see.
TEST_F(http_framing, header_names_that_are_not_tokens_are_refused) {
  std::string smuggled = "POST /v1/runs HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer " +
                         admin + "\r\nContent-Length: 15\r\n\r\n{\"plan\":\"noop\"}";
  for (std::string line :
       {"Content-Length : " + std::to_string(smuggled.size()),
        std::string{"Bad Header: y"}, std::string{": y"}, std::string{"X\x01Y: z"}}) {
    SCOPED_TRACE(line);
    auto r = exchange_raw(
        port, "POST /v1/runs HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer " + admin +
                  "\r\nContent-Length: 0\r\n" + line + "\r\n\r\n" + smuggled);
    EXPECT_EQ(r.rfind("HTTP/1.1 400", 0), 0u) << r.substr(0, 300);
    EXPECT_NE(r.find("\"field\":\"headers\""), std::string::npos) << r;
    EXPECT_NE(r.find("is not a token"), std::string::npos) << r;
    EXPECT_EQ(count_of(r, "HTTP/1.1 "), 1u) << "the bytes after it were served: " << r;
  }
  // A NUL or a bare CR in a value: refused the same way.
  for (std::string line : {std::string{"X-A: a\0b", 9}, std::string{"X-A: a\rb"}}) {
    auto r = exchange_raw(
        port, "POST /v1/runs HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer " + admin +
                  "\r\nContent-Length: 0\r\n" + line + "\r\n\r\n" + smuggled);
    EXPECT_EQ(r.rfind("HTTP/1.1 400", 0), 0u) << r.substr(0, 300);
    EXPECT_NE(r.find("has a NUL or a bare CR in its value"), std::string::npos) << r;
    EXPECT_EQ(count_of(r, "HTTP/1.1 "), 1u) << "the bytes after it were served: " << r;
  }
  EXPECT_TRUE(call("GET", "/v1/runs", admin).body["runs"].empty());
  // Ordinary names, httplib's own REMOTE_ADDR among them, still work.
  auto ok = exchange_raw(port, "GET /healthz HTTP/1.1\r\nHost: t\r\nX-Request_ID.1: a\r\n"
                               "Connection: close\r\n\r\n");
  EXPECT_EQ(ok.rfind("HTTP/1.1 200", 0), 0u) << ok.substr(0, 300);
}

// This test ensures values that would mislead are refused and change
// nothing: control characters (C0, DEL and C1) and blank names, an agent
// name shaped like an agent id, two log chunks with one seq, an unknown agent
// name, an empty cursor or a concurrency key no run can have as a list
// filter, and signed zeros as integers.
TEST_F(http_framing, values_that_would_mislead_are_400) {
  auto tokens = call("GET", "/v1/tokens", admin).body["tokens"].size();
  for (auto name : {std::string{"a\nb"}, std::string("a\0b", 3), std::string{"\x1b[31m"},
                    std::string{"   "}, std::string{"a\x7f"}, std::string{"a\xc2\x85z"},
                    std::string{"\xc2\x9b"
                                "31m"},
                    // U+2028 and U+2029 break lines; U+00A0, U+200B, U+3000
                    // and U+FEFF alone show nothing.
                    std::string{"\xe2\x80\xa8"}, std::string{"a\xe2\x80\xa9z"},
                    std::string{"\xc2\xa0"}, std::string{"\xe2\x80\x8b\xe3\x80\x80"},
                    std::string{"\xef\xbb\xbf "},
                    // Hangul filler, Braille blank, soft hyphen.
                    std::string{"\xe3\x85\xa4"}, std::string{"\xe2\xa0\x80 \xc2\xad"},
                    // A right-to-left override (a name reads as another),
                    // a first-strong isolate, and a tag space alone.
                    std::string{"evil\xe2\x80\xae"
                                "txt.exe"},
                    std::string{"\xe2\x81\xa8x"}, std::string{"\xf3\xa0\x80\xa0"},
                    // Right-to-left and left-to-right marks, Arabic letter
                    // mark alone.
                    std::string{"\xe2\x80\x8f\xe2\x80\x8e"}, std::string{"\xd8\x9c"}}) {
    SCOPED_TRACE(name);
    auto r = call("POST", "/v1/tokens", admin, json{{"kind", "reader"}, {"name", name}});
    expect_error(r, 400, "invalid_argument", "name");
  }
  EXPECT_EQ(call("GET", "/v1/tokens", admin).body["tokens"].size(), tokens);
  EXPECT_EQ(call("POST", "/v1/tokens", admin,
                 json{{"kind", "reader"}, {"name", "\xc2\xa0\xc3\xa9quipe\xe3\x80\x80"}})
                .status,
            201)
      << "a name with something visible in it is not blank";
  auto reg = [&](const json& extra) {
    json body{{"name", "odd-1"}, {"plans", {"noop"}}};
    body.update(extra);
    return call("POST", "/v1/agents/register", admin, body);
  };
  expect_error(reg(json{{"hostname", "h\r\nX-Injected: 1"}}), 400, "invalid_argument",
               "hostname");
  expect_error(reg(json{{"name", "agt_lookalike"}}), 400, "invalid_argument", "name");
  auto twice_listed = reg(json{{"plans", {"noop", "echo", "noop"}}});
  expect_error(twice_listed, 400, "invalid_argument", "plans[2]");
  EXPECT_NE(twice_listed.raw.find("lists 'noop' twice"), std::string::npos)
      << twice_listed.raw;
  json many = json::array();
  for (int i = 0; i < 1001; ++i)
    many.push_back("p" + std::to_string(i));
  expect_error(reg(json{{"plans", many}}), 400, "invalid_argument", "plans");
  EXPECT_TRUE(call("GET", "/v1/agents", admin).body["agents"].empty());
  expect_error(submit(json{{"plan", "noop"}, {"idempotency_key", "k\n1"}}), 400,
               "invalid_argument", "idempotency_key");
  EXPECT_TRUE(call("GET", "/v1/runs", admin).body["runs"].empty());

  auto agent = register_agent("logger", json::object());
  auto id = submit(json{{"plan", "noop"}}).body["id"].get<std::string>();
  ASSERT_EQ(agent.take(1).size(), 1u);
  auto twice = call("POST", "/v1/runs/" + id + "/logs", agent.token,
                    json{{"chunks", json::array({json{{"seq", 5}, {"data", "one"}},
                                                 json{{"seq", 5}, {"data", "two"}}})}});
  expect_error(twice, 400, "invalid_argument", "chunks[1].seq");
  EXPECT_EQ(call("GET", "/v1/runs/" + id + "/logs", admin).body["chunks"].size(), 0u);
  // A blank progress body is no body, as on the endpoints that take none.
  ASSERT_EQ(call_body("POST", "/v1/runs/" + id + "/start", agent.token, "").status, 200);
  auto blank = call_body("POST", "/v1/runs/" + id + "/progress", agent.token, " \n ");
  EXPECT_EQ(blank.status, 200) << blank.raw;

  expect_error(call("GET", "/v1/runs?agent=no-such-agent", admin), 400,
               "invalid_argument", "agent");
  EXPECT_EQ(call("GET", "/v1/runs?agent=logger", admin).body["runs"].size(), 1u);
  EXPECT_EQ(call("GET", "/v1/runs?agent=agt_forgotten", admin).status, 200)
      << "an id of an agent forgotten since still filters";
  expect_error(call("GET", "/v1/runs?cursor=", admin), 400, "invalid_argument", "cursor");
  for (auto key : {std::string{"a%0Ab"}, std::string{"a%C2%85b"}, std::string(257, 'k')})
    expect_error(call("GET", "/v1/runs?concurrency_key=" + key, admin), 400,
                 "invalid_argument", "concurrency_key");
  EXPECT_EQ(
      call("GET", "/v1/runs?concurrency_key=" + std::string(256, 'k'), admin).status,
      200);
  for (auto q :
       {"/v1/runs/" + id + "/logs?after=-0", "/v1/runs/" + id + "/logs?after=-01",
        "/v1/agents/" + agent.id + "/runs?wait=-0"}) {
    SCOPED_TRACE(q);
    // By the path: a run's random id may hold "wait" (it did, in CI).
    auto r = call("GET", q, q.rfind("/v1/agents/", 0) == 0 ? agent.token : admin);
    EXPECT_EQ(r.status, 400) << r.raw;
  }
}

// This test ensures no token may revoke itself (the last admin would lock
// everyone out), an expired token cannot be revoked (404, as for one already
// revoked), and a scoped token cancelling a finished run outside its scope
// gets 403 without learning the run's status.
TEST_F(http_framing, token_and_scope_edges) {
  auto second =
      call("POST", "/v1/tokens", admin, json{{"kind", "admin"}, {"name", "ops"}});
  ASSERT_EQ(second.status, 201) << second.raw;
  auto self = call("DELETE", "/v1/tokens/" + second.body["id"].get<std::string>(),
                   second.body["token"].get<std::string>());
  expect_error(self, 409, "conflict", "id");
  EXPECT_EQ(call("GET", "/v1/runs", second.body["token"].get<std::string>()).status, 200);

  auto brief = call("POST", "/v1/tokens", admin,
                    json{{"kind", "reader"}, {"name", "brief"}, {"ttl_s", 60}});
  ASSERT_EQ(brief.status, 201);
  advance(std::chrono::seconds{61});
  auto expired =
      call("DELETE", "/v1/tokens/" + brief.body["id"].get<std::string>(), admin);
  expect_error(expired, 404, "not_found", "id");
  // The response is named: a loop over a temporary's member would walk it
  // after it is gone.
  auto listed = call("GET", "/v1/tokens", admin);
  for (auto& t : listed.body["tokens"])
    if (t["id"] == brief.body["id"]) {
      EXPECT_TRUE(t["revoked_at"].is_null()) << t;
    }

  auto agent = register_agent("prod-1", json{{"env", "prod"}});
  auto id = submit(json{{"plan", "noop"}}).body["id"].get<std::string>();
  ASSERT_EQ(agent.take(1).size(), 1u);
  ASSERT_EQ(agent.start(id).status, 200);
  ASSERT_EQ(agent.finish(id, "success").status, 200);
  auto dev = make_token("submitter", "env=dev");
  auto r = call("POST", "/v1/runs/" + id + "/cancel", dev);
  expect_error(r, 403, "forbidden");
  EXPECT_EQ(r.raw.find("success"), std::string::npos) << r.raw;
}

} // namespace
} // namespace polymesh::test
