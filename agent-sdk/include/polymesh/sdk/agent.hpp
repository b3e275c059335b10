// The agent runtime: registers with the mesh, keeps one long-poll
// outstanding, runs up to `capacity` runs in parallel (one thread each),
// ships their logs and results, and drains on shutdown.
//
// Use it as a daemon (`mesh-agent` is a thin `main` around it) or embedded in
// another program: construct, `start()`, and later `drain()` + `wait()`. The
// runtime owns one thread of its own plus one worker and one log shipper per
// run in flight.
//
// Guarantees:
// - A run's result is kept and sent again (exponential backoff with jitter)
//   until the mesh accepts it or refuses it for good; it is never reported
//   twice with two different outcomes.
// - Log chunks are numbered per run, sent in order, and sent again with the
//   same numbers after a failure; memory per run is bounded by
//   `log_buffer_bytes`. Once the plan has returned, its last log chunks and
//   artifacts are retried for `upload_retry_for` at most, then given up
//   (with a warning), and the result is reported all the same.
// - `drain()` stops taking runs at once, lets running ones finish until
//   `drain_deadline`, cancels the rest (`canceled/agent_shutdown`), then
//   deregisters. `cancel_all()` skips the waiting.
//
// Thread-safety: all members may be called from any thread, except that the
// destructor must not race with the other members, and that `wait`,
// `wait_for` and the destructor must not be called from a plan's `run`
// (they wait for that run to end).
#pragma once

#include "polymesh/sdk/plan.hpp"

#include <atomic>
#include <chrono>
#include <filesystem>
#include <map>
#include <memory>
#include <string>

namespace polymesh::sdk {

/// The plans an agent offers, by name.
using plan_set = std::map<std::string, std::shared_ptr<plan>>;

struct agent_config {
  /// `http://host:port` of the mesh (or `https://`, optionally with a path
  /// prefix).
  std::string mesh_url;
  /// For an `https://` mesh: a PEM file of the certificate authorities to
  /// trust instead of the system's (a private CA). Empty: the system's.
  std::string mesh_ca_file;
  /// A registration token (`POST /v1/tokens` with kind `registration`).
  std::string registration_token;
  /// Unique agent name; 1..63 of [A-Za-z0-9._-], alphanumeric at both ends.
  std::string name;
  /// Labels the mesh's selectors match, e.g. `{"env": "prod"}`.
  std::map<std::string, std::string> labels;
  /// Runs executed in parallel.
  int64_t capacity = 1;
  /// Parent of the per-run directories; "" means `$TMPDIR/polymesh-agent-<name>`.
  std::filesystem::path work_root;
  /// How long `drain()` lets running runs finish before canceling them.
  std::chrono::milliseconds drain_deadline{60000};
  /// Between SIGTERM and SIGKILL when a run's processes are canceled.
  std::chrono::milliseconds kill_grace{10000};
  /// Largest log chunk sent to the mesh (smaller when the mesh's body limit
  /// needs it, see docs/agent.md).
  size_t log_chunk_bytes = 16 * 1024;
  /// Unacknowledged log bytes held per run before the plan's writes wait.
  size_t log_buffer_bytes = 1024 * 1024;
  /// A run's log stops here (a note in the log says so and how much was
  /// dropped); 0 means no limit.
  size_t log_max_run_bytes = 100 * 1024 * 1024;
  /// How long output may wait before a partial chunk is sent.
  std::chrono::milliseconds log_flush_interval{500};
  /// Long-poll wait asked of the mesh (the mesh may grant less).
  std::chrono::milliseconds poll_wait{30000};
  /// Timeout of every call other than the long-poll.
  std::chrono::milliseconds request_timeout{30000};
  /// Retry delays: the first, and the cap of the exponential growth.
  std::chrono::milliseconds backoff_initial{500};
  std::chrono::milliseconds backoff_max{30000};
  /// How long a finished run's last log chunks, progress message and
  /// artifacts are retried while the mesh does not take them (no answer, a
  /// 5xx such as meshd's 500 when its disk is short of room), counted from
  /// when the plan returned; no retry starts after it. Then the agent gives
  /// them up with a warning naming the run and what was not sent, and
  /// reports the run's result, so that the run does not hold its slot for
  /// good. A cancel of the run, or the mesh answering that it no longer has
  /// the run, ends the retries at once. 0 (no retry) to 1 day.
  std::chrono::milliseconds upload_retry_for{std::chrono::minutes{5}};
  /// Once the drain's canceled plans have all returned (a plan that cleans
  /// up after its cancel still sends what it made), how long unsent logs,
  /// artifacts and results keep being retried before the
  /// agent gives up and exits (the mesh then ends those runs itself:
  /// `canceled/agent_shutdown`, or `error/agent_lost`).
  std::chrono::milliseconds shutdown_result_grace{30000};
  /// Then how long the deregistration may take in all (up to three tries)
  /// before the agent exits anyway (the mesh then marks it offline).
  std::chrono::milliseconds deregister_timeout{10000};
  /// Reported to the mesh.
  std::string version = "0.1.0";
  /// "" means gethostname().
  std::string hostname;
  /// `start()` makes the process non-dumpable (`PR_SET_DUMPABLE` 0), so
  /// that plans, which run as its user, cannot read its memory (the
  /// tokens) or environment through /proc or a debugger. True leaves it
  /// dumpable (core dumps, attaching gdb) at that cost.
  bool stay_dumpable = false;

  /// Returns "" or the first problem, naming the field.
  [[nodiscard]] std::string validate() const;
  /// Creates the work root (the default one for "") if missing and checks
  /// that run directories can be made in it; returns "" or the problem,
  /// naming `work_dir`. Without it, `start()` finds the same problems and
  /// stops the agent with them (`agent_stats::fatal_error`); this finds
  /// them before, for a config check.
  [[nodiscard]] std::string prepare_work_root() const;
};

/// A snapshot for monitoring and tests.
struct agent_stats {
  /// Registered and polling.
  bool registered = false;
  bool draining = false;
  /// The thread has ended.
  bool stopped = false;
  /// The id of the current registration; empty while not registered (before
  /// the first, between a lost token and the next, after deregistering).
  std::string agent_id;
  size_t running = 0;
  uint64_t started = 0;
  uint64_t finished = 0;
  /// The error that stopped the agent, if any (e.g. the token was refused).
  std::string fatal_error;
};

class agent {
public:
  /// Throws std::invalid_argument when `cfg.validate()` finds a problem
  /// (its text) or a plan pointer is null.
  agent(agent_config cfg, plan_set plans);
  /// Cancels everything still running and waits (like `cancel_all` + `wait`).
  ~agent();

  agent(const agent&) = delete;
  agent& operator=(const agent&) = delete;

  /// Starts the runtime thread; returns at once. Later calls do nothing.
  void start();
  /// Graceful shutdown as described above; returns at once. Before
  /// `start`, it makes `start` stop at once, without registering.
  void drain();
  /// Shutdown without waiting: cancels every run now (`agent_shutdown`).
  void cancel_all();
  /// Blocks until the runtime thread has ended (after a drain, or after a
  /// fatal error such as a refused registration token); at once when
  /// `start` was never called.
  void wait();
  /// Waits up to `d`; true when the runtime has ended (or never started).
  bool wait_for(std::chrono::milliseconds d);

  [[nodiscard]] agent_stats stats() const;

private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

} // namespace polymesh::sdk
