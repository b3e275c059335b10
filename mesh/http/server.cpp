#include "mesh/http/server.hpp"

#include "mesh/actors/messages.hpp"
#include "mesh/domain/error.hpp"
#include "mesh/domain/ids.hpp"
#include "mesh/domain/labels.hpp"
#include "mesh/domain/log.hpp"
#include "mesh/domain/selector.hpp"
#include "mesh/http/connection.hpp"
#include "mesh/http/framing.hpp"
#include "mesh/http/inherited_socket.hpp"
#include "mesh/http/open_files.hpp"
#include "mesh/http/worker_pool.hpp"
#include "mesh/wire/json.hpp"

#include <algorithm>
#include <atomic>
#include <caf/after.hpp>
#include <caf/scoped_actor.hpp>
#include <caf/sec.hpp>
#include <caf/send.hpp>
#include <cctype>
#include <charconv>
#include <fcntl.h>
#include <filesystem>
#include <httplib.h>
#include <map>
#include <mutex>
#include <optional>
#include <regex>
#include <set>
#include <string_view>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/statvfs.h>
#include <system_error>
#include <unistd.h>
#include <utility>

namespace polymesh {

using wire::json;
using wire::printable_prefix;

/// The artifact upload's path: its name, run and free space are checked
/// before its body, also for a client that sends `Expect: 100-continue`.
constexpr const char* upload_path = "/v1/runs/{id}/artifacts/{name*}";

/// Everything a handler needs about one request.
struct request_context {
  mesh_node& node;
  const httplib::Request& req;
  httplib::Response& res;
  const std::vector<std::string>& param_names;
  /// The query string's parameters (never a form body's).
  const httplib::Params& query;
  /// Long-polls waiting now, and how many the worker pool can hold while
  /// keeping threads free for every other request.
  std::atomic<int64_t>& open_polls;
  int64_t max_polls;
  /// Clients waiting on a run now (`http.run_waits` at most).
  std::atomic<int64_t>& open_waits;
  caller who;
  const http_metrics& http_stats;
  /// Reads a raw endpoint's body into a sink as it arrives (the others find
  /// theirs in `req.body`); an error when it is too large or unreadable.
  std::function<caf::error(const std::function<bool(const char*, size_t)>&)> read_body;

  [[nodiscard]] const context_ptr& ctx() const { return node.context(); }

  [[nodiscard]] std::string param(const char* name) const {
    for (size_t i = 0; i < param_names.size(); ++i)
      if (param_names[i] == name && i + 1 < req.matches.size())
        return req.matches[static_cast<int>(i + 1)].str();
    return {};
  }

  [[nodiscard]] bool has_query(const char* name) const { return query.count(name) > 0; }
  /// The query parameter's value, "" when absent.
  [[nodiscard]] std::string query_value(const char* name) const {
    auto it = query.find(name);
    return it == query.end() ? std::string{} : it->second;
  }

  void reply(int status, const json& body) {
    res.status = status;
    res.set_content(wire::dump(body), "application/json");
  }

