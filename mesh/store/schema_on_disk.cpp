#include "mesh/store/schema_on_disk.hpp"

#include "mesh/domain/error.hpp"
#include "mesh/store/store.hpp"

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <vector>

namespace polymesh {

namespace {

uint32_t big_endian(const unsigned char* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) |
         uint32_t{p[3]};
}

uint32_t little_endian(const unsigned char* p) {
  return (uint32_t{p[3]} << 24) | (uint32_t{p[2]} << 16) | (uint32_t{p[1]} << 8) |
         uint32_t{p[0]};
}

/// The WAL's running checksum over `n` bytes (a multiple of 8), its words
/// in the byte order the WAL's magic number names (fileformat2.html, 4.1).
void add_checksum(const unsigned char* data, size_t n, bool big, uint32_t& s0,
                  uint32_t& s1) {
  auto word = [&](const unsigned char* p) {
    return big ? big_endian(p) : little_endian(p);
  };
  for (size_t i = 0; i + 8 <= n; i += 8) {
    s0 += word(data + i) + s1;
    s1 += word(data + i + 4) + s0;
  }
}

/// Bytes 60..63 of a database header: `PRAGMA user_version`.
int user_version(const unsigned char* header) {
  return static_cast<int>(big_endian(header + 60));
}

} // namespace

std::optional<int> wal_schema_version(const std::string& wal) {
  std::ifstream in{wal, std::ios::binary};
  unsigned char header[32];
  if (!in || !in.read(reinterpret_cast<char*>(header), sizeof header))
    return std::nullopt;
  uint32_t magic = big_endian(header);
  if ((magic & ~uint32_t{1}) != 0x377f0682) return std::nullopt;
  bool big = (magic & 1) != 0;
  uint32_t page_size = big_endian(header + 8);
  if (page_size < 512 || page_size > 65536 || (page_size & (page_size - 1)) != 0)
    return std::nullopt;
  uint32_t s0 = 0;
  uint32_t s1 = 0;
  add_checksum(header, 24, big, s0, s1);
  if (s0 != big_endian(header + 24) || s1 != big_endian(header + 28)) return std::nullopt;
  // Each frame: page number, the database's size in pages on a commit (else
  // 0), the WAL's two salts, the running checksum; then the page. The first
  // frame that does not check out ends the WAL, as it does for SQLite.
  std::vector<unsigned char> frame(24 + size_t{page_size});
  std::optional<int> seen;
  std::optional<int> committed;
  while (in.read(reinterpret_cast<char*>(frame.data()),
                 static_cast<std::streamsize>(frame.size()))) {
    if (std::memcmp(frame.data() + 8, header + 16, 8) != 0) break;
    add_checksum(frame.data(), 8, big, s0, s1);
    add_checksum(frame.data() + 24, page_size, big, s0, s1);
    if (s0 != big_endian(frame.data() + 16) || s1 != big_endian(frame.data() + 20)) break;
    if (big_endian(frame.data()) == 1) seen = user_version(frame.data() + 24);
    if (big_endian(frame.data() + 4) != 0) committed = seen;
  }
  return committed;
}

caf::expected<int> schema_version_on_disk(const std::string& path) {
  std::ifstream in{path, std::ios::binary};
  if (!in) {
    int os = errno;
    return make_error(errc::invalid_argument,
                      "cannot open it: " + std::string{std::strerror(os)} +
                          database_permission_hint(os));
  }
  unsigned char header[100] = {};
  in.read(reinterpret_cast<char*>(header), sizeof header);
  static constexpr char magic[] = "SQLite format 3";
  auto got = in.gcount();
  if (got > 0 && (got < static_cast<std::streamsize>(sizeof header) ||
                  std::memcmp(header, magic, sizeof magic) != 0))
    return make_error(errc::invalid_argument, "file is not a database");
  if (auto in_wal = wal_schema_version(path + "-wal")) return *in_wal;
  return got == 0 ? 0 : user_version(header); // empty: a new mesh is started in it
}

} // namespace polymesh
