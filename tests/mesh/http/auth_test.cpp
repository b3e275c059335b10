// The auth matrix over real HTTP: missing and malformed headers, each token
// kind against each endpoint class, other agents' paths, expiry, revocation
// and selector scopes.
#include "tests/support/mesh_fixture.hpp"

#include <cstdlib>
#include <fstream>
#include <future>
#include <map>
#include <sstream>
#include <sys/stat.h>

namespace polymesh::test {
namespace {

using auth = mesh_fixture;

/// `path` with every `{name}` placeholder replaced by `value`.
std::string fill(const std::string& path, const std::string& value) {
  std::string out;
  for (size_t i = 0; i < path.size(); ++i) {
    if (path[i] == '{') {
      i = path.find('}', i);
      out += value;
    } else {
      out += path[i];
    }
  }
  return out;
}

// This test ensures docs/api.md lists the endpoints meshd serves, as
// `meshd --endpoints` prints them.
TEST(api_docs, endpoint_table_matches_the_route_table) {
  std::ifstream in{std::string{POLYMESH_SOURCE_DIR} + "/docs/api.md"};
  ASSERT_TRUE(in) << "docs/api.md";
  std::stringstream text;
  text << in.rdbuf();
  auto doc = text.str();
  const std::string begin = "<!-- BEGIN ENDPOINTS -->\n";
  auto from = doc.find(begin);
  auto to = doc.find("<!-- END ENDPOINTS -->");
  ASSERT_NE(from, std::string::npos);
  ASSERT_NE(to, std::string::npos);
  from += begin.size();
  EXPECT_EQ(doc.substr(from, to - from), endpoints_markdown())
      << "replace the table with the output of `meshd --endpoints`";
}

// This test ensures every endpoint except /healthz answers 401 with a JSON
// error when no token is sent.
TEST_F(auth, every_protected_endpoint_refuses_a_missing_token) {
  size_t checked = 0;
  for (auto& ep : endpoints()) {
    auto path = fill(ep.path, "x");
    auto r = call_raw(port, ep.method, path, "", "{}");
    if (ep.allowed == public_access) {
      EXPECT_EQ(r.status, 200) << ep.method << " " << path;
      continue;
    }
    EXPECT_EQ(r.status, 401) << ep.method << " " << path << ": " << r.raw;
    EXPECT_EQ(r.body["error"]["code"], "unauthenticated") << ep.method << " " << path;
    ++checked;
  }
  EXPECT_GE(checked, 20u);
}

// This test ensures malformed Authorization headers and unknown tokens are
// 401, and a refused submit creates nothing.
TEST_F(auth, malformed_authorization_headers_are_401) {
  for (const std::string& header : std::vector<std::string>{
           "Basic " + admin, "Bearer", "Bearer ", "Token " + admin, "Bearer  " + admin,
           "Bearer pm_nope.secret", "Bearer " + admin + "x", "Bearer pm_.x", admin}) {
    auto r = call_raw(port, "POST", "/v1/runs", header, R"({"plan":"noop"})");
    EXPECT_EQ(r.status, 401) << "header '" << header << "': " << r.raw;
    EXPECT_EQ(r.body["error"]["code"], "unauthenticated") << header;
  }
  auto list = call("GET", "/v1/runs", admin);
  ASSERT_EQ(list.status, 200);
  EXPECT_TRUE(list.body["runs"].empty());
}

// This test ensures the scheme is matched without regard to case (RFC 9110):
// `bearer` and `BEARER` work like `Bearer`.
TEST_F(auth, bearer_scheme_is_case_insensitive) {
  for (std::string scheme : {"bearer ", "BEARER ", "bEaReR "}) {
    auto r = call_raw(port, "GET", "/v1/runs", scheme + admin);
    EXPECT_EQ(r.status, 200) << "scheme '" << scheme << "': " << r.raw;
  }
  auto agent = register_agent("grammar", json::object());
  auto r = call("GET", "/v1/tokens", agent.token);
  EXPECT_EQ(r.status, 403);
  EXPECT_EQ(
      r.body["error"]["message"].get<std::string>().rfind("an agent token may not", 0),
      0u)
      << r.raw;
}

// This test ensures each token kind outside an endpoint's allowed kinds is
// refused with 403 before the handler runs, for every endpoint.
TEST_F(auth, every_endpoint_refuses_the_wrong_token_kind) {
  auto agent = register_agent("kind-agent", json{{"env", "dev"}});
  std::vector<std::pair<unsigned, std::string>> kinds{
      {admin_access, admin},
      {submitter_access, make_token("submitter")},
      {reader_access, make_token("reader")},
      {registration_access, make_token("registration")},
      {agent_access, agent.token},
  };
  size_t refused = 0;
  for (auto& ep : endpoints()) {
    if (ep.allowed == public_access) continue;
    auto path = fill(ep.path, agent.id);
    for (auto& [bit, token] : kinds) {
      if (ep.allowed & bit) continue;
      auto r = call_raw(port, ep.method, path, "Bearer " + token, "{}");
      EXPECT_EQ(r.status, 403) << ep.method << " " << path << " bit " << bit << ": "
                               << r.raw;
      EXPECT_EQ(r.body["error"]["code"], "forbidden") << ep.method << " " << path;
      ++refused;
    }
  }
  EXPECT_GE(refused, 50u);
  // Nothing the refused calls carried took effect: the agent is still online
  // with its labels, and no run or token was created.
  auto a = call("GET", "/v1/agents/" + agent.id, admin);
  EXPECT_EQ(a.body["status"], "online");
  EXPECT_EQ(a.body["labels"], (json{{"env", "dev"}}));
  EXPECT_TRUE(call("GET", "/v1/runs", admin).body["runs"].empty());
}

// This test ensures an agent token cannot touch another agent's paths or
// runs (403), and the other agent's run is unchanged afterwards.
TEST_F(auth, another_agents_paths_and_runs_are_403) {
  auto a = register_agent("agent-a", json{{"team", "a"}});
  auto b = register_agent("agent-b", json{{"team", "b"}});
  auto sub = submit(json{{"plan", "noop"}, {"selector", "team=a"}});
  ASSERT_EQ(sub.status, 201) << sub.raw;
  auto id = sub.body["id"].get<std::string>();
  ASSERT_EQ(a.take(1).size(), 1u);
  ASSERT_TRUE(becomes(id, "pending"));

  for (auto& [method, path] : std::vector<std::pair<std::string, std::string>>{
           {"GET", "/v1/agents/" + a.id + "/runs?wait=0"},
           {"POST", "/v1/agents/" + a.id + "/token"},
           {"DELETE", "/v1/agents/" + a.id}}) {
    auto r = call(method, path, b.token, json::object());
    EXPECT_EQ(r.status, 403) << method << " " << path << ": " << r.raw;
    EXPECT_EQ(r.body["error"]["code"], "forbidden");
  }
  // An agent naming itself by name gets told to use its id.
  auto by_name = call("POST", "/v1/agents/agent-b/token", b.token, json::object());
  EXPECT_EQ(by_name.status, 403);
  EXPECT_NE(by_name.body["error"]["message"].get<std::string>().find(
                "belongs to agent " + b.id + "; an agent's calls name it by that id"),
            std::string::npos)
      << by_name.raw;
  EXPECT_EQ(b.start(id).status, 403);
  EXPECT_EQ(b.progress(id, "hi").status, 403);
  EXPECT_EQ(b.logs(id, 0, "x").status, 403);
  auto fin = b.finish(id, "success");
  EXPECT_EQ(fin.status, 403) << fin.raw;
  EXPECT_EQ(fin.body["error"]["code"], "forbidden");

  auto run = get_run(id);
  EXPECT_EQ(run["status"], "pending");
  EXPECT_EQ(run["assigned_agent"], a.id);
  EXPECT_TRUE(run["started_at"].is_null());
  EXPECT_TRUE(call("GET", "/v1/runs/" + id + "/logs", admin).body["chunks"].empty());
  EXPECT_EQ(call("GET", "/v1/agents/" + a.id, admin).body["status"], "online");
  // The rightful agent still can.
  EXPECT_EQ(a.start(id).status, 200);
}

// This test ensures a token created with `ttl_s` works until the manual
// clock passes its expiry, then is 401 naming the expiry.
TEST_F(auth, expired_token_is_401) {
  auto reader = make_token("reader", "", 60);
  ASSERT_EQ(call("GET", "/v1/runs", reader).status, 200);
  advance(std::chrono::seconds{59});
  ASSERT_EQ(call("GET", "/v1/runs", reader).status, 200);
  advance(std::chrono::seconds{2});
  auto r = call("GET", "/v1/runs", reader);
  EXPECT_EQ(r.status, 401) << r.raw;
  EXPECT_EQ(r.body["error"]["code"], "unauthenticated");
  EXPECT_NE(r.body["error"]["message"].get<std::string>().find("expired"),
            std::string::npos)
      << r.raw;
}

// This test ensures a token that expired longer ago than
// retention.finished_runs leaves memory at the next retention pass (tokens
// made per CI job piled up for as long as meshd ran): still refused, no
// longer naming its expiry; its row stays in the token history.
TEST_F(auth, a_token_long_expired_leaves_memory_at_retention) {
  auto reader = make_token("reader", "", 60);
  advance(std::chrono::seconds{61});
  auto r = call("GET", "/v1/runs", reader);
  ASSERT_EQ(r.status, 401) << r.raw;
  EXPECT_NE(r.raw.find("token expired at"), std::string::npos) << r.raw;
  advance(cfg.retention);
  (void)node_->prune_once();
  r = call("GET", "/v1/runs", reader);
  EXPECT_EQ(r.status, 401) << r.raw;
  EXPECT_EQ(r.body["error"]["message"], "unknown or revoked token") << r.raw;
  auto listed = call("GET", "/v1/tokens", admin).body["tokens"];
  EXPECT_EQ(std::count_if(listed.begin(), listed.end(),
                          [](const json& t) { return t["kind"] == "reader"; }),
            1)
      << listed.dump();
}

// This test ensures an agent's access token expires after
// `agent.token_ttl` and a refreshed one keeps working.
TEST_F(auth, expired_agent_token_is_401_and_refresh_replaces_it) {
  auto a = register_agent("short-lived", json::object());
  auto fresh = call("POST", "/v1/agents/" + a.id + "/token", a.token, json::object());
  ASSERT_EQ(fresh.status, 200) << fresh.raw;
  ASSERT_TRUE(fresh.body["access_token"].is_string());
  EXPECT_NE(fresh.body["access_token"], a.token);
  EXPECT_EQ(fresh.body["id"], a.id);
  advance(cfg.agent_token_ttl + std::chrono::seconds{1});
  auto r = a.poll(0);
  EXPECT_EQ(r.status, 401) << r.raw;
  EXPECT_EQ(r.body["error"]["code"], "unauthenticated");
}

/// Whether `n` agents' polls wait in the mesh now (`/readyz`).
bool polls_waiting(int port, const std::string& admin, int n) {
  return eventually([&] {
    auto ready = call(port, "GET", "/readyz", admin);
    return ready.body["http"]["long_polls"] == n;
  });
}

// This test ensures a poll waiting when its agent's token is revoked is
// answered 401 at once and carries nothing, also a run submitted after the
// revocation; the agent, left without a token of its session, is offline
// at once (not placed runs for agents.offline_after), and its next
// registration takes the run.
TEST_F(auth,
       a_poll_waiting_when_its_token_is_revoked_is_answered_401_and_carries_nothing) {
  auto a = register_agent("leaky", json::object());
  auto tokens = call("GET", "/v1/tokens", admin).body["tokens"];
  std::string token_id;
  for (auto& t : tokens)
    if (t["kind"] == "agent" && t["agent_id"] == a.id)
      token_id = t["id"].get<std::string>();
  ASSERT_FALSE(token_id.empty()) << tokens.dump();
  auto waited = std::async(std::launch::async, [&] { return a.poll(20); });
  ASSERT_TRUE(polls_waiting(port, admin, 1));
  auto began = std::chrono::steady_clock::now();
  ASSERT_EQ(call("DELETE", "/v1/tokens/" + token_id, admin).status, 200);
  auto r = waited.get();
  EXPECT_EQ(r.status, 401) << r.raw;
  EXPECT_NE(r.raw.find("revoked, or expired, while its poll waited"), std::string::npos)
      << r.raw;
  EXPECT_LT(std::chrono::steady_clock::now() - began, std::chrono::seconds{10})
      << "answered at the revocation, not at the poll's end";
  auto agent = call("GET", "/v1/agents/" + a.id, admin);
  EXPECT_EQ(agent.body["status"], "offline") << agent.raw;
  auto id = submit(json{{"plan", "noop"}}).body["id"].get<std::string>();
  EXPECT_EQ(get_run(id)["status"], "created");
  EXPECT_EQ(a.poll(0).status, 401);
  auto again = register_agent("leaky", json::object());
  auto got = again.take(1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0]["id"], id);
}

// This test ensures a poll whose token expired while it waited carries
// nothing: the run placed then wakes it with a 401, and the run goes back
// to the queue with the agent offline.
TEST_F(auth, a_poll_whose_token_expired_while_it_waited_carries_nothing) {
  auto a = register_agent("slow", json::object());
  auto waited = std::async(std::launch::async, [&] { return a.poll(20); });
  ASSERT_TRUE(polls_waiting(port, admin, 1));
  clock.advance(cfg.agent_token_ttl + std::chrono::seconds{1});
  auto id = submit(json{{"plan", "noop"}}).body["id"].get<std::string>();
  auto r = waited.get();
  EXPECT_EQ(r.status, 401) << r.raw;
  EXPECT_EQ(r.raw.find(id), std::string::npos) << "the run was carried: " << r.raw;
  EXPECT_TRUE(get_run(id)["delivered_at"].is_null());
}

// This test ensures a second space between `Bearer` and the token (a token
// read with a blank before it) is named as such, not "unknown or revoked".
TEST_F(auth, a_second_space_before_the_token_is_named) {
  for (std::string header : {"Bearer  " + admin, "Bearer \t" + admin}) {
    auto r = call_raw(port, "GET", "/v1/runs", header);
    EXPECT_EQ(r.status, 401) << r.raw;
    EXPECT_NE(r.raw.find("more than one space between 'Bearer' and the token"),
              std::string::npos)
        << r.raw;
  }
  EXPECT_EQ(call_raw(port, "GET", "/v1/runs", "Bearer " + admin).status, 200);
}

// This test ensures a revoked token is 401 at once, and revoking it again
// is 404.
TEST_F(auth, revoked_token_is_401) {
  auto created =
      call("POST", "/v1/tokens", admin, json{{"kind", "submitter"}, {"name", "ci"}});
  ASSERT_EQ(created.status, 201) << created.raw;
  auto secret = created.body["token"].get<std::string>();
  auto id = created.body["id"].get<std::string>();
  ASSERT_EQ(call("GET", "/v1/runs", secret).status, 200);
  auto rev = call("DELETE", "/v1/tokens/" + id, admin);
  ASSERT_EQ(rev.status, 200) << rev.raw;
  EXPECT_FALSE(rev.body["revoked_at"].is_null());
  auto r = submit(json{{"plan", "noop"}}, secret);
  EXPECT_EQ(r.status, 401) << r.raw;
  EXPECT_EQ(r.body["error"]["code"], "unauthenticated");
  EXPECT_TRUE(call("GET", "/v1/runs", admin).body["runs"].empty());
  auto again = call("DELETE", "/v1/tokens/" + id, admin);
  EXPECT_EQ(again.status, 404) << again.raw;
  EXPECT_EQ(again.body["error"]["code"], "not_found");
}

// This test ensures the bootstrap admin token cannot revoke itself (409)
// and keeps working.
TEST_F(auth, bootstrap_admin_cannot_revoke_itself) {
  auto r = call("DELETE", "/v1/tokens/admin", admin);
  EXPECT_EQ(r.status, 409) << r.raw;
  EXPECT_EQ(r.body["error"]["code"], "conflict");
  EXPECT_EQ(call("GET", "/v1/tokens", admin).status, 200);
}

// This test ensures a scoped submitter naming an agent outside its scope is
// 403 on field `agent`, and no run is created.
TEST_F(auth, scoped_submitter_cannot_target_an_agent_outside_its_scope) {
  register_agent("prod-1", json{{"env", "prod"}});
  register_agent("dev-1", json{{"env", "dev"}});
  auto dev_only = make_token("submitter", "env=dev");
  auto r = submit(json{{"plan", "noop"}, {"agent", "prod-1"}}, dev_only);
  EXPECT_EQ(r.status, 403) << r.raw;
  EXPECT_EQ(r.body["error"]["code"], "forbidden");
  EXPECT_EQ(r.body["error"]["field"], "agent");
  EXPECT_TRUE(call("GET", "/v1/runs", admin).body["runs"].empty());
  auto ok = submit(json{{"plan", "noop"}, {"agent", "dev-1"}}, dev_only);
  EXPECT_EQ(ok.status, 201) << ok.raw;
  EXPECT_EQ(ok.body["target_agent"], "dev-1");
}

// This test ensures the 403 does not depend on the agent's state: an
// out-of-scope agent that is offline or deregistered is still "outside this
// token's scope" (it was a 409 naming its state), and an in-scope one is
// the 409.
TEST_F(auth, an_out_of_scope_agent_is_403_whatever_its_state) {
  auto prod = register_agent("prod-1", json{{"env", "prod"}});
  auto dev = register_agent("dev-1", json{{"env", "dev"}});
  auto dev_only = make_token("submitter", "env=dev");
  advance(cfg.offline_after + std::chrono::seconds{1});
  auto offline = [&](const std::string& name) {
    return call("GET", "/v1/agents/" + name, admin).body["status"] == "offline";
  };
  ASSERT_TRUE(eventually([&] { return offline("prod-1") && offline("dev-1"); }));
  auto r = submit(json{{"plan", "noop"}, {"agent", "prod-1"}}, dev_only);
  EXPECT_EQ(r.status, 403) << r.raw;
  EXPECT_EQ(r.body["error"]["field"], "agent");
  r = submit(json{{"plan", "noop"}, {"agent", "dev-1"}}, dev_only);
  EXPECT_EQ(r.status, 409) << r.raw;
  EXPECT_EQ(r.body["error"]["message"], "agent 'dev-1' is offline");
  ASSERT_EQ(call("DELETE", "/v1/agents/prod-1", admin).status, 200);
  r = submit(json{{"plan", "noop"}, {"agent", "prod-1"}}, dev_only);
  EXPECT_EQ(r.status, 403) << r.raw;
  EXPECT_TRUE(call("GET", "/v1/runs", admin).body["runs"].empty());
}

// This test ensures runs created with a scoped submitter only ever go to
// agents matching the scope, and explain names the scope for the others.
TEST_F(auth, scoped_submitters_runs_only_go_to_matching_agents) {
  auto prod = register_agent("prod-1", json{{"env", "prod"}}, json::array({"noop"}), 4);
  auto dev_only = make_token("submitter", "env=dev");
  auto sub = submit(json{{"plan", "noop"}}, dev_only);
  ASSERT_EQ(sub.status, 201) << sub.raw;
  auto id = sub.body["id"].get<std::string>();
  EXPECT_EQ(sub.body["scope"], "env=dev");
  tick();
  auto polled = prod.poll(1);
  ASSERT_EQ(polled.status, 200);
  EXPECT_TRUE(polled.body["runs"].empty()) << polled.raw;
  EXPECT_EQ(get_run(id)["status"], "created");
  auto why = call("GET", "/v1/runs/" + id + "/explain", admin);
  ASSERT_EQ(why.status, 200) << why.raw;
  ASSERT_EQ(why.body["agents"].size(), 1u) << why.raw;
  EXPECT_FALSE(why.body["agents"][0]["candidate"].get<bool>());
  EXPECT_NE(why.body["agents"][0]["reason"].get<std::string>().find("scope"),
            std::string::npos)
      << why.raw;

  auto dev = register_agent("dev-1", json{{"env", "dev"}});
  auto got = dev.take(1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0]["id"], id);
  EXPECT_TRUE(eventually([&] { return get_run(id)["assigned_agent"] == dev.id; }))
      << get_run(id).dump();
}

