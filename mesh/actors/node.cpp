#include "mesh/actors/node.hpp"

#include "mesh/actors/messages.hpp"
#include "mesh/actors/query_actor.hpp"
#include "mesh/actors/registries.hpp"
#include "mesh/actors/store_actor.hpp"
#include "mesh/domain/error.hpp"
#include "mesh/domain/ids.hpp"
#include "mesh/domain/log.hpp"
#include "routines/assignment/assignment_routine.hpp"
#include "routines/retention/retention_routine.hpp"
#include "routines/timers/timer_routine.hpp"

#include <algorithm>
#include <caf/scoped_actor.hpp>
#include <caf/send.hpp>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <limits>
#include <string_view>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

namespace polymesh {

namespace {

/// Creates `dir` and its parents (mode 0700 for the leaf).
caf::error make_dirs(const std::string& dir, const std::string& field = "data_dir") {
  std::string partial;
  for (size_t i = 0; i <= dir.size(); ++i) {
    if (i == dir.size() || dir[i] == '/') {
      if (!partial.empty() && ::mkdir(partial.c_str(), 0700) != 0 && errno != EEXIST)
        return make_error(errc::invalid_argument,
                          "cannot create " +
                              std::string{field == "data_dir" ? "data " : ""} +
                              "directory '" + partial + "': " + std::strerror(errno),
                          field);
    }
    if (i < dir.size()) partial += dir[i];
  }
  return {};
}

/// Opens `path` and takes an exclusive `flock` on it; the kernel drops it
/// when the process ends, even by SIGKILL. `in_use` is the error's message
/// when another process holds it; `what` names the file in one it cannot
/// open ("'<path>'" when empty).
caf::expected<int> take_lock(const std::string& path, const std::string& field,
                             const std::string& in_use, const std::string& what = {}) {
  // Read-only is enough for `flock`: a database meshd may read but not
  // write gets the store's own words for that, not "cannot open".
  int fd = ::open(path.c_str(), O_RDONLY | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) {
    int os = errno;
    auto hint = database_permission_hint(os);
    if (what.empty())
      return make_error(errc::invalid_argument,
                        "cannot open '" + path + "': " + std::strerror(os) + hint, field);
    return make_error(errc::invalid_argument,
                      what + ": cannot open it: " + std::strerror(os) + hint);
  }
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    ::close(fd);
    return make_error(errc::conflict, in_use, field);
  }
  return fd;
}

/// Sends `msg` to `dest` and waits for the answer (start-up and tests only).
template <class T, class... Ts>
caf::expected<T> ask(caf::actor_system& sys, const caf::actor& dest, Ts&&... xs) {
  caf::scoped_actor self{sys};
  caf::expected<T> out{caf::error{}};
  self->request(dest, caf::infinite, std::forward<Ts>(xs)...)
      .receive([&](T& x) { out = std::move(x); },
               [&](caf::error& err) { out = std::move(err); });
  return out;
}

} // namespace

caf::expected<std::unique_ptr<mesh_node>> mesh_node::start(const mesh_config& cfg,
                                                           const polymesh::clock& clk) {
  std::unique_ptr<mesh_node> node{new mesh_node};
  if (auto err = node->boot(cfg, clk)) {
    node->shutdown();
    return err;
  }
  return node;
}

