// fork/exec with pipes, a process group per run, and a kill ladder.
//
// Everything the child needs (paths, argv, envp) is prepared before `fork`,
// because between `fork` and `exec` a multi-threaded program may only call
// async-signal-safe functions. An extra close-on-exec pipe tells the parent
// whether `exec` succeeded: it reads EOF on success and an errno otherwise.
#include "polymesh/sdk/process.hpp"

#include "polymesh/sdk/settings.hpp"
#include "process_tracking.hpp"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <poll.h>
#include <set>
#include <sstream>
#include <string>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

namespace polymesh::sdk {

namespace {

/// CLOSE_RANGE_CLOEXEC (linux/close_range.h, Linux 5.11): mark, do not close.
constexpr unsigned close_range_cloexec = 1U << 2;

/// The programs `run_process` started and has not reaped yet: never reaped
/// by anyone else (an embedding program may run one on its main thread,
/// where adopted orphans land too).
std::mutex live_mtx;
std::set<pid_t> live_programs;

bool is_live_program(pid_t pid) {
  std::lock_guard<std::mutex> guard{live_mtx};
  return live_programs.count(pid) > 0;
}

/// The children of thread `tid` of this process.
std::vector<pid_t> children_of(long tid) {
  std::vector<pid_t> out;
  auto path = "/proc/self/task/" + std::to_string(tid) + "/children";
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return out;
  char buf[4096];
  std::string text;
  for (ssize_t n; (n = ::read(fd, buf, sizeof buf)) > 0;)
    text.append(buf, static_cast<size_t>(n));
  ::close(fd);
  size_t at = 0;
  while (at < text.size()) {
    auto end = text.find(' ', at);
    if (end == std::string::npos) end = text.size();
    if (end > at) out.push_back(static_cast<pid_t>(std::stol(text.substr(at, end - at))));
    at = end + 1;
  }
  return out;
}

bool is_zombie(pid_t pid) {
  std::ifstream stat{"/proc/" + std::to_string(pid) + "/stat"};
  std::string line;
  std::getline(stat, line);
  auto close = line.rfind(')');
  return close != std::string::npos && close + 2 < line.size() && line[close + 2] == 'Z';
}

/// Whether `pid` is dead, waiting to be reaped: a zombie with no thread
/// left (a process whose main thread ended while others run shows as a
/// zombie too).
/// The value of field `key` (`Threads:`, `Uid:`) of `/proc/<pid>/status`,
/// which is readable whatever the process; "" when it has none.
std::string status_field(pid_t pid, const std::string& key) {
  std::ifstream status{"/proc/" + std::to_string(pid) + "/status"};
  for (std::string line; std::getline(status, line);)
    if (line.rfind(key, 0) == 0) return line.substr(key.size());
  return {};
}

bool is_defunct(pid_t pid) {
  if (!is_zombie(pid)) return false;
  auto threads = status_field(pid, "Threads:");
  return threads.empty() || std::atoi(threads.c_str()) <= 1;
}

/// The ids of `pid`'s threads, the main one first.
std::vector<pid_t> threads_of(pid_t pid) {
  std::vector<pid_t> out{pid};
  std::error_code ec;
  std::filesystem::directory_iterator tasks{"/proc/" + std::to_string(pid) + "/task", ec};
  for (; !ec && tasks != std::filesystem::directory_iterator{}; tasks.increment(ec)) {
    auto tid = static_cast<pid_t>(std::atol(tasks->path().filename().c_str()));
    if (tid > 0 && tid != pid) out.push_back(tid);
  }
  return out;
}

/// The environment entry that marks every process one `run_process` call
/// starts, and what they start in turn: unique on this host while the
/// agent lives (its pid, then a count).
std::string next_tracking_entry() {
  static std::atomic<uint64_t> count{0};
  return std::string{tracking_variable} + "=" + std::to_string(::getpid()) + "-" +
         std::to_string(++count);
}

/// Whether `pid` runs as this process's user.
bool same_user(pid_t pid) {
  std::istringstream ids{status_field(pid, "Uid:")};
  uid_t real = 0;
  uid_t effective = 0;
  return ids >> real >> effective && real == ::geteuid() && effective == ::geteuid();
}

/// What a program `run_process` started is known by at its end.
struct program_mark {
  pid_t group = 0;
  /// Its environment entry (`tracking_variable=…`).
  std::string tracking;
};

/// Whether process `pid` was started with the environment entry `entry`
/// (`/proc/<pid>/environ`: the environment it was started with, read
/// through a live thread). False when it cannot be read: another user's
/// process, or one that made itself non-dumpable (`ssh-agent`) when the
/// agent is not root; such a process cannot be told apart, and is left.
bool started_with(pid_t pid, const std::string& entry) {
  for (pid_t tid : threads_of(pid)) {
    auto path =
        "/proc/" + std::to_string(pid) + "/task/" + std::to_string(tid) + "/environ";
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) continue;
    std::string text(1, '\0');
    char buf[4096];
    // At most the usual limit for arguments and environment together.
    for (ssize_t n;
         text.size() < 2 * 1024 * 1024 && (n = ::read(fd, buf, sizeof buf)) > 0;)
      text.append(buf, static_cast<size_t>(n));
    ::close(fd);
    // An ended thread has no environment left to read.
    if (text.size() == 1) continue;
    text.push_back('\0');
    return text.find('\0' + entry + '\0') != std::string::npos;
  }
  return false;
}

/// One pass over the processes that left the group of the program `p`
/// and are adopted now: children of this thread or, once their parent
/// died, of the main thread (where the kernel gives a subreaper's orphans).
/// Those still in the program's session (`setpgid`) or started with its
/// entry (`setsid`, which leaves the session too) are killed with their
/// groups; other runs' processes carry other entries and stay. Returns
/// whether one was signalled.
bool kill_escaped(const program_mark& p) {
  auto group = p.group;
  auto own = ::getsid(0);
  auto main_thread = ::getpid();
  auto this_thread = static_cast<pid_t>(::syscall(SYS_gettid));
  auto candidates = children_of(main_thread);
  if (this_thread != main_thread)
    for (pid_t child : children_of(this_thread))
      candidates.push_back(child);
  bool found = false;
  for (pid_t child : candidates) {
    // Opened before `child` is inspected: if another thread reaps it and
    // its pid is reused meanwhile, the kill below reaches nothing instead
    // of the newcomer (or the newcomer's group). (Through syscall():
    // glibc 2.36's <sys/pidfd.h> lacks extern "C".)
    auto handle = static_cast<int>(::syscall(SYS_pidfd_open, child, 0));
    if (handle < 0 && errno == ESRCH) continue; // ended and reaped already
    // Any other failure (a seccomp filter's EPERM, no descriptor left):
    // by pid, as before pidfds, rather than not at all.
    bool killed = false;
    if (!is_live_program(child) && !is_defunct(child)) {
      auto pgid = ::getpgid(child);
      auto sid = ::getsid(child);
      if (pgid >= 0 && sid >= 0 && sid != own &&
          (sid == group || started_with(child, p.tracking))) {
        killed = handle >= 0
                     ? ::syscall(SYS_pidfd_send_signal, handle, SIGKILL, nullptr, 0) == 0
                     : ::kill(child, SIGKILL) == 0;
        // Only while it lives (the signal reached it, or it is another
        // user's): then `child` was never reaped, and the group read above
        // is its own.
        if ((killed || errno == EPERM) && pgid != group) ::kill(-pgid, SIGKILL);
      }
    }
    if (handle >= 0) ::close(handle);
    // Counted only when it could be signalled: one out of reach (another
    // user's, in the session) must not hold the caller for its 500 ms.
    found = found || killed;
  }
  return found;
}

/// After a run's program was reaped and its group killed: kills and reaps
/// what is left of the group, and every process that escaped it (see
/// `kill_escaped`), bounded in time. Children in the agent's own session
/// are not the run's (see `run_process`) and are left alone; the zombies
/// of what was killed are reaped by `reap_adopted_orphans`.
void end_leftovers(const program_mark& p) {
  auto group = p.group;
  auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds{500};
  // A pass sees a snapshot of the adopted children: a chain of processes
  // that keep forking into new sessions (each parent exiting at once) can
  // have its live member between two parents at that instant. Only a few
  // quiet passes in a row end the search; a single one let such chains
  // live on after nearly every run.
  int quiet = 0;
  for (;;) {
    // The zombies of what was killed go first: each pass reads every
    // adopted child, and thousands of zombies made it slower than a chain.
    reap_adopted_orphans();
    bool group_left = ::kill(-group, SIGKILL) == 0;
    // Members of the group whose parent died were adopted by the main
    // thread: reap them here, or the group (zombies and all) stays.
    if (group_left)
      for (pid_t child : children_of(::getpid()))
        if (!is_live_program(child) && ::getpgid(child) == group) {
          int status = 0;
          ::waitpid(child, &status, WNOHANG);
        }
    // A killed process turns zombie with its children already adopted:
    // the next pass finds them.
    bool escaped = kill_escaped(p);
    quiet = group_left || escaped ? 0 : quiet + 1;
    if (quiet == 3 || std::chrono::steady_clock::now() >= until) return;
    std::this_thread::sleep_for(std::chrono::milliseconds{1});
  }
}

using steady = std::chrono::steady_clock;

/// After the program exits, how long stray descendants may keep its pipes
/// open (they were SIGKILLed; this only covers processes that escaped the
/// group) before the output is abandoned.
constexpr std::chrono::milliseconds pipe_drain_limit{2000};

/// The default search path when the environment has no PATH.
constexpr const char* default_path = "/usr/local/bin:/usr/bin:/bin";

/// What the child reports through the exec pipe when it cannot start.
struct child_failure {
  int stage = 0; ///< 1 chdir, 2 setrlimit, 3 exec
  int error = 0;
};

void close_fd(int& fd) {
  if (fd >= 0) ::close(fd);
  fd = -1;
}

bool is_executable_file(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) &&
         ::access(path.c_str(), X_OK) == 0;
}

