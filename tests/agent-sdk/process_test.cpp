#include "polymesh/sdk/cancel_source.hpp"
#include "polymesh/sdk/process.hpp"
#include "polymesh/sdk/testkit.hpp"
#include "process_tracking.hpp"

#include <algorithm>
#include <csignal>
#include <cstring>
#include <ctime>
#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <future>
#include <gtest/gtest.h>
#include <sstream>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <thread>

using namespace polymesh::sdk;
using namespace std::chrono_literals;

namespace {

/// True once `pid` no longer exists (or is a zombie awaiting its reaper),
/// polling up to a bounded deadline.
bool gone(pid_t pid) {
  auto until = std::chrono::steady_clock::now() + 10s;
  while (std::chrono::steady_clock::now() < until) {
    if (::kill(pid, 0) != 0 && errno == ESRCH) return true;
    std::ifstream stat{"/proc/" + std::to_string(pid) + "/stat"};
    std::string line;
    std::getline(stat, line);
    auto close = line.rfind(')');
    if (close != std::string::npos && close + 2 < line.size() && line[close + 2] == 'Z')
      return true;
    std::this_thread::sleep_for(10ms);
  }
  return false;
}

process_spec sh(const std::string& script, const std::string& cwd) {
  process_spec s;
  s.argv = {"sh", "-c", script};
  s.env = {{"PATH", "/usr/bin:/bin"}};
  s.cwd = cwd;
  s.kill_grace = 300ms;
  return s;
}

/// Cancels `c` once `log` shows `marker` (the program is up), bounded.
std::thread cancel_when(testkit::memory_log& log, cancel_source& c, std::string marker) {
  return std::thread{[&log, &c, marker] {
    auto until = std::chrono::steady_clock::now() + 20s;
    while (log.out().find(marker) == std::string::npos &&
           std::chrono::steady_clock::now() < until)
      std::this_thread::sleep_for(5ms);
    c.cancel(cancel_reason::canceled_by_user);
  }};
}

/// Runs `spec` on a thread of its own, as the agent runs a plan (the
/// kernel gives the run's orphans to the main thread, not to it).
std::thread run_on_worker(process_spec spec, testkit::memory_log& log, cancel_source& c,
                          process_outcome& out) {
  return std::thread{
      [spec = std::move(spec), &log, &c, &out] { out = run_process(spec, log, c); }};
}

} // namespace

// This test ensures stdout and stderr are captured separately and exit 0 is success.
TEST(process, captures_streams) {
  testkit::temp_dir dir;
  testkit::memory_log log;
  cancel_source c;
  auto out = run_process(sh("echo out; echo err >&2", dir.path()), log, c);
  EXPECT_TRUE(out.success()) << out.describe();
  EXPECT_EQ(log.out(), "out\n");
  EXPECT_EQ(log.err(), "err\n");
}

// This test ensures a plan's process gets stdin, stdout and stderr and no
// other descriptor of the agent, even one opened without O_CLOEXEC (a
// launcher's, or a secret file the agent read).
TEST(process, inherits_no_other_descriptors) {
  testkit::temp_dir dir;
  testkit::memory_log log;
  cancel_source c;
  int leaky = ::open("/dev/null", O_RDONLY); // no O_CLOEXEC
  ASSERT_GE(leaky, 3);
  int high = ::dup2(leaky, 97);
  ASSERT_EQ(high, 97);
  auto out = run_process(sh("cd /proc/$$/fd && echo *", dir.path()), log, c);
  ::close(leaky);
  ::close(high);
  EXPECT_TRUE(out.success()) << out.describe();
  // The shell's glob holds the directory it lists open: 3 may show.
  std::istringstream fds{log.out()};
  for (int fd; fds >> fd;)
    EXPECT_LE(fd, 3) << log.out();
}

