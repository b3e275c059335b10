// The SQLite schema, as the list of migrations that builds it.
//
// The database records how many migrations it has seen in
// `PRAGMA user_version`. Opening a writable store applies the missing ones in
// one transaction; a read-only store refuses a database whose version is not
// `sqlite_schema_version`. A migration, once released, never changes: a new
// schema is a new entry at the end of `sqlite_migrations`.
//
// Conventions: timestamps are INTEGER Unix milliseconds (NULL for an unset
// optional), enums are their `to_string` text, label maps and plan lists are
// JSON text.
//
// Thread-safety: constants only.
#pragma once

#include <cstddef>

namespace polymesh {

/// Migration `i` (0-based) takes a database from version `i` to `i + 1`.
inline constexpr const char* sqlite_migrations[] = {
    // Version 1: runs, agents, tokens, run logs.
    R"sql(
CREATE TABLE runs (
  -- The rowid: paging and FIFO order by `seq` need no index of their own, and
  -- every index below ends with it, so `runs_by_plan` is ordered by (plan, seq).
  seq                 INTEGER PRIMARY KEY,
  id                  TEXT NOT NULL UNIQUE,
  plan                TEXT NOT NULL,
  selector            TEXT NOT NULL,
  scope               TEXT NOT NULL,
  target_agent        TEXT NOT NULL,
  assigned_agent      TEXT NOT NULL,
  params              TEXT NOT NULL,
  payload             TEXT NOT NULL,
  priority            INTEGER NOT NULL,
  status              TEXT NOT NULL,
  reason              TEXT NOT NULL,
  exit_code           INTEGER,
  result              TEXT NOT NULL,
  error               TEXT NOT NULL,
  attempts            INTEGER NOT NULL,
  idempotency_key     TEXT NOT NULL,
  submitted_by        TEXT NOT NULL,
  timeout_s           INTEGER NOT NULL,
  ttl_s               INTEGER NOT NULL,
  cancel_requested    INTEGER NOT NULL,
  cancel_reason       TEXT NOT NULL,
  progress            TEXT NOT NULL,
  created_at          INTEGER NOT NULL,
  assigned_at         INTEGER,
  delivered_at        INTEGER,
  started_at          INTEGER,
  finished_at         INTEGER,
  last_activity_at    INTEGER,
  cancel_requested_at INTEGER
);
-- Start-up loads the few unfinished runs, in seq order, out of millions of
-- finished ones; this index holds only those few. `runs_by_status` serves
-- status filters over finished runs.
CREATE INDEX runs_unfinished ON runs(seq)
  WHERE status IN ('created', 'pending', 'running');
CREATE INDEX runs_by_status ON runs(status);
-- An empty key means "none": only non-empty keys must be unique.
CREATE UNIQUE INDEX runs_by_idempotency_key ON runs(idempotency_key)
  WHERE idempotency_key <> '';
CREATE INDEX runs_by_finished_at ON runs(finished_at);
CREATE INDEX runs_by_plan ON runs(plan);
CREATE INDEX runs_by_agent ON runs(assigned_agent);

-- Rows are small and always read by key or whole, hence WITHOUT ROWID.
CREATE TABLE agents (
  id            TEXT PRIMARY KEY NOT NULL,
  -- Not UNIQUE: a deregistered agent's row stays, and its name may register
  -- again under a new id.
  name          TEXT NOT NULL,
  labels        TEXT NOT NULL,
  plans         TEXT NOT NULL,
  capacity      INTEGER NOT NULL,
  status        TEXT NOT NULL,
  version       TEXT NOT NULL,
  hostname      TEXT NOT NULL,
  scope         TEXT NOT NULL,
  registered_at INTEGER NOT NULL,
  last_seen_at  INTEGER NOT NULL,
  session       INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX agents_by_name ON agents(name);

CREATE TABLE tokens (
  id            TEXT PRIMARY KEY NOT NULL,
  kind          TEXT NOT NULL,
  name          TEXT NOT NULL,
  secret_hash   TEXT NOT NULL,
  scope         TEXT NOT NULL,
  agent_id      TEXT NOT NULL,
  agent_session INTEGER NOT NULL,
  created_at    INTEGER NOT NULL,
  expires_at    INTEGER,
  revoked_at    INTEGER
) WITHOUT ROWID;
CREATE INDEX tokens_by_created_at ON tokens(created_at);

-- A rowid table: chunks may be large, which WITHOUT ROWID handles badly.
-- No foreign key to `runs`: a late chunk for a pruned run must not fail the
-- whole group-committed batch it travels in.
CREATE TABLE run_logs (
  run_id TEXT NOT NULL,
  seq    INTEGER NOT NULL,
  stream TEXT NOT NULL,
  data   TEXT NOT NULL,
  at     INTEGER NOT NULL,
  PRIMARY KEY (run_id, seq)
);

-- Small named counters. `max_pruned_seq` keeps the highest seq that `prune`
-- may have deleted, so that seqs never repeat once every run is pruned.
CREATE TABLE meta (
  key   TEXT PRIMARY KEY NOT NULL,
  value INTEGER NOT NULL
) WITHOUT ROWID;
)sql",
    // Version 2: run artifacts.
    R"sql(
-- Like `run_logs`: a rowid table for large values, and no foreign key to
-- `runs` so that a late upload for a pruned run cannot fail a whole batch.
CREATE TABLE run_artifacts (
  run_id     TEXT NOT NULL,
  name       TEXT NOT NULL,
  size       INTEGER NOT NULL,
  sha256     TEXT NOT NULL,
  data       BLOB NOT NULL,
  created_at INTEGER NOT NULL,
  PRIMARY KEY (run_id, name)
);
)sql",
    // Version 3: an admin's drain of an agent outlives its going offline and
    // a restart of meshd (1 = drained).
    R"sql(
ALTER TABLE agents ADD COLUMN drained INTEGER NOT NULL DEFAULT 0;
)sql",
    // Version 4: the agent session that started a run, the only one that may
    // report on it (0 = none; runs stored before it have none).
    R"sql(