// This test ensures a run no agent could ever take is refused (400 on
// field `selector`, nothing stored): a selector that contradicts itself, or
// one that contradicts the submitting token's scope, which is named; and a
// token whose scope no agent can meet is not made.
TEST_F(auth, a_selector_no_agent_can_ever_meet_is_refused) {
  auto dev_only = make_token("submitter", "env=dev");
  auto itself = submit(json{{"plan", "noop"}, {"selector", "env=prod,env=dev"}});
  ASSERT_EQ(itself.status, 400) << itself.raw;
  EXPECT_EQ(itself.body["error"]["field"], "selector");
  EXPECT_EQ(itself.body["error"]["message"],
            "the selector can never match an agent: label 'env' cannot meet all of "
            "env=dev, env=prod");
  auto scoped = submit(json{{"plan", "noop"}, {"selector", "env=prod"}}, dev_only);
  ASSERT_EQ(scoped.status, 400) << scoped.raw;
  EXPECT_NE(scoped.body["error"]["message"].get<std::string>().find(
                "within this token's scope (env=dev)"),
            std::string::npos)
      << scoped.raw;
  auto batch =
      call("POST", "/v1/runs/batch", dev_only,
           json{{"runs", json::array({json{{"plan", "noop"}, {"selector", "gpu,!gpu"}},
                                      json{{"plan", "noop"}}})}});
  ASSERT_EQ(batch.status, 400) << batch.raw;
  EXPECT_EQ(batch.body["error"]["field"], "runs[0].selector");
  EXPECT_TRUE(call("GET", "/v1/runs", admin).body["runs"].empty());
  EXPECT_EQ(
      submit(json{{"plan", "noop"}, {"selector", "env!=prod,tier=web"}}, dev_only).status,
      201);
  EXPECT_EQ(call("GET", "/v1/runs", admin).body["runs"].size(), 1u);
  auto tokens = call("GET", "/v1/tokens", admin).body["tokens"].size();
  auto nowhere =
      call("POST", "/v1/tokens", admin,
           json{{"kind", "submitter"}, {"name", "n"}, {"scope", "cores>4,cores<5"}});
  ASSERT_EQ(nowhere.status, 400) << nowhere.raw;
  EXPECT_EQ(nowhere.body["error"]["field"], "scope");
  EXPECT_EQ(call("GET", "/v1/tokens", admin).body["tokens"].size(), tokens);
}

