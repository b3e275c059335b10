// What went wrong with a connection to the mesh, in words: the one wording
// of cpp-httplib's transport errors for both of the mesh's HTTP clients,
// the agent SDK and meshctl.
//
// Thread-safety: pure functions (`unresolved_host` asks the resolver).
#pragma once

#include <httplib.h>
#include <netdb.h>
#include <string>

namespace polymesh {

/// `err` in words an operator can act on.
[[nodiscard]] inline std::string describe_transport_error(httplib::Error err) {
  switch (err) {
  case httplib::Error::Connection:
    return "connection failed: nothing is listening there, or the host is unreachable";
  case httplib::Error::ConnectionTimeout: return "connection timed out";
  case httplib::Error::Read: return "the connection broke while reading the answer";
  case httplib::Error::Write: return "the connection broke while sending the request";
  case httplib::Error::SSLConnection: return "TLS handshake failed";
  case httplib::Error::SSLServerVerification:
    return "the server's TLS certificate is not trusted";
  case httplib::Error::SSLLoadingCerts: return "the CA file could not be loaded";
  case httplib::Error::Canceled: return "the request was canceled";
  default: return httplib::to_string(err);
  }
}

/// Why a connection to `origin` (scheme://host[:port]) failed when the host
/// name is what failed, e.g. "the host name 'mesh.example' does not
/// resolve (Name or service not known)"; "" when it resolves (or is an IP
/// address).
[[nodiscard]] inline std::string unresolved_host(const std::string& origin) {
  auto start = origin.find("://");
  auto host = origin.substr(start == std::string::npos ? 0 : start + 3);
  if (!host.empty() && host.front() == '[') return {}; // an IPv6 literal
  host = host.substr(0, host.find_first_of(":/"));
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  int rc = ::getaddrinfo(host.c_str(), nullptr, &hints, &found);
  if (found) ::freeaddrinfo(found);
  if (rc == 0) return {};
  return "the host name '" + host + "' does not resolve (" + ::gai_strerror(rc) + ")";
}

} // namespace polymesh
