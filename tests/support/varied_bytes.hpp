// Test data for artifacts: bytes that differ from one MiB to the next and
// within each, so that a part joined at a wrong offset shows.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace polymesh::test {

/// `size` pseudo-random bytes, the same for the same `seed`.
inline std::string varied_bytes(size_t size, uint32_t seed = 12345) {
  std::string out;
  out.reserve(size);
  for (size_t i = 0; i < size; ++i) {
    seed = seed * 1103515245u + 12345u;
    out.push_back(static_cast<char>(seed >> 23));
  }
  return out;
}

} // namespace polymesh::test
