#include "plans/terraform/terraform_plan.hpp"
#include "polymesh/sdk/testkit.hpp"

#include <fstream>
#include <gtest/gtest.h>
#include <sstream>

using namespace polymesh;
using nlohmann::json;

namespace {

/// A fake `terraform` on PATH that records its working directory and args.
constexpr const char* fake_terraform = R"(#!/bin/sh
echo "$PWD|$*" >> "$FAKE_TF_LOG"
case "$1" in
  plan)
    for a in "$@"; do
      case "$a" in -out=*) echo planfile > "${a#-out=}" ;; esac
    done
    echo "Plan: 1 to add" ;;
  show) echo "rendered $3" ;;
  apply) echo "Apply complete" ;;
  init) echo "Terraform initialized" ;;
esac
exit ${FAKE_TF_EXIT:-0}
)";

class terraform_plan_test : public ::testing::Test {
protected:
  void SetUp() override {
    bin_ = dir_.path() / "bin";
    ws_ = dir_.path() / "infra" / "dev";
    std::filesystem::create_directories(bin_);
    std::filesystem::create_directories(ws_);
    std::ofstream{bin_ / "terraform"} << fake_terraform;
    std::filesystem::permissions(bin_ / "terraform", std::filesystem::perms::owner_all);
    log_ = dir_.path() / "calls.log";
  }

  std::shared_ptr<sdk::plan> make(json env = json::object()) {
    env["FAKE_TF_LOG"] = log_.string();
    return plans::make_terraform_plan(json{{"workspaces", {ws_.string()}},
                                           {"path", bin_.string() + ":/usr/bin:/bin"},
                                           {"env", env}},
                                      "plans.terraform");
  }

  std::vector<std::string> calls() {
    std::ifstream in{log_};
    std::vector<std::string> out;
    for (std::string line; std::getline(in, line);)
      out.push_back(line);
    return out;
  }

  sdk::testkit::temp_dir dir_;
  std::filesystem::path bin_;
  std::filesystem::path ws_;
  std::filesystem::path log_;
  sdk::testkit::scratch_run run_;
};

} // namespace

// This test ensures `plan` runs init, plan with -out and vars, and show into artifacts.
TEST_F(terraform_plan_test, plan_runs_init_plan_show) {
  run_.ctx.params = {{"action", "plan"},
                     {"workspace", ws_.string()},
                     {"vars", {{"region", "eu; rm -rf / $(id)"}, {"count", 2}}}};
  auto r = make()->run(run_.ctx);
  ASSERT_TRUE(r.ok) << r.error << run_.log.all();
  auto plan_file = (run_.ctx.artifacts_dir / "plan.tfplan").string();
  auto ws = ws_.string();
  EXPECT_EQ(calls(), (std::vector<std::string>{
                         ws + "|init -input=false -no-color",
                         ws + "|plan -input=false -no-color -out=" + plan_file +
                             " -var count=2 -var region=eu; rm -rf / $(id)",
                         ws + "|show -no-color " + plan_file}));
  EXPECT_TRUE(std::filesystem::exists(plan_file));
  std::ifstream txt{run_.ctx.artifacts_dir / "plan.txt"};
  std::stringstream ss;
  ss << txt.rdbuf();
  EXPECT_EQ(ss.str(), "rendered " + plan_file + "\n");
}

