#include "mesh_client.hpp"

#include "mesh/domain/clock.hpp"
#include "mesh/domain/run_state.hpp"
#include "mesh/wire/transport_error.hpp"
#include "polymesh/sdk/settings.hpp"

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <deque>
#include <httplib.h>
#include <thread>
#include <unistd.h>

namespace polymesh::sdk {

namespace {

using json = nlohmann::json;

constexpr std::chrono::milliseconds connect_timeout{5000};

/// Extra time a long-poll read may take beyond the wait it asked for.
constexpr std::chrono::milliseconds poll_slack{15000};

std::string error_message(const json& body) {
  if (body.is_object() && body.contains("error") && body["error"].is_object()) {
    auto& e = body["error"];
    if (e.contains("message") && e["message"].is_string())
      return e["message"].get<std::string>();
  }
  return {};
}

} // namespace

/// Keep-alive connections to the mesh between calls. A caller borrows one
/// (or a new one), uses it alone, and gives it back once it has an answer;
/// a connection that failed is dropped instead. A reaper thread closes
/// connections unused for `linger`; at most `max_idle` wait.
class connection_pool {
public:
  connection_pool(std::string base, std::chrono::milliseconds linger, size_t max_idle,
                  std::string ca_file)
      : base_(std::move(base))
      , ca_file_(std::move(ca_file))
      , linger_(linger)
      , max_idle_(max_idle)
      , reaper_([this] { reap(); }) {}

  ~connection_pool() {
    {
      std::lock_guard<std::mutex> guard{mtx_};
      stopping_ = true;
    }
    cv_.notify_all();
    reaper_.join();
  }

  connection_pool(const connection_pool&) = delete;
  connection_pool& operator=(const connection_pool&) = delete;

  /// scheme://host[:port] of the mesh.
  [[nodiscard]] const std::string& origin() const { return base_; }

  /// The most recently returned connection, or a new one.
  std::unique_ptr<httplib::Client> borrow() {
    {
      std::lock_guard<std::mutex> guard{mtx_};
      if (!idle_.empty()) {
        auto cli = std::move(idle_.back().cli);
        idle_.pop_back();
        return cli;
      }
    }
    auto cli = std::make_unique<httplib::Client>(base_);
    if (!ca_file_.empty()) cli->set_ca_cert_path(ca_file_);
    cli->set_tcp_nodelay(true);
    cli->set_keep_alive(true);
    return cli;
  }

  void give_back(std::unique_ptr<httplib::Client> cli) {
    std::unique_ptr<httplib::Client> surplus;
    bool was_empty = false;
    {
      std::lock_guard<std::mutex> guard{mtx_};
      was_empty = idle_.empty();
      idle_.push_back({std::move(cli), steady::now() + linger_});
      if (idle_.size() > max_idle_) {
        surplus = std::move(idle_.front().cli);
        idle_.pop_front();
      }
    }
    // Otherwise the reaper already waits for an older deadline than ours:
    // waking it on every call would cost the agent a context switch each.
    if (was_empty) cv_.notify_one();
  }

private:
  using steady = std::chrono::steady_clock;

  struct parked {
    std::unique_ptr<httplib::Client> cli;
    steady::time_point until;
  };

  void reap() {
    std::unique_lock<std::mutex> guard{mtx_};
    while (!stopping_) {
      if (idle_.empty()) {
        cv_.wait(guard);
        continue;
      }
      auto until = idle_.front().until;
      if (steady::now() < until) {
        cv_.wait_until(guard, until);
        continue;
      }
      // Oldest first: every connection behind an unexpired one is younger.
      std::vector<std::unique_ptr<httplib::Client>> expired;
      auto now = steady::now();
      while (!idle_.empty() && idle_.front().until <= now) {
        expired.push_back(std::move(idle_.front().cli));
        idle_.pop_front();
      }
      guard.unlock();
      expired.clear(); // closes the sockets, outside the lock
      guard.lock();
    }
    idle_.clear();
  }

