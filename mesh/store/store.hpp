// The store: the only code that speaks SQL.
//
// Everything durable goes through `apply`, which commits a batch of writes in
// one transaction (the store actor groups concurrent writes into one batch:
// group commit). A write is a whole-row upsert of a record, or an append.
// Reads serve the HTTP queries and rebuild memory at start-up.
//
// An implementation (SQLite now, PostgreSQL later) is owned by one thread at
// a time; open one instance per thread that needs it (the store actor writes,
// the query actor reads).
#pragma once

#include "mesh/domain/records.hpp"
#include "mesh/store/artifact_bytes.hpp"

#include <caf/error.hpp>
#include <caf/expected.hpp>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <variant>
#include <vector>

namespace polymesh {

/// A set of a run's lifecycle fields, one bit each (see `changed_run_fields`).
using run_fields = uint32_t;
/// How many lifecycle fields a run has: bits 0 to 17.
inline constexpr int run_lifecycle_fields = 18;
inline constexpr run_fields all_run_fields = (run_fields{1} << run_lifecycle_fields) - 1;

/// The lifecycle fields in which `next` differs from `stored`, and
/// `finished_at` whenever the status moves into, out of or between finished
/// ones (the SQLite store's counts of finished runs follow that column).
[[nodiscard]] run_fields changed_run_fields(const run_record& stored,
                                            const run_record& next);

/// Writes a run. A new run is written whole; a stored one gets its lifecycle
/// fields (status, assignment, outcome, cancel state, timestamps, the retry
/// made of it), and the fields fixed at submission (plan, selector, scope,
/// target agent, params, payload, priority, idempotency key, submitter,
/// timeout, TTL, retry policy and place in its chain, created_at) keep their
/// stored values. With `insert_only`, a run whose
/// `idempotency_key` (non-empty) is already taken is not written and the
/// write's outcome is `conflict` (carrying the existing run's id).
struct put_run {
  run_record run;
  bool insert_only = false;
  /// Of a stored run, only these lifecycle fields are written; the others
  /// must already hold `run`'s values. A writer that knows the stored row
  /// passes `changed_run_fields(stored, run)`: SQLite then leaves alone the
  /// indexes of the fields that did not change (a delivery touches none).
  run_fields changed = all_run_fields;
};
struct put_agent {
  agent_record agent;
};
struct put_token {
  token_record token;
};
/// Appends a log chunk; a chunk whose (run_id, seq) exists is ignored (its
/// outcome is `written = false`).
struct append_log {
  std::string run_id;
  log_chunk chunk;
};
/// Appends the log chunks of one upload to a run that may have ended, and
/// so may be deleted by retention or take chunks from two actors at once:
/// checked when written, in the writer's order. Nothing of it is written
/// (the outcome's `refused` says why) when the run is not stored, or when
/// its log would pass `max_bytes` (> 0; chunks whose seq it has add
/// nothing, and are not written again).
struct append_late_logs {
  std::string run_id;
  std::vector<log_chunk> chunks;
  int64_t max_bytes = 0;
};
/// Stores an artifact; a name the run already holds is not overwritten and
/// the write's outcome is `written = false` with the stored one's sha256.
struct put_artifact {
  artifact_record artifact;
  /// Read a part at a time (from the upload's spool file).
  artifact_bytes data;
  /// `runs.max_artifacts`, set for every upload: then checked when written,
  /// in the writer's order, so that uploads at once and retention cannot
  /// pass the check. Nothing is written (the outcome's `refused` says why)
  /// when the run is not stored, or when it holds that many other artifacts.
  std::optional<int64_t> max_artifacts;
};
/// Records that meshd was running at `at` (its clock): the next start learns
/// from the last such stamp which tokens expired while meshd was down.
struct stamp_alive {
  timestamp at{};
};
/// Deletes the rows of agents forgotten: deregistered (forgetting stores an
/// offline agent so) and last heard from before `last_seen_before`, at most
/// `max_rows` of them. Runs keep the agent's id.
struct delete_forgotten_agents {
  timestamp last_seen_before{};
  int64_t max_rows = 0;
};
using write = std::variant<put_run, put_agent, put_token, append_log, append_late_logs,
                           put_artifact, stamp_alive, delete_forgotten_agents>;

/// The outcome of one write within a committed batch.
struct write_outcome {
  /// False for an `insert_only` run whose idempotency key was taken, a log
  /// chunk the run already has, and an artifact name it already holds.
  bool written = true;
  /// For a refused `insert_only`: the id of the run that holds the key.
  std::string existing_id;
  /// For a refused `put_artifact`: the sha256 of the artifact already stored.
  std::string existing_sha256;
  /// Why an `append_late_logs` or `put_artifact` was not written, when its
  /// check refused it (`not_found`, `payload_too_large`, `conflict`).
  caf::error refused;
};

/// One artifact with some of its bytes, those from `offset` on
/// (`artifact.size` is the whole).
struct artifact_blob {
  artifact_record artifact;
  int64_t offset = 0;
  std::string data;
};

/// Everything needed to rebuild memory at start-up.
/// An agent that left (deregistered) and is not forgotten yet, the last of
/// its name, no agent of which is still registered.
struct left_agent {
  std::string name;
  label_map labels;
  timestamp last_seen_at{};
};

struct snapshot {
  /// Every token not revoked, and the bootstrap admin token (id `admin`)
  /// revoked or not. The store has no clock, so expired ones are included:
  /// the caller drops those whose `expires_at` has passed.
  std::vector<token_record> tokens;
  std::vector<agent_record> agents; ///< every agent not deregistered
  std::vector<left_agent> left;     ///< see `load`
  std::vector<run_record> runs;     ///< every run that is not terminal
  uint64_t max_seq = 0;             ///< highest run seq ever stored
  /// The last `stamp_alive`: when meshd was last known to be running (none
  /// from a store that a meshd older than the stamp wrote last).
  std::optional<timestamp> alive_at;
};

struct run_filter {
  std::optional<run_status> status;
  std::string plan;            ///< "" = any
  std::string agent;           ///< assigned agent id, "" = any
  std::string concurrency_key; ///< "" = any
  size_t limit = 50;
  /// Opaque pagination cursor from a previous page ("" = newest first).
  std::string cursor;
};

/// A page of a run's log.
struct log_page {
  std::vector<log_chunk> chunks;
  /// A chunk already stored follows the page's last one: ask again at once.
  bool more = false;
};

struct run_page {
  std::vector<run_record> runs; ///< newest first (descending seq)
  std::string next_cursor;      ///< "" when this is the last page
};

struct store_options {
  /// `normal`: durable across process crashes (WAL); `full`: also across
  /// power loss (fsync per commit).
  std::string synchronous = "full";
  /// SQLite's `secure_delete`: `fast`, or `full` (`on`).
  std::string secure_delete = "fast";
  bool read_only = false;
  /// Longest one `prune` holds its transaction: past it, it commits what
  /// it deleted (0: one run per call).
  duration prune_hold = std::chrono::milliseconds{200};
};

class store {
public:
  virtual ~store() = default;

