#include "mesh/actors/token_cache.hpp"

#include "mesh/domain/error.hpp"
#include "mesh/domain/ids.hpp"

#include <algorithm>
#include <cctype>
#include <mutex>

namespace polymesh {

bool token_cache::split(const std::string& token, std::string& id, std::string& secret) {
  if (token.rfind("pm_", 0) != 0) return false;
  auto dot = token.find('.');
  if (dot == std::string::npos || dot <= 3 || dot + 1 >= token.size()) return false;
  id = token.substr(3, dot - 3);
  secret = token.substr(dot + 1);
  return true;
}

std::string token_cache::format(const std::string& id, const std::string& secret) {
  return "pm_" + id + "." + secret;
}

caf::expected<token_record> token_cache::authenticate(const std::string& header) const {
  static const std::string bearer = "Bearer ";
  if (header.empty())
    return make_error(errc::unauthenticated,
                      "missing Authorization header (Bearer token)");
  // The scheme is case-insensitive (RFC 9110): `bearer` and `BEARER` too.
  bool is_bearer =
      header.size() >= bearer.size() &&
      std::equal(bearer.begin(), bearer.end(), header.begin(), [](char a, char b) {
        return std::tolower(static_cast<unsigned char>(a)) ==
               std::tolower(static_cast<unsigned char>(b));
      });
  if (!is_bearer)
    return make_error(errc::unauthenticated,
                      "Authorization header must be 'Bearer <token>'");
  auto token = header.substr(bearer.size());
  // No token starts with a blank (the header's ends lose theirs, and so
  // POLYMESH_ADMIN_TOKEN may not have one): a second space after `Bearer`,
  // or a token pasted with one before it, would read as an unknown token.
  if (!token.empty() && (token.front() == ' ' || token.front() == '\t'))
    return make_error(errc::unauthenticated,
                      "more than one space between 'Bearer' and the token (a token read "
                      "from a file or a variable may carry one): send 'Bearer <token>'");
  std::string id;
  std::string secret;
  if (!split(token, id, secret) || id == bootstrap_admin_id) {
    // The bootstrap admin token may be any string (POLYMESH_ADMIN_TOKEN); its
    // hash covers the whole token.
    id = bootstrap_admin_id;
    secret = token;
  }
  return usable(id, &secret);
}

caf::error token_cache::refusal_of(const std::string& id) const {
  auto rec = usable(id, nullptr);
  return rec ? caf::error{} : std::move(rec.error());
}

caf::expected<token_record> token_cache::usable(const std::string& id,
                                                const std::string* secret) const {
  // The routines' last look, read before the token: a look recorded after
  // `honour_through` extended it (`mesh_ran` releases, this acquires) finds
  // the extended token below, and an older look still says stall.
  auto ran_at = ran_at_ms_.load(std::memory_order_acquire);
  auto ran_at_wall = ran_at_wall_ms_.load(std::memory_order_acquire);
  token_record rec;
  {
    std::shared_lock<std::shared_mutex> guard{mtx_};
    auto it = tokens_.find(id);
    if (it == tokens_.end())
      return make_error(errc::unauthenticated, "unknown or revoked token");
    rec = it->second;
  }
  if (secret && !constant_time_equal(sha256_hex(*secret), rec.secret_hash))
    return make_error(errc::unauthenticated, "unknown or revoked token");
  if (rec.revoked_at) return make_error(errc::unauthenticated, "token has been revoked");
  if (rec.expires_at && *rec.expires_at <= clock_.now()) {
    // A stall in progress: meshd did not run since the timer routines' last
    // look, and this request waited in its socket meanwhile. Or a jump of
    // the clock that they have not seen yet expired the token.
    auto [now, monotonic] = clock_.now_and_monotonic();
    auto gap = monotonic - duration{ran_at};
    bool stalled = ran_at >= 0 && gap >= stall_gap && *rec.expires_at > now - gap;
    // Only a token made before the jump, at the wrong time: one stored
    // with the right time that expired days ago stays expired.
    auto jump = clock_.last_jump();
    bool jumped = jump && to_unix_ms(jump->at) > ran_at_wall &&
                  rec.created_at <= jump->at - jump->by &&
                  *rec.expires_at > jump->at - jump->by && *rec.expires_at <= jump->at;
    if (rec.kind != token_kind::agent || !(stalled || jumped))
      return make_error(errc::unauthenticated,
                        "token expired at " + to_rfc3339(*rec.expires_at));
  }
  return rec;
}

void token_cache::mesh_ran(timestamp now, duration monotonic) {
  ran_at_wall_ms_.store(to_unix_ms(now), std::memory_order_release);
  ran_at_ms_.store(monotonic.count(), std::memory_order_release);
}

std::vector<token_record> token_cache::honour_through(timestamp from, timestamp until,
                                                      std::optional<timestamp> made_by) {
  std::unique_lock<std::shared_mutex> guard{mtx_};
  std::vector<token_record> out;
  for (auto& [agent, ids] : by_agent_)
    for (auto& id : ids) {
      auto& t = tokens_.at(id);
      if (lapsed_within(t, from, until, made_by)) {
        t.expires_at = until;
        out.push_back(t);
      }
    }
  return out;
}

bool token_cache::lapsed_within(const token_record& t, timestamp from, timestamp until,
                                std::optional<timestamp> made_by) {
  return t.kind == token_kind::agent && !t.revoked_at && t.expires_at &&
         *t.expires_at > from && *t.expires_at < until &&
         (!made_by || t.created_at <= *made_by);
}

void token_cache::put(const token_record& token) {
  std::unique_lock<std::shared_mutex> guard{mtx_};
  auto [it, inserted] = tokens_.insert_or_assign(token.id, token);
  if (inserted && token.kind == token_kind::agent && !token.agent_id.empty())
    by_agent_[token.agent_id].push_back(token.id);
}

std::optional<token_record> token_cache::find(const std::string& id) const {
  std::shared_lock<std::shared_mutex> guard{mtx_};
  auto it = tokens_.find(id);
  if (it == tokens_.end()) return std::nullopt;
  return it->second;
}

std::vector<token_record> token_cache::of_agent(const std::string& agent_id) const {
  std::shared_lock<std::shared_mutex> guard{mtx_};
  std::vector<token_record> out;
  auto ids = by_agent_.find(agent_id);
  if (ids == by_agent_.end()) return out;
  for (auto& id : ids->second)
    out.push_back(tokens_.at(id));
  return out;
}

void token_cache::erase(const std::string& id) {
  std::unique_lock<std::shared_mutex> guard{mtx_};
  erase_locked(id);
}

size_t token_cache::drop_expired(timestamp cutoff) {
  std::unique_lock<std::shared_mutex> guard{mtx_};
  std::vector<std::string> gone;
  for (auto& [id, t] : tokens_)
    if (t.expires_at && *t.expires_at < cutoff) gone.push_back(id);
  for (auto& id : gone)
    erase_locked(id);
  return gone.size();
}

void token_cache::erase_locked(const std::string& id) {
  auto it = tokens_.find(id);
  if (it == tokens_.end()) return;
  if (it->second.kind == token_kind::agent) {
    auto ids = by_agent_.find(it->second.agent_id);
    if (ids != by_agent_.end()) {
      auto& v = ids->second;
      v.erase(std::remove(v.begin(), v.end(), id), v.end());
      if (v.empty()) by_agent_.erase(ids);
    }
  }
  tokens_.erase(it);
}

size_t token_cache::size() const {
  std::shared_lock<std::shared_mutex> guard{mtx_};
  return tokens_.size();
}

} // namespace polymesh
