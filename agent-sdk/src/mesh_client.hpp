// The agent's side of the mesh's REST API (see mesh/http/server.cpp), built
// on the shared wire contract (`polymesh_wire`).
//
// Connections: a call borrows a keep-alive connection from a small pool and
// returns it when answered, so a poll, the `start` and the `finish` that
// follow it reuse one connection instead of opening three. A connection
// nobody borrows within `connection_linger` (0.5 s) is closed: an idle
// keep-alive connection holds a mesh worker and costs it CPU (cpp-httplib
// 0.11 polls it every 10 ms, DEPENDENCIES.md), a waiting long-poll does
// not. The linger is shorter than the mesh's shortest keep-alive timeout
// (1 s), so the mesh never closes a connection the agent is about to reuse.
//
// Authentication: after `register_agent` every call carries the agent's
// access token. A 401 makes the client refresh the token once (or register
// again when the refresh is refused too) and repeat the call; concurrent
// callers share one refresh.
//
// Thread-safety: all members may be called from any thread; `poll` is meant
// for one thread at a time and `interrupt_poll` may be called from another.
#pragma once

#include "mesh/wire/json.hpp"

#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>

namespace httplib {
class Client;
}

namespace polymesh::sdk {

class connection_pool;

/// How long an unused keep-alive connection stays open.
inline constexpr std::chrono::milliseconds connection_linger{500};

/// The outcome of one HTTP call.
struct http_reply {
  /// HTTP status; 0 when no answer came (connection refused, timeout).
  int status = 0;
  /// The parsed body (null when absent or not JSON).
  nlohmann::json body;
  /// The transport error or the mesh's error message.
  std::string error;

  [[nodiscard]] bool ok() const { return status >= 200 && status < 300; }
  /// Worth retrying: no answer, 5xx, 408 or 429.
  [[nodiscard]] bool transient() const {
    return status == 0 || status >= 500 || status == 408 || status == 429;
  }
  /// "HTTP 409: run is already running" or "no answer: Connection".
  [[nodiscard]] std::string describe() const;
};

/// Whether `r` is the mesh's refusal of a report on a run because another
/// session of this agent started the run (the agent registered again since,
/// mesh/domain/run_state.hpp `check_holder`; code `held_by_other_session`,
/// or an older meshd's `forbidden` with its words): no later report on
/// that run can succeed. Other refusals, `403`s among them, are not.
[[nodiscard]] bool run_held_by_another_session(const http_reply& r);

/// `key` ("code", "field") of the mesh's error body in `r`, or "".
[[nodiscard]] std::string error_code_of(const http_reply& r, const char* key);

/// Whether `r` is the mesh's refusal of a registration because an agent of
/// the same name is connected from another installation (`name_in_use`):
/// the name is free again once that agent leaves or goes offline.
[[nodiscard]] bool name_in_use(const http_reply& r);

/// What the mesh accepts, from its registration answer. The defaults are
/// meshd's own, for a mesh that does not say. The sizes below assume the
/// worst case of JSON escaping: a control byte is sent as `\u00XX`, six
/// bytes.
struct mesh_limits {
  /// `http.max_body_bytes`.
  size_t max_body_bytes = 1 << 20;
  /// `runs.max_result_bytes`.
  size_t max_result_bytes = 64 * 1024;
  /// `runs.max_log_bytes`; 0 = no limit (also when the mesh does not say).
  size_t max_log_bytes = 0;

  /// Data bytes one log chunk may hold: `wanted`, or less when one chunk
  /// of it could not fit in a request. At least 1.
  [[nodiscard]] size_t log_chunk_bytes(size_t wanted) const;
  /// Data bytes a logs request of up to `max_chunks` chunks may carry:
  /// `wanted`, or less to fit the body limit. A request always takes at
  /// least one chunk (see `log_chunk_bytes`), so this may be 0.
  [[nodiscard]] size_t log_bytes_per_request(size_t max_chunks, size_t wanted) const;
  /// Bytes a result may have next to an error text of `error_bytes`.
  [[nodiscard]] size_t result_bytes(size_t error_bytes) const;
  /// Output bytes a run may log so that the log, with the agent's notes
  /// about what it dropped, fits `max_log_bytes` (4 KiB below it, or half
  /// of a limit under 8 KiB); SIZE_MAX for no limit.
  [[nodiscard]] size_t run_log_bytes() const;
};

class mesh_client {
public:
  using steady = std::chrono::steady_clock;