/// The program a script's `#!` line names, or "" for a file without one.
std::string script_interpreter(const std::string& path) {
  std::ifstream in{path, std::ios::binary};
  std::string line(256, '\0'); // Linux reads at most 256 bytes of it too
  in.read(line.data(), static_cast<std::streamsize>(line.size()));
  line.resize(static_cast<size_t>(in.gcount()));
  line = line.substr(0, line.find('\n'));
  if (line.rfind("#!", 0) != 0) return {};
  auto begin = line.find_first_not_of(" \t", 2);
  if (begin == std::string::npos) return {};
  auto end = line.find_first_of(" \t\r", begin);
  return line.substr(begin, end == std::string::npos ? std::string::npos : end - begin);
}

[[noreturn]] void child_fail(int fd, int stage) {
  child_failure f{stage, errno};
  auto n = ::write(fd, &f, sizeof f);
  (void)n;
  ::_exit(127);
}

/// The `RLIMIT_CPU` hard limit of `spec` in seconds if the CPU time in
/// `usage` passed its soft limit (a SIGKILL then is the kernel's, at the
/// hard one), else 0.
uint64_t cpu_limit_reached(const process_spec& spec, const rusage& usage) {
  auto seconds = [](const timeval& t) { return t.tv_sec + t.tv_usec / 1e6; };
  for (auto& l : spec.limits)
    // Past the soft limit, whose SIGXCPU it ignored: the kernel's SIGKILL
    // comes at the hard one. Not the hard limit itself: `usage` is built
    // from samples, and on a busy virtual machine it fell 10 % short of the
    // time the kernel counted against the limit (1.80 s of 2).
    if (l.resource == RLIMIT_CPU && l.hard != RLIM_INFINITY &&
        seconds(usage.ru_utime) + seconds(usage.ru_stime) + 0.1 >=
            static_cast<double>(std::min(l.soft, l.hard)))
      return l.hard;
  return 0;
}

} // namespace

