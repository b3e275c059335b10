#include "plans/script/script_plan.hpp"
#include "polymesh/sdk/testkit.hpp"

#include <fstream>
#include <gtest/gtest.h>

using namespace polymesh;
using nlohmann::json;

namespace {

class script_plan_test : public ::testing::Test {
protected:
  void SetUp() override {
    scripts_ = dir_.path() / "scripts";
    std::filesystem::create_directories(scripts_);
    write("show.sh", "#!/bin/sh\necho \"args: $*\"\necho \"TARGET=$TARGET\"\n"
                     "echo \"payload=$POLYMESH_PAYLOAD\"\nexit ${CODE:-0}\n");
    std::ofstream{dir_.path() / "outside.sh"} << "#!/bin/sh\necho outside\n";
    std::filesystem::create_symlink(dir_.path() / "outside.sh", scripts_ / "escape.sh");
    plan_ = plans::make_script_plan(
        json{{"dir", scripts_.string()}, {"run_env", {"TARGET", "CODE"}}},
        "plans.script");
  }

  void write(const std::string& name, const std::string& text) {
    std::ofstream{scripts_ / name} << text;
    std::filesystem::permissions(scripts_ / name, std::filesystem::perms::owner_all);
  }

  sdk::plan_result run(json params, std::string payload = {}) {
    run_.ctx.params = std::move(params);
    run_.ctx.payload = std::move(payload);
    return plan_->run(run_.ctx);
  }

  sdk::testkit::temp_dir dir_;
  std::filesystem::path scripts_;
  std::shared_ptr<sdk::plan> plan_;
  sdk::testkit::scratch_run run_;
};

} // namespace

// This test ensures a script runs with its args, env params and the payload.
TEST_F(script_plan_test, runs_with_args_and_env) {
  auto r =
      run({{"script", "show.sh"}, {"args", {"a b", "c"}}, {"env", {{"TARGET", "db1"}}}},
          "the payload");
  EXPECT_TRUE(r.ok) << r.error;
  EXPECT_EQ(r.result, "args: a b c\nTARGET=db1\npayload=the payload\n");
}

// This test ensures the largest payload an environment string can hold
// reaches the script, and a larger one is refused saying why (it failed at
// exec with "Argument list too long").
TEST_F(script_plan_test, payload_up_to_the_environment_limit) {
  auto limit = size_t{128 * 1024} - sizeof("POLYMESH_PAYLOAD=");
  auto fits = run({{"script", "show.sh"}}, std::string(limit, 'p'));
  EXPECT_TRUE(fits.ok) << fits.error;
  auto big = run({{"script", "show.sh"}}, std::string(limit + 1, 'p'));
  EXPECT_FALSE(big.ok);
  EXPECT_NE(big.error.find("more than a script can receive in POLYMESH_PAYLOAD"),
            std::string::npos)
      << big.error;
}

// This test ensures a failing script reports its exit code.
TEST_F(script_plan_test, exit_code_is_reported) {
  auto r = run({{"script", "show.sh"}, {"env", {{"CODE", 4}}}});
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.exit_code, 4);
}

// This test ensures script names with paths, dot-dot or symlinks out of dir are refused.
TEST_F(script_plan_test, escapes_are_refused) {
  EXPECT_NE(run({{"script", "../outside.sh"}}).error.find("not a plain file name"),
            std::string::npos);
  EXPECT_NE(run({{"script", "/bin/sh"}}).error.find("not a plain file name"),
            std::string::npos);
  EXPECT_NE(run({{"script", "escape.sh"}}).error.find("leads outside"),
            std::string::npos);
  EXPECT_NE(run({{"script", "missing.sh"}}).error.find("no script 'missing.sh'"),
            std::string::npos);
}

// This test ensures env params cannot set reserved or malformed names.
TEST_F(script_plan_test, dangerous_env_names_are_refused) {
  for (auto name : {"PATH", "LD_PRELOAD", "POLYMESH_RUN_ID", "lower", "A-B", "1X"}) {
    auto r = run({{"script", "show.sh"}, {"env", {{name, "x"}}}});
    EXPECT_FALSE(r.ok) << name;
    EXPECT_NE(r.error.find(std::string{"params.env."} + name), std::string::npos)
        << r.error;
  }
}