  void fail(const caf::error& err) {
    reply(http_status(code_of(err)), wire::error_body(err));
  }
};

namespace {

constexpr auto ask_timeout = std::chrono::seconds{30};
/// How much of an artifact a download reads from the store at a time.
constexpr int64_t artifact_part_bytes = 1 << 20;

/// Turns errors from outside our category (CAF timeouts, dead actors) into
/// an `unavailable` error people can act on.
caf::error normalize(caf::error err) {
  if (err.category() == error_category) return err;
  // The request goes on inside meshd (a write stays queued for the store):
  // a client that repeats a submit without an idempotency key submits twice.
  if (err == caf::sec::request_timeout)
    return make_error(errc::unavailable,
                      "the mesh did not answer within " +
                          std::to_string(ask_timeout.count()) +
                          " s (see /readyz and meshd's log: a stalled store?); a "
                          "request that changes something may still take effect: "
                          "repeat a submit only with the same idempotency_key, and "
                          "look before repeating anything else");
  return make_error(errc::unavailable, "the mesh did not answer: " + caf::to_string(err));
}

/// Waits for the answer to a request made with `handle` (a blocking
/// actor's response handle).
template <class T, class Handle> caf::expected<T> await_answer(Handle& handle) {
  caf::expected<T> out{make_error(errc::internal, "no answer")};
  handle.receive([&](T& x) { out = std::move(x); },
                 [&](caf::error& err) { out = normalize(std::move(err)); });
  return out;
}

/// Sends one request to `dest` and waits for the answer. A fresh
/// `scoped_actor` per call: reusing one with a finite timeout leaks timeout
/// messages into its mailbox (see DEPENDENCIES.md).
template <class T, class... Ts>
caf::expected<T> ask(caf::actor_system& sys, const caf::actor& dest,
                     caf::duration timeout, Ts&&... xs) {
  caf::scoped_actor self{sys};
  auto handle = self->request(dest, timeout, std::forward<Ts>(xs)...);
  return await_answer<T>(handle);
}

template <class T, class... Ts>
caf::expected<T> ask(request_context& rc, const caf::actor& dest, caf::duration timeout,
                     Ts&&... xs) {
  return ask<T>(rc.node.system(), dest, timeout, std::forward<Ts>(xs)...);
}

template <class T, class... Ts>
caf::expected<T> ask(request_context& rc, const caf::actor& dest, Ts&&... xs) {
  return ask<T>(rc, dest, caf::duration{ask_timeout}, std::forward<Ts>(xs)...);
}

/// `ask` for an answer that may take `wait_ms` (a client's wait on a run, up
/// to `agents.poll_wait_max`), plus `ask_timeout`. Not a request timeout:
/// CAF's clock holds the requester until such a timeout is due, so every
/// long wait would keep its scoped actor (about 2 KB) alive that long after
/// the answer. The receive bounds itself instead. Agents' polls keep `ask`:
/// a timed receive measured slower on the report's hot path
/// (docs/benchmarks.md, e2e).
template <class T, class... Ts>
caf::expected<T> ask_long(request_context& rc, const caf::actor& dest, int64_t wait_ms,
                          Ts&&... xs) {
  caf::scoped_actor self{rc.node.system()};
  auto handle = self->request(dest, caf::infinite, std::forward<Ts>(xs)...);
  caf::expected<T> out{make_error(errc::unavailable, "the mesh did not answer in time")};
  caf::blocking_actor::accept_one_cond one;
  self->varargs_receive(
      one, handle.id(), [&](T& x) { out = std::move(x); },
      [&](caf::error& err) { out = normalize(std::move(err)); },
      caf::after(std::chrono::milliseconds{wait_ms} + ask_timeout) >> [] {});
  return out;
}

/// The message of a 413 for `limit` (the bytes allowed) set by `key`.
caf::error too_large(int64_t limit, const char* key) {
  return make_error(errc::payload_too_large,
                    "request body exceeds the limit of " + std::to_string(limit) +
                        " bytes (" + key + ")",
                    "body");
}

/// A Content-Length header's value (digits alone; leading zeros are fine),
/// or none for "" and for one too large for 64 bits.
std::optional<uint64_t> length_of(const std::string& text) {
  uint64_t value = 0;
  auto [end, err] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || err != std::errc{} || end != text.data() + text.size())
    return std::nullopt;
  return value;
}

/// Whether a Content-Length header's value (digits alone, or absent: "")
/// exceeds `limit`; too many digits are over.
bool length_over(const std::string& text, int64_t limit) {
  if (text.empty()) return false;
  auto value = length_of(text);
  return !value || *value > static_cast<uint64_t>(limit);
}

caf::expected<json> body_object(request_context& rc) {
  // `request_body` read no more than this; checked again for any other way
  // a body gets here.
  auto max_body = rc.ctx()->config.max_body_bytes;
  if (static_cast<int64_t>(rc.req.body.size()) > max_body)
    return too_large(max_body, "http.max_body_bytes");
  if (rc.req.body.empty())
    return make_error(errc::invalid_argument,
                      "request body is empty; a JSON object is required", "body");
  return wire::parse_object(rc.req.body);
}

/// Parses an optional non-negative integer query parameter.
caf::expected<int64_t> query_int(request_context& rc, const char* name, int64_t fallback,
                                 int64_t lo, int64_t hi) {
  if (!rc.has_query(name)) return fallback;
  auto text = rc.query_value(name);
  // strtoll alone would also take " 1", "+1", "01", "-01" and "-0".
  std::string_view digits{text};
  bool negative = !digits.empty() && digits.front() == '-';
  if (negative) digits.remove_prefix(1);
  bool plain = !digits.empty() &&
               std::all_of(digits.begin(), digits.end(),
                           [](char c) { return c >= '0' && c <= '9'; }) &&
               !(digits.size() > 1 && digits.front() == '0') &&
               !(negative && digits == "0");
  auto not_plain = [&] {
    return make_error(errc::invalid_argument,
                      "query parameter '" + std::string{name} +
                          "' must be an integer in plain digits (no '+', spaces or "
                          "leading zeros), got '" +
                          text + "'",
                      name);
  };
  if (!plain) return not_plain();
  char* end = nullptr;
  errno = 0;
  auto x = std::strtoll(text.c_str(), &end, 10);
  if (text.empty() || *end != '\0') return not_plain();
  if (errno == ERANGE || x < lo || x > hi)
    return make_error(errc::invalid_argument,
                      "query parameter '" + std::string{name} + "' must be between " +
                          std::to_string(lo) + " and " + std::to_string(hi),
                      name);
  return x;
}

/// An optional text query parameter ("" when absent). Given but empty is an
/// error: an empty value is a client's mistake (an unset variable), not
/// "any"; `absent_means` says what leaving it out does.
caf::expected<std::string> query_text(request_context& rc, const char* name,
                                      const char* absent_means) {
  auto text = rc.query_value(name);
  if (rc.has_query(name) && text.empty())
    return make_error(errc::invalid_argument,
                      "query parameter '" + std::string{name} +
                          "' is empty: leave it out " + absent_means,
                      name);
  return text;
}

/// The parameters of `target`'s query string, decoded.
httplib::Params query_of(const std::string& target) {
  httplib::Params out;
  auto q = target.find('?');
  if (q == std::string::npos) return out;
  std::string_view rest{target};
  rest.remove_prefix(q + 1);
  while (!rest.empty()) {
    auto item = rest.substr(0, rest.find('&'));
    rest.remove_prefix(std::min(rest.size(), item.size() + 1));
    if (item.empty()) continue;
    auto eq = std::min(item.find('='), item.size());
    auto value = eq < item.size() ? item.substr(eq + 1) : std::string_view{};
    out.emplace(httplib::detail::decode_url(std::string{item.substr(0, eq)}, true),
                httplib::detail::decode_url(std::string{value}, true));
  }
  return out;
}

/// Rejects query parameters the endpoint does not know (`known`,
/// space-separated) and parameters given more than once.
caf::error check_query(const httplib::Params& query, std::string_view known) {
  for (auto it = query.begin(); it != query.end(); it = query.upper_bound(it->first)) {
    auto& k = it->first;
    if (k.empty())
      return make_error(errc::invalid_argument,
                        "a query parameter has no name ('=" + it->second + "')", "query");
    bool ok = false;
    for (size_t at = 0; at < known.size() && !ok;) {
      auto end = std::min(known.find(' ', at), known.size());
      ok = known.substr(at, end - at) == k;
      at = end + 1;
    }
    if (!ok)
      return make_error(errc::invalid_argument, "unknown query parameter '" + k + "'", k);
    if (query.count(k) > 1)
      return make_error(errc::invalid_argument,
                        "query parameter '" + k + "' is given more than once", k);
  }
  return {};
}

/// Whether `body` is empty, blank or `{}`: what a client may send to an
/// endpoint that takes no body.
bool no_body(const std::string& body) {
  auto blank = [](char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; };
  auto first = std::find_if_not(body.begin(), body.end(), blank);
  if (first == body.end()) return true;
  auto last = std::find_if_not(body.rbegin(), body.rend(), blank).base();
  if (*first != '{' || *(last - 1) != '}') return false;
  return std::all_of(first + 1, last - 1, blank);
}

/// What this mesh accepts, so that an agent sizes its log requests, logs
/// and results to fit instead of having them refused. Sent at registration
/// and with every poll's answer: a restart with other limits reaches agents
/// that stay connected.
json limits_json(const mesh_config& cfg) {
  return json{{"max_body_bytes", cfg.max_body_bytes},
              {"max_result_bytes", cfg.max_result_bytes},
              {"max_log_bytes", cfg.max_log_bytes}};
}

/// A registration's or a token refresh's answer. The token's life is sent
/// twice: as a time (`token_expires_at`) and as seconds from now
/// (`token_expires_in_s`), which an agent times on its own monotonic clock:
/// the agent's and the mesh's wall clocks may differ by any amount.
json agent_session_json(const agent_session_info& s, const mesh_config& cfg,
                        timestamp now) {
  auto life = std::chrono::duration_cast<std::chrono::seconds>(s.token_expires_at - now);
  auto out = json{
      {"id", s.agent.id},
      {"name", s.agent.name},
      {"session", s.agent.session},
      {"status", to_string(s.agent.status)},
      {"drained_by",
       s.agent.drained ? json(s.agent.drain_kept ? "admin" : "agent") : json(nullptr)},
      {"access_token", s.access_token},
      {"token_expires_at", to_rfc3339(s.token_expires_at)},
      {"token_expires_in_s", std::max<int64_t>(0, life.count())},
      {"poll_wait_max_s",
       std::chrono::duration_cast<std::chrono::seconds>(cfg.poll_wait_max).count()},
      {"heartbeat_interval_s",
       std::chrono::duration_cast<std::chrono::seconds>(cfg.heartbeat_interval).count()},
  };
  out.update(limits_json(cfg));
  return out;
}

json run_list_json(const std::vector<run_record>& runs) {
  json out = json::array();
  for (auto& r : runs)
    out.push_back(wire::to_json(r));
  return out;
}

/// The agent path segment must be the caller's own agent for agent tokens.
caf::error check_own_agent(request_context& rc, const std::string& id) {
  if (rc.who.kind == token_kind::agent && rc.who.agent_id != id)
    return make_error(errc::forbidden,
                      "this token belongs to agent " + rc.who.agent_id +
                          "; an agent's calls name it by that id in the path, not by "
                          "name or another agent's id",
                      "id");
  return {};
}

wire::limits limits_of(const mesh_config& cfg) {
  wire::limits lim;
  lim.max_payload_bytes = static_cast<size_t>(cfg.max_payload_bytes);
  lim.max_result_bytes = static_cast<size_t>(cfg.max_result_bytes);
  return lim;
}

template <class T> void answer(request_context& rc, int status, caf::expected<T> x) {
  if (!x)
    rc.fail(x.error());
  else
    rc.reply(status, wire::to_json(*x));
}

// -- handlers: tokens ---------------------------------------------------------------

void create_token(request_context& rc) {
  auto body = body_object(rc);
  if (!body) return rc.fail(body.error());
  auto req = wire::parse_token_request(*body);
  if (!req) return rc.fail(req.error());
  if (!req->scope.empty()) {
    auto sel = selector::parse(req->scope, "scope");
    if (!sel) return rc.fail(sel.error());
    // A scope no agent can meet would confine the token to nothing.
    if (auto why = sel->contradiction(); !why.empty())
      return rc.fail(make_error(errc::invalid_argument,
                                "the scope can never match an agent: " + why, "scope"));
    auto text = wire::canonical_selector(*sel, "scope");
    if (!text) return rc.fail(text.error());
    req->scope = std::move(*text);
  }
  auto tok = ask<issued_token>(rc, rc.ctx()->token_registry, create_atom::value, *req);
  if (!tok) return rc.fail(tok.error());
  auto j = wire::to_json(tok->record);
  j["token"] = tok->token;
  rc.reply(201, j);
}

void list_tokens(request_context& rc) {
  auto tokens =
      ask<token_list>(rc, rc.ctx()->lists, list_atom::value, tokens_atom::value);
  if (!tokens) return rc.fail(tokens.error());
  json out = json::array();
  for (auto& t : *tokens)
    out.push_back(wire::to_json(t));
  rc.reply(200, json{{"tokens", out}});
}

void revoke_token(request_context& rc) {
  auto id = rc.param("id");
  // The last admin token revoking itself would leave no admin until a
  // restart; another admin token can always revoke this one.
  if (rc.who.token_id == id)
    return rc.fail(make_error(
        errc::conflict,
        id == token_cache::bootstrap_admin_id
            ? "the bootstrap admin token cannot revoke itself; create another admin "
              "token first or rotate POLYMESH_ADMIN_TOKEN"
            : "a token cannot revoke itself; revoke it with another admin token",
        "id"));
  answer(rc, 200,
         ask<token_record>(rc, rc.ctx()->token_registry, revoke_atom::value, id));
}

// -- handlers: agents ---------------------------------------------------------------

void register_agent(request_context& rc) {
  auto body = body_object(rc);
  if (!body) return rc.fail(body.error());
  auto req = wire::parse_register_request(*body);
  if (!req) return rc.fail(req.error());
  auto s =
      ask<agent_session_info>(rc, rc.ctx()->agents, register_atom::value, rc.who, *req);
  if (!s) return rc.fail(s.error());
  rc.res.set_header("Location", s->agent.id); // relative: /v1/agents/{id}
  rc.reply(201, agent_session_json(*s, rc.ctx()->config, rc.ctx()->now()));
}

void refresh_agent_token(request_context& rc) {
  auto id = rc.param("id");
  if (auto err = check_own_agent(rc, id)) return rc.fail(err);
  auto s = ask<agent_session_info>(rc, rc.ctx()->agents, refresh_atom::value, rc.who, id);
  if (!s) return rc.fail(s.error());
  rc.reply(200, agent_session_json(*s, rc.ctx()->config, rc.ctx()->now()));
}

/// A long-poll's place in the worker pool: released when it goes.
class poll_slot {
public:
  poll_slot() = default;
  explicit poll_slot(std::atomic<int64_t>* n)
      : n_(n) {}
  poll_slot(const poll_slot&) = delete;
  poll_slot& operator=(const poll_slot&) = delete;
  poll_slot(poll_slot&& other) noexcept
      : n_(std::exchange(other.n_, nullptr)) {}
  poll_slot& operator=(poll_slot&& other) noexcept {
    std::swap(n_, other.n_);
    return *this;
  }
  ~poll_slot() {
    if (n_) n_->fetch_sub(1);
  }

private:
  std::atomic<int64_t>* n_ = nullptr;
};

/// The wait asked for (`?wait=S`, default 0) as granted: capped at
/// `agents.poll_wait_max`, in milliseconds.
caf::expected<int64_t> granted_wait_ms(request_context& rc) {
  auto max_wait =
      std::chrono::duration_cast<std::chrono::seconds>(rc.ctx()->config.poll_wait_max);
  auto wait = query_int(rc, "wait", 0, 0, 86400);
  if (!wait) return wait.error();
  return std::min<int64_t>(*wait, max_wait.count()) * 1000;
}

/// The wait of an agent's poll in milliseconds, with its place in the pool
/// taken. A waiting poll holds a worker thread: past the pool's headroom
/// this answers 503 rather than let every other request queue behind the
/// polls.
caf::expected<std::pair<int64_t, poll_slot>> take_poll_slot(request_context& rc) {
  auto wait_ms = granted_wait_ms(rc);
  if (!wait_ms) return wait_ms.error();
  if (*wait_ms == 0) return std::pair<int64_t, poll_slot>{0, poll_slot{}};
  if (rc.open_polls.fetch_add(1) >= rc.max_polls) {
    rc.open_polls.fetch_sub(1);
    return make_error(errc::unavailable,
                      "too many agents are long-polling for http.threads=" +
                          std::to_string(rc.ctx()->config.http_threads) +
                          "; retry later or raise http.threads");
  }
  return std::pair<int64_t, poll_slot>{*wait_ms, poll_slot{&rc.open_polls}};
}

caf::expected<poll_result> wait_for_runs(request_context& rc, const std::string& id,
                                         int64_t wait_ms) {
  auto timeout = caf::duration{std::chrono::milliseconds{wait_ms} + ask_timeout};
  return ask<poll_result>(rc, rc.ctx()->agents, timeout, poll_atom::value, rc.who, id,
                          wait_ms);
}

void poll_runs(request_context& rc) {
  auto id = rc.param("id");
  if (auto err = check_own_agent(rc, id)) return rc.fail(err);
  auto slot = take_poll_slot(rc);
  if (!slot) return rc.fail(slot.error());
  auto out = wait_for_runs(rc, id, slot->first);
  if (!out) return rc.fail(out.error());
  rc.reply(200, json{{"runs", run_list_json(out->runs)},
                     {"cancel", out->cancel},
                     {"held_until", wire::optional_time(out->held_until)},
                     {"lapsed_leases", out->lapsed_leases},
                     {"limits", limits_json(rc.ctx()->config)}});
}

/// One item's outcome in a report answer: the run's state, or the error the
/// single-run endpoint would have answered (with its HTTP status).
json report_item(const std::string& id, const caf::expected<run_record>& r) {
  if (r)
    return json{{"run", id},
                {"ok", true},
                {"status", to_string(r->status)},
                {"cancel_requested", r->cancel_requested}};
  auto body = wire::error_body(r.error());
  return json{{"run", id},
              {"ok", false},
              {"http_status", http_status(code_of(r.error()))},
              {"error", body["error"]}};
}

/// `POST /v1/agents/{id}/report`: starts, then finishes, then (with
/// `?wait=S`, also 0) a poll, in one request. Every item is answered on its
/// own; an answered `ok` is durable.
void report_runs(request_context& rc) {
  auto id = rc.param("id");
  if (auto err = check_own_agent(rc, id)) return rc.fail(err);
  auto body = body_object(rc);
  if (!body) return rc.fail(body.error());
  auto req = wire::parse_report_request(*body, limits_of(rc.ctx()->config));
  if (!req) return rc.fail(req.error());
  // Without `wait` a report does not poll: the agent's own long-poll, which
  // may be parked meanwhile, keeps its place.
  bool polls = rc.has_query("wait");
  int64_t wait_ms = 0;
  poll_slot held;
  if (polls) {
    auto slot = take_poll_slot(rc);
    if (!slot) return rc.fail(slot.error());
    wait_ms = slot->first;
    held = std::move(slot->second);
  }
  // A run both started and finished here is one durable write (its finish
  // carries the start); the others go to their run actors all at once and
  // are answered in order.
  std::set<std::string> finishing;
  for (auto& [run, f] : req->finished)
    finishing.insert(run);
  caf::scoped_actor self{rc.node.system()};
  using handle = decltype(self->request(rc.ctx()->runs, caf::duration{ask_timeout},
                                        start_atom::value, rc.who, std::string{}));
  std::vector<std::pair<std::string, std::optional<handle>>> starts;
  for (auto& run : req->started) {
    if (finishing.count(run) != 0) {
      starts.emplace_back(run, std::nullopt);
      continue;
    }
    starts.emplace_back(run, self->request(rc.ctx()->runs, caf::duration{ask_timeout},
                                           start_atom::value, rc.who, run));
  }
  std::set<std::string> started_here{req->started.begin(), req->started.end()};
  std::vector<handle> finishes;
  for (auto& [run, f] : req->finished) {
    f.implicit_start = started_here.count(run) != 0;
    finishes.push_back(self->request(rc.ctx()->runs, caf::duration{ask_timeout},
                                     finish_atom::value, rc.who, run, f));
  }
  json started = json::array();
  json finished = json::array();
  // A run started within its finish is answered like its finish: the start
  // stands if the finish did.
  std::map<std::string, json> ended;
  for (size_t i = 0; i < finishes.size(); ++i) {
    auto& run = req->finished[i].first;
    auto item = report_item(run, await_answer<run_record>(finishes[i]));
    finished.push_back(item);
    ended.emplace(run, std::move(item));
  }
  for (auto& [run, h] : starts)
    started.push_back(h ? report_item(run, await_answer<run_record>(*h)) : ended.at(run));
  json out{{"started", started}, {"finished", finished}};
  if (!polls) return rc.reply(200, out);
  auto polled = wait_for_runs(rc, id, wait_ms);
  if (!polled) return rc.fail(polled.error());
  out["runs"] = run_list_json(polled->runs);
  out["cancel"] = polled->cancel;
  out["held_until"] = wire::optional_time(polled->held_until);
  out["lapsed_leases"] = polled->lapsed_leases;
  out["limits"] = limits_json(rc.ctx()->config);
  rc.reply(200, out);
}

void deregister_agent(request_context& rc) {
  auto id = rc.param("id");
  if (auto err = check_own_agent(rc, id)) return rc.fail(err);
  answer(rc, 200, ask<agent_record>(rc, rc.ctx()->agents, dereg_atom::value, rc.who, id));
}

void list_agents(request_context& rc) {
  selector sel;
  if (rc.has_query("selector")) {
    auto s = selector::parse(rc.query_value("selector"), "selector");
    if (!s) return rc.fail(s.error());
    sel = std::move(*s);
  }
  std::optional<agent_status> status;
  if (rc.has_query("status")) {
    status = parse_agent_status(rc.query_value("status"));
    if (!status)
      return rc.fail(make_error(
          errc::invalid_argument,
          "status must be one of online, draining, offline, deregistered (got '" +
              printable_prefix(rc.query_value("status"), 64) + "')",
          "status"));
  }
  auto plan = rc.query_value("plan");
  if (rc.has_query("plan"))
    if (auto err = wire::validate_plan_name(plan, "plan")) return rc.fail(err);
  auto agents = ask<agent_list>(rc, rc.ctx()->agents, list_atom::value);
  if (!agents) return rc.fail(agents.error());
  json out = json::array();
  for (auto& a : *agents) {
    if (!sel.matches(a.labels) || (status && a.status != *status)) continue;
    if (!plan.empty() && std::find(a.plans.begin(), a.plans.end(), plan) == a.plans.end())
      continue;
    out.push_back(wire::to_json(a));
  }
  rc.reply(200, json{{"agents", out}});
}

/// The entity tags of every `name` header line (`If-Match`,
/// `If-None-Match`), in order: `*`, or each tag as sent, quotes and a weak
/// one's `W/` kept. `malformed` when a line holds anything else; the tags
/// before the fault are kept.
struct entity_tags {
  std::vector<std::string> tags;
  bool malformed = false;
};

entity_tags read_entity_tags(const httplib::Request& req, const char* name) {
  entity_tags out;
  auto [first, last] = req.headers.equal_range(name);
  for (auto line = first; line != last && !out.malformed; ++line) {
    const std::string& h = line->second;
    for (size_t i = 0; i < h.size();) {
      if (h[i] == ' ' || h[i] == '\t' || h[i] == ',') {
        ++i;
        continue;
      }
      if (h[i] == '*') {
        out.tags.emplace_back("*");
        ++i;
        continue;
      }
      size_t start = i;
      if (h.compare(i, 2, "W/") == 0) i += 2;
      auto close = i < h.size() && h[i] == '"' ? h.find('"', i + 1) : std::string::npos;
      if (close == std::string::npos) {
        out.malformed = true;
        break;
      }
      out.tags.push_back(h.substr(start, close + 1 - start));
      i = close + 1;
    }
  }
  return out;
}

/// Answers an agent with its labels' entity tag (`labels_etag`), which a
/// change of its labels may name in `If-Match`.
void answer_agent(request_context& rc, const caf::expected<agent_record>& agent) {
  if (agent) rc.res.set_header("ETag", labels_etag(agent->labels));
  answer(rc, 200, agent);
}

void get_agent(request_context& rc) {
  answer_agent(rc,
               ask<agent_record>(rc, rc.ctx()->agents, get_atom::value, rc.param("id")));
}

void patch_agent(request_context& rc) {
  // `If-Match` (RFC 9110 13.1.1): `*`, or the tags of the labels the edit
  // started from, compared strongly (a weak tag matches none).
  auto if_match = read_entity_tags(rc.req, "If-Match");
  if (if_match.malformed)
    return rc.fail(make_error(errc::invalid_argument,
                              "must be * or a list of entity tags (\"…\", as the "
                              "agent's ETag)",
                              "If-Match"));
  if (rc.req.has_header("If-Match") && if_match.tags.empty())
    return rc.fail(make_error(errc::invalid_argument,
                              "is empty: send the agent's ETag, or no If-Match",
                              "If-Match"));
  auto body = body_object(rc);
  if (!body) return rc.fail(body.error());
  auto patch = wire::parse_labels_patch(*body);
  if (!patch) return rc.fail(patch.error());
  answer_agent(rc, ask<agent_record>(rc, rc.ctx()->agents, labels_atom::value,
                                     rc.param("id"), patch->labels, if_match.tags));
}

void drain_agent(request_context& rc) {
  // An agent may drain itself (it does when told to stop).
  if (auto err = check_own_agent(rc, rc.param("id"))) return rc.fail(err);
  answer(rc, 200,
         ask<agent_record>(rc, rc.ctx()->agents, drain_atom::value, rc.param("id"),
                           rc.who.kind == token_kind::admin));
}

void undrain_agent(request_context& rc) {
  answer(rc, 200,
         ask<agent_record>(rc, rc.ctx()->agents, undrain_atom::value, rc.param("id")));
}

// -- handlers: runs -----------------------------------------------------------------

/// Normalizes a parsed run request: its selector in canonical form, a named
/// target agent checked to exist, be reachable and be in the caller's scope.
caf::error prepare_run(request_context& rc, wire::run_request& req) {
  auto sel = selector::parse(req.selector, "selector");
  if (!sel) return sel.error();
  auto text = wire::canonical_selector(*sel, "selector");
  if (!text) return text.error();
  req.selector = std::move(*text);
  // A run no agent could ever take would wait for its TTL (or for ever):
  // refused, naming the token's scope when the contradiction is with it.
  if (auto why = sel->contradiction(); !why.empty())
    return make_error(errc::invalid_argument,
                      "the selector can never match an agent: " + why, "selector");
  // A scope that does not parse (it did when the token was made) matches
  // nothing: fail closed where it is used below.
  caf::expected<selector> scope = selector{};
  if (!rc.who.scope.empty()) scope = selector::parse(rc.who.scope, "scope");
  if (!rc.who.scope.empty() && scope)
    if (auto why = sel->contradiction(*scope); !why.empty())
      return make_error(errc::invalid_argument,
                        "the selector can never match an agent within this token's "
                        "scope (" +
                            rc.who.scope + "): " + why,
                        "selector");
  if (req.agent.empty()) return {};
  // Skadi style: the named agent must exist, be reachable, and be in scope.
  auto agent = ask<agent_record>(rc, rc.ctx()->agents, get_atom::value, req.agent);
  if (!agent)
    return make_error(errc::not_found, "no agent named '" + req.agent + "'", "agent");
  // Scope first: an agent the caller may not use is a 403 whatever its
  // state, so that the answer does not depend on something it cannot change.
  if (!rc.who.scope.empty()) {
    if (!scope || !scope->matches(agent->labels))
      return make_error(errc::forbidden,
                        "agent '" + req.agent + "' is outside this token's scope (" +
                            rc.who.scope + ")",
                        "agent");
  }
  if (agent->status == agent_status::offline ||
      agent->status == agent_status::deregistered)
    return make_error(errc::conflict,
                      "agent '" + req.agent + "' is " + to_string(agent->status),
                      "agent");
  // What it offers changes only when it registers again (a new session under
  // the same name), which a run waiting for it would then see; refusing now
  // says what is wrong instead of leaving the run to wait for its TTL.
  if (std::find(agent->plans.begin(), agent->plans.end(), req.plan) ==
      agent->plans.end()) {
    std::string offers;
    for (auto& p : agent->plans)
      offers += (offers.empty() ? "" : ", ") + p;
    return make_error(errc::conflict,
                      "agent '" + req.agent + "' does not offer plan '" + req.plan +
                          "' (it offers: " + (offers.empty() ? "none" : offers) + ")",
                      "plan");
  }
  if (const auto* unmet = sel->first_unmet(agent->labels))
    return make_error(errc::conflict,
                      "agent '" + req.agent +
                          "' does not meet the selector's requirement " +
                          unmet->to_string(),
                      "selector");
  req.agent = agent->name;
  return {};
}

/// The wait of a client's wait for a run in milliseconds, with its place
/// taken. Client waits have threads of their own (`http.run_waits`), so they
/// never take an agent's place; when those are all taken the wait is 0: the
/// run is answered at once, as a plain read would.
caf::expected<std::pair<int64_t, poll_slot>> take_wait_slot(request_context& rc) {
  auto wait_ms = granted_wait_ms(rc);
  if (!wait_ms) return wait_ms.error();
  if (*wait_ms == 0) return std::pair<int64_t, poll_slot>{0, poll_slot{}};
  if (rc.open_waits.fetch_add(1) >= rc.ctx()->config.run_waits) {
    rc.open_waits.fetch_sub(1);
    return std::pair<int64_t, poll_slot>{0, poll_slot{}};
  }
  return std::pair<int64_t, poll_slot>{*wait_ms, poll_slot{&rc.open_waits}};
}

/// `?while_status=S` of a wait for a run: a status the run can leave; none
/// waits for the run to end.
caf::expected<std::optional<run_status>> while_status_of(request_context& rc) {
  if (!rc.has_query("while_status")) return std::optional<run_status>{};
  if (!rc.has_query("wait"))
    return make_error(errc::invalid_argument, "while_status needs wait=S",
                      "while_status");
  auto status = parse_run_status(rc.query_value("while_status"));
  if (!status || is_terminal(*status))
    return make_error(errc::invalid_argument,
                      "while_status must be one of created, pending, running (got '" +
                          printable_prefix(rc.query_value("while_status"), 64) + "')",
                      "while_status");
  return std::optional<run_status>{*status};
}

/// Run `id` once its status is not `while_status` (none: once it ended), or
/// as it is when `wait_ms` have passed.
caf::expected<run_record> watch_run(request_context& rc, const std::string& id,
                                    int64_t wait_ms,
                                    std::optional<run_status> while_status) {
  // The run actor answers at the deadline itself.
  return ask_long<run_record>(rc, rc.ctx()->runs, wait_ms, watch_atom::value, id,
                              watch_request{while_status, wait_ms});
}

void submit_run(request_context& rc) {
  auto body = body_object(rc);
  if (!body) return rc.fail(body.error());
  auto req = wire::parse_run_request(*body, limits_of(rc.ctx()->config));
  if (!req) return rc.fail(req.error());
  auto slot = take_wait_slot(rc);
  if (!slot) return rc.fail(slot.error());
  if (auto err = prepare_run(rc, *req)) return rc.fail(err);
  if (rc.ctx()->stopping)
    return rc.fail(make_error(errc::unavailable, "meshd is shutting down"));
  auto out = ask<create_result>(rc, rc.ctx()->runs, create_atom::value, rc.who, *req);
  if (!out) return rc.fail(out.error());
  if (out->refused) return rc.fail(out->refused);
  auto status = out->created ? 201 : 200;
  // Relative to the request's own URL, so that it holds behind a proxy's
  // path prefix too.
  if (status == 201) rc.res.set_header("Location", "runs/" + out->run.id);
  if (slot->first > 0) {
    // The run is durable: a wait that fails still answers with it, as it
    // was created. (One cut short by meshd stopping answers as it is.)
    auto ended = watch_run(rc, out->run.id, slot->first, std::nullopt);
    if (ended) return rc.reply(status, wire::to_json(*ended));
  }
  rc.reply(status, wire::to_json(out->run));
}

/// Whether the client asked for `Prefer: return=minimal` (RFC 7240): a list
/// of preferences, each possibly with `;` parameters, value maybe quoted.
bool prefers_minimal(const httplib::Request& req) {
  auto trim = [](std::string_view x) {
    while (!x.empty() && (x.front() == ' ' || x.front() == '\t'))
      x.remove_prefix(1);
    while (!x.empty() && (x.back() == ' ' || x.back() == '\t'))
      x.remove_suffix(1);
    return x;
  };
  auto n = req.get_header_value_count("Prefer");
  for (size_t i = 0; i < n; ++i) {
    std::string header = req.get_header_value("Prefer", i);
    for (char& c : header)
      c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    std::string_view rest{header};
    while (!rest.empty()) {
      auto item = rest.substr(0, rest.find(','));
      rest.remove_prefix(std::min(rest.size(), item.size() + 1));
      auto pref = trim(item.substr(0, item.find(';')));
      // `token BWS "=" BWS word`: blanks may surround the `=`.
      auto eq = pref.find('=');
      if (eq == std::string_view::npos || trim(pref.substr(0, eq)) != "return") continue;
      auto value = trim(pref.substr(eq + 1));
      if (value == "minimal" || value == "\"minimal\"") return true;
    }
  }
  return false;
}

void submit_batch(request_context& rc) {
  auto body = body_object(rc);
  if (!body) return rc.fail(body.error());
  auto reqs = wire::parse_run_batch(*body, limits_of(rc.ctx()->config));
  if (!reqs) return rc.fail(reqs.error());
  for (size_t i = 0; i < reqs->size(); ++i)
    if (auto err = prepare_run(rc, (*reqs)[i]))
      return rc.fail(wire::within("runs[" + std::to_string(i) + "]", err));
  if (rc.ctx()->stopping)
    return rc.fail(make_error(errc::unavailable, "meshd is shutting down"));
  auto out = ask<create_results>(rc, rc.ctx()->runs, create_atom::value, rc.who, *reqs);
  if (!out) return rc.fail(out.error());
  // Building and sending every run's full object is about a quarter of a
  // batch's CPU; a client that only needs the ids can say so.
  bool minimal = prefers_minimal(rc.req);
  json results = json::array();
  bool any_created = false;
  for (auto& r : *out) {
    if (r.refused) {
      // Its key is another scope's: this item alone is refused.
      results.push_back(
          json{{"created", false}, {"error", wire::error_body(r.refused)["error"]}});
      continue;
    }
    any_created = any_created || r.created;
    auto run = minimal ? json{{"id", r.run.id}, {"status", to_string(r.run.status)}}
                       : wire::to_json(r.run);
    results.push_back(json{{"created", r.created}, {"run", std::move(run)}});
  }
  if (minimal) rc.res.set_header("Preference-Applied", "return=minimal");
  rc.reply(any_created ? 201 : 200, json{{"results", results}});
}

void get_run(request_context& rc) {
  auto while_status = while_status_of(rc);
  if (!while_status) return rc.fail(while_status.error());
  if (!rc.has_query("wait"))
    return answer(rc, 200,
                  ask<run_record>(rc, rc.ctx()->query, get_atom::value, rc.param("id")));
  auto slot = take_wait_slot(rc);
  if (!slot) return rc.fail(slot.error());
  answer(rc, 200, watch_run(rc, rc.param("id"), slot->first, *while_status));
}

void list_runs(request_context& rc) {
  run_filter f;
  if (rc.has_query("status")) {
    f.status = parse_run_status(rc.query_value("status"));
    if (!f.status)
      return rc.fail(make_error(
          errc::invalid_argument,
          "status must be one of created, pending, running, success, error, canceled "
          "(got '" +
              printable_prefix(rc.query_value("status"), 64) + "')",
          "status"));
  }
  f.plan = rc.query_value("plan");
  if (rc.has_query("plan"))
    if (auto err = wire::validate_plan_name(f.plan, "plan")) return rc.fail(err);
  f.agent = rc.query_value("agent");
  if (rc.has_query("agent"))
    if (auto err = wire::validate_agent_name(f.agent, "agent")) return rc.fail(err);
  if (!f.agent.empty()) {
    // A name works too: the runs record ids. An id no longer known (an
    // agent forgotten since) still filters as given; an unknown name is a
    // typo, not a filter that matches nothing.
    auto a = ask<agent_record>(rc, rc.ctx()->agents, get_atom::value, f.agent);
    if (a)
      f.agent = a->id;
    else if (f.agent.rfind(agent_id_prefix, 0) != 0)
      return rc.fail(make_error(errc::invalid_argument,
                                "no agent named '" + f.agent +
                                    "' (give a known agent's name, or an agent id)",
                                "agent"));
  }
  auto key = query_text(rc, "concurrency_key", "for runs with any key or none");
  if (!key) return rc.fail(key.error());
  f.concurrency_key = std::move(*key);
  // The submit's rules: a key no run can have is a mistake, not an empty page.
  if (f.concurrency_key.size() > wire::max_concurrency_key_bytes)
    return rc.fail(make_error(errc::invalid_argument,
                              "query parameter 'concurrency_key' is longer than " +
                                  std::to_string(wire::max_concurrency_key_bytes) +
                                  " bytes",
                              "concurrency_key"));
  if (auto err = wire::printable(f.concurrency_key, "concurrency_key"))
    return rc.fail(err);
  auto cursor = query_text(rc, "cursor",
                           "for the first page, or give the previous page's next_cursor");
  if (!cursor) return rc.fail(cursor.error());
  f.cursor = std::move(*cursor);
  auto limit = query_int(rc, "limit", 50, 1, 1000);
  if (!limit) return rc.fail(limit.error());
  f.limit = static_cast<size_t>(*limit);
  auto page = ask<run_page>(rc, rc.ctx()->lists, list_atom::value, f);
  if (!page) return rc.fail(page.error());
  json body{{"runs", run_list_json(page->runs)}};
  body["next_cursor"] =
      page->next_cursor.empty() ? json(nullptr) : json(page->next_cursor);
  rc.reply(200, body);
}

void cancel_run(request_context& rc) {
  answer(rc, 200,
         ask<run_record>(rc, rc.ctx()->runs, cancel_atom::value, rc.who, rc.param("id")));
}

void run_logs(request_context& rc) {
  auto after = query_int(rc, "after", -1, -1, INT64_MAX);
  if (!after) return rc.fail(after.error());
  auto limit = query_int(rc, "limit", 1000, 1, 10000);
  if (!limit) return rc.fail(limit.error());
  auto page = ask<log_page>(rc, rc.ctx()->query, logs_atom::value, rc.param("id"), *after,
                            static_cast<size_t>(*limit));
  if (!page) return rc.fail(page.error());
  json out = json::array();
  for (auto& c : page->chunks)
    out.push_back(wire::to_json(c));
  auto last = page->chunks.empty() ? *after : page->chunks.back().seq;
  rc.reply(200, json{{"chunks", out}, {"next_after", last}, {"more", page->more}});
}

void explain_run(request_context& rc) {
  auto id = rc.param("id");
  auto run = ask<run_record>(rc, rc.ctx()->query, get_atom::value, id);
  if (!run) return rc.fail(run.error());
  json body{{"run", id}, {"status", to_string(run->status)}, {"waiting_for", nullptr}};
  if (run->status != run_status::created) {
    body["assigned"] = true;
    body["assigned_agent"] =
        run->assigned_agent.empty() ? json(nullptr) : json(run->assigned_agent);
    body["agents"] = json::array();
    body["message"] = "run is " + std::string{to_string(run->status)} +
                      "; explain applies to runs waiting for an agent";
    return rc.reply(200, body);
  }
  auto why = ask<explanation>(rc, rc.ctx()->assignment, explain_atom::value, id);
  if (!why) return rc.fail(why.error());
  json agents = json::array();
  for (auto& c : why->agents)
    agents.push_back(json{{"agent_id", c.agent_id},
                          {"agent_name", c.agent_name},
                          {"candidate", c.candidate},
                          {"reason", c.reason.empty() ? json(nullptr) : json(c.reason)}});
  body["assigned"] = false;
  body["agents"] = agents;
  auto& all = why->agents;
  bool any = std::any_of(all.begin(), all.end(), [](auto& c) { return c.candidate; });
  // `no free slot` is the last check: such an agent meets every other one.
  bool busy = std::any_of(all.begin(), all.end(), [](auto& c) {
    return c.reason.rfind("no free slot (", 0) == 0;
  });
  // Status is the first check: whether a draining agent meets the others.
  bool draining = std::any_of(all.begin(), all.end(),
                              [](auto& c) { return c.reason == "draining" && c.fits; });
  // Held back after lapsed leases: the same place as the status.
  bool held = std::any_of(all.begin(), all.end(), [](auto& c) {
    return c.fits && c.reason.rfind("held back until ", 0) == 0;
  });
  if (!why->key_holder.empty()) {
    body["waiting_for"] = json{{"run", why->key_holder},
                               {"concurrency_key", run->concurrency_key},
                               {"holds_key", true}};
    body["message"] = "waits for run " + why->key_holder +
                      ", which holds concurrency key " + run->concurrency_key;
  } else if (!why->key_first.empty()) {
    body["waiting_for"] = json{{"run", why->key_first},
                               {"concurrency_key", run->concurrency_key},
                               {"holds_key", false}};
    body["message"] = "waits for run " + why->key_first +
                      ", which goes first with concurrency key " + run->concurrency_key +
                      " (queued before it, or of a higher priority)";
  } else {
    body["message"] =
        all.empty() ? "no agent to consider (none registered, or the run is "
                      "being assigned right now)"
        : any       ? "a candidate has a free slot; the run is being assigned"
        : held && busy
            ? "no agent can take this run now; an agent held back (runs placed "
              "with it were not started) could take it when its hold ends, or a "
              "busy one when it frees a slot (see each agent's reason)"
        : held     ? "no agent can take this run now; an agent held back (runs placed "
                     "with it were not started) could take it when its hold ends (see "
                     "each agent's reason)"
        : busy     ? "every agent that could take this run is busy: it waits "
                     "for a free slot"
        : draining ? "no agent can take this run now; a draining agent could take "
                     "it once undrained (see each agent's reason)"
                   : "no agent can take this run; see each agent's reason";
  }
  rc.reply(200, body);
}

// -- handlers: agent run calls ----------------------------------------------------

void start_run(request_context& rc) {
  answer(rc, 200,
         ask<run_record>(rc, rc.ctx()->runs, start_atom::value, rc.who, rc.param("id")));
}

void progress_run(request_context& rc) {
  wire::progress_request req;
  if (!no_body(rc.req.body)) {
    auto body = body_object(rc);
    if (!body) return rc.fail(body.error());
    auto parsed = wire::parse_progress_request(*body);
    if (!parsed) return rc.fail(parsed.error());
    req = std::move(*parsed);
  }
  auto cancel = ask<bool>(rc, rc.ctx()->runs, progress_atom::value, rc.who,
                          rc.param("id"), req.message);
  if (!cancel) return rc.fail(cancel.error());
  rc.reply(200, json{{"cancel_requested", *cancel}});
}

void append_logs(request_context& rc) {
  auto body = body_object(rc);
  if (!body) return rc.fail(body.error());
  auto req = wire::parse_log_request(*body);
  if (!req) return rc.fail(req.error());
  auto n = req->chunks.size();
  auto ok = ask<bool>(rc, rc.ctx()->runs, logs_atom::value, rc.who, rc.param("id"), *req);
  if (!ok) return rc.fail(ok.error());
  rc.reply(200, json{{"accepted", n}});
}

void finish_run(request_context& rc) {
  auto body = body_object(rc);
  if (!body) return rc.fail(body.error());
  auto req = wire::parse_finish_request(*body, limits_of(rc.ctx()->config));
  if (!req) return rc.fail(req.error());
  answer(rc, 200,
         ask<run_record>(rc, rc.ctx()->runs, finish_atom::value, rc.who, rc.param("id"),
                         *req));
}

// -- handlers: artifacts ------------------------------------------------------------

/// The disk space held for uploads in progress (twice each one's size), so
/// that two of them do not both count the same free space.
std::atomic<uint64_t> upload_reservations{0};

/// Holds twice an upload's announced size against `upload_reservations`
/// while it lasts.
class upload_space {
public:
  explicit upload_space(uint64_t bytes)
      : bytes_(bytes) {
    upload_reservations += bytes_;
  }
  upload_space(upload_space&& other) noexcept
      : bytes_(std::exchange(other.bytes_, 0)) {}
  upload_space(const upload_space&) = delete;
  upload_space& operator=(const upload_space&) = delete;
  upload_space& operator=(upload_space&&) = delete;
  ~upload_space() { upload_reservations -= bytes_; }

private:
  uint64_t bytes_;
};

/// The directory an upload is received into: the database's.
std::string upload_dir(const mesh_context& ctx) {
  auto path = std::filesystem::path{ctx.config.database_path()}.parent_path();
  return path.empty() ? std::string{"."} : path.string();
}

/// A `store_failure` saying how much is free when `dir` lacks room for an
/// upload of `length` bytes (announced) besides `others` held for the uploads
/// in progress: twice its size, the received file and then the database's
/// log. The log's own file is not counted: it keeps its size after its
/// pages were copied into the database (until the next write), so counting
/// it refused even a small upload after a large one, again and again if
/// nothing else wrote.
caf::error space_refusal(const std::string& length, uint64_t announced, uint64_t others,
                         const std::string& dir) {
  struct statvfs disk {};
  if (::statvfs(dir.c_str(), &disk) != 0) return {};
  auto free = static_cast<uint64_t>(disk.f_bavail) * disk.f_frsize;
  if (free >= 2 * announced + others) return {};
  auto err = make_error(
      errc::store_failure,
      "not enough free disk space in '" + dir + "' for an artifact of " + length +
          " bytes: it is received into a file there and then stored, which needs "
          "twice its size (" +
          std::to_string(2 * announced) + " bytes), plus " + std::to_string(others) +
          " bytes held for the other uploads in progress; " + std::to_string(free) +
          " bytes are free");
  log(log_level::warn, "artifact upload refused: " + message_of(err));
  return err;
}

/// Space for an upload of `length` bytes (a Content-Length, or "" for a
/// chunked one, which is not checked ahead) into `dir`, held while the
/// result lives; `space_refusal`'s error when it does not fit.
caf::expected<upload_space> reserve_upload_space(const std::string& length, int64_t limit,
                                                 const std::string& dir) {
  auto announced = length_of(length);
  if (!announced || *announced > static_cast<uint64_t>(limit)) return upload_space{0};
  upload_space held{2 * *announced};
  auto all = upload_reservations.load();
  auto others = all > 2 * *announced ? all - 2 * *announced : 0;
  if (auto err = space_refusal(length, *announced, others, dir)) return err;
  return held;
}

/// What refuses an upload of `name` to `run_id` by `who` before its body:
/// the name, another agent's run, a run with no room for one more artifact.
/// Otherwise whether the run holds an artifact of that name already (a
/// retry, which stores nothing new: no room is needed for it).
caf::expected<bool> upload_refusal(mesh_node& node, const caller& who,
                                   const std::string& run_id, const std::string& name) {
  if (auto err = wire::validate_artifact_name(name, "name")) return err;
  return ask<bool>(node.system(), node.context()->query, caf::duration{ask_timeout},
                   artifact_atom::value, check_atom::value, who, run_id, name);
}

void upload_artifact(request_context& rc) {
  artifact_record meta;
  meta.run_id = rc.param("id");
  meta.name = rc.param("name");
  // Such a request has no body (RFC 9112 6.3), and an artifact cannot be
  // replaced: `curl -X PUT` without data would take the name for good.
  if (!rc.req.has_header("Content-Length") && !rc.req.has_header("Transfer-Encoding"))
    return rc.fail(make_error(errc::invalid_argument,
                              "an artifact upload needs a Content-Length (0 for an "
                              "empty artifact) or a chunked body; this request has "
                              "neither, so it has no body",
                              "Content-Length"));
  // Refused before a byte of the body is read (and, for a client that sends
  // `Expect: 100-continue`, before it sends one).
  auto held = upload_refusal(rc.node, rc.who, meta.run_id, meta.name);
  if (!held) return rc.fail(held.error());
  // Received into a file next to the database, which the store reads back a
  // part at a time: meshd never holds the whole of an artifact. An upload
  // needs about twice its size free there, besides what the uploads in
  // progress need. A full disk would fail the commit, and writes after it.
  auto dir = upload_dir(*rc.ctx());
  auto space = reserve_upload_space(*held ? std::string{}
                                          : rc.req.get_header_value("Content-Length"),
                                    rc.ctx()->config.max_artifact_bytes, dir);
  if (!space) return rc.fail(space.error());
  auto bytes = artifact_bytes::spool_in(dir);
  if (!bytes) return rc.fail(bytes.error());
  caf::error unwritten;
  auto unread = rc.read_body([&](const char* data, size_t n) {
    unwritten = bytes->append(data, n);
    return !unwritten;
  });
  if (unwritten) {
    log(log_level::warn, "artifact upload refused: " + message_of(unwritten));
    return rc.fail(unwritten);
  }
  if (unread) return rc.fail(unread);
  meta.size = bytes->size();
  meta.sha256 = bytes->sha256_hex();
  auto out = ask<artifact_put>(rc, rc.ctx()->query, artifact_atom::value, rc.who, meta,
                               std::move(*bytes));
  if (!out) return rc.fail(out.error());
  rc.reply(out->created ? 201 : 200, wire::to_json(out->artifact));
}

void list_artifacts(request_context& rc) {
  auto list = ask<artifact_list>(rc, rc.ctx()->query, artifact_atom::value,
                                 list_atom::value, rc.param("id"));
  if (!list) return rc.fail(list.error());
  json out = json::array();
  for (auto& a : *list)
    out.push_back(wire::to_json(a));
  rc.reply(200, json{{"artifacts", out}});
}

/// Whether the request's `If-None-Match` matches `etag` (a strong tag,
/// quoted): `*`, or a list of tags, each compared weakly (RFC 9110 13.1.2:
/// `W/"x"` matches `"x"`). A malformed list matches nothing after the fault.
bool none_match(const httplib::Request& req, const std::string& etag) {
  auto tags = read_entity_tags(req, "If-None-Match");
  return std::any_of(tags.tags.begin(), tags.tags.end(), [&](const std::string& t) {
    return t == "*" || t == etag || (t.compare(0, 2, "W/") == 0 && t.substr(2) == etag);
  });
}

void get_artifact(request_context& rc) {
  if (auto err = wire::validate_artifact_name(rc.param("name"), "name"))
    return rc.fail(err);
  auto id = rc.param("id");
  auto name = rc.param("name");
  // A HEAD, or a GET that may be answered 304, reads no bytes up front.
  bool bytes_now = rc.req.method != "HEAD" && !rc.req.has_header("If-None-Match");
  auto blob =
      ask<artifact_blob>(rc, rc.ctx()->query, artifact_atom::value, get_atom::value, id,
                         name, int64_t{0}, bytes_now ? artifact_part_bytes : int64_t{0});
  if (!blob) return rc.fail(blob.error());
  auto& a = blob->artifact;
  auto etag = "\"" + a.sha256 + "\"";
  rc.res.set_header("ETag", etag);
  rc.res.set_header("X-Polymesh-Sha256", a.sha256);
  if (none_match(rc.req, etag)) {
    // cpp-httplib writes `Content-Length: 0`; the size a 200 would say
    // (RFC 9110 8.6) makes cpp-httplib 0.11's own client wait for a body.
    rc.res.status = 304;
    return;
  }
  auto base = a.name.substr(a.name.rfind('/') + 1);
  rc.res.set_header("Content-Disposition", "attachment; filename=\"" + base + "\"");
  rc.res.status = 200;
  if (a.size == 0 || (bytes_now && static_cast<int64_t>(blob->data.size()) >= a.size))
    return rc.res.set_content(std::move(blob->data), "application/octet-stream");
  // A larger one is read a part at a time while it is sent, so that a
  // download holds one part, not the whole artifact. A part that cannot be
  // read (the run pruned meanwhile, a failing disk) ends the connection
  // short of Content-Length, which clients report as a truncated body.
  auto part = std::make_shared<artifact_blob>(std::move(*blob));
  auto& sys = rc.node.system();
  auto query = rc.ctx()->query;
  auto write_timeout = format_duration(rc.ctx()->config.write_timeout);
  rc.res.set_content_provider(
      static_cast<size_t>(a.size), "application/octet-stream",
      [part, &sys, query, id, name, write_timeout,
       size = a.size](size_t offset, size_t length, httplib::DataSink& sink) {
        // All of it in this one call: cpp-httplib calls a provider no more
        // once meshd is stopping, and would end the answer short of its
        // length, where a download in progress should finish (within
        // http.stop_grace, after which its connection is cut).
        auto at = static_cast<int64_t>(offset);
        auto stop = at + static_cast<int64_t>(length);
        while (at < stop) {
          auto end = part->offset + static_cast<int64_t>(part->data.size());
          if (at < part->offset || at >= end) {
            auto next = ask<artifact_blob>(sys, query, caf::duration{ask_timeout},
                                           artifact_atom::value, get_atom::value, id,
                                           name, at, artifact_part_bytes);
            if (!next || next->data.empty()) {
              log(log_level::warn,
                  "artifact '" + name + "' of run '" + id +
                      "': sending stopped at byte " + std::to_string(at) + ": " +
                      (next ? "no bytes there" : message_of(next.error())));
              return false;
            }
            *part = std::move(*next);
            end = part->offset + static_cast<int64_t>(part->data.size());
          }
          auto n = std::min(end, stop) - at;
          if (!sink.write(part->data.data() + (at - part->offset),
                          static_cast<size_t>(n))) {
            log(log_level::info,
                "artifact '" + name + "' of run '" + id + "': sending stopped at byte " +
                    std::to_string(at) + " of " + std::to_string(size) +
                    ": the client closed the connection, or took nothing for "
                    "http.write_timeout (" +
                    write_timeout + ")");
            return false;
          }
          at += n;
        }
        return true;
      });
}

// -- handlers: health ---------------------------------------------------------------

void healthz(request_context& rc) {
  rc.reply(200, json{{"status", "ok"}});
}

/// Runs in the store and agents known, each by status (every status
/// present), for `/readyz` and `/metrics`.
struct status_tally {
  status_counts runs;
  std::map<agent_status, int64_t> agents;
};

caf::expected<status_tally> tally(request_context& rc) {
  auto counts = ask<status_counts>(rc, rc.ctx()->query, count_atom::value);
  if (!counts) return counts.error();
  auto agents = ask<agent_list>(rc, rc.ctx()->agents, list_atom::value);
  if (!agents) return agents.error();
  status_tally out{std::move(*counts), {}};
  for (auto s : {agent_status::online, agent_status::draining, agent_status::offline,
                 agent_status::deregistered})
    out.agents[s] = 0;
  for (auto& a : *agents)
    ++out.agents[a.status];
  return out;
}

void readyz(request_context& rc) {
  if (rc.ctx()->stopping)
    return rc.fail(make_error(errc::unavailable, "meshd is shutting down"));
  // Reads still work on a full disk: a failing commit is what says the
  // store is broken. The next successful commit makes meshd ready again.
  if (auto why = rc.ctx()->store_status.error(); !why.empty())
    return rc.fail(
        make_error(errc::unavailable, "the store's last commit failed: " + why));
  auto counts = tally(rc);
  if (!counts) return rc.fail(counts.error());
  json runs = json::object();
  for (auto& [s, n] : counts->runs)
    runs[to_string(s)] = n;
  json by_status = json::object();
  for (auto& [s, n] : counts->agents)
    by_status[to_string(s)] = n;
  json http{{"long_polls", rc.open_polls.load()},
            {"long_polls_max", rc.max_polls},
            {"run_waits", rc.open_waits.load()},
            {"run_waits_max", rc.ctx()->config.run_waits},
            {"threads", rc.ctx()->config.http_threads}};
  rc.reply(
      200,
      json{{"status", "ready"}, {"runs", runs}, {"agents", by_status}, {"http", http}});
}

/// `GET /metrics`: Prometheus text format 0.0.4. Counters come from the
/// actors (runs, store) and the router (requests); gauges are read now, the
/// run counts from the store like `/readyz`'s.
void metrics(request_context& rc) {
  auto counts = tally(rc);
  if (!counts) return rc.fail(counts.error());
  std::string out;
  describe_metric(out, "polymesh_build_info", "gauge", "meshd's version, as a label");
  out +=
      "polymesh_build_info{version=\"" + escape_label_value(POLYMESH_VERSION) + "\"} 1\n";
  describe_metric(out, "polymesh_runs", "gauge",
                  "Runs in the store by status (finished ones until retention "
                  "prunes them)");
  for (auto& [s, n] : counts->runs)
    out += "polymesh_runs{status=\"" + std::string{to_string(s)} + "\"} " +
           std::to_string(n) + "\n";
  describe_metric(out, "polymesh_agents", "gauge", "Agents by status");
  for (auto& [s, n] : counts->agents)
    out += "polymesh_agents{status=\"" + std::string{to_string(s)} + "\"} " +
           std::to_string(n) + "\n";
  auto gauge = [&](const char* name, const char* help, int64_t value) {
    describe_metric(out, name, "gauge", help);
    out += std::string{name} + " " + std::to_string(value) + "\n";
  };
  gauge("polymesh_http_long_polls", "Agent long-polls waiting now", rc.open_polls.load());
  gauge("polymesh_http_long_polls_max",
        "Long-polls the worker pool takes before answering 503", rc.max_polls);
  gauge("polymesh_http_run_waits", "Clients waiting on a run now (`?wait=S`)",
        rc.open_waits.load());
  gauge("polymesh_http_run_waits_max",
        "Clients that may wait on a run at once; more are answered at once "
        "(http.run_waits)",
        rc.ctx()->config.run_waits);
  gauge("polymesh_http_threads", "The HTTP worker pool's size (http.threads)",
        rc.ctx()->config.http_threads);
  gauge("polymesh_store_healthy", "1 when the store's last commit succeeded, else 0",
        rc.ctx()->store_status.error().empty() ? 1 : 0);
  rc.ctx()->metrics.render(out);
  rc.http_stats.render(out);
  render_process_metrics(out);
  rc.res.status = 200;
  rc.res.set_content(std::move(out), "text/plain; version=0.0.4; charset=utf-8");
}

// -- plumbing -----------------------------------------------------------------------

std::string kinds_text(unsigned allowed) {
  std::string out;
  for (auto [bit, name] : {std::pair{admin_access, "admin"},
                           {submitter_access, "submitter"},
                           {reader_access, "reader"},
                           {registration_access, "registration"},
                           {agent_access, "agent"}}) {
    if (allowed & bit) {
      if (!out.empty()) out += ", ";
      out += name;
    }
  }
  return out;
}

unsigned bit_of(token_kind k);

/// Why a token of `kind` may not call an endpoint open to `allowed`; none
/// when it may.
caf::error kind_refused(token_kind kind, unsigned allowed) {
  if ((allowed & bit_of(kind)) != 0) return {};
  return make_error(
      errc::forbidden,
      std::string{kind == token_kind::admin || kind == token_kind::agent ? "an " : "a "} +
          to_string(kind) +
          " token may not call this endpoint; it needs one of: " + kinds_text(allowed));
}

unsigned bit_of(token_kind k) {
  switch (k) {
  case token_kind::admin: return admin_access;
  case token_kind::submitter: return submitter_access;
  case token_kind::reader: return reader_access;
  case token_kind::registration: return registration_access;
  case token_kind::agent: return agent_access;
  }
  return 0;
}

} // namespace