// This test ensures a scoped registration token may only register agents
// whose labels match its scope (403 on field `labels`, nothing registered),
// and so may a scoped admin token (api.md, scoped tokens).
TEST_F(auth, scoped_registration_token_refuses_non_matching_labels) {
  auto reg = make_token("registration", "env=dev");
  auto bad =
      call("POST", "/v1/agents/register", reg,
           json{{"name", "prod-1"}, {"labels", {{"env", "prod"}}}, {"plans", {"noop"}}});
  EXPECT_EQ(bad.status, 403) << bad.raw;
  EXPECT_EQ(bad.body["error"]["code"], "forbidden");
  EXPECT_EQ(bad.body["error"]["field"], "labels");
  EXPECT_EQ(bad.body["error"]["message"],
            "agent labels are outside the token's scope (env=dev)");
  auto scoped_admin = make_token("admin", "env=dev");
  auto by_admin =
      call("POST", "/v1/agents/register", scoped_admin,
           json{{"name", "prod-2"}, {"labels", {{"env", "prod"}}}, {"plans", {"noop"}}});
  EXPECT_EQ(by_admin.status, 403) << by_admin.raw;
  EXPECT_EQ(by_admin.body["error"]["field"], "labels");
  auto none = call("POST", "/v1/agents/register", reg,
                   json{{"name", "bare-1"}, {"plans", {"noop"}}});
  EXPECT_EQ(none.status, 403) << none.raw;
  EXPECT_TRUE(call("GET", "/v1/agents", admin).body["agents"].empty());
  EXPECT_EQ(call("GET", "/v1/agents/prod-1", admin).status, 404);
  auto ok =
      call("POST", "/v1/agents/register", reg,
           json{{"name", "dev-1"}, {"labels", {{"env", "dev"}}}, {"plans", {"noop"}}});
  EXPECT_EQ(ok.status, 201) << ok.raw;
}

