#include "mesh/wire/mesh_url.hpp"

#include <algorithm>

namespace polymesh::wire {

std::string mesh_url_problem(const std::string& url) {
  auto got = ", got '" + url + "'";
  auto scheme_end = url.find("://");
  if (scheme_end == std::string::npos || (url.compare(0, scheme_end, "http") != 0 &&
                                          url.compare(0, scheme_end, "https") != 0))
    return "mesh URL must start with http:// or https://" + got;
  // A path is a reverse proxy's prefix; a query or fragment has no place.
  if (url.find_first_of("?#", scheme_end + 3) != std::string::npos)
    return "mesh URL must be scheme://HOST[:PORT][/PATH] without a query or fragment" +
           got;
  auto authority_end = std::min(url.find('/', scheme_end + 3), url.size());
  auto authority = url.substr(scheme_end + 3, authority_end - scheme_end - 3);
  // HOST[:PORT], HOST possibly a bracketed IPv6 address.
  auto port_colon = authority.rfind(':');
  if (port_colon != std::string::npos &&
      authority.find(']', port_colon) != std::string::npos)
    port_colon = std::string::npos;
  auto host = authority.substr(0, port_colon);
  if (host.empty() || host == "[]") return "mesh URL has no host" + got;
  if (host.find_first_of(" \t\r\n@") != std::string::npos)
    return "mesh URL's host '" + host +
           "' has a space or '@' in it (a token is given apart, never in the URL)";
  if (port_colon == std::string::npos) return {};
  auto port = authority.substr(port_colon + 1);
  bool digits = !port.empty() && port.size() <= 5 &&
                port.find_first_not_of("0123456789") == std::string::npos;
  if (!digits || std::stoul(port) == 0 || std::stoul(port) > 65535)
    return "mesh URL's port must be 1 to 65535, got '" + port + "'";
  return {};
}

} // namespace polymesh::wire
