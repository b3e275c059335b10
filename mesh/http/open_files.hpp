// meshd's open files. Each HTTP connection is one, and so are the store's
// database, WAL and lock files and each artifact upload being received. A
// shell's limit (RLIMIT_NOFILE) is often 1,024; past it cpp-httplib's accept
// loop retries every millisecond without a word, so every new client,
// `/healthz` too, hung while meshd said nothing. meshd therefore raises its
// limit to the hard one at start, warns when that is still short of its
// threads, and answers a connection past it with 503 instead of serving it,
// keeping `open_files_reserve` files for its store and uploads.
//
// Thread-safety: `raise_open_files_limit` at start-up, before any thread;
// the rest are pure.
#pragma once

#include <cstdint>
#include <string>
#include <utility>

namespace polymesh {

/// Files meshd keeps for itself beyond connections: the store's database,
/// WAL, shared memory and lock files, an artifact upload's spool file, a
/// read of /proc for `/metrics`.
inline constexpr uint64_t open_files_reserve = 64;

/// The limit on open files, soft and hard (0 when unknown).
struct open_files_limit {
  uint64_t soft = 0;
  uint64_t hard = 0;
};

/// The limit now, unchanged.
[[nodiscard]] open_files_limit current_open_files_limit();

/// Raises the soft limit to the hard one (meshd and cpp-httplib wait with
/// `poll`, never `select`, so descriptors past 1,024 are safe); returns the
/// limit before and after (the same when it could not be raised).
std::pair<open_files_limit, open_files_limit> raise_open_files_limit();

/// What is wrong with a limit of `limit` open files for a pool of
/// `connections` HTTP threads (`http.threads + http.run_waits`), "" when
/// nothing is.
[[nodiscard]] std::string open_files_shortfall(uint64_t limit, uint64_t connections);

/// The lowest descriptor number a connection is refused from under a limit
/// of `limit` (the kernel hands out the lowest free number, so a connection
/// on descriptor N means N files below it are open): the limit less the
/// reserve, or half of a limit under twice the reserve. INT_MAX (refusing
/// none) when no limit is known.
[[nodiscard]] int refuse_connections_from(uint64_t limit);

} // namespace polymesh