ALTER TABLE runs ADD COLUMN held_session INTEGER NOT NULL DEFAULT 0;
)sql",
    // Version 5: a run's concurrency key ("" = none; runs stored before it
    // have none).
    R"sql(
ALTER TABLE runs ADD COLUMN concurrency_key TEXT NOT NULL DEFAULT '';
CREATE INDEX runs_by_concurrency_key ON runs(concurrency_key)
  WHERE concurrency_key <> '';
)sql",
    // Version 6: `runs_unfinished`'s condition without `IN`. SQLite checks a
    // partial index's condition on every insert and update of a run, and an
    // `IN` list of three builds a temporary table each time (twice per
    // update); comparisons joined by OR build none.
    R"sql(
DROP INDEX runs_unfinished;
CREATE INDEX runs_unfinished ON runs(seq)
  WHERE status = 'created' OR status = 'pending' OR status = 'running';
)sql",
    // Version 7: `agents.drained` tells an admin's drain (2), kept across the
    // agent's registrations, from the agent's own (1), which its next
    // registration ends. Drains stored before could be either; an agent that
    // drained itself deregisters at once, so one still registered was most
    // likely drained by an admin, and keeps its drain.
    R"sql(
UPDATE agents SET drained = 2
  WHERE (drained = 1 OR status = 'draining') AND status <> 'deregistered';
)sql",
    // Version 8: the installation an agent's session registered from ("" =
    // not known; agents stored before it have none).
    R"sql(
ALTER TABLE agents ADD COLUMN instance TEXT NOT NULL DEFAULT '';
)sql",
    // Version 9: an artifact's bytes past its first MiB, in parts of 1 MiB
    // keyed by the offset of their first byte, so that a download reads one
    // part at a time (a read at an offset inside one BLOB walks its overflow
    // pages from the start). `run_artifacts.data` keeps the first part; an
    // artifact stored before this version has all its bytes there and no
    // parts.
    R"sql(
