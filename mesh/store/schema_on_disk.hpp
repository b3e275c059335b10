// The schema version a start would find in a database, read from its files
// without SQLite: `meshd --check` must create nothing, and opening the
// database would make its `-wal` and `-shm` beside it, owned by whoever ran
// the check.
#pragma once

#include <caf/expected.hpp>
#include <optional>
#include <string>

namespace polymesh {

/// The schema version (`PRAGMA user_version`) of the database `path` as the
/// next open would see it: the newest committed copy of the database's
/// header in the `-wal` file beside it (a meshd killed, or an older one
/// stopped while a poll was open, leaves its last writes there, and SQLite
/// reads them back at the next open), else the file's own header. 0 for an
/// empty file; an error says why the file cannot be read (with what to chown
/// for a refused permission), or that it is no database.
[[nodiscard]] caf::expected<int> schema_version_on_disk(const std::string& path);

/// The schema version in the newest committed copy of the database's first
/// page in the WAL file `wal`, checked as SQLite's recovery checks it (the
/// WAL's header, each frame's salts and running checksum, up to the last
/// commit); none when there is no such copy or no such file.
[[nodiscard]] std::optional<int> wal_schema_version(const std::string& wal);

} // namespace polymesh
