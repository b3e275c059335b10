#include "mesh/http/framing.hpp"

#include "mesh/wire/json.hpp"

#include <algorithm>
#include <cctype>
#include <httplib.h>

namespace polymesh {

using wire::printable_prefix;

bool is_digits(const std::string& s) {
  return !s.empty() &&
         std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() &&
         std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

bool starts_with_nocase(std::string_view s, std::string_view prefix) {
  return s.size() >= prefix.size() && iequals(s.substr(0, prefix.size()), prefix);
}

bool is_token(const std::string& s) {
  static constexpr std::string_view extra = "!#$%&'*+-.^_`|~";
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) {
    auto u = static_cast<unsigned char>(c);
    return std::isalnum(u) || extra.find(c) != std::string_view::npos;
  });
}

std::optional<framing_refusal> framing_refusal_of(const httplib::Request& req) {
  auto refused = [](std::string message, const char* field) {
    return std::optional<framing_refusal>{framing_refusal{std::move(message), field}};
  };
  auto lengths = req.get_header_value_count("Content-Length");
  if (lengths > 1)
    return refused("the request has more than one Content-Length header",
                   "Content-Length");
  if (lengths == 1 && req.has_header("Transfer-Encoding"))
    return refused("the request has both Content-Length and Transfer-Encoding",
                   "Content-Length");
  // cpp-httplib reads the leading digits of a Content-Length (`37x`,
  // `+37`, `37, 9999` are 37; `abc` is 0): a proxy may read another
  // length, or refuse it, so anything but digits is refused (RFC 9112, 6.3).
  if (lengths == 1 && !is_digits(req.get_header_value("Content-Length")))
    return refused("Content-Length '" +
                       printable_prefix(req.get_header_value("Content-Length"), 64) +
                       "' is not a number of bytes (digits only)",
                   "Content-Length");
  // Only `chunked` is a transfer coding meshd reads; cpp-httplib would wait
  // for a close to end any other.
  if (req.get_header_value_count("Transfer-Encoding") > 1)
    return refused("the request has more than one Transfer-Encoding header",
                   "Transfer-Encoding");
  if (req.has_header("Transfer-Encoding") &&
      !iequals(req.get_header_value("Transfer-Encoding"), "chunked"))
    return refused(
        "Transfer-Encoding '" +
            printable_prefix(req.get_header_value("Transfer-Encoding"), 64) +
            "' is not accepted: send Content-Length, or Transfer-Encoding: chunked "
            "alone",
        "Transfer-Encoding");
  // cpp-httplib decodes gzip, deflate and brotli bodies itself, passes an
  // unknown coding through, and empties a body it cannot decode: a body is
  // only ever taken as sent, so any Content-Encoding is refused before it
  // is read.
  if (req.has_header("Content-Encoding"))
    return refused(
        "Content-Encoding '" +
            printable_prefix(req.get_header_value("Content-Encoding"), 64) +
            "' is not accepted: send the body uncompressed, without Content-Encoding",
        "Content-Encoding");
  // A header cpp-httplib split at its colon but whose name is not a token
  // (`Bad Header: x`, `Content-Length : 5`, `: x`) is refused, and the
  // connection closed, for the same reason: a proxy may read it as a
  // header meshd never saw (RFC 9112, 5.1). A line with no colon at all
  // never reaches meshd.
  // A NUL or a bare CR in a value is refused likewise (RFC 9110, 5.5): a
  // proxy may cut the value there, or read a line break.
  for (auto& [name, value] : req.headers) {
    if (!is_token(name))
      return refused("header name '" + printable_prefix(name, 64) +
                         "' is not a token: letters, digits and "
                         "!#$%&'*+-.^_`|~ only, no spaces, not empty",
                     "headers");
    if (value.find_first_of(std::string_view{"\0\r", 2}) != std::string::npos)
      return refused("header '" + printable_prefix(name, 64) +
                         "' has a NUL or a bare CR in its value",
                     "headers");
  }
  // cpp-httplib reads a body only for POST, PUT, PATCH and DELETE. Bytes a
  // GET (HEAD, OPTIONS) announces would be read as the next request on
  // the connection, where a proxy sees a body: refused, and the
  // connection closed, before they are looked at.
  bool reads_body = req.method == "POST" || req.method == "PUT" ||
                    req.method == "PATCH" || req.method == "DELETE";
  auto length = req.get_header_value("Content-Length");
  bool announces_bytes =
      lengths == 1 && (length.find_first_not_of("0 \t") != std::string::npos ||
                       length.find('0') == std::string::npos);
  if (!reads_body && (req.has_header("Transfer-Encoding") || announces_bytes))
    return refused("a " + printable_prefix(req.method, 16) + " request takes no body",
                   "body");
  // cpp-httplib reads no chunked body of a DELETE (only one with a
  // Content-Length): it would be served as if it had none. No DELETE of
  // meshd's takes a body.
  if (req.method == "DELETE" && req.has_header("Transfer-Encoding"))
    return refused("a DELETE request takes no body", "body");
  // Two types: meshd would read the first, a proxy perhaps the last (and
  // let a multipart body through as JSON, or the other way round).
  if (req.get_header_value_count("Content-Type") > 1)
    return refused("the request has more than one Content-Type header", "Content-Type");
  // Two credentials: which one a proxy checked is anyone's guess.
  if (req.get_header_value_count("Authorization") > 1)
    return refused("the request has more than one Authorization header", "Authorization");
  return std::nullopt;
}

} // namespace polymesh
