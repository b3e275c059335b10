#include "eventually.hpp"
#include "isolated_run.hpp"
#include "polymesh/sdk/agent_yaml.hpp"
#include "polymesh/sdk/plugin.hpp"
#include "polymesh/sdk/plugin_loader.hpp"
#include "polymesh/sdk/testkit.hpp"

#include <condition_variable>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <dlfcn.h>
#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <gtest/gtest.h>
#include <mutex>
#include <poll.h>
#include <spawn.h>
#include <sstream>
#include <sys/resource.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

using namespace polymesh::sdk;

// This test ensures the example plugin loads and its plan runs through the C ABI.
TEST(plugin_loader, example_plugin_runs) {
  plan_catalog catalog;
  std::vector<std::string> added;
  ASSERT_EQ(load_plugin(POLYMESH_HELLO_PLUGIN, catalog, &added), "");
  EXPECT_EQ(added, std::vector<std::string>{"hello"});
  EXPECT_EQ(catalog.find("hello")->origin, POLYMESH_HELLO_PLUGIN);
  auto plans = make_plans(catalog, {{"hello", nlohmann::json{{"greeting", "Hi"}}}});
  testkit::scratch_run run;
  run.ctx.payload = "mesh";
  auto r = plans.at("hello")->run(run.ctx);
  EXPECT_TRUE(r.ok);
  EXPECT_EQ(r.result, "Hi, mesh!");
  EXPECT_EQ(run.log.out(), "Hi, mesh!\n");
}

// This test ensures the plugin's cancel path works across the ABI.
TEST(plugin_loader, example_plugin_sees_cancel) {
  plan_catalog catalog;
  ASSERT_EQ(load_plugin(POLYMESH_HELLO_PLUGIN, catalog), "");
  auto plans = make_plans(catalog, {{"hello", nullptr}});
  testkit::scratch_run run;
  run.ctx.params = {{"wait_seconds", 600}};
  run.cancel.cancel(cancel_reason::canceled_by_user);
  auto r = plans.at("hello")->run(run.ctx);
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.error, "canceled while waiting");
}

// This test ensures plugin settings errors come back through the ABI naming
// the dotted key once (not "plans.hello: plans.hello.greting: …").
TEST(plugin_loader, plugin_settings_are_strict) {
  plan_catalog catalog;
  ASSERT_EQ(load_plugin(POLYMESH_HELLO_PLUGIN, catalog), "");
  try {
    (void)make_plans(catalog, {{"hello", nlohmann::json{{"greting", "x"}}}});
    FAIL();
  } catch (const config_error& e) {
    EXPECT_STREQ(e.what(), "plans.hello.greting: unknown key");
    EXPECT_EQ(e.key(), "plans.hello.greting");
  }
}

// This test ensures an ABI mismatch is refused with both versions and the file named.
TEST(plugin_loader, abi_mismatch_is_refused) {
  plan_catalog catalog;
  auto err = load_plugin(POLYMESH_ABI_MISMATCH_PLUGIN, catalog);
  EXPECT_NE(err.find(POLYMESH_ABI_MISMATCH_PLUGIN), std::string::npos) << err;
  EXPECT_NE(err.find("plugin ABI version 999, this agent speaks version 1"),
            std::string::npos)
      << err;
  EXPECT_TRUE(catalog.names().empty());
}

// This test ensures a library without the entry point is refused, naming the file.
TEST(plugin_loader, missing_entry_point_is_refused) {
  plan_catalog catalog;
  auto err = load_plugin(POLYMESH_NO_ENTRY_PLUGIN, catalog);
  EXPECT_NE(err.find(POLYMESH_NO_ENTRY_PLUGIN), std::string::npos) << err;
  EXPECT_NE(err.find("no 'polymesh_plugin_init' entry point"), std::string::npos) << err;
}

// This test ensures a missing file is refused, naming it.
TEST(plugin_loader, missing_file_is_refused) {
  plan_catalog catalog;
  auto err = load_plugin("/nonexistent/plugin.so", catalog);
  EXPECT_NE(err.find("cannot load plugin /nonexistent/plugin.so"), std::string::npos)
      << err;
}

// This test ensures a plugin cannot take the name of a plan that exists already.
TEST(plugin_loader, name_clash_is_refused) {
  plan_catalog catalog;
  ASSERT_EQ(catalog.add(
                "hello", "",
                [](const nlohmann::json&, const std::string&) {
                  return std::shared_ptr<plan>{};
                },
                "built-in"),
            "");
  auto err = load_plugin(POLYMESH_HELLO_PLUGIN, catalog);
  EXPECT_NE(err.find("already provided by built-in"), std::string::npos) << err;
}

