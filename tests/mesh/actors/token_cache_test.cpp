#include "mesh/actors/token_cache.hpp"
#include "mesh/domain/ids.hpp"

#include <algorithm>
#include <atomic>
#include <gtest/gtest.h>
#include <optional>
#include <thread>

namespace polymesh {
namespace {

token_record agent_token(const std::string& id, const std::string& agent,
                         int64_t session) {
  token_record t;
  t.id = id;
  t.kind = token_kind::agent;
  t.agent_id = agent;
  t.agent_session = session;
  return t;
}

std::vector<std::string> ids_of(const std::vector<token_record>& tokens) {
  std::vector<std::string> out;
  for (auto& t : tokens)
    out.push_back(t.id);
  std::sort(out.begin(), out.end());
  return out;
}

// This test ensures drop_expired drops exactly the tokens that expired
// before the cutoff, of every kind, keeps those without an expiry, and
// keeps of_agent in step.
TEST(token_cache, drop_expired_drops_tokens_that_expired_before_the_cutoff) {
  manual_clock clk;
  token_cache cache{clk};
  auto t0 = clk.now();
  auto make = [&](const std::string& id, token_kind kind,
                  std::optional<duration> expires) {
    auto t = agent_token(id, "agt_a", 1);
    t.kind = kind;
    if (kind != token_kind::agent) t.agent_id.clear();
    if (expires) t.expires_at = t0 + *expires;
    cache.put(t);
  };
  make("old_agent", token_kind::agent, std::chrono::hours{1});
  make("new_agent", token_kind::agent, std::chrono::hours{3});
  make("old_ci", token_kind::submitter, std::chrono::hours{1});
  make("at_cutoff", token_kind::submitter, std::chrono::hours{2});
  make("forever", token_kind::reader, std::nullopt);
  EXPECT_EQ(cache.drop_expired(t0 + std::chrono::hours{2}), 2u);
  EXPECT_FALSE(cache.find("old_agent"));
  EXPECT_FALSE(cache.find("old_ci"));
  EXPECT_TRUE(cache.find("at_cutoff"));
  EXPECT_TRUE(cache.find("new_agent"));
  EXPECT_TRUE(cache.find("forever"));
  EXPECT_EQ(ids_of(cache.of_agent("agt_a")), (std::vector<std::string>{"new_agent"}));
  EXPECT_EQ(cache.drop_expired(t0 + std::chrono::hours{2}), 0u);
}

// This test ensures of_agent returns exactly the live tokens of one agent,
// follows updates and erasures, and ignores other agents' and other kinds'.
TEST(token_cache, of_agent_tracks_puts_updates_and_erasures) {
  manual_clock clk;
  token_cache cache{clk};
  cache.put(agent_token("t1", "agt_a", 1));
  cache.put(agent_token("t2", "agt_a", 2));
  cache.put(agent_token("t3", "agt_b", 1));
  token_record reader;
  reader.id = "r1";
  reader.kind = token_kind::reader;
  cache.put(reader);

  EXPECT_EQ(ids_of(cache.of_agent("agt_a")), (std::vector<std::string>{"t1", "t2"}));
  EXPECT_EQ(ids_of(cache.of_agent("agt_b")), (std::vector<std::string>{"t3"}));
  EXPECT_TRUE(cache.of_agent("agt_none").empty());
  EXPECT_TRUE(cache.of_agent("").empty());

  // An update of a token is not a second token.
  auto updated = agent_token("t1", "agt_a", 1);
  updated.name = "renamed";
  cache.put(updated);
  auto a = cache.of_agent("agt_a");
  ASSERT_EQ(a.size(), 2u);
  EXPECT_EQ(
      std::count_if(a.begin(), a.end(), [](auto& t) { return t.name == "renamed"; }), 1);

  cache.erase("t1");
  EXPECT_EQ(ids_of(cache.of_agent("agt_a")), (std::vector<std::string>{"t2"}));
  cache.erase("t2");
  cache.erase("t2"); // erasing twice is harmless
  EXPECT_TRUE(cache.of_agent("agt_a").empty());
  EXPECT_EQ(ids_of(cache.of_agent("agt_b")), (std::vector<std::string>{"t3"}));
  EXPECT_EQ(cache.size(), 2u);
}

/// A token with secret `s3cret`, expiring `life` after the clock's now.
token_record expiring(const manual_clock& clk, const std::string& id, token_kind kind,
                      duration life) {
  auto t = agent_token(id, kind == token_kind::agent ? "agt_a" : "", 1);
  t.kind = kind;
  t.secret_hash = sha256_hex("s3cret");
  t.expires_at = clk.now() + life;
  return t;
}

std::string bearer(const std::string& id) {
  return "Bearer " + token_cache::format(id, "s3cret");
}

// This test ensures an agent access token that expired while meshd did not
// run (a stall the timer routines have not noticed yet: no `mesh_ran` for
// `stall_gap` or more) is honoured, one that expired before the stall began
// and tokens of other kinds are not, and that once the routines looked again
// the token is refused unless `honour_through` kept it.
TEST(token_cache, honours_agent_tokens_through_a_stall_in_progress) {
  manual_clock clk;
  token_cache cache{clk};
  cache.mesh_ran(clk.now(), clk.monotonic());
  cache.put(expiring(clk, "agent", token_kind::agent, std::chrono::minutes{10}));
  cache.put(expiring(clk, "ci", token_kind::submitter, std::chrono::minutes{10}));
  cache.put(expiring(clk, "lapsed", token_kind::agent, std::chrono::minutes{1}));
  clk.advance(std::chrono::minutes{2});
  cache.mesh_ran(clk.now(), clk.monotonic());
  ASSERT_FALSE(cache.authenticate(bearer("lapsed")));
  clk.stall(std::chrono::hours{1});
  EXPECT_TRUE(cache.authenticate(bearer("agent")));
  EXPECT_FALSE(cache.authenticate(bearer("ci")));
  EXPECT_FALSE(cache.authenticate(bearer("lapsed"))) << "expired before the stall";
  // A gap under `stall_gap` is no stall.
  cache.mesh_ran(clk.now(), clk.monotonic());
  clk.stall(stall_gap - std::chrono::milliseconds{1});
  EXPECT_FALSE(cache.authenticate(bearer("agent")));
  cache.mesh_ran(clk.now(), clk.monotonic());
  EXPECT_FALSE(cache.authenticate(bearer("agent")));
}

// This test ensures an agent access token that a jump of the clock expired
// is honoured until the timer routines look after the jump, and one that
// expired before it, or was made at the right time (loaded from the store)
// and expired long ago, is not.
TEST(token_cache, honours_agent_tokens_that_a_jump_of_the_clock_expired) {
  manual_clock clk;
  token_cache cache{clk};
  cache.mesh_ran(clk.now(), clk.monotonic());
  cache.put(expiring(clk, "agent", token_kind::agent, std::chrono::minutes{10}));
  cache.put(expiring(clk, "lapsed", token_kind::agent, std::chrono::minutes{1}));
  // Loaded from the store with the right time (days after the wrong "now"),
  // expired five days before the jump.
  auto stored = expiring(clk, "stored", token_kind::agent, std::chrono::hours{24 * 25});
  stored.created_at = clk.now() + std::chrono::hours{24 * 25 - 1};
  cache.put(stored);
  clk.advance(std::chrono::minutes{2});
  cache.mesh_ran(clk.now(), clk.monotonic());
  auto before = clk.now();
  clk.jump(std::chrono::hours{24 * 30});
  EXPECT_TRUE(cache.authenticate(bearer("agent")));
  EXPECT_FALSE(cache.authenticate(bearer("lapsed")));
  EXPECT_FALSE(cache.authenticate(bearer("stored"))) << "made at the right time";
  // Once the routines looked after the jump, only `honour_through` keeps it.
  cache.mesh_ran(clk.now(), clk.monotonic());
  EXPECT_FALSE(cache.authenticate(bearer("agent")));
  EXPECT_EQ(
      ids_of(cache.honour_through(before, clk.now() + std::chrono::minutes{3}, before)),
      (std::vector<std::string>{"agent"}));
  EXPECT_TRUE(cache.authenticate(bearer("agent")));
  EXPECT_FALSE(cache.authenticate(bearer("stored")));
}

// This test ensures a request that authenticates while a timer routine
// honours the tokens after a stall and records its look is never refused:
// it reads the look before the token, so a look recorded after the
// extension finds the extended token (one thread stalls, honours and looks
// in a loop, another authenticates throughout).
TEST(token_cache, a_token_being_honoured_is_never_refused_meanwhile) {
  manual_clock clk;
  token_cache cache{clk};
  cache.mesh_ran(clk.now(), clk.monotonic());
  cache.put(expiring(clk, "agent", token_kind::agent, std::chrono::minutes{10}));
  for (int i = 0; i < 200; ++i)
    cache.put(expiring(clk, "other" + std::to_string(i), token_kind::agent,
                       std::chrono::minutes{10}));
  std::atomic<bool> done{false};
  std::atomic<int> refused{0};
  std::thread reader{[&] {
    while (!done)
      if (!cache.authenticate(bearer("agent"))) ++refused;
  }};
  for (int i = 0; i < 2000; ++i) {
    clk.stall(std::chrono::hours{2});
    auto [now, monotonic] = clk.now_and_monotonic();
    (void)cache.honour_through(now - std::chrono::hours{2},
                               now + std::chrono::minutes{3});
    cache.mesh_ran(now, monotonic);
  }
  done = true;
  reader.join();
  EXPECT_EQ(refused.load(), 0);
}

// This test ensures `honour_through` gives exactly the agent tokens that
// expired after `from`, or expire before `until`, a life until `until`, and
// returns them: not revoked ones, nor other kinds, nor ones that expired
// before `from` or live past `until`.
TEST(token_cache, honour_through_keeps_the_agent_tokens_that_lapsed_in_the_window) {
  manual_clock clk;
  token_cache cache{clk};
  auto t0 = clk.now();
  cache.put(expiring(clk, "before", token_kind::agent, std::chrono::minutes{1}));
  cache.put(expiring(clk, "inside", token_kind::agent, std::chrono::minutes{30}));
  cache.put(expiring(clk, "soon", token_kind::agent, std::chrono::minutes{62}));
  cache.put(expiring(clk, "later", token_kind::agent, std::chrono::minutes{70}));
  cache.put(expiring(clk, "ci", token_kind::submitter, std::chrono::minutes{30}));
  auto revoked = expiring(clk, "revoked", token_kind::agent, std::chrono::minutes{30});
  revoked.revoked_at = t0;
  cache.put(revoked);
  auto from = t0 + std::chrono::minutes{5};
  auto until = t0 + std::chrono::minutes{63};
  auto kept = cache.honour_through(from, until);
  EXPECT_EQ(ids_of(kept), (std::vector<std::string>{"inside", "soon"}));
  for (auto& t : kept)
    EXPECT_EQ(t.expires_at, until);
  EXPECT_EQ(cache.find("inside")->expires_at, until);
  EXPECT_EQ(cache.find("before")->expires_at, t0 + std::chrono::minutes{1});
  EXPECT_EQ(cache.find("later")->expires_at, t0 + std::chrono::minutes{70});
  EXPECT_EQ(cache.find("ci")->expires_at, t0 + std::chrono::minutes{30});
  EXPECT_EQ(cache.find("revoked")->expires_at, t0 + std::chrono::minutes{30});
  clk.set(t0 + std::chrono::minutes{60});
  EXPECT_TRUE(cache.authenticate(bearer("inside")));
  EXPECT_FALSE(cache.authenticate(bearer("ci")));
}

} // namespace
} // namespace polymesh