// This test ensures the exit code, the working directory and the exact environment.
TEST(process, exit_code_cwd_env) {
  testkit::temp_dir dir;
  testkit::memory_log log;
  cancel_source c;
  ::setenv("POLYMESH_PROCESS_TEST_LEAK", "1", 1);
  auto spec = sh("pwd; env | sort; exit 7", dir.path());
  spec.env["ONLY_THIS"] = "yes";
  auto out = run_process(spec, log, c);
  EXPECT_TRUE(out.started);
  EXPECT_EQ(out.exit_code, 7);
  EXPECT_EQ(out.describe(), "exited with code 7");
  auto text = log.out();
  EXPECT_EQ(text.rfind(dir.path().string() + "\n", 0), 0u) << text;
  EXPECT_NE(text.find("ONLY_THIS=yes"), std::string::npos);
  EXPECT_EQ(text.find("POLYMESH_PROCESS_TEST_LEAK"), std::string::npos);
}

// This test ensures a missing program or directory is a start error, not a crash.
TEST(process, start_errors) {
  testkit::temp_dir dir;
  testkit::memory_log log;
  cancel_source c;
  process_spec s;
  s.argv = {"no-such-program-xyz"};
  s.cwd = dir.path();
  auto out = run_process(s, log, c);
  EXPECT_FALSE(out.started);
  EXPECT_NE(out.error.find("not found"), std::string::npos) << out.error;
  auto bad_dir = sh("true", "/nonexistent/dir");
  out = run_process(bad_dir, log, c);
  EXPECT_FALSE(out.started);
  EXPECT_NE(out.error.find("cannot enter working directory"), std::string::npos)
      << out.error;
}

// This test ensures a cancel kills the whole process group, grandchildren included.
TEST(process, cancel_kills_the_group) {
  testkit::temp_dir dir;
  testkit::memory_log log;
  cancel_source c;
  pid_t child = -1;
  auto canceler = cancel_when(log, c, "ready");
  auto out = run_process(sh("sleep 600 & echo $! > bg.pid; echo ready; wait", dir.path()),
                         log, c, [&](pid_t p) { child = p; });
  canceler.join();
  EXPECT_TRUE(out.canceled);
  EXPECT_EQ(out.signal, SIGTERM);
  std::ifstream in{dir.path() / "bg.pid"};
  pid_t grandchild = 0;
  in >> grandchild;
  ASSERT_GT(grandchild, 0);
  EXPECT_TRUE(gone(child));
  EXPECT_TRUE(gone(grandchild));
}

// This test ensures a program whose exit status someone else collected
// (the kernel, when the embedding program ignores SIGCHLD) still ends its
// run, saying why it has no status: run_process used to wait for it for
// ever, spinning a core once the run was canceled.
TEST(process, a_program_whose_status_was_collected_elsewhere_still_ends) {
  struct state {
    testkit::temp_dir dir;
    testkit::memory_log log;
    cancel_source cancel;
    std::promise<process_outcome> done;
  };
  // Shared with the thread: should it never return, it must not outlive them.
  auto st = std::make_shared<state>();
  auto result = st->done.get_future();
  auto previous = std::signal(SIGCHLD, SIG_IGN);
  std::thread{[st] {
    st->done.set_value(run_process(sh("echo hi", st->dir.path()), st->log, st->cancel));
  }}.detach();
  bool ended = result.wait_for(30s) == std::future_status::ready;
  std::signal(SIGCHLD, previous);
  if (!ended) st->cancel.cancel(cancel_reason::canceled_by_user);
  ASSERT_TRUE(ended) << "run_process never returned";
  auto out = result.get();
  EXPECT_TRUE(out.started);
  EXPECT_FALSE(out.success());
  EXPECT_NE(out.describe().find("(is SIGCHLD ignored?)"), std::string::npos)
      << out.describe();
  EXPECT_EQ(st->log.out(), "hi\n");
}