const std::vector<endpoint>& endpoints() {
  constexpr unsigned users = admin_access | submitter_access | reader_access;
  constexpr unsigned submitters = admin_access | submitter_access;
  static const std::vector<endpoint> table{
      {"GET", "/healthz", public_access, "Liveness of the process; no token needed",
       healthz},
      {"GET", "/readyz", any_token, "Readiness with run and agent counts", readyz},
      {"GET", "/metrics", users, "Prometheus metrics (text format 0.0.4)", metrics},
      {"POST", "/v1/tokens", admin_access, "Create a token (the secret is shown once)",
       create_token, body_kind::json},
      {"GET", "/v1/tokens", admin_access, "List tokens (never their secrets)",
       list_tokens},
      {"DELETE", "/v1/tokens/{id}", admin_access, "Revoke a token", revoke_token},
      {"POST", "/v1/agents/register", admin_access | registration_access,
       "Register an agent; returns its access token", register_agent, body_kind::json},
      {"POST", "/v1/agents/{id}/token", agent_access, "Refresh the agent's access token",
       refresh_agent_token},
      {"GET", "/v1/agents/{id}/runs", agent_access,
       "Long-poll for assigned runs and cancel requests (`?wait=S`)", poll_runs,
       body_kind::none, "wait"},
      {"POST", "/v1/agents/{id}/report", agent_access,
       "Report started and finished runs in one request, then long-poll (`?wait=S`)",
       report_runs, body_kind::json, "wait"},
      {"DELETE", "/v1/agents/{id}", agent_access | admin_access,
       "Deregister (agent) or remove (admin) an agent", deregister_agent},
      {"GET", "/v1/agents", users, "List agents (`?selector=&status=&plan=`)",
       list_agents, body_kind::none, "selector status plan"},
      {"GET", "/v1/agents/{id}", users, "Show one agent by id or name", get_agent},
      {"PATCH", "/v1/agents/{id}", admin_access, "Replace an agent's labels", patch_agent,
       body_kind::json},
      {"POST", "/v1/agents/{id}/drain", admin_access | agent_access,
       "Stop giving an agent new runs (an agent token: its own agent only)", drain_agent},
      {"POST", "/v1/agents/{id}/undrain", admin_access,
       "Give a drained agent new runs again", undrain_agent},
      {"POST", "/v1/runs", submitters,
       "Submit a run; with `?wait=S`, answer once it ended or S seconds passed",
       submit_run, body_kind::json, "wait"},
      {"POST", "/v1/runs/batch", submitters,
       "Submit up to 1000 runs in one durable transaction", submit_batch,
       body_kind::json},
      {"GET", "/v1/runs", users,
       "List runs, newest first "
       "(`?status=&plan=&agent=&concurrency_key=&limit=&cursor=`)",
       list_runs, body_kind::none, "status plan agent concurrency_key limit cursor"},
      {"GET", "/v1/runs/{id}", users,
       "Show one run; `?wait=S&while_status=` waits for it to change", get_run,
       body_kind::none, "wait while_status"},
      {"POST", "/v1/runs/{id}/cancel", submitters, "Cancel a run", cancel_run},
      {"GET", "/v1/runs/{id}/logs", users,
       "Read a run's log chunks (`?after=SEQ&limit=N`)", run_logs, body_kind::none,
       "after limit"},
      {"GET", "/v1/runs/{id}/explain", users,
       "Why a waiting run is not assigned, per agent", explain_run},
      {"POST", "/v1/runs/{id}/start", agent_access, "The assigned agent started the run",
       start_run},
      {"POST", "/v1/runs/{id}/progress", agent_access,
       "Progress report; answers whether a cancel was requested", progress_run,
       body_kind::json},
      {"POST", "/v1/runs/{id}/logs", agent_access, "Append ordered log chunks",
       append_logs, body_kind::json},
      {"POST", "/v1/runs/{id}/finish", agent_access, "Report the run's outcome",
       finish_run, body_kind::json},
      {"PUT", upload_path, agent_access,
       "Upload an artifact (raw body; an identical repeat is 200)", upload_artifact,
       body_kind::raw},
      {"GET", "/v1/runs/{id}/artifacts", users, "List a run's artifacts", list_artifacts},
      {"GET", "/v1/runs/{id}/artifacts/{name*}", users,
       "Download an artifact (raw bytes, sha256 as ETag)", get_artifact},
  };
  return table;
}