  std::string base_;
  std::string ca_file_;
  std::chrono::milliseconds linger_;
  size_t max_idle_;
  std::mutex mtx_;
  std::condition_variable cv_;
  bool stopping_ = false;
  std::deque<parked> idle_;
  std::thread reaper_;
};

std::string http_reply::describe() const {
  if (status == 0) return "no answer from the mesh: " + error;
  return "HTTP " + std::to_string(status) + (error.empty() ? "" : ": " + error);
}

std::string error_code_of(const http_reply& r, const char* key) {
  if (!r.body.is_object()) return {};
  auto e = r.body.find("error");
  if (e == r.body.end() || !e->is_object()) return {};
  auto v = e->find(key);
  return v != e->end() && v->is_string() ? v->get<std::string>() : std::string{};
}

bool name_in_use(const http_reply& r) {
  return r.status == 409 && error_code_of(r, "code") == "name_in_use";
}

bool run_held_by_another_session(const http_reply& r) {
  if (r.status != 403) return false;
  auto code = error_code_of(r, "code");
  // A meshd before the code said so in the words of a `forbidden`.
  return code == "held_by_other_session" ||
         (code == "forbidden" &&
          r.error.find(other_session_holds_run) != std::string::npos);
}

mesh_client::mesh_client(std::string url, std::chrono::milliseconds request_timeout,
                         std::chrono::milliseconds linger, std::string ca_file)
    : request_timeout_(request_timeout) {
  auto scheme_end = url.find("://");
  auto slash = url.find('/', scheme_end == std::string::npos ? 0 : scheme_end + 3);
  // Calls that overlap (the poll, each slot's worker and log shipper) each
  // hold a connection; up to 16 then wait for reuse until the linger ends.
  pool_ = std::make_unique<connection_pool>(url.substr(0, slash), linger, 16,
                                            std::move(ca_file));
  if (slash != std::string::npos) {
    prefix_ = url.substr(slash);
    while (!prefix_.empty() && prefix_.back() == '/')
      prefix_.pop_back();
  }
}

mesh_client::~mesh_client() = default;

std::string mesh_client::unresolved_host_cached() {
  std::lock_guard<std::mutex> guard{dns_mtx_};
  auto now = std::chrono::steady_clock::now();
  if (!dns_checked_at_ || now - *dns_checked_at_ >= std::chrono::minutes{1}) {
    dns_problem_ = unresolved_host(pool_->origin());
    dns_checked_at_ = now;
  }
  return dns_problem_;
}

http_reply mesh_client::send(const std::string& method, const std::string& path,
                             const std::string& token, const std::string* body,
                             std::chrono::milliseconds read_timeout, call_kind kind,
                             const file_body* file) {
  auto conn = pool_->borrow();
  auto& cli = *conn;
  cli.set_read_timeout(read_timeout);
  cli.set_write_timeout(std::min(request_timeout_, read_timeout));
  cli.set_connection_timeout(std::min(connect_timeout, read_timeout));
  {
    std::lock_guard<std::mutex> guard{calls_mtx_};
    if (kind == call_kind::poll && poll_interrupted_)
      return http_reply{0, nullptr, "poll interrupted"};
    if (kind != call_kind::farewell && calls_stopped_)
      return http_reply{0, nullptr, "not sent: the agent stopped waiting for the mesh"};
    in_flight_.insert(&cli);
    if (kind == call_kind::poll) poll_client_ = &cli;
  }
  httplib::Headers headers;
  if (!token.empty()) headers.emplace("Authorization", "Bearer " + token);
  auto full = prefix_ + path;
  auto began = std::chrono::steady_clock::now();
  auto res = [&] {
    if (method == "GET") return cli.Get(full, headers);
    if (method == "DELETE") return cli.Delete(full, headers);
    if (method == "PUT") {
      auto [fd, size] = file ? *file : file_body{-1, 0};
      return cli.Put(
          full, headers, size,
          [fd = fd](size_t offset, size_t length, httplib::DataSink& sink) {
            char buf[64 * 1024];
            ssize_t n;
            do
              n = ::pread(fd, buf, std::min(length, sizeof buf),
                          static_cast<off_t>(offset));
            while (n < 0 && errno == EINTR);
            // A read error, or the file has fewer bytes now: the call fails.
            return n > 0 && sink.write(buf, static_cast<size_t>(n));
          },
          "application/octet-stream");
    }
    return cli.Post(full, headers, body ? *body : std::string{"{}"}, "application/json");
  }();
  {
    std::lock_guard<std::mutex> guard{calls_mtx_};
    in_flight_.erase(&cli);
    if (kind == call_kind::poll) poll_client_ = nullptr;
  }
  http_reply out;
  if (!res) {
    // The connection is in an unknown state (or was stopped): not reused.
    out.error = describe_transport_error(res.error());
    // cpp-httplib tells a read that timed out from a broken one by neither.
    if (res.error() == httplib::Error::Read &&
        std::chrono::steady_clock::now() - began >= read_timeout)
      out.error = read_timeout == request_timeout_
                      ? "timed out after mesh.request_timeout (" +
                            duration_text(request_timeout_) + ")"
                      : "timed out after " + duration_text(read_timeout) +
                            " (the poll's wait and a margin)";
    // "Nothing is listening there" is wrong for a name that does not resolve.
    if (res.error() == httplib::Error::Connection)
      if (auto why = unresolved_host_cached(); !why.empty()) out.error = why;
    return out;
  }
  pool_->give_back(std::move(conn));
  out.status = res->status;
  if (!res->body.empty()) {
    auto j = json::parse(res->body, nullptr, false);
    if (!j.is_discarded()) out.body = std::move(j);
  }
  if (!out.ok()) {
    out.error = error_message(out.body);
    if (out.error.empty()) out.error = res->body.substr(0, 200);
  }
  return out;
}

bool mesh_client::adopt_locked(const json& body) {
  // A malformed answer (a proxy's error page, a truncated body) must not
  // throw on an agent thread; it is treated like no answer.
  if (!body.is_object() || !body.contains("access_token") ||
      !body["access_token"].is_string() || !body.contains("id") ||
      !body["id"].is_string())
    return false;
  auto number = [&](const char* key, int64_t fallback) {
    auto it = body.find(key);
    return it != body.end() && it->is_number_integer() ? it->get<int64_t>() : fallback;
  };
  auto id = body["id"].get<std::string>();
  auto session = number("session", session_);
  // Registrations are serialized (`renew_mtx_`), so an older session can
  // only come from a refresh that raced a registration: keep the newer.
  if (id == agent_id_ && session < session_) return true;
  if (!agent_id_.empty() && (id != agent_id_ || session != session_))
    // The old token's expiry is in the past now only if it already was when
    // this registration was sent: then our own renewal ended the session.
    changed_ = session_change{agent_id_,
                              session_,
                              id,
                              session,
                              unanswered_registrations_,
                              steady::now() >= token_expires_at_};
  agent_id_ = std::move(id);
  session_ = session;
  access_token_ = body["access_token"].get<std::string>();
  poll_wait_max_s_ = number("poll_wait_max_s", poll_wait_max_s_);
  heartbeat_interval_s_ = number("heartbeat_interval_s", heartbeat_interval_s_);
  take_limits_locked(body);
  ++generation_;
  // Renew at two thirds of the remaining life, timed on our own monotonic
  // clock. The life is taken as seconds from now (`token_expires_in_s`):
  // read against our wall clock, `token_expires_at` would be off by the
  // difference between the two hosts' clocks, and a token renewed too late
  // (ours behind by half its life) ends the session and its runs, one
  // renewed too early (ours ahead by its life) is renewed every second. A
  // mesh older than this SDK sends only the time.
  std::chrono::milliseconds life{std::chrono::hours{1}};
  auto in_it = body.find("token_expires_in_s");
  auto exp_it = body.find("token_expires_at");
  if (in_it != body.end() && in_it->is_number_integer() && in_it->get<int64_t>() >= 0)
    life = std::clamp(std::chrono::milliseconds{std::chrono::seconds{std::min<int64_t>(
                          in_it->get<int64_t>(), int64_t{24} * 365 * 3600)}},
                      std::chrono::milliseconds{1500},
                      std::chrono::milliseconds{std::chrono::hours{24 * 365}});
  else if (exp_it != body.end() && exp_it->is_string())
    if (auto exp = parse_rfc3339(exp_it->get<std::string>())) {
      // In milliseconds: a difference of centuries in nanoseconds overflows.
      std::chrono::milliseconds left{to_unix_ms(*exp) -
                                     to_unix_ms(std::chrono::system_clock::now())};
      life = std::clamp(left, std::chrono::milliseconds{1500},
                        std::chrono::milliseconds{std::chrono::hours{24 * 365}});
    }
  token_due_at_ = steady::now() + life * 2 / 3;
  token_expires_at_ = steady::now() + life;
  return true;
}

namespace {

/// Turns a 2xx whose body could not be used into a retryable failure.
http_reply malformed(http_reply r) {
  r.status = 0;
  r.error = "malformed answer to a registration or token refresh";
  return r;
}

} // namespace

void mesh_client::on_session_change(std::function<void(const session_change&)> f) {
  std::lock_guard<std::mutex> guard{mtx_};
  on_session_change_ = std::move(f);
}

void mesh_client::announce() {
  std::optional<session_change> change;
  std::function<void(const session_change&)> f;
  {
    std::lock_guard<std::mutex> guard{mtx_};
    change = std::exchange(changed_, std::nullopt);
    f = on_session_change_;
  }
  if (change && f) f(*change);
}

http_reply mesh_client::register_agent(const std::string& registration_token,
                                       const wire::register_request& req) {
  std::lock_guard<std::mutex> registering{renew_mtx_};
  {
    std::lock_guard<std::mutex> guard{mtx_};
    registration_token_ = registration_token;
    registration_ = req;
  }
  return register_with(registration_token, req, call_kind::poll, request_timeout_);
}

http_reply mesh_client::register_with(const std::string& registration_token,
                                      const wire::register_request& req, call_kind kind,
                                      std::chrono::milliseconds timeout) {
  auto body = wire::dump(wire::to_json(req));
  auto reply = send("POST", "/v1/agents/register", registration_token, &body,
                    std::min(request_timeout_, timeout), kind);
  if (reply.ok()) {
    {
      std::lock_guard<std::mutex> guard{mtx_};
      if (!adopt_locked(reply.body)) return malformed(std::move(reply));
      unanswered_registrations_ = 0;
      registration_refused_.reset();
    }
    announce();
  } else if (reply.transient()) {
    // The mesh may have registered us and the answer got lost.
    std::lock_guard<std::mutex> guard{mtx_};
    ++unanswered_registrations_;
  }
  return reply;
}

http_reply mesh_client::refresh_token(bool interruptible,
                                      std::chrono::milliseconds timeout) {
  return refresh_with(interruptible ? call_kind::poll : call_kind::plain, timeout);
}

http_reply mesh_client::refresh_with(call_kind kind, std::chrono::milliseconds timeout) {
  std::string id;
  std::string token;
  {
    std::lock_guard<std::mutex> guard{mtx_};
    id = agent_id_;
    token = access_token_;
  }
  auto reply = send("POST", "/v1/agents/" + id + "/token", token, nullptr,
                    std::min(request_timeout_, timeout), kind);
  if (reply.ok()) {
    std::lock_guard<std::mutex> guard{mtx_};
    if (!adopt_locked(reply.body)) return malformed(std::move(reply));
  }
  return reply;
}

void mesh_client::renew(uint64_t seen_generation, call_kind kind,
                        std::chrono::milliseconds timeout) {
  std::lock_guard<std::mutex> renewing{renew_mtx_};
  std::string reg_token;
  wire::register_request req;
  {
    std::lock_guard<std::mutex> guard{mtx_};
    if (generation_ != seen_generation) return; // another thread renewed meanwhile
    reg_token = registration_token_;
    req = registration_;
  }
  auto reply = refresh_with(kind, timeout);
  if (reply.ok() || reply.status != 401 || reg_token.empty()) return;
  if (kind == call_kind::farewell) return;
  // The session is gone (e.g. the mesh declared us offline and a newer
  // session superseded ours): register again under the same name.
  auto registered = register_with(reg_token, req, kind, timeout);
  if (!registered.ok() && !registered.transient()) {
    std::lock_guard<std::mutex> guard{mtx_};
    registration_refused_ = std::move(registered);
  }
}

void mesh_client::forget_session() {
  std::lock_guard<std::mutex> guard{mtx_};
  agent_id_.clear();
  access_token_.clear();
  session_ = 0;
  unanswered_registrations_ = 0;
  changed_.reset();
}

std::optional<http_reply> mesh_client::registration_refused() const {
  std::lock_guard<std::mutex> guard{mtx_};
  return registration_refused_;
}

http_reply mesh_client::authed(const std::string& method, const std::string& path,
                               const std::string* body,
                               std::chrono::milliseconds read_timeout, call_kind kind,
                               const file_body* file) {
  std::string token;
  uint64_t generation = 0;
  {
    std::lock_guard<std::mutex> guard{mtx_};
    token = access_token_;
    generation = generation_;
  }
  auto deadline = steady::now() + read_timeout;
  auto reply = send(method, path, token, body, read_timeout, kind, file);
  if (reply.status != 401) return reply;
  // The renewal and the repeat keep to the call's own time (a poll's repeat
  // gets its whole wait again: the mesh holds it that long).
  auto left = [&] {
    return std::max(
        std::chrono::milliseconds{1},
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - steady::now()));
  };
  renew(generation, kind, left());
  {
    std::lock_guard<std::mutex> guard{mtx_};
    token = access_token_;
  }
  return send(method, path, token, body, kind == call_kind::poll ? read_timeout : left(),
              kind, file);
}