// This test ensures two C++ plugins load together, each with its own plans:
// their registrars were one object (a static of an inline function, which
// GCC makes unique across libraries), so the second plugin offered the
// first one's plans again and was refused for the clash.
TEST(plugin_loader, two_cpp_plugins_load_together) {
  plan_catalog catalog;
  std::vector<std::string> added;
  ASSERT_EQ(load_plugin(POLYMESH_HELLO_PLUGIN, catalog), "");
  ASSERT_EQ(load_plugin(POLYMESH_GOODBYE_PLUGIN, catalog, &added), "");
  EXPECT_EQ(added, std::vector<std::string>{"goodbye"});
  auto plans = make_plans(catalog, {{"hello", nullptr}, {"goodbye", nullptr}});
  testkit::scratch_run run;
  run.ctx.payload = "mesh";
  EXPECT_EQ(plans.at("hello")->run(run.ctx).result, "Hello, mesh!");
  EXPECT_EQ(plans.at("goodbye")->run(run.ctx).result, "Goodbye, mesh!");
}

// This test ensures the warnings a plugin's factory raises with
// `config_warning` (in the plugin's own copy of the plan API) reach the
// agent's collector, as a built-in plan's do, and the plan still builds.
TEST(plugin_loader, a_plugins_config_warnings_reach_the_agent) {
  plan_catalog catalog;
  ASSERT_EQ(load_plugin(POLYMESH_GOODBYE_PLUGIN, catalog), "");
  std::vector<std::string> warnings;
  auto plans = make_plans(
      catalog, {{"goodbye", nlohmann::json{{"program", "/nonexistent/farewell"}}}},
      &warnings);
  EXPECT_EQ(warnings,
            std::vector<std::string>{"plans.goodbye.program: '/nonexistent/farewell' "
                                     "is not an executable file here"});
  testkit::scratch_run run;
  run.ctx.payload = "mesh";
  EXPECT_EQ(plans.at("goodbye")->run(run.ctx).result, "Goodbye, mesh!");
  auto quiet = make_plans(catalog, {{"goodbye", nlohmann::json{{"program", "/bin/sh"}}}},
                          &warnings);
  EXPECT_EQ(quiet.size(), 1u);
  EXPECT_TRUE(warnings.empty()) << warnings.front();
}

// This test ensures a plugin's warnings beyond 1 KiB reach the agent: the
// agent gave `create` 1 KiB for them, and 21 warnings came as 11 and a line
// counting the rest, which `--check` counted as one more warning.
TEST(plugin_loader, a_plugins_warnings_beyond_one_kib_reach_the_agent) {
  plan_catalog catalog;
  ASSERT_EQ(load_plugin(POLYMESH_GOODBYE_PLUGIN, catalog), "");
  std::vector<std::string> warnings;
  auto plans =
      make_plans(catalog, {{"goodbye", nlohmann::json{{"warnings", 40}}}}, &warnings);
  ASSERT_EQ(warnings.size(), 40u);
  EXPECT_EQ(warnings.back(),
            "plans.goodbye.warnings: warning 40 of 40, as many as were asked for");
}

// This test ensures a plugin's warnings fit the ABI's buffer without
// losing what fits: a line break in one becomes a space, one too long is cut,
// and those that do not fit at all are counted.
TEST(plugin_loader, a_plugins_warnings_are_cut_to_the_buffer_and_counted) {
  using namespace std::string_literals;
  using plugin_detail::warning_lines;
  EXPECT_EQ(warning_lines({"plans.x.a: one\ntwo", "plans.x.b: three"}, 1024),
            "plans.x.a: one two\nplans.x.b: three");
  auto cut =
      warning_lines({"plans.x.a: " + std::string(2000, 'y'), "plans.x.b: short"}, 1024);
  EXPECT_LT(cut.size(), 1024u);
  EXPECT_EQ(cut.rfind("plans.x.a: yyy", 0), 0u) << cut;
  // The last one fits in the room kept for a count.
  EXPECT_NE(cut.find("...\nplans.x.b: short"), std::string::npos) << cut;
  auto cut_then_counted =
      warning_lines({"plans.x.a: " + std::string(2000, 'y'),
                     "plans.x.b: " + std::string(60, 'v'), "plans.x.c: short"},
                    1024);
  EXPECT_NE(cut_then_counted.find("...\n(2 more warnings did not fit)"),
            std::string::npos)
      << cut_then_counted;
  std::vector<std::string> many;
  for (int i = 0; i < 30; ++i)
    many.push_back("plans.x.k" + std::to_string(i) + ": " + std::string(90, 'z'));
  auto counted = warning_lines(many, 1024);
  EXPECT_LT(counted.size(), 1024u);
  auto lines = std::count(counted.begin(), counted.end(), '\n') + 1;
  EXPECT_NE(counted.find("(" + std::to_string(30 - (lines - 1)) +
                         " more warnings did not fit)"),
            std::string::npos)
      << counted;
  EXPECT_EQ(warning_lines({}, 1024), "");
  // A last warning that fits is whole, though no count could follow it.
  auto last = warning_lines({std::string(900, 'a'), std::string(80, 'b')}, 1024);
  EXPECT_EQ(last, std::string(900, 'a') + "\n" + std::string(80, 'b'));
  EXPECT_EQ(warning_lines({"plans.x.a: one\0two"s}, 1024), "plans.x.a: one two");
}