  /// Commits `batch` in one transaction: either every write is durable and
  /// one outcome per write is returned (same order), or nothing is and an
  /// `errc::store_failure` error is returned.
  [[nodiscard]] virtual caf::expected<std::vector<write_outcome>>
  apply(const std::vector<write>& batch) = 0;

  /// Every token still usable (and the bootstrap admin's), every agent not
  /// deregistered, every unfinished run, and in `left` the name and labels
  /// of each name whose agents all left, from its one last seen, when that
  /// was at or after `deregistered_since` (not yet forgotten: a token
  /// scoped elsewhere may not take the name).
  [[nodiscard]] virtual caf::expected<snapshot> load(timestamp deregistered_since) = 0;

  [[nodiscard]] virtual caf::expected<std::optional<run_record>>
  get_run(const std::string& id) = 0;
  /// Pagination is stable: runs created after the first page do not shift
  /// later pages. A malformed cursor is `invalid_argument` on field `cursor`.
  [[nodiscard]] virtual caf::expected<run_page> list_runs(const run_filter& filter) = 0;
  /// Chunks of `run_id` with seq > `after_seq`, ascending, at most `limit`,
  /// and no more once their data reaches `max_bytes` (at least one chunk);
  /// `more` when a stored chunk comes after them.
  [[nodiscard]] virtual caf::expected<log_page>
  logs(const std::string& run_id, int64_t after_seq, size_t limit, size_t max_bytes) = 0;
  /// The bytes of `run_id`'s log chunks, as kept with the log (a run whose
  /// chunks an older meshd stored, and none since, has its log read).
  [[nodiscard]] virtual caf::expected<int64_t> log_bytes(const std::string& run_id) = 0;
  /// Which of `seqs` the run's log already has (a retried upload's).
  [[nodiscard]] virtual caf::expected<std::vector<int64_t>>
  stored_log_seqs(const std::string& run_id, const std::vector<int64_t>& seqs) = 0;