// This test ensures a canceled program that closed its output and ignores
// SIGTERM is waited for without spinning until its kill: the wait used to
// return at once on a fired token and burn a core for the whole grace.
TEST(process, a_canceled_program_is_waited_for_without_spinning) {
  testkit::temp_dir dir;
  testkit::memory_log log;
  cancel_source c;
  auto spec = sh("trap '' TERM; echo ready; exec >&- 2>&-; sleep 30", dir.path());
  spec.kill_grace = 1s;
  auto canceler = cancel_when(log, c, "ready");
  timespec before{};
  ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &before);
  auto out = run_process(spec, log, c);
  timespec after{};
  ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &after);
  canceler.join();
  EXPECT_TRUE(out.canceled);
  EXPECT_EQ(out.signal, SIGKILL);
  auto cpu_ms =
      (after.tv_sec - before.tv_sec) * 1000 + (after.tv_nsec - before.tv_nsec) / 1000000;
  // A second of grace; spinning spends most of it on the CPU.
  EXPECT_LT(cpu_ms, 300) << "CPU time of run_process's thread over the grace";
}

// This test ensures a process that left the run's process group (`setsid`,
// as a daemonizing script does) does not outlive the run: it used to keep
// running, able to read and write later runs' directories.
TEST(process, escaped_processes_do_not_outlive_the_run) {
  testkit::temp_dir dir;
  testkit::memory_log log;
  cancel_source c;
  auto out = run_process(
      sh("setsid sh -c 'echo $$ > escaped.pid; exec sleep 600' </dev/null >/dev/null "
         "2>&1 &"
         " sh -c 'echo $$ > grouped.pid; exec sleep 600' </dev/null >/dev/null 2>&1 &"
         " while [ ! -s escaped.pid ] || [ ! -s grouped.pid ]; do sleep 0.01; done",
         dir.path()),
      log, c);
  EXPECT_TRUE(out.success()) << out.describe();
  pid_t escaped = 0;
  pid_t grouped = 0;
  std::ifstream{dir.path() / "escaped.pid"} >> escaped;
  std::ifstream{dir.path() / "grouped.pid"} >> grouped;
  ASSERT_GT(escaped, 0);
  ASSERT_GT(grouped, 0);
  EXPECT_TRUE(gone(escaped)) << "a setsid child outlived its run";
  EXPECT_TRUE(gone(grouped));
}

/// The live processes started with the environment entry `entry`.
static std::vector<pid_t> started_with_entry(const std::string& entry) {
  std::vector<pid_t> found;
  for (const auto& proc : std::filesystem::directory_iterator{"/proc"}) {
    auto name = proc.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream in{proc.path() / "environ", std::ios::binary};
    std::string text{std::istreambuf_iterator<char>{in},
                     std::istreambuf_iterator<char>{}};
    if (('\0' + text).find('\0' + entry + '\0') != std::string::npos)
      found.push_back(static_cast<pid_t>(std::stol(name)));
  }
  return found;
}

// This test ensures chains of processes that keep forking into new
// sessions, each parent exiting at once, end with the run. The search for
// escaped processes stopped at its first pass that found none alive, which
// such a chain passes between a parent and its child; in mesh-agent, whose
// passes slowed with thousands of unreaped zombies of earlier chains, an
// audit's chain lived on after 8 runs of 8 (0 of 14 since). Here, with no
// zombies to slow the passes, the old search caught these chains too: this
// guards the behaviour, the audit's `t1b_hydra.sh` showed the difference.
TEST(process, a_chain_forking_into_new_sessions_ends_with_the_run) {
  testkit::temp_dir dir;
  testkit::memory_log log;
  cancel_source c;
  const std::string chain = POLYMESH_TEST_LEFTOVER;
  // Two chains, on a worker thread as in the agent (its orphans go to the
  // main thread); the program waits until each has begun.
  auto spec = sh("for i in 1 2; do " + chain +
                     " chain$i.pid chain </dev/null >/dev/null 2>&1 & done;"
                     " for i in 1 2; do while [ ! -s chain$i.pid ]; do sleep 0.01; "
                     "done; done",
                 dir.path());
  const std::string mark = "POLYMESH_TEST_CHAIN=" + dir.path().filename().string();
  spec.env["POLYMESH_TEST_CHAIN"] = dir.path().filename().string();
  process_outcome out;
  run_on_worker(spec, log, c, out).join();
  EXPECT_TRUE(out.success()) << out.describe();
  // A live chain always has a member: the child exists before its parent
  // exits.
  auto left = started_with_entry(mark);
  EXPECT_TRUE(left.empty()) << left.size() << " of the chains outlived the run";
  // However it went, none of it outlives the test.
  auto until = std::chrono::steady_clock::now() + 20s;
  while (!left.empty() && std::chrono::steady_clock::now() < until) {
    for (pid_t pid : left)
      ::kill(pid, SIGKILL);
    left = started_with_entry(mark);
  }
  reap_adopted_orphans();
}

