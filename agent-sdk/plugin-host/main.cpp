// mesh-plugin-host: one run of one plugin plan, in a process of its own
// (plugin isolation `process`, docs/plugins.md "Isolation").
//
// The agent forks and execs this program for each isolated run, so the plan
// runs in a fresh process: no lock another agent thread held, no copy of the
// agent's memory, no exit handler of the agent. The host reads the run's
// spec from stdin (isolation_wire.hpp), loads the plugin, creates the plan
// with its settings and calls its `run`; its callbacks become frames on
// fd 3, and a cancel arrives on fd 4. A crash, an `abort` or an `exit` in
// the plan ends this process, not the agent.
//
// It is not meant to be started by hand.
#include "isolation_wire.hpp"
#include "polymesh/sdk/plugin_abi.h"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <climits>
#include <csignal>
#include <cstdio>
#include <dlfcn.h>
#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <poll.h>
#include <string>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

namespace {

using namespace polymesh::sdk::detail;
using steady = std::chrono::steady_clock;

/// The exit status when the agent is gone (the frames pipe broke).
constexpr int agent_gone_status = 125;

/// What the run's callbacks write to and read from.
struct channel {
  std::mutex mtx;
  int reason = POLYMESH_NOT_CANCELED;
  /// The plan called `set_result`.
  bool has_result = false;
};

/// Writes all of `data` to the frames pipe; ends the host when the agent is
/// gone.
void write_all(const char* data, size_t len) {
  while (len > 0) {
    auto n = ::write(host_frames_fd, data, len);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) ::_exit(agent_gone_status);
    data += n;
    len -= static_cast<size_t>(n);
  }
}

/// Sends one frame. REQUIRES: the channel's `mtx` held, or no other thread.
void send_frame(char type, std::string_view payload) {
  char header[frame_header_size];
  frame_header(header, type, payload.size());
  write_all(header, sizeof header);
  write_all(payload.data(), payload.size());
}

void host_log(void* host, int stream, const char* data, size_t len) {
  auto& ch = *static_cast<channel*>(host);
  if (!data) return;
  std::lock_guard<std::mutex> guard{ch.mtx};
  for (size_t at = 0; at < len; at += max_output_frame)
    send_frame(stream == POLYMESH_STDERR ? frame_stderr : frame_stdout,
               std::string_view{data + at, std::min(max_output_frame, len - at)});
}

int host_wait_canceled(void* host, int64_t timeout_ms) {
  auto& ch = *static_cast<channel*>(host);
  {
    std::lock_guard<std::mutex> guard{ch.mtx};
    if (ch.reason != POLYMESH_NOT_CANCELED) return ch.reason;
  }
  // The agent writes the reason and then closes its end, so that every
  // thread of the run waiting here wakes up.
  pollfd p{host_cancel_fd, POLLIN, 0};
  auto until =
      steady::now() + std::chrono::milliseconds{std::max<int64_t>(timeout_ms, 0)};
  for (;;) {
    auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(until - steady::now());
    auto wait = static_cast<int>(std::clamp<int64_t>(left.count(), 0, INT_MAX));
    int ready = ::poll(&p, 1, wait);
    if (ready < 0 && errno == EINTR) continue;
    if (ready > 0 && (p.revents & POLLNVAL) != 0) {
      // The plan closed the descriptor: no cancel can come; wait out the time.
      struct timespec ts {
        wait / 1000, static_cast<long>(wait % 1000) * 1000000L
      };
      while (::nanosleep(&ts, &ts) != 0 && errno == EINTR) {
      }
      break;
    }
    if (ready != 0 || wait == 0) break;
  }
  std::lock_guard<std::mutex> guard{ch.mtx};
  if (ch.reason == POLYMESH_NOT_CANCELED) {
    char reason = 0;
    auto n = ::read(host_cancel_fd, &reason, 1);
    if (n == 1)
      ch.reason = reason;
    else if (n == 0) // the agent is gone without a word
      ch.reason = POLYMESH_AGENT_SHUTDOWN;
  }
  return ch.reason;
}