// This test ensures a later session of an agent (anyone who may register
// under its name) cannot report on runs an earlier session started: no log,
// artifact or finish on a run that session finished or that ended when the
// new session superseded it. The session that ran a run may still send it
// late log chunks.
TEST_F(auth, a_later_session_of_an_agent_cannot_report_on_an_earlier_sessions_runs) {
  auto first = register_agent("a1", json::object(), json::array({"noop"}), 2);
  auto done = submit(json{{"plan", "noop"}}).body["id"].get<std::string>();
  ASSERT_EQ(first.take(1).size(), 1u);
  ASSERT_EQ(first.start(done).status, 200);
  ASSERT_EQ(first.finish(done, "success").status, 200);
  EXPECT_EQ(first.logs(done, 0, "late but mine").status, 200);
  auto busy = submit(json{{"plan", "noop"}}).body["id"].get<std::string>();
  ASSERT_EQ(first.take(1).size(), 1u);
  ASSERT_EQ(first.start(busy).status, 200);

  auto second = register_agent("a1", json::object(), json::array({"noop"}), 2);
  ASSERT_EQ(second.id, first.id);
  ASSERT_TRUE(eventually([&] { return get_run(busy)["status"] != "running"; }))
      << get_run(busy).dump();
  for (const auto& id : {done, busy}) {
    SCOPED_TRACE(id + " (" + get_run(id)["status"].get<std::string>() + ")");
    for (auto r :
         {second.logs(id, 7, "forged"), second.put_artifact(id, "x.txt", "forged"),
          second.progress(id, "forged"), second.finish(id, "success")}) {
      EXPECT_EQ(r.status, 403) << r.raw;
      EXPECT_EQ(r.body["error"]["code"], "held_by_other_session") << r.raw;
      EXPECT_NE(r.raw.find("was started by another session of this agent"),
                std::string::npos)
          << r.raw;
    }
    EXPECT_TRUE(
        call("GET", "/v1/runs/" + id + "/artifacts", admin).body["artifacts"].empty());
  }
  auto chunks = call("GET", "/v1/runs/" + done + "/logs", admin).body["chunks"];
  ASSERT_EQ(chunks.size(), 1u) << chunks.dump();
  EXPECT_EQ(chunks[0]["data"], "late but mine");
  EXPECT_EQ(get_run(done)["status"], "success");
}