// This test ensures a plugin whose registration throws is refused, and the
// exception's text is in the agent's log (stderr), not swallowed: one line
// naming the plugin's file, with its newline and escape sequence escaped.
TEST(plugin_loader, a_throwing_registration_is_refused_with_its_message) {
  plan_catalog catalog;
  testing::internal::CaptureStderr();
  auto err = load_plugin(POLYMESH_THROWING_PLUGIN, catalog);
  auto log = testing::internal::GetCapturedStderr();
  EXPECT_NE(err.find("registered no plans"), std::string::npos) << err;
  EXPECT_NE(log.find("plugin " + std::string{POLYMESH_THROWING_PLUGIN} +
                     ": registering its plans failed: cannot find my license "
                     "file\\n\\x1b[31mlook in \\\\etc\n"),
            std::string::npos)
      << log;
  EXPECT_EQ(std::count(log.begin(), log.end(), '\n'), 1) << log;
  EXPECT_TRUE(catalog.names().empty());
}

namespace {

/// The `misbehave` plan of the crashing test plugin, isolated as given.
plan_set misbehaving(plugin_isolation isolation,
                     std::vector<resource_limit> limits = {}) {
  plan_catalog catalog;
  EXPECT_EQ(load_plugin(POLYMESH_CRASHING_PLUGIN, catalog, nullptr, isolation, limits),
            "");
  return make_plans(catalog, {{"misbehave", nullptr}});
}

plan_result misbehave(plan_set& plans, testkit::scratch_run& run,
                      const std::string& what) {
  run.ctx.params = {{"do", what}};
  return plans.at("misbehave")->run(run.ctx);
}

/// Runs `what`, canceling the run for `reason` once it logged "waiting".
plan_result canceled_once_waiting(plan_set& plans, testkit::scratch_run& run,
                                  const std::string& what, cancel_reason reason) {
  std::thread canceler{[&] {
    test_support::eventually([&] { return run.log.out() == "waiting\n"; });
    run.cancel.cancel(reason);
  }};
  auto r = misbehave(plans, run, what);
  canceler.join();
  return r;
}

} // namespace

// This test ensures an isolated plugin plan that crashes, aborts or calls
// `exit` (also with 0) ends its run as an error saying so, keeps the output it logged
// first, and leaves the agent (this test process) running for the next run.
TEST(plugin_isolation, a_crash_ends_the_run_not_the_agent) {
  auto plans = misbehaving(plugin_isolation::process);
  const std::pair<std::string, std::string> cases[] = {
      {"segv", "plugin plan 'test' crashed: killed by signal 11 (" +
                   std::string{::strsignal(SIGSEGV)} + ")"},
      {"abort", "plugin plan 'test' crashed: killed by signal 6 (" +
                    std::string{::strsignal(SIGABRT)} + ")"},
      {"exit",
       "plugin plan 'test' ended its process (exited with code 3) before returning"},
      // Not "returned no result": the host sends one whenever the plan returns.
      {"exit0",
       "plugin plan 'test' ended its process (exited with code 0) before returning"},
  };
  for (auto& [what, error] : cases) {
    testkit::scratch_run run;
    auto r = misbehave(plans, run, what);
    EXPECT_FALSE(r.ok) << what;
    EXPECT_EQ(r.error, error) << what;
    EXPECT_EQ(run.log.out(), "before the end\n") << what;
  }
  testkit::scratch_run after;
  auto r = misbehave(plans, after, "");
  EXPECT_TRUE(r.ok) << r.error;
  EXPECT_EQ(r.result, "1");
}