caf::error mesh_node::boot(const mesh_config& cfg, const polymesh::clock& clk) {
  auto t0 = std::chrono::steady_clock::now();
  if (auto err = make_dirs(cfg.data_dir)) return err;
  // One meshd per data directory: two writers would each believe they own
  // every run. The lock dies with the process, so a crash leaves none behind.
  auto lock =
      take_lock(cfg.data_dir + "/meshd.lock", "data_dir",
                "data directory '" + cfg.data_dir + "' is in use by another meshd");
  if (!lock) return lock.error();
  lock_fd_ = *lock;
  // And one meshd per database: `store.path` could point two data
  // directories at one file. The lock sits beside the database (SQLite's
  // own locks are POSIX locks on the file itself, which any close of
  // another descriptor to it would drop).
  auto db = cfg.database_path();
  auto same_file = [](const std::string& a, const std::string& b) {
    std::error_code ec;
    return std::filesystem::absolute(a, ec).lexically_normal() ==
           std::filesystem::absolute(b, ec).lexically_normal();
  };
  // (A database named `<data_dir>/meshd` has its lock taken already.)
  if (!same_file(db + ".lock", cfg.data_dir + "/meshd.lock")) {
    if (auto err =
            make_dirs(std::filesystem::path{db}.parent_path().string(), "store.path"))
      return err;
    auto db_lock = take_lock(db + ".lock", "store.path",
                             "database '" + db + "' is in use by another meshd");
    if (!db_lock) return db_lock.error();
    db_lock_fd_ = *db_lock;
  }
  // The locks above go by the paths given; a symlink or a hard link to
  // another meshd's database passes them (and a hard link has a WAL of its
  // own: two writers, one of them reading an old state). So the database
  // file itself is locked too. Closed only after the store (closing a
  // descriptor of the file drops this process's POSIX locks on it, SQLite's).
  // (A file meshd's user may not open is named as the store names it: the
  // default database is no `store.path` the user set.)
  auto file_lock = take_lock(db, "store.path",
                             "database '" + db +
                                 "' is in use by another meshd (it is the same file as "
                                 "that meshd's database, through a link)",
                             "database '" + db + "'");
  if (!file_lock) return file_lock.error();
  db_file_lock_fd_ = *file_lock;
  store_options wopts;
  wopts.synchronous = cfg.store_synchronous;
  wopts.secure_delete = cfg.store_secure_delete;
  wopts.prune_hold = cfg.retention_max_hold;
  auto writer = open_sqlite_store(cfg.database_path(), wopts);
  if (!writer) return writer.error();
  // A deregistered agent's name stays its own until `agents.forget_after`
  // forgets it, as while meshd runs: a token scoped elsewhere cannot take it.
  timestamp deregistered_since{};
  if (cfg.forget_after.count() > 0)
    deregistered_since =
        clk.now() -
        std::chrono::duration_cast<std::chrono::milliseconds>(cfg.forget_after);
  auto snap = (*writer)->load(deregistered_since);
  if (!snap) return snap.error();
  // Rows of agents forgotten before (earlier versions kept them for ever;
  // the registry deletes those it forgets while meshd runs).
  if (cfg.forget_after.count() > 0) {
    auto began = std::chrono::steady_clock::now();
    auto deleted = (*writer)->apply(write_batch{delete_forgotten_agents{
        deregistered_since, std::numeric_limits<int64_t>::max()}});
    if (!deleted) return deleted.error();
    // About 1 s per 100,000 rows, once: the start is not silent for nothing.
    auto took = std::chrono::duration_cast<std::chrono::milliseconds>(
        std::chrono::steady_clock::now() - began);
    if (took >= std::chrono::milliseconds{500})
      log(log_level::info,
          "deleted the rows of agents forgotten while an earlier meshd kept them, in " +
              std::to_string(took.count()) + " ms (once)");
  }
  store_options ropts = wopts;
  ropts.read_only = true;
  auto reader = open_sqlite_store(cfg.database_path(), ropts);
  if (!reader) return reader.error();
  auto lister = open_sqlite_store(cfg.database_path(), ropts);
  if (!lister) return lister.error();

  system_config_ = std::make_unique<caf::actor_system_config>();
  system_config_->set("logger.verbosity", caf::atom("quiet"));
  system_config_->set("logger.console", caf::atom("none"));
  // Checked against {sharing, stealing} when the config was loaded.
  system_config_->set("scheduler.policy", cfg.actor_scheduler == "stealing"
                                              ? caf::atom("stealing")
                                              : caf::atom("sharing"));
  system_ = std::make_unique<caf::actor_system>(*system_config_);
  auto& sys = *system_;

  ctx_ = std::make_shared<mesh_context>();
  ctx_->config = cfg;
  ctx_->timing.delivery_lease = cfg.delivery_lease;
  ctx_->timing.result_expiry = cfg.result_expiry;
  ctx_->timing.cancel_grace = cfg.cancel_grace;
  ctx_->clock = &clk;
  ctx_->listening_again(clk.now());
  ctx_->tokens = std::make_unique<token_cache>(clk);
  auto now = clk.now();
  auto kept_alive = keep_agents_sessions_through_outage(*snap, now);
  for (auto& t : snap->tokens)
    if (!t.revoked_at && (!t.expires_at || *t.expires_at > now)) {
      ctx_->tokens->put(t);
      ++restored_.tokens;
    }

  // Each handle is set before anything that uses it is spawned.
  ctx_->store = spawn_store_actor(sys, ctx_, std::move(*writer),
                                  static_cast<size_t>(cfg.group_commit_max));
  ctx_->query = spawn_query_actor(sys, ctx_, std::move(*reader));
  ctx_->lists = spawn_query_actor(sys, ctx_, std::move(*lister));
  ctx_->liveness = spawn_timer_routine(sys, ctx_, "liveness");
  ctx_->expiry = spawn_timer_routine(sys, ctx_, "expiry");
  ctx_->assignment = spawn_assignment_routine(sys, ctx_);
  ctx_->retention = spawn_retention_routine(sys, ctx_);
  ctx_->token_registry = spawn_token_registry(sys, ctx_);
  ctx_->agents = spawn_agent_registry(sys, ctx_);
  ctx_->runs = spawn_run_registry(sys, ctx_, snap->max_seq);

  if (auto err = bootstrap_admin_token(snap->tokens)) return err;
  if (!kept_alive.empty()) {
    write_batch batch;
    for (auto& t : kept_alive)
      batch.emplace_back(put_token{t});
    auto out = ask<write_outcomes>(sys, ctx_->store, write_atom::value, std::move(batch));
    if (!out) return out.error();
  }

  // Agents first: restored runs re-attach to their agent's actor.
  std::unordered_map<std::string, caf::actor> agent_actors;
  // Agents that left keep their names for their scope until forgotten,
  // without an actor each (a restart stays fast with many of them).
  caf::anon_send(ctx_->agents, admit_atom::value, reserve_atom::value,
                 std::move(snap->left));
  for (auto& a : snap->agents) {
    auto id = a.id;
    auto actor = ask<caf::actor>(sys, ctx_->agents, admit_atom::value, std::move(a));
    if (!actor) return actor.error();
    agent_actors.emplace(id, *actor);
    ++restored_.agents;
  }
  caf::scoped_actor self{sys};
  // Every held slot and concurrency key first: a queued run's actor sends its
  // own enqueue, which nothing orders against a reserve sent after it, so a
  // run of a held key could otherwise be placed beside its holder.
  for (auto& r : snap->runs)
    if (r.status != run_status::created && agent_actors.count(r.assigned_agent) > 0)
      self->send(ctx_->assignment, reserve_atom::value, r);
  for (auto& r : snap->runs) {
    caf::actor agent;
    if (r.status != run_status::created)
      if (auto it = agent_actors.find(r.assigned_agent); it != agent_actors.end())
        agent = it->second;
    self->send(ctx_->runs, admit_atom::value, std::move(r), agent);
    ++restored_.runs;
  }
  // Wait until the registry has spawned every restored run.
  if (auto n = ask<uint64_t>(sys, ctx_->runs, count_atom::value); !n) return n.error();
  restored_.seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return {};
}