namespace detail {

pid_t fork_tracked() {
  std::lock_guard<std::mutex> guard{live_mtx};
  pid_t pid = ::fork();
  if (pid > 0) live_programs.insert(pid);
  return pid;
}

void forget_program(pid_t pid) {
  std::lock_guard<std::mutex> guard{live_mtx};
  live_programs.erase(pid);
}

/// Makes this process the reaper of its descendants' orphans (once), so
/// that a process that left its run's group (`setsid`) comes back to the
/// thread that started the run when its parent dies, instead of to init.
void become_subreaper() {
  static std::once_flag once;
  std::call_once(once, [] { ::prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); });
}

bool detach_child(pid_t agent_pid) {
  ::setsid();
  // The signal survives exec. A parent already gone before this line is
  // caught by the pid check.
  ::prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
  if (::getppid() != agent_pid) return false;
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  for (int sig = 1; sig < NSIG; ++sig)
    if (sig != SIGKILL && sig != SIGSTOP) ::sigaction(sig, &dfl, nullptr);
  return true;
}

pid_t leftover_in(const std::filesystem::path& where) {
  auto own = ::getsid(0);
  std::vector<pid_t> todo;
  for (pid_t child : children_of(::getpid()))
    if (!is_live_program(child) && ::getsid(child) != own) todo.push_back(child);
  // Resolved only when there is a process to compare with: most runs leave
  // none, and this is at every run's end.
  if (todo.empty()) return 0;
  std::error_code unresolved;
  auto dir = std::filesystem::canonical(where, unresolved).string();
  if (unresolved) return 0;
  auto inside = [&](const std::string& path) {
    return path.compare(0, dir.size(), dir) == 0 &&
           (path.size() == dir.size() || path[dir.size()] == '/');
  };
  // Their descendants too (children of any of their threads), within bounds.
  for (size_t at = 0; at < todo.size() && at < 4096; ++at) {
    auto pid = todo[at];
    if (is_defunct(pid)) continue;
    bool hidden = false;
    auto tids = threads_of(pid);
    // Through each thread: a main thread that ended has no directory left.
    for (pid_t tid : tids) {
      std::error_code ec;
      auto cwd = std::filesystem::read_symlink(
          "/proc/" + std::to_string(pid) + "/task/" + std::to_string(tid) + "/cwd", ec);
      if (!ec && inside(cwd.string())) return pid;
      if (ec == std::errc::permission_denied) hidden = true;
    }
    // One of this user's that hides where it is (non-dumpable, the agent
    // not root) may be inside: the directory is not handed on.
    if (hidden && same_user(pid)) return pid;
    for (pid_t tid : tids) {
      // children_of reads this process's tasks; another's are read here.
      std::ifstream in{"/proc/" + std::to_string(pid) + "/task/" + std::to_string(tid) +
                       "/children"};
      for (pid_t grandchild; in >> grandchild;)
        todo.push_back(grandchild);
    }
  }
  return 0;
}