// This test ensures a run may set only the variables the agent's admin
// listed in `run_env` (interpreters take too many variables as code for a
// deny-list: PERL5OPT, PYTHONWARNINGS with BROWSER, ...), and a reserved name
// cannot be listed.
TEST_F(script_plan_test, only_listed_env_names_may_be_set) {
  for (auto name : {"PERL5OPT", "PYTHONWARNINGS", "BROWSER", "RUBYOPT", "NODE_OPTIONS"}) {
    auto r = run({{"script", "show.sh"}, {"env", {{name, "x"}}}});
    EXPECT_FALSE(r.ok) << name;
    EXPECT_NE(r.error.find("run_env"), std::string::npos) << r.error;
  }
  EXPECT_THROW(
      (void)plans::make_script_plan(
          json{{"dir", scripts_.string()}, {"run_env", {"LD_PRELOAD"}}}, "plans.script"),
      sdk::config_error);
}

// This test ensures unknown params are refused.
TEST_F(script_plan_test, unknown_params_are_refused) {
  auto r = run({{"script", "show.sh"}, {"shell", true}});
  EXPECT_NE(r.error.find("params.shell: unknown key (expected script, args, env)"),
            std::string::npos)
      << r.error;
}

// This test ensures the settings need an existing absolute directory.
TEST(script_plan_settings, dir_must_exist) {
  EXPECT_THROW((void)plans::make_script_plan(json{{"dir", "relative"}}, "plans.script"),
               sdk::config_error);
  EXPECT_THROW(
      (void)plans::make_script_plan(json{{"dir", "/nonexistent/dir"}}, "plans.script"),
      sdk::config_error);
}

// This test ensures a payload with a NUL byte is refused saying why: the
// script received it cut at the NUL, and the run succeeded.
TEST_F(script_plan_test, a_payload_with_a_nul_byte_is_refused) {
  auto r = run({{"script", "show.sh"}}, std::string{"abc\0def", 7});
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.error, "payload: has a NUL byte, which a script cannot receive in "
                     "POLYMESH_PAYLOAD (an environment string ends at the first one)");
  EXPECT_EQ(run_.log.out(), "");
}

// This test ensures the scripts' directory is resolved at each run, so a
// `current` symlink a deploy moves to the next release takes effect
// without restarting the agent (it was resolved once, at start); and a
// script keeps the name it was run by in `$0` (a symlink's, not its
// target's), and may be a symlink to a script in a subdirectory.
TEST(script_plan, a_moved_current_symlink_takes_effect_at_the_next_run) {
  sdk::testkit::temp_dir base;
  auto script = [&](const std::filesystem::path& file, const std::string& text) {
    std::filesystem::create_directories(file.parent_path());
    std::ofstream{file} << text;
    std::filesystem::permissions(file, std::filesystem::perms::owner_all);
  };
  for (auto release : {"r1", "r2"})
    script(base.path() / release / "ver.sh", std::string{"#!/bin/sh\necho \"release "} +
                                                 release + " as $(basename \"$0\")\"\n");
  script(base.path() / "r2" / "tools" / "inner.sh", "#!/bin/sh\necho inner\n");
  std::filesystem::create_symlink("ver.sh", base.path() / "r2" / "version.sh");
  std::filesystem::create_symlink("tools/inner.sh", base.path() / "r2" / "inner.sh");
  auto current = base.path() / "current";
  std::filesystem::create_directory_symlink("r1", current);
  auto plan =
      plans::make_script_plan(json{{"dir", current.string() + "/"}}, "plans.script");
  auto run = [&](const std::string& name) {
    sdk::testkit::scratch_run r;
    r.ctx.params = {{"script", name}};
    return plan->run(r.ctx);
  };
  EXPECT_EQ(run("ver.sh").result, "release r1 as ver.sh\n");
  auto missing = run("version.sh");
  EXPECT_FALSE(missing.ok);
  EXPECT_EQ(missing.error,
            "params.script: no script 'version.sh' in " + current.string());
  // The deploy: a new link renamed over the old one.
  std::filesystem::create_directory_symlink("r2", base.path() / "current.new");
  std::filesystem::rename(base.path() / "current.new", current);
  EXPECT_EQ(run("ver.sh").result, "release r2 as ver.sh\n");
  EXPECT_EQ(run("version.sh").result, "release r2 as version.sh\n");
  auto inner = run("inner.sh");
  EXPECT_TRUE(inner.ok) << inner.error;
  EXPECT_EQ(inner.result, "inner\n");
  std::filesystem::remove(current);
  auto gone = run("ver.sh");
  EXPECT_FALSE(gone.ok);
  EXPECT_NE(gone.error.find("params.script: the scripts' directory " + current.string() +
                            " is not there now"),
            std::string::npos)
      << gone.error;
}
