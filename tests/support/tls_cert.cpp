#include "tests/support/tls_cert.hpp"

#include <cstdio>
#include <functional>
#include <memory>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdexcept>

namespace polymesh::test {

namespace {

void check(bool ok, const char* what) {
  if (!ok) throw std::runtime_error(std::string{"tls_cert: "} + what + " failed");
}

void write_pem(const std::string& path, const std::function<int(FILE*)>& write) {
  std::unique_ptr<FILE, int (*)(FILE*)> f{std::fopen(path.c_str(), "w"), &std::fclose};
  check(f != nullptr, "fopen");
  check(write(f.get()) == 1, "PEM write");
}

} // namespace

tls_files write_self_signed_cert(const std::string& dir) {
  std::unique_ptr<EVP_PKEY, void (*)(EVP_PKEY*)> key{EVP_EC_gen("P-256"), &EVP_PKEY_free};
  check(key != nullptr, "EVP_EC_gen");
  std::unique_ptr<X509, void (*)(X509*)> cert{X509_new(), &X509_free};
  check(cert != nullptr, "X509_new");
  check(X509_set_version(cert.get(), 2) == 1, "X509_set_version");
  check(ASN1_INTEGER_set(X509_get_serialNumber(cert.get()), 1) == 1, "serial");
  check(X509_gmtime_adj(X509_getm_notBefore(cert.get()), -60) != nullptr, "notBefore");
  check(X509_gmtime_adj(X509_getm_notAfter(cert.get()), 24 * 3600) != nullptr,
        "notAfter");
  check(X509_set_pubkey(cert.get(), key.get()) == 1, "X509_set_pubkey");
  auto* name = X509_get_subject_name(cert.get());
  check(X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                                   reinterpret_cast<const unsigned char*>("127.0.0.1"),
                                   -1, -1, 0) == 1,
        "subject");
  check(X509_set_issuer_name(cert.get(), name) == 1, "issuer");
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, cert.get(), cert.get(), nullptr, nullptr, 0);
  for (auto [nid, value] : {std::pair{NID_subject_alt_name, "IP:127.0.0.1"},
                            std::pair{NID_basic_constraints, "critical,CA:TRUE"}}) {
    auto* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value);
    check(ext != nullptr, "extension");
    check(X509_add_ext(cert.get(), ext, -1) == 1, "X509_add_ext");
    X509_EXTENSION_free(ext);
  }
  check(X509_sign(cert.get(), key.get(), EVP_sha256()) > 0, "X509_sign");
  tls_files out{dir + "/cert.pem", dir + "/key.pem"};
  write_pem(out.cert, [&](FILE* f) { return PEM_write_X509(f, cert.get()); });
  write_pem(out.key, [&](FILE* f) {
    return PEM_write_PrivateKey(f, key.get(), nullptr, nullptr, 0, nullptr, nullptr);
  });
  return out;
}

} // namespace polymesh::test