std::vector<token_record>
mesh_node::keep_agents_sessions_through_outage(snapshot& snap, timestamp now) const {
  std::vector<token_record> kept;
  if (!snap.alive_at) return kept; // a store no meshd has stamped yet
  auto until = now + ctx_->config.agent_token_grace();
  for (auto& t : snap.tokens)
    if (token_cache::lapsed_within(t, *snap.alive_at, until)) {
      t.expires_at = until;
      kept.push_back(t);
    }
  if (!kept.empty()) {
    auto down_s =
        std::chrono::duration_cast<std::chrono::seconds>(now - *snap.alive_at).count();
    log(log_level::info,
        std::to_string(kept.size()) +
            " agent access tokens expired while meshd was down (it last ran at " +
            to_rfc3339(*snap.alive_at) + ", " +
            std::to_string(std::max<int64_t>(0, down_s)) +
            " s ago) or would before their agents could renew them; each is honoured "
            "until " +
            to_rfc3339(until) +
            " (agents.offline_after, at most agents.token_ttl), so that agents keep "
            "their sessions and runs");
  }
  return kept;
}

caf::error check_admin_token_env() {
  const char* env = std::getenv("POLYMESH_ADMIN_TOKEN");
  if (!env || !*env) return {};
  std::string_view token{env};
  if (token.size() < 16)
    return make_error(errc::invalid_argument,
                      "POLYMESH_ADMIN_TOKEN must be at least 16 characters",
                      "POLYMESH_ADMIN_TOKEN");
  // It is compared with what follows "Bearer " in a header, which loses its
  // ends' blanks, and meshctl sends no token with a control character (a
  // tab included): such a token could never be used. (A space inside, a
  // passphrase, can be.)
  if (token.front() == ' ' || token.back() == ' ' ||
      std::any_of(token.begin(), token.end(),
                  [](unsigned char c) { return c < ' ' || c == 0x7f; }))
    return make_error(errc::invalid_argument,
                      "POLYMESH_ADMIN_TOKEN starts or ends with a blank, or holds a line "
                      "break or control character (read from a file?); no client could "
                      "send it",
                      "POLYMESH_ADMIN_TOKEN");
  return {};
}

namespace {

/// The first line of `path`, not through a symlink; "" when unreadable.
std::string first_line_of(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return {};
  char buf[512];
  auto n = ::read(fd, buf, sizeof buf);
  ::close(fd);
  if (n <= 0) return {};
  std::string text{buf, static_cast<size_t>(n)};
  return text.substr(0, text.find('\n'));
}

} // namespace

void mesh_node::warn_of_stale_admin_token_file(const std::string& token_hash) const {
  auto path = ctx_->config.data_dir + "/admin.token";
  auto held = first_line_of(path);
  // Compared by hash: the same cost for every value.
  if (held.empty() || sha256_hex(held) == token_hash) return;
  log(log_level::warn,
      path + " holds an earlier admin token, which no longer works "
             "(POLYMESH_ADMIN_TOKEN replaced it): delete the file, or clients that "
             "read it get 401");
}

