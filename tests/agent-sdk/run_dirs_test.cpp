// The run directories and their reuse, on a real file system under a fresh
// temporary root per test.
#include "run_dirs.hpp"

#include <fstream>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

using namespace polymesh::sdk;
namespace fs = std::filesystem;

namespace {

class run_dirs_test : public ::testing::Test {
protected:
  void SetUp() override {
    auto tmpl = (fs::temp_directory_path() / "polymesh-run-dirs-XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    root_ = tmpl;
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(root_, ec);
  }

  /// The names under the root, sorted, spares shown as ".spare".
  std::vector<std::string> listing() const {
    std::vector<std::string> out;
    for (auto& e : fs::directory_iterator{root_}) {
      auto name = e.path().filename().string();
      out.push_back(name.rfind(".spare-", 0) == 0 ? ".spare" : name);
    }
    std::sort(out.begin(), out.end());
    return out;
  }

  static ino_t inode_of(const fs::path& p) {
    struct stat st {};
    EXPECT_EQ(::stat(p.c_str(), &st), 0) << p;
    return st.st_ino;
  }

  static void write_file(const fs::path& p, const std::string& text) {
    fs::create_directories(p.parent_path());
    std::ofstream{p} << text;
  }

  static bool is_empty_dir(const fs::path& p) {
    return fs::is_directory(fs::symlink_status(p)) && fs::is_empty(p);
  }

  fs::path root_;
};

} // namespace

// This test ensures a finished run's directories are emptied and handed to
// the next run under its own name, instead of being removed and made again.
TEST_F(run_dirs_test, finished_runs_directories_are_reused_empty) {
  run_dirs dirs{root_};
  ASSERT_FALSE(dirs.prepare("r1"));
  auto first = root_ / "r1";
  EXPECT_TRUE(is_empty_dir(first / "work"));
  EXPECT_TRUE(is_empty_dir(first / "artifacts"));
  auto work_inode = inode_of(first / "work");
  write_file(first / "work" / "deep" / "er" / "file.txt", "left behind");
  write_file(first / "artifacts" / "report.xml", "<x/>");

  ASSERT_FALSE(dirs.retire("r1"));
  EXPECT_EQ(dirs.spares(), 1u);
  EXPECT_EQ(listing(), std::vector<std::string>{".spare"});

  ASSERT_FALSE(dirs.prepare("r2"));
  EXPECT_EQ(dirs.spares(), 0u);
  EXPECT_EQ(listing(), std::vector<std::string>{"r2"});
  EXPECT_EQ(inode_of(root_ / "r2" / "work"), work_inode);
  EXPECT_TRUE(is_empty_dir(root_ / "r2" / "work"));
  EXPECT_TRUE(is_empty_dir(root_ / "r2" / "artifacts"));
}

// This test ensures permissions a plan changed do not carry over to the next
// run: the reused directories have those of freshly made ones.
TEST_F(run_dirs_test, reused_directories_get_fresh_permissions) {
  run_dirs dirs{root_};
  ASSERT_FALSE(dirs.prepare("r1"));
  auto fresh = fs::status(root_ / "r1" / "work").permissions();
  fs::permissions(root_ / "r1" / "work", fs::perms::owner_read | fs::perms::owner_exec);
  fs::permissions(root_ / "r1" / "artifacts", fs::perms::none);
  fs::permissions(root_ / "r1", fs::perms::owner_all);
  ASSERT_FALSE(dirs.retire("r1"));
  ASSERT_EQ(dirs.spares(), 1u);

  ASSERT_FALSE(dirs.prepare("r2"));
  EXPECT_EQ(fs::status(root_ / "r2").permissions(), fresh);
  EXPECT_EQ(fs::status(root_ / "r2" / "work").permissions(), fresh);
  EXPECT_EQ(fs::status(root_ / "r2" / "artifacts").permissions(), fresh);
}

// This test ensures a run's directory that holds more than what was handed
// out is removed whole, not kept.
TEST_F(run_dirs_test, directory_with_extra_entries_is_removed) {
  run_dirs dirs{root_};
  ASSERT_FALSE(dirs.prepare("r1"));
  write_file(root_ / "r1" / "beside.txt", "outside work/");
  ASSERT_FALSE(dirs.retire("r1"));
  EXPECT_EQ(dirs.spares(), 0u);
  EXPECT_TRUE(listing().empty());

  ASSERT_FALSE(dirs.prepare("r2"));
  fs::remove(root_ / "r2" / "artifacts");
  ASSERT_FALSE(dirs.retire("r2"));
  EXPECT_EQ(dirs.spares(), 0u);
  EXPECT_TRUE(listing().empty());
}

// This test ensures a plan that replaced its work directory by a symlink
// gets the link removed, never what it points at, and nothing kept.
TEST_F(run_dirs_test, symlinked_work_directory_is_not_followed) {
  run_dirs dirs{root_};
  auto outside = root_.parent_path() / (root_.filename().string() + "-outside");
  fs::create_directories(outside);
  write_file(outside / "precious", "keep me");
  ASSERT_FALSE(dirs.prepare("r1"));
  fs::remove(root_ / "r1" / "work");
  fs::create_directory_symlink(outside, root_ / "r1" / "work");
  ASSERT_FALSE(dirs.retire("r1"));
  EXPECT_EQ(dirs.spares(), 0u);
  EXPECT_TRUE(listing().empty());
  EXPECT_TRUE(fs::exists(outside / "precious"));
  fs::remove_all(outside);
}

// This test ensures a spare changed after it was kept (by a process a plan
// left behind) is not handed to the next run: a `work` swapped for a
// symlink, or a file planted in it, and the next run gets fresh, empty
// directories of its own; nothing outside is touched.
TEST_F(run_dirs_test, a_spare_changed_while_kept_is_not_reused) {
  run_dirs dirs{root_};
  auto outside = root_.parent_path() / (root_.filename().string() + "-outside");
  fs::create_directories(outside);
  write_file(outside / "precious", "keep me");
  ASSERT_FALSE(dirs.prepare("r1"));
  ASSERT_FALSE(dirs.retire("r1"));
  ASSERT_EQ(dirs.spares(), 1u);
  fs::path spare = fs::directory_iterator {
    root_
    } -> path();
  fs::remove(spare / "work");
  fs::create_directory_symlink(outside, spare / "work");
  ASSERT_FALSE(dirs.prepare("r2"));
  EXPECT_TRUE(is_empty_dir(root_ / "r2" / "work"));
  EXPECT_TRUE(is_empty_dir(root_ / "r2" / "artifacts"));
  EXPECT_TRUE(fs::exists(outside / "precious"));

  ASSERT_FALSE(dirs.retire("r2"));
  spare = fs::directory_iterator {
    root_
    } -> path();
  write_file(spare / "artifacts" / ".bashrc", "planted");
  ASSERT_FALSE(dirs.prepare("r3"));
  EXPECT_TRUE(is_empty_dir(root_ / "r3" / "artifacts"));
  fs::remove_all(outside);
}

// This test ensures what a plan made unreadable and unwritable (`chmod 000`
// on a directory in its work dir) is removed after the run all the same.
// Root removes it regardless of the modes, so as root the check runs in a
// child process as `nobody` (uid 65534), which then owns the root.
TEST_F(run_dirs_test, a_directory_the_plan_locked_is_removed_all_the_same) {
  auto check = [this]() -> int {
    run_dirs dirs{root_};
    if (dirs.prepare("r1")) return 1;
    auto locked = root_ / "r1" / "work" / "d";
    write_file(locked / "e" / "f", "x");
    std::error_code ec;
    fs::permissions(locked / "e", fs::perms::none, ec);
    fs::permissions(locked, fs::perms::none, ec);
    if (ec) return 2;
    if (dirs.retire("r1")) return 3;
    return fs::exists(root_ / "r1", ec) ? 4 : 0;
  };
  if (::geteuid() != 0) {
    EXPECT_EQ(check(), 0);
    return;
  }
  constexpr uid_t nobody = 65534;
  ASSERT_EQ(::chown(root_.c_str(), nobody, nobody), 0);
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    if (::setgid(nobody) != 0 || ::setuid(nobody) != 0) ::_exit(10);
    ::_exit(check());
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0)
      << "1 prepare, 2 chmod, 3 retire failed, 4 left behind, "
         "10 cannot become nobody";
}

