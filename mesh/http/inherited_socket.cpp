#include "mesh/http/inherited_socket.hpp"

#include "mesh/domain/error.hpp"

#include <arpa/inet.h>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

namespace polymesh {

namespace {

/// `text` as a positive decimal number, or none.
std::optional<long long> positive(const char* text) {
  if (!text || *text < '1' || *text > '9') return std::nullopt;
  errno = 0;
  char* end = nullptr;
  auto n = std::strtoll(text, &end, 10);
  if (errno != 0 || *end != '\0') return std::nullopt;
  return n;
}

caf::error refuse(const std::string& why) {
  return make_error(errc::invalid_argument, why, "LISTEN_FDS");
}

} // namespace

caf::expected<std::optional<int>>
inherited_socket_of(const char* listen_pid, const char* listen_fds, pid_t self) {
  if (!listen_pid || !listen_fds) return std::optional<int>{};
  auto pid = positive(listen_pid);
  if (!pid)
    return refuse("LISTEN_PID is '" + std::string{listen_pid} +
                  "', not a process id (socket activation sets it to meshd's)");
  if (*pid != self) return std::optional<int>{};
  auto fds = positive(listen_fds);
  if (!fds)
    return refuse("LISTEN_FDS is '" + std::string{listen_fds} +
                  "', not a number of sockets");
  if (*fds != 1)
    return refuse("systemd passed " + std::to_string(*fds) +
                  " sockets (LISTEN_FDS); meshd serves on one: give meshd.socket one "
                  "ListenStream=");
  return std::optional<int>{inherited_socket_fd};
}

caf::expected<std::optional<int>> take_inherited_socket() {
  auto out = inherited_socket_of(std::getenv("LISTEN_PID"), std::getenv("LISTEN_FDS"),
                                 ::getpid());
  ::unsetenv("LISTEN_PID");
  ::unsetenv("LISTEN_FDS");
  ::unsetenv("LISTEN_FDNAMES");
  return out;
}

caf::expected<std::pair<std::string, int>> listening_address(int fd) {
  auto cannot = [fd](const std::string& why) {
    return make_error(errc::invalid_argument,
                      "cannot serve on the socket systemd passed (descriptor " +
                          std::to_string(fd) + "): " + why,
                      "LISTEN_FDS");
  };
  int type = 0;
  socklen_t len = sizeof type;
  if (::getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) != 0)
    return cannot(std::strerror(errno));
  int listening = 0;
  len = sizeof listening;
  if (::getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) != 0)
    return cannot(std::strerror(errno));
  if (type != SOCK_STREAM || listening == 0)
    return cannot("it is not a listening stream socket (meshd.socket needs "
                  "ListenStream=, and Accept=no)");
  sockaddr_storage addr{};
  len = sizeof addr;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0)
    return cannot(std::strerror(errno));
  char host[INET6_ADDRSTRLEN] = {};
  if (addr.ss_family == AF_INET) {
    auto& in = reinterpret_cast<const sockaddr_in&>(addr);
    ::inet_ntop(AF_INET, &in.sin_addr, host, sizeof host);
    return std::pair{std::string{host}, static_cast<int>(ntohs(in.sin_port))};
  }
  if (addr.ss_family == AF_INET6) {
    auto& in6 = reinterpret_cast<const sockaddr_in6&>(addr);
    ::inet_ntop(AF_INET6, &in6.sin6_addr, host, sizeof host);
    return std::pair{std::string{host}, static_cast<int>(ntohs(in6.sin6_port))};
  }
  return cannot("it is not a TCP socket (meshd serves HTTP over TCP only)");
}

} // namespace polymesh