void close_on_exec_from(unsigned first) {
  if (::syscall(SYS_close_range, first, ~0U, close_range_cloexec) == 0) return;
  struct rlimit nofile {};
  rlim_t top = ::getrlimit(RLIMIT_NOFILE, &nofile) == 0 ? nofile.rlim_cur : 1024;
  for (rlim_t fd = first; fd < std::min<rlim_t>(top, 65536); ++fd)
    ::fcntl(static_cast<int>(fd), F_SETFD, FD_CLOEXEC);
}

void nap_while_ending(const cancel_token& cancel, std::chrono::milliseconds& wait) {
  if (cancel.canceled())
    std::this_thread::sleep_for(wait);
  else
    cancel.wait_for(wait);
  wait = std::min(wait * 2, std::chrono::milliseconds{50});
}

size_t poll_inputs(const int* fds, size_t n, int timeout_ms,
                   const std::function<void(size_t)>& on_ready) {
  std::vector<pollfd> pfds;
  std::vector<size_t> index;
  for (size_t i = 0; i < n; ++i)
    if (fds[i] >= 0) {
      pfds.push_back(pollfd{fds[i], POLLIN, 0});
      index.push_back(i);
    }
  if (pfds.empty()) return 0;
  int ready = ::poll(pfds.data(), static_cast<nfds_t>(pfds.size()), timeout_ms);
  for (size_t k = 0; ready > 0 && k < pfds.size(); ++k)
    if ((pfds[k].revents & (POLLIN | POLLHUP | POLLERR)) != 0) on_ready(index[k]);
  return pfds.size();
}

} // namespace detail