// This test ensures a run's path left behind by an agent that died is
// cleared before the run starts, and a spare that lost a directory gets it
// back.
TEST_F(run_dirs_test, leftovers_are_cleared_and_spares_repaired) {
  write_file(root_ / "r1" / "work" / "stale", "from a crashed agent");
  run_dirs dirs{root_};
  ASSERT_FALSE(dirs.prepare("r1"));
  EXPECT_TRUE(is_empty_dir(root_ / "r1" / "work"));
  ASSERT_FALSE(dirs.retire("r1"));
  ASSERT_EQ(dirs.spares(), 1u);
  for (auto& e : fs::directory_iterator{root_})
    fs::remove(e.path() / "artifacts");

  ASSERT_FALSE(dirs.prepare("r2"));
  EXPECT_TRUE(is_empty_dir(root_ / "r2" / "work"));
  EXPECT_TRUE(is_empty_dir(root_ / "r2" / "artifacts"));
}

// This test ensures `sweep` removes only spares of processes that are gone
// (or of this pid, from before a restart) and `clear` this object's own,
// leaving runs' directories and a live agent's spares alone.
TEST_F(run_dirs_test, sweep_and_clear_remove_only_spares) {
  auto live = root_ / (".spare-" + std::to_string(::getppid()) + "-0");
  fs::create_directories(live / "work");
  fs::create_directories(root_ / ".spare-999999999-0" / "work");
  fs::create_directories(root_ / (".spare-" + std::to_string(::getpid()) + "-3"));
  fs::create_directories(root_ / ".spare-garbage");
  fs::create_directories(root_ / "r-running" / "work");
  write_file(root_ / ".hidden-file", "not ours");
  run_dirs dirs{root_};
  dirs.sweep();
  EXPECT_EQ(listing(), (std::vector<std::string>{".hidden-file", ".spare", "r-running"}));
  EXPECT_TRUE(fs::exists(live));
  fs::remove_all(live);

  ASSERT_FALSE(dirs.prepare("r1"));
  ASSERT_FALSE(dirs.retire("r1"));
  ASSERT_FALSE(dirs.prepare("r2"));
  ASSERT_FALSE(dirs.prepare("r3"));
  ASSERT_FALSE(dirs.retire("r2"));
  ASSERT_FALSE(dirs.retire("r3"));
  EXPECT_EQ(dirs.spares(), 2u);
  dirs.clear();
  EXPECT_EQ(dirs.spares(), 0u);
  EXPECT_EQ(listing(), (std::vector<std::string>{".hidden-file", "r-running"}));
}