void host_progress(void* host, const char* message) {
  auto& ch = *static_cast<channel*>(host);
  std::lock_guard<std::mutex> guard{ch.mtx};
  send_frame(frame_progress, message ? message : "");
}

void host_set_result(void* host, int ok, int has_exit_code, int64_t exit_code,
                     const char* result, const char* error) {
  auto& ch = *static_cast<channel*>(host);
  std::lock_guard<std::mutex> guard{ch.mtx};
  host_run_result r;
  r.ok = ok != 0;
  if (has_exit_code != 0) r.exit_code = exit_code;
  r.result = result ? result : "";
  r.error = error ? error : "";
  send_frame(frame_result, encode(r));
  ch.has_result = true;
}

/// Ends the run as a failure that says why the plan could not start here.
[[noreturn]] void fail(const std::string& plan, const std::string& why) {
  host_run_result r;
  r.error = "plugin plan '" + plan + "' could not start in its host process: " + why;
  send_frame(frame_result, encode(r));
  ::_exit(0);
}

/// Behind `polymesh_host_v1::host` while the plugin registers its plans:
/// keeps the table of the one plan this run needs.
struct wanted_plan {
  const std::string* name = nullptr;
  bool found = false;
  polymesh_plan_v1 table{};
};

int keep_wanted_plan(void* host, const polymesh_plan_v1* p) {
  auto& want = *static_cast<wanted_plan*>(host);
  if (p && p->name && p->create && p->run && *want.name == p->name) {
    want.found = true;
    want.table = *p;
  }
  return 0;
}

/// The processes whose parent is a thread of this one: the plan's children,
/// and the orphans it adopted as their subreaper.
std::vector<pid_t> children() {
  std::vector<pid_t> out;
  std::error_code ec;
  for (auto& task : std::filesystem::directory_iterator{"/proc/self/task", ec}) {
    std::ifstream in{task.path() / "children"};
    for (pid_t pid = 0; in >> pid;)
      out.push_back(pid);
  }
  return out;
}

/// Ends and reaps what the plan left running, in the host's group or in a
/// session of its own: the host is their subreaper, so they are its
/// children, or become so when their parents end. Bounded: what is left
/// after it (a process that keeps forking) ends with the host's group, which
/// the agent kills once the host is gone.
void end_leftovers() {
  auto own_group = ::getpgrp();
  auto until = steady::now() + std::chrono::milliseconds{500};
  for (;;) {
    auto left = children();
    if (left.empty() || steady::now() >= until) return;
    for (pid_t child : left) {
      auto group = ::getpgid(child);
      if (group > 0 && group != own_group) ::kill(-group, SIGKILL);
      ::kill(child, SIGKILL);
    }
    for (pid_t child : left) {
      int status = 0;
      ::waitpid(child, &status, WNOHANG);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds{1});
  }
}

std::string read_stdin() {
  std::string bytes;
  char buf[64 * 1024];
  for (;;) {
    auto n = ::read(0, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    bytes.append(buf, static_cast<size_t>(n));
  }
  return bytes;
}

} // namespace

