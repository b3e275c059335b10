// A plugin plan's run in a forked child: the frames it sends, the parent's
// loop that reads them, and how the child's end becomes the run's outcome.
#include "isolated_run.hpp"

#include "mesh/domain/log.hpp"
#include "polymesh/sdk/process.hpp"
#include "process_tracking.hpp"

#include <algorithm>
#include <cerrno>
#include <climits>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <dirent.h>
#include <fcntl.h>
#include <mutex>
#include <poll.h>
#include <stdio_ext.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

namespace polymesh::sdk {

namespace {

using steady = std::chrono::steady_clock;

/// Frame types, the first byte of a frame's header.
enum frame_type : char {
  frame_stdout = 'o',
  frame_stderr = 'e',
  frame_progress = 'p',
  frame_result = 'r',
};

/// A frame: type (1 byte), payload length (4 bytes, host order), payload.
constexpr size_t header_size = 5;
/// Output is sent in frames of at most this size.
constexpr size_t max_output_frame = 64 * 1024;
/// A larger frame means the pipe does not carry frames any more (something
/// in the child wrote to it): the child is stopped.
constexpr uint32_t max_frame = 64U * 1024 * 1024;
/// The child's exit status when the agent is gone (its pipe broke).
constexpr int parent_gone_status = 125;
/// After the child was reaped, how long descendants that escaped its group
/// may hold its stdout and stderr open.
constexpr std::chrono::milliseconds pipe_drain_limit{2000};

void close_fd(int& fd) {
  if (fd >= 0) ::close(fd);
  fd = -1;
}

/// The child's side: what its callbacks write to and read from. Built by
/// the parent before `fork`, used only in the child (its mutex is never
/// locked in the parent).
struct child_channel {
  int frames = -1;
  int cancel = -1;
  std::mutex mtx;
  int reason = POLYMESH_NOT_CANCELED;
};

/// Writes all of `data`; ends the child when the agent is gone.
void write_all(int fd, const char* data, size_t len) {
  while (len > 0) {
    auto n = ::write(fd, data, len);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) ::_exit(parent_gone_status);
    data += n;
    len -= static_cast<size_t>(n);
  }
}

/// Sends one frame of `a` followed by `b`. REQUIRES: `ch.mtx` held.
void send_frame(child_channel& ch, char type, std::string_view a,
                std::string_view b = {}) {
  char header[header_size];
  header[0] = type;
  auto len = static_cast<uint32_t>(a.size() + b.size());
  std::memcpy(header + 1, &len, sizeof len);
  write_all(ch.frames, header, sizeof header);
  write_all(ch.frames, a.data(), a.size());
  write_all(ch.frames, b.data(), b.size());
}

void child_log(void* host, int stream, const char* data, size_t len) {
  auto& ch = *static_cast<child_channel*>(host);
  if (!data) return;
  std::lock_guard<std::mutex> guard{ch.mtx};
  for (size_t at = 0; at < len; at += max_output_frame)
    send_frame(ch, stream == POLYMESH_STDERR ? frame_stderr : frame_stdout,
               std::string_view{data + at, std::min(max_output_frame, len - at)});
}

int child_wait_canceled(void* host, int64_t timeout_ms) {
  auto& ch = *static_cast<child_channel*>(host);
  {
    std::lock_guard<std::mutex> guard{ch.mtx};
    if (ch.reason != POLYMESH_NOT_CANCELED) return ch.reason;
  }
  // The parent writes the reason and then closes its end, so that every
  // thread of the run waiting here wakes up.
  pollfd p{ch.cancel, POLLIN, 0};
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
    auto n = ::read(ch.cancel, &reason, 1);
    if (n == 1)
      ch.reason = reason;
    else if (n == 0) // the agent is gone without a word
      ch.reason = POLYMESH_AGENT_SHUTDOWN;
  }
  return ch.reason;
}

void child_progress(void* host, const char* message) {
  auto& ch = *static_cast<child_channel*>(host);
  std::lock_guard<std::mutex> guard{ch.mtx};
  send_frame(ch, frame_progress, message ? message : "");
}

void child_set_result(void* host, int ok, int has_exit_code, int64_t exit_code,
                      const char* result, const char* error) {
  auto& ch = *static_cast<child_channel*>(host);
  std::string_view res = result ? result : "";
  std::string_view err = error ? error : "";
  // ok (1), has_exit_code (1), exit_code (8), result length (4), result, error.
  char fixed[14];
  fixed[0] = ok != 0 ? 1 : 0;
  fixed[1] = has_exit_code != 0 ? 1 : 0;
  std::memcpy(fixed + 2, &exit_code, sizeof exit_code);
  auto res_len = static_cast<uint32_t>(res.size());
  std::memcpy(fixed + 10, &res_len, sizeof res_len);
  std::string body{fixed, sizeof fixed};
  body.append(res);
  std::lock_guard<std::mutex> guard{ch.mtx};
  send_frame(ch, frame_result, body, err);
}