std::string endpoints_markdown() {
  std::string out = "| method | path | token kinds | summary |\n|---|---|---|---|\n";
  for (auto& ep : endpoints()) {
    std::string path = ep.path;
    path.erase(std::remove(path.begin(), path.end(), '*'), path.end());
    out += std::string{"| "} + ep.method + " | `" + path + "` | " +
           (ep.allowed == public_access ? std::string{"none"} : kinds_text(ep.allowed)) +
           " | " + ep.summary + " |\n";
  }
  return out;
}

caf::expected<std::pair<std::string, int>> split_host_port(const std::string& s) {
  auto colon = s.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == s.size())
    return make_error(errc::invalid_argument, "expected HOST:PORT, got '" + s + "'",
                      "listen");
  auto host = s.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  auto port_text = s.substr(colon + 1);
  char* end = nullptr;
  auto port = std::strtol(port_text.c_str(), &end, 10);
  if (*end != '\0' || port < 0 || port > 65535)
    return make_error(errc::invalid_argument,
                      "port must be 0 to 65535, got '" + port_text + "'", "listen");
  return std::pair{host, static_cast<int>(port)};
}

namespace {

/// cpp-httplib hard-codes a listen backlog of 5; bursts of agents connecting
/// at once would wait for SYN retransmits. Raise it after binding.
class mesh_http_server : public httplib::Server {
public:
  mesh_http_server()
      : stop_fd_(::eventfd(0, EFD_CLOEXEC))
      , open_files_(current_open_files_limit().soft)
      , refuse_from_(refuse_connections_from(open_files_)) {}
  ~mesh_http_server() override {
    if (stop_fd_ >= 0) ::close(stop_fd_);
  }
  mesh_http_server(const mesh_http_server&) = delete;
  mesh_http_server& operator=(const mesh_http_server&) = delete;