// This test ensures a run finished straight from `pending` (its plan failed
// before the start was reported) takes the same finish again and late log
// chunks from the session that finished it.
TEST_F(auth, a_finish_from_pending_makes_its_session_the_holder) {
  auto a = register_agent("a1", json::object());
  auto id = submit(json{{"plan", "noop"}}).body["id"].get<std::string>();
  ASSERT_EQ(a.take(1).size(), 1u);
  ASSERT_EQ(a.finish(id, "error", 2).status, 200);
  auto again = a.finish(id, "error", 2);
  EXPECT_EQ(again.status, 200) << again.raw;
  EXPECT_EQ(again.body["status"], "error");
  EXPECT_EQ(a.logs(id, 0, "why it failed").status, 200);
}

// This test ensures a scoped registration token cannot take over an agent
// outside its scope by registering under its name (with matching labels of
// its own, it used to supersede a prod agent's session and receive its
// runs), nor reach an agent by giving that agent's id as the name (names
// that look like agent ids are refused).
TEST_F(auth, scoped_registration_token_cannot_take_over_another_scopes_agent) {
  auto prod = register_agent("prod-1", json{{"env", "prod"}});
  auto dev_reg = make_token("registration", "env=dev");
  auto takeover =
      call("POST", "/v1/agents/register", dev_reg,
           json{{"name", "prod-1"}, {"labels", {{"env", "dev"}}}, {"plans", {"noop"}}});
  EXPECT_EQ(takeover.status, 403) << takeover.raw;
  EXPECT_EQ(takeover.body["error"]["field"], "name");
  auto shown = call("GET", "/v1/agents/prod-1", admin);
  EXPECT_EQ(shown.body["labels"], json({{"env", "prod"}})) << shown.raw;
  EXPECT_EQ(prod.poll(0).status, 200) << "the prod agent's session still works";

  auto by_id =
      call("POST", "/v1/agents/register", admin,
           json{{"name", prod.id}, {"labels", json::object()}, {"plans", {"noop"}}});
  EXPECT_EQ(by_id.status, 400) << "a name equal to an id would shadow that agent";
  EXPECT_EQ(by_id.body["error"]["field"], "name") << by_id.raw;
  EXPECT_EQ(prod.poll(0).status, 200);
  // Within its scope the dev token may still re-register its own agents.
  auto dev =
      call("POST", "/v1/agents/register", dev_reg,
           json{{"name", "dev-1"}, {"labels", {{"env", "dev"}}}, {"plans", {"noop"}}});
  ASSERT_EQ(dev.status, 201);
  auto again =
      call("POST", "/v1/agents/register", dev_reg,
           json{{"name", "dev-1"}, {"labels", {{"env", "dev"}}}, {"plans", {"noop"}}});
  EXPECT_EQ(again.status, 201) << again.raw;
  EXPECT_EQ(again.body["session"], 2);
}

