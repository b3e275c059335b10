#include "plans/shell/shell_plan.hpp"
#include "polymesh/sdk/testkit.hpp"

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <gtest/gtest.h>
#include <thread>

using namespace polymesh;
using nlohmann::json;

namespace {

json settings() {
  return json{
      {"programs", {"echo", "env", "pwd", "true"}},
      {"shortcuts",
       {{{"short", "where"}, {"dir", "/tmp"}, {"cmd", "pwd"}},
        {{"short", "fail3"}, {"cmd", "sh -c 'exit 3'"}},
        {{"short", "piped"}, {"cmd", "echo abc | tr a x"}, {"shell", true}},
        {{"short", "wait"}, {"cmd", "echo started; exec sleep 600"}, {"shell", true}}}},
      {"env", {{"GREETING", "hi"}}}};
}

sdk::plan_result run_on(sdk::plan& plan, const std::string& payload,
                        sdk::testkit::scratch_run& run) {
  run.ctx.payload = payload;
  return plan.run(run.ctx);
}

sdk::plan_result run_payload(const std::string& payload, sdk::testkit::scratch_run& run) {
  return run_on(*plans::make_shell_plan(settings(), "plans.shell"), payload, run);
}

/// Writes an executable (0700) script.
void write_script(const std::filesystem::path& file, const std::string& text) {
  std::ofstream{file} << text;
  std::filesystem::permissions(file, std::filesystem::perms::owner_all);
}

} // namespace

// This test ensures a shortcut's command holding a NUL byte is refused, with
// a shell or without: with one it ran cut at the NUL, and without one the
// error told to set `shell: true`.
TEST(shell_plan, a_shortcut_with_a_nul_byte_is_refused) {
  for (bool shell : {false, true}) {
    json s{{"shortcuts",
            {{{"short", "x"},
              {"cmd", std::string{"echo a\0; rm -rf /", 16}},
              {"shell", shell}}}}};
    try {
      (void)plans::make_shell_plan(s, "plans.shell");
      ADD_FAILURE() << "expected a config_error, shell: " << shell;
    } catch (const sdk::config_error& e) {
      EXPECT_EQ(e.key(), "plans.shell.shortcuts[0].cmd");
      EXPECT_NE(std::string{e.what()}.find("holds a NUL byte"), std::string::npos)
          << e.what();
    }
  }
}

// This test ensures the shell plan refuses params, naming the key, before
// it runs anything: it took any, and dropped them unseen.
TEST(shell_plan, params_are_refused) {
  sdk::testkit::scratch_run run;
  run.ctx.params = {{"cmd", "hostname"}};
  auto r = run_payload("true", run);
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.error, "params.cmd: unknown key (the shell plan takes no params; the "
                     "payload is the command line)");
  run.ctx.params = json::object();
  EXPECT_TRUE(run_payload("true", run).ok);
}

// This test ensures an allowed program runs as argv and its output is the result.
TEST(shell_plan, allowed_program_runs) {
  sdk::testkit::scratch_run run;
  auto r = run_payload("echo hello 'big world'", run);
  EXPECT_TRUE(r.ok) << r.error;
  EXPECT_EQ(r.result, "hello big world\n");
  EXPECT_EQ(run.log.out(), "hello big world\n");
  EXPECT_EQ(r.exit_code, 0);
}

// This test ensures `free; rm -rf /` style payloads never run a second command.
TEST(shell_plan, injection_is_refused_and_nothing_runs) {
  sdk::testkit::scratch_run run;
  auto marker = run.dir.path() / "pwned";
  auto r = run_payload("echo hi; touch " + marker.string(), run);
  EXPECT_FALSE(r.ok);
  EXPECT_NE(r.error.find("shell metacharacter ';'"), std::string::npos) << r.error;
  EXPECT_FALSE(std::filesystem::exists(marker));
  EXPECT_EQ(run.log.out(), "");
}