std::string process_outcome::describe() const {
  if (!started || !error.empty()) return error;
  if (signal != 0) {
    const char* name = ::strsignal(signal);
    auto text =
        "killed by signal " + std::to_string(signal) + " (" + (name ? name : "?") + ")";
    if (cpu_limit_hit > 0)
      text += " at its CPU time limit of " + std::to_string(cpu_limit_hit) + " s";
    return text;
  }
  return "exited with code " + std::to_string(exit_code);
}

std::vector<resource_limit> read_resource_limits(settings_reader& in) {
  std::vector<resource_limit> out;
  auto add = [&](const char* key, int resource) {
    auto set = in.integer(key, -1, 1, INT64_MAX - 1);
    if (set < 0) return;
    auto v = static_cast<uint64_t>(set);
    // CPU time: SIGXCPU at the limit ("CPU time limit exceeded"), SIGKILL a
    // second later; with both at the limit a run ended as a bare SIGKILL,
    // which reads like the OOM killer.
    auto hard = v;
    if (resource == RLIMIT_CPU) {
      // Not above the agent's own hard limit (systemd's LimitCPU=, say): a
      // child that is not root cannot raise it, and every run would fail.
      rlimit own{};
      hard = v + 1;
      if (::getrlimit(RLIMIT_CPU, &own) == 0 && own.rlim_max != RLIM_INFINITY)
        hard = std::min<uint64_t>(hard, own.rlim_max);
      v = std::min(v, hard);
    }
    out.push_back({resource, v, hard});
  };
  add("cpu_seconds", RLIMIT_CPU);
  add("address_space_bytes", RLIMIT_AS);
  add("open_files", RLIMIT_NOFILE);
  add("processes", RLIMIT_NPROC);
  add("file_size_bytes", RLIMIT_FSIZE);
  in.finish();
  return out;
}

std::string find_program(const std::string& program, const std::string& search_path) {
  if (program.empty()) return {};
  if (program.find('/') != std::string::npos)
    return is_executable_file(program) ? program : std::string{};
  size_t begin = 0;
  while (begin <= search_path.size()) {
    auto end = search_path.find(':', begin);
    if (end == std::string::npos) end = search_path.size();
    auto dir = search_path.substr(begin, end - begin);
    if (!dir.empty()) {
      auto candidate = dir + "/" + program;
      if (is_executable_file(candidate)) return candidate;
    }
    begin = end + 1;
  }
  return {};
}

