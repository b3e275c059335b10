#include "mesh/wire/mesh_url.hpp"

#include <algorithm>

namespace polymesh::wire {

std::string mesh_url_problem(const std::string& url) {
  auto scheme_end = url.find("://");
  auto authority_begin = scheme_end == std::string::npos ? 0 : scheme_end + 3;
  auto authority_end = std::min(url.find_first_of("/?#", authority_begin), url.size());
  auto authority = url.substr(authority_begin, authority_end - authority_begin);
  // First, and without quoting the URL: user:password@ would be a secret.
  if (authority.find('@') != std::string::npos)
    return "mesh URL must not hold a user or password (USER@HOST); a token is given "
           "apart, never in the URL";
  auto got = ", got '" + url + "'";
  if (scheme_end == std::string::npos || (url.compare(0, scheme_end, "http") != 0 &&
                                          url.compare(0, scheme_end, "https") != 0))
    return "mesh URL must start with http:// or https://" + got;
  // A path is a reverse proxy's prefix; a query or fragment has no place.
  if (url.find_first_of("?#", authority_begin) != std::string::npos)
    return "mesh URL must be scheme://HOST[:PORT][/PATH] without a query or fragment" +
           got;
  if (authority.find_first_of(" \t\r\n") != std::string::npos)
    return "mesh URL's host has a space in it" + got;
  // HOST[:PORT], HOST possibly a bracketed IPv6 address.
  auto port_colon = authority.rfind(':');
  if (port_colon != std::string::npos &&
      authority.find(']', port_colon) != std::string::npos)
    port_colon = std::string::npos;
  auto host = authority.substr(0, port_colon);
  if (host.empty() || host == "[]") return "mesh URL has no host" + got;
  bool bracketed = host.size() > 2 && host.front() == '[' && host.back() == ']';
  if (!bracketed && host.find_first_of(":[]") != std::string::npos)
    return "mesh URL's host '" + host +
           "' is not a name or an address (an IPv6 address goes in brackets: "
           "http://[::1]:7700)";
  if (port_colon == std::string::npos) return {};
  auto port = authority.substr(port_colon + 1);
  bool digits = !port.empty() && port.size() <= 5 &&
                port.find_first_not_of("0123456789") == std::string::npos;
  if (!digits || std::stoul(port) == 0 || std::stoul(port) > 65535)
    return "mesh URL's port must be 1 to 65535, got '" + port + "'";
  return {};
}

} // namespace polymesh::wire
