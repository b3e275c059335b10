#include "mesh/actors/token_cache.hpp"

#include <algorithm>
#include <gtest/gtest.h>
#include <optional>

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

} // namespace
} // namespace polymesh
