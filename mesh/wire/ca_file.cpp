#include "mesh/wire/ca_file.hpp"

#include <memory>
#include <openssl/err.h>
#include <openssl/pem.h>

namespace polymesh::wire {

bool holds_a_pem_certificate(const std::string& path) {
  std::unique_ptr<BIO, decltype(&BIO_free)> in{BIO_new_file(path.c_str(), "r"),
                                               &BIO_free};
  X509* cert = in ? PEM_read_bio_X509(in.get(), nullptr, nullptr, nullptr) : nullptr;
  ERR_clear_error();
  if (!cert) return false;
  X509_free(cert);
  return true;
}

} // namespace polymesh::wire