bool mesh_client::token_due() const {
  return until_token_due().count() <= 0;
}

std::chrono::milliseconds mesh_client::until_token_due() const {
  std::lock_guard<std::mutex> guard{mtx_};
  return std::chrono::duration_cast<std::chrono::milliseconds>(token_due_at_ -
                                                               steady::now());
}

http_reply mesh_client::poll(int64_t wait_s) {
  auto path = "/v1/agents/" + agent_id() + "/runs?wait=" + std::to_string(wait_s);
  auto r = authed("GET", path, nullptr, std::chrono::seconds{wait_s} + poll_slack,
                  call_kind::poll);
  // The mesh may have restarted with other limits since we registered.
  if (r.ok() && r.body.is_object() && r.body.contains("limits")) {
    std::lock_guard<std::mutex> guard{mtx_};
    take_limits_locked(r.body["limits"]);
  }
  return r;
}

void mesh_client::take_limits_locked(const json& from) {
  if (!from.is_object()) return;
  auto number = [&](const char* key, int64_t fallback) {
    auto it = from.find(key);
    return it != from.end() && it->is_number_integer() ? it->get<int64_t>() : fallback;
  };
  // meshd refuses a body limit below 1 KiB; a smaller figure is not meshd's.
  if (auto body = number("max_body_bytes", 0); body >= 1024)
    limits_.max_body_bytes = static_cast<size_t>(body);
  if (auto result = number("max_result_bytes", -1); result >= 0)
    limits_.max_result_bytes = static_cast<size_t>(result);
  if (auto log = number("max_log_bytes", -1); log >= 0)
    limits_.max_log_bytes = static_cast<size_t>(log);
}

