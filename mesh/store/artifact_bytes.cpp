#include "mesh/store/artifact_bytes.hpp"

#include "mesh/domain/error.hpp"
#include "mesh/domain/ids.hpp"

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdexcept>
#include <system_error>
#include <unistd.h>

namespace polymesh {

struct artifact_bytes::state {
  std::string memory;
  /// The spool file, or -1 for bytes in memory.
  int fd = -1;
  int64_t size = 0;
  EVP_MD_CTX* sha = nullptr;

  state()
      : sha(EVP_MD_CTX_new()) {
    if (sha == nullptr || EVP_DigestInit_ex(sha, EVP_sha256(), nullptr) != 1)
      throw std::runtime_error("cannot start a SHA-256 digest (OpenSSL)");
  }
  state(const state&) = delete;
  state& operator=(const state&) = delete;
  ~state() {
    if (fd >= 0) ::close(fd);
    EVP_MD_CTX_free(sha);
  }

  void hash(const char* data, size_t n) const {
    if (n > 0) EVP_DigestUpdate(sha, data, n);
  }
};

namespace {

std::string system_error_text(int err) {
  return std::error_code{err, std::generic_category()}.message();
}

} // namespace

artifact_bytes::artifact_bytes()
    : state_(std::make_shared<state>()) {}

artifact_bytes::artifact_bytes(std::string bytes)
    : artifact_bytes() {
  state_->hash(bytes.data(), bytes.size());
  state_->size = static_cast<int64_t>(bytes.size());
  state_->memory = std::move(bytes);
}

artifact_bytes::~artifact_bytes() = default;
artifact_bytes::artifact_bytes(const artifact_bytes&) = default;
artifact_bytes& artifact_bytes::operator=(const artifact_bytes&) = default;
artifact_bytes::artifact_bytes(artifact_bytes&&) noexcept = default;
artifact_bytes& artifact_bytes::operator=(artifact_bytes&&) noexcept = default;

caf::expected<artifact_bytes> artifact_bytes::spool_in(const std::string& dir) {
  artifact_bytes out;
  // Never linked where another process could open it; a crash leaves
  // nothing behind.
  int fd = ::open(dir.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
  if (fd < 0 && (errno == EOPNOTSUPP || errno == EISDIR || errno == EINVAL)) {
    // A file system without O_TMPFILE: a private name, unlinked at once.
    std::string name = dir + "/.artifact-upload-XXXXXX";
    fd = ::mkostemp(name.data(), O_CLOEXEC);
    if (fd >= 0) ::unlink(name.c_str());
  }
  if (fd < 0)
    return make_error(errc::store_failure, "cannot make a file in '" + dir +
                                               "' to receive an artifact upload into: " +
                                               system_error_text(errno));
  out.state_->fd = fd;
  return out;
}

caf::error artifact_bytes::append(const char* data, size_t n) {
  auto& st = *state_;
  if (st.fd < 0) {
    st.memory.append(data, n);
  } else {
    for (size_t done = 0; done < n;) {
      auto wrote = ::write(st.fd, data + done, n - done);
      if (wrote < 0 && errno == EINTR) continue;
      if (wrote < 0)
        return make_error(errc::store_failure,
                          "cannot write an artifact upload to its file: " +
                              system_error_text(errno));
      done += static_cast<size_t>(wrote);
    }
  }
  st.hash(data, n);
  st.size += static_cast<int64_t>(n);
  return {};
}

int64_t artifact_bytes::size() const {
  return state_->size;
}

std::string artifact_bytes::sha256_hex() const {
  std::array<unsigned char, EVP_MAX_MD_SIZE> digest{};
  unsigned int length = 0;
  // The digest goes on; a copy of it is finished.
  EVP_MD_CTX* copy = EVP_MD_CTX_new();
  if (copy == nullptr || EVP_MD_CTX_copy_ex(copy, state_->sha) != 1 ||
      EVP_DigestFinal_ex(copy, digest.data(), &length) != 1) {
    EVP_MD_CTX_free(copy);
    throw std::runtime_error("cannot finish a SHA-256 digest (OpenSSL)");
  }
  EVP_MD_CTX_free(copy);
  return hex_of(digest.data(), length);
}

caf::expected<std::string_view> artifact_bytes::read_part(int64_t start, int64_t n,
                                                          std::string& buffer) const {
  auto& st = *state_;
  if (start >= st.size || n <= 0) return std::string_view{};
  auto count = static_cast<size_t>(std::min(n, st.size - start));
  if (st.fd < 0)
    return std::string_view{st.memory}.substr(static_cast<size_t>(start), count);
  buffer.resize(count);
  for (size_t done = 0; done < count;) {
    auto got = ::pread(st.fd, buffer.data() + done, count - done,
                       static_cast<off_t>(start + static_cast<int64_t>(done)));
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0)
      return make_error(errc::store_failure,
                        "cannot read an artifact upload back from its file: " +
                            (got < 0 ? system_error_text(errno) : "it ended early"));
    done += static_cast<size_t>(got);
  }
  return std::string_view{buffer};
}

} // namespace polymesh