// This test ensures what left the run's group is ended with it also when
// the run is on a worker thread, as in the agent, where the kernel gives
// the escaped orphans to the main thread (they used to outlive the run,
// sitting in its reused directory): one in a session of its own (`setsid`),
// one in a group of its own (`setpgrp`). One started without the tracking
// entry, on purpose, is left running.
TEST(process, escaped_processes_of_a_run_on_a_worker_thread_end_with_it) {
  testkit::temp_dir dir;
  testkit::memory_log log;
  cancel_source c;
  process_outcome out;
  auto worker = run_on_worker(
      sh("setsid sh -c 'echo $$ > escaped.pid; exec sleep 600' </dev/null >/dev/null "
         "2>&1 &"
         " perl -e 'setpgrp(0, 0); open(my $f, \">\", \"grouped.pid\"); print $f $$;"
         " close($f); exec(\"sleep\", \"600\")' </dev/null >/dev/null 2>&1 &"
         " env -u POLYMESH_TRACKING_ID setsid sh -c 'echo $$ > kept.pid; exec sleep "
         "600'"
         " </dev/null >/dev/null 2>&1 &"
         " while [ ! -s escaped.pid ] || [ ! -s grouped.pid ] || [ ! -s kept.pid ]; do"
         " sleep 0.01; done",
         dir.path()),
      log, c, out);
  worker.join();
  EXPECT_TRUE(out.success()) << out.describe() << log.err();
  pid_t escaped = 0;
  pid_t grouped = 0;
  pid_t kept = 0;
  std::ifstream{dir.path() / "escaped.pid"} >> escaped;
  std::ifstream{dir.path() / "grouped.pid"} >> grouped;
  std::ifstream{dir.path() / "kept.pid"} >> kept;
  ASSERT_GT(escaped, 0);
  ASSERT_GT(grouped, 0);
  ASSERT_GT(kept, 0);
  EXPECT_TRUE(gone(escaped)) << "a setsid process outlived its run";
  EXPECT_TRUE(gone(grouped)) << "a process in a group of its own outlived its run";
  EXPECT_EQ(::kill(kept, 0), 0)
      << "a process started without the tracking entry was ended";
  ::kill(kept, SIGKILL);
  EXPECT_TRUE(gone(kept));
  reap_adopted_orphans();
}

// This test ensures a run that ends leaves alone what another run, still
// going, started in a session of its own: both runs' escaped processes are
// orphans of the same main thread, told apart by their tracking entries.
TEST(process, a_run_ending_leaves_another_runs_escaped_processes_alone) {
  testkit::temp_dir dir;
  testkit::memory_log long_log;
  testkit::memory_log short_log;
  cancel_source c;
  process_outcome longer;
  // Its escaped process is orphaned at once (the subshell exits), then it
  // waits for the other run to end and says whether that process lives.
  auto first = run_on_worker(
      sh("(setsid sh -c 'echo $$ > mine.pid; exec sleep 600' </dev/null >/dev/null "
         "2>&1 &);"
         " while [ ! -s mine.pid ] || [ ! -e other.done ]; do sleep 0.01; done;"
         " kill -0 \"$(cat mine.pid)\"",
         dir.path()),
      long_log, c, longer);
  auto until = std::chrono::steady_clock::now() + 20s;
  while (!std::filesystem::exists(dir.path() / "mine.pid") &&
         std::chrono::steady_clock::now() < until)
    std::this_thread::sleep_for(5ms);
  process_outcome shorter;
  auto second = run_on_worker(
      sh("setsid sh -c 'exec sleep 600' </dev/null >/dev/null 2>&1 & exit 0", dir.path()),
      short_log, c, shorter);
  second.join();
  EXPECT_TRUE(shorter.success()) << shorter.describe();
  std::ofstream{dir.path() / "other.done"} << "1";
  first.join();
  EXPECT_TRUE(longer.success())
      << "its escaped process was ended by the other run's end: " << longer.describe()
      << long_log.err();
  pid_t mine = 0;
  std::ifstream{dir.path() / "mine.pid"} >> mine;
  ASSERT_GT(mine, 0);
  EXPECT_TRUE(gone(mine)) << "ended with its own run";
}

