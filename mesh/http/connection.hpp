// One accepted HTTP connection, served by meshd's own loop instead of
// cpp-httplib's: each request's head is read and checked first
// (`request_head.hpp`), and only a head that passes reaches cpp-httplib's
// parser; one that does not is answered here with its JSON error, and the
// connection closed.
//
// The connection keeps one read buffer for its whole life, so bytes a client
// sent after a request (pipelined) are the next request's, never lost.
// cpp-httplib 0.11 kept a buffer per request. An idle keep-alive connection
// waits in `poll` until the client writes, its keep-alive time passes, or
// the server stops (`stop_fd` becomes readable), never in cpp-httplib's
// 10 ms loop.
//
// Thread-safety: one connection per pool thread.
#pragma once

#include "mesh/http/request_head.hpp"

#include <atomic>
#include <ctime>
#include <functional>
#include <httplib.h>
#include <string>

namespace polymesh {

/// How long a connection waits, and for how many requests.
struct connection_limits {
  time_t keep_alive_timeout_s = 5;
  size_t keep_alive_max_requests = 100;
  time_t read_timeout_s = 5;
  time_t write_timeout_s = 5;
};

/// A connection's byte stream for cpp-httplib, over one buffer it keeps.
class connection_stream : public httplib::Stream {
public:
  connection_stream(int sock, const connection_limits& limits)
      : sock_(sock)
      , limits_(limits) {}

  bool is_readable() const override;
  bool is_writable() const override;
  ssize_t read(char* ptr, size_t size) override;
  ssize_t write(const char* ptr, size_t size) override;
  void get_remote_ip_and_port(std::string& ip, int& port) const override;
  void get_local_ip_and_port(std::string& ip, int& port) const override;
  int socket() const override { return sock_; }

  /// Waits until a request's first byte is there, the keep-alive time
  /// passes, the client closes, or `stop_fd` is readable; true in the first
  /// case.
  bool wait_for_request(int stop_fd);

  /// What reading a head found.
  enum class head_state { whole, refused, closed };
  /// Reads until the buffer holds a whole head (or it is refused, or the
  /// client closes or stalls past the read timeout); `why` says why it was
  /// refused.
  head_state read_head(head_refusal& why);

  /// Answers `why` as meshd's JSON error, with `Connection: close` (and
  /// `Retry-After: 1` when it is a 503).
  void refuse(const head_refusal& why);

  /// Gives back a large buffer once all of it was read: a connection then
  /// waits (a long-poll, 10,000 of them) holding no more than a head's
  /// bytes.
  void compact();

private:
  /// Reads what the socket has into the buffer; false when it closed,
  /// failed, or had nothing within the read timeout.
  bool fill();

  int sock_;
  connection_limits limits_;
  std::string buf_;
  size_t off_ = 0;
};

/// Serves the connection `sock` until it closes, its keep-alive ends, or the
/// server stops (`listener` no longer valid); `process` is cpp-httplib's
/// request processing, `refused` counts a head refused here by its status.
/// Closes `sock`.
bool serve_connection(int sock, const std::atomic<int>& listener, int stop_fd,
                      const connection_limits& limits,
                      const std::function<bool(httplib::Stream&, bool close_connection,
                                               bool& connection_closed)>& process,
                      const std::function<void(int status)>& refused);

/// Reads the first request's head on `sock` and answers it `why` instead
/// of serving it (a connection meshd has no room for, `open_files.hpp`);
/// `refused` counts it. Closes `sock`.
void refuse_connection(int sock, int stop_fd, const connection_limits& limits,
                       const head_refusal& why,
                       const std::function<void(int status)>& refused);

} // namespace polymesh