CREATE TABLE run_artifact_parts (
  run_id  TEXT NOT NULL,
  name    TEXT NOT NULL,
  start   INTEGER NOT NULL,
  data    BLOB NOT NULL,
  PRIMARY KEY (run_id, name, start)
);
)sql",
    // Version 10: how many finished runs each status holds, kept by
    // triggers in the transaction of every write, so that `/readyz` and
    // `/metrics` need not count the finished runs on each call (≈ 0.1 s at a
    // million, on the reader other reads wait for). Unfinished runs, which
    // meshd holds in memory anyway, are still counted (through
    // `runs_by_status`). A change into or out of a finished status is seen
    // on `finished_at`, which every such write sets (`changed_run_fields`
    // sees to it): a trigger on `status` would be coded into each of a
    // run's writes, this one only into its last. The conditions are
    // comparisons, not `IN` (see version 6).
    R"sql(
CREATE TABLE run_counts (
  status TEXT PRIMARY KEY NOT NULL,
  n      INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO run_counts (status, n)
  SELECT status, COUNT(*) FROM runs
  WHERE status = 'success' OR status = 'error' OR status = 'canceled'
  GROUP BY status;
CREATE TRIGGER run_counts_on_insert AFTER INSERT ON runs
  WHEN new.status = 'success' OR new.status = 'error' OR new.status = 'canceled'
BEGIN
  INSERT INTO run_counts (status, n) VALUES (new.status, 1)
    ON CONFLICT(status) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER run_counts_on_end AFTER UPDATE OF finished_at ON runs
  WHEN old.status IS NOT new.status
   AND (new.status = 'success' OR new.status = 'error' OR new.status = 'canceled')
BEGIN
  INSERT INTO run_counts (status, n) VALUES (new.status, 1)
    ON CONFLICT(status) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER run_counts_on_leave AFTER UPDATE OF finished_at ON runs
  WHEN old.status IS NOT new.status
   AND (old.status = 'success' OR old.status = 'error' OR old.status = 'canceled')
BEGIN
  UPDATE run_counts SET n = n - 1 WHERE status = old.status;
END;
CREATE TRIGGER run_counts_on_delete AFTER DELETE ON runs
  WHEN old.status = 'success' OR old.status = 'error' OR old.status = 'canceled'
BEGIN
  UPDATE run_counts SET n = n - 1 WHERE status = old.status;
END;
)sql",
    // Version 11: no trigger on inserts. Any trigger on a statement makes
    // SQLite keep a statement journal of every page it changes, and every
    // submit is an insert: batch submits ran 10-15 % slower with it. meshd
    // counts a run it inserts finished itself (`write_one`); the triggers
    // on `finished_at` and on deletes stay.
    R"sql(
DROP TRIGGER IF EXISTS run_counts_on_insert;
)sql",
    // Version 12: the bytes of each run's log, kept as chunks are written
    // (by `write_one`, not a trigger: see version 11), so that a log upload
    // to an ended run, checked against `runs.max_log_bytes` inside the one
    // write transaction, need not read the whole log (0.3 s at 100 MiB,
    // with every other write waiting). A run whose chunks were stored
    // before this version has no row until its next chunk: then its log is
    // summed once, and a read sums it meanwhile.
    R"sql(
CREATE TABLE run_log_sizes (
  run_id TEXT PRIMARY KEY NOT NULL,
  bytes  INTEGER NOT NULL
) WITHOUT ROWID;
)sql",
    // Version 13: automatic retries (`mesh/domain/retry.hpp`): the policy a
    // run was submitted with, its place in its chain of retries and the
    // links along it, and the seq of the chain's first run that orders a
    // retry in the queue (0: its own). Runs stored before it have none.
    R"sql(
ALTER TABLE runs ADD COLUMN retry_max INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN retry_on TEXT NOT NULL DEFAULT '';
ALTER TABLE runs ADD COLUMN retry_number INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN retry_of TEXT NOT NULL DEFAULT '';
ALTER TABLE runs ADD COLUMN retried_by TEXT NOT NULL DEFAULT '';
ALTER TABLE runs ADD COLUMN queue_seq INTEGER NOT NULL DEFAULT 0;
)sql",
};

/// The schema version this build reads and writes.
inline constexpr int sqlite_schema_version =
    static_cast<int>(sizeof(sqlite_migrations) / sizeof(sqlite_migrations[0]));

} // namespace polymesh