  /// Counts a request refused before cpp-httplib parsed it, by status.
  std::function<void(int)> on_refused = [](int) {};

  /// Wakes the connections waiting for their next request once `stop` made
  /// the listener invalid, so that they close at once (an eventfd stays
  /// readable: before `stop`, they would wake again at once, and again).
  void wake_idle() {
    if (stop_fd_ < 0) return;
    uint64_t one = 1;
    [[maybe_unused]] auto n = ::write(stop_fd_, &one, sizeof one);
  }

  int bind_with_backlog(const std::string& host, int port) {
    auto bound =
        port == 0 ? bind_to_any_port(host) : (bind_to_port(host, port) ? port : -1);
    if (bound >= 0) ::listen(svr_sock_, 1024);
    return bound;
  }

  /// Serves on `fd`, a listening socket bound by someone else (systemd),
  /// which must go on listening after meshd stops: `let_go_of_listener`
  /// ends the accept loop instead of cpp-httplib's `stop`, whose
  /// `shutdown` would stop the socket for systemd and the next meshd too.
  /// The loop then looks at the socket every 100 ms.
  void adopt_listener(int fd) {
    svr_sock_ = fd;
    adopted_ = fd;
    set_idle_interval(0, 100'000);
  }
  [[nodiscard]] bool adopted() const { return adopted_ >= 0; }

  /// Ends the accept loop on an adopted socket within 100 ms, leaving the
  /// socket listening (connections not yet accepted wait for the next
  /// meshd); `close_adopted` closes meshd's copy once the loop is over.
  void let_go_of_listener() { svr_sock_ = INVALID_SOCKET; }
  void close_adopted() {
    if (adopted_ >= 0) ::close(adopted_);
    adopted_ = -1;
  }

  /// Makes the accept loop end as soon as it starts: cpp-httplib's `stop`
  /// does nothing before `listen_after_bind` has begun, and a SIGTERM in
  /// meshd's start-up was lost so. (Once running, `stop` has taken the
  /// socket already.)
  void shut_listener() {
    if (adopted()) return let_go_of_listener();
    socket_t sock = svr_sock_;
    if (sock != INVALID_SOCKET) ::shutdown(sock, SHUT_RDWR);
  }

private:
  /// Each connection in meshd's own loop (`connection.hpp`): a head is
  /// checked before cpp-httplib parses it.
  bool process_and_close_socket(socket_t sock) override {
    connection_limits limits;
    limits.keep_alive_timeout_s = keep_alive_timeout_sec_;
    limits.keep_alive_max_requests = keep_alive_max_count_;
    limits.read_timeout_s = read_timeout_sec_;
    limits.write_timeout_s = write_timeout_sec_;
    if (sock >= refuse_from_) {
      refuse_for_files(sock, limits);
      return false;
    }
    if (refusing_.load(std::memory_order_relaxed)) note_served_again();
    return serve_connection(
        sock, svr_sock_, stop_fd_, limits,
        [this](httplib::Stream& strm, bool close_connection, bool& connection_closed) {
          return process_request(strm, close_connection, connection_closed, nullptr);
        },
        on_refused);
  }

  /// Answers a connection on descriptor `sock`, at the limit on open
  /// files, 503 instead of serving it (`open_files.hpp`), once the log said
  /// so.
  void refuse_for_files(socket_t sock, const connection_limits& limits) {
    auto held = std::to_string(sock + 1);
    auto limit = std::to_string(open_files_);
    note_refused(held, limit);
    refuse_connection(sock, stop_fd_, limits,
                      head_refusal{errc::unavailable,
                                   "meshd is out of open files for connections (" + held +
                                       " in use of its limit of " + limit + ", " +
                                       std::to_string(open_files_reserve) +
                                       " kept for its store): try again shortly; its "
                                       "operator raises the limit (docs/operations.md, "
                                       "Sizing)",
                                   ""},
                      on_refused);
  }

  /// Logs a connection refused for files: at most a line a minute, the
  /// first refusal in full, later ones counted.
  void note_refused(const std::string& held, const std::string& limit) {
    std::lock_guard lock{refusals_mtx_};
    refusing_.store(true, std::memory_order_relaxed);
    auto now = std::chrono::steady_clock::now();
    ++refused_;
    ++unlogged_;
    if (refusal_logged_at_ && now - *refusal_logged_at_ < std::chrono::minutes{1}) return;
    if (!refusal_logged_at_)
      log(log_level::warn,
          "http: a connection was refused (503): meshd holds at least " + held +
              " open files and keeps the last " + std::to_string(open_files_reserve) +
              " of its limit of " + limit +
              " for its store and uploads; raise LimitNOFILE= or ulimit -n "
              "(docs/operations.md, Sizing)");
    else
      log(log_level::warn, "http: " + std::to_string(unlogged_) +
                               " more connections refused at the limit on open files (" +
                               limit + ", " + held + " in use)");
    unlogged_ = 0;
    refusal_logged_at_ = now;
    episode_logged_ = true;
  }

  /// A connection served after some were refused for files: the log says
  /// so when it said they were (so a limit crossed back and forth writes
  /// at most two lines a minute).
  void note_served_again() {
    std::lock_guard lock{refusals_mtx_};
    if (!refusing_.exchange(false, std::memory_order_relaxed)) return;
    if (episode_logged_)
      log(log_level::info, "http: connections are served again, after " +
                               std::to_string(refused_) +
                               " refused at the limit on open files");
    refused_ = 0;
    episode_logged_ = false;
  }

  int stop_fd_;
  /// The socket passed in (`adopt_listener`), until meshd closed its copy;
  /// -1 for one meshd bound.
  int adopted_ = -1;
  /// The limit on open files when serving began; 0 when unknown.
  uint64_t open_files_;
  /// Descriptors from this number on are refused.
  int refuse_from_;
  std::atomic<bool> refusing_{false};
  std::mutex refusals_mtx_;
  /// Connections refused since the last one served; refused ones the log
  /// has not counted yet; when it last said so; whether it did since the
  /// last one served.
  size_t refused_ = 0;
  size_t unlogged_ = 0;
  std::optional<std::chrono::steady_clock::time_point> refusal_logged_at_;
  bool episode_logged_ = false;
};

} // namespace

namespace {

/// The regex cpp-httplib routes `path` by: each `{name}` a capture group
/// (`{name*}` also matching `/`), whose names go to `names` if given.
std::string route_pattern(const char* path, std::vector<std::string>* names) {
  std::string pattern;
  for (const char* p = path; *p; ++p) {
    if (*p == '{') {
      const char* close = std::strchr(p, '}');
      std::string name{p + 1, close};
      bool rest = !name.empty() && name.back() == '*';
      if (rest) name.pop_back();
      if (names) names->push_back(name);
      pattern += rest ? "(.+)" : "([^/]+)";
      p = close;
    } else {
      pattern += *p;
    }
  }
  return pattern;
}

caf::error multipart_refused() {
  return make_error(errc::invalid_argument,
                    "multipart bodies are not accepted: send JSON (Content-Type: "
                    "application/json), or an artifact's raw bytes",
                    "body");
}

/// A 405 for `req`, whose path takes only the methods in `allowed`.
caf::error method_not_allowed(const httplib::Request& req, httplib::Response& res,
                              const std::string& allowed) {
  res.status = 405;
  res.set_header("Allow", allowed);
  return make_error(errc::method_not_allowed, req.method + " is not allowed on " +
                                                  req.path + "; allowed: " + allowed);
}

/// Puts `err` as the JSON error body of a response answered outside the
/// endpoints' handlers (its status is set apart).
void set_error_content(httplib::Response& res, const caf::error& err) {
  res.set_content(wire::dump(wire::error_body(err)), "application/json");
}

/// Sends `err` as the JSON error body and then closes the connection, so
/// that bytes the client sent after the request are never read as one of
/// their own. A `Connection: close` header set here alone does not make
/// cpp-httplib 0.11 close it (it decides before the handler runs); a body
/// from a content provider that reports failure once it has written it
/// does, and the client still gets the whole answer.
void send_and_close(httplib::Response& res, std::string text) {
  auto body = std::make_shared<std::string>(std::move(text));
  auto type = res.get_header_value("Content-Type");
  // Headers add up in cpp-httplib: the provider's would be a second one.
  res.headers.erase("Content-Type");
  res.body.clear();
  res.set_header("Connection", "close");
  res.set_content_provider(body->size(), type.empty() ? "application/json" : type.c_str(),
                           [body](size_t offset, size_t length, httplib::DataSink& sink) {
                             // Ranges are cleared before any refusal; never
                             // past the body whatever is asked.
                             if (offset < body->size())
                               sink.write(body->data() + offset,
                                          std::min(length, body->size() - offset));
                             return false;
                           });
}

void set_error_content_and_close(httplib::Response& res, const caf::error& err) {
  send_and_close(res, wire::dump(wire::error_body(err)));
}

/// Whether `req`'s body is multipart, of any kind and in any spelling
/// (refused: api.md, Conventions).
bool multipart(const httplib::Request& req) {
  return starts_with_nocase(req.get_header_value("Content-Type"), "multipart/");
}

/// Whether `req` came with a chunked body. cpp-httplib 0.11's decoder is
/// lenient (a chunk size `0x22` or ` 22 `, anything after a chunk's data
/// where CRLF belongs ends the body early), so where such a body ends is
/// not certain: a proxy could read it otherwise, and the bytes after it
/// were read as a request of their own. Its answer closes the connection.
bool chunked(const httplib::Request& req) {
  return req.has_header("Transfer-Encoding");
}

/// A request's body, read by meshd's handler once the request passed the
/// checks that need no body (token, method, query), never more than `limit`
/// bytes of it. cpp-httplib would read a body whole, up to the largest limit
/// of any endpoint, before any handler ran: anybody who could reach meshd
/// could have it hold an artifact's size per connection without a token.
/// A body never read (the request was refused first) is drained without
/// being kept; one that cannot be drained, or cannot be read whole, closes
/// the connection after the answer, since where it ends is not known.
class request_body {
public:
  using sink = std::function<bool(const char*, size_t)>;