// This test ensures the kept plan file, which holds the variables in clear
// (sensitive ones too), is readable by the agent's user alone: it was 0644
// in a 0755 directory. A directory an older version made is tightened too.
TEST_F(terraform_plan_test, a_kept_plan_is_the_agents_users_alone) {
  namespace fs = std::filesystem;
  auto dot = ws_ / ".polymesh";
  fs::create_directories(dot / "plans");
  fs::permissions(dot, fs::perms::owner_all | fs::perms::group_read |
                           fs::perms::group_exec | fs::perms::others_read |
                           fs::perms::others_exec);
  fs::permissions(dot / "plans", fs::status(dot).permissions());
  run_.ctx.run_id = "run_secret1";
  run_.ctx.params = {{"action", "plan"}, {"workspace", ws_.string()}};
  auto r = make()->run(run_.ctx);
  ASSERT_TRUE(r.ok) << r.error << run_.log.all();
  auto kept = dot / "plans" / "run_secret1.tfplan";
  ASSERT_TRUE(fs::exists(kept)) << run_.log.all();
  EXPECT_EQ(fs::status(kept).permissions(),
            fs::perms::owner_read | fs::perms::owner_write);
  EXPECT_EQ(fs::status(dot / "plans").permissions(), fs::perms::owner_all);
  EXPECT_EQ(fs::status(dot).permissions(), fs::perms::owner_all);
}

// This test ensures a workspace that is not there is a warning naming the
// key (a checkout may come later), and the plan still builds.
TEST_F(terraform_plan_test, a_missing_workspace_is_a_warning) {
  sdk::config_warnings collected;
  (void)plans::make_terraform_plan(
      json{{"workspaces", {ws_.string(), "/nonexistent/infra/"}},
           {"path", bin_.string() + ":/usr/bin:/bin"}},
      "plans.terraform");
  EXPECT_EQ(collected.lines(),
            std::vector<std::string>{
                "plans.terraform.workspaces[1]: '/nonexistent/infra' is not a directory; "
                "runs in it fail until it is there"});
}

// This test ensures `apply` auto-approves and `init: false` skips init.
TEST_F(terraform_plan_test, apply_without_init) {
  run_.ctx.params = {
      {"action", "apply"}, {"workspace", ws_.string() + "/"}, {"init", false}};
  auto r = make()->run(run_.ctx);
  ASSERT_TRUE(r.ok) << r.error;
  EXPECT_EQ(calls(), (std::vector<std::string>{
                         ws_.string() + "|apply -input=false -no-color -auto-approve"}));
  EXPECT_NE(r.result.find("Apply complete"), std::string::npos);
}

// This test ensures a plan run keeps its plan file in the workspace, and an
// apply naming that run applies exactly that file (no -auto-approve, no
// re-plan), then removes it; a second apply of it, vars next to it, a
// plan_run on a plan, and an id that is not a run id are refused.
TEST_F(terraform_plan_test, apply_of_a_kept_plan_applies_that_plan) {
  auto plan = make();
  run_.ctx.run_id = "run_reviewed1";
  run_.ctx.params = {{"action", "plan"}, {"workspace", ws_.string()}, {"init", false}};
  auto planned = plan->run(run_.ctx);
  ASSERT_TRUE(planned.ok) << planned.error << run_.log.all();
  auto kept = ws_ / ".polymesh" / "plans" / "run_reviewed1.tfplan";
  ASSERT_TRUE(std::filesystem::exists(kept));
  // The line says the whole params of the apply, workspace included.
  EXPECT_NE(run_.log.all().find(R"(params {"action":"apply","plan_run":"run_reviewed1",)"
                                R"("workspace":")" +
                                ws_.string() + R"("} on this agent)"),
            std::string::npos)
      << run_.log.all();

  sdk::testkit::scratch_run apply_run;
  apply_run.ctx.run_id = "run_apply1";
  apply_run.ctx.params = {{"action", "apply"},
                          {"workspace", ws_.string()},
                          {"init", false},
                          {"plan_run", "run_reviewed1"}};
  auto applied = plan->run(apply_run.ctx);
  ASSERT_TRUE(applied.ok) << applied.error << apply_run.log.all();
  EXPECT_EQ(calls().back(),
            ws_.string() + "|apply -input=false -no-color " + kept.string());
  EXPECT_FALSE(std::filesystem::exists(kept)) << "applied plans are removed";

  auto again = plan->run(apply_run.ctx);
  EXPECT_FALSE(again.ok);
  EXPECT_NE(again.error.find("no kept plan of run run_reviewed1"), std::string::npos)
      << again.error;
  for (json params :
       {json{{"action", "apply"},
             {"workspace", ws_.string()},
             {"plan_run", "run_reviewed1"},
             {"vars", {{"a", 1}}}},
        json{{"action", "plan"}, {"workspace", ws_.string()}, {"plan_run", "run_x"}},
        json{{"action", "apply"}, {"workspace", ws_.string()}, {"plan_run", "../../x"}},
        json{{"action", "apply"}, {"workspace", ws_.string()}, {"plan_run", 7}}}) {
    apply_run.ctx.params = params;
    auto r = plan->run(apply_run.ctx);
    EXPECT_FALSE(r.ok) << params.dump();
    EXPECT_NE(r.error.find("params."), std::string::npos) << r.error;
  }
}

