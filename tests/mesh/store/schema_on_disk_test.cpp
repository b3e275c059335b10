// The schema version `meshd --check` reads from a database's files without
// SQLite: the header, or the newest committed copy of it in the WAL, which
// is what the next open sees.
#include "mesh/domain/error.hpp"
#include "mesh/store/schema_on_disk.hpp"

#include <filesystem>
#include <fstream>
#include <gtest/gtest.h>
#include <sqlite3.h>
#include <unistd.h>

namespace polymesh::test {
namespace {

namespace fs = std::filesystem;

class schema_on_disk_test : public ::testing::Test {
protected:
  void SetUp() override {
    dir = fs::temp_directory_path() /
          ("polymesh-schema-on-disk-" + std::to_string(::getpid()) + "-" +
           ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir);
    fs::create_directories(dir);
  }
  void TearDown() override {
    if (live_ != nullptr) sqlite3_close(live_);
    fs::remove_all(dir);
  }

  /// A database kept open in WAL mode with no automatic checkpoint: what
  /// it writes stays in its `-wal`, as a killed meshd leaves it.
  void open_live() {
    ASSERT_EQ(sqlite3_open((dir / "live.db").c_str(), &live_), SQLITE_OK);
    exec("PRAGMA journal_mode = WAL");
    exec("PRAGMA wal_autocheckpoint = 0");
    exec("CREATE TABLE t (x)");
  }

  void exec(const std::string& sql) {
    ASSERT_EQ(sqlite3_exec(live_, sql.c_str(), nullptr, nullptr, nullptr), SQLITE_OK)
        << sqlite3_errmsg(live_);
  }

  /// The live database's files as they are now, copied to `copy.db`.
  std::string copy() {
    auto to = (dir / "copy.db").string();
    for (const char* suffix : {"", "-wal"}) {
      fs::remove(to + suffix);
      fs::copy_file((dir / "live.db").string() + suffix, to + suffix);
    }
    return to;
  }

  /// What `schema_version_on_disk` reads, -1 for an error.
  static int version_of(const std::string& db) {
    auto v = schema_version_on_disk(db);
    EXPECT_TRUE(v) << message_of(v.error());
    return v ? *v : -1;
  }

  static int header_version(const std::string& db) {
    std::ifstream in{db, std::ios::binary};
    unsigned char h[64] = {};
    in.read(reinterpret_cast<char*>(h), sizeof h);
    return (h[60] << 24) | (h[61] << 16) | (h[62] << 8) | h[63];
  }

  static void flip_byte(const std::string& file, std::streamoff at) {
    std::fstream f{file, std::ios::in | std::ios::out | std::ios::binary};
    f.seekg(at);
    char c = 0;
    f.get(c);
    f.seekp(at);
    f.put(static_cast<char>(c ^ 0x5a));
  }

  fs::path dir;
  sqlite3* live_ = nullptr;
};

// This test ensures a version committed to the WAL and not yet checkpointed
// is the one read, although the file's header still says the older one.
TEST_F(schema_on_disk_test, a_version_still_in_the_wal_is_read) {
  open_live();
  exec("PRAGMA user_version = 5");
  auto db = copy();
  EXPECT_EQ(header_version(db), 0) << "the header already had it: this tests nothing";
  EXPECT_EQ(version_of(db), 5);
  exec("PRAGMA user_version = 9");
  EXPECT_EQ(version_of(copy()), 9) << "the newest commit";
}

// This test ensures a torn last frame (a crash in the middle of writing it)
// ends the WAL where SQLite's recovery ends it: the commit before counts.
TEST_F(schema_on_disk_test, a_torn_last_frame_is_not_read) {
  open_live();
  exec("PRAGMA user_version = 5");
  exec("PRAGMA user_version = 9");
  auto db = copy();
  flip_byte(db + "-wal", static_cast<std::streamoff>(fs::file_size(db + "-wal")) - 1);
  EXPECT_EQ(version_of(db), 5);
}

// This test ensures a WAL whose header does not check out (another
// generation's, or damaged) is not read: the file's header counts.
TEST_F(schema_on_disk_test, a_damaged_wal_header_leaves_the_files_header) {
  open_live();
  exec("PRAGMA user_version = 5");
  auto db = copy();
  flip_byte(db + "-wal", 16); // the first salt
  EXPECT_EQ(version_of(db), 0);
}

// This test ensures a checkpointed database is read from its header, and
// that an empty file, a missing one and one that is no database are told
// apart.
TEST_F(schema_on_disk_test, the_header_counts_without_a_wal) {
  open_live();
  exec("PRAGMA user_version = 7");
  exec("PRAGMA wal_checkpoint(TRUNCATE)");
  auto db = copy();
  EXPECT_EQ(fs::file_size(db + "-wal"), 0u);
  EXPECT_EQ(version_of(db), 7);
  auto empty = (dir / "empty.db").string();
  std::ofstream{empty};
  EXPECT_EQ(version_of(empty), 0);
  auto other = (dir / "other.db").string();
  std::ofstream{other} << "not a database, but not empty either\n";
  auto not_db = schema_version_on_disk(other);
  ASSERT_FALSE(not_db);
  EXPECT_EQ(message_of(not_db.error()), "file is not a database");
  auto missing = schema_version_on_disk((dir / "missing.db").string());
  ASSERT_FALSE(missing);
  EXPECT_NE(message_of(missing.error()).find("cannot open it: No such file"),
            std::string::npos)
      << message_of(missing.error());
}

} // namespace
} // namespace polymesh::test