  /// `drop_limit`: the most of a chunked body dropped, not kept, before the
  /// connection is closed instead (the largest limit of any endpoint, what
  /// cpp-httplib read before).
  request_body(const httplib::Request& req, httplib::Response& res,
               const httplib::ContentReader* reader, int64_t limit, int64_t drop_limit)
      : req_(req)
      , res_(res)
      , reader_(reader)
      , limit_(limit)
      , drop_limit_(std::max(limit, drop_limit)) {}
  request_body(const request_body&) = delete;
  request_body& operator=(const request_body&) = delete;

  ~request_body() {
    if (reader_ && !done_ && !pass(nullptr)) close_ = true;
    if (close_ && !res_.content_provider_) send_and_close(res_, std::move(res_.body));
  }

  /// Closes the connection after the answer whatever happens to the body.
  void close_after() { close_ = true; }

  /// Hands the body to `out` as it arrives; `too_large` (over `limit`, said
  /// by `key`) or `unreadable` (the client stopped sending, or sent a chunk
  /// that does not parse) when it cannot be had whole. When `out` refuses
  /// bytes, the rest is dropped (an error of the caller's own is the answer).
  [[nodiscard]] caf::error read(const sink& out, const char* key) {
    if (!reader_ || done_) return {};
    bool over = length_over(req_.get_header_value("Content-Length"), limit_);
    auto ok = pass(over ? nullptr : &out);
    if (!ok) close_ = true;
    if (over || exceeded_) return too_large(limit_, key);
    if (refused_) return make_error(errc::internal, "the body was refused as it arrived");
    if (!ok)
      return make_error(errc::invalid_argument,
                        req_.has_header("Transfer-Encoding")
                            ? "the chunked body does not parse (a chunk size that is not "
                              "hexadecimal, or a body cut short)"
                            : "the body ended before its Content-Length bytes (the "
                              "client stopped sending)",
                        "body");
    return {};
  }

private:
  /// Reads what is left of the body into `out`, or drops it if null (and
  /// what follows once `limit` is passed, or `out` refuses); false when the
  /// connection cannot go on to another request. A body with a
  /// Content-Length is dropped whole, however long (cpp-httplib skips one
  /// over its own limit); a chunked one up to `drop_limit`. Bytes are
  /// dropped rather than the connection closed at once, because a client
  /// that sends its whole body before it reads would lose the answer to the
  /// reset that closing a socket with unread bytes sends.
  bool pass(const sink* out) {
    done_ = true;
    // RFC 9112, 6.3: neither header means no body (cpp-httplib would read
    // until the client closes the connection). The pre-routing handler
    // refused every other framing.
    bool chunked = req_.has_header("Transfer-Encoding");
    if (!chunked && !req_.has_header("Content-Length")) return true;
    // A multipart body is refused, whatever its kind or spelling, and its
    // connection closed after the answer. `multipart/form-data` would go to
    // cpp-httplib's own parser, which this reader does not take: left
    // unread. Any other is dropped first, so that its sender gets the answer
    // (see above).
    bool refused = multipart(req_);
    if (refused && req_.is_multipart_form_data()) return false;
    if (refused) out = nullptr;
    int64_t seen = 0;
    // cpp-httplib sets a status of its own when it cannot read the body; the
    // answer's is meshd's.
    auto status = res_.status;
    bool keep = out != nullptr;
    bool ok = (*reader_)([&](const char* data, size_t n) {
      seen += static_cast<int64_t>(n);
      if (keep && seen > limit_) {
        exceeded_ = true;
        keep = false;
      }
      if (keep && !(*out)(data, n)) {
        refused_ = true;
        keep = false;
      }
      return !chunked || seen <= drop_limit_;
    });
    res_.status = status;
    return ok && !refused;
  }

