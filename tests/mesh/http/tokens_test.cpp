// Token administration and the health endpoints over real HTTP.
#include "tests/support/mesh_fixture.hpp"

#include <set>

namespace polymesh::test {
namespace {

using tokens = mesh_fixture;

// This test ensures tokens can be created, listed and revoked, and the list
// never shows a secret or a hash.
TEST_F(tokens, create_list_revoke_never_shows_secrets) {
  auto c = call("POST", "/v1/tokens", admin,
                json{{"kind", "submitter"},
                     {"name", "ci"},
                     {"ttl_s", 3600},
                     {"scope", "env in (qa,dev)"}});
  ASSERT_EQ(c.status, 201) << c.raw;
  auto secret = c.body["token"].get<std::string>();
  auto id = c.body["id"].get<std::string>();
  EXPECT_EQ(c.body["kind"], "submitter");
  EXPECT_EQ(c.body["name"], "ci");
  EXPECT_FALSE(c.body["expires_at"].is_null());
  EXPECT_TRUE(c.body["scope"].is_string());
  EXPECT_NE(c.body["scope"].get<std::string>().find("env in"), std::string::npos);
  auto reg =
      call("POST", "/v1/tokens", admin, json{{"kind", "registration"}, {"name", "reg"}});
  ASSERT_EQ(reg.status, 201);
  auto reg_secret = reg.body["token"].get<std::string>();
  auto agent = register_agent("listed", json::object());

  auto list = call("GET", "/v1/tokens", admin);
  ASSERT_EQ(list.status, 200) << list.raw;
  EXPECT_EQ(list.raw.find(secret), std::string::npos) << "secret leaked";
  EXPECT_EQ(list.raw.find(secret.substr(secret.find('.') + 1)), std::string::npos);
  EXPECT_EQ(list.raw.find(reg_secret.substr(reg_secret.find('.') + 1)),
            std::string::npos);
  EXPECT_EQ(list.raw.find(admin), std::string::npos);
  EXPECT_EQ(list.raw.find(agent.token.substr(agent.token.find('.') + 1)),
            std::string::npos);
  bool found = false;
  for (auto& t : list.body["tokens"]) {
    EXPECT_FALSE(t.contains("token")) << t.dump();
    EXPECT_FALSE(t.contains("secret")) << t.dump();
    EXPECT_FALSE(t.contains("hash")) << t.dump();
    EXPECT_FALSE(t.contains("secret_hash")) << t.dump();
    for (auto& [k, v] : t.items()) {
      if (v.is_string()) {
        EXPECT_FALSE(v.get<std::string>().size() == 64 && k != "name") << k << "=" << v;
      }
    }
    if (t["id"] == id) {
      found = true;
      EXPECT_EQ(t["kind"], "submitter");
      EXPECT_TRUE(t["revoked_at"].is_null());
    }
  }
  EXPECT_TRUE(found) << list.raw;

  auto rev = call("DELETE", "/v1/tokens/" + id, admin);
  ASSERT_EQ(rev.status, 200) << rev.raw;
  EXPECT_EQ(rev.raw.find(secret), std::string::npos);
  auto after = call("GET", "/v1/tokens", admin);
  for (auto& t : after.body["tokens"]) {
    if (t["id"] == id) {
      EXPECT_FALSE(t["revoked_at"].is_null()) << t.dump();
    }
  }
  EXPECT_EQ(call("GET", "/v1/runs", secret).status, 401);
  EXPECT_EQ(call("GET", "/v1/runs", reg_secret).status, 403) << "others unaffected";
}

// This test ensures bad token requests are 400 naming the field and create
// nothing.
TEST_F(tokens, bad_token_requests_are_400) {
  auto before = call("GET", "/v1/tokens", admin).body["tokens"].size();
  const std::vector<std::pair<json, std::string>> cases{
      {json{{"name", "x"}}, "kind"},
      {json{{"kind", "root"}, {"name", "x"}}, "kind"},
      {json{{"kind", "agent"}, {"name", "x"}}, "kind"},
      {json{{"kind", "reader"}}, "name"},
      {json{{"kind", "reader"}, {"name", ""}}, "name"},
      {json{{"kind", "reader"}, {"name", "x"}, {"ttl_s", -5}}, "ttl_s"},
      {json{{"kind", "reader"}, {"name", "x"}, {"ttl_s", "60"}}, "ttl_s"},
      {json{{"kind", "reader"}, {"name", "x"}, {"scope", 3}}, "scope"},
      {json{{"kind", "reader"}, {"name", "x"}, {"scope", "env=dev"}}, "scope"},
      {json{{"kind", "submitter"}, {"name", "x"}, {"scope", ""}}, "scope"},
      {json{{"kind", "submitter"}, {"name", "x"}, {"scope", "  "}}, "scope"},
      {json{{"kind", "registration"}, {"name", "x"}, {"scope", "\u00a0"}}, "scope"},
  };
  for (auto& [body, field] : cases) {
    auto r = call("POST", "/v1/tokens", admin, body);
    EXPECT_EQ(r.status, 400) << body.dump() << ": " << r.raw;
    EXPECT_EQ(r.body["error"]["field"], field) << body.dump() << ": " << r.raw;
  }
  EXPECT_EQ(call("GET", "/v1/tokens", admin).body["tokens"].size(), before);
  // A value outside a fixed set is quoted back.
  auto root = call("POST", "/v1/tokens", admin, json{{"kind", "root"}, {"name", "x"}});
  EXPECT_NE(root.raw.find("(got 'root')"), std::string::npos) << root.raw;
  for (std::string path : {"/v1/runs?status=done", "/v1/agents?status=done"}) {
    auto r = call("GET", path, admin);
    EXPECT_EQ(r.status, 400) << path;
    EXPECT_NE(r.raw.find("(got 'done')"), std::string::npos) << path << ": " << r.raw;
  }
}

// This test ensures a newly created admin token can administer tokens.
TEST_F(tokens, created_admin_token_is_an_admin) {
  auto second = make_token("admin");
  auto r = call("POST", "/v1/tokens", second, json{{"kind", "reader"}, {"name", "r"}});
  EXPECT_EQ(r.status, 201) << r.raw;
  // With a second admin, the bootstrap token can be revoked by it.
  auto rev = call("DELETE", "/v1/tokens/admin", second);
  EXPECT_EQ(rev.status, 200) << rev.raw;
  EXPECT_EQ(call("GET", "/v1/tokens", admin).status, 401);
}

// This test ensures /healthz needs no token and /readyz counts runs by
// status and agents by status.
TEST_F(tokens, healthz_without_token_and_readyz_counts) {
  auto h = call("GET", "/healthz", "");
  ASSERT_EQ(h.status, 200) << h.raw;
  EXPECT_EQ(h.body["status"], "ok");

  auto agent = register_agent("counted", json::object());
  register_agent("drained", json::object(), json::array({"other"}));
  ASSERT_EQ(call("POST", "/v1/agents/drained/drain", admin).status, 200);
  auto running = submit(json{{"plan", "noop"}}).body["id"].get<std::string>();
  ASSERT_EQ(agent.take(1).size(), 1u);
  ASSERT_EQ(agent.start(running).status, 200);
  auto waiting = submit(json{{"plan", "noop"}}).body["id"].get<std::string>();
  auto canceled = submit(json{{"plan", "noop"}}).body["id"].get<std::string>();
  ASSERT_EQ(call("POST", "/v1/runs/" + canceled + "/cancel", admin).status, 200);

  auto r = call("GET", "/readyz", agent.token);
  ASSERT_EQ(r.status, 200) << r.raw;
  EXPECT_EQ(r.body["status"], "ready");
  EXPECT_EQ(r.body["runs"]["created"], 1) << r.raw;
  EXPECT_EQ(r.body["runs"]["running"], 1);
  EXPECT_EQ(r.body["runs"]["canceled"], 1);
  EXPECT_EQ(r.body["runs"]["success"], 0);
  EXPECT_EQ(r.body["agents"]["online"], 1);
  EXPECT_EQ(r.body["agents"]["draining"], 1);
  EXPECT_EQ(call("GET", "/readyz", "").status, 401);
  (void)waiting;
}

class agent_tokens : public mesh_fixture {
protected:
  void configure(mesh_config& c) override {
    c.agent_token_ttl = std::chrono::minutes{1};
    c.retention = std::chrono::hours{1};
  }
};

// This test ensures the access tokens an agent renews do not pile up: a
// renewal drops the agent's expired tokens from memory (an expired one is
// then unknown rather than expired), and retention deletes the rows of
// those that expired before its cutoff (36 rows per agent per day with the
// defaults, kept for good before).
TEST_F(agent_tokens, renewed_agent_tokens_are_dropped_once_expired) {
  using namespace std::chrono_literals;
  auto a = register_agent("a", json::object());
  std::vector<std::string> issued{a.token};
  auto renew = [&] {
    auto r = call("POST", "/v1/agents/" + a.id + "/token", issued.back());
    ASSERT_EQ(r.status, 200) << r.raw;
    issued.push_back(r.body["access_token"]);
  };
  advance(40s);
  renew();
  advance(40s); // the first token expired 20 s ago
  renew();
  auto first = call("GET", "/v1/agents/" + a.id, issued.front());
  EXPECT_EQ(first.status, 401);
  EXPECT_NE(first.raw.find("unknown or revoked token"), std::string::npos) << first.raw;
  clock.advance(cfg.retention + 1s); // the cutoff is now 81 s after the start
  node_->prune_once();
  auto list = call("GET", "/v1/tokens", admin);
  ASSERT_EQ(list.status, 200);
  std::set<std::string> agent_ids;
  for (auto& t : list.body["tokens"])
    if (t["kind"] == "agent") agent_ids.insert(t["id"].get<std::string>());
  std::set<std::string> expected;
  for (size_t i = 1; i < issued.size(); ++i)
    expected.insert(issued[i].substr(3, issued[i].find('.') - 3));
  EXPECT_EQ(agent_ids, expected) << list.raw;
}

} // namespace
} // namespace polymesh::test