/// The parent's side: frames read so far and what they said.
struct frame_reader {
  std::string buf;
  bool has_result = false;
  plan_result result;
  bool malformed = false;

  /// Applies every complete frame in `buf` to the run.
  void drain(run_context& ctx) {
    size_t at = 0;
    while (!malformed && buf.size() - at >= header_size) {
      uint32_t len = 0;
      std::memcpy(&len, buf.data() + at + 1, sizeof len);
      if (len > max_frame) {
        malformed = true;
        break;
      }
      if (buf.size() - at - header_size < len) break;
      apply(buf[at], std::string_view{buf.data() + at + header_size, len}, ctx);
      at += header_size + len;
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
      if (body.size() < 14) break;
      int64_t code = 0;
      uint32_t res_len = 0;
      std::memcpy(&code, body.data() + 2, sizeof code);
      std::memcpy(&res_len, body.data() + 10, sizeof res_len);
      if (body.size() - 14 < res_len) break;
      has_result = true;
      result.ok = body[0] != 0;
      result.exit_code = body[1] != 0 ? std::optional<int64_t>{code} : std::nullopt;
      result.result = std::string{body.substr(14, res_len)};
      result.error = std::string{body.substr(14 + res_len)};
      return;
    }
    default: break;
    }
    malformed = true;
  }
};

/// In the child: closes every pipe and socket but its own two and its
/// stdio. Pipes of other runs in flight when it was forked (a program's
/// exec-status pipe above all, whose reader waits for its end to close) and
/// the agent's connections to the mesh would otherwise stay open as long as
/// this child runs. Pipes and sockets a plugin opened at `create` go too
/// (plugins.md says so). Allocates nothing: another thread of the agent may
/// have held the allocator's lock at the fork.
void close_inherited_fds(const child_channel& ch) {
  int dir = ::open("/proc/self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir < 0) return;
  alignas(8) char buf[4096];
  for (;;) {
    auto n = ::syscall(SYS_getdents64, dir, buf, sizeof buf);
    if (n <= 0) break;
    for (long at = 0; at < n;) {
      auto* e = reinterpret_cast<const struct dirent64*>(buf + at);
      at += e->d_reclen;
      int fd = 0;
      const char* c = e->d_name;
      if (*c < '0' || *c > '9') continue;
      for (; *c >= '0' && *c <= '9'; ++c)
        fd = fd * 10 + (*c - '0');
      if (fd < 3 || fd == dir || fd == ch.frames || fd == ch.cancel) continue;
      struct stat st {};
      if (::fstat(fd, &st) == 0 && (S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode)))
        ::close(fd);
    }
  }
  ::close(dir);
}

/// In the child, after `fork`: the plan's run, then `_exit`. Never returns.
[[noreturn]] void child_main(const polymesh_plan_v1& table, void* instance,
                             polymesh_run_v1& r, child_channel& ch, int out_fd,
                             int err_fd, pid_t agent_pid) {
  // A session of its own, so that the agent can end the child with every
  // process it started; dead with the agent.
  if (!detail::detach_child(agent_pid)) ::_exit(parent_gone_status);
  // As in the agent: a write to a closed pipe or socket is an EPIPE for the
  // plan to handle, not its death.
  struct sigaction ign {};
  ign.sa_handler = SIG_IGN;
  ::sigaction(SIGPIPE, &ign, nullptr);
  // Whatever the agent had buffered is the agent's, not the run's; the
  // plan's output reaches the log as it is printed, also before a crash
  // (unbuffered: after `__fpurge` glibc keeps a stream's old buffering).
  ::__fpurge(stdout);
  ::__fpurge(stderr);
  ::setvbuf(stdout, nullptr, _IONBF, 0);
  int devnull = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (devnull > 0) {
    ::dup2(devnull, 0);
    ::close(devnull);
  }
  ::dup2(out_fd, 1);
  ::dup2(err_fd, 2);
  close_inherited_fds(ch);
  table.run(instance, &r);
  std::fflush(stdout);
  std::fflush(stderr);
  ::_exit(0);
}

} // namespace

plugin_run_args::plugin_run_args(const run_context& ctx)
    : params_(ctx.params.dump())
    , work_(ctx.work_dir.string())
    , artifacts_(ctx.artifacts_dir.string()) {}