int main(int argc, char** argv) {
  // Started by hand: say what this is instead of waiting for a spec. (An
  // agent of an older build passes no plan name.)
  if (argc < 2 || argc > 3 || std::string_view{argv[1]} != host_argument) {
    std::fprintf(stderr, "mesh-plugin-host runs one isolated plugin plan for mesh-agent "
                         "(docs/plugins.md); it is not meant to be started by hand\n");
    return 2;
  }
  // The frames pipe and the cancel socket are the host's alone: a program
  // the plan starts (`system`, `popen`) must not write into the one or
  // read the other.
  ::fcntl(host_frames_fd, F_SETFD, FD_CLOEXEC);
  ::fcntl(host_cancel_fd, F_SETFD, FD_CLOEXEC);
  std::string plan = argc > 2 ? argv[2] : "?";
  // As the agent: its environment (the agent's), memory and pipes stay out
  // of other runs' reach through /proc (no effect when run as root).
  ::prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
  // What the plan starts and leaves behind comes back here when its parent
  // ends, also from a session of its own, to be ended with the run.
  ::prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
  auto spec = decode_host_run_spec(read_stdin());
  int devnull = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (devnull > 0) {
    ::dup2(devnull, 0);
    ::close(devnull);
  }
  // As in the agent: a write to a closed pipe or socket is an EPIPE for the
  // plan to handle, not its death.
  std::signal(SIGPIPE, SIG_IGN);
  // The plan's output reaches the log as it is printed, also before a crash.
  std::setvbuf(stdout, nullptr, _IONBF, 0);
  if (!spec)
    fail(plan, std::string{"the run's spec is not one "} + argv[0] +
                   " reads: it is from another build than the agent (restart the agent "
                   "after an upgrade)");
  // An agent of this build knows the frame (the spec said so).
  send_frame(frame_started, {});

  void* lib = ::dlopen(spec->plugin_path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!lib) {
    const char* why = ::dlerror();
    fail(plan, "cannot load plugin " + spec->plugin_path + ": " +
                   (why ? why : "unknown error"));
  }
  auto* entry = reinterpret_cast<polymesh_plugin_init_fn>(
      ::dlsym(lib, POLYMESH_PLUGIN_ENTRY_SYMBOL));
  if (!entry)
    fail(plan, "plugin " + spec->plugin_path + " has no '" +
                   POLYMESH_PLUGIN_ENTRY_SYMBOL + "' entry point");
  wanted_plan want;
  want.name = &spec->plan_name;
  polymesh_host_v1 host{POLYMESH_PLUGIN_ABI_VERSION, &want, &keep_wanted_plan};
  auto version = entry(&host);
  if (version != POLYMESH_PLUGIN_ABI_VERSION)
    fail(plan, "plugin " + spec->plugin_path + " speaks plugin ABI version " +
                   std::to_string(version) + " now");
  if (!want.found)
    fail(plan, "plugin " + spec->plugin_path + " no longer registers plan '" +
                   spec->plan_name + "'");
  char error[1024] = {};
  void* instance = want.table.create(want.table.plan_data, spec->settings_json.c_str(),
                                     error, sizeof error);
  if (!instance)
    fail(plan, std::string{"the plan refused its settings: "} +
                   (error[0] ? error : "no reason given"));

  channel ch;
  polymesh_run_v1 r{};
  r.run_id = spec->run_id.c_str();
  r.plan = spec->run_plan.c_str();
  r.params_json = spec->params_json.c_str();
  r.payload = spec->payload.c_str();
  r.payload_len = spec->payload.size();
  r.work_dir = spec->work_dir.c_str();
  r.artifacts_dir = spec->artifacts_dir.c_str();
  // What is left of the run's time now that the host is up and the plan
  // created.
  r.deadline_ms = -1;
  if (spec->deadline_steady_ns >= 0) {
    auto left = steady::time_point{std::chrono::nanoseconds{spec->deadline_steady_ns}} -
                steady::now();
    r.deadline_ms = std::max<int64_t>(
        0, std::chrono::duration_cast<std::chrono::milliseconds>(left).count());
  }
  r.kill_grace_ms = spec->kill_grace_ms;
  r.host = &ch;
  r.log = &host_log;
  r.wait_canceled = &host_wait_canceled;
  r.progress = &host_progress;
  r.set_result = &host_set_result;
  want.table.run(instance, &r);
  {
    // A plan (in C) that returned without a result says so, as it does in
    // the agent's own process: an exit 0 without one is the plan's `exit`.
    std::lock_guard<std::mutex> guard{ch.mtx};
    if (!ch.has_result) {
      host_run_result none;
      none.ok = false;
      none.error = "plugin plan '" + plan + "' returned no result";
      send_frame(frame_result, encode(none));
    }
  }
  std::fflush(stdout);
  std::fflush(stderr);
  end_leftovers();
  // No `destroy` and no exit handlers: the process ends with the run.
  ::_exit(0);
}