// The bootstrap admin token taken from POLYMESH_ADMIN_TOKEN.
class env_admin : public mesh_fixture {
protected:
  static constexpr const char* secret = "env-admin-secret-0123456789";
  void SetUp() override {
    ::setenv("POLYMESH_ADMIN_TOKEN", secret, 1);
    mesh_fixture::SetUp();
  }
  void TearDown() override {
    ::unsetenv("POLYMESH_ADMIN_TOKEN");
    mesh_fixture::TearDown();
  }
};

// This test ensures POLYMESH_ADMIN_TOKEN becomes the admin token verbatim,
// no admin.token file is written, and other strings are refused.
TEST_F(env_admin, admin_token_comes_from_the_environment) {
  EXPECT_EQ(admin, secret);
  auto r = call("POST", "/v1/tokens", secret, json{{"kind", "reader"}, {"name", "r"}});
  EXPECT_EQ(r.status, 201) << r.raw;
  EXPECT_EQ(call("GET", "/v1/tokens", secret).status, 200);
  EXPECT_EQ(call("GET", "/v1/tokens", std::string{secret} + "x").status, 401);
  struct stat st {};
  EXPECT_NE(::stat((dir + "/admin.token").c_str(), &st), 0)
      << "admin.token written anyway";
}

// This test ensures a revoked POLYMESH_ADMIN_TOKEN stays revoked when meshd
// starts again with the same value, and a new value rotates it back in.
TEST_F(env_admin, a_revoked_env_admin_token_stays_revoked_across_a_restart) {
  auto second = make_token("admin", "");
  ASSERT_EQ(call("DELETE", "/v1/tokens/admin", second).status, 200);
  ASSERT_EQ(call("GET", "/v1/tokens", secret).status, 401);
  restart_mesh();
  EXPECT_EQ(call("GET", "/v1/tokens", secret).status, 401);
  auto list = call("GET", "/v1/tokens", second);
  ASSERT_EQ(list.status, 200) << list.raw;
  for (auto& t : list.body["tokens"]) {
    if (t["id"] == "admin") {
      EXPECT_FALSE(t["revoked_at"].is_null()) << t.dump();
    }
  }

  const std::string rotated = "env-admin-rotated-0123456789";
  ::setenv("POLYMESH_ADMIN_TOKEN", rotated.c_str(), 1);
  restart_mesh();
  EXPECT_EQ(call("GET", "/v1/tokens", rotated).status, 200);
  EXPECT_EQ(call("GET", "/v1/tokens", secret).status, 401);
}

} // namespace
} // namespace polymesh::test
