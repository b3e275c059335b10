// meshctl plans list, status, completion and --version against a real meshd.
#include "tests/cli/meshctl_harness.hpp"

#include <cstdlib>
#include <fstream>
#include <string>
#include <tuple>

namespace polymesh::cli_test {
namespace {

using mesh_cmd = meshctl_test;

// This test ensures `plans list` counts agents and online slots per plan,
// leaving out deregistered agents.
TEST_F(mesh_cmd, plans_list_aggregates_agents) {
  register_agent("a1", json::object(), json::array({"build", "test"}), 2);
  register_agent("a2", json::object(), json::array({"build"}), 3);
  auto gone = register_agent("a3", json::object(), json::array({"deploy"}));
  ASSERT_EQ(call(port, "DELETE", "/v1/agents/" + gone.id, admin).status, 200);
  ASSERT_EQ(call(port, "POST", "/v1/agents/a2/drain", admin).status, 200);

  auto p = ctl({"plans", "list", "-o", "json"});
  ASSERT_EQ(p.code, 0) << p.err;
  auto plans = p.json_out()["plans"];
  ASSERT_EQ(plans.size(), 2u) << plans;
  EXPECT_EQ(plans[0], (json{{"plan", "build"},
                            {"agents", 2},
                            {"online", 1},
                            {"draining", 1},
                            {"offline", 0},
                            {"online_slots", 2}}));
  EXPECT_EQ(plans[1]["plan"], "test");
  auto t = ctl({"plans", "list"});
  EXPECT_NE(t.out.find("PLAN"), std::string::npos);
  EXPECT_NE(t.out.find("build"), std::string::npos);
}

// This test ensures `status` shows the mesh's health: agents and runs by
// status (the /readyz object as JSON) and the queue depth for people.
TEST_F(mesh_cmd, status_counts_agents_and_runs) {
  register_agent("s1", json::object(), json::array({"noop"}));
  submit(json{{"plan", "nobody-has-it"}});
  submit(json{{"plan", "nobody-has-it"}});
  auto s = ctl({"status", "-o", "json"});
  ASSERT_EQ(s.code, 0) << s.err;
  auto body = s.json_out();
  EXPECT_EQ(body["status"], "ready");
  EXPECT_EQ(body["agents"]["online"], 1);
  EXPECT_EQ(body["runs"]["created"], 2);
  auto t = ctl({"status"});
  ASSERT_EQ(t.code, 0) << t.err;
  EXPECT_NE(t.out.find("queue depth:  2 waiting"), std::string::npos) << t.out;
  EXPECT_NE(t.out.find(url), std::string::npos);
}

// This test ensures `completion bash` prints a script bash accepts that
// knows the command tree, and `--version` prints the version.
TEST_F(mesh_cmd, completion_and_version) {
  auto c = ctl_raw({"completion", "bash"});
  ASSERT_EQ(c.code, 0) << c.err;
  EXPECT_NE(c.out.find("complete -F _meshctl meshctl"), std::string::npos);
  EXPECT_NE(c.out.find("\" runs\") echo \"submit rerun list ls show logs cancel explain "
                       "artifacts wait\""),
            std::string::npos)
      << c.out;
  EXPECT_NE(c.out.find("--idempotency-key"), std::string::npos);
  EXPECT_NE(c.out.find("--get"), std::string::npos);
  auto script = dir + "/meshctl.bash";
  std::ofstream{script} << c.out;
  // Source it and ask it to complete `meshctl runs su`.
  auto cmd = "bash -c 'source " + script +
             " && COMP_WORDS=(meshctl runs su) && COMP_CWORD=2 && _meshctl && "
             "[ \"${COMPREPLY[*]}\" = submit ]'";
  EXPECT_EQ(std::system(cmd.c_str()), 0);
  // A flag that takes no value does not swallow the next word: `--no-color`
  // before the command, `--wait` before another option.
  for (auto [words, cword, expect] :
       {std::tuple{"meshctl --no-color runs su", 3, "submit"},
        std::tuple{"meshctl runs submit noop --wait --params-f", 5, "--params-file"},
        // The values of a fixed set, per command: an agent's and a run's
        // statuses differ; a global option's values hold under any command.
        std::tuple{"meshctl agents list --status d", 4, "draining deregistered"},
        std::tuple{"meshctl runs list --status c", 4, "created canceled"},
        std::tuple{"meshctl runs list -o y", 4, "yaml"},
        std::tuple{"meshctl tokens create --kind r", 4, "reader registration"}}) {
    SCOPED_TRACE(words);
    auto complete = "bash -c 'source " + script + " && COMP_WORDS=(" + words +
                    ") && COMP_CWORD=" + std::to_string(cword) +
                    " && _meshctl && [ \"${COMPREPLY[*]}\" = \"" + expect + "\" ]'";
    EXPECT_EQ(std::system(complete.c_str()), 0);
  }

  auto v = ctl_raw({"--version"});
  EXPECT_EQ(v.code, 0);
  EXPECT_EQ(v.out.rfind("meshctl ", 0), 0u) << v.out;
}

} // namespace
} // namespace polymesh::cli_test
