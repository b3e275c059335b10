// Socket activation: meshd serves on the listening socket systemd passes
// (descriptor 3, LISTEN_FDS, LISTEN_PID), and answers clients that connected
// before it started.
#include "mesh/domain/error.hpp"
#include "mesh/http/inherited_socket.hpp"
#include "tests/support/mesh_fixture.hpp"
#include "tests/support/meshd_process.hpp"

#include <arpa/inet.h>
#include <csignal>
#include <fstream>
#include <netinet/in.h>
#include <sstream>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

namespace polymesh::test {
namespace {

constexpr const char* admin = "socket-activation-admin-token-0123456789";

/// A TCP socket bound to 127.0.0.1:0 and listening, and its port.
std::pair<int, int> listening_socket() {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::listen(fd, 16) != 0)
    return {-1, 0};
  socklen_t len = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  return {fd, ntohs(addr.sin_port)};
}

/// A client connected to `port` that has sent `request`.
int connect_and_send(int port, const std::string& request) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  timeval limit{10, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) return -1;
  if (::send(fd, request.data(), request.size(), MSG_NOSIGNAL) !=
      static_cast<ssize_t>(request.size()))
    return -1;
  return fd;
}

std::string read_all(int fd) {
  std::string out;
  char buf[4096];
  for (ssize_t n; (n = ::recv(fd, buf, sizeof buf, 0)) > 0;)
    out.append(buf, static_cast<size_t>(n));
  return out;
}

// This test ensures meshd serves on the socket passed to it (not on
// `--listen`), says so, answers a client that connected and sent its
// request before meshd started (queued by the kernel, as while a service
// restarts), and stops cleanly.
TEST(socket_activation, meshd_serves_on_the_passed_socket_and_answers_early_clients) {
  auto dir = make_temp_dir();
  auto [sock, port] = listening_socket();
  ASSERT_GE(sock, 0);
  int early = connect_and_send(
      port, "GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
  ASSERT_GE(early, 0);
  auto log = dir + "/meshd.log";
  meshd_process mesh{MESHD_PATH, dir, admin, {}, log, {}, sock};
  EXPECT_EQ(mesh.port(), port) << "the passed socket's port, not --listen's";
  auto answer = read_all(early);
  ::close(early);
  EXPECT_EQ(answer.rfind("HTTP/1.1 200", 0), 0u) << answer;
  EXPECT_EQ(call(port, "GET", "/v1/runs", admin).status, 200);
  auto status = mesh.kill_and_wait(SIGTERM);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
  std::ifstream in{log};
  std::stringstream text;
  text << in.rdbuf();
  EXPECT_NE(text.str().find("serving on the socket systemd passed (socket activation)"),
            std::string::npos)
      << text.str();

  // systemd keeps the socket while the service restarts: a client that
  // connects meanwhile is answered by the next meshd, which the stop of the
  // last must not have left a socket that no longer listens.
  int between = connect_and_send(
      port, "GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
  ASSERT_GE(between, 0);
  meshd_process next{MESHD_PATH, dir, admin, {}, {}, {}, sock};
  auto second = read_all(between);
  ::close(between);
  EXPECT_EQ(second.rfind("HTTP/1.1 200", 0), 0u) << second;
  EXPECT_EQ(next.kill_and_wait(SIGTERM), 0);
  ::close(sock);
  remove_tree(dir);
}

// This test ensures the environment is read as sd_listen_fds reads it:
// nothing unless LISTEN_PID is this process, one socket only, numbers only.
TEST(socket_activation, the_environment_names_one_socket_for_this_process) {
  EXPECT_EQ(*inherited_socket_of(nullptr, nullptr, 42), std::nullopt);
  EXPECT_EQ(*inherited_socket_of("41", "1", 42), std::nullopt) << "a parent's variables";
  EXPECT_EQ(*inherited_socket_of("42", "1", 42), std::optional<int>{3});
  auto two = inherited_socket_of("42", "2", 42);
  ASSERT_FALSE(two);
  EXPECT_NE(message_of(two.error()).find("systemd passed 2 sockets"), std::string::npos);
  EXPECT_FALSE(inherited_socket_of("42", "0", 42));
  EXPECT_FALSE(inherited_socket_of("42", "one", 42));
  EXPECT_FALSE(inherited_socket_of("x", "1", 42));
}

// This test ensures a descriptor that is no listening TCP socket is refused
// saying what it is not, and a listening one gives its address.
TEST(socket_activation, only_a_listening_tcp_socket_is_served_on) {
  auto [sock, port] = listening_socket();
  ASSERT_GE(sock, 0);
  auto address = listening_address(sock);
  ASSERT_TRUE(address) << message_of(address.error());
  EXPECT_EQ(address->first, "127.0.0.1");
  EXPECT_EQ(address->second, port);
  ::close(sock);
  int unbound = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  auto not_listening = listening_address(unbound);
  ASSERT_FALSE(not_listening);
  EXPECT_NE(message_of(not_listening.error()).find("not a listening stream socket"),
            std::string::npos);
  ::close(unbound);
  int pipe_fds[2];
  ASSERT_EQ(::pipe(pipe_fds), 0);
  EXPECT_FALSE(listening_address(pipe_fds[0]));
  ::close(pipe_fds[0]);
  ::close(pipe_fds[1]);
}

} // namespace
} // namespace polymesh::test
