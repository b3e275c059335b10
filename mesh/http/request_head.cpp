#include "mesh/http/request_head.hpp"

#include "mesh/http/framing.hpp"
#include "mesh/wire/json.hpp"

#include <cctype>
#include <vector>

namespace polymesh {

using wire::printable_prefix;

namespace {

head_refusal refused(std::string message, std::string field,
                     errc code = errc::invalid_argument) {
  return head_refusal{code, std::move(message), std::move(field)};
}

bool is_hex(char c) {
  return std::isxdigit(static_cast<unsigned char>(c)) != 0;
}

int hex_value(char c) {
  return c <= '9' ? c - '0' : (std::tolower(static_cast<unsigned char>(c)) - 'a' + 10);
}

/// `text` with its `%XX` escapes decoded (they are well formed).
std::string percent_decoded(std::string_view text) {
  std::string out;
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '%' && i + 2 < text.size() && is_hex(text[i + 1]) &&
        is_hex(text[i + 2])) {
      out += static_cast<char>(hex_value(text[i + 1]) * 16 + hex_value(text[i + 2]));
      i += 2;
    } else {
      out += text[i];
    }
  }
  return out;
}

/// Where in `text` a `%` is not followed by two hexadecimal digits, or npos.
size_t bad_escape_at(std::string_view text) {
  for (size_t i = 0; i < text.size(); ++i)
    if (text[i] == '%' &&
        (i + 2 >= text.size() || !is_hex(text[i + 1]) || !is_hex(text[i + 2])))
      return i;
  return std::string_view::npos;
}

/// Whether `text` holds a `%XX` escape.
bool has_escape(std::string_view text) {
  for (size_t i = 0; i + 2 < text.size(); ++i)
    if (text[i] == '%' && is_hex(text[i + 1]) && is_hex(text[i + 2])) return true;
  return false;
}

std::optional<head_refusal> target_refusal(std::string_view target) {
  auto shown = "'" + printable_prefix(std::string{target}, 64) + "'";
  if (target.empty() || target.front() != '/')
    return refused("the request target " + shown +
                       " is not a path: meshd takes the origin form (/v1/...), not an "
                       "absolute URL or '*'",
                   "path");
  for (unsigned char c : target)
    if (c <= 0x20 || c >= 0x7f)
      return refused("the request target " + shown +
                         " has a byte that is not printable ASCII: percent-encode it",
                     "path");
  if (target.find('#') != std::string_view::npos)
    return refused("the request target " + shown + " has a fragment ('#'); leave it out",
                   "path");
  if (auto at = bad_escape_at(target); at != std::string_view::npos)
    return refused("the request target " + shown + " has a '%' at byte " +
                       std::to_string(at) +
                       " that is not followed by two hexadecimal digits: write '%25' "
                       "for a '%'",
                   "path");
  // The router sees the path decoded: an encoded '/' would be a separator
  // to it and none to a proxy, a '.' or '..' segment one a proxy may
  // resolve. No name or id of meshd's has '/' or NUL, or is '.' or '..'.
  auto path = target.substr(0, target.find('?'));
  size_t start = 1;
  while (start <= path.size()) {
    auto end = path.find('/', start);
    if (end == std::string_view::npos) end = path.size();
    auto segment = percent_decoded(path.substr(start, end - start));
    if (segment.find('/') != std::string::npos)
      return refused("the path " + shown +
                         " has an encoded '/' (%2F) in a segment, which meshd does not "
                         "take: no name or id has one",
                     "path");
    if (segment.find('\0') != std::string::npos)
      return refused("the path " + shown + " has an encoded NUL (%00)", "path");
    if (segment == "." || segment == "..")
      return refused("the path " + shown +
                         " has a '.' or '..' segment, which meshd does not resolve: send "
                         "the path it stands for",
                     "path");
    start = end + 1;
  }
  return std::nullopt;
}

std::optional<head_refusal> request_line_refusal(std::string_view line) {
  if (line.size() > max_request_line_bytes)
    return refused("the request line is longer than 8192 bytes; shorten the URL (a "
                   "selector in a query string takes up to three times its length "
                   "once percent-encoded)",
                   "", errc::uri_too_long);
  if (line.empty())
    return refused("the request line is empty (a blank line before the request)", "");
  auto shown = "'" + printable_prefix(std::string{line}, 64) + "'";
  auto first = line.find(' ');
  auto second = first == std::string_view::npos ? first : line.find(' ', first + 1);
  if (second == std::string_view::npos || line.find(' ', second + 1) != std::string::npos)
    return refused("the request line " + shown +
                       " is not METHOD, the path and the HTTP version, each "
                       "separated by one space",
                   "");
  auto method = std::string{line.substr(0, first)};
  auto target = line.substr(first + 1, second - first - 1);
  auto version = line.substr(second + 1);
  if (!is_token(method))
    return refused("the request line " + shown + " has no method that is a token", "");
  if (version != "HTTP/1.1" && version != "HTTP/1.0")
    return refused("meshd speaks HTTP/1.0 and HTTP/1.1; the request line " + shown +
                       " says '" + printable_prefix(std::string{version}, 16) + "'",
                   "");
  return target_refusal(target);
}

/// Headers whose values meshd never reads and that clients may fill with
/// percent escapes of their own.
bool escapes_allowed(std::string_view name) {
  return iequals(name, "User-Agent") || iequals(name, "Referer") ||
         iequals(name, "Cookie");
}

/// How many lines of the headers that must come once a head has had so far,
/// counted here because the library drops a line without a value: a second
/// `Authorization:` left empty would pass its own count, and meshd would
/// take the other, which a proxy in front may not have checked.
struct once_headers {
  size_t hosts = 0;
  size_t authorizations = 0;
  size_t content_types = 0;
};

