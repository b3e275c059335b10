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

std::string sha256_hex(const std::string& text) {
  std::array<unsigned char, SHA256_DIGEST_LENGTH> digest{};
  SHA256(reinterpret_cast<const unsigned char*>(text.data()), text.size(), digest.data());
  static constexpr char hex[] = "0123456789abcdef";
  std::string out;
  out.reserve(digest.size() * 2);
  for (auto b : digest) {
    out += hex[b >> 4];
    out += hex[b & 15];
  }
  return out;
}

bool constant_time_equal(const std::string& a, const std::string& b) {
  if (a.size() != b.size()) return false;
  return CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

} // namespace polymesh
