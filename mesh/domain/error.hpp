// The project's one error vocabulary.
//
// Every failure that crosses a component boundary is a `caf::error` whose
// category is `mesh` and whose code is an `errc`. Its context carries a human
// message (no trailing period), the offending field (may be empty) and, for
// selector errors, the 0-based character position (-1 when not applicable).
// The HTTP front maps each `errc` to one status code (`http_status`).
//
// Thread-safety: free functions only; all are pure.
#pragma once

#include <caf/atom.hpp>
#include <caf/error.hpp>
#include <cstdint>
#include <string>

namespace polymesh {

/// The category atom of every polymesh error.
constexpr caf::atom_value error_category = caf::atom("mesh");

enum class errc : uint8_t {
  /// Not an error; never sent.
  none = 0,
  /// The request is malformed or a value is out of bounds (HTTP 400).
  invalid_argument,
  /// A label selector does not parse; the position is set (HTTP 400).
  invalid_selector,
  /// No credential, or one that is unknown, expired or revoked (HTTP 401).
  unauthenticated,
  /// The credential is valid but may not do this (HTTP 403).
  forbidden,
  /// The addressed entity does not exist (HTTP 404).
  not_found,
  /// The entity is in a state that refuses this transition (HTTP 409).
  illegal_transition,
  /// A unique name or key is taken (HTTP 409).
  conflict,
  /// The body exceeds the configured limit (HTTP 413).
  payload_too_large,
  /// The server is overloaded or shutting down (HTTP 503).
  unavailable,
  /// The store refused or failed a write; nothing was acknowledged (HTTP 500).
  store_failure,
  /// A bug or an impossible state (HTTP 500).
  internal,
  /// The path exists, the method does not (HTTP 405).
  method_not_allowed,
  /// The request line (the URL) is longer than the HTTP layer reads (HTTP 414).
  uri_too_long,
  /// An agent's report on a run that another session of the same agent
  /// started (the agent registered again since); no later report of this
  /// session on the run can succeed (HTTP 403).
  held_by_other_session,
  /// A registration under the name of an agent that is connected from
  /// another installation (HTTP 409); the name is free again once that
  /// agent deregisters, is removed or goes offline.
  name_in_use,
  /// The request's header section is larger than the HTTP layer reads, in
  /// bytes or lines (HTTP 431).
  header_too_large,
  /// A conditional request's `If-Match` names no current version of the
  /// entity: it changed since the client read it (HTTP 412).
  precondition_failed,
};

/// Returns the stable snake_case name of `code`, used as the JSON `code`.
[[nodiscard]] const char* to_string(errc code);

/// Builds a polymesh error. `field` names the offending input (may be empty);
/// `position` is a 0-based offset into that input or -1.
[[nodiscard]] caf::error make_error(errc code, std::string message,
                                    std::string field = {}, int64_t position = -1);

/// Accessors for errors built by `make_error`. For a foreign error (another
/// category) `code_of` returns `errc::internal` and `message_of` renders it.
[[nodiscard]] errc code_of(const caf::error& err);
[[nodiscard]] std::string message_of(const caf::error& err);
[[nodiscard]] std::string field_of(const caf::error& err);
[[nodiscard]] int64_t position_of(const caf::error& err);

/// The HTTP status that answers an error with this code.
[[nodiscard]] int http_status(errc code);

} // namespace polymesh