  /// `url` is `http://host:port` (or `https://`), optionally with a path
  /// prefix. Connections unused for `linger` are closed. REQUIRES: a valid
  /// URL (see `wire::mesh_url_problem`).
  /// `ca_file`: PEM certificate authorities trusted for an https mesh
  /// instead of the system's ("" for the system's).
  mesh_client(std::string url, std::chrono::milliseconds request_timeout,
              std::chrono::milliseconds linger = connection_linger,
              std::string ca_file = {});
  ~mesh_client();

  /// A registration that replaced an earlier session of this client.
  struct session_change {
    std::string old_id;
    int64_t old_session = 0;
    std::string id;
    int64_t session = 0;
    /// Registrations sent since the old session whose answer never came:
    /// each may have made a session of ours that we never saw.
    int64_t unanswered = 0;
    /// The old session's token had expired before it could be renewed (the
    /// mesh was out of reach): this registration ended it, not the mesh.
    bool token_expired = false;
  };
  /// Called, on the thread that registered, whenever a registration after
  /// the first one starts a new session (the client registers again by
  /// itself when a call finds its session over). Set before the first call.
  void on_session_change(std::function<void(const session_change&)> f);

  /// Registers with `registration_token`; on success the client holds the
  /// agent id and access token. The request is kept for re-registration.
  /// Ended by `interrupt_poll` too, like the poll (status 0): an agent told
  /// to stop while a frozen mesh holds its registration stops at once.
  http_reply register_agent(const std::string& registration_token,
                            const wire::register_request& req);
  /// Renews the access token before it expires. `interruptible`: ended by
  /// `interrupt_poll` too, like the poll (the poll loop's renewal, which a
  /// stop need not wait for; the drain renews the token itself). Waits at
  /// most `timeout` (and `request_timeout`) for the answer.
  http_reply
  refresh_token(bool interruptible = false,
                std::chrono::milliseconds timeout = std::chrono::milliseconds::max());
  /// The refusal (not a failure to reach the mesh) of the last registration
  /// the client sent by itself to replace an ended session, if any: e.g. a
  /// revoked registration token. The agent cannot go on.
  [[nodiscard]] std::optional<http_reply> registration_refused() const;
  /// Drops the ended session the client still holds: the next successful
  /// registration starts afresh and is not announced as a session change
  /// (for an agent that waited while another installation used its name).
  void forget_session();
  /// True when the access token is past two thirds of its life.
  [[nodiscard]] bool token_due() const;
  /// Time left until `token_due` becomes true.
  [[nodiscard]] std::chrono::milliseconds until_token_due() const;

  /// One long-poll: GET /v1/agents/{id}/runs?wait=S.
  http_reply poll(int64_t wait_s);
  /// Aborts a poll or a `register_agent` in flight (used on drain), and
  /// every later one: each returns status 0.
  void interrupt_poll();
  /// Ends every call in flight at once and every later one before it is
  /// sent (status 0), except `deregister`: for a shutdown that gave up on
  /// the mesh's answers, so that no call waits out `request_timeout`.
  void stop_calls();

  http_reply start(const std::string& run_id);
  http_reply progress(const std::string& run_id, const std::string& message);
  http_reply logs(const std::string& run_id, const wire::log_request& req);
  http_reply finish(const std::string& run_id, const wire::finish_request& req);
  /// POST /v1/agents/{id}/report without `wait`: starts and finishes in one
  /// request, each answered on its own in the body (no poll).
  http_reply report(const wire::report_request& req);
  /// PUT /v1/runs/{id}/artifacts/{name}: the first `size` bytes of the
  /// file open as `fd`, read (with `pread`, from the start at each try) as
  /// they are sent rather than held in memory. A call whose file had fewer
  /// bytes fails with status 0. An identical repeat is 200, so a retry after
  /// a lost answer is harmless.
  http_reply put_artifact(const std::string& run_id, const std::string& name, int fd,
                          size_t size);
  /// POST /v1/agents/{id}/drain: this agent takes no new runs (it is
  /// shutting down); waits at most `timeout` for the answer.
  http_reply drain(std::chrono::milliseconds timeout);
  /// DELETE /v1/agents/{id}, waiting at most `timeout` for the answer.
  http_reply deregister(std::chrono::milliseconds timeout);

