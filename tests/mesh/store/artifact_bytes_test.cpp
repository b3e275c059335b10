// An artifact's bytes on their way into the store, in memory or spooled to
// an unlinked file: what is appended reads back alike, with its size and
// sha256, and a spool leaves nothing behind.
#include "mesh/domain/error.hpp"
#include "mesh/domain/ids.hpp"
#include "mesh/store/artifact_bytes.hpp"
#include "tests/support/varied_bytes.hpp"

#include <filesystem>
#include <gtest/gtest.h>

namespace polymesh::test {
namespace {

namespace fs = std::filesystem;

class artifact_bytes_test : public ::testing::Test {
protected:
  void SetUp() override {
    dir = fs::temp_directory_path() /
          ("polymesh-artifact-bytes-" + std::to_string(::getpid()) + "-" +
           ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir);
    fs::create_directories(dir);
  }
  void TearDown() override { fs::remove_all(dir); }

  fs::path dir;
};

// This test ensures bytes appended in pieces of any size read back alike
// from memory and from a spool, part by part and across part boundaries,
// with their size and sha256.
TEST_F(artifact_bytes_test, appended_bytes_read_back_alike_in_memory_and_spooled) {
  auto whole = varied_bytes((1 << 20) * 2 + 12345);
  auto spooled = artifact_bytes::spool_in(dir.string());
  ASSERT_TRUE(spooled) << message_of(spooled.error());
  artifact_bytes memory;
  for (auto* bytes : {&memory, &*spooled}) {
    size_t at = 0;
    for (size_t piece : {size_t{1}, size_t{1000}, size_t{(1 << 20) + 3}, size_t{70000}}) {
      ASSERT_FALSE(bytes->append(whole.data() + at, piece));
      at += piece;
    }
    ASSERT_FALSE(bytes->append(whole.data() + at, whole.size() - at));
    EXPECT_EQ(bytes->size(), static_cast<int64_t>(whole.size()));
    EXPECT_EQ(bytes->sha256_hex(), sha256_hex(whole));
    std::string buffer;
    for (auto [start, n] : {std::pair<int64_t, int64_t>{0, 1 << 20},
                            {(1 << 20) - 7, 1 << 20},
                            {static_cast<int64_t>(whole.size()) - 2, 10}}) {
      auto part = bytes->read_part(start, n, buffer);
      ASSERT_TRUE(part) << message_of(part.error());
      EXPECT_EQ(std::string{*part},
                whole.substr(static_cast<size_t>(start), static_cast<size_t>(n)))
          << start;
    }
    auto past = bytes->read_part(static_cast<int64_t>(whole.size()), 5, buffer);
    ASSERT_TRUE(past);
    EXPECT_TRUE(past->empty());
  }
  // Bytes given whole are the same as bytes appended.
  artifact_bytes given{whole};
  EXPECT_EQ(given.sha256_hex(), sha256_hex(whole));
  EXPECT_EQ(artifact_bytes{}.sha256_hex(), sha256_hex(""));
}

// This test ensures a spool never shows up as a file in its directory (a
// crash leaves nothing to clean up), a copy reads the same bytes, and a
// directory it cannot use is named in the error.
TEST_F(artifact_bytes_test, a_spool_leaves_no_file_and_names_a_directory_it_cannot_use) {
  {
    auto spooled = artifact_bytes::spool_in(dir.string());
    ASSERT_TRUE(spooled) << message_of(spooled.error());
    ASSERT_FALSE(spooled->append("abc", 3));
    EXPECT_TRUE(fs::is_empty(dir));
    auto copy = *spooled;
    std::string buffer;
    auto part = copy.read_part(1, 5, buffer);
    ASSERT_TRUE(part);
    EXPECT_EQ(*part, "bc");
  }
  EXPECT_TRUE(fs::is_empty(dir));
  auto missing = artifact_bytes::spool_in((dir / "missing").string());
  ASSERT_FALSE(missing);
  EXPECT_NE(message_of(missing.error()).find((dir / "missing").string()),
            std::string::npos)
      << message_of(missing.error());
}

} // namespace
} // namespace polymesh::test