  const httplib::Request& req_;
  httplib::Response& res_;
  const httplib::ContentReader* reader_;
  int64_t limit_;
  int64_t drop_limit_;
  bool done_ = false;
  bool exceeded_ = false;
  bool refused_ = false;
  bool close_ = false;
};

/// Who a request with `tok` comes from, as the actors take it.
caller caller_of(const token_record& tok) {
  caller who;
  who.token_id = tok.id;
  who.kind = tok.kind;
  who.scope = tok.scope;
  who.agent_id = tok.agent_id;
  who.agent_session = tok.agent_session;
  return who;
}

/// The methods `ep` takes, as an `Allow` lists them: a `GET` takes `HEAD`
/// too, except the agents' poll (a `HEAD` would hand runs to nobody).
std::string methods_of(const endpoint& ep) {
  if (std::strcmp(ep.method, "GET") != 0 ||
      std::strcmp(ep.path, "/v1/agents/{id}/runs") == 0)
    return ep.method;
  return "GET, HEAD";
}

/// The paths meshd serves, for 405 answers: the methods of each path without
/// placeholders (`GET /v1/runs/batch` is a wrong method on the batch
/// endpoint, not a run with id "batch"), then each pattern with its method.
struct route_table {
  std::map<std::string, std::string> literal;
  std::vector<std::pair<std::regex, const endpoint*>> patterns;

  /// The methods `path` takes, comma-separated; "" for no such path.
  std::string allowed(const std::string& path) const {
    if (auto it = literal.find(path); it != literal.end()) return it->second;
    std::string out;
    for (auto& [pattern, ep] : patterns)
      if (std::regex_match(path, pattern) && out.find(ep->method) == std::string::npos)
        out += (out.empty() ? "" : ", ") + methods_of(*ep);
    return out;
  }

