#include "mesh/http/connection.hpp"

#include "mesh/wire/json.hpp"

#include <arpa/inet.h>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

namespace polymesh {

namespace {

/// `poll` for `events` on `fd` for up to `ms` (-1: for ever), retried on
/// EINTR with the time left; > 0 when ready, 0 on timeout, < 0 on error.
int wait_for(int fd, short events, int64_t ms) {
  auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds{ms};
  for (;;) {
    pollfd p{fd, events, 0};
    auto n = ::poll(&p, 1, static_cast<int>(ms));
    if (n >= 0 || errno != EINTR) return n;
    ms = std::max<int64_t>(0, std::chrono::duration_cast<std::chrono::milliseconds>(
                                  until - std::chrono::steady_clock::now())
                                  .count());
  }
}

/// The numeric address and port of `addr`.
void address_of(const sockaddr_storage& addr, socklen_t len, std::string& ip, int& port) {
  char host[NI_MAXHOST] = {};
  char serv[NI_MAXSERV] = {};
  if (::getnameinfo(reinterpret_cast<const sockaddr*>(&addr), len, host, sizeof host,
                    serv, sizeof serv, NI_NUMERICHOST | NI_NUMERICSERV) == 0) {
    ip = host;
    port = std::atoi(serv);
  }
}

/// Ends our side of `sock` after an answer to a request whose rest is not
/// read, and reads what the client still sends for a moment (1 s, 1 MiB at
/// most): closing with unread bytes sends a reset, which may reach the
/// client before it read the answer, and lose it.
void linger(int sock) {
  ::shutdown(sock, SHUT_WR);
  auto until = std::chrono::steady_clock::now() + std::chrono::seconds{1};
  size_t drained = 0;
  char chunk[16 * 1024];
  while (drained < (size_t{1} << 20)) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                    until - std::chrono::steady_clock::now())
                    .count();
    if (left <= 0 || wait_for(sock, POLLIN, left) <= 0) return;
    auto n = ::recv(sock, chunk, sizeof chunk, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    drained += static_cast<size_t>(n);
  }
}

const char* reason_of(int status) {
  switch (status) {
  case 400: return "Bad Request";
  case 414: return "URI Too Long";
  case 431: return "Request Header Fields Too Large";
  case 503: return "Service Unavailable";
  default: return "Error";
  }
}

} // namespace

bool connection_stream::is_readable() const {
  return off_ < buf_.size() || wait_for(sock_, POLLIN, limits_.read_timeout_s * 1000) > 0;
}

bool connection_stream::is_writable() const {
  if (wait_for(sock_, POLLOUT, limits_.write_timeout_s * 1000) <= 0) return false;
  // A client that closed its end: writing to it would only fail later.
  pollfd p{sock_, POLLIN, 0};
  if (::poll(&p, 1, 0) <= 0) return true;
  char byte;
  return ::recv(sock_, &byte, 1, MSG_PEEK | MSG_DONTWAIT) > 0;
}

bool connection_stream::fill() {
  if (wait_for(sock_, POLLIN, limits_.read_timeout_s * 1000) <= 0) return false;
  if (off_ > 0 && off_ == buf_.size()) {
    buf_.clear();
    off_ = 0;
  }
  char chunk[16 * 1024];
  ssize_t n;
  do
    n = ::recv(sock_, chunk, sizeof chunk, 0);
  while (n < 0 && errno == EINTR);
  if (n <= 0) return false;
  buf_.append(chunk, static_cast<size_t>(n));
  return true;
}

ssize_t connection_stream::read(char* ptr, size_t size) {
  if (off_ == buf_.size()) {
    buf_.clear();
    off_ = 0;
    // A large read (a body) goes straight to the caller.
    if (size >= 16 * 1024) {
      if (wait_for(sock_, POLLIN, limits_.read_timeout_s * 1000) <= 0) return -1;
      ssize_t n;
      do
        n = ::recv(sock_, ptr, size, 0);
      while (n < 0 && errno == EINTR);
      return n;
    }
    if (!fill()) return -1;
  }
  auto n = std::min(size, buf_.size() - off_);
  std::memcpy(ptr, buf_.data() + off_, n);
  off_ += n;
  return static_cast<ssize_t>(n);
}

ssize_t connection_stream::write(const char* ptr, size_t size) {
  if (!is_writable()) return -1;
  ssize_t n;
  do
    n = ::send(sock_, ptr, size, MSG_NOSIGNAL);
  while (n < 0 && errno == EINTR);
  return n;
}

void connection_stream::get_remote_ip_and_port(std::string& ip, int& port) const {
  sockaddr_storage addr{};
  socklen_t len = sizeof addr;
  if (::getpeername(sock_, reinterpret_cast<sockaddr*>(&addr), &len) == 0)
    address_of(addr, len, ip, port);
}