caf::error mesh_node::bootstrap_admin_token(const std::vector<token_record>& existing) {
  auto now = ctx_->now();
  const char* env = std::getenv("POLYMESH_ADMIN_TOKEN");
  std::string token;
  if (env && *env) {
    if (auto err = check_admin_token_env()) return err;
    token = env;
    // A revoke stands: the value an admin revoked does not come back with
    // the next start. A new value rotates it as before.
    for (auto& t : existing)
      if (t.id == token_cache::bootstrap_admin_id && t.revoked_at &&
          t.secret_hash == sha256_hex(token)) {
        log(log_level::warn,
            "POLYMESH_ADMIN_TOKEN is the bootstrap admin token revoked at " +
                to_rfc3339(*t.revoked_at) +
                "; it stays revoked (set a new value to rotate it)");
        return {};
      }
    warn_of_stale_admin_token_file(sha256_hex(token));
  } else {
    for (auto& t : existing)
      if (t.id == token_cache::bootstrap_admin_id && !t.revoked_at) {
        // Already bootstrapped; the secret is not ours to show again. The
        // variable may have rotated it at an earlier start.
        warn_of_stale_admin_token_file(t.secret_hash);
        return {};
      }
    token = "pm_admin." + new_secret();
    auto path = ctx_->config.data_dir + "/admin.token";
    // Never through a symlink (the secret would land wherever it points),
    // and private even if a file was there already.
    int fd =
        ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0 || ::fchmod(fd, 0600) != 0) {
      auto why = std::string{std::strerror(errno)};
      if (fd >= 0) ::close(fd);
      return make_error(errc::invalid_argument, "cannot write '" + path + "': " + why,
                        "data_dir");
    }
    auto line = token + "\n";
    auto written = ::write(fd, line.data(), line.size());
    ::fsync(fd);
    ::close(fd);
    if (written != static_cast<ssize_t>(line.size()))
      return make_error(errc::invalid_argument, "cannot write '" + path + "'",
                        "data_dir");
    admin_token_file_ = path;
  }
  token_record rec;
  rec.id = token_cache::bootstrap_admin_id;
  rec.kind = token_kind::admin;
  rec.name = "bootstrap admin";
  rec.secret_hash = sha256_hex(token);
  rec.created_at = now;
  for (auto& t : existing)
    if (t.id == rec.id) rec.created_at = t.created_at;
  auto out = ask<write_outcomes>(*system_, ctx_->store, write_atom::value,
                                 write_batch{put_token{rec}});
  if (!out) return out.error();
  ctx_->tokens->put(rec);
  return {};
}

void mesh_node::tick() {
  auto& sys = *system_;
  (void)ask<size_t>(sys, ctx_->liveness, tick_atom::value);
  (void)ask<size_t>(sys, ctx_->expiry, tick_atom::value);
  (void)ask<size_t>(sys, ctx_->assignment, tick_atom::value);
  (void)ask<size_t>(sys, ctx_->agents, forget_atom::value);
}

size_t mesh_node::prune_once() {
  auto n = ask<size_t>(*system_, ctx_->retention, tick_atom::value);
  return n ? *n : 0;
}

void mesh_node::begin_shutdown() {
  if (!ctx_ || ctx_->stopping.exchange(true)) return;
  if (ctx_->agents) caf::anon_send(ctx_->agents, shutdown_atom::value);
  // Clients waiting for a run are answered too: the HTTP server's stop
  // waits for every request in flight.
  if (ctx_->runs) caf::anon_send(ctx_->runs, shutdown_atom::value);
}

mesh_node::~mesh_node() {
  shutdown();
}

void mesh_node::shutdown() {
  if (down_) return;
  down_ = true;
  if (!system_) {
    release_lock();
    return;
  }
  begin_shutdown();
  // Registries first (they stop their run and agent actors), then
  // the routines, and the store last so in-flight writes still commit.
  auto handles = {&ctx_->runs,       &ctx_->agents,   &ctx_->token_registry,
                  &ctx_->assignment, &ctx_->liveness, &ctx_->expiry,
                  &ctx_->retention,  &ctx_->query,    &ctx_->lists,
                  &ctx_->store};
  for (auto* h : handles)
    if (*h) caf::anon_send_exit(*h, caf::exit_reason::user_shutdown);
  system_->await_all_actors_done();
  for (auto* h : handles)
    *h = nullptr;
  system_.reset();
  system_config_.reset();
  release_lock();
}

void mesh_node::release_lock() {
  for (int* fd : {&db_file_lock_fd_, &db_lock_fd_, &lock_fd_})
    if (*fd >= 0) {
      ::close(*fd);
      *fd = -1;
    }
}

} // namespace polymesh
