// Where a cut of UTF-8 text may start without splitting a character.
//
// Thread-safety: a pure function.
#pragma once

#include <cstddef>
#include <string_view>

namespace polymesh::sdk {

/// The first index at or after `from` that does not fall inside a UTF-8
/// character: past at most three continuation bytes (`10xxxxxx`).
[[nodiscard]] inline size_t utf8_start(std::string_view s, size_t from) {
  for (int i = 0;
       i < 3 && from < s.size() && (static_cast<unsigned char>(s[from]) & 0xC0) == 0x80;
       ++i)
    ++from;
  return from;
}

} // namespace polymesh::sdk