void connection_stream::get_local_ip_and_port(std::string& ip, int& port) const {
  sockaddr_storage addr{};
  socklen_t len = sizeof addr;
  if (::getsockname(sock_, reinterpret_cast<sockaddr*>(&addr), &len) == 0)
    address_of(addr, len, ip, port);
}

bool connection_stream::wait_for_request(int stop_fd) {
  if (off_ < buf_.size()) return true;
  auto until = std::chrono::steady_clock::now() +
               std::chrono::seconds{limits_.keep_alive_timeout_s};
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                    until - std::chrono::steady_clock::now())
                    .count();
    if (left <= 0) return false;
    pollfd p[2] = {{sock_, POLLIN, 0}, {stop_fd, POLLIN, 0}};
    auto n = ::poll(p, stop_fd >= 0 ? 2 : 1, static_cast<int>(left));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    if (stop_fd >= 0 && (p[1].revents & POLLIN)) return false;
    return (p[0].revents & (POLLIN | POLLHUP | POLLERR)) != 0;
  }
}

connection_stream::head_state connection_stream::read_head(head_refusal& why) {
  for (;;) {
    std::string_view pending{buf_.data() + off_, buf_.size() - off_};
    if (auto end = head_end(pending); end != std::string_view::npos) {
      if (auto refusal = head_refusal_of(pending.substr(0, end))) {
        why = std::move(*refusal);
        return head_state::refused;
      }
      return head_state::whole;
    }
    if (auto refusal = partial_head_refusal_of(pending)) {
      why = std::move(*refusal);
      return head_state::refused;
    }
    if (off_ > 0) {
      buf_.erase(0, off_);
      off_ = 0;
    }
    if (!fill()) return head_state::closed;
  }
}

void connection_stream::refuse(const head_refusal& why) {
  auto status = http_status(why.code);
  auto body = wire::dump(wire::error_body(make_error(why.code, why.message, why.field)));
  auto text = "HTTP/1.1 " + std::to_string(status) + " " + reason_of(status) +
              "\r\nContent-Type: application/json\r\nContent-Length: " +
              std::to_string(body.size()) + "\r\nConnection: close\r\n" +
              (status == 503 ? "Retry-After: 1\r\n" : "") + "\r\n" + body;
  size_t sent = 0;
  while (sent < text.size()) {
    if (wait_for(sock_, POLLOUT, limits_.write_timeout_s * 1000) <= 0) return;
    auto n = ::send(sock_, text.data() + sent, text.size() - sent, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    sent += static_cast<size_t>(n);
  }
}

void connection_stream::compact() {
  if (off_ < buf_.size()) return;
  off_ = 0;
  if (buf_.capacity() > 4096)
    std::string{}.swap(buf_);
  else
    buf_.clear();
}

namespace {

/// Answers `why` on `strm` (over `sock`), counts it with `refused`, and
/// lets the client's unread request drain before the close (`linger`).
void refuse_and_linger(connection_stream& strm, int sock, const head_refusal& why,
                       const std::function<void(int status)>& refused) {
  strm.refuse(why);
  refused(http_status(why.code));
  linger(sock);
}

} // namespace

bool serve_connection(int sock, const std::atomic<int>& listener, int stop_fd,
                      const connection_limits& limits,
                      const std::function<bool(httplib::Stream&, bool close_connection,
                                               bool& connection_closed)>& process,
                      const std::function<void(int status)>& refused) {
  connection_stream strm{sock, limits};
  auto left = std::max<size_t>(1, limits.keep_alive_max_requests);
  bool ret = false;
  while (listener != -1 && left > 0 && strm.wait_for_request(stop_fd)) {
    head_refusal why;
    auto head = strm.read_head(why);
    if (head == connection_stream::head_state::closed) break;
    if (head == connection_stream::head_state::refused) {
      refuse_and_linger(strm, sock, why, refused);
      ret = false;
      break;
    }
    bool closed = false;
    ret = process(strm, left == 1, closed);
    strm.compact();
    if (!ret || closed) break;
    --left;
  }
  ::shutdown(sock, SHUT_RDWR);
  ::close(sock);
  return ret;
}

void refuse_connection(int sock, int stop_fd, const connection_limits& limits,
                       const head_refusal& why,
                       const std::function<void(int status)>& refused) {
  connection_stream strm{sock, limits};
  head_refusal malformed;
  // Its head is read first: an answer to a request not yet sent may be
  // reset away, unread, when the request arrives at a closed socket.
  if (strm.wait_for_request(stop_fd) &&
      strm.read_head(malformed) != connection_stream::head_state::closed)
    refuse_and_linger(strm, sock, why, refused);
  ::shutdown(sock, SHUT_RDWR);
  ::close(sock);
}

} // namespace polymesh
