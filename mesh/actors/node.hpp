// `mesh_node`: one running mesh. It opens the store, rebuilds every agent,
// unfinished run and timer from it, spawns the actors and routines, and
// bootstraps the admin token. The HTTP front (mesh/http) talks to the
// handles in `context()`.
//
// Threads: construct, `tick` and `shutdown` from one controlling thread
// (main, or a test). `context()` may be read from any thread after `start`.
#pragma once

#include "mesh/actors/context.hpp"
#include "mesh/config/mesh_config.hpp"
#include "mesh/domain/clock.hpp"
#include "mesh/store/store.hpp"

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/expected.hpp>
#include <memory>
#include <string>
#include <vector>

namespace polymesh {

/// Refuses a POLYMESH_ADMIN_TOKEN (when set and not empty) shorter than 16
/// characters; meshd checks it before it touches its data directory.
[[nodiscard]] caf::error check_admin_token_env();

class mesh_node {
public:
  /// Starts a mesh. `clk` must outlive the node. On failure nothing keeps
  /// running and the error names the cause (config, store, data dir).
  [[nodiscard]] static caf::expected<std::unique_ptr<mesh_node>>
  start(const mesh_config& cfg, const polymesh::clock& clk);

  ~mesh_node();
  mesh_node(const mesh_node&) = delete;
  mesh_node& operator=(const mesh_node&) = delete;

  [[nodiscard]] const context_ptr& context() const { return ctx_; }
  [[nodiscard]] caf::actor_system& system() { return *system_; }

  /// Where the generated admin token was written ("" when it came from
  /// `POLYMESH_ADMIN_TOKEN` or already existed).
  [[nodiscard]] const std::string& admin_token_file() const { return admin_token_file_; }

  /// What start-up restored, for the log line.
  struct restore_stats {
    size_t agents = 0;
    size_t runs = 0;
    size_t tokens = 0;
    double seconds = 0;
  };
  [[nodiscard]] const restore_stats& restored() const { return restored_; }

  /// Fires every due timer, sweeps the queue once and forgets agents past
  /// `agents.forget_after`, and waits until each routine has done so. For
  /// tests that drive a manual clock.
  void tick();

  /// Prunes finished runs past retention once; returns how many.
  size_t prune_once();

  /// Begins shutdown: refuses new work and answers every waiting long-poll.
  /// Call before stopping the HTTP server.
  void begin_shutdown();
  /// Stops every actor and waits for them. Idempotent.
  void shutdown();

private:
  mesh_node() = default;
  caf::error boot(const mesh_config& cfg, const polymesh::clock& clk);
  caf::error bootstrap_admin_token(const std::vector<token_record>& existing);
  /// Warns when DATA_DIR/admin.token holds another token than the bootstrap
  /// admin token's (`token_hash`, POLYMESH_ADMIN_TOKEN's now or at an
  /// earlier start): one generated before, which no longer works.
  void warn_of_stale_admin_token_file(const std::string& token_hash) const;
  /// An outage must not end agents' sessions: every agent token that was
  /// valid when meshd last ran (`snap.alive_at`) and has expired since, or
  /// would within `agents.offline_after` (at most `agents.token_ttl`), is
  /// honoured that long from `now`, which is as long as an agent has to be
  /// heard from anyway. Changes them in `snap` and returns them, to store.
  [[nodiscard]] std::vector<token_record>
  keep_agents_sessions_through_outage(snapshot& snap, timestamp now) const;
  void release_lock();

  std::unique_ptr<caf::actor_system_config> system_config_;
  std::unique_ptr<caf::actor_system> system_;
  context_ptr ctx_;
  std::string admin_token_file_;
  restore_stats restored_;
  bool down_ = false;
  /// Hold an exclusive `flock` on `<data_dir>/meshd.lock` and on
  /// `<database>.lock` while running.
  int lock_fd_ = -1;
  int db_lock_fd_ = -1;
  /// The `flock` on the database file itself (any path to it).
  int db_file_lock_fd_ = -1;
};

} // namespace polymesh
