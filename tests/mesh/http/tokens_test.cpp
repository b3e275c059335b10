// Token administration and the health endpoints over real HTTP.
#include "tests/support/mesh_fixture.hpp"

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
  };
  for (auto& [body, field] : cases) {
    auto r = call("POST", "/v1/tokens", admin, body);
    EXPECT_EQ(r.status, 400) << body.dump() << ": " << r.raw;
    EXPECT_EQ(r.body["error"]["field"], field) << body.dump() << ": " << r.raw;
  }
  EXPECT_EQ(call("GET", "/v1/tokens", admin).body["tokens"].size(), before);
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

} // namespace
} // namespace polymesh::test
