// The HTTP front of meshd (cpp-httplib): parse, validate, authenticate, then
// one message to an actor. HTTP types stop here; actors never see JSON text.
//
// Every endpoint is declared once in `endpoints()` (method, path, who may
// call it, summary, handler); the router is built from that table and so is
// the endpoint list in docs/api.md (`meshd --endpoints`).
//
// Threads: `bind` and `serve` from one thread; `stop` from any thread.
// Requests run on the server's worker pool (`http.threads`).
#pragma once

#include "mesh/actors/node.hpp"
#include "mesh/domain/metrics.hpp"

#include <atomic>
#include <caf/expected.hpp>
#include <functional>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

namespace httplib {
class Server;
class TaskQueue;
struct Request;
struct Response;
} // namespace httplib

namespace polymesh {

struct caller;

/// Token kinds as a bit set, for an endpoint's access rule.
enum access : unsigned {
  public_access = 0,
  admin_access = 1u << 0,
  submitter_access = 1u << 1,
  reader_access = 1u << 2,
  registration_access = 1u << 3,
  agent_access = 1u << 4,
  any_token = admin_access | submitter_access | reader_access | registration_access |
              agent_access,
};

struct request_context;

/// What an endpoint takes as its request body.
enum class body_kind : uint8_t {
  /// Nothing: a body other than empty or `{}` is refused.
  none,
  /// A JSON object (checked by the handler).
  json,
  /// Raw bytes (artifacts).
  raw,
};

/// One declared endpoint.
struct endpoint {
  const char* method;
  /// Path with `{name}` placeholders, e.g. `/v1/runs/{id}/start`; a last
  /// `{name*}` also matches `/` (a relative path).
  const char* path;
  /// Which token kinds may call it (`public_access` = no token needed).
  unsigned allowed;
  const char* summary;
  std::function<void(request_context&)> handler;
  body_kind body = body_kind::none;
  /// The query parameters it knows, space-separated; any other one, or one
  /// given twice, is refused before the handler runs.
  const char* query = "";
};

/// The whole API, in the order docs/api.md lists it.
[[nodiscard]] const std::vector<endpoint>& endpoints();
/// The endpoint list as a Markdown table (for docs/api.md).
[[nodiscard]] std::string endpoints_markdown();

class http_server {
public:
  explicit http_server(mesh_node& node);
  ~http_server();

  /// Binds `host:port` (port 0 picks one). Returns the bound port.
  [[nodiscard]] caf::expected<int> bind(const std::string& host, int port);
  /// Serves on `fd`, a listening TCP socket passed in (systemd's socket
  /// activation: `inherited_socket.hpp`), instead of binding one. Returns
  /// its address, or why it cannot serve on it.
  [[nodiscard]] caf::expected<std::pair<std::string, int>> adopt(int fd);
  /// Serves until `stop`. Blocks.
  void serve();
  /// Stops accepting; `serve` returns once running handlers are done, their
  /// connections cut if they take longer than `http.stop_grace`. Call
  /// `mesh_node::begin_shutdown` first so long-polls return.
  void stop();
  /// After `stop`: cuts the connections still open now, without waiting for
  /// `http.stop_grace` (a second SIGTERM).
  void hurry();

private:
  /// A worker pool that, at a stop, cuts the connections still busy after
  /// `http.stop_grace`.
  [[nodiscard]] std::unique_ptr<httplib::TaskQueue> new_pool();
  /// Starts the worker pool (`pool_`) once there is a socket to serve on.
  [[nodiscard]] caf::error start_pool();
  /// Cuts the connections still open on `port_` (each once), saying so with
  /// `when`.
  void cut_and_log(const std::string& when);

  mesh_node& node_;
  std::unique_ptr<httplib::Server> svr_;
  /// The port `bind` bound.
  int port_ = 0;
  std::mutex cut_mtx_;
  /// Connections cut at this stop: `shutdown` succeeds on them again.
  std::set<int> cut_fds_;
  /// The worker pool, started by `bind` (so that a pool the system will not
  /// give threads for is a start-up error) and handed to `svr_` by `serve`.
  std::unique_ptr<httplib::TaskQueue> pool_;
  size_t pool_threads_ = 0;
  std::atomic<int64_t> open_polls_{0};
  int64_t max_polls_ = 1;
  /// Clients waiting on a run now, at most `http.run_waits`.
  std::atomic<int64_t> open_waits_{0};
  /// Answers per endpoint, for `GET /metrics`.
  http_metrics metrics_;
};

/// Splits `HOST:PORT`; `[v6]:PORT` is accepted too.
[[nodiscard]] caf::expected<std::pair<std::string, int>>
split_host_port(const std::string& s);

} // namespace polymesh
