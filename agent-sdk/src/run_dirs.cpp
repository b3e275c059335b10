#include "run_dirs.hpp"

#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

namespace polymesh::sdk {

namespace fs = std::filesystem;

namespace {

constexpr std::string_view spare_prefix = ".spare-";

/// The entries of `dir`, or nothing (and `ec` set) when it cannot be read.
std::vector<fs::path> entries_of(const fs::path& dir, std::error_code& ec) {
  std::vector<fs::path> out;
  for (fs::directory_iterator it{dir, ec}, end; !ec && it != end; it.increment(ec))
    out.push_back(it->path());
  return out;
}

/// Gives every real directory under `dir` (itself included; symlinks are
/// not followed) its owner's full rights, so that what a plan made
/// unreadable or unwritable (`chmod 000`) can be removed. Without
/// recursion: a plan may nest directories deeper than a thread's stack.
/// Not as root, which removes them regardless: `fs::permissions` follows a
/// symlink that a process the plan left behind may swap in after the check,
/// and only root could then change what is not its own. Another user can
/// only change what it owns, which the plan could change itself.
void open_up(const fs::path& top) {
  if (::geteuid() == 0) return;
  std::vector<fs::path> todo{top};
  while (!todo.empty()) {
    auto dir = std::move(todo.back());
    todo.pop_back();
    std::error_code ec;
    if (!fs::is_directory(fs::symlink_status(dir, ec))) continue;
    fs::permissions(dir, fs::perms::owner_all, fs::perm_options::add, ec);
    for (auto& entry : entries_of(dir, ec))
      todo.push_back(std::move(entry));
  }
}

/// `fs::remove_all`, once more after `open_up` when it failed.
void remove_tree(const fs::path& p, std::error_code& ec) {
  fs::remove_all(p, ec);
  if (!ec) return;
  open_up(p);
  ec.clear();
  fs::remove_all(p, ec);
}

/// Whether `dir` is still what a spare was when it was kept: `work` and
/// `artifacts`, both real and empty directories, and nothing else. (A
/// spare that lost one of them is repaired by `prepare`.)
bool still_spare(const fs::path& dir) {
  std::error_code listed;
  auto entries = entries_of(dir, listed);
  if (listed) return false;
  for (auto& entry : entries) {
    std::error_code ec;
    auto name = entry.filename();
    if (name != "work" && name != "artifacts") return false;
    if (!fs::is_directory(fs::symlink_status(entry, ec)) || ec) return false;
    if (!fs::is_empty(entry, ec) || ec) return false;
  }
  return true;
}

/// Makes `p` a real directory with `perms`; false when it is not one.
bool is_plain_dir(const fs::path& p, fs::perms perms) {
  std::error_code ec;
  auto st = fs::symlink_status(p, ec);
  if (ec || !fs::is_directory(st)) return false;
  if (st.permissions() != perms) fs::permissions(p, perms, ec);
  return !ec;
}

/// openat(`dir`, `name`, `flags`) never following a symlink, then closes
/// `dir`; errno is openat's, ELOOP for any symlink.
int open_in(int dir, const std::string& name, int flags) {
  int fd = ::openat(dir, name.c_str(), flags | O_NOFOLLOW | O_CLOEXEC);
  int err = errno;
  struct stat st {};
  // With O_DIRECTORY a symlink fails with ENOTDIR.
  if (fd < 0 && err == ENOTDIR &&
      ::fstatat(dir, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(st.st_mode))
    err = ELOOP;
  ::close(dir);
  errno = err;
  return fd;
}

/// An open descriptor of the real directory `dir` holding its exclusive
/// `flock`; -1 with `held` set when someone else holds it; -1 alone when it
/// cannot be opened or locked at all (a file system without `flock`, such
/// as some NFS mounts: the directory then goes unlocked).
int lock_dir(const fs::path& dir, bool& held) {
  held = false;
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return -1;
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    held = errno == EWOULDBLOCK;
    ::close(fd);
    return -1;
  }
  return fd;
}

/// Whether `name` reads as a run id's directory (`run_…`), not a spare or
/// the agent's own files.
bool is_run_dir_name(const std::string& name) {
  return name.size() > 4 && name.compare(0, 4, "run_") == 0;
}

} // namespace

run_dirs::run_dirs(fs::path root)
    : root_(std::move(root)) {}

run_dirs::~run_dirs() {
  for (auto& [id, fd] : held_)
    ::close(fd);
}

fs::path run_dirs::path_of(const std::string& id) const {
  return root_ / id;
}

std::error_code run_dirs::prepare(const std::string& id) {
  auto dir = path_of(id);
  std::error_code ec;
  remove_tree(dir, ec); // left behind by an agent that died during the run
  if (ec) return ec;
  std::optional<fs::path> spare;
  {
    std::lock_guard<std::mutex> guard{mtx_};
    if (!spares_.empty()) {
      spare = std::move(spares_.back());
      spares_.pop_back();
    }
  }
  // The directory is made (or repaired) and locked under a spare's name,
  // which another agent's `sweep` leaves alone while we live, and reaches
  // the run's name locked.
  bool held = false;
  int fd = -1;
  bool reusable = spare && still_spare(*spare);
  if (reusable) fd = lock_dir(*spare, held);
  if (spare && (!reusable || held)) {
    // Changed since it was kept, by a process a plan left behind (a `work`
    // swapped for a symlink would make this run work elsewhere), or held by
    // a sweep that raced its retirement: a fresh one instead.
    if (fd >= 0) ::close(fd);
    fd = -1;
    remove_tree(*spare, ec);
    ec.clear();
    spare.reset();
  }
  if (!spare) {
    std::lock_guard<std::mutex> guard{mtx_};
    spare = root_ / (std::string{spare_prefix} + std::to_string(::getpid()) + "-" +
                     std::to_string(next_spare_++));
  }
  // Also for a kept spare: one that lost a directory gets it back.
  fs::create_directories(*spare / "work", ec);
  if (!ec) fs::create_directories(*spare / "artifacts", ec);
  if (!ec && fd < 0) fd = lock_dir(*spare, held);
  if (!ec) fs::rename(*spare, dir, ec);
  if (ec) {
    if (fd >= 0) ::close(fd);
    std::error_code ignored;
    remove_tree(*spare, ignored);
    return ec;
  }
  std::lock_guard<std::mutex> guard{mtx_};
  if (auto it = held_.find(id); it != held_.end()) {
    ::close(it->second);
    held_.erase(it);
  }
  if (fd >= 0) held_[id] = fd;
  if (!fresh_perms_) fresh_perms_ = fs::status(dir / "work", ec).permissions();
  return ec;
}

bool run_dirs::reset_for_reuse(const fs::path& dir) {
  std::optional<fs::perms> perms;
  {
    std::lock_guard<std::mutex> guard{mtx_};
    perms = fresh_perms_;
  }
  if (!perms || !is_plain_dir(dir, *perms)) return false;
  std::error_code ec;
  auto subdirs = entries_of(dir, ec);
  if (ec || subdirs.size() != 2) return false;
  for (auto& sub : subdirs) {
    if (sub.filename() != "work" && sub.filename() != "artifacts") return false;
    if (!is_plain_dir(sub, *perms)) return false;
    for (auto& entry : entries_of(sub, ec)) {
      remove_tree(entry, ec);
      if (ec) return false;
    }
    if (ec) return false;
  }
  return true;
}

std::error_code run_dirs::retire(const std::string& id, bool reusable) {
  auto dir = path_of(id);
  std::error_code ec;
  // The lock is kept until the directory has left the run's name: another
  // agent's sweep must not take it while it is emptied.
  int fd = -1;
  {
    std::lock_guard<std::mutex> guard{mtx_};
    if (auto it = held_.find(id); it != held_.end()) {
      fd = it->second;
      held_.erase(it);
    }
  }
  struct unlock {
    int fd;
    ~unlock() {
      if (fd >= 0) ::close(fd);
    }
  } release{fd};
  if (reusable && reset_for_reuse(dir)) {
    fs::path spare;
    {
      std::lock_guard<std::mutex> guard{mtx_};
      spare = root_ / (std::string{spare_prefix} + std::to_string(::getpid()) + "-" +
                       std::to_string(next_spare_++));
    }
    fs::rename(dir, spare, ec);
    if (!ec) {
      std::lock_guard<std::mutex> guard{mtx_};
      spares_.push_back(std::move(spare));
      return {};
    }
  }
  remove_tree(dir, ec);
  return ec;
}

void run_dirs::clear() {
  std::vector<fs::path> spares;
  {
    std::lock_guard<std::mutex> guard{mtx_};
    spares.swap(spares_);
  }
  std::error_code ec;
  for (auto& spare : spares)
    remove_tree(spare, ec);
}

void run_dirs::sweep() {
  std::error_code ec;
  for (auto& entry : entries_of(root_, ec)) {
    auto name = entry.filename().string();
    if (is_run_dir_name(name)) {
      // Nobody holds it: its agent was killed during the run. (Where locks
      // cannot be taken at all, run directories are left as they were.)
      bool held = false;
      if (int fd = lock_dir(entry, held); fd >= 0) {
        remove_tree(entry, ec);
        ::close(fd);
      }
      continue;
    }
    if (name.rfind(spare_prefix, 0) != 0) continue;
    // `.spare-<pid>-<n>`: another live agent's (a shared work_dir) stays.
    // The same pid is ours from before a restart (pid 1 in a container).
    char* end = nullptr;
    auto pid = std::strtol(name.c_str() + spare_prefix.size(), &end, 10);
    bool live_other = end && *end == '-' && pid > 0 && pid != ::getpid() &&
                      ::kill(static_cast<pid_t>(pid), 0) == 0;
    if (!live_other) remove_tree(entry, ec);
  }
}

size_t run_dirs::spares() const {
  std::lock_guard<std::mutex> guard{mtx_};
  return spares_.size();
}

std::string open_artifact(const fs::path& dir, const std::string& name, int& fd,
                          size_t& size) {
  auto failed = [](const std::string& what) {
    return errno == ELOOP ? what + " became a symlink"
                          : "cannot open " + what + ": " + std::strerror(errno);
  };
  fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return failed("the artifacts directory");
  size_t from = 0;
  for (size_t slash; (slash = name.find('/', from)) != std::string::npos;
       from = slash + 1) {
    fd = open_in(fd, name.substr(from, slash - from), O_RDONLY | O_DIRECTORY);
    if (fd < 0) return failed("its directory " + name.substr(0, slash));
  }
  fd = open_in(fd, name.substr(from), O_RDONLY | O_NONBLOCK);
  if (fd < 0) return failed("it");
  struct stat st {};
  std::string why;
  // The mesh's own limit (runs.max_artifact_bytes) is at most 512 MiB.
  constexpr off_t max_bytes = off_t{512} << 20;
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode))
    why = "it is no longer a regular file";
  else if (st.st_size > max_bytes)
    why = std::to_string(st.st_size) + " bytes is more than any mesh accepts";
  if (!why.empty()) {
    ::close(fd);
    fd = -1;
  }
  size = static_cast<size_t>(st.st_size);
  return why;
}

} // namespace polymesh::sdk