// This test ensures a plugin entry's limits bound each run's host process
// (here its address space), not the agent: plugin plans had no limits at
// all, and one that leaked grew without bound.
TEST(plugin_isolation, the_entrys_limits_bound_each_runs_host) {
  constexpr uint64_t gib = uint64_t{1} << 30;
  auto limited = misbehaving(plugin_isolation::process, {{RLIMIT_AS, gib, gib}});
  testkit::scratch_run run;
  auto r = misbehave(limited, run, "address_space");
  EXPECT_TRUE(r.ok) << r.error;
  EXPECT_EQ(r.result, std::to_string(gib));
  // Not the agent's: a host without limits has this process's own.
  rlimit own{};
  ASSERT_EQ(::getrlimit(RLIMIT_AS, &own), 0);
  ASSERT_NE(own.rlim_cur, gib) << "this test needs another limit than its own";
  auto free = misbehaving(plugin_isolation::process);
  testkit::scratch_run unlimited;
  EXPECT_EQ(misbehave(free, unlimited, "address_space").result,
            own.rlim_cur == RLIM_INFINITY ? "unlimited" : std::to_string(own.rlim_cur));
}

// This test ensures a line printed with printf just before a crash is in
// the log (stdout into a pipe would otherwise be fully buffered, and lost).
TEST(plugin_isolation, a_line_printed_before_a_crash_is_kept) {
  auto plans = misbehaving(plugin_isolation::process);
  testkit::scratch_run run;
  auto r = misbehave(plans, run, "print_then_segv");
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(run.log.out(), "printed before the crash\n");
}

// This test ensures the child ignores SIGPIPE as the agent does: a plan that
// writes to a pipe with no reader gets EPIPE instead of being killed.
TEST(plugin_isolation, a_broken_pipe_is_an_error_for_the_plan_not_its_death) {
  auto plans = misbehaving(plugin_isolation::process);
  testkit::scratch_run run;
  auto r = misbehave(plans, run, "epipe");
  EXPECT_TRUE(r.ok) << r.error;
  EXPECT_EQ(r.result, "EPIPE");
}

// This test ensures an isolated plan that ignores its cancel is killed once
// its programs' grace and as long again have passed, also one that closed
// its end of the cancel: sending to it does not kill the agent (this test
// process keeps SIGPIPE's default).
TEST(plugin_isolation, a_child_that_ignores_its_cancel_is_killed) {
  auto old_sigpipe = ::signal(SIGPIPE, SIG_DFL); // whatever earlier tests left
  auto plans = misbehaving(plugin_isolation::process);
  for (auto what : {"ignore_cancel", "close_fds"}) {
    SCOPED_TRACE(what);
    testkit::scratch_run run;
    run.ctx.kill_grace = std::chrono::milliseconds{10};
    auto r = canceled_once_waiting(plans, run, what, cancel_reason::canceled_by_user);
    EXPECT_FALSE(r.ok);
    EXPECT_EQ(r.error, "plugin plan 'test' did not return within 1020 ms of being told "
                       "to stop; killed");
  }
  ::signal(SIGPIPE, old_sigpipe);
}

// This test ensures a program that reaps every child itself (here: SIGCHLD
// ignored, so the kernel does) gets a failure naming that, not a run that
// never ends.
TEST(plugin_isolation, a_lost_exit_status_ends_the_run) {
  auto plans = misbehaving(plugin_isolation::process);
  testkit::scratch_run run;
  auto old = ::signal(SIGCHLD, SIG_IGN);
  auto r = misbehave(plans, run, "");
  ::signal(SIGCHLD, old);
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.error, "plugin plan 'test' ended, but something else in this program "
                     "collected its exit status (is SIGCHLD ignored?)");
}

// This test ensures what an isolated plan prints to its own stdout and
// stderr lands in the run's log, on the matching stream.
TEST(plugin_isolation, the_childs_own_output_goes_to_the_run_log) {
  auto plans = misbehaving(plugin_isolation::process);
  testkit::scratch_run run;
  auto r = misbehave(plans, run, "print");
  EXPECT_TRUE(r.ok) << r.error;
  EXPECT_EQ(r.result, "printed");
  EXPECT_EQ(run.log.out(), "printed to stdout\n");
  EXPECT_EQ(run.log.err(), "printed to stderr\n");
}

