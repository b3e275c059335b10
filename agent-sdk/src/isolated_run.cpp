// A plugin plan's run in a host process: its start (fork, then exec of
// mesh-plugin-host with the run's spec), the agent's loop that reads its
// frames, and how the host's end becomes the run's outcome.
#include "isolated_run.hpp"

#include "isolation_wire.hpp"
#include "mesh/domain/log.hpp"
#include "polymesh/sdk/plugin_abi.h"
#include "polymesh/sdk/process.hpp"
#include "process_tracking.hpp"

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

namespace polymesh::sdk {

namespace {

using namespace detail;
using steady = std::chrono::steady_clock;

/// After the host was reaped, how long descendants that escaped its group
/// may hold its stdout and stderr open.
constexpr std::chrono::milliseconds pipe_drain_limit{2000};

void close_fd(int& fd) {
  if (fd >= 0) ::close(fd);
  fd = -1;
}

/// The agent's side: frames read so far and what they said.
struct frame_reader {
  std::string buf;
  bool has_result = false;
  plan_result result;
  bool malformed = false;
  /// The errno of a failed `execve` of the host, or 0.
  int exec_errno = 0;
  /// The host said it runs (`frame_started`).
  bool started = false;

  /// Applies every complete frame in `buf` to the run.
  void drain(run_context& ctx) {
    size_t at = 0;
    while (!malformed && buf.size() - at >= frame_header_size) {
      uint32_t len = 0;
      std::memcpy(&len, buf.data() + at + 1, sizeof len);
      if (len > max_frame) {
        malformed = true;
        break;
      }
      if (buf.size() - at - frame_header_size < len) break;
      apply(buf[at], std::string_view{buf.data() + at + frame_header_size, len}, ctx);
      at += frame_header_size + len;
    }
    buf.erase(0, at);
  }

  void apply(char type, std::string_view body, run_context& ctx) {
    switch (type) {
    case frame_stdout: ctx.log->write(log_stream::out, body); return;
    case frame_stderr: ctx.log->write(log_stream::err, body); return;
    case frame_progress:
      if (ctx.progress) ctx.progress(std::string{body});
      return;
    case frame_result: {
      auto got = decode_host_run_result(body);
      if (!got) break;
      has_result = true;
      result.ok = got->ok;
      result.exit_code = got->exit_code;
      result.result = std::move(got->result);
      result.error = std::move(got->error);
      return;
    }
    case frame_started:
      if (!body.empty()) break;
      started = true;
      return;
    case frame_exec_failed:
      if (body.size() != sizeof exec_errno) break;
      std::memcpy(&exec_errno, body.data(), sizeof exec_errno);
      return;
    default: break;
    }
    malformed = true;
  }
};

/// In the child, after `fork`, before `exec`: reports the failed `execve`'s
/// errno as a frame (negated when it was a `setrlimit`'s, `limits`) and
/// ends. Async-signal-safe.
[[noreturn]] void exec_failed(int frames_fd, bool limits = false) {
  int err = limits ? -errno : errno;
  char frame[frame_header_size + sizeof err];
  char header[frame_header_size];
  frame_header(header, frame_exec_failed, sizeof err);
  std::memcpy(frame, header, sizeof header);
  std::memcpy(frame + frame_header_size, &err, sizeof err);
  (void)!::write(frames_fd, frame, sizeof frame);
  ::_exit(127);
}

/// The memory file the host reads its spec from, rewound; -1 and errno on
/// failure.
int spec_file(const std::string& bytes) {
  int fd = ::memfd_create("polymesh-run-spec", MFD_CLOEXEC);
  if (fd < 0) return -1;
  for (size_t at = 0; at < bytes.size();) {
    auto n = ::write(fd, bytes.data() + at, bytes.size() - at);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      int err = n < 0 ? errno : EIO;
      ::close(fd);
      errno = err;
      return -1;
    }
    at += static_cast<size_t>(n);
  }
  if (::lseek(fd, 0, SEEK_SET) != 0) {
    int err = errno;
    ::close(fd);
    errno = err;
    return -1;
  }
  return fd;
}

bool is_executable_file(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) &&
         ::access(path.c_str(), X_OK) == 0;
}

} // namespace

std::chrono::milliseconds isolated_stop_limit(std::chrono::milliseconds kill_grace) {
  return 2 * kill_grace + std::chrono::milliseconds{1000};
}

