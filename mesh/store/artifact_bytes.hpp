// An artifact's bytes on their way into the store: held in memory, or
// spooled to an unlinked file as an upload arrives, so that meshd holds one
// part of a large artifact at a time instead of the whole of it.
//
// A copy is another handle on the same bytes. Thread-safety: appending is
// for one thread (the HTTP thread receiving the upload); once complete, the
// bytes may be read from any thread at once (`read_part` uses `pread`).
#pragma once

#include <caf/error.hpp>
#include <caf/expected.hpp>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

namespace polymesh {

class artifact_bytes {
public:
  /// No bytes, in memory.
  artifact_bytes();
  /// `bytes`, in memory.
  artifact_bytes(std::string bytes); // NOLINT(google-explicit-constructor)
  ~artifact_bytes();
  artifact_bytes(const artifact_bytes&);
  artifact_bytes& operator=(const artifact_bytes&);
  artifact_bytes(artifact_bytes&&) noexcept;
  artifact_bytes& operator=(artifact_bytes&&) noexcept;

  /// An empty file in directory `dir` to append to, unlinked from the start:
  /// it goes with the last copy of this object, or with the process.
  [[nodiscard]] static caf::expected<artifact_bytes> spool_in(const std::string& dir);

  /// Adds `n` bytes at the end (to the file, for a spool).
  [[nodiscard]] caf::error append(const char* data, size_t n);

  [[nodiscard]] int64_t size() const;
  /// Lowercase hex SHA-256 of every byte appended (or given) so far.
  [[nodiscard]] std::string sha256_hex() const;
  /// At most `n` bytes from `start` on: a view of the bytes in memory, or of
  /// `buffer`, read from the spool into it.
  [[nodiscard]] caf::expected<std::string_view> read_part(int64_t start, int64_t n,
                                                          std::string& buffer) const;

private:
  struct state;
  std::shared_ptr<state> state_;
};

} // namespace polymesh