void mesh_client::interrupt_poll() {
  std::lock_guard<std::mutex> guard{calls_mtx_};
  poll_interrupted_ = true;
  if (poll_client_) poll_client_->stop();
}

void mesh_client::stop_calls() {
  std::lock_guard<std::mutex> guard{calls_mtx_};
  calls_stopped_ = true;
  for (auto* cli : in_flight_)
    cli->stop();
}

http_reply mesh_client::start(const std::string& run_id) {
  return authed("POST", "/v1/runs/" + run_id + "/start", nullptr, request_timeout_);
}

http_reply mesh_client::progress(const std::string& run_id, const std::string& message) {
  auto body = wire::dump(json{{"message", message}});
  return authed("POST", "/v1/runs/" + run_id + "/progress", &body, request_timeout_);
}

http_reply mesh_client::logs(const std::string& run_id, const wire::log_request& req) {
  auto body = wire::dump(wire::to_json(req));
  return authed("POST", "/v1/runs/" + run_id + "/logs", &body, request_timeout_);
}

http_reply mesh_client::finish(const std::string& run_id,
                               const wire::finish_request& req) {
  auto body = wire::dump(wire::to_json(req));
  return authed("POST", "/v1/runs/" + run_id + "/finish", &body, request_timeout_);
}

http_reply mesh_client::report(const wire::report_request& req) {
  auto body = wire::dump(wire::to_json(req));
  return authed("POST", "/v1/agents/" + agent_id() + "/report", &body, request_timeout_);
}

