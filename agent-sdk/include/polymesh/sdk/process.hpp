// Runs one program for a plan, the SealCI way: encapsulated and always
// cleaned up.
//
// The program is started with fork/exec from an argv (never through a shell
// unless the plan puts `/bin/sh -c` in the argv itself), in a session (and
// process group) of its own, without a controlling terminal, with exactly
// the environment given, in the given working
// directory, with stdin from /dev/null and optional rlimits. Its stdout and
// stderr are copied to the log sink in the order they arrive. When the
// cancellation token fires, the whole group gets SIGTERM and, after the
// grace period, SIGKILL. When the program exits, whatever is left of its
// group is killed too, and so is every process that left the group but
// still carries the program's `POLYMESH_TRACKING_ID` environment entry
// (`setsid`, a daemonizing script), so no process outlives the run unless it
// was started without that entry on purpose.
//
// Thread-safety: `run_process` may be called from many threads at once; it
// blocks the calling thread until the program and its pipes are done.
#pragma once

#include "polymesh/sdk/fwd.hpp"
#include "polymesh/sdk/plan.hpp"

#include <chrono>
#include <functional>
#include <map>
#include <string>
#include <sys/types.h>
#include <vector>

namespace polymesh::sdk {

/// One resource limit applied in the child (`setrlimit`).
struct resource_limit {
  /// An `RLIMIT_*` constant, e.g. `RLIMIT_AS` or `RLIMIT_NOFILE`.
  int resource = 0;
  uint64_t soft = 0;
  uint64_t hard = 0;
};

/// The environment variable `run_process` gives each program (whatever
/// `process_spec::env` says), unique per call: the processes that carry it
/// are the program's, and are ended with it.
inline constexpr const char* tracking_variable = "POLYMESH_TRACKING_ID";

struct process_spec {
  /// argv[0] is the program: a path when it contains '/' (a relative one is
  /// relative to `cwd`), else it is looked up in `search_path`.
  /// REQUIRES: not empty.
  std::vector<std::string> argv;
  /// The complete environment of the program; nothing is inherited
  /// (`tracking_variable` is added, and replaces an entry of that name).
  std::map<std::string, std::string> env;
  /// Directories searched for argv[0], ':'-separated. Empty means the PATH
  /// in `env`, or `/usr/local/bin:/usr/bin:/bin` when there is none.
  std::string search_path;
  /// Working directory. REQUIRES: exists.
  std::string cwd;
  /// Between SIGTERM and SIGKILL on cancellation.
  std::chrono::milliseconds kill_grace{5000};
  std::vector<resource_limit> limits;
};

struct process_outcome {
  /// False when the program could not be started (see `error`).
  bool started = false;
  /// The exit status, or -1 when a signal ended it.
  int exit_code = -1;
  /// The signal that ended it, or 0.
  int signal = 0;
  /// Whether the token fired while it ran.
  bool canceled = false;
  /// The `RLIMIT_CPU` hard limit in seconds when the kernel's SIGKILL at
  /// that limit ended it (the program had caught or ignored the SIGXCPU at
  /// the soft one), else 0.
  uint64_t cpu_limit_hit = 0;
  pid_t pid = -1;
  /// Why it could not start or, when it started, why its exit status is
  /// unknown (something else in this process collected it: SIGCHLD
  /// ignored, or a `waitpid(-1)`); no trailing period.
  std::string error;

  /// Exited on its own with status 0.
  [[nodiscard]] bool success() const { return started && signal == 0 && exit_code == 0; }
  /// "exited with code 3", "killed by signal 9 (SIGKILL)" (and, when
  /// `cpu_limit_hit`, " at its CPU time limit of N s"), or `error`.
  [[nodiscard]] std::string describe() const;
};

/// The limits a config's `limits` map sets (`in` reads that map, which may
/// be absent): `cpu_seconds` (RLIMIT_CPU; SIGXCPU at the limit, SIGKILL a
/// second later), `address_space_bytes` (RLIMIT_AS), `open_files`
/// (RLIMIT_NOFILE), `processes` (RLIMIT_NPROC, per user), `file_size_bytes`
/// (RLIMIT_FSIZE). Throws `config_error` naming a bad or unknown key.
[[nodiscard]] std::vector<resource_limit> read_resource_limits(settings_reader& in);

/// Resolves `program` like execvp would, in `search_path`; "" if not found
/// or not executable.
[[nodiscard]] std::string find_program(const std::string& program,
                                       const std::string& search_path);

/// Runs the program to completion (or cancellation). `on_start` is called
/// with the child's pid once it runs (tests use it to check the process is
/// gone afterwards).
[[nodiscard]] process_outcome
run_process(const process_spec& spec, log_sink& log, const cancel_token& cancel,
            const std::function<void(pid_t)>& on_start = {});

/// Reaps the zombies of processes plans left behind that exited after their
/// run (this process is their subreaper; the kernel gives them to its main
/// thread). Never touches a program `run_process` is still running, nor
/// children in this process's own session (an embedding program's: the
/// programs `run_process` starts, and everything they start, are in
/// sessions of their own). Returns how many were reaped.
/// `run_process` calls it at each run's end; the agent also calls it after
/// each poll, so an idle agent does not collect zombies (they count against
/// the user's process limit).
size_t reap_adopted_orphans();

} // namespace polymesh::sdk