// This test ensures a program outside the allow list is refused with the list.
TEST(shell_plan, unlisted_program_is_refused) {
  sdk::testkit::scratch_run run;
  auto r = run_payload("rm -rf /", run);
  EXPECT_FALSE(r.ok);
  EXPECT_NE(r.error.find("command 'rm' is not allowed"), std::string::npos) << r.error;
  EXPECT_NE(r.error.find("shortcuts: where, fail3, piped, wait"), std::string::npos)
      << r.error;
}

// This test ensures a path to an allowed program name does not sneak past the rule.
TEST(shell_plan, path_to_program_is_not_the_program) {
  sdk::testkit::scratch_run run;
  auto r = run_payload("/tmp/echo hi", run);
  EXPECT_FALSE(r.ok);
}

// This test ensures a shortcut runs its command in its directory.
TEST(shell_plan, shortcut_runs_in_its_dir) {
  sdk::testkit::scratch_run run;
  auto r = run_payload(" where ", run);
  EXPECT_TRUE(r.ok) << r.error;
  EXPECT_EQ(r.result, "/tmp\n");
}

// This test ensures an allowed command without a dir runs in the fresh work dir.
TEST(shell_plan, default_cwd_is_work_dir) {
  sdk::testkit::scratch_run run;
  auto r = run_payload("pwd", run);
  EXPECT_TRUE(r.ok) << r.error;
  EXPECT_EQ(r.result, run.ctx.work_dir.string() + "\n");
}

// This test ensures a shortcut marked shell: true goes through /bin/sh.
TEST(shell_plan, shell_shortcut_uses_sh) {
  sdk::testkit::scratch_run run;
  auto r = run_payload("piped", run);
  EXPECT_TRUE(r.ok) << r.error;
  EXPECT_EQ(r.result, "xbc\n");
}

// This test ensures a non-zero exit is an error carrying the exit code.
TEST(shell_plan, exit_code_is_reported) {
  sdk::testkit::scratch_run run;
  auto r = run_payload("fail3", run);
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.exit_code, 3);
  EXPECT_NE(r.error.find("exited with code 3"), std::string::npos) << r.error;
}

// This test ensures the program sees only the allowed environment.
TEST(shell_plan, environment_is_only_what_is_allowed) {
  ::setenv("POLYMESH_TEST_SECRET", "leak", 1);
  sdk::testkit::scratch_run run;
  auto r = run_payload("env", run);
  EXPECT_TRUE(r.ok) << r.error;
  EXPECT_EQ(r.result.find("POLYMESH_TEST_SECRET"), std::string::npos);
  EXPECT_NE(r.result.find("GREETING=hi\n"), std::string::npos);
  EXPECT_NE(r.result.find("POLYMESH_RUN_ID=r-test\n"), std::string::npos);
  EXPECT_NE(r.result.find("POLYMESH_RETRY_NUMBER=0\n"), std::string::npos) << r.result;
  EXPECT_NE(r.result.find("POLYMESH_RETRY_OF=\n"), std::string::npos) << r.result;
  EXPECT_NE(r.result.find("PATH=/usr/local/bin:/usr/bin:/bin\n"), std::string::npos);
}

// This test ensures a retry's program learns it is one, and of which run.
TEST(shell_plan, a_retry_says_which_and_of_what) {
  sdk::testkit::scratch_run run;
  run.ctx.retry_number = 2;
  run.ctx.retry_of = "run_first";
  auto r = run_payload("env", run);
  EXPECT_TRUE(r.ok) << r.error;
  EXPECT_NE(r.result.find("POLYMESH_RETRY_NUMBER=2\n"), std::string::npos) << r.result;
  EXPECT_NE(r.result.find("POLYMESH_RETRY_OF=run_first\n"), std::string::npos)
      << r.result;
}

// This test ensures a cancel stops the running command promptly.
TEST(shell_plan, cancel_stops_the_command) {
  sdk::testkit::scratch_run run;
  std::thread canceler{[&] {
    auto until = std::chrono::steady_clock::now() + std::chrono::seconds{20};
    while (run.log.out().find("started") == std::string::npos &&
           std::chrono::steady_clock::now() < until)
      std::this_thread::sleep_for(std::chrono::milliseconds{10});
    run.cancel.cancel(sdk::cancel_reason::canceled_by_user);
  }};
  auto begin = std::chrono::steady_clock::now();
  auto r = run_payload("wait", run);
  canceler.join();
  EXPECT_FALSE(r.ok);
  EXPECT_LT(std::chrono::steady_clock::now() - begin, std::chrono::seconds{15});
}