http_reply mesh_client::put_artifact(const std::string& run_id, const std::string& name,
                                     int fd, size_t size) {
  // Names are [A-Za-z0-9._-/] (checked by the caller), safe in a path as is.
  file_body file{fd, size};
  return authed("PUT", "/v1/runs/" + run_id + "/artifacts/" + name, nullptr,
                request_timeout_, call_kind::plain, &file);
}

http_reply mesh_client::drain(std::chrono::milliseconds timeout) {
  return authed("POST", "/v1/agents/" + agent_id() + "/drain", nullptr, timeout);
}

http_reply mesh_client::deregister(std::chrono::milliseconds timeout) {
  return authed("DELETE", "/v1/agents/" + agent_id(), nullptr, timeout,
                call_kind::farewell);
}

std::string mesh_client::agent_id() const {
  std::lock_guard<std::mutex> guard{mtx_};
  return agent_id_;
}

int64_t mesh_client::poll_wait_max_s() const {
  std::lock_guard<std::mutex> guard{mtx_};
  return poll_wait_max_s_;
}

int64_t mesh_client::heartbeat_interval_s() const {
  std::lock_guard<std::mutex> guard{mtx_};
  return heartbeat_interval_s_;
}

mesh_limits mesh_client::limits() const {
  std::lock_guard<std::mutex> guard{mtx_};
  return limits_;
}

