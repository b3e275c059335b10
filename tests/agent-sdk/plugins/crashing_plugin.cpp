// A test plugin whose plan `misbehave` does what `params.do` says, to check
// what plugin isolation keeps from the agent:
//   "segv", "abort", "exit" (code 3), "exit0" (code 0): after logging
//   "before the end";
//   "address_space": succeeds with its address-space limit (RLIMIT_AS),
//                    in bytes, or "unlimited";
//   "print": writes to its own stdout and stderr with printf;
//   "progress": reports a progress message, then succeeds;
//   "ignore_cancel": logs "waiting", then waits for a cancel and ignores it;
//   "wait": logs "waiting", then returns once canceled;
//   "big": logs params.bytes bytes of a repeating pattern, then succeeds;
//   "count": succeeds with how many runs this plan instance has seen;
//   "print_then_segv": prints a line with printf, then crashes;
//   "epipe": writes to a pipe whose reader is gone, succeeds with what the
//            write said ("EPIPE" when it was an error, not a signal);
//   "close_fds": logs "waiting", closes every descriptor from 3 up (its
//                pipes to the agent too), then waits for a cancel that can
//                no longer come.
//   "child_fds": starts a shell with `system` that prints "fd N open" for
//                each of its descriptors 3 and 4 that is open, then
//                "checked";
//   "leave_behind": starts two `sleep 600` in the background with `system`,
//                   one in its process group, one in a session of its own
//                   (`setsid`), and once the second is in its session
//                   succeeds with their pids ("PID PID");
//   "dumpable": succeeds with prctl(PR_GET_DUMPABLE) of its process;
//   "deadline": succeeds with its deadline, in nanoseconds of
//               steady_clock since its epoch ("none" without one);
//   "lock": takes the library's test lock within 0.5 s, or fails ("the lock
//           is held"); the test holds it through
//           `crashing_plugin_hold_lock`, as another agent thread might hold
//           a lock in a library the plan shares with the agent.
#include "polymesh/sdk/plugin.hpp"

#include <atomic>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <mutex>
#include <new>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <thread>
#include <unistd.h>

namespace {

using namespace polymesh::sdk;

std::timed_mutex test_lock;

} // namespace

/// Takes (`hold` != 0) or releases the lock the plan's "lock" mode takes.
extern "C" __attribute__((visibility("default"))) void
crashing_plugin_hold_lock(int hold) {
  if (hold)
    test_lock.lock();
  else
    test_lock.unlock();
}

namespace {

class misbehave_plan final : public plan {
public:
  plan_result run(run_context& ctx) override {
    auto what = ctx.params.value("do", std::string{});
    auto seen = ++runs_;
    if (what == "segv" || what == "abort" || what == "exit" || what == "exit0") {
      ctx.log->line("before the end");
      if (what == "segv") std::raise(SIGSEGV);
      if (what == "abort") std::abort();
      std::exit(what == "exit0" ? 0 : 3);
    }
    if (what == "address_space") {
      rlimit rl{};
      if (::getrlimit(RLIMIT_AS, &rl) != 0)
        return plan_result::failure("getrlimit failed");
      return plan_result::success(rl.rlim_cur == RLIM_INFINITY
                                      ? std::string{"unlimited"}
                                      : std::to_string(rl.rlim_cur));
    }
    if (what == "print_then_segv") {
      std::printf("printed before the crash\n");
      std::raise(SIGSEGV);
    }
    if (what == "epipe") {
      int fds[2];
      if (::pipe(fds) != 0) return plan_result::failure("pipe failed");
      ::close(fds[0]);
      auto n = ::write(fds[1], "x", 1);
      auto err = errno;
      ::close(fds[1]);
      return plan_result::success(n < 0 && err == EPIPE ? "EPIPE" : "no error");
    }
    if (what == "close_fds") {
      ctx.log->line("waiting");
      for (int fd = 3; fd < 1024; ++fd)
        ::close(fd);
      while (!ctx.cancel->wait_for(std::chrono::milliseconds{60000})) {
      }
      return plan_result::success("canceled after all");
    }
    if (what == "child_fds") {
      std::fflush(stdout);
      int rc = std::system(
          "for fd in 3 4; do [ -e /proc/self/fd/$fd ] && echo \"fd $fd open\"; done; "
          "echo checked");
      return rc == 0 ? plan_result::success("ran")
                     : plan_result::failure("system failed");
    }
    if (what == "leave_behind") {
      auto file = (ctx.work_dir / "pids").string();
      auto cmd = "sleep 600 >/dev/null 2>&1 & echo $! >'" + file +
                 "'; setsid sleep 600 >/dev/null 2>&1 & echo $! >>'" + file + "'";
      if (std::system(cmd.c_str()) != 0) return plan_result::failure("system failed");
      pid_t in_group = 0;
      pid_t escaped = 0;
      std::ifstream{file} >> in_group >> escaped;
      // `setsid` may not have run yet when the shell is done.
      for (int i = 0; i < 5000 && ::getsid(escaped) != escaped; ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds{1});
      if (::getsid(escaped) != escaped) return plan_result::failure("setsid did not run");
      return plan_result::success(std::to_string(in_group) + " " +
                                  std::to_string(escaped));
    }
    if (what == "dumpable")
      return plan_result::success(std::to_string(::prctl(PR_GET_DUMPABLE, 0, 0, 0, 0)));
    if (what == "deadline") {
      auto d = ctx.cancel->deadline();
      return plan_result::success(
          d ? std::to_string(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                 d->time_since_epoch())
                                 .count())
            : "none");
    }
    if (what == "lock") {
      if (!test_lock.try_lock_for(std::chrono::milliseconds{500}))
        return plan_result::failure("the lock is held");
      test_lock.unlock();
      return plan_result::success("locked");
    }
    if (what == "print") {
      std::printf("printed to stdout\n");
      std::fprintf(stderr, "printed to stderr\n");
      return plan_result::success("printed");
    }
    if (what == "progress") {
      ctx.progress("half way");
      return plan_result::success("progressed");
    }
    if (what == "ignore_cancel" || what == "wait") {
      ctx.log->line("waiting");
      while (!ctx.cancel->wait_for(std::chrono::milliseconds{60000})) {
      }
      if (what == "wait")
        return plan_result::failure(std::string{"stopped: "} +
                                    to_string(ctx.cancel->reason()));
      for (;;)
        std::this_thread::sleep_for(std::chrono::seconds{60});
    }
    if (what == "big") {
      auto bytes = ctx.params.value("bytes", 0);
      std::string chunk;
      for (int i = 0; i < 1000; ++i)
        chunk += static_cast<char>('a' + i % 26);
      for (int written = 0; written < bytes; written += 1000)
        ctx.log->write(log_stream::out,
                       std::string_view{chunk}.substr(
                           0, static_cast<size_t>(std::min(1000, bytes - written))));
      return plan_result::success("big");
    }
    return plan_result::success(std::to_string(seen));
  }

private:
  std::atomic<int> runs_{0};
};

void register_plans(plugin_registrar& r) {
  r.add("misbehave", "Misbehaves on request",
        [](const nlohmann::json&, const std::string&) {
          return std::make_shared<misbehave_plan>();
        });
}

} // namespace

POLYMESH_PLUGIN(register_plans)