std::optional<head_refusal> header_line_refusal(std::string_view line, size_t number,
                                                once_headers& seen) {
  auto shown = "header line " + std::to_string(number);
  if (line.size() > max_request_line_bytes)
    return refused(shown + " is longer than 8192 bytes", "headers",
                   errc::header_too_large);
  if (line.front() == ' ' || line.front() == '\t')
    return refused(shown + " is folded onto the one before (it starts with a space or a "
                           "tab), which RFC 9112 forbids: send each header on one line",
                   "headers");
  auto colon = line.find(':');
  if (colon == std::string_view::npos)
    return refused(shown + " ('" + printable_prefix(std::string{line}, 64) +
                       "') has no ':' between a name and a value",
                   "headers");
  auto name = std::string{line.substr(0, colon)};
  if (!is_token(name))
    return refused("header name '" + printable_prefix(name, 64) +
                       "' is not a token: letters, digits and "
                       "!#$%&'*+-.^_`|~ only, no spaces, not empty",
                   "headers");
  auto value = line.substr(colon + 1);
  while (!value.empty() && (value.front() == ' ' || value.front() == '\t'))
    value.remove_prefix(1);
  while (!value.empty() && (value.back() == ' ' || value.back() == '\t'))
    value.remove_suffix(1);
  if (value.find_first_of(std::string_view{"\0\r", 2}) != std::string_view::npos)
    return refused("header '" + printable_prefix(name, 64) +
                       "' has a NUL or a bare CR in its value",
                   "headers");
  for (unsigned char c : value)
    if ((c < 0x20 && c != '\t') || c == 0x7f)
      return refused("header '" + printable_prefix(name, 64) +
                         "' has a control character in its value",
                     "headers");
  if (value.empty() &&
      (iequals(name, "Content-Length") || iequals(name, "Transfer-Encoding")))
    return refused("header '" + name + "' has no value", name);
  // The library drops a header without a value: an `If-Match: $ETAG` of an
  // unset variable would make a conditional change an unconditional one.
  if (value.empty() && (iequals(name, "If-Match") || iequals(name, "If-None-Match")))
    return refused("header '" + name +
                       "' has no value: send an entity tag (the ETag read), *, or no "
                       "such header",
                   name);
  // cpp-httplib decodes `%XX` in every header value: meshd would read
  // `Content-Length: 1%30` as 10 where a proxy reads no length at all.
  if (!escapes_allowed(name) && has_escape(value))
    return refused("header '" + printable_prefix(name, 64) +
                       "' has a percent escape (%XX) in its value, which meshd's HTTP "
                       "layer would decode: send the value as it is meant",
                   "headers");
  if (iequals(name, "Host") && ++seen.hosts > 1)
    return refused("the request has more than one Host header", "Host");
  if (iequals(name, "Authorization") && ++seen.authorizations > 1)
    return refused("the request has more than one Authorization header", "Authorization");
  if (iequals(name, "Content-Type") && ++seen.content_types > 1)
    return refused("the request has more than one Content-Type header", "Content-Type");
  return std::nullopt;
}

} // namespace

size_t head_end(std::string_view bytes) {
  size_t pos = 0;
  for (;;) {
    auto nl = bytes.find('\n', pos);
    if (nl == std::string_view::npos) return std::string_view::npos;
    auto line = bytes.substr(pos, nl - pos);
    if (line.empty() || line == "\r") return nl + 1;
    pos = nl + 1;
  }
}

std::optional<head_refusal> partial_head_refusal_of(std::string_view bytes) {
  auto first = bytes.find('\n');
  if ((first == std::string_view::npos ? bytes.size() : first) >
      max_request_line_bytes + 1)
    return request_line_refusal(bytes.substr(0, max_request_line_bytes + 1));
  if (bytes.size() > max_head_bytes)
    return refused("the request's header section is larger than " +
                       std::to_string(max_head_bytes / 1024) + " KiB",
                   "headers", errc::header_too_large);
  return std::nullopt;
}

std::optional<head_refusal> head_refusal_of(std::string_view head) {
  if (auto partial = partial_head_refusal_of(head)) return partial;
  std::vector<std::string_view> lines;
  size_t pos = 0;
  while (pos < head.size()) {
    auto nl = head.find('\n', pos);
    if (nl == std::string_view::npos) nl = head.size();
    lines.push_back(head.substr(pos, nl - pos));
    pos = nl + 1;
  }
  // The request line, the header lines, and the empty one that ends the head.
  if (lines.size() > max_header_lines + 2)
    return refused("the request has more than " + std::to_string(max_header_lines) +
                       " header lines",
                   "headers", errc::header_too_large);
  once_headers seen;
  for (size_t i = 0; i < lines.size(); ++i) {
    auto line = lines[i];
    auto what =
        i == 0 ? std::string{"the request line"} : "header line " + std::to_string(i);
    auto field = i == 0 ? "" : "headers";
    if (line.empty() || line.back() != '\r')
      return refused(what + " ends with a line feed alone: lines end with CR LF", field);
    line.remove_suffix(1);
    if (i == 0 && line.find('\r') != std::string_view::npos)
      return refused(what + " has a carriage return that does not end it", field);
    if (i == 0) {
      if (auto why = request_line_refusal(line)) return why;
      continue;
    }
    if (i + 1 == lines.size()) break; // the empty line that ends the head
    if (auto why = header_line_refusal(line, i, seen)) return why;
  }
  return std::nullopt;
}

} // namespace polymesh