  /// The endpoint taking `method` on `path`, or null; its placeholders'
  /// values in `match` when given.
  const endpoint* find(const std::string& method, const std::string& path,
                       std::smatch* match = nullptr) const {
    std::smatch unused;
    for (auto& [pattern, ep] : patterns)
      if (method == ep->method &&
          std::regex_match(path, match ? *match : unused, pattern))
        return ep;
    return nullptr;
  }
};

/// The JSON error for a request cpp-httplib refused before any handler ran
/// (`res.status` says how); may change the status (405, 404).
caf::error http_layer_error(const httplib::Request& req, httplib::Response& res,
                            int64_t max_body, int64_t max_artifact,
                            const route_table& routes) {
  // A method the path does not take (cpp-httplib answers 404, or 400 for one
  // it does not know at all).
  auto wrong_method = [&]() -> caf::error {
    auto allowed = routes.allowed(req.path);
    if (allowed.empty()) {
      res.status = 404;
      return make_error(errc::not_found, "no such endpoint; see docs/api.md");
    }
    return method_not_allowed(req, res, allowed);
  };
  switch (res.status) {
  case 413:
    return req.method == "PUT" ? too_large(max_artifact, "runs.max_artifact_bytes")
                               : too_large(max_body, "http.max_body_bytes");
  case 404: return wrong_method();
  case 414:
    return make_error(errc::uri_too_long,
                      "the request line is longer than 8192 bytes; shorten the URL (a "
                      "selector in a query string takes up to three times its length "
                      "once percent-encoded)");
  case 416:
    res.status = 400;
    return make_error(errc::invalid_argument,
                      "the Range header does not parse (meshd ignores Range and sends "
                      "whole bodies; leave it out)",
                      "Range");
  default: break;
  }
  if (multipart(req)) return multipart_refused();
  if (req.method.empty() || (req.version != "HTTP/1.1" && req.version != "HTTP/1.0")) {
    res.status = 400;
    return make_error(errc::invalid_argument,
                      "the request line or a header does not parse, or a header line "
                      "is longer than 8192 bytes (meshd speaks HTTP/1.0 and HTTP/1.1)");
  }
  static const std::set<std::string> methods{"GET",    "HEAD",  "POST",   "PUT",
                                             "DELETE", "PATCH", "OPTIONS"};
  if (!methods.count(req.method)) {
    // cpp-httplib stops reading the request line at a method it does not
    // know, so the path (and what it allows) is unknown here.
    if (req.path.empty()) {
      res.status = 400;
      return make_error(errc::invalid_argument,
                        "method '" + req.method +
                            "' is not one meshd serves (GET, HEAD, POST, PUT, DELETE, "
                            "PATCH, OPTIONS)");
    }
    return wrong_method();
  }
  // cpp-httplib says no more than its status here.
  if (iequals(req.get_header_value("Transfer-Encoding"), "chunked"))
    return make_error(errc::invalid_argument,
                      "the chunked body does not parse (a chunk size that is not "
                      "hexadecimal, a body cut short, or trailer fields after the "
                      "last chunk, which meshd does not take)",
                      "body");
  return make_error(errc::invalid_argument,
                    "the request does not parse (HTTP status " +
                        std::to_string(res.status) +
                        "): a header line over 8192 bytes, a malformed header, or a "
                        "body cut short");
}

} // namespace

namespace {

/// Each endpoint's method and path, in their order, for `http_metrics`.
std::vector<std::pair<std::string, std::string>> routes_of_endpoints() {
  std::vector<std::pair<std::string, std::string>> out;
  for (auto& ep : endpoints())
    out.emplace_back(ep.method, ep.path);
  return out;
}

/// Counts an endpoint's answer (its status once the handler returned, and
/// how long that took) however the handler returns.
class count_answer {
public:
  count_answer(http_metrics& metrics, size_t route, const httplib::Response& res)
      : metrics_(metrics)
      , route_(route)
      , res_(res) {}
  count_answer(const count_answer&) = delete;
  count_answer& operator=(const count_answer&) = delete;
  ~count_answer() {
    // A handler that threw is answered 500 by the exception handler, later.
    auto status = std::uncaught_exceptions() > exceptions_ ? 500 : res_.status;
    // A fixed path asked with another method (`GET /v1/runs/batch`) reaches
    // the `{id}` endpoint, which answers 405: no endpoint took it.
    if (status == 405)
      metrics_.refused(status);
    else
      metrics_.answered(route_, status, std::chrono::steady_clock::now() - began_);
  }

private:
  http_metrics& metrics_;
  size_t route_;
  const httplib::Response& res_;
  int exceptions_ = std::uncaught_exceptions();
  std::chrono::steady_clock::time_point began_ = std::chrono::steady_clock::now();
};

} // namespace

http_server::http_server(mesh_node& node)
    : node_(node)
    , svr_(new mesh_http_server)
    , metrics_(routes_of_endpoints()) {
  static_cast<mesh_http_server&>(*svr_).on_refused = [this](int status) {
    metrics_.refused(status);
  };
  auto& cfg = node_.context()->config;
  // Clients waiting on runs have threads of their own (`take_wait_slot`).
  auto threads = static_cast<size_t>(cfg.http_threads + cfg.run_waits);
  // Keep an eighth of the pool, 4 to 64 threads, for everything but polls:
  // a pool sized for 10,000 agents needs no 1,250 spare threads.
  max_polls_ = std::max<int64_t>(1, cfg.http_threads -
                                        std::clamp<int64_t>(cfg.http_threads / 8, 4, 64));
  pool_threads_ = threads;
  // `serve` takes the pool `bind` started; the server deletes it when done.
  svr_->new_task_queue = [this] {
    return pool_ ? pool_.release() : new_pool().release();
  };
  svr_->set_tcp_nodelay(true);
  // cpp-httplib's default sets SO_REUSEPORT, with which a second meshd binds
  // the same port and the kernel splits connections between the two. Only
  // SO_REUSEADDR: a restart may bind while old connections are in TIME_WAIT.
  svr_->set_socket_options([](socket_t sock) {
    int yes = 1;
    ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
  });
  svr_->set_keep_alive_max_count(static_cast<size_t>(cfg.keep_alive_max_requests));
  svr_->set_keep_alive_timeout(std::max<time_t>(
      1,
      std::chrono::duration_cast<std::chrono::seconds>(cfg.keep_alive_timeout).count()));
  svr_->set_read_timeout(std::max<time_t>(
      1, std::chrono::duration_cast<std::chrono::seconds>(cfg.read_timeout).count()));
  // cpp-httplib's default is 5 s, and it writes again only once half the
  // socket's send buffer (autotuned up to 4 MiB) is free: a download read
  // at 200 KB/s, or paused by a rate limiter, was cut without a word.
  svr_->set_write_timeout(std::max<time_t>(
      1, std::chrono::duration_cast<std::chrono::seconds>(cfg.write_timeout).count()));
  // cpp-httplib's own limit, on a Content-Length only: a body over it is
  // skipped (read and dropped) when meshd asks for it. Each endpoint holds
  // its body to its own limit (`request_body`).
  svr_->set_payload_max_length(
      static_cast<size_t>(std::max(cfg.max_body_bytes, cfg.max_artifact_bytes)));
  auto max_body = cfg.max_body_bytes;
  auto max_artifact = cfg.max_artifact_bytes;
  auto routes = std::make_shared<route_table>();
  for (auto& ep : endpoints()) {
    routes->patterns.emplace_back(std::regex{route_pattern(ep.path, nullptr)}, &ep);
    if (std::strchr(ep.path, '{')) continue;
    auto& allowed = routes->literal[ep.path];
    allowed += (allowed.empty() ? "" : ", ") + methods_of(ep);
  }
  svr_->set_error_handler([this, max_body, max_artifact,
                           routes](const httplib::Request& req, httplib::Response& res) {
    // Answered already: in the body, or by a provider (`set_error_content_and_close`).
    if (!res.body.empty() || res.content_provider_) return;
    auto err = http_layer_error(req, res, max_body, max_artifact, *routes);
    // Only a request routed nowhere was read whole (its body too): after any
    // other refusal of the HTTP layer, where the request ends is not known.
    if (chunked(req) || (res.status != 404 && res.status != 405))
      set_error_content_and_close(res, err);
    else
      set_error_content(res, err);
    metrics_.refused(res.status);
  });
  // cpp-httplib answers a `Range` request with the ranges cut out of any
  // answer, JSON included, yet with status 200 and the whole body's ETag and
  // checksum: a resuming download would keep a truncated file. meshd
  // ignores `Range` (RFC 9110 allows it) and always sends whole bodies.
  svr_->set_pre_routing_handler(
      [this](const httplib::Request& req, httplib::Response& res) {
        // `req` is the server's own, non-const request object. Ranges go first:
        // a refusal below answers through a content provider too.
        auto& mutable_req = const_cast<httplib::Request&>(req);
        mutable_req.ranges.clear();
        // Framing a proxy in front could read otherwise than cpp-httplib (which
        // takes the first Content-Length, and chunked over any length) is
        // refused, and the connection closed, before the body is read: a
        // smuggled second request must not be served (RFC 9112, 6.3).
        if (auto refused = framing_refusal_of(req)) {
          // cpp-httplib writes no body for HEAD, and then does not notice the
          // provider's failure that closes the connection: answered as a GET.
          if (req.method == "HEAD") mutable_req.method = "GET";
          res.status = 400;
          set_error_content_and_close(
              res, make_error(errc::invalid_argument, refused->message, refused->field));
          metrics_.refused(res.status);
          return httplib::Server::HandlerResponse::Handled;
        }
        return httplib::Server::HandlerResponse::Unhandled;
      });
  svr_->set_exception_handler(
      [](const httplib::Request& req, httplib::Response& res, std::exception_ptr ep) {
        std::string what = "unknown exception";
        try {
          std::rethrow_exception(ep);
        } catch (const std::exception& e) {
          what = e.what();
        } catch (...) {
        }
        log(log_level::error, "http handler failed: " + what);
        res.status = 500;
        if (chunked(req))
          set_error_content_and_close(res, make_error(errc::internal, what));
        else
          set_error_content(res, make_error(errc::internal, what));
      });
  // cpp-httplib adds `Keep-Alive` to every answer it keeps the connection
  // of, which one that closes it (`Connection: close`) is not; and
  // `Accept-Ranges: bytes` to a HEAD answer, but meshd ignores `Range` (and
  // a HEAD answers the GET's header fields).
  svr_->set_post_routing_handler([](const httplib::Request& req, httplib::Response& res) {
    // cpp-httplib closes an HTTP/1.0 connection unless the request said
    // `Connection: Keep-Alive` (spelled so), yet says `Keep-Alive` to it.
    if (req.version == "HTTP/1.0" && req.get_header_value("Connection") != "Keep-Alive")
      res.set_header("Connection", "close");
    if (res.get_header_value("Connection") == "close") res.headers.erase("Keep-Alive");
    if (req.method == "HEAD") res.headers.erase("Accept-Ranges");
    // What a client needs to act on a refusal (RFC 9110, 11.6.1 and 10.2.3):
    // how to authenticate, and when to try again (shutting down, no room).
    if (res.status == 401 && !res.has_header("WWW-Authenticate"))
      res.set_header("WWW-Authenticate", "Bearer");
    if (res.status == 503 && !res.has_header("Retry-After"))
      res.set_header("Retry-After", "1");
  });

  for (auto& ep : endpoints()) {
    // `{name}` placeholders become capture groups, in order.
    auto names = std::make_shared<std::vector<std::string>>();
    auto pattern = route_pattern(ep.path, names.get());
    const endpoint* decl = &ep;
    auto route = static_cast<size_t>(decl - endpoints().data());
    // The body's limit: an artifact's for the raw body, a JSON body's for
    // every other.
    bool raw = decl->body == body_kind::raw;
    auto limit = raw ? max_artifact : max_body;
    auto limit_key = raw ? "runs.max_artifact_bytes" : "http.max_body_bytes";
    auto serve = [this, decl, route, names, routes, raw, limit, max_body, max_artifact,
                  limit_key](const httplib::Request& req, httplib::Response& res,
                             const httplib::ContentReader* reader) {
      count_answer counted{metrics_, route, res};
      struct close_if_chunked {
        const httplib::Request& req;
        httplib::Response& res;
        ~close_if_chunked() {
          if (chunked(req) && !res.content_provider_ && !res.body.empty())
            send_and_close(res, std::move(res.body));
        }
      } closing{req, res};
      // Destroyed first: drops a body left unread, and closes the
      // connection where it must, before `closing` looks at the answer.
      request_body body{req, res, reader, limit, std::max(max_body, max_artifact)};
      if (!names->empty()) {
        if (auto lit = routes->literal.find(req.path); lit != routes->literal.end()) {
          set_error_content(res, method_not_allowed(req, res, lit->second));
          return;
        }
      }
      // cpp-httplib serves a HEAD with the GET handler; an endpoint whose
      // methods leave HEAD out (the poll) refuses it.
      if (req.method == "HEAD") {
        auto methods = methods_of(*decl);
        if (methods.find("HEAD") == std::string::npos) {
          set_error_content(res, method_not_allowed(req, res, methods));
          return;
        }
      }
      // The query string alone: cpp-httplib puts a form-encoded body's fields
      // into `params` too when it reads the body itself (`curl -d` labels a
      // JSON body so).
      auto query = query_of(req.target);
      request_context rc{node_,      req,         res, *names,   query, open_polls_,
                         max_polls_, open_waits_, {},  metrics_, {}};
      if (decl->allowed != public_access) {
        auto tok =
            node_.context()->tokens->authenticate(req.get_header_value("Authorization"));
        if (!tok) return rc.fail(tok.error());
        if (auto err = kind_refused(tok->kind, decl->allowed)) return rc.fail(err);
        rc.who = caller_of(*tok);
        if (tok->kind == token_kind::agent)
          caf::anon_send(node_.context()->agents, touch_atom::value, tok->agent_id);
      }
      if (auto err = check_query(query, decl->query)) return rc.fail(err);
      // cpp-httplib takes a `multipart/form-data` body apart into
      // `req.files` and leaves `req.body` empty, which would pass for "no
      // body"; other kinds, and other spellings, it passes as they came.
      if (multipart(req)) return rc.fail(multipart_refused());
      if (reader && raw) {
        rc.read_body = [&body, limit_key](const request_body::sink& out) {
          return body.read(out, limit_key);
        };
      } else if (reader) {
        // The request is the server's own, non-const object.
        auto& text = const_cast<httplib::Request&>(req).body;
        if (auto err = body.read(
                [&text](const char* data, size_t n) {
                  text.append(data, n);
                  return true;
                },
                limit_key))
          return rc.fail(err);
      }
      if (decl->body == body_kind::none && !no_body(req.body))
        return rc.fail(
            make_error(errc::invalid_argument,
                       "this endpoint takes no request body (send none, or {})", "body"));
      decl->handler(rc);
    };
    // Every method but GET may carry a body: its handler reads it itself.
    auto with_body = [serve](const httplib::Request& req, httplib::Response& res,
                             const httplib::ContentReader& reader) {
      serve(req, res, &reader);
    };
    std::string method = ep.method;
    if (method == "GET")
      svr_->Get(pattern, [serve](const httplib::Request& req, httplib::Response& res) {
        serve(req, res, nullptr);
      });
    else if (method == "POST")
      svr_->Post(pattern, with_body);
    else if (method == "DELETE")
      svr_->Delete(pattern, with_body);
    else if (method == "PATCH")
      svr_->Patch(pattern, with_body);
    else if (method == "PUT")
      svr_->Put(pattern, with_body);
  }
  // A path and method no endpoint takes: a 404 or 405, the body dropped,
  // not held.
  auto no_route = [this, max_body, max_artifact,
                   routes](const httplib::Request& req, httplib::Response& res,
                           const httplib::ContentReader& reader) {
    res.status = 404;
    set_error_content(res, http_layer_error(req, res, max_body, max_artifact, *routes));
    metrics_.refused(res.status);
    request_body body{req, res, &reader, max_body, std::max(max_body, max_artifact)};
    if (chunked(req)) body.close_after();
  };
  svr_->Post(".*", no_route);
  svr_->Put(".*", no_route);
  svr_->Patch(".*", no_route);
  svr_->Delete(".*", no_route);

  // curl sends `Expect: 100-continue` before a body over 1 MiB and waits (a
  // second at most) for the 100 before sending it; cpp-httplib would answer
  // 100 before any handler ran. What needs no body is checked first: a
  // wrong token, path or method, or a body announced over its limit, is
  // answered before the client sends a byte of it, and the connection
  // closed (the client may send the body all the same). Anything else,
  // framing included, is left to the handlers.
  svr_->set_expect_100_continue_handler([this, routes, max_body,
                                         max_artifact](const httplib::Request& req,
                                                       httplib::Response& res) {
    if (req.method != "POST" && req.method != "PUT" && req.method != "PATCH" &&
        req.method != "DELETE")
      return 100;
    auto refuse = [&](const caf::error& err) {
      res.status = http_status(code_of(err));
      set_error_content_and_close(res, err);
      metrics_.refused(res.status);
      return res.status;
    };
    std::smatch params;
    const endpoint* decl = routes->find(req.method, req.path, &params);
    // A fixed path matched by a pattern (`PATCH /v1/agents/register`) is the
    // handlers' to answer (405).
    if (decl != nullptr && std::strchr(decl->path, '{') &&
        routes->literal.count(req.path))
      return 100;
    if (decl == nullptr) {
      res.status = 404; // http_layer_error's cue: no such path, or method
      return refuse(http_layer_error(req, res, max_body, max_artifact, *routes));
    }
    caller who;
    if (decl->allowed != public_access) {
      auto tok =
          node_.context()->tokens->authenticate(req.get_header_value("Authorization"));
      if (!tok) return refuse(tok.error());
      if (auto err = kind_refused(tok->kind, decl->allowed)) return refuse(err);
      who = caller_of(*tok);
    }
    bool raw = decl->body == body_kind::raw;
    auto length = req.get_header_value("Content-Length");
    bool one_length =
        req.get_header_value_count("Content-Length") == 1 && is_digits(length);
    if (one_length && length_over(length, raw ? max_artifact : max_body))
      return refuse(too_large(raw ? max_artifact : max_body,
                              raw ? "runs.max_artifact_bytes" : "http.max_body_bytes"));
    // An artifact upload (`PUT /v1/runs/{id}/artifacts/{name*}`): its name,
    // its run and the free space are checked before the body comes too.
    if (std::strcmp(decl->path, upload_path) == 0) {
      auto held = upload_refusal(node_, who, params[1].str(), params[2].str());
      if (!held) return refuse(held.error());
      auto announced = one_length && !*held ? length_of(length) : std::nullopt;
      if (announced)
        if (auto err = space_refusal(length, *announced, upload_reservations.load(),
                                     upload_dir(*node_.context())))
          return refuse(err);
    }
    return 100;
  });
}

http_server::~http_server() = default;

caf::expected<int> http_server::bind(const std::string& host, int port) {
  auto bound = static_cast<mesh_http_server&>(*svr_).bind_with_backlog(host, port);
  if (bound < 0)
    return make_error(errc::invalid_argument,
                      "cannot listen on " + host + ":" + std::to_string(port) +
                          " (address in use, not local, or a name that does not resolve)",
                      "listen");
  port_ = bound;
  if (auto err = start_pool()) return err;
  return bound;
}

caf::expected<std::pair<std::string, int>> http_server::adopt(int fd) {
  auto address = listening_address(fd);
  if (!address) return address.error();
  // Not for the programs a run's plan might start: meshd starts none, but
  // the socket stays meshd's alone.
  ::fcntl(fd, F_SETFD, FD_CLOEXEC);
  static_cast<mesh_http_server&>(*svr_).adopt_listener(fd);
  port_ = address->second;
  if (auto err = start_pool()) return err;
  return address;
}

caf::error http_server::start_pool() {
  try {
    pool_ = new_pool();
  } catch (const std::exception& e) { // std::system_error, or out of memory
    return make_error(errc::invalid_argument,
                      "cannot start " + std::to_string(pool_threads_) +
                          " HTTP threads (http.threads + http.run_waits): " + e.what() +
                          "; lower http.threads or raise the limit on this user's "
                          "processes and threads (ulimit -u, systemd TasksMax)",
                      "http.threads");
  }
  return {};
}

void http_server::cut_and_log(const std::string& when) {
  std::lock_guard<std::mutex> guard{cut_mtx_};
  auto n = cut_connections(port_, cut_fds_);
  if (n == 0) return;
  log(log_level::warn, "stopping: cut " + std::to_string(n) +
                           (n == 1 ? " connection" : " connections") + " still open " +
                           when +
                           "; an upload still being received on one is not stored, a "
                           "download ends before its Content-Length");
}

void http_server::hurry() {
  cut_and_log("at a further signal");
}

std::unique_ptr<httplib::TaskQueue> http_server::new_pool() {
  auto grace = node_.context()->config.stop_grace;
  // The pool lives inside `serve`, which this server outlives.
  auto cut = [this, grace] {
    cut_and_log("after http.stop_grace (" + format_duration(grace) + ")");
  };
  return std::make_unique<worker_pool>(
      pool_threads_, std::chrono::duration_cast<std::chrono::milliseconds>(grace), cut);
}

void http_server::serve() {
  svr_->listen_after_bind();
  static_cast<mesh_http_server&>(*svr_).close_adopted();
}

void http_server::stop() {
  auto& server = static_cast<mesh_http_server&>(*svr_);
  if (!server.adopted()) svr_->stop();
  server.shut_listener();
  server.wake_idle();
}

} // namespace polymesh