// This test ensures progress and a large log cross the pipe whole and in order.
TEST(plugin_isolation, progress_and_a_large_log_come_through) {
  auto plans = misbehaving(plugin_isolation::process);
  testkit::scratch_run run;
  auto r = misbehave(plans, run, "progress");
  EXPECT_TRUE(r.ok) << r.error;
  EXPECT_EQ(run.last_progress, "half way");

  testkit::scratch_run big;
  big.ctx.params = {{"do", "big"}, {"bytes", 3'000'500}};
  r = plans.at("misbehave")->run(big.ctx);
  EXPECT_TRUE(r.ok) << r.error;
  auto out = big.log.out();
  ASSERT_EQ(out.size(), 3'000'500u);
  for (size_t i = 0; i < out.size(); ++i)
    if (out[i] != static_cast<char>('a' + (i % 1000) % 26)) {
      FAIL() << "byte " << i << " differs";
      break;
    }
}

// This test ensures a cancel reaches the isolated plan while it runs, with
// its reason.
TEST(plugin_isolation, a_cancel_reaches_the_child) {
  auto plans = misbehaving(plugin_isolation::process);
  testkit::scratch_run run;
  auto r = canceled_once_waiting(plans, run, "wait", cancel_reason::timeout);
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.error, "stopped: timeout");
}

// This test ensures the isolation is what the caller asked for: in the
// agent's process a plan keeps its state from run to run, in a child each
// run starts from the state the plan had when it was created.
TEST(plugin_isolation, state_is_kept_only_in_process) {
  auto shared = misbehaving(plugin_isolation::none);
  auto isolated = misbehaving(plugin_isolation::process);
  for (int i = 1; i <= 3; ++i) {
    testkit::scratch_run a;
    EXPECT_EQ(misbehave(shared, a, "").result, std::to_string(i));
    testkit::scratch_run b;
    EXPECT_EQ(misbehave(isolated, b, "").result, "1");
  }
}

// This test ensures an isolated child does not keep the agent's other pipes
// open: another run's program, started while the child runs, has its
// exec-status pipe read until the writer's end closes, and would wait for
// the child otherwise.
TEST(plugin_isolation, the_child_holds_no_other_pipe) {
  auto plans = misbehaving(plugin_isolation::process);
  // Not close-on-exec, as a descriptor the agent was started with, and
  // above the descriptors the host is given (0 to 4).
  int made[2];
  ASSERT_EQ(::pipe2(made, 0), 0);
  int other[2] = {::fcntl(made[0], F_DUPFD, 100), ::fcntl(made[1], F_DUPFD, 100)};
  ::close(made[0]);
  ::close(made[1]);
  ASSERT_GE(other[0], 100);
  ASSERT_GE(other[1], 100);
  testkit::scratch_run waiting;
  std::thread waiter{[&] { (void)misbehave(plans, waiting, "wait"); }};
  if (!test_support::eventually([&] { return waiting.log.out() == "waiting\n"; })) {
    waiting.cancel.cancel(cancel_reason::canceled_by_user);
    waiter.join();
    FAIL() << "the plan did not start: " << waiting.log.out();
  }
  ::close(other[1]);
  pollfd p{other[0], POLLIN, 0};
  int ready = ::poll(&p, 1, 20000);
  char c = 0;
  EXPECT_EQ(ready, 1) << "the child still holds the write end";
  if (ready == 1) {
    EXPECT_EQ(::read(other[0], &c, 1), 0);
  }
  ::close(other[0]);
  waiting.cancel.cancel(cancel_reason::canceled_by_user);
  waiter.join();
}

namespace {

/// A directory of its own under the temp dir, removed with its files.
struct temp_dir {
  std::filesystem::path path;
  temp_dir() {
    std::string tmpl =
        (std::filesystem::temp_directory_path() / "plugin-host-XXXXXX").string();
    path = ::mkdtemp(tmpl.data());
  }
  ~temp_dir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
};

/// Sets `POLYMESH_PLUGIN_HOST` for its lifetime; puts back what was there.
struct plugin_host_env {
  explicit plugin_host_env(const std::string& value) {
    if (const char* was = std::getenv("POLYMESH_PLUGIN_HOST")) before = was;
    ::setenv("POLYMESH_PLUGIN_HOST", value.c_str(), 1);
  }
  ~plugin_host_env() {
    if (before)
      ::setenv("POLYMESH_PLUGIN_HOST", before->c_str(), 1);
    else
      ::unsetenv("POLYMESH_PLUGIN_HOST");
  }
  std::optional<std::string> before;
};

std::string built_plugin_host() {
  std::string error;
  auto host = find_plugin_host(&error);
  EXPECT_TRUE(host) << error;
  return host.value_or("");
}

} // namespace