// This test ensures a `path` with a relative or empty entry is refused
// naming it: the plan's processes get it as PATH, and such an entry is the
// run's work directory, where what the run wrote would shadow real programs.
TEST(shell_plan, a_path_entry_that_is_not_absolute_is_refused) {
  for (auto [path, why] :
       {std::pair{"bin:/usr/bin", "entry 1 'bin'"},
        std::pair{"/usr/bin::/bin", "entry 2 is empty"},
        std::pair{"", "entry 1 is empty"}, std::pair{"/usr/bin:", "entry 2 is empty"}}) {
    SCOPED_TRACE(path);
    json s{{"programs", {"echo"}}, {"path", path}};
    try {
      (void)plans::make_shell_plan(s, "plans.shell");
      ADD_FAILURE() << "expected a config_error";
    } catch (const sdk::config_error& e) {
      EXPECT_EQ(e.key(), "plans.shell.path");
      EXPECT_NE(std::string{e.what()}.find(std::string{why} +
                                           ": each entry must be an absolute directory"),
                std::string::npos)
          << e.what();
    }
  }
  json fine{{"programs", {"echo"}}, {"path", "/usr/bin:/bin"}};
  EXPECT_NO_THROW((void)plans::make_shell_plan(fine, "plans.shell"));
}

// This test ensures a shortcut command that needs a shell is refused at config time.
TEST(shell_plan, shortcut_with_metacharacters_needs_shell_flag) {
  json s{{"shortcuts", {{{"short", "x"}, {"cmd", "a | b"}}}}};
  try {
    (void)plans::make_shell_plan(s, "plans.shell");
    FAIL() << "expected a config_error";
  } catch (const sdk::config_error& e) {
    EXPECT_EQ(e.key(), "plans.shell.shortcuts[0].cmd");
    EXPECT_NE(std::string{e.what()}.find("shell: true"), std::string::npos);
  }
}

// This test ensures a shortcut's relative program without `dir` is a config
// error saying why: it would be looked up in the run's new, empty work dir,
// so it could never run.
TEST(shell_plan, a_relative_program_needs_the_shortcuts_dir) {
  json s{{"shortcuts", {{{"short", "x"}, {"cmd", "./deploy.sh --prod"}}}}};
  try {
    (void)plans::make_shell_plan(s, "plans.shell");
    FAIL() << "expected a config_error";
  } catch (const sdk::config_error& e) {
    EXPECT_EQ(std::string{e.what()},
              "plans.shell.shortcuts[0].cmd: './deploy.sh' is a relative path, and "
              "without `dir` it would be looked up in the run's new, empty work dir: set "
              "dir, or write the program's absolute path");
  }
}

// This test ensures a shortcut whose command names no program (`''`) is a
// config error (it read past an empty program name).
TEST(shell_plan, a_shortcut_naming_no_program_is_refused) {
  json s{{"shortcuts", {{{"short", "x"}, {"cmd", "''"}}}}};
  try {
    (void)plans::make_shell_plan(s, "plans.shell");
    FAIL() << "expected a config_error";
  } catch (const sdk::config_error& e) {
    EXPECT_EQ(std::string{e.what()}, "plans.shell.shortcuts[0].cmd: names no program");
  }
}

// This test ensures a plan allowing nothing is a config error.
TEST(shell_plan, empty_rules_are_refused) {
  EXPECT_THROW((void)plans::make_shell_plan(json::object(), "plans.shell"),
               sdk::config_error);
}

// This test ensures the result is only the tail of a long output.
TEST(shell_plan, result_is_the_tail) {
  json s{{"programs", {"seq"}}, {"result_tail_bytes", 20}};
  auto plan = plans::make_shell_plan(s, "plans.shell");
  sdk::testkit::scratch_run run;
  run.ctx.payload = "seq 1 1000";
  auto r = plan->run(run.ctx);
  EXPECT_TRUE(r.ok) << r.error;
  EXPECT_LE(r.result.size(), 20u);
  EXPECT_EQ(r.result.substr(r.result.size() - 5), "1000\n");
  EXPECT_EQ(r.result.front(), '9'); // starts at a full line
}