  /// The artifacts of `run_id`, by name, without their bytes.
  [[nodiscard]] virtual caf::expected<std::vector<artifact_record>>
  list_artifacts(const std::string& run_id) = 0;
  /// The artifact and at most `max_bytes` of its bytes from `offset` on,
  /// read without loading the rest: none past its end, nor past the end of
  /// the stored part holding `offset` (a caller asks again from where the
  /// answer ends). A download is served a part at a time. An artifact stored
  /// whole before schema version 9 is read an eighth of it at a time, up to
  /// 16 MiB (more than `max_bytes` when it is over 8 MiB), unless `max_bytes`
  /// is 0: see the implementation.
  [[nodiscard]] virtual caf::expected<std::optional<artifact_blob>>
  get_artifact(const std::string& run_id, const std::string& name, int64_t offset,
               size_t max_bytes) = 0;

  [[nodiscard]] virtual caf::expected<std::optional<agent_record>>
  get_agent(const std::string& id) = 0;
  /// Every agent including deregistered ones, by name.
  [[nodiscard]] virtual caf::expected<std::vector<agent_record>> list_agents() = 0;
  /// Every token, including revoked and expired ones, oldest first.
  [[nodiscard]] virtual caf::expected<std::vector<token_record>> list_tokens() = 0;

  /// Deletes terminal runs finished before `cutoff`, with their logs and
  /// artifacts, at most `max_rows` runs per call, and no more once the call
  /// has held its transaction for `store_options::prune_hold` (one at
  /// least). Returns the number of runs deleted.
  [[nodiscard]] virtual caf::expected<size_t> prune(timestamp cutoff,
                                                    size_t max_rows) = 0;
  /// Number of runs per status (for `/readyz`, `meshctl status`).
  [[nodiscard]] virtual caf::expected<std::vector<std::pair<run_status, int64_t>>>
  count_runs() = 0;
};

/// The SQL the SQLite store's `list_runs` runs for `filter` (`paged`: after
/// a cursor); public so that tests can check its query plan.
[[nodiscard]] std::string sqlite_list_runs_sql(const run_filter& filter, bool paged);

/// Opens (and creates or migrates) the SQLite database at `path`.
[[nodiscard]] caf::expected<std::unique_ptr<store>>
open_sqlite_store(const std::string& path, const store_options& options = {});

/// Whether this process may write the database at `path` as a writer must:
/// the file (when it is there), its directory, where SQLite makes `-wal`
/// and `-shm`, and those two when they are there. A `store_failure` saying
/// what to chown, or none; other errors than a refused permission pass.
[[nodiscard]] caf::error check_database_writable(const std::string& path);

/// What to add to "cannot open" the database (or a file meshd keeps beside
/// it) for the OS error `os`: what to chown for a refused permission, else
/// nothing.
[[nodiscard]] std::string database_permission_hint(int os);

} // namespace polymesh
