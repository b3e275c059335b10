// A request's head (its request line and header lines) checked as it came
// off the wire, before cpp-httplib parses it.
//
// cpp-httplib 0.11 reads heads leniently where a proxy in front of meshd
// may read them otherwise: it skips a header line ended by LF alone and a
// line folded onto the one before (obs-fold), drops a header whose value is
// empty (`Content-Length:`), percent-decodes every header value, decodes
// the path before routing (`%2F` is a `/` to it), and keeps no limit on the
// header section. A proxy that took `Content-Length` from such a line sends
// a body that meshd then reads as a request of its own (request smuggling),
// and a header section without limit is memory for anybody without a
// token. So a head is refused, and its connection closed, unless it is
// plain RFC 9112: every line ended by CRLF, header names that are tokens,
// no obs-fold, a path in origin form with well-formed escapes, and at most
// `max_head_bytes` in `max_header_lines` lines.
//
// Thread-safety: pure functions.
#pragma once

#include "mesh/domain/error.hpp"

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace polymesh {

/// The longest request line (414 beyond), as cpp-httplib's own limit.
inline constexpr size_t max_request_line_bytes = 8192;
/// The most bytes of a whole head, blank line included (431 beyond).
inline constexpr size_t max_head_bytes = 64 * 1024;
/// The most header lines in one head (431 beyond).
inline constexpr size_t max_header_lines = 100;

/// Why a head is refused: the error's code (its HTTP status), a message for
/// the error body and the field it names.
struct head_refusal {
  errc code = errc::invalid_argument;
  std::string message;
  std::string field;
};

/// Where the head at the start of `bytes` ends (just past the empty line
/// that ends it, whether that line ends with CRLF or LF alone), or npos
/// while it is not all there.
[[nodiscard]] size_t head_end(std::string_view bytes);

/// Why `head` (a whole head, as `head_end` delimits it) is refused, or
/// nullopt when cpp-httplib may parse it.
[[nodiscard]] std::optional<head_refusal> head_refusal_of(std::string_view head);

/// Why a head still incomplete after `bytes` is already refused (a request
/// line or a head too long), or nullopt while it may still be taken.
[[nodiscard]] std::optional<head_refusal> partial_head_refusal_of(std::string_view bytes);

} // namespace polymesh