  [[nodiscard]] std::string agent_id() const;
  /// From the registration answer (the mesh's `poll_wait_max_s`).
  [[nodiscard]] int64_t poll_wait_max_s() const;
  [[nodiscard]] int64_t heartbeat_interval_s() const;
  /// From the registration answer (`max_body_bytes`, `max_result_bytes`).
  [[nodiscard]] mesh_limits limits() const;

private:
  enum class call_kind {
    plain,
    /// Ended by `interrupt_poll` too: the poll, the main loop's registration.
    poll,
    /// The deregistration: not ended by `stop_calls`.
    farewell,
  };
  /// The raw body of a PUT: a file's first `size` bytes.
  struct file_body {
    int fd;
    size_t size;
  };
  /// `body` is sent as JSON; a PUT sends `file` instead.
  http_reply send(const std::string& method, const std::string& path,
                  const std::string& token, const std::string* body,
                  std::chrono::milliseconds read_timeout,
                  call_kind kind = call_kind::plain, const file_body* file = nullptr);
  /// Sends with the access token; on 401 renews the credential once and
  /// repeats.
  http_reply authed(const std::string& method, const std::string& path,
                    const std::string* body, std::chrono::milliseconds read_timeout,
                    call_kind kind = call_kind::plain, const file_body* file = nullptr);
  /// Adopts a register or refresh answer; false when it is malformed.
  /// A new session is kept in `changed_` for `announce`.
  /// REQUIRES: `mtx_` held.
  [[nodiscard]] bool adopt_locked(const nlohmann::json& body);
  /// Takes the limits the mesh states in `from` (a registration's answer,
  /// or a poll answer's `limits`); keys it lacks keep their values.
  void take_limits_locked(const nlohmann::json& from);
  /// Tells `on_session_change` of a session adopted since the last call.
  /// REQUIRES: `mtx_` not held.
  void announce();
  /// Refreshes, or registers again; `seen_generation` avoids a second
  /// renewal when another thread already did it. The renewal's calls are of
  /// the refused call's `kind` (a stop ends a poll's renewal like the poll)
  /// and wait at most its `timeout`; a deregistration's renewal only
  /// refreshes (registering anew just to leave would start a session).
  void renew(uint64_t seen_generation, call_kind kind, std::chrono::milliseconds timeout);
  /// Sends a token refresh and adopts the answer.
  http_reply refresh_with(call_kind kind, std::chrono::milliseconds timeout);
  /// Registers and adopts the answer. REQUIRES: `renew_mtx_` held.
  http_reply register_with(const std::string& registration_token,
                           const wire::register_request& req, call_kind kind,
                           std::chrono::milliseconds timeout);

  /// Why connections fail when the mesh's host name does not resolve, or
  /// "": looked up at most once a minute (a lookup the resolver answers
  /// slowly would otherwise lengthen every failed call of an outage).
  std::string unresolved_host_cached();

  std::string prefix_;
  std::chrono::milliseconds request_timeout_;
  std::unique_ptr<connection_pool> pool_;
  std::mutex dns_mtx_;
  std::optional<std::chrono::steady_clock::time_point> dns_checked_at_;
  std::string dns_problem_;

  mutable std::mutex mtx_;
  std::string registration_token_;
  wire::register_request registration_;
  std::string agent_id_;
  std::string access_token_;
  int64_t session_ = 0;
  std::optional<session_change> changed_;
  int64_t unanswered_registrations_ = 0;
  std::optional<http_reply> registration_refused_;
  std::function<void(const session_change&)> on_session_change_;
  uint64_t generation_ = 0;
  steady::time_point token_due_at_{};
  steady::time_point token_expires_at_{};
  int64_t poll_wait_max_s_ = 30;
  int64_t heartbeat_interval_s_ = 30;
  mesh_limits limits_;

  std::mutex renew_mtx_;
  std::mutex calls_mtx_;
  /// The connections of the calls in flight, and the poll's among them.
  std::set<httplib::Client*> in_flight_;
  httplib::Client* poll_client_ = nullptr;
  bool poll_interrupted_ = false;
  bool calls_stopped_ = false;
};

} // namespace polymesh::sdk