// This test ensures kept plans are never written or read through a symlink
// the workspace holds (.polymesh pointing elsewhere): the plan and the apply
// are refused and nothing lands outside the workspace.
TEST_F(terraform_plan_test, kept_plans_are_not_written_through_a_symlink) {
  auto outside = dir_.path() / "outside";
  std::filesystem::create_directories(outside / "plans");
  std::filesystem::create_directory_symlink(outside, ws_ / ".polymesh");
  run_.ctx.run_id = "run_sym1";
  run_.ctx.params = {{"action", "plan"}, {"workspace", ws_.string()}, {"init", false}};
  auto planned = make()->run(run_.ctx);
  EXPECT_FALSE(planned.ok);
  EXPECT_NE(planned.error.find("is a symlink"), std::string::npos) << planned.error;
  EXPECT_TRUE(std::filesystem::is_empty(outside / "plans"));
  std::ofstream{outside / "plans" / "run_sym0.tfplan"} << "x";
  sdk::testkit::scratch_run apply_run;
  apply_run.ctx.params = {
      {"action", "apply"}, {"workspace", ws_.string()}, {"plan_run", "run_sym0"}};
  auto applied = make()->run(apply_run.ctx);
  EXPECT_FALSE(applied.ok);
  EXPECT_NE(applied.error.find("is a symlink"), std::string::npos) << applied.error;
  EXPECT_TRUE(calls().empty()) << "terraform never ran";
}

// This test ensures a plan run removes kept plans older than keep_plans
// (and only .tfplan files), and keep_plans 0 keeps them all.
TEST_F(terraform_plan_test, old_kept_plans_are_removed_by_the_next_plan) {
  auto dir = ws_ / ".polymesh" / "plans";
  std::filesystem::create_directories(dir);
  auto age = [&](const std::string& name, std::chrono::hours h) {
    std::ofstream{dir / name} << "x";
    std::filesystem::last_write_time(dir / name,
                                     std::filesystem::file_time_type::clock::now() - h);
  };
  age("run_old.tfplan", std::chrono::hours{9 * 24});
  age("run_recent.tfplan", std::chrono::hours{24});
  age("notes.txt", std::chrono::hours{30 * 24});
  auto forever = plans::make_terraform_plan(
      json{{"workspaces", {ws_.string()}}, {"path", bin_.string()}, {"keep_plans", "0"}},
      "plans.terraform");
  run_.ctx.run_id = "run_new1";
  run_.ctx.params = {{"action", "plan"}, {"workspace", ws_.string()}, {"init", false}};
  ASSERT_TRUE(forever->run(run_.ctx).ok) << run_.log.all();
  EXPECT_TRUE(std::filesystem::exists(dir / "run_old.tfplan")) << "keep_plans: 0";

  sdk::testkit::scratch_run second;
  second.ctx.run_id = "run_new2";
  second.ctx.params = run_.ctx.params;
  ASSERT_TRUE(make()->run(second.ctx).ok) << second.log.all();
  EXPECT_FALSE(std::filesystem::exists(dir / "run_old.tfplan")) << "past 7 days";
  EXPECT_TRUE(std::filesystem::exists(dir / "run_recent.tfplan"));
  EXPECT_TRUE(std::filesystem::exists(dir / "notes.txt"));
  EXPECT_TRUE(std::filesystem::exists(dir / "run_new1.tfplan"));
  EXPECT_TRUE(std::filesystem::exists(dir / "run_new2.tfplan"));
}