// This test ensures an isolated run is a fresh process, not a copy of the
// agent: a lock another agent thread holds in a library the plan shares
// (here the plugin itself) is free in the run. In the agent's process
// (`none`) the same plan finds it held, which shows the lock really is.
TEST(plugin_isolation, a_lock_held_in_the_agent_is_free_in_the_run) {
  auto isolated = misbehaving(plugin_isolation::process);
  auto shared = misbehaving(plugin_isolation::none);
  void* lib = ::dlopen(POLYMESH_CRASHING_PLUGIN, RTLD_NOW | RTLD_NOLOAD);
  ASSERT_NE(lib, nullptr);
  auto* hold = reinterpret_cast<void (*)(int)>(::dlsym(lib, "crashing_plugin_hold_lock"));
  ASSERT_NE(hold, nullptr);
  std::mutex mtx;
  std::condition_variable cv;
  bool held = false;
  bool done = false;
  std::thread holder{[&] {
    hold(1);
    std::unique_lock<std::mutex> lock{mtx};
    held = true;
    cv.notify_all();
    cv.wait(lock, [&] { return done; });
    hold(0);
  }};
  {
    std::unique_lock<std::mutex> lock{mtx};
    cv.wait(lock, [&] { return held; });
  }
  testkit::scratch_run in_child;
  auto r = misbehave(isolated, in_child, "lock");
  EXPECT_TRUE(r.ok) << r.error;
  EXPECT_EQ(r.result, "locked");
  testkit::scratch_run in_agent;
  r = misbehave(shared, in_agent, "lock");
  EXPECT_EQ(r.error, "the lock is held");
  {
    std::lock_guard<std::mutex> lock{mtx};
    done = true;
  }
  cv.notify_all();
  holder.join();
  ::dlclose(lib);
}

// This test ensures a plugin with isolation `process` is refused at load,
// naming the setting, when POLYMESH_PLUGIN_HOST names no program.
TEST(plugin_isolation, a_missing_host_program_is_refused_at_load) {
  temp_dir dir;
  plugin_host_env env{(dir.path / "nothing-here").string()};
  plan_catalog catalog;
  EXPECT_EQ(load_plugin(POLYMESH_CRASHING_PLUGIN, catalog),
            std::string{"plugin "} + POLYMESH_CRASHING_PLUGIN +
                ": POLYMESH_PLUGIN_HOST=" + (dir.path / "nothing-here").string() +
                " is not an executable file");
  EXPECT_TRUE(catalog.names().empty());
  {
    // A relative one is named as given and as the path looked at.
    plugin_host_env relative{"no-such-dir/host"};
    auto looked_at = std::filesystem::absolute("no-such-dir/host").string();
    EXPECT_EQ(load_plugin(POLYMESH_CRASHING_PLUGIN, catalog),
              std::string{"plugin "} + POLYMESH_CRASHING_PLUGIN +
                  ": POLYMESH_PLUGIN_HOST=no-such-dir/host (" + looked_at +
                  ") is not an executable file");
  }
  EXPECT_EQ(
      load_plugin(POLYMESH_CRASHING_PLUGIN, catalog, nullptr, plugin_isolation::none),
      "");
}

// This test ensures a host program or a plugin that is gone by the time of
// a run fails that run with a message naming the file, and the next run
// with them back in place succeeds.
TEST(plugin_isolation, a_host_or_plugin_gone_since_start_up_fails_the_run_saying_so) {
  temp_dir dir;
  auto host = dir.path / "mesh-plugin-host";
  auto plugin = dir.path / "crashing.so";
  std::filesystem::copy_file(built_plugin_host(), host);
  std::filesystem::copy_file(POLYMESH_CRASHING_PLUGIN, plugin);
  plugin_host_env env{host.string()};
  plan_catalog catalog;
  ASSERT_EQ(load_plugin(plugin.string(), catalog), "");
  auto plans = make_plans(catalog, {{"misbehave", nullptr}});

  std::filesystem::rename(host, dir.path / "moved");
  testkit::scratch_run no_host;
  auto r = misbehave(plans, no_host, "");
  EXPECT_EQ(r.error, "plugin plan 'test' could not start: cannot run " + host.string() +
                         ": " + std::strerror(ENOENT));

  std::filesystem::rename(dir.path / "moved", host);
  std::filesystem::rename(plugin, dir.path / "gone.so");
  testkit::scratch_run no_plugin;
  r = misbehave(plans, no_plugin, "");
  EXPECT_EQ(
      r.error.rfind("plugin plan 'test' could not start in its host process: cannot "
                    "load plugin " +
                        plugin.string() + ": ",
                    0),
      0u)
      << r.error;

  std::filesystem::rename(dir.path / "gone.so", plugin);
  testkit::scratch_run back;
  r = misbehave(plans, back, "");
  EXPECT_TRUE(r.ok) << r.error;
}