// This test ensures the directory of a run whose agent was killed during it
// (nobody holds its lock) is removed by the next agent's sweep, while the
// directory of a run another live agent sharing the work root has is kept:
// each crash used to leave a run's directory in the work root for good.
TEST_F(run_dirs_test, sweep_removes_run_directories_nobody_holds) {
  run_dirs live{root_};
  ASSERT_FALSE(live.prepare("run_live"));
  fs::create_directories(root_ / "run_killed" / "work");
  write_file(root_ / "run_killed" / "work" / "partial", "x");
  run_dirs next{root_};
  next.sweep();
  EXPECT_EQ(listing(), (std::vector<std::string>{"run_live"}));
  EXPECT_TRUE(is_empty_dir(root_ / "run_live" / "work"));
  ASSERT_FALSE(live.retire("run_live"));
  // Once retired it is nobody's run: a spare of the live agent now.
  EXPECT_EQ(listing(), (std::vector<std::string>{".spare"}));
}

namespace {

/// What `open_artifact` says of `name` under `dir` ("" when it opened), and
/// the bytes it opened.
std::pair<std::string, std::string> open_and_read(const fs::path& dir,
                                                  const std::string& name) {
  int fd = -1;
  size_t size = 0;
  auto err = open_artifact(dir, name, fd, size);
  if (!err.empty()) return {err, ""};
  std::string bytes(size, '\0');
  auto n = ::pread(fd, bytes.data(), size, 0);
  ::close(fd);
  bytes.resize(n < 0 ? 0 : static_cast<size_t>(n));
  return {"", bytes};
}

} // namespace

// This test ensures an artifact is opened only through real directories: a
// directory on its path, or the file itself, swapped for a symlink after
// the listing (by a process the plan left behind) is refused, not followed
// to what it points at; a FIFO is refused without blocking.
TEST_F(run_dirs_test, an_artifact_is_never_opened_through_a_symlink) {
  auto dir = root_ / "artifacts";
  write_file(dir / "reports" / "deep" / "junit.xml", "<ok/>");
  write_file(root_ / "secret" / "deep" / "junit.xml", "token");
  EXPECT_EQ(open_and_read(dir, "reports/deep/junit.xml"),
            (std::pair<std::string, std::string>{"", "<ok/>"}));

  fs::rename(dir / "reports", root_ / "was-reports");
  fs::create_directory_symlink(root_ / "secret", dir / "reports");
  EXPECT_EQ(open_and_read(dir, "reports/deep/junit.xml").first,
            "its directory reports became a symlink");
  fs::remove(dir / "reports");
  fs::create_directories(dir / "reports");
  fs::create_directory_symlink(root_ / "secret" / "deep", dir / "reports" / "deep");
  EXPECT_EQ(open_and_read(dir, "reports/deep/junit.xml").first,
            "its directory reports/deep became a symlink");

  fs::create_symlink(root_ / "secret" / "deep" / "junit.xml", dir / "plain.txt");
  EXPECT_EQ(open_and_read(dir, "plain.txt").first, "it became a symlink");
  ASSERT_EQ(::mkfifo((dir / "fifo").c_str(), 0600), 0);
  EXPECT_EQ(open_and_read(dir, "fifo").first, "it is no longer a regular file");
  EXPECT_EQ(open_and_read(dir, "gone.txt").first,
            "cannot open it: No such file or directory");
}
