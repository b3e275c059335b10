// What went wrong with a connection to the mesh, in words: the one wording
// of cpp-httplib's transport errors for both of the mesh's HTTP clients,
// the agent SDK and meshctl.
//
// Thread-safety: a pure function.
#pragma once

#include <httplib.h>
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

} // namespace polymesh