// This test ensures the host program, started by hand, says what it is and
// exits instead of waiting for a spec.
TEST(plugin_isolation, the_host_program_started_by_hand_says_what_it_is) {
  auto host = built_plugin_host();
  auto cmd = host + " </dev/null 2>&1";
  FILE* p = ::popen(cmd.c_str(), "r");
  ASSERT_NE(p, nullptr);
  std::string out;
  char buf[256];
  while (auto n = std::fread(buf, 1, sizeof buf, p))
    out.append(buf, n);
  int status = ::pclose(p);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 2) << status;
  EXPECT_EQ(out, "mesh-plugin-host runs one isolated plugin plan for mesh-agent "
                 "(docs/plugins.md); it is not meant to be started by hand\n");
}

// This test ensures a program the isolated plan starts itself (`system`)
// holds neither the host's pipe to the agent nor its cancel socket: it
// could write into the one and read the cancel meant for the plan.
TEST(plugin_isolation, programs_the_plan_starts_do_not_hold_the_hosts_pipes) {
  auto plans = misbehaving(plugin_isolation::process);
  testkit::scratch_run run;
  auto r = misbehave(plans, run, "child_fds");
  EXPECT_TRUE(r.ok) << r.error;
  EXPECT_EQ(run.log.out(), "checked\n");
}

// This test ensures the plan's deadline is the run's, not pushed later by
// the time the host took to start and create the plan.
TEST(plugin_isolation, the_plans_deadline_is_the_runs) {
  auto plans = misbehaving(plugin_isolation::process);
  auto deadline = cancel_token::clock_type::now() + std::chrono::seconds{30};
  testkit::scratch_run run{deadline};
  auto r = misbehave(plans, run, "deadline");
  ASSERT_TRUE(r.ok) << r.error;
  auto seen = std::chrono::nanoseconds{std::stoll(r.result)};
  auto want = deadline.time_since_epoch();
  // The plan's wrapper adds the whole milliseconds left to its own clock:
  // within a millisecond of the run's deadline, never the host's start-up
  // (several ms) later.
  EXPECT_LE(seen, want + std::chrono::milliseconds{2});
  EXPECT_GE(seen, want - std::chrono::seconds{1});

  testkit::scratch_run without;
  EXPECT_EQ(misbehave(plans, without, "deadline").result, "none");
}

// This test ensures the host process of an isolated plan is not dumpable,
// as the agent is not: another run of the same user could read its
// environment (the agent's) and write into its pipe to the agent through
// /proc. A plan inside the agent's process sees the agent's setting.
TEST(plugin_isolation, the_host_process_is_not_dumpable) {
  auto plans = misbehaving(plugin_isolation::process);
  testkit::scratch_run run;
  auto r = misbehave(plans, run, "dumpable");
  ASSERT_TRUE(r.ok) << r.error;
  EXPECT_EQ(r.result, "0");
}

// This test ensures processes an isolated plan left running, in its group
// or in a session of their own (`setsid`), are ended and reaped with its
// run, when the run is on a worker thread as in the agent.
TEST(plugin_isolation, what_the_plan_leaves_behind_ends_with_its_run) {
  auto plans = misbehaving(plugin_isolation::process);
  testkit::scratch_run run;
  plan_result r;
  std::thread worker{[&] { r = misbehave(plans, run, "leave_behind"); }};
  worker.join();
  ASSERT_TRUE(r.ok) << r.error;
  pid_t in_group = 0;
  pid_t escaped = 0;
  std::istringstream{r.result} >> in_group >> escaped;
  ASSERT_GT(in_group, 0) << r.result;
  ASSERT_GT(escaped, 0) << r.result;
  for (pid_t pid : {in_group, escaped}) {
    EXPECT_EQ(::kill(pid, 0), -1) << "process " << pid << " is left";
    if (::kill(pid, 0) == 0) ::kill(pid, SIGKILL);
  }
}

