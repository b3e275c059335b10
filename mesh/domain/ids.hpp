// Identifiers and secrets: random ids for entities, token secrets, their
// hashes and a constant-time comparison.
//
// Thread-safety: all functions may be called from any thread (OpenSSL's
// RAND_bytes is thread-safe).
#pragma once

#include <cstddef>
#include <string>

namespace polymesh {

/// What every agent id starts with (`new_id("agt")`); no agent name may, so
/// that a path or filter naming an agent means one agent.
inline constexpr const char* agent_id_prefix = "agt_";

/// A new random id `<prefix>_<26 chars of lowercase base32>` (130 bits).
[[nodiscard]] std::string new_id(const std::string& prefix);
/// A new random secret of 32 bytes, base64url without padding (43 chars).
[[nodiscard]] std::string new_secret();
/// `n` bytes as lowercase hex, two digits each.
[[nodiscard]] std::string hex_of(const unsigned char* bytes, size_t n);
/// Lowercase hex SHA-256 of `text`.
[[nodiscard]] std::string sha256_hex(const std::string& text);
/// Compares without an early exit, so timing does not leak a prefix match.
[[nodiscard]] bool constant_time_equal(const std::string& a, const std::string& b);

} // namespace polymesh