polymesh_run_v1 plugin_run_args::fill(const run_context& ctx) const {
  polymesh_run_v1 r{};
  r.run_id = ctx.run_id.c_str();
  r.plan = ctx.plan.c_str();
  r.params_json = params_.c_str();
  r.payload = ctx.payload.c_str();
  r.payload_len = ctx.payload.size();
  r.work_dir = work_.c_str();
  r.artifacts_dir = artifacts_.c_str();
  r.deadline_ms = -1;
  if (auto d = ctx.cancel->deadline())
    r.deadline_ms =
        std::max<int64_t>(0, std::chrono::duration_cast<std::chrono::milliseconds>(
                                 *d - cancel_token::clock_type::now())
                                 .count());
  r.kill_grace_ms = ctx.kill_grace.count();
  return r;
}

std::chrono::milliseconds isolated_stop_limit(std::chrono::milliseconds kill_grace) {
  return 2 * kill_grace + std::chrono::milliseconds{1000};
}

plan_result run_isolated(const polymesh_plan_v1& table, void* instance,
                         run_context& ctx) {
  auto failure = [&](const std::string& why) {
    return plan_result::failure("plugin plan '" + ctx.plan + "' " + why);
  };
  plugin_run_args args{ctx};
  auto r = args.fill(ctx);
  child_channel ch;
  r.host = &ch;
  r.log = &child_log;
  r.wait_canceled = &child_wait_canceled;
  r.progress = &child_progress;
  r.set_result = &child_set_result;

  int frames[2] = {-1, -1};
  int cancel[2] = {-1, -1};
  int out[2] = {-1, -1};
  int err[2] = {-1, -1};
  auto close_all = [&] {
    for (int* fd : {&frames[0], &frames[1], &cancel[0], &cancel[1], &out[0], &out[1],
                    &err[0], &err[1]})
      close_fd(*fd);
  };
  // The cancel goes over a socket: a send to a child that is gone is an
  // error here (MSG_NOSIGNAL), not a SIGPIPE for the agent.
  if (::pipe2(frames, O_CLOEXEC) != 0 ||
      ::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, cancel) != 0 ||
      ::pipe2(out, O_CLOEXEC) != 0 || ::pipe2(err, O_CLOEXEC) != 0) {
    auto why =
        std::string{"could not start: cannot create pipes: "} + std::strerror(errno);
    close_all();
    return failure(why);
  }
  ch.frames = frames[1];
  ch.cancel = cancel[0];
  // Processes the plan started and left behind when the child died come
  // back here (the agent's run threads reap and end them, process.hpp).
  detail::become_subreaper();
  pid_t agent_pid = ::getpid();
  pid_t pid = detail::fork_tracked(); // reaped here, never by reap_adopted_orphans
  if (pid < 0) {
    auto why = std::string{"could not start: cannot fork: "} + std::strerror(errno);
    close_all();
    return failure(why);
  }
  if (pid == 0) child_main(table, instance, r, ch, out[1], err[1], agent_pid);

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
      if (i == 0) {
        frames_in.buf.append(data);
        frames_in.drain(ctx);
      } else {
        ctx.log->write(i == 1 ? log_stream::out : log_stream::err, data);
      }
    });
    if (open == 0 && reaped) break;
    if (open == 0) {
      // The pipes are closed but the child still runs (it is ending).
      ctx.cancel->wait_for(idle_wait);
      idle_wait = std::min(idle_wait * 2, std::chrono::milliseconds{50});
    }
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

  if (frames_in.malformed)
    return failure("wrote something other than its reports to the agent's pipe; stopped");
  if (killed && !status_lost && WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
    return failure("did not return within " +
                   std::to_string(isolated_stop_limit(ctx.kill_grace).count()) +
                   " ms of being told to stop; killed");
  if (status_lost)
    return failure("ended, but something else in this program collected its exit status "
                   "(is SIGCHLD ignored?)");
  process_outcome how;
  how.started = true;
  if (WIFEXITED(status)) how.exit_code = WEXITSTATUS(status);
  if (WIFSIGNALED(status)) how.signal = WTERMSIG(status);
  if (how.success())
    return frames_in.has_result ? frames_in.result : failure("returned no result");
  auto text = how.signal != 0
                  ? "crashed: " + how.describe()
                  : "ended its process (" + how.describe() + ") before returning";
  polymesh::log(log_level::warn, "run " + ctx.run_id + ": plugin plan '" + ctx.plan +
                                     "' " + text + "; the agent goes on");
  return failure(text);
}

} // namespace polymesh::sdk