// This test ensures a host that cannot even load its libraries (a plugin
// entry's `limits` too tight) fails the run saying it could not start, and
// points at its own message in the run's log: it read "ended its process
// (exited with code 127) before returning", as a plan's own `exit(127)`.
TEST(plugin_isolation, a_host_that_cannot_load_says_so) {
  constexpr uint64_t tight = 1000000;
  auto limited = misbehaving(plugin_isolation::process, {{RLIMIT_AS, tight, tight}});
  testkit::scratch_run run;
  auto r = misbehave(limited, run, "");
  EXPECT_FALSE(r.ok);
  ASSERT_NE(r.error.find("could not start: "), std::string::npos) << r.error;
  // A host too large to be mapped at all (another build type) fails its
  // `execve` instead, which says so (ENOMEM).
  if (r.error.find("could not start: cannot run ") != std::string::npos) return;
  EXPECT_NE(
      r.error.find("mesh-plugin-host ended (exited with code 127) before it ran; its "
                   "own message is in the run's log (the plugin's `limits` may be "
                   "too tight for it to load)"),
      std::string::npos)
      << r.error;
  EXPECT_NE(run.log.err().find("error while loading shared libraries"), std::string::npos)
      << run.log.all();
}

// This test ensures a host of another build refuses the run's spec with the
// documented words before it sends anything else (an agent of that build
// would not know its other frames), and that a host that ends without a
// word is said to have ended before it ran, without pointing at a message
// it did not write.
TEST(plugin_isolation, a_host_of_another_build_refuses_the_run_in_words_the_agent_knows) {
  temp_dir dir;
  auto real = built_plugin_host();
  auto foreign = dir.path / "foreign-spec-host";
  // The spec arrives on stdin: one of another layout is what an agent of
  // another build would send.
  std::ofstream{foreign} << "#!/bin/sh\n{ printf 'polymesh-run-spec-0\\n'; cat; } | exec "
                         << real << " \"$@\"\n";
  auto silent = dir.path / "silent-host";
  std::ofstream{silent} << "#!/bin/sh\nexit 3\n";
  for (auto& f : {foreign, silent})
    std::filesystem::permissions(f, std::filesystem::perms::owner_all);
  {
    // Its first frame is the refusal (a result), which every agent reads.
    auto spec = dir.path / "spec";
    std::ofstream{spec} << "polymesh-run-spec-0\nwhatever follows";
    int frames[2]; // close-on-exec: the write end reaches the host as fd 3 alone
    ASSERT_EQ(::pipe2(frames, O_CLOEXEC), 0);
    ASSERT_NE(frames[1], 3);
    posix_spawn_file_actions_t acts;
    posix_spawn_file_actions_init(&acts);
    posix_spawn_file_actions_addopen(&acts, 0, spec.c_str(), O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&acts, frames[1], 3);
    posix_spawn_file_actions_addopen(&acts, 4, "/dev/null", O_RDONLY, 0);
    std::string arg0 = real, arg1 = "--isolated-run", arg2 = "test";
    char* argv[] = {arg0.data(), arg1.data(), arg2.data(), nullptr};
    pid_t pid = 0;
    ASSERT_EQ(::posix_spawn(&pid, real.c_str(), &acts, nullptr, argv, environ), 0);
    posix_spawn_file_actions_destroy(&acts);
    ::close(frames[1]);
    std::string got;
    char buf[4096];
    for (ssize_t n; (n = ::read(frames[0], buf, sizeof buf)) > 0;)
      got.append(buf, static_cast<size_t>(n));
    ::close(frames[0]);
    int status = 0;
    ::waitpid(pid, &status, 0);
    ASSERT_FALSE(got.empty());
    EXPECT_EQ(got.front(), 'r') << "the first frame is not the refusal";
  }
  {
    plugin_host_env env{foreign.string()};
    auto plans = misbehaving(plugin_isolation::process);
    testkit::scratch_run run;
    auto r = misbehave(plans, run, "");
    EXPECT_NE(r.error.find("could not start in its host process: the run's spec is not "
                           "one "),
              std::string::npos)
        << r.error;
    EXPECT_NE(r.error.find("(restart the agent after an upgrade)"), std::string::npos)
        << r.error;
  }
  plugin_host_env env{silent.string()};
  auto plans = misbehaving(plugin_isolation::process);
  testkit::scratch_run run;
  EXPECT_EQ(misbehave(plans, run, "").error,
            "plugin plan 'test' could not start: " + silent.string() +
                " ended (exited with code 3) before it ran");
}