// This test ensures a variable the agent sets, in the plan's `env` setting,
// is refused naming the key and why, and PATH points at the `path` setting;
// and that other names are the admin's to choose, lower case included
// (`http_proxy`, which curl reads only so, was refused like a run's name).
TEST(shell_plan, env_settings_the_agent_sets_are_refused_saying_what_to_use) {
  for (auto [name, says] :
       {std::pair{"PATH", "is set by the agent; set the plan's `path` instead"},
        std::pair{"HOME", "is set by the agent (to the run's work directory)"},
        std::pair{"POLYMESH_RUN_ID",
                  "is set by the agent (POLYMESH_* describe the run)"}}) {
    SCOPED_TRACE(name);
    json s{{"programs", {"echo"}}, {"env", {{name, "/x"}}}};
    try {
      (void)plans::make_shell_plan(s, "plans.shell");
      ADD_FAILURE() << "expected a config_error";
    } catch (const sdk::config_error& e) {
      EXPECT_EQ(e.key(), std::string{"plans.shell.env."} + name);
      EXPECT_EQ(std::string{e.what()}, std::string{"plans.shell.env."} + name +
                                           ": environment variable '" + name + "' " +
                                           says);
    }
  }
  try {
    (void)plans::make_shell_plan(json{{"programs", {"env"}}, {"env", {{"a-b", "x"}}}},
                                 "plans.shell");
    ADD_FAILURE() << "expected a config_error";
  } catch (const sdk::config_error& e) {
    EXPECT_EQ(std::string{e.what()},
              "plans.shell.env.a-b: environment variable name 'a-b' must use only "
              "letters, digits and '_' and not start with a digit");
  }
  json s{{"programs", {"env"}},
         {"env",
          {{"http_proxy", "http://proxy:3128"},
           {"TMPDIR", "/var/tmp"},
           {"LD_LIBRARY_PATH", "/opt/lib"}}}};
  sdk::testkit::scratch_run run;
  auto r = run_on(*plans::make_shell_plan(s, "plans.shell"), "env", run);
  EXPECT_TRUE(r.ok) << r.error;
  for (auto line : {"http_proxy=http://proxy:3128\n", "TMPDIR=/var/tmp\n",
                    "LD_LIBRARY_PATH=/opt/lib\n"})
    EXPECT_NE(r.result.find(line), std::string::npos) << line << r.result;
}

// This test ensures a run over `limits.cpu_seconds` ends saying so (SIGXCPU),
// not as a bare SIGKILL that reads like the OOM killer.
TEST(shell_plan, a_run_over_its_cpu_limit_says_so) {
  json s{{"programs", {"sh"}}, {"limits", {{"cpu_seconds", 1}}}};
  sdk::testkit::scratch_run run;
  auto r = run_on(*plans::make_shell_plan(s, "plans.shell"),
                  "sh -c 'while :; do :; done'", run);
  EXPECT_FALSE(r.ok);
  EXPECT_NE(r.error.find("CPU time limit exceeded"), std::string::npos) << r.error;
}

// This test ensures a run that ignores the SIGXCPU of its CPU limit, and is
// killed at the hard limit a second later, still says which limit ended it.
TEST(shell_plan, a_run_that_ignores_sigxcpu_names_its_cpu_limit) {
  json s{{"programs", {"sh"}}, {"limits", {{"cpu_seconds", 1}}}};
  sdk::testkit::scratch_run run;
  auto r = run_on(*plans::make_shell_plan(s, "plans.shell"),
                  "sh -c 'trap \"\" XCPU; while :; do :; done'", run);
  EXPECT_FALSE(r.ok);
  EXPECT_NE(r.error.find("killed by signal 9"), std::string::npos) << r.error;
  EXPECT_NE(r.error.find("at its CPU time limit of 2 s"), std::string::npos) << r.error;
}

