// How a request must be framed before meshd reads its body: one
// Content-Length of digits or `Transfer-Encoding: chunked` alone, no
// Content-Encoding, header names that are tokens, no body on a method that
// takes none, one Authorization. Framing that a proxy in front of meshd could
// read otherwise than cpp-httplib does (RFC 9112, 6.3) would let a second
// request be smuggled inside the first; the server refuses it and closes the
// connection before the body is looked at.
//
// Plain functions of a parsed request: any thread may call them.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace httplib {
struct Request;
} // namespace httplib

namespace polymesh {

/// Why a request's framing is refused, and the field its error names.
struct framing_refusal {
  std::string message;
  const char* field;
};

/// The first framing rule `req` breaks (checked in the order above), or none.
[[nodiscard]] std::optional<framing_refusal>
framing_refusal_of(const httplib::Request& req);

/// A non-empty run of ASCII digits: a Content-Length as RFC 9110 writes it.
[[nodiscard]] bool is_digits(const std::string& s);
/// Whether two ASCII strings are equal but for case.
[[nodiscard]] bool iequals(std::string_view a, std::string_view b);
/// Whether ASCII string `s` starts with `prefix`, but for case.
[[nodiscard]] bool starts_with_nocase(std::string_view s, std::string_view prefix);
/// A non-empty RFC 9110 token (a header name).
[[nodiscard]] bool is_token(const std::string& s);

} // namespace polymesh