namespace {

/// A JSON string of n bytes takes at most this many bytes per byte.
constexpr size_t escape_factor = 6;
/// Generous bounds for everything in a body but its strings' contents: a
/// logs chunk's `{"seq":…,"stream":"stdout","data":""}`, and a request's
/// braces and keys.
constexpr size_t chunk_overhead = 64;
constexpr size_t request_overhead = 256;
/// Room left in a run's log for the agent's notes on what it dropped.
constexpr size_t log_note_room = 4096;

size_t room(size_t body, size_t used) {
  return body > used ? (body - used) / escape_factor : 0;
}

} // namespace

size_t mesh_limits::log_chunk_bytes(size_t wanted) const {
  return std::max<size_t>(
      1, std::min(wanted, room(max_body_bytes, request_overhead + chunk_overhead)));
}

size_t mesh_limits::log_bytes_per_request(size_t max_chunks, size_t wanted) const {
  return std::min(wanted,
                  room(max_body_bytes, request_overhead + max_chunks * chunk_overhead));
}

size_t mesh_limits::run_log_bytes() const {
  if (max_log_bytes == 0) return SIZE_MAX;
  // A small limit keeps half for output (a fixed room left none below 4 KiB).
  // Under about 400 bytes a note (about 200 bytes) does not fit, and the
  // request that carries it is refused with the output in it (config.md).
  return max_log_bytes - std::min(log_note_room, max_log_bytes / 2);
}

size_t mesh_limits::result_bytes(size_t error_bytes) const {
  return std::min(max_result_bytes,
                  room(max_body_bytes, request_overhead + error_bytes * escape_factor));
}

} // namespace polymesh::sdk