// This test ensures the documented shortcut `{dir: /srv/app, cmd:
// "./deploy.sh --prod"}` runs the script in its dir (it was looked up in the
// agent's working directory and refused as missing).
TEST(shell_plan, a_shortcut_runs_a_script_of_its_dir) {
  sdk::testkit::temp_dir app;
  write_script(app.path() / "deploy.sh", "#!/bin/sh\necho \"deploying $1\"\n");
  json s{{"shortcuts",
          {{{"short", "deploy"},
            {"dir", app.path().string()},
            {"cmd", "./deploy.sh --prod"}}}}};
  sdk::testkit::scratch_run run;
  auto r = run_on(*plans::make_shell_plan(s, "plans.shell"), "deploy", run);
  EXPECT_TRUE(r.ok) << r.error;
  EXPECT_EQ(r.result, "deploying --prod\n");
}

// This test ensures rules that cannot work on this host as it is (a program
// not installed, a shortcut's directory or script not there) are warnings
// naming the key, while the plan still builds and its other rules run: the
// host may gain them later, and `mesh-agent --check` used to pass them in
// silence.
TEST(shell_plan, what_is_missing_here_is_a_warning_naming_the_key) {
  sdk::testkit::temp_dir app;
  write_script(app.path() / "deploy.sh", "#!/bin/sh\ntrue\n");
  auto dir = app.path().string();
  json s{{"programs", {"echo", "no-such-program-xyz", "/nonexistent/bin/tool"}},
         {"shortcuts",
          {{{"short", "gone"}, {"dir", "/nonexistent/app"}, {"cmd", "pwd"}},
           {{"short", "typo"}, {"dir", dir}, {"cmd", "./deplyo.sh"}},
           {{"short", "deploy"}, {"dir", dir}, {"cmd", "./deploy.sh --prod"}},
           {{"short", "nope"}, {"cmd", "no-such-tool-xyz --now"}},
           {{"short", "piped"}, {"cmd", "no-such-tool-xyz | wc -l"}, {"shell", true}}}},
         {"path", "/usr/bin:/bin"}};
  sdk::config_warnings collected;
  auto plan = plans::make_shell_plan(s, "plans.shell");
  const std::string until = "; runs that need it fail until it is there";
  EXPECT_EQ(
      collected.lines(),
      (std::vector<std::string>{
          "plans.shell.programs[1]: 'no-such-program-xyz' is not an executable in "
          "the plan's path (/usr/bin:/bin)" +
              until,
          "plans.shell.programs[2]: '/nonexistent/bin/tool' is not an executable "
          "file" +
              until,
          "plans.shell.shortcuts[0].dir: '/nonexistent/app' is not a directory" + until,
          "plans.shell.shortcuts[1].cmd: './deplyo.sh' is not an executable file "
          "in " +
              dir + until,
          "plans.shell.shortcuts[3].cmd: 'no-such-tool-xyz' is not an executable "
          "in the plan's path (/usr/bin:/bin)" +
              until}));
  sdk::testkit::scratch_run run;
  auto r = run_on(*plan, "echo still here", run);
  EXPECT_TRUE(r.ok) << r.error;
  EXPECT_EQ(r.result, "still here\n");
}

// This test ensures a warning outside a collector is dropped (a factory
// called on its own), and nested collectors each keep their own.
TEST(shell_plan, warnings_reach_the_innermost_collector_only) {
  json s{{"programs", {"no-such-program-xyz"}}};
  (void)plans::make_shell_plan(s, "plans.shell"); // nobody collects: no effect
  sdk::config_warnings outer;
  {
    sdk::config_warnings inner;
    (void)plans::make_shell_plan(s, "plans.inner");
    ASSERT_EQ(inner.lines().size(), 1u);
    EXPECT_EQ(inner.lines()[0].rfind("plans.inner.programs[0]: ", 0), 0u);
  }
  EXPECT_TRUE(outer.lines().empty());
  (void)plans::make_shell_plan(s, "plans.outer");
  ASSERT_EQ(outer.lines().size(), 1u);
  EXPECT_EQ(outer.lines()[0].rfind("plans.outer.programs[0]: ", 0), 0u);
}
