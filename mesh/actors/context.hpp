// What every meshd actor may reach: configuration, the clock, the token
// cache and the handles of the singleton actors.
//
// Ownership: `mesh_node` creates one context, fills the handles while it
// spawns the singletons (each is set before any actor that uses it is
// spawned) and never changes them afterwards, so actors read them without
// locks. It clears them at shutdown so no handle outlives the actor system.
#pragma once

#include "mesh/actors/token_cache.hpp"
#include "mesh/config/mesh_config.hpp"
#include "mesh/domain/clock.hpp"
#include "mesh/domain/metrics.hpp"
#include "mesh/domain/run_timers.hpp"

#include <atomic>
#include <caf/actor.hpp>
#include <memory>
#include <mutex>
#include <string>

namespace polymesh {

/// Whether the store's last commit failed, and why: written by the store
/// actor after each commit, read by `/readyz` from HTTP threads.
class store_health {
public:
  void commit_failed(std::string why) {
    std::lock_guard<std::mutex> guard{mtx_};
    error_ = std::move(why);
    failing_.store(true, std::memory_order_release);
  }
  void commit_succeeded() {
    if (!failing_.load(std::memory_order_acquire)) return;
    std::lock_guard<std::mutex> guard{mtx_};
    error_.clear();
    failing_.store(false, std::memory_order_release);
  }
  /// The last commit's error, or "" when it succeeded.
  [[nodiscard]] std::string error() const {
    if (!failing_.load(std::memory_order_acquire)) return {};
    std::lock_guard<std::mutex> guard{mtx_};
    return error_;
  }

private:
  std::atomic<bool> failing_{false};
  mutable std::mutex mtx_;
  std::string error_;
};

struct mesh_context {
  mesh_config config;
  run_timing timing;
  const polymesh::clock* clock = nullptr;
  std::unique_ptr<token_cache> tokens;
  /// The group-committing writer, and how its last commit went.
  caf::actor store;
  store_health store_status;
  /// What `GET /metrics` shows of runs and the store; counted by the actors.
  mesh_metrics metrics;
  /// The reader: queries and answers for runs that are no longer live.
  caf::actor query;
  /// A second reader, of its own connection, for listings (runs, tokens),
  /// which may walk many rows: a slow one holds up other listings only, not
  /// point reads, late reports or `/readyz`.
  caf::actor lists;
  /// Registries: route requests to per-run and per-agent actors.
  caf::actor runs;
  caf::actor agents;
  caf::actor token_registry;
  /// Routines.
  caf::actor assignment;
  caf::actor liveness;
  caf::actor expiry;
  caf::actor retention;
  /// Set once shutdown begins: long-polls return at once, new work is refused.
  std::atomic<bool> stopping{false};

  [[nodiscard]] timestamp now() const { return clock->now(); }

  /// Since when agents could reach the mesh without a break: its start, or
  /// the end of the last stall the timer routines saw (the process stopped,
  /// its host suspended). The windows that wait on an agent (its offline
  /// timeout, a run's lease, expiry and cancel grace) count from no earlier
  /// than this: a mesh that was not listening heard nobody.
  /// Never later than now. meshd's clock never goes back (`system_clock`
  /// catches up with a step of the wall clock gradually); a test's
  /// `manual_clock` may be set back.
  [[nodiscard]] timestamp listening_since() const {
    return std::min(from_unix_ms(listening_since_ms_.load(std::memory_order_acquire)),
                    now());
  }
  /// Held by a timer routine while it looks at the clock (see `fire_due`).
  std::mutex looks;
  /// Moves `listening_since` to `at` unless it is later; returns what it was.
  timestamp listening_again(timestamp at) {
    auto ms = to_unix_ms(at);
    auto seen = listening_since_ms_.load(std::memory_order_acquire);
    while (seen < ms && !listening_since_ms_.compare_exchange_weak(seen, ms)) {
    }
    return from_unix_ms(seen);
  }
  /// The run timing rules as they stand now (`windows_from` filled in).
  [[nodiscard]] run_timing run_timing_now() const {
    auto t = timing;
    t.windows_from = listening_since();
    return t;
  }

  /// The next run's `seq`: strictly increasing, taken by the run registry
  /// for runs submitted and by run actors for the retries they make. Set
  /// from the store's highest before the run registry starts.
  [[nodiscard]] uint64_t next_run_seq() {
    return last_run_seq.fetch_add(1, std::memory_order_relaxed) + 1;
  }
  std::atomic<uint64_t> last_run_seq{0};

  /// The wall clock's lead over `clock` last logged (ms), shared by the
  /// two timer routines so that a step is logged once.
  std::atomic<int64_t> logged_lead_ms{0};

private:
  std::atomic<int64_t> listening_since_ms_{0};
};

using context_ptr = std::shared_ptr<mesh_context>;

} // namespace polymesh
