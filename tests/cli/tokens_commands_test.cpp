// meshctl tokens create / list / revoke against a real meshd.
#include "tests/cli/meshctl_harness.hpp"

#include <set>

namespace polymesh::cli_test {
namespace {

using tokens_cmd = meshctl_test;

// This test ensures `tokens create` makes a working scoped token with a TTL,
// `tokens list` shows it without its secret, and `tokens revoke` kills it.
TEST_F(tokens_cmd, create_list_revoke) {
  auto c = ctl({"tokens", "create", "--kind", "submitter", "--name", "ci", "--ttl", "30d",
                "--scope", "env=dev", "-o", "json"});
  ASSERT_EQ(c.code, 0) << c.err;
  auto tok = c.json_out();
  EXPECT_EQ(tok["kind"], "submitter");
  EXPECT_EQ(tok["name"], "ci");
  EXPECT_EQ(tok["scope"], "env=dev");
  EXPECT_TRUE(tok["expires_at"].is_string());
  auto secret = tok["token"].get<std::string>();
  auto id = tok["id"].get<std::string>();

  // The new token works for what a submitter may do.
  auto use =
      ctl_raw({"--mesh", url, "--token", secret, "runs", "submit", "noop", "-o", "json"});
  ASSERT_EQ(use.code, 0) << use.err;
  EXPECT_EQ(use.json_out()["scope"], "env=dev");

  auto l = ctl({"tokens", "list", "-o", "json"});
  ASSERT_EQ(l.code, 0) << l.err;
  bool found = false;
  auto listed = l.json_out();
  for (auto& t : listed["tokens"]) {
    EXPECT_FALSE(t.contains("token")) << "a secret in the list: " << t;
    found = found || t["id"] == id;
  }
  EXPECT_TRUE(found);
  auto lt = ctl({"tokens", "list"});
  EXPECT_NE(lt.out.find("ci"), std::string::npos);
  EXPECT_NE(lt.out.find("active"), std::string::npos);

  auto r = ctl({"tokens", "revoke", id});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("revoked"), std::string::npos);
  auto dead = ctl_raw({"--mesh", url, "--token", secret, "runs", "list"});
  EXPECT_EQ(dead.code, 3);
  EXPECT_NE(dead.err.find("not authenticated"), std::string::npos) << dead.err;

  auto table = ctl({"tokens", "create", "--kind", "reader", "--name", "dash"});
  ASSERT_EQ(table.code, 0) << table.err;
  EXPECT_NE(table.out.find("token:"), std::string::npos);
  EXPECT_NE(table.err.find("shown only once"), std::string::npos);

  // Filters: by kind (agents' tokens outnumber the rest), and active only.
  auto agent = register_agent("lister", json::object());
  auto kinds = [&](const std::vector<std::string>& extra) {
    std::vector<std::string> args{"tokens", "list", "-o", "json"};
    args.insert(args.end(), extra.begin(), extra.end());
    auto r = ctl(args);
    EXPECT_EQ(r.code, 0) << r.err;
    auto body = r.json_out();
    EXPECT_TRUE(body.is_object()) << r.out;
    std::multiset<std::string> out;
    for (auto& t : body["tokens"])
      out.insert(t["kind"].get<std::string>() +
                 (t["revoked_at"].is_null() ? "" : "-revoked"));
    return out;
  };
  EXPECT_EQ(kinds({"--kind", "agent"}), std::multiset<std::string>{"agent"});
  EXPECT_EQ(kinds({"--kind", "submitter"}),
            std::multiset<std::string>{"submitter-revoked"});
  EXPECT_EQ(kinds({"--kind", "submitter", "--active"}).size(), 0u);
  EXPECT_EQ(kinds({"--active"}).count("submitter-revoked"), 0u);
  EXPECT_EQ(kinds({}).count("submitter-revoked"), 1u);
  EXPECT_EQ(ctl({"tokens", "list", "--kind", "robot"}).code, 64);
  (void)agent;
}

// This test ensures `tokens create` rejects a bad kind and a bad scope
// before sending anything, with a caret under the scope error.
TEST_F(tokens_cmd, create_rejects_bad_kind_and_scope) {
  auto before = call(port, "GET", "/v1/tokens", admin).body["tokens"].size();
  auto kind = ctl({"tokens", "create", "--kind", "agent", "--name", "x"});
  EXPECT_EQ(kind.code, 64);
  auto scope = ctl(
      {"tokens", "create", "--kind", "reader", "--name", "x", "--scope", "env in (a"});
  EXPECT_EQ(scope.code, 64);
  EXPECT_NE(scope.err.find("--scope"), std::string::npos) << scope.err;
  EXPECT_NE(scope.err.find("  env in (a\n           ^\n"), std::string::npos)
      << scope.err;
  // A lifetime of nothing is not "never expires", and flags are named.
  auto zero = ctl({"tokens", "create", "--kind", "reader", "--name", "x", "--ttl", "0s"});
  EXPECT_EQ(zero.code, 64);
  EXPECT_NE(zero.err.find("--ttl: must be at least 1s"), std::string::npos) << zero.err;
  auto long_ttl =
      ctl({"tokens", "create", "--kind", "reader", "--name", "x", "--ttl", "4000d"});
  EXPECT_EQ(long_ttl.code, 64);
  EXPECT_NE(long_ttl.err.find("--ttl: must be between"), std::string::npos)
      << long_ttl.err;
  auto blank = ctl({"tokens", "create", "--kind", "reader", "--name", " "});
  EXPECT_EQ(blank.code, 64);
  EXPECT_NE(blank.err.find("--name: must not be empty"), std::string::npos) << blank.err;
  // A blank scope would scope nothing: a token of full reach.
  auto blank_scope =
      ctl({"tokens", "create", "--kind", "submitter", "--name", "x", "--scope", " "});
  EXPECT_EQ(blank_scope.code, 64) << blank_scope.err;
  EXPECT_NE(blank_scope.err.find("--scope: is empty or blank"), std::string::npos)
      << blank_scope.err;
  EXPECT_EQ(call(port, "GET", "/v1/tokens", admin).body["tokens"].size(), before);
}

// This test ensures `tokens create --scope ""` (an unset shell variable) is
// refused, exit 64, and creates nothing: it made an unscoped token, of full
// reach, for a user who asked for a scope; `--ttl ""` made one that never
// expires.
TEST_F(tokens_cmd, an_empty_scope_or_ttl_makes_no_token) {
  auto before = call(port, "GET", "/v1/tokens", admin).body["tokens"].size();
  for (auto flag : {"--scope", "--ttl"}) {
    auto r = ctl({"tokens", "create", "--kind", "submitter", "--name", "ci", flag, "",
                  "-o", "json"});
    EXPECT_EQ(r.code, 64) << flag << ": " << r.out;
    EXPECT_NE(r.err.find("error: " + std::string{flag} + ": needs a value"),
              std::string::npos)
        << r.err;
  }
  // CLI11 reads `--scope=` as `--scope` and takes the next word: none here.
  auto bare =
      ctl({"tokens", "create", "--kind", "submitter", "--name", "ci", "--scope="});
  EXPECT_EQ(bare.code, 64) << bare.out;
  EXPECT_NE(bare.err.find("error: --scope:"), std::string::npos) << bare.err;
  EXPECT_EQ(call(port, "GET", "/v1/tokens", admin).body["tokens"].size(), before);
}

} // namespace
} // namespace polymesh::cli_test
