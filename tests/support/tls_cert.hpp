// A throwaway TLS identity for tests: a self-signed certificate for
// 127.0.0.1 (as its subject alternative name, which clients verify) and its
// key, written as PEM files. The certificate is its own CA: a client that
// trusts the certificate file accepts a server presenting it.
#pragma once

#include <string>

namespace polymesh::test {

struct tls_files {
  std::string cert; ///< PEM certificate (also the CA file to trust)
  std::string key;  ///< PEM private key
};

/// Writes `dir`/cert.pem and `dir`/key.pem; throws std::runtime_error on
/// an OpenSSL failure.
tls_files write_self_signed_cert(const std::string& dir);

} // namespace polymesh::test
