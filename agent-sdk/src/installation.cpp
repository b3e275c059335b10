#include "installation.hpp"

#include "mesh/wire/json.hpp"

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <random>
#include <sys/file.h>
#include <unistd.h>

namespace polymesh::sdk {

namespace {

/// What the file says, up to 128 bytes.
std::string read_head(int fd) {
  char buf[128];
  auto n = ::pread(fd, buf, sizeof buf, 0);
  return n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string{};
}

/// The file's first line when it is an id the mesh accepts, else "".
std::string id_in(const std::string& text) {
  auto line = text.substr(0, text.find('\n'));
  return wire::valid_instance(line) ? line : std::string{};
}

std::string new_id() {
  std::random_device rd;
  static const char hex[] = "0123456789abcdef";
  std::string out;
  for (int i = 0; i < 4; ++i) {
    auto x = rd();
    for (int k = 0; k < 8; ++k, x >>= 4)
      out += hex[x & 0xf];
  }
  return out;
}

} // namespace

installation::~installation() {
  release();
}

void installation::release() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

std::string installation::claim(const std::filesystem::path& root,
                                const std::string& name) {
  auto path = root / (".agent-" + name);
  auto problem = [&](const std::string& why) {
    return "work_dir: cannot use " + path.string() + ": " + why;
  };
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) return problem(std::strerror(errno));
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    int err = errno;
    auto text = read_head(fd);
    ::close(fd);
    if (err != EWOULDBLOCK) return problem(std::strerror(err));
    auto nl = text.find('\n');
    auto pid = nl == std::string::npos ? std::string{} : text.substr(nl + 1);
    pid = pid.substr(0, pid.find('\n'));
    return "work_dir: agent '" + name + "' already runs from " + root.string() +
           (pid.empty() ? std::string{} : " (pid " + pid + ")") +
           "; stop it first, or give this agent a name of its own";
  }
  auto id = id_in(read_head(fd));
  bool fresh = id.empty();
  if (fresh) id = new_id();
  // Written over the old text, then cut to length: a crash in between keeps
  // the id. Only a new id must reach the disk; the pid is for the message
  // above, and a full disk must not stop an agent whose id is kept.
  auto text = id + "\n" + std::to_string(::getpid()) + "\n";
  bool written =
      ::pwrite(fd, text.data(), text.size(), 0) == static_cast<ssize_t>(text.size()) &&
      ::ftruncate(fd, static_cast<off_t>(text.size())) == 0;
  if (fresh && (!written || ::fsync(fd) != 0)) {
    int err = errno;
    ::close(fd);
    return problem(std::strerror(err));
  }
  release();
  fd_ = fd;
  id_ = std::move(id);
  return {};
}

} // namespace polymesh::sdk