// This test ensures a process a run left behind that made itself
// non-dumpable (ssh-agent does), whose environment and working directory
// an agent that is not root cannot read, is not taken for the run's and
// killed (nothing tells it from another run's or the embedding program's),
// but is seen as possibly inside the run's directory, which is then not
// handed to the next run. As uid 65534 in a child process when the tests
// run as root (root reads everything).
TEST(process, a_non_dumpable_leftover_is_left_and_keeps_its_directory_from_reuse) {
  testkit::temp_dir dir;
  std::filesystem::create_directories(dir.path() / "work");
  std::filesystem::permissions(dir.path(), std::filesystem::perms::all);
  std::filesystem::permissions(dir.path() / "work", std::filesystem::perms::all);
  const std::string sleeper = POLYMESH_TEST_LEFTOVER;
  auto work = std::filesystem::canonical(dir.path() / "work").string();
  pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    if (::geteuid() == 0 && (::setgid(65534) != 0 || ::setuid(65534) != 0)) ::_exit(90);
    if (::access(sleeper.c_str(), X_OK) != 0) ::_exit(91);
    // A fork is no subreaper, even of a process that was (run_process
    // makes it one only once).
    ::prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    testkit::memory_log log;
    cancel_source c;
    process_outcome out;
    auto worker =
        run_on_worker(sh("setsid " + sleeper +
                             " left.pid nondumpable </dev/null >/dev/null 2>&1 & i=0;"
                             " while [ ! -s left.pid ] && [ $i -lt 1000 ]; do "
                             "sleep 0.01; i=$((i+1)); done",
                         work),
                      log, c, out);
    worker.join();
    pid_t left = 0;
    std::ifstream{std::filesystem::path{work} / "left.pid"} >> left;
    int code = 0;
    if (!out.success() || left <= 0) code |= 1;
    if (left > 0 && ::kill(left, 0) != 0) code |= 2;
    if (left > 0 && detail::leftover_in(work) != left) code |= 4;
    if (left > 0) ::kill(left, SIGKILL);
    ::_exit(code);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status));
  auto code = WEXITSTATUS(status);
  if (code == 91) GTEST_SKIP() << "uid 65534 cannot run " << sleeper;
  ASSERT_NE(code, 90) << "cannot become uid 65534";
  EXPECT_EQ(code & 1, 0) << "the run failed, or its leftover never started";
  EXPECT_EQ(code & 2, 0) << "a process nothing tells apart was killed";
  EXPECT_EQ(code & 4, 0) << "its directory was not seen as in use";
}