std::optional<std::string> find_plugin_host(std::string* error) {
  std::error_code ec;
  if (const char* env = std::getenv("POLYMESH_PLUGIN_HOST"); env && *env) {
    // Absolute, so that a later change of directory does not move it.
    auto path = std::filesystem::absolute(env, ec).string();
    if (!ec && is_executable_file(path)) return path;
    if (error)
      *error = std::string{"POLYMESH_PLUGIN_HOST="} + env +
               (ec || path == env ? std::string{} : " (" + path + ")") +
               " is not an executable file";
    return std::nullopt;
  }
  std::vector<std::string> tried;
  auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    auto dir = self.parent_path();
    tried.push_back((dir / "mesh-plugin-host").string());
    tried.push_back((dir / POLYMESH_PLUGIN_HOST_FROM_BINDIR).lexically_normal().string());
  }
  tried.emplace_back(POLYMESH_PLUGIN_HOST_INSTALLED);
  std::string where;
  for (size_t i = 0; i < tried.size(); ++i) {
    if (is_executable_file(tried[i])) return tried[i];
    where += (i == 0 ? "" : i + 1 == tried.size() ? " or " : ", ") + tried[i];
    if (std::filesystem::exists(tried[i], ec))
      where += " (there, but not an executable file)";
  }
  if (error)
    *error = "isolation 'process' runs each plan in mesh-plugin-host, which is not at " +
             where +
             "; install it, set POLYMESH_PLUGIN_HOST to its path, or load the "
             "plugin with isolation: none";
  return std::nullopt;
}

