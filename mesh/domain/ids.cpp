#include "mesh/domain/ids.hpp"

#include <array>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <stdexcept>

namespace polymesh {

namespace {

void random_bytes(unsigned char* out, int n) {
  if (RAND_bytes(out, n) != 1)
    throw std::runtime_error("RAND_bytes failed: the system has no entropy source");
}

} // namespace

std::string new_id(const std::string& prefix) {
  static constexpr char alphabet[] = "abcdefghijklmnopqrstuvwxyz234567";
  std::array<unsigned char, 26> bytes{};
  random_bytes(bytes.data(), static_cast<int>(bytes.size()));
  std::string out = prefix;
  out += '_';
  for (auto b : bytes)
    out += alphabet[b & 31];
  return out;
}

std::string new_secret() {
  static constexpr char alphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  std::array<unsigned char, 43> bytes{};
  random_bytes(bytes.data(), static_cast<int>(bytes.size()));
  std::string out;
  out.reserve(bytes.size());
  for (auto b : bytes)
    out += alphabet[b & 63];
  return out;
}

std::string hex_of(const unsigned char* bytes, size_t n) {
  static constexpr char hex[] = "0123456789abcdef";
  std::string out;
  out.reserve(n * 2);
  for (size_t i = 0; i < n; ++i) {
    out += hex[bytes[i] >> 4];
    out += hex[bytes[i] & 15];
  }
  return out;
}

std::string sha256_hex(const std::string& text) {
  std::array<unsigned char, SHA256_DIGEST_LENGTH> digest{};
  SHA256(reinterpret_cast<const unsigned char*>(text.data()), text.size(), digest.data());
  return hex_of(digest.data(), digest.size());
}

bool constant_time_equal(const std::string& a, const std::string& b) {
  if (a.size() != b.size()) return false;
  return CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

} // namespace polymesh