// This test ensures a leftover whose main thread ended while another runs
// (which /proc shows as a zombie, with no working directory or environment
// on the main thread) is ended with its run: it was skipped as dead.
TEST(process, a_leftover_whose_main_thread_ended_ends_with_its_run) {
  testkit::temp_dir dir;
  const std::string program = POLYMESH_TEST_LEFTOVER;
  testkit::memory_log log;
  cancel_source c;
  process_outcome out;
  auto worker = run_on_worker(sh("setsid " + program +
                                     " left.pid thread </dev/null >/dev/null 2>&1 &"
                                     " while [ ! -s left.pid ]; do sleep 0.01; done",
                                 dir.path()),
                              log, c, out);
  worker.join();
  EXPECT_TRUE(out.success()) << out.describe();
  pid_t left = 0;
  std::ifstream{dir.path() / "left.pid"} >> left;
  ASSERT_GT(left, 0);
  auto threads = [&] {
    std::ifstream status{"/proc/" + std::to_string(left) + "/status"};
    for (std::string line; std::getline(status, line);)
      if (line.rfind("Threads:", 0) == 0) return std::atoi(line.c_str() + 8);
    return 0;
  };
  auto until = std::chrono::steady_clock::now() + 10s;
  while (threads() > 1 && std::chrono::steady_clock::now() < until)
    std::this_thread::sleep_for(10ms);
  EXPECT_LE(threads(), 1) << "its second thread outlived the run";
  if (threads() > 1) ::kill(left, SIGKILL);
  reap_adopted_orphans();
}

// This test ensures each program gets a tracking entry of its own, which
// replaces one the spec gives.
TEST(process, each_program_gets_a_tracking_entry_of_its_own) {
  testkit::temp_dir dir;
  cancel_source c;
  std::vector<std::string> seen;
  for (int i = 0; i < 2; ++i) {
    testkit::memory_log log;
    auto spec = sh("printf %s \"$POLYMESH_TRACKING_ID\"", dir.path());
    spec.env[tracking_variable] = "forged";
    auto out = run_process(spec, log, c);
    ASSERT_TRUE(out.success()) << out.describe();
    seen.push_back(log.out());
  }
  EXPECT_EQ(seen[0].rfind(std::to_string(::getpid()) + "-", 0), 0u) << seen[0];
  EXPECT_NE(seen[0], seen[1]);
  EXPECT_EQ(std::count(seen.begin(), seen.end(), "forged"), 0);
}

// This test ensures the orphan reaping leaves the embedding program's own
// children to it: a child of its main thread that moved to a group of its
// own and exited used to be reaped by the agent, and the program's waitpid
// failed with ECHILD. A zombie in another session (where every process a
// plan starts lives) is reaped.
TEST(process, the_embedding_programs_own_children_are_left_to_it) {
  auto spawn = [](bool own_session) {
    pid_t child = ::fork();
    if (child == 0) {
      if (own_session)
        ::setsid();
      else
        ::setpgid(0, 0);
      ::_exit(7);
    }
    return child;
  };
  pid_t mine = spawn(false);
  pid_t orphan_like = spawn(true);
  ASSERT_GT(mine, 0);
  ASSERT_GT(orphan_like, 0);
  ASSERT_TRUE(gone(mine));
  ASSERT_TRUE(gone(orphan_like));
  EXPECT_EQ(reap_adopted_orphans(), 1u);
  int status = 0;
  ASSERT_EQ(::waitpid(mine, &status, 0), mine) << std::strerror(errno);
  EXPECT_EQ(WEXITSTATUS(status), 7);
  EXPECT_EQ(::waitpid(orphan_like, &status, WNOHANG), -1) << "reaped by the agent";
}

// This test ensures a plan's program runs in a session of its own, so that
// nothing it starts can be taken for the embedding program's children.
TEST(process, a_program_runs_in_a_session_of_its_own) {
  testkit::temp_dir dir;
  testkit::memory_log log;
  cancel_source c;
  auto out = run_process(sh("set -- $(cat /proc/$$/stat); echo $6", dir.path()), log, c);
  ASSERT_TRUE(out.success()) << out.describe();
  EXPECT_EQ(std::stol(log.out()), out.pid);
  EXPECT_NE(std::stol(log.out()), ::getsid(0));
}

// This test ensures a program ignoring SIGTERM gets SIGKILL after the grace.
TEST(process, sigkill_after_grace) {
  testkit::temp_dir dir;
  testkit::memory_log log;
  cancel_source c;
  auto canceler = cancel_when(log, c, "ready");
  auto out = run_process(
      sh("trap '' TERM; echo ready; while :; do sleep 1; done", dir.path()), log, c);
  canceler.join();
  EXPECT_TRUE(out.canceled);
  EXPECT_EQ(out.signal, SIGKILL);
}