plan_result run_isolated(const isolated_plan& which, run_context& ctx) {
  auto failure = [&](const std::string& why) {
    return plan_result::failure("plugin plan '" + ctx.plan + "' " + why);
  };
  detail::host_run_spec spec;
  spec.plugin_path = which.plugin_path;
  spec.plan_name = which.plan_name;
  spec.settings_json = which.settings_json;
  spec.run_id = ctx.run_id;
  spec.run_plan = ctx.plan;
  spec.params_json = ctx.params.dump();
  spec.payload = ctx.payload;
  spec.work_dir = ctx.work_dir.string();
  spec.artifacts_dir = ctx.artifacts_dir.string();
  if (auto d = ctx.cancel->deadline())
    // Before the clock's epoch is passed already, not "none" (-1).
    spec.deadline_steady_ns = std::max<int64_t>(
        0, std::chrono::duration_cast<std::chrono::nanoseconds>(d->time_since_epoch())
               .count());
  spec.kill_grace_ms = ctx.kill_grace.count();

  int spec_fd = spec_file(detail::encode(spec));
  if (spec_fd < 0)
    return failure(std::string{"could not start: cannot write its spec: "} +
                   std::strerror(errno));
  int frames[2] = {-1, -1};
  int cancel[2] = {-1, -1};
  int out[2] = {-1, -1};
  int err[2] = {-1, -1};
  auto close_all = [&] {
    for (int* fd : {&spec_fd, &frames[0], &frames[1], &cancel[0], &cancel[1], &out[0],
                    &out[1], &err[0], &err[1]})
      close_fd(*fd);
  };
  // The cancel goes over a socket: a send to a host that is gone is an
  // error here (MSG_NOSIGNAL), not a SIGPIPE for the agent.
  if (::pipe2(frames, O_CLOEXEC) != 0 ||
      ::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, cancel) != 0 ||
      ::pipe2(out, O_CLOEXEC) != 0 || ::pipe2(err, O_CLOEXEC) != 0) {
    auto why =
        std::string{"could not start: cannot create pipes: "} + std::strerror(errno);
    close_all();
    return failure(why);
  }
  char* argv[] = {const_cast<char*>(which.host.c_str()), const_cast<char*>(host_argument),
                  const_cast<char*>(ctx.plan.c_str()), nullptr};
  // Processes the plan started and left behind when the host died come
  // back here (the agent's run threads reap and end them, process.hpp).
  detail::become_subreaper();
  pid_t agent_pid = ::getpid();
  pid_t pid = detail::fork_tracked(); // reaped here, never by reap_adopted_orphans
  if (pid < 0) {
    auto why = std::string{"could not start: cannot fork: "} + std::strerror(errno);
    close_all();
    return failure(why);
  }
  if (pid == 0) {
    // Child: async-signal-safe calls only, then the host's `exec`. A
    // session of its own, so that the agent can end the host with every
    // process it started; dead with the agent.
    if (!detail::detach_child(agent_pid)) ::_exit(125);
    // Every source first moves above the targets: a source may sit on
    // another's target, and `dup2` onto itself would keep its close-on-exec.
    const int from[] = {spec_fd, out[1], err[1], frames[1], cancel[0]};
    int high[5];
    for (int i = 0; i < 5; ++i)
      if ((high[i] = ::fcntl(from[i], F_DUPFD_CLOEXEC, 10)) < 0) exec_failed(frames[1]);
    for (int i = 0; i < 5; ++i)
      if (::dup2(high[i], i) < 0) exec_failed(high[3]);
    // Nothing else of the agent reaches the host: its connections, other
    // runs' pipes, descriptors it was started with.
    detail::close_on_exec_from(5);
    for (const auto& l : which.limits) {
      rlimit rl{static_cast<rlim_t>(l.soft), static_cast<rlim_t>(l.hard)};
      if (::setrlimit(l.resource, &rl) != 0) exec_failed(detail::host_frames_fd, true);
    }
    ::execve(argv[0], argv, environ);
    exec_failed(detail::host_frames_fd);
  }

  close_fd(spec_fd);
  close_fd(frames[1]);
  close_fd(cancel[0]);
  close_fd(out[1]);
  close_fd(err[1]);
  // The pipes, and a descriptor that turns readable when the child exits
  // (Linux 5.3; without it an ending child is looked for every few ms).
  int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  int fds[4] = {frames[0], out[0], err[0], pidfd};
  frame_reader frames_in;
  bool reaped = false;
  int status = 0;
  bool cancel_sent = false;
  bool killed = false;
  bool status_lost = false;
  /// Output before the host's first frame: its own (the dynamic loader's).
  bool host_wrote = false;
  steady::time_point cancel_at{};
  steady::time_point reaped_at{};
  std::vector<char> buf(64 * 1024);
  std::chrono::milliseconds idle_wait{1};
  for (;;) {
    auto open = detail::poll_inputs(fds, 4, 50, [&](size_t i) {
      if (i == 3) return; // the child ended: reaped below
      auto got = ::read(fds[i], buf.data(), buf.size());
      if (got < 0 && errno == EINTR) return;
      if (got <= 0) {
        close_fd(fds[i]);
        return;
      }
      std::string_view data{buf.data(), static_cast<size_t>(got)};
      if (i != 0 && !frames_in.started) host_wrote = true;
      if (i == 0) {
        frames_in.buf.append(data);
        frames_in.drain(ctx);
      } else {
        ctx.log->write(i == 1 ? log_stream::out : log_stream::err, data);
      }
    });
    if (open == 0 && reaped) break;
    if (open == 0) detail::nap_while_ending(*ctx.cancel, idle_wait);
    if (!reaped) {
      auto got = ::waitpid(pid, &status, WNOHANG);
      // ECHILD: the program reaps children behind the SDK's back (SIGCHLD
      // ignored, or its own `waitpid(-1)`); the exit status is lost.
      if (got == pid || (got < 0 && errno == ECHILD)) {
        status_lost = got != pid;
        reaped = true;
        reaped_at = steady::now();
        close_fd(fds[3]);
        ::kill(-pid, SIGKILL); // what it left in its group ends with it
      }
    }
    if (!reaped && frames_in.malformed && !killed) {
      killed = true;
      ::kill(-pid, SIGKILL);
    }
    if (!reaped && !cancel_sent && ctx.cancel->canceled()) {
      cancel_sent = true;
      cancel_at = steady::now();
      char reason = 0;
      switch (ctx.cancel->reason()) {
      case cancel_reason::none:
      case cancel_reason::canceled_by_user: reason = POLYMESH_CANCELED_BY_USER; break;
      case cancel_reason::timeout: reason = POLYMESH_TIMEOUT; break;
      case cancel_reason::agent_shutdown: reason = POLYMESH_AGENT_SHUTDOWN; break;
      }
      (void)!::send(cancel[1], &reason, 1, MSG_NOSIGNAL);
      close_fd(cancel[1]);
    }
    if (!reaped && cancel_sent && !killed &&
        steady::now() - cancel_at >= isolated_stop_limit(ctx.kill_grace)) {
      killed = true;
      ::kill(-pid, SIGKILL);
    }
    if (reaped && steady::now() - reaped_at > pipe_drain_limit) break;
  }
  for (int& fd : fds)
    close_fd(fd);
  close_fd(cancel[1]);
  detail::forget_program(pid);
  reap_adopted_orphans();

  if (frames_in.exec_errno < 0)
    return failure("could not start: cannot set its limits (the plugin's `limits`): " +
                   std::string{std::strerror(-frames_in.exec_errno)});
  if (frames_in.exec_errno != 0)
    return failure("could not start: cannot run " + which.host + ": " +
                   std::strerror(frames_in.exec_errno));
  if (frames_in.malformed)
    return failure("wrote something other than its reports to the agent's pipe; stopped");
  if (killed && !status_lost && WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
    return failure("did not return within " +
                   std::to_string(isolated_stop_limit(ctx.kill_grace).count()) +
                   " ms of being told to stop; killed");
  if (status_lost) return failure(detail::status_collected_elsewhere);
  process_outcome how;
  how.started = true;
  if (WIFEXITED(status)) how.exit_code = WEXITSTATUS(status);
  if (WIFSIGNALED(status)) how.signal = WTERMSIG(status);
  // The host sends a result whenever the plan returns (one without a
  // result of its own gets "returned no result" there): an exit 0 without
  // one is the plan's own `exit(0)`.
  if (how.success() && frames_in.has_result) return frames_in.result;
  // Its `execve` worked, but the host ended before its first word (a
  // refusal of the spec aside, which is a result): the dynamic loader's
  // message, if any, is in the run's log.
  if (!frames_in.started && !frames_in.has_result)
    return failure("could not start: " + which.host + " ended (" + how.describe() +
                   ") before it ran" +
                   (host_wrote ? "; its own message is in the run's log" : "") +
                   (which.limits.empty()
                        ? ""
                        : " (the plugin's `limits` may be too tight for it to load)"));
  auto text = how.signal != 0
                  ? "crashed: " + how.describe()
                  : "ended its process (" + how.describe() + ") before returning";
  polymesh::log(log_level::warn, "run " + ctx.run_id + ": plugin plan '" + ctx.plan +
                                     "' " + text + "; the agent goes on");
  return failure(text);
}

} // namespace polymesh::sdk