// This test ensures a failing terraform step fails the run with its exit code.
TEST_F(terraform_plan_test, failure_stops_with_exit_code) {
  run_.ctx.params = {{"action", "init"}, {"workspace", ws_.string()}};
  auto r = make(json{{"FAKE_TF_EXIT", "2"}})->run(run_.ctx);
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.error.find("terraform init"), std::string::npos) << r.error;
}

// This test ensures workspaces outside the allowed list and bad params are refused.
TEST_F(terraform_plan_test, refuses_bad_params) {
  auto plan = make();
  for (json params :
       {json{{"action", "plan"}, {"workspace", "/etc"}},
        json{{"action", "plan"}, {"workspace", ws_.string() + "/../../.."}},
        json{{"action", "destroy"}, {"workspace", ws_.string()}},
        json{{"action", "plan"}, {"workspace", ws_.string()}, {"vars", {{"a b", 1}}}},
        json{{"action", "plan"}, {"workspace", ws_.string()}, {"extra", 1}},
        json{{"action", 5}, {"workspace", ws_.string()}}}) {
    run_.ctx.params = params;
    auto r = plan->run(run_.ctx);
    EXPECT_FALSE(r.ok) << params.dump();
    EXPECT_EQ(r.error.find("exception"), std::string::npos) << r.error;
    EXPECT_EQ(r.error.rfind("params", 0), 0u) << r.error;
  }
  run_.ctx.params = {{"action", "plan"}, {"workspace", ws_.string()}, {"init", "false"}};
  EXPECT_EQ(plan->run(run_.ctx).error,
            "params.init: expected true or false, got a string 'false' (meshctl: --param "
            "init:=false)");
  // An init took vars and `init: false` and dropped them unseen.
  run_.ctx.params = {
      {"action", "init"}, {"workspace", ws_.string()}, {"vars", {{"a", 1}}}};
  EXPECT_EQ(plan->run(run_.ctx).error,
            "params.vars: an init takes no vars (they are for plan and apply)");
  run_.ctx.params = {{"action", "init"}, {"workspace", ws_.string()}, {"init", false}};
  EXPECT_EQ(plan->run(run_.ctx).error,
            "params.init: an init always runs terraform init (the param says whether "
            "plan and apply run it first)");
  EXPECT_TRUE(calls().empty());
}

// This test ensures the settings need workspaces.
TEST(terraform_settings, workspaces_are_required) {
  try {
    (void)plans::make_terraform_plan(json::object(), "plans.terraform");
    FAIL();
  } catch (const sdk::config_error& e) {
    EXPECT_EQ(e.key(), "plans.terraform.workspaces");
  }
}

// This test ensures a terraform binary that is not there is a config error
// at start-up naming the key and the path searched, not a failure of every
// run later; an absolute path must be an executable file.
TEST_F(terraform_plan_test, a_missing_binary_is_a_config_error) {
  auto try_make = [&](json settings) -> std::string {
    settings["workspaces"] = {ws_.string()};
    try {
      (void)plans::make_terraform_plan(settings, "plans.terraform");
    } catch (const sdk::config_error& e) {
      return e.what(); // it starts with the key
    }
    return "";
  };
  EXPECT_EQ(try_make(json{{"path", bin_.string()}}), "");
  EXPECT_EQ(try_make(json{{"path", bin_.string()}, {"binary", "tofu"}}),
            "plans.terraform.binary: 'tofu' is not an executable in the plan's path (" +
                bin_.string() + "); install it, or set binary to its absolute path");
  EXPECT_EQ(try_make(json{{"binary", (bin_ / "terraform").string()}}), "");
  EXPECT_EQ(try_make(json{{"binary", bin_.string()}}),
            "plans.terraform.binary: '" + bin_.string() + "' is not an executable file");
}