// This test ensures processes left behind after the program exits are killed.
TEST(process, stragglers_are_killed) {
  testkit::temp_dir dir;
  testkit::memory_log log;
  cancel_source c;
  auto out = run_process(sh("sleep 600 & echo $!", dir.path()), log, c);
  EXPECT_TRUE(out.success());
  auto pid = static_cast<pid_t>(std::stol(log.out()));
  EXPECT_TRUE(gone(pid));
}

// This test ensures rlimits apply in the child.
TEST(process, rlimits_apply) {
  testkit::temp_dir dir;
  testkit::memory_log log;
  cancel_source c;
  auto spec = sh("ulimit -n", dir.path());
  spec.limits.push_back({RLIMIT_NOFILE, 17, 17});
  auto out = run_process(spec, log, c);
  EXPECT_TRUE(out.success()) << out.describe();
  EXPECT_EQ(log.out(), "17\n");
}

// This test ensures a token canceled before the start runs nothing.
TEST(process, canceled_before_start) {
  testkit::temp_dir dir;
  testkit::memory_log log;
  cancel_source c;
  c.cancel(cancel_reason::agent_shutdown);
  auto out = run_process(sh("echo no", dir.path()), log, c);
  EXPECT_FALSE(out.started);
  EXPECT_TRUE(out.canceled);
  EXPECT_EQ(log.all(), "");
}

// This test ensures a relative program path (`./deploy.sh`, as a shell
// shortcut with a `dir` writes it) is found in the program's working
// directory, where it runs, not in the agent's: it used to be looked up in
// the agent's and refused as missing.
TEST(process, a_relative_program_is_found_in_its_working_directory) {
  testkit::temp_dir dir;
  {
    std::ofstream script{dir.path() / "deploy.sh"};
    script << "#!/bin/sh\necho deployed from \"$(pwd)\"\n";
  }
  std::filesystem::permissions(dir.path() / "deploy.sh",
                               std::filesystem::perms::owner_all);
  ASSERT_FALSE(std::filesystem::exists("deploy.sh"))
      << "the test's own directory has one";
  testkit::memory_log log;
  cancel_source c;
  process_spec s;
  s.argv = {"./deploy.sh"};
  s.env = {{"PATH", "/usr/bin:/bin"}};
  s.cwd = dir.path();
  auto out = run_process(s, log, c);
  ASSERT_TRUE(out.started) << out.error;
  EXPECT_EQ(out.exit_code, 0);
  EXPECT_EQ(log.out(), "deployed from " + dir.path().string() + "\n");
  s.argv = {"./missing.sh"};
  out = run_process(s, log, c);
  EXPECT_FALSE(out.started);
  EXPECT_EQ(out.error, "program './missing.sh' does not exist or is not executable");
}

// This test ensures a script whose `#!` interpreter is missing is a start
// error naming the interpreter: it said the script itself did not exist.
TEST(process, a_missing_interpreter_is_named) {
  testkit::temp_dir dir;
  auto script = dir.path() / "tool.py";
  std::ofstream{script} << "#!/nonexistent/bin/python9 -u\nprint('hi')\n";
  std::filesystem::permissions(script, std::filesystem::perms::owner_all);
  testkit::memory_log log;
  cancel_source c;
  process_spec s;
  s.argv = {script.string()};
  s.cwd = dir.path();
  auto out = run_process(s, log, c);
  EXPECT_FALSE(out.started);
  EXPECT_EQ(out.error, "cannot execute '" + script.string() +
                           "': its interpreter '/nonexistent/bin/python9' (the #! line) "
                           "does not exist");
}

// This test ensures program names resolve through the search path only.
TEST(process, find_program_uses_search_path) {
  EXPECT_EQ(find_program("sh", "/nonexistent:/bin"), "/bin/sh");
  EXPECT_EQ(find_program("sh", "/nonexistent"), "");
  EXPECT_EQ(find_program("/bin/sh", ""), "/bin/sh");
}
