// The runs an agent remembers after they ended: what an offer of one again
// is answered with, and the bounds on how many and how many bytes.
#include "recent_runs.hpp"

#include <gtest/gtest.h>

using namespace polymesh::sdk;
using namespace polymesh;

namespace {

using outcome = recent_runs::outcome;

recent_runs::memory finished(std::string result, std::string offer = "1@7") {
  recent_runs::memory m;
  m.what = outcome::finished;
  m.finish.status = run_status::error;
  m.finish.exit_code = 3;
  m.finish.reason = "plan_failed";
  m.finish.error = "it broke";
  m.finish.result = std::move(result);
  m.offer = std::move(offer);
  return m;
}

recent_runs::memory just(outcome what) {
  recent_runs::memory m;
  m.what = what;
  m.offer = "1@7";
  return m;
}

} // namespace

// This test ensures a run's finish is recalled as it was remembered, with its
// offer, and a run never remembered is not recalled.
TEST(recent_runs, recalls_the_finish_remembered) {
  recent_runs r;
  r.remember("r1", finished("partial"));
  r.remember("r2", just(outcome::not_run));
  auto m = r.recall("r1");
  ASSERT_TRUE(m);
  EXPECT_EQ(m->what, outcome::finished);
  EXPECT_EQ(m->finish.status, run_status::error);
  EXPECT_EQ(m->finish.exit_code, 3);
  EXPECT_EQ(m->finish.reason, "plan_failed");
  EXPECT_EQ(m->finish.error, "it broke");
  EXPECT_EQ(m->finish.result, "partial");
  EXPECT_EQ(m->offer, "1@7");
  EXPECT_EQ(r.recall("r2")->what, outcome::not_run);
  EXPECT_FALSE(r.recall("r3"));
  EXPECT_EQ(r.size(), 2u);
  EXPECT_EQ(r.bytes(), recent_runs::cost("r1", finished("partial")));
}

// This test ensures only the last `max_runs` runs are remembered, a run
// remembered again counting as the newest.
TEST(recent_runs, keeps_the_newest_runs) {
  recent_runs r{3, 1 << 20};
  r.remember("r1", finished("1"));
  r.remember("r2", just(outcome::ran));
  r.remember("r3", finished("3"));
  r.remember("r1", finished("1 again", "2@9"));
  r.remember("r4", just(outcome::ran));
  EXPECT_EQ(r.size(), 3u);
  EXPECT_FALSE(r.recall("r2"));
  EXPECT_EQ(r.recall("r1")->finish.result, "1 again");
  EXPECT_EQ(r.recall("r1")->offer, "2@9");
  EXPECT_TRUE(r.recall("r3"));
  EXPECT_TRUE(r.recall("r4"));
  EXPECT_EQ(r.bytes(), recent_runs::cost("r1", finished("1 again", "2@9")) +
                           recent_runs::cost("r3", finished("3")));
  r.remember("r5", just(outcome::ran));
  r.remember("r6", just(outcome::ran));
  EXPECT_FALSE(r.recall("r3"));
  EXPECT_FALSE(r.recall("r1"));
  EXPECT_EQ(r.bytes(), 0u);
}

// This test ensures the finishes held stay within `max_bytes`: the oldest
// are forgotten first, their runs still known to have run, and a finish
// larger than the bound alone is remembered as having run.
TEST(recent_runs, forgets_the_oldest_finishes_past_the_byte_bound) {
  auto one = recent_runs::cost("r1", finished(std::string(100, 'x')));
  recent_runs r{100, 2 * one + 10};
  r.remember("r1", finished(std::string(100, 'x')));
  r.remember("r2", just(outcome::ran));
  r.remember("r3", finished(std::string(100, 'y')));
  EXPECT_EQ(r.bytes(), 2 * one);
  r.remember("r4", finished(std::string(100, 'z')));
  EXPECT_EQ(r.bytes(), 2 * one);
  EXPECT_EQ(r.recall("r1")->what, outcome::ran);
  EXPECT_TRUE(r.recall("r1")->finish.result.empty());
  EXPECT_EQ(r.recall("r1")->offer, "1@7") << "the offer stays";
  EXPECT_EQ(r.recall("r2")->what, outcome::ran);
  EXPECT_EQ(r.recall("r3")->finish.result, std::string(100, 'y'));
  EXPECT_EQ(r.recall("r4")->finish.result, std::string(100, 'z'));
  r.remember("big", finished(std::string(3 * one, 'b')));
  EXPECT_EQ(r.recall("big")->what, outcome::ran);
  EXPECT_EQ(r.bytes(), 2 * one) << "r3 and r4 kept";
  EXPECT_EQ(r.size(), 5u);
}