process_outcome run_process(const process_spec& spec, log_sink& log,
                            const cancel_token& cancel,
                            const std::function<void(pid_t)>& on_start) {
  process_outcome out;
  if (spec.argv.empty() || spec.argv.front().empty()) {
    out.error = "no program given";
    return out;
  }
  if (cancel.canceled()) {
    out.canceled = true;
    out.error = "canceled before the program started";
    return out;
  }
  auto search = spec.search_path;
  if (search.empty()) {
    auto it = spec.env.find("PATH");
    search = it != spec.env.end() ? it->second : default_path;
  }
  // A relative path (`./deploy.sh`) is relative to the program's working
  // directory, as the exec after the chdir reads it, not to the agent's.
  auto& program = spec.argv.front();
  bool relative = program.front() != '/' && program.find('/') != std::string::npos;
  auto path = find_program(
      relative && !spec.cwd.empty() ? spec.cwd + "/" + program : program, search);
  if (path.empty()) {
    out.error =
        spec.argv.front().find('/') != std::string::npos
            ? "program '" + spec.argv.front() + "' does not exist or is not executable"
            : "program '" + spec.argv.front() + "' not found in " + search;
    return out;
  }

  // Everything the child touches is built now, before fork.
  std::vector<char*> argv;
  for (auto& a : spec.argv)
    argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  // Every process the program starts inherits the tracking entry, which
  // is how the ones that leave its session are found at its end.
  const auto tracking = next_tracking_entry();
  std::vector<std::string> env_strings{tracking};
  for (auto& [k, v] : spec.env)
    if (k != tracking_variable) env_strings.push_back(k + "=" + v);
  std::vector<char*> envp;
  for (auto& e : env_strings)
    envp.push_back(const_cast<char*>(e.c_str()));
  envp.push_back(nullptr);
  const char* cwd = spec.cwd.empty() ? nullptr : spec.cwd.c_str();

  int out_pipe[2] = {-1, -1};
  int err_pipe[2] = {-1, -1};
  int exec_pipe[2] = {-1, -1};
  if (::pipe2(out_pipe, O_CLOEXEC) != 0 || ::pipe2(err_pipe, O_CLOEXEC) != 0 ||
      ::pipe2(exec_pipe, O_CLOEXEC) != 0) {
    out.error = std::string{"cannot create pipes: "} + std::strerror(errno);
    for (int* fd : {&out_pipe[0], &out_pipe[1], &err_pipe[0], &err_pipe[1], &exec_pipe[0],
                    &exec_pipe[1]})
      close_fd(*fd);
    return out;
  }

  detail::become_subreaper();
  pid_t agent_pid = ::getpid();
  pid_t pid = detail::fork_tracked();
  if (pid < 0) {
    out.error = std::string{"cannot fork: "} + std::strerror(errno);
    for (int* fd : {&out_pipe[0], &out_pipe[1], &err_pipe[0], &err_pipe[1], &exec_pipe[0],
                    &exec_pipe[1]})
      close_fd(*fd);
    return out;
  }
  if (pid == 0) {
    // Child: async-signal-safe calls only. A session of its own: every
    // process the plan starts stays outside the agent's session, which is
    // how the agent tells them from the embedding program's own children.
    // If the agent dies (kill -9, OOM), the plan's process dies with it
    // rather than run on unwatched.
    if (!detail::detach_child(agent_pid)) ::_exit(128 + SIGKILL);
    int devnull = ::open("/dev/null", O_RDONLY);
    if (devnull >= 0) ::dup2(devnull, 0);
    ::dup2(out_pipe[1], 1);
    ::dup2(err_pipe[1], 2);
    // Nothing but stdin, stdout and stderr reaches the plan: descriptors the
    // agent was started with (a launcher's, a config file's) close at exec.
    // `exec_pipe[1]` stays usable until then to report a failure.
    detail::close_on_exec_from(3);
    if (cwd && ::chdir(cwd) != 0) child_fail(exec_pipe[1], 1);
    for (auto& l : spec.limits) {
      struct rlimit rl {
        static_cast<rlim_t>(l.soft), static_cast<rlim_t>(l.hard)
      };
      if (::setrlimit(l.resource, &rl) != 0) child_fail(exec_pipe[1], 2);
    }
    ::execve(path.c_str(), argv.data(), envp.data());
    child_fail(exec_pipe[1], 3);
  }

  // Parent. No kill of the group comes before the exec (or its failure)
  // is read below, so the child has made its session and group by then.
  close_fd(out_pipe[1]);
  close_fd(err_pipe[1]);
  close_fd(exec_pipe[1]);
  out.pid = pid;
  const program_mark mark{pid, tracking};

  child_failure failure;
  ssize_t n;
  do {
    n = ::read(exec_pipe[0], &failure, sizeof failure);
  } while (n < 0 && errno == EINTR);
  close_fd(exec_pipe[0]);
  if (n == static_cast<ssize_t>(sizeof failure)) {
    int status = 0;
    ::waitpid(pid, &status, 0);
    detail::forget_program(pid);
    close_fd(out_pipe[0]);
    close_fd(err_pipe[0]);
    const char* what = failure.stage == 1   ? "cannot enter working directory '"
                       : failure.stage == 2 ? "cannot apply resource limits for '"
                                            : "cannot execute '";
    auto subject = failure.stage == 1 ? spec.cwd : path;
    out.error = what + subject + "': " + std::strerror(failure.error);
    if (failure.stage == 3 && failure.error == ENOENT)
      if (auto interpreter = script_interpreter(path); !interpreter.empty())
        out.error = "cannot execute '" + path + "': its interpreter '" + interpreter +
                    "' (the #! line) does not exist";
    return out;
  }
  out.started = true;
  if (on_start) on_start(pid);

  int fds[2] = {out_pipe[0], err_pipe[0]};
  const log_stream streams[2] = {log_stream::out, log_stream::err};
  bool reaped = false;
  bool term_sent = false;
  bool kill_sent = false;
  steady::time_point term_at{};
  steady::time_point reaped_at{};
  std::vector<char> buf(64 * 1024);
  std::chrono::milliseconds idle_wait{1};

  for (;;) {
    auto open = detail::poll_inputs(fds, 2, 50, [&](size_t i) {
      auto got = ::read(fds[i], buf.data(), buf.size());
      if (got > 0)
        log.write(streams[i], std::string_view{buf.data(), static_cast<size_t>(got)});
      else if (got == 0 || (errno != EINTR && errno != EAGAIN))
        close_fd(fds[i]);
    });
    if (open == 0 && reaped) break;
    if (open == 0) detail::nap_while_ending(cancel, idle_wait);
    if (!reaped) {
      int status = 0;
      rusage usage{};
      auto got = ::wait4(pid, &status, WNOHANG, &usage);
      if (got == pid || (got < 0 && errno == ECHILD)) {
        reaped = true;
        reaped_at = steady::now();
        if (got != pid)
          // Collected by the kernel (SIGCHLD ignored) or by another
          // waitpid(-1) in this process: it ended, its status is unknown.
          out.error = detail::status_collected_elsewhere;
        else if (WIFEXITED(status))
          out.exit_code = WEXITSTATUS(status);
        else if (WIFSIGNALED(status)) {
          out.signal = WTERMSIG(status);
          if (out.signal == SIGKILL && !kill_sent)
            out.cpu_limit_hit = cpu_limit_reached(spec, usage);
        }
        // Whatever the program left behind in its group dies with it, and
        // what left the group, so that none holds the pipes open.
        ::kill(-pid, SIGKILL);
        kill_escaped(mark);
      }
    }
    if (!reaped && !term_sent && cancel.canceled()) {
      out.canceled = true;
      term_sent = true;
      term_at = steady::now();
      ::kill(-pid, SIGTERM);
    }
    if (!reaped && term_sent && !kill_sent &&
        steady::now() - term_at >= spec.kill_grace) {
      kill_sent = true;
      ::kill(-pid, SIGKILL);
    }
    if (reaped && steady::now() - reaped_at > pipe_drain_limit) break;
  }
  close_fd(fds[0]);
  close_fd(fds[1]);
  if (out.started) end_leftovers(mark);
  detail::forget_program(pid); // the loop above ends only once it reaped the program
  reap_adopted_orphans();
  return out;
}

size_t reap_adopted_orphans() {
  // A subreaper's adopted orphans are children of its main thread. Those
  // in the agent's own session are the embedding program's own children
  // (plans' processes never are, see `run_process`), its to wait for.
  auto own = ::getsid(0);
  size_t reaped = 0;
  for (pid_t child : children_of(::getpid())) {
    if (is_live_program(child) || !is_zombie(child)) continue;
    auto sid = ::getsid(child);
    if (sid < 0 || sid == own) continue;
    int status = 0;
    if (::waitpid(child, &status, WNOHANG) == child) ++reaped;
  }
  return reaped;
}

} // namespace polymesh::sdk
