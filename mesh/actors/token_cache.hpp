// The in-memory copy of every live token, read by HTTP threads to
// authenticate each request without an actor hop.
//
// Tokens look like `pm_<token id>.<secret>` (the bootstrap admin token may be
// any string, see `bootstrap_admin_id`). Lookup is by id; the secret's
// SHA-256 is compared in constant time with the stored hash.
//
// Ownership and threads: written by the token registry actor, after the
// corresponding store write committed ("persist, then apply"), by the
// retention routine, which drops tokens that expired long ago, and by the
// timer routines after a stall or a jump of the clock (`honour_through`:
// apply, then persist, since requests queued meanwhile are being served);
// read by any thread. A shared mutex guards the map.
#pragma once

#include "mesh/domain/clock.hpp"
#include "mesh/domain/records.hpp"

#include <atomic>
#include <caf/expected.hpp>
#include <optional>
#include <shared_mutex>
#include <string>
#include <unordered_map>
#include <vector>

namespace polymesh {

class token_cache {
public:
  /// The id of the admin token created at first start. Its secret is the
  /// whole token string, so `POLYMESH_ADMIN_TOKEN` may be any string.
  static constexpr const char* bootstrap_admin_id = "admin";

  explicit token_cache(const polymesh::clock& clk)
      : clock_(clk) {}

  /// Resolves an `Authorization` header value. Errors are `unauthenticated`
  /// with a message saying whether the token is missing, malformed, unknown,
  /// expired or revoked.
  [[nodiscard]] caf::expected<token_record> authenticate(const std::string& header) const;
  /// Why the token with this id may not be used now, as `authenticate`
  /// would refuse it once its secret matched (unknown, revoked, expired and
  /// not honoured through a stall); none when it may. For a request that
  /// waits, looked at again before its answer.
  [[nodiscard]] caf::error refusal_of(const std::string& id) const;

  void put(const token_record& token);

  /// Records that meshd ran at `now`, `monotonic` (`clock::now_and_monotonic`;
  /// the timer routines call it at each look at the clock). Until they
  /// notice a stall (no look for `stall_gap` or more) or a jump of the clock,
  /// requests go on being served: `authenticate` then honours an agent
  /// access token that expired after the last look, or by the jump, as
  /// `honour_through` will.
  void mesh_ran(timestamp now, duration monotonic);
  /// After meshd did not run, or its clock jumped, from `from` on: each
  /// agent access token, not revoked, that expired after `from` or expires
  /// before `until` is honoured until `until` (its agent's window to be
  /// heard from again), so that agents keep their sessions and runs.
  /// With `made_by`, only tokens created by then (after a jump of the
  /// clock: those made at the wrong time). Returns the tokens it changed,
  /// to be stored.
  std::vector<token_record> honour_through(timestamp from, timestamp until,
                                           std::optional<timestamp> made_by = {});
  /// Whether `honour_through` keeps `t`; also the rule for the tokens of a
  /// store at meshd's start after an outage (`from`: when meshd last ran).
  [[nodiscard]] static bool lapsed_within(const token_record& t, timestamp from,
                                          timestamp until,
                                          std::optional<timestamp> made_by = {});
  /// The live token with this id, if any.
  [[nodiscard]] std::optional<token_record> find(const std::string& id) const;
  /// Every live access token of one agent.
  [[nodiscard]] std::vector<token_record> of_agent(const std::string& agent_id) const;
  void erase(const std::string& id);
  /// Drops the tokens that expired before `cutoff` (an expired token is
  /// refused either way; kept, it only names its expiry), so that tokens
  /// made per CI job do not pile up in memory for as long as meshd runs.
  /// Returns how many went.
  size_t drop_expired(timestamp cutoff);
  [[nodiscard]] size_t size() const;

  /// Splits `pm_<id>.<secret>`; returns false when the form is wrong.
  static bool split(const std::string& token, std::string& id, std::string& secret);
  /// Formats a token from its id and secret.
  static std::string format(const std::string& id, const std::string& secret);

private:
  /// The lookup of `id` and the checks after the secret, with the routines'
  /// last look read before the lookup (see `authenticate`). `secret` null:
  /// not compared.
  [[nodiscard]] caf::expected<token_record> usable(const std::string& id,
                                                   const std::string* secret) const;
  /// `erase` with `mtx_` held.
  void erase_locked(const std::string& id);

  const polymesh::clock& clock_;
  /// `mesh_ran`'s last readings (ms), the monotonic one -1 before the first.
  std::atomic<int64_t> ran_at_ms_{-1};
  std::atomic<int64_t> ran_at_wall_ms_{0};
  mutable std::shared_mutex mtx_;
  std::unordered_map<std::string, token_record> tokens_;
  /// Ids of the agent tokens in `tokens_`, per agent id: registration looks
  /// up an agent's earlier tokens, which must not scan every token.
  std::unordered_map<std::string, std::vector<std::string>> by_agent_;
};

} // namespace polymesh
