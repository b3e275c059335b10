// Label keys and values, validated exactly as Kubernetes validates them.
//
// Key: optional DNS-subdomain prefix (<= 253 chars) and '/', then a name of
// 1..63 chars of [A-Za-z0-9._-] that begins and ends alphanumeric.
// Value: empty, or 1..63 chars of the same alphabet, alphanumeric at both ends.
//
// Thread-safety: pure functions.
#pragma once

#include "mesh/domain/records.hpp"

#include <caf/error.hpp>
#include <string>

namespace polymesh {

/// Returns an `invalid_argument` error naming `field` (e.g. `labels.env`)
/// and the rule broken, or a default (empty) error when `key` is valid.
[[nodiscard]] caf::error validate_label_key(const std::string& key,
                                            const std::string& field);
[[nodiscard]] caf::error validate_label_value(const std::string& value,
                                              const std::string& field);
/// Validates the count (field `labels`) and every key and value (field
/// `labels.<key>`).
/// The most labels one agent may carry.
inline constexpr size_t max_labels = 64;

[[nodiscard]] caf::error validate_labels(const label_map& labels);

/// The entity tag of an agent's labels (`"…"`, quotes included): equal for
/// equal maps, different, but for a hash collision, for any others. meshd
/// sends it as `ETag` with an agent, and takes it in `If-Match` on a
/// change of its labels.
[[nodiscard]] std::string labels_etag(const label_map& labels);

} // namespace polymesh
