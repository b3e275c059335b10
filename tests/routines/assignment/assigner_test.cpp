#include "mesh/domain/error.hpp"
#include "routines/assignment/assigner.hpp"

#include <algorithm>
#include <gtest/gtest.h>
#include <map>
#include <random>
#include <set>
#include <string>
#include <tuple>
#include <unordered_map>
#include <vector>

namespace polymesh {
namespace {

selector sel(const std::string& text) {
  auto s = selector::parse(text);
  EXPECT_TRUE(s) << "'" << text << "': " << message_of(s.error());
  return s ? *s : selector{};
}

agent_view agent(std::string id, std::set<std::string> plans, label_map labels = {},
                 int64_t capacity = 1, agent_status status = agent_status::online) {
  agent_view a;
  a.name = "name-" + id;
  a.id = std::move(id);
  a.plans = std::move(plans);
  a.labels = std::move(labels);
  a.capacity = capacity;
  a.status = status;
  return a;
}

queued_run run(std::string id, uint64_t seq, std::string plan, int64_t priority = 0,
               const std::string& selector_text = "", const std::string& scope_text = "",
               std::string target = "") {
  queued_run r;
  r.id = std::move(id);
  r.seq = seq;
  r.plan = std::move(plan);
  r.priority = priority;
  r.sel = sel(selector_text);
  r.scope = sel(scope_text);
  r.target_agent = std::move(target);
  return r;
}

using pairs = std::vector<std::pair<std::string, std::string>>;

pairs as_pairs(const std::vector<placement>& ps) {
  pairs result;
  for (const auto& p : ps)
    result.emplace_back(p.run_id, p.agent_id);
  return result;
}

std::vector<std::string> run_ids(const std::vector<placement>& ps) {
  std::vector<std::string> result;
  for (const auto& p : ps)
    result.push_back(p.run_id);
  return result;
}

using ids = std::vector<std::string>;

// -- ordering -----------------------------------------------------------------

// This test ensures a higher-priority run is placed before an older,
// lower-priority one.
TEST(Assigner, PriorityFirst) {
  assigner a;
  a.upsert_agent(agent("a1", {"build"}));
  a.enqueue(run("low", 1, "build", 0));
  a.enqueue(run("high", 2, "build", 5));
  a.enqueue(run("mid", 3, "build", 2));
  EXPECT_EQ(run_ids(a.place()), ids{"high"});
  a.release("a1");
  EXPECT_EQ(run_ids(a.place()), ids{"mid"});
  a.release("a1");
  EXPECT_EQ(run_ids(a.place()), ids{"low"});
}

// This test ensures runs of one priority go out in submission order, across
// classes too.
TEST(Assigner, FifoWithinPriority) {
  assigner a;
  a.upsert_agent(agent("a1", {"build"}, {{"env", "prod"}}, 10));
  a.enqueue(run("r3", 3, "build"));
  a.enqueue(run("r1", 1, "build", 0, "env=prod"));
  a.enqueue(run("r5", 5, "build", 0, "env=prod"));
  a.enqueue(run("r2", 2, "build"));
  a.enqueue(run("r4", 4, "build", 0, "env"));
  EXPECT_EQ(run_ids(a.place()), (ids{"r1", "r2", "r3", "r4", "r5"}));
}

// This test ensures a higher-priority run that nobody can take (absent plan or
// label) does not block lower-priority runs that can be taken.
TEST(Assigner, NoHeadOfLineBlocking) {
  assigner a;
  a.upsert_agent(agent("a1", {"build"}, {{"env", "dev"}}, 2));
  a.enqueue(run("no-plan", 1, "deploy", 9));
  a.enqueue(run("no-label", 2, "build", 9, "gpu"));
  a.enqueue(run("no-target", 3, "build", 9, "", "", "ghost"));
  a.enqueue(run("ok", 4, "build", 0));
  EXPECT_EQ(as_pairs(a.place()), (pairs{{"ok", "a1"}}));
  EXPECT_TRUE(a.queued("no-plan"));
  EXPECT_TRUE(a.queued("no-label"));
  EXPECT_TRUE(a.queued("no-target"));
  EXPECT_EQ(a.queue_size(), 3u);
}

// This test ensures a full agent does not block runs another agent can take.
TEST(Assigner, FullAgentDoesNotBlockOthers) {
  assigner a;
  a.upsert_agent(agent("a1", {"build"}, {{"gpu", "yes"}}));
  a.upsert_agent(agent("a2", {"build"}));
  a.reserve("a1");
  a.enqueue(run("gpu-run", 1, "build", 9, "gpu"));
  a.enqueue(run("any-run", 2, "build"));
  EXPECT_EQ(as_pairs(a.place()), (pairs{{"any-run", "a2"}}));
  a.release("a1");
  EXPECT_EQ(as_pairs(a.place()), (pairs{{"gpu-run", "a1"}}));
}

// -- slots --------------------------------------------------------------------

// This test ensures an agent never gets more runs than its capacity.
TEST(Assigner, CapacityRespected) {
  assigner a;
  a.upsert_agent(agent("a1", {"build"}, {}, 2));
  for (uint64_t i = 1; i <= 5; ++i)
    a.enqueue(run("r" + std::to_string(i), i, "build"));
  EXPECT_EQ(a.place().size(), 2u);
  EXPECT_EQ(a.reserved("a1"), 2);
  EXPECT_TRUE(a.place().empty());
  EXPECT_EQ(a.queue_size(), 3u);
}

// This test ensures a released slot is used again, and release never goes
// below zero.
TEST(Assigner, ReleaseFreesSlot) {
  assigner a;
  a.upsert_agent(agent("a1", {"build"}));
  a.enqueue(run("r1", 1, "build"));
  a.enqueue(run("r2", 2, "build"));
  EXPECT_EQ(run_ids(a.place()), ids{"r1"});
  EXPECT_TRUE(a.place().empty());
  a.release("a1");
  EXPECT_EQ(a.reserved("a1"), 0);
  EXPECT_EQ(run_ids(a.place()), ids{"r2"});
  a.release("a1");
  a.release("a1");
  a.release("unknown");
  EXPECT_EQ(a.reserved("a1"), 0);
  EXPECT_EQ(a.reserved("unknown"), 0);
}

// This test ensures `reserve` counts slots in use that the assigner did not
// place, even when it arrives before the agent itself (start-up restore).
TEST(Assigner, ReserveBeforeUpsertIsKept) {
  assigner a;
  a.reserve("a1");
  a.reserve("a1");
  EXPECT_EQ(a.reserved("a1"), 2);
  a.enqueue(run("r1", 1, "build"));
  EXPECT_TRUE(a.place().empty());
  EXPECT_TRUE(a.explain("r1").empty()) << "a placeholder is not a known agent";
  a.upsert_agent(agent("a1", {"build"}, {}, 3));
  EXPECT_EQ(a.reserved("a1"), 2);
  EXPECT_EQ(as_pairs(a.place()), (pairs{{"r1", "a1"}}));
  EXPECT_EQ(a.reserved("a1"), 3);
}

// This test ensures `place` stops at `max` and the rest waits for the next call.
TEST(Assigner, PlaceHonorsMax) {
  assigner a;
  a.upsert_agent(agent("a1", {"build"}, {}, 10));
  for (uint64_t i = 1; i <= 5; ++i)
    a.enqueue(run("r" + std::to_string(i), i, "build"));
  EXPECT_EQ(run_ids(a.place(2)), (ids{"r1", "r2"}));
  EXPECT_TRUE(a.place(0).empty());
  EXPECT_EQ(run_ids(a.place()), (ids{"r3", "r4", "r5"}));
}

// This test ensures lowering the capacity below the slots in use keeps the
// count and frees nothing until enough runs end.
TEST(Assigner, CapacityLoweredBelowReserved) {
  assigner a;
  a.upsert_agent(agent("a1", {"build"}, {}, 3));
  for (uint64_t i = 1; i <= 4; ++i)
    a.enqueue(run("r" + std::to_string(i), i, "build"));
  EXPECT_EQ(a.place().size(), 3u);
  a.upsert_agent(agent("a1", {"build"}, {}, 1));
  EXPECT_EQ(a.reserved("a1"), 3);
  a.release("a1");
  EXPECT_TRUE(a.place().empty());
  EXPECT_EQ(a.explain("r4").at(0).reason, "no free slot (2 of 1 in use)");
  a.release("a1");
  a.release("a1");
  EXPECT_EQ(run_ids(a.place()), ids{"r4"});
}

// -- spread -------------------------------------------------------------------

// This test ensures equal agents take turns (round robin).
TEST(Assigner, SpreadRoundRobinAmongEqualAgents) {
  assigner a;
  for (auto id : {"a", "b", "c"})
    a.upsert_agent(agent(id, {"build"}, {}, 2));
  for (uint64_t i = 1; i <= 6; ++i)
    a.enqueue(run("r" + std::to_string(i), i, "build"));
  EXPECT_EQ(
      as_pairs(a.place()),
      (pairs{
          {"r1", "a"}, {"r2", "b"}, {"r3", "c"}, {"r4", "a"}, {"r5", "b"}, {"r6", "c"}}));
}

// This test ensures the agent with the most free slots is preferred, ties going
// to the one assigned to least recently.
TEST(Assigner, SpreadPrefersMostFreeSlots) {
  assigner a;
  a.upsert_agent(agent("big", {"build"}, {}, 3));
  a.upsert_agent(agent("small", {"build"}, {}, 1));
  for (uint64_t i = 1; i <= 4; ++i)
    a.enqueue(run("r" + std::to_string(i), i, "build"));
  // big 3 free, then 2 vs 1; then 1 vs 1 ties to small (never assigned).
  EXPECT_EQ(as_pairs(a.place()),
            (pairs{{"r1", "big"}, {"r2", "big"}, {"r3", "small"}, {"r4", "big"}}));
}

// This test ensures a freed slot counts when spreading later runs.
TEST(Assigner, SpreadFollowsReleases) {
  assigner a;
  a.upsert_agent(agent("a", {"build"}, {}, 2));
  a.upsert_agent(agent("b", {"build"}, {}, 2));
  a.enqueue(run("r1", 1, "build"));
  a.enqueue(run("r2", 2, "build"));
  EXPECT_EQ(as_pairs(a.place()), (pairs{{"r1", "a"}, {"r2", "b"}}));
  a.release("b");
  a.enqueue(run("r3", 3, "build"));
  EXPECT_EQ(as_pairs(a.place()), (pairs{{"r3", "b"}}));
}

// -- eligibility --------------------------------------------------------------

// This test ensures draining, offline and deregistered agents are never chosen.
TEST(Assigner, UnavailableAgentsNeverChosen) {
  assigner a;
  a.upsert_agent(agent("d", {"build"}, {}, 5, agent_status::draining));
  a.upsert_agent(agent("o", {"build"}, {}, 5, agent_status::offline));
  a.upsert_agent(agent("x", {"build"}, {}, 5, agent_status::deregistered));
  a.enqueue(run("r1", 1, "build"));
  EXPECT_TRUE(a.place().empty());
  a.upsert_agent(agent("ok", {"build"}));
  EXPECT_EQ(as_pairs(a.place()), (pairs{{"r1", "ok"}}));
}

// This test ensures an agent that goes draining or offline stops taking runs
// and takes them again once back online.
TEST(Assigner, StatusChangeTakesEffect) {
  assigner a;
  a.upsert_agent(agent("a1", {"build"}, {}, 5));
  a.upsert_agent(agent("a1", {"build"}, {}, 5, agent_status::draining));
  a.enqueue(run("r1", 1, "build"));
  EXPECT_TRUE(a.place().empty());
  a.upsert_agent(agent("a1", {"build"}, {}, 5, agent_status::offline));
  EXPECT_TRUE(a.place().empty());
  a.upsert_agent(agent("a1", {"build"}, {}, 5));
  EXPECT_EQ(as_pairs(a.place()), (pairs{{"r1", "a1"}}));
}

// This test ensures an agent held back (runs placed with it were not
// started) takes no run, explain gives the hold as its reason and says it
// would fit, and once let go it takes runs again with its slots as they were.
TEST(Assigner, HeldBackAgentTakesNoRunUntilLetGo) {
  assigner a;
  a.upsert_agent(agent("a1", {"build"}, {}, 3));
  a.enqueue(run("r0", 1, "build"));
  EXPECT_EQ(as_pairs(a.place()), (pairs{{"r0", "a1"}}));
  a.hold_back("a1", "held back until T: 1 run placed with it in a row not started");
  a.enqueue(run("r1", 2, "build"));
  EXPECT_TRUE(a.place().empty());
  auto why = a.explain("r1");
  ASSERT_EQ(why.size(), 1u);
  EXPECT_FALSE(why[0].candidate);
  EXPECT_EQ(why[0].reason,
            "held back until T: 1 run placed with it in a row not started");
  EXPECT_TRUE(why[0].fits);
  // An upsert carrying the hold (the routine's announcement) keeps it.
  auto v = agent("a1", {"build"}, {}, 3);
  v.held = "held back until T2";
  a.upsert_agent(v);
  EXPECT_TRUE(a.place().empty());
  EXPECT_EQ(a.explain("r1")[0].reason, "held back until T2");
  a.upsert_agent(agent("a2", {"build"}));
  EXPECT_EQ(as_pairs(a.place()), (pairs{{"r1", "a2"}}));
  a.hold_back("a1", "");
  EXPECT_EQ(a.reserved("a1"), 1);
  a.enqueue(run("r2", 3, "build"));
  a.enqueue(run("r3", 4, "build"));
  a.enqueue(run("r4", 5, "build"));
  EXPECT_EQ(as_pairs(a.place()), (pairs{{"r2", "a1"}, {"r3", "a1"}}))
      << "a1 has two free slots of three, a2 none";
  // An agent it does not know is not made up.
  a.hold_back("nobody", "held");
  EXPECT_EQ(a.explain("r4").size(), 2u);
  EXPECT_EQ(a.name_of("a1"), "name-a1");
  EXPECT_EQ(a.name_of("nobody"), "");
}

// This test ensures a run only goes to an agent inside the submitting token's
// scope, even when its own selector is empty.
TEST(Assigner, ScopeEnforced) {
  assigner a;
  a.upsert_agent(agent("prod", {"build"}, {{"env", "prod"}}, 5));
  a.enqueue(run("r1", 1, "build", 0, "", "env=dev"));
  EXPECT_TRUE(a.place().empty());
  a.upsert_agent(agent("dev", {"build"}, {{"env", "dev"}}));
  EXPECT_EQ(as_pairs(a.place()), (pairs{{"r1", "dev"}}));
}

// This test ensures selector and scope must both hold.
TEST(Assigner, SelectorAndScopeBothRequired) {
  assigner a;
  a.upsert_agent(agent("a1", {"build"}, {{"env", "dev"}}));
  a.upsert_agent(agent("a2", {"build"}, {{"zone", "eu"}}));
  a.upsert_agent(agent("a3", {"build"}, {{"env", "dev"}, {"zone", "eu"}}));
  a.enqueue(run("r1", 1, "build", 0, "zone=eu", "env=dev"));
  EXPECT_EQ(as_pairs(a.place()), (pairs{{"r1", "a3"}}));
}

// This test ensures a run naming its agent goes only to the agent of that
// name, even if another has more free slots.
TEST(Assigner, TargetAgentByName) {
  assigner a;
  a.upsert_agent(agent("a", {"build"}, {}, 10));
  a.upsert_agent(agent("b", {"build"}, {}, 1));
  a.enqueue(run("r1", 1, "build", 0, "", "", "name-b"));
  a.enqueue(run("r2", 2, "build", 0, "", "", "name-b"));
  EXPECT_EQ(as_pairs(a.place()), (pairs{{"r1", "b"}}));
  EXPECT_TRUE(a.queued("r2"));
  a.enqueue(run("r3", 3, "build", 0, "", "", "b"));
  EXPECT_TRUE(a.place().empty()) << "the target is a name, not an id";
}

// This test ensures changed labels or plans take effect for queued runs, both
// ways.
TEST(Assigner, UpsertLabelChangeTakesEffect) {
  assigner a;
  a.upsert_agent(agent("a1", {"build"}, {{"env", "dev"}}, 5));
  a.enqueue(run("r1", 1, "build", 0, "env=prod"));
  EXPECT_TRUE(a.place().empty());
  a.upsert_agent(agent("a1", {"build"}, {{"env", "prod"}}, 5));
  EXPECT_EQ(as_pairs(a.place()), (pairs{{"r1", "a1"}}));
  EXPECT_EQ(a.reserved("a1"), 1) << "upsert keeps the slots in use";

  a.upsert_agent(agent("a1", {"build"}, {{"env", "dev"}}, 5));
  a.enqueue(run("r2", 2, "build", 0, "env=prod"));
  EXPECT_TRUE(a.place().empty());
  a.upsert_agent(agent("a1", {"deploy"}, {{"env", "prod"}}, 5));
  EXPECT_TRUE(a.place().empty()) << "no longer lists the plan";
  a.upsert_agent(agent("a1", {"build", "deploy"}, {{"env", "prod"}}, 5));
  EXPECT_EQ(as_pairs(a.place()), (pairs{{"r2", "a1"}}));
  EXPECT_EQ(a.reserved("a1"), 2);
}

// This test ensures a renamed agent loses runs targeted at its old name.
TEST(Assigner, UpsertRenameTakesEffect) {
  assigner a;
  a.enqueue(run("r1", 1, "build", 0, "", "", "old"));
  auto v = agent("a1", {"build"});
  v.name = "new";
  a.upsert_agent(v);
  EXPECT_TRUE(a.place().empty());
  v.name = "old";
  a.upsert_agent(v);
  EXPECT_EQ(as_pairs(a.place()), (pairs{{"r1", "a1"}}));
}

// This test ensures a removed agent is never chosen again.
TEST(Assigner, RemovedAgentNeverChosen) {
  assigner a;
  a.upsert_agent(agent("a1", {"build"}, {}, 5));
  a.remove_agent("a1");
  a.remove_agent("a1");
  a.enqueue(run("r1", 1, "build"));
  EXPECT_TRUE(a.place().empty());
  EXPECT_TRUE(a.explain("r1").empty());
  EXPECT_EQ(a.reserved("a1"), 0);
}

// -- queue --------------------------------------------------------------------

// This test ensures a dequeued run is never placed and dequeue reports whether
// the run was queued.
TEST(Assigner, Dequeue) {
  assigner a;
  a.enqueue(run("r1", 1, "build"));
  a.enqueue(run("r2", 2, "build"));
  EXPECT_TRUE(a.queued("r1"));
  EXPECT_TRUE(a.dequeue("r1"));
  EXPECT_FALSE(a.dequeue("r1"));
  EXPECT_FALSE(a.dequeue("never"));
  EXPECT_FALSE(a.queued("r1"));
  EXPECT_EQ(a.queue_size(), 1u);
  a.upsert_agent(agent("a1", {"build"}, {}, 5));
  EXPECT_EQ(run_ids(a.place()), ids{"r2"});
  EXPECT_EQ(a.queue_size(), 0u);
  EXPECT_FALSE(a.queued("r2"));
}

// This test ensures enqueueing a queued run replaces it instead of queueing it
// twice.
TEST(Assigner, EnqueueReplaces) {
  assigner a;
  a.enqueue(run("r1", 1, "build", 0));
  a.enqueue(run("r2", 2, "build", 1));
  a.enqueue(run("r1", 1, "build", 5, "env=prod"));
  EXPECT_EQ(a.queue_size(), 2u);
  a.upsert_agent(agent("a1", {"build"}, {{"env", "prod"}}, 5));
  EXPECT_EQ(run_ids(a.place()), (ids{"r1", "r2"}));
  EXPECT_EQ(a.reserved("a1"), 2);
}

// -- explain ------------------------------------------------------------------

// This test ensures explain gives each documented reason, agents by name.
TEST(Assigner, ExplainReasons) {
  assigner a;
  a.upsert_agent(agent("a-off", {"build"}, {{"env", "dev"}}, 1, agent_status::offline));
  a.upsert_agent(
      agent("b-drain", {"build"}, {{"env", "dev"}}, 1, agent_status::draining));
  a.upsert_agent(
      agent("c-gone", {"build"}, {{"env", "dev"}}, 1, agent_status::deregistered));
  a.upsert_agent(agent("d-noplan", {"deploy"}, {{"env", "dev"}}));
  a.upsert_agent(agent("e-nolabel", {"build"}, {{"env", "prod"}}));
  a.upsert_agent(agent("f-noscope", {"build"}, {{"env", "dev"}, {"zone", "us"}}));
  a.upsert_agent(agent("g-full", {"build"}, {{"env", "dev"}, {"zone", "eu"}}, 2));
  a.upsert_agent(agent("h-ok", {"build"}, {{"env", "dev"}, {"zone", "eu"}}, 3));
  a.reserve("g-full");
  a.reserve("g-full");
  a.enqueue(run("r1", 1, "build", 0, "env=dev", "zone in (eu)"));
  auto got = a.explain("r1");
  const std::vector<std::tuple<std::string, bool, std::string>> want = {
      {"a-off", false, "offline"},
      {"b-drain", false, "draining"},
      {"c-gone", false, "deregistered"},
      {"d-noplan", false, "lacks plan build"},
      {"e-nolabel", false, "selector requirement env=dev not met"},
      {"f-noscope", false, "outside the token's scope (zone in (eu) not met)"},
      {"g-full", false, "no free slot (2 of 2 in use)"},
      {"h-ok", true, ""},
  };
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ(got[i].agent_id, std::get<0>(want[i]));
    EXPECT_EQ(got[i].agent_name, "name-" + std::get<0>(want[i]));
    EXPECT_EQ(got[i].candidate, std::get<1>(want[i])) << got[i].agent_id;
    EXPECT_EQ(got[i].reason, std::get<2>(want[i])) << got[i].agent_id;
  }
}

// This test ensures explain names the target rule, and checks the rules in the
// documented order (status before plan before selector ... before slots).
TEST(Assigner, ExplainOrderAndTarget) {
  assigner a;
  // Fails everything: the status is reported.
  a.upsert_agent(agent("a", {"deploy"}, {}, 0, agent_status::offline));
  // Fails plan, selector, scope, target and slots: the plan is reported.
  a.upsert_agent(agent("b", {"deploy"}, {}, 0));
  // Fails selector, scope, target and slots.
  a.upsert_agent(agent("c", {"build"}, {}, 0));
  // Fails scope, target and slots.
  a.upsert_agent(agent("d", {"build"}, {{"gpu", "1"}}, 0));
  // Fails target and slots.
  a.upsert_agent(agent("e", {"build"}, {{"gpu", "1"}, {"env", "dev"}}, 0));
  // Fails slots only.
  a.upsert_agent(agent("t", {"build"}, {{"gpu", "1"}, {"env", "dev"}}, 0));
  a.enqueue(run("r1", 1, "build", 0, "gpu", "env=dev", "name-t"));
  auto got = a.explain("r1");
  ASSERT_EQ(got.size(), 6u);
  EXPECT_EQ(got[0].reason, "offline");
  EXPECT_EQ(got[1].reason, "lacks plan build");
  EXPECT_EQ(got[2].reason, "selector requirement gpu not met");
  EXPECT_EQ(got[3].reason, "outside the token's scope (env=dev not met)");
  EXPECT_EQ(got[4].reason, "not the target agent");
  EXPECT_EQ(got[5].reason, "no free slot (0 of 0 in use)");
  for (const auto& c : got)
    EXPECT_FALSE(c.candidate);
}

// This test ensures explain answers nothing for a run that is not queued.
TEST(Assigner, ExplainUnknownRun) {
  assigner a;
  a.upsert_agent(agent("a1", {"build"}));
  EXPECT_TRUE(a.explain("nope").empty());
  a.enqueue(run("r1", 1, "build"));
  EXPECT_EQ(a.explain("r1").size(), 1u);
  (void)a.place();
  EXPECT_TRUE(a.explain("r1").empty());
}

// -- concurrency keys ----------------------------------------------------------

queued_run keyed(std::string id, uint64_t seq, std::string key,
                 const std::string& scope_text = "", int64_t priority = 0) {
  auto r = run(std::move(id), seq, "deploy", priority, "", scope_text);
  r.concurrency_key = std::move(key);
  return r;
}

// This test ensures a run waits while another run with its concurrency key
// is placed, and goes once that run lets go of its slot.
TEST(Assigner, SameConcurrencyKeyWaitsForTheHolder) {
  assigner a;
  a.upsert_agent(agent("a1", {"deploy"}, {}, 4));
  a.enqueue(keyed("r1", 1, "ws-prod"));
  a.enqueue(keyed("r2", 2, "ws-prod"));
  EXPECT_EQ(run_ids(a.place()), ids{"r1"});
  EXPECT_EQ(a.holder(selector{}, "ws-prod"), "r1");
  EXPECT_TRUE(a.place().empty()) << "r2 must wait for r1 although slots are free";
  a.release("a1");
  a.release_hold("r1");
  EXPECT_EQ(a.holder(selector{}, "ws-prod"), "");
  EXPECT_EQ(run_ids(a.place()), ids{"r2"});
  EXPECT_EQ(a.holder(selector{}, "ws-prod"), "r2");
}

// This test ensures a run waiting for its key blocks neither runs of other
// keys nor runs without one, whatever their priority, and that the waiting
// runs of one key go in priority and FIFO order.
TEST(Assigner, WaitingForAKeyBlocksNoOtherRun) {
  assigner a;
  a.upsert_agent(agent("a1", {"deploy"}, {}, 8));
  a.enqueue(keyed("k1-first", 1, "k1"));
  a.enqueue(keyed("k1-second", 2, "k1", "", 9));
  a.enqueue(keyed("k1-third", 3, "k1"));
  a.enqueue(keyed("k2", 4, "k2"));
  a.enqueue(keyed("none", 5, ""));
  EXPECT_EQ(run_ids(a.place()), (ids{"k1-second", "k2", "none"}));
  a.release("a1");
  a.release_hold("k1-second");
  EXPECT_EQ(run_ids(a.place()), ids{"k1-first"});
  a.release("a1");
  a.release_hold("k1-first");
  EXPECT_EQ(run_ids(a.place()), ids{"k1-third"});
}

// This test ensures runs of different scopes never wait for each other's
// keys: a scoped submitter cannot hold up runs it may not see.
TEST(Assigner, KeysOfDifferentScopesAreApart) {
  assigner a;
  a.upsert_agent(agent("a1", {"deploy"}, {{"env", "dev"}}, 4));
  a.enqueue(keyed("scoped", 1, "ws", "env=dev"));
  a.enqueue(keyed("unscoped", 2, "ws"));
  EXPECT_EQ(run_ids(a.place()), (ids{"scoped", "unscoped"}));
  EXPECT_EQ(a.holder(sel("env=dev"), "ws"), "scoped");
  EXPECT_EQ(a.holder(selector{}, "ws"), "unscoped");
}

// This test ensures a key held by a run restored at start-up (not placed
// by the assigner) holds back queued runs until that run lets go of it.
TEST(Assigner, RestoredHolderKeepsTheKey) {
  assigner a;
  a.reserve("a1");
  a.hold("restored", selector{}, "ws");
  a.upsert_agent(agent("a1", {"deploy"}, {}, 4));
  a.enqueue(keyed("queued", 1, "ws"));
  EXPECT_TRUE(a.place().empty());
  a.release("a1");
  a.release_hold("restored");
  EXPECT_EQ(run_ids(a.place()), ids{"queued"});
}

// This test ensures a run that was placed and then declined (the run moved
// on meanwhile) frees its key, so the next run of the key is placed.
TEST(Assigner, DeclinedPlacementFreesTheKey) {
  assigner a;
  a.upsert_agent(agent("a1", {"deploy"}, {}, 4));
  a.enqueue(keyed("declined", 1, "ws"));
  a.enqueue(keyed("next", 2, "ws"));
  EXPECT_EQ(run_ids(a.place()), ids{"declined"});
  a.release("a1");
  a.release_hold("declined");
  EXPECT_EQ(run_ids(a.place()), ids{"next"});
}

// This test ensures explain names the key and the run holding it, after
// the checks that concern the agent itself and before the slot check.
TEST(Assigner, ExplainNamesTheKeyHolder) {
  assigner a;
  a.upsert_agent(agent("a1", {"deploy"}, {}, 1));
  a.upsert_agent(agent("a2", {"other"}, {}, 1));
  a.enqueue(keyed("holder", 1, "ws"));
  EXPECT_EQ(run_ids(a.place()), ids{"holder"});
  a.enqueue(keyed("waiting", 2, "ws"));
  auto why = a.explain("waiting");
  ASSERT_EQ(why.size(), 2u);
  EXPECT_FALSE(why[0].candidate);
  EXPECT_EQ(why[0].reason, "concurrency key ws is held by run holder");
  EXPECT_EQ(why[1].reason, "lacks plan deploy");
  EXPECT_EQ(a.key_holder("waiting"), "holder");
  a.release("a1");
  a.release_hold("holder");
  why = a.explain("waiting");
  EXPECT_TRUE(why[0].candidate) << why[0].reason;
  EXPECT_EQ(a.key_holder("waiting"), "");
}

// This test ensures a free key goes to its first run (priority, then
// submission) only: a later run of the key that another agent could take
// waits behind it. The first free agent of any class with the key took it,
// so a newer deploy could go out before an older one still waiting.
TEST(Assigner, AFreeKeyGoesToItsFirstRunOnly) {
  assigner a;
  a.upsert_agent(agent("a", {"deploy"}, {{"zone", "a"}}, 1));
  a.upsert_agent(agent("b", {"deploy"}, {{"zone", "b"}}, 1));
  a.enqueue(run("busy", 1, "deploy", 0, "zone=a"));
  EXPECT_EQ(run_ids(a.place()), ids{"busy"});
  auto in_zone = [](std::string id, uint64_t seq, const char* zone, int64_t priority) {
    auto r = run(std::move(id), seq, "deploy", priority, zone);
    r.concurrency_key = "ws";
    return r;
  };
  a.enqueue(in_zone("first", 2, "zone=a", 0));
  a.enqueue(in_zone("second", 3, "zone=b", 0));
  EXPECT_TRUE(a.place().empty()) << "second went before first, whose agent is busy";
  EXPECT_EQ(a.holder(selector{}, "ws"), "");
  EXPECT_EQ(a.key_first("second"), "first");
  EXPECT_EQ(a.key_first("first"), "");
  EXPECT_EQ(a.key_holder("second"), "");
  auto why = a.explain("second");
  ASSERT_EQ(why.size(), 2u);
  EXPECT_EQ(why[0].reason, "selector requirement zone=b not met");
  EXPECT_EQ(why[1].reason, "run first goes first with concurrency key ws");
  EXPECT_FALSE(why[1].candidate);

  // A run of a higher priority takes the turn, and goes at once.
  a.enqueue(in_zone("urgent", 4, "zone=b", 5));
  EXPECT_EQ(run_ids(a.place()), ids{"urgent"});
  EXPECT_EQ(a.key_holder("first"), "urgent");
  a.release("b");
  a.release_hold("urgent");
  EXPECT_TRUE(a.place().empty()) << "second went before first again";
  a.release("a");
  EXPECT_EQ(run_ids(a.place()), ids{"first"});
  a.release("a");
  a.release_hold("first");
  EXPECT_EQ(run_ids(a.place()), ids{"second"});
}

// -- against a model -----------------------------------------------------------

// The rules of the header, implemented as plainly as possible: scan every
// queued run in order and every agent, and repeat.
struct model {
  struct agent_state {
    agent_view view;
    int64_t reserved = 0;
    uint64_t last = 0;
  };
  std::map<std::string, agent_state> agents;
  std::map<std::string, queued_run> runs;
  uint64_t count = 0;
  /// Held concurrency key (scope and key) -> the run holding it.
  std::map<std::string, std::string> holds;
  /// Placed run -> its agent and the key it holds ("" for none).
  std::map<std::string, std::pair<std::string, std::string>> placed;

  static std::string hold_of(const queued_run& r) {
    return r.concurrency_key.empty() ? std::string{}
                                     : r.scope.to_string() + '\0' + r.concurrency_key;
  }

  /// The run ends: its agent's slot and its key are free.
  void finish(const std::string& run_id) {
    auto it = placed.find(run_id);
    if (it == placed.end()) return;
    auto& [agent_id, hold] = it->second;
    if (auto a = agents.find(agent_id); a != agents.end() && a->second.reserved > 0)
      --a->second.reserved;
    if (!hold.empty()) holds.erase(hold);
    placed.erase(it);
  }

  static bool eligible(const agent_state& a, const queued_run& r) {
    const auto& v = a.view;
    return v.status == agent_status::online && v.held.empty() &&
           v.plans.count(r.plan) > 0 && r.sel.matches(v.labels) &&
           r.scope.matches(v.labels) &&
           (r.target_agent.empty() || r.target_agent == v.name) &&
           v.capacity - a.reserved > 0;
  }

  std::vector<placement> place() {
    std::vector<const queued_run*> order;
    for (const auto& [id, r] : runs)
      order.push_back(&r);
    std::sort(order.begin(), order.end(), [](const queued_run* x, const queued_run* y) {
      return std::make_tuple(-x->priority, x->seq, x->id) <
             std::make_tuple(-y->priority, y->seq, y->id);
    });
    std::vector<placement> result;
    // Keys whose first run found no agent in this pass: its turn, not theirs.
    std::set<std::string> waiting;
    for (const auto* r : order) {
      auto hold = hold_of(*r);
      if (!hold.empty() && (holds.count(hold) > 0 || waiting.count(hold) > 0)) continue;
      agent_state* best = nullptr;
      for (auto& [id, a] : agents) {
        if (!eligible(a, *r)) continue;
        auto key = [](const agent_state& s) {
          return std::make_tuple(-(s.view.capacity - s.reserved), s.last, s.view.id);
        };
        if (!best || key(a) < key(*best)) best = &a;
      }
      if (!best) {
        if (!hold.empty()) waiting.insert(hold);
        continue;
      }
      ++best->reserved;
      best->last = ++count;
      result.push_back(placement{r->id, best->view.id});
      if (!hold.empty()) holds[hold] = r->id;
      placed[r->id] = {best->view.id, hold};
    }
    for (const auto& p : result)
      runs.erase(p.run_id);
    return result;
  }
};

// The brute-force comparison below, for an assigner that looks at
// `rank_step` agents per step (0: the default). Before each place() it
// finishes the ranking, so the agents that changed while a class was ranking
// are checked too.
void match_brute_force_model(size_t rank_step);

// This test ensures the indexed assigner places exactly like a brute-force
// model of the rules over a long random sequence of operations.
TEST(Assigner, MatchesBruteForceModel) {
  match_brute_force_model(0);
}

// This test ensures a class that ranks its agents a few at a time, while
// agents come, go and change slots in between, ends up exactly as one that
// ranked them at once.
TEST(Assigner, RankingInStepsMatchesBruteForceModel) {
  match_brute_force_model(1);
  match_brute_force_model(2);
}

void match_brute_force_model(size_t rank_step) {
  std::mt19937 rng{20240611};
  auto pick = [&](int n) { return static_cast<int>(rng() % static_cast<unsigned>(n)); };
  const std::vector<std::string> selectors = {
      "", "env=prod", "env!=prod", "zone in (a,b)", "gpu", "!gpu,env=dev"};
  const std::vector<std::string> scopes = {"", "env=prod", "zone=c"};
  const std::vector<std::string> plans = {"p0", "p1", "p2"};
  const std::vector<std::string> keys = {"", "", "k1", "k2"};
  const std::vector<agent_status> statuses = {
      agent_status::online, agent_status::online, agent_status::online,
      agent_status::draining, agent_status::offline};
  auto random_agent = [&](int i) {
    label_map labels;
    labels["env"] = pick(2) ? "prod" : "dev";
    labels["zone"] = std::string(1, static_cast<char>('a' + pick(3)));
    if (pick(3) == 0) labels["gpu"] = "1";
    std::set<std::string> ps;
    for (const auto& p : plans)
      if (pick(2)) ps.insert(p);
    return agent("a" + std::to_string(i), ps, labels, pick(4),
                 statuses[static_cast<size_t>(pick(5))]);
  };
  assigner a{rank_step == 0 ? assigner::default_rank_step : rank_step};
  model m;
  uint64_t seq = 0;
  size_t placed = 0;
  for (int step = 0; step < 4000; ++step) {
    switch (pick(11)) {
    case 0:
    case 1:
    case 2:
    case 3: {
      auto id = "r" + std::to_string(pick(300));
      auto target = pick(8) == 0 ? "name-a" + std::to_string(pick(12)) : std::string{};
      auto r = run(id, ++seq, plans[static_cast<size_t>(pick(3))], pick(3),
                   selectors[static_cast<size_t>(pick(6))],
                   scopes[static_cast<size_t>(pick(3))], target);
      r.concurrency_key = keys[static_cast<size_t>(pick(4))];
      if (m.placed.count(id) > 0) {
        // Requeued: it lets go of its slot and key first, as a run actor does.
        a.release(m.placed[id].first);
        a.release_hold(id);
        m.finish(id);
      }
      m.runs.erase(id);
      m.runs.emplace(id, r);
      a.enqueue(r);
      break;
    }
    case 4: {
      auto v = random_agent(pick(12));
      auto& s = m.agents[v.id];
      s.view = v;
      a.upsert_agent(v);
      break;
    }
    case 5: {
      auto id = "r" + std::to_string(pick(300));
      EXPECT_EQ(a.dequeue(id), m.runs.erase(id) > 0);
      break;
    }
    case 6: {
      auto id = "a" + std::to_string(pick(12));
      if (auto it = m.agents.find(id); it != m.agents.end() && it->second.reserved > 0)
        --it->second.reserved;
      a.release(id);
      break;
    }
    case 10: {
      // A placed run ends.
      if (m.placed.empty()) break;
      auto it = m.placed.begin();
      std::advance(it, pick(static_cast<int>(m.placed.size())));
      auto id = it->first;
      a.release(it->second.first);
      a.release_hold(id);
      m.finish(id);
      break;
    }
    case 7: {
      auto id = "a" + std::to_string(pick(12));
      if (pick(4) == 0) {
        m.agents.erase(id);
        a.remove_agent(id);
      } else if (pick(3) == 0) {
        // Held back, or let go (an unknown agent is left alone).
        auto why = pick(2) ? std::string{"held back"} : std::string{};
        if (auto it = m.agents.find(id); it != m.agents.end()) it->second.view.held = why;
        a.hold_back(id, why);
      }
      break;
    }
    default: {
      while (a.ranking())
        a.rank_more();
      auto want = m.place();
      auto got = a.place();
      ASSERT_EQ(as_pairs(got), as_pairs(want)) << "step " << step;
      placed += got.size();
    }
    }
    ASSERT_EQ(a.queue_size(), m.runs.size()) << "step " << step;
    for (const auto& [id, s] : m.agents)
      ASSERT_EQ(a.reserved(id), s.reserved) << id << " at step " << step;
  }
  // The sequence exercised placements, not just refusals.
  EXPECT_GT(placed, 100u);
}

// -- ranking in steps -----------------------------------------------------------

// This test ensures the first run of a new kind goes to the best agent of the
// plan before its class has looked at every agent.
TEST(Assigner, NewClassPlacesToTheBestAgentBeforeRankingEnds) {
  assigner a{2};
  for (int i = 1; i <= 9; ++i)
    a.upsert_agent(agent("a" + std::to_string(i), {"build"}, {}, i));
  a.enqueue(run("r1", 1, "build"));
  EXPECT_TRUE(a.ranking());
  EXPECT_EQ(as_pairs(a.place()), (pairs{{"r1", "a9"}}));
  while (a.ranking())
    a.rank_more();
  EXPECT_FALSE(a.ranking());
}

// This test ensures a run whose eligible agents come late in the walk waits
// for the steps that reach them, and none of the agents walked first gets it.
TEST(Assigner, NewClassFindsEligibleAgentsInLaterSteps) {
  assigner a{2};
  for (int i = 1; i <= 6; ++i)
    a.upsert_agent(
        agent("a" + std::to_string(i), {"build"}, {{"env", i == 1 ? "prod" : "dev"}}, i));
  a.enqueue(run("r1", 1, "build", 0, "env=prod"));
  EXPECT_TRUE(a.place().empty());
  a.rank_more(); // a4, a3
  EXPECT_TRUE(a.place().empty());
  // The agent the walk stopped at goes; the walk goes on after it.
  a.remove_agent("a3");
  a.rank_more(); // a2, a1
  EXPECT_EQ(as_pairs(a.place()), (pairs{{"r1", "a1"}}));
  EXPECT_FALSE(a.ranking());
}

// This test ensures an agent that moves from ahead of a ranking class's walk
// to behind it (its slot freed) is not skipped.
TEST(Assigner, AgentOvertakingTheWalkIsRanked) {
  assigner a{1};
  a.upsert_agent(agent("a1", {"build"}, {}, 3));
  a.upsert_agent(agent("a2", {"build"}, {{"env", "prod"}}, 2));
  a.upsert_agent(agent("a3", {"build"}, {{"env", "prod"}}, 1));
  a.reserve("a2");
  a.reserve("a2"); // a2: 0 free, last in the plan
  a.enqueue(run("r1", 1, "build", 0, "env=prod"));
  a.rank_more(); // looked at a1, a3: a3 takes r1 at once
  EXPECT_EQ(as_pairs(a.place()), (pairs{{"r1", "a3"}}));
  a.release("a2"); // a2: 1 free, ahead of the walk's cursor now
  a.release("a3");
  a.enqueue(run("r2", 2, "build", 0, "env=prod"));
  a.reserve("a3"); // only a2 is free
  EXPECT_TRUE(a.ranking());
  EXPECT_EQ(as_pairs(a.place()), (pairs{{"r2", "a2"}}));
}

// -- scale --------------------------------------------------------------------

// This test ensures 10,000 agents and 100,000 runs over 50 plans are placed
// in reasonable time (not timed), respecting capacity and eligibility.
TEST(Assigner, TenThousandAgentsHundredThousandRuns) {
  constexpr int agent_count = 10'000;
  constexpr int run_count = 100'000;
  constexpr int plan_count = 50;
  std::mt19937 rng{7};
  auto pick = [&](int n) { return static_cast<int>(rng() % static_cast<unsigned>(n)); };
  const std::vector<std::string> envs = {"dev", "prod", "staging"};
  const std::vector<std::string> selectors = {"", "env=prod", "zone in (a,b)",
                                              "env!=dev,zone=c"};
  const std::vector<std::string> scopes = {"", "env=prod"};

  assigner a;
  std::unordered_map<std::string, agent_view> agents;
  for (int i = 0; i < agent_count; ++i) {
    std::set<std::string> ps;
    for (int k = 0, n = 1 + pick(3); k < n; ++k)
      ps.insert("p" + std::to_string(pick(plan_count)));
    auto v = agent("a" + std::to_string(i), ps,
                   {{"env", envs[static_cast<size_t>(pick(3))]},
                    {"zone", std::string(1, static_cast<char>('a' + pick(4)))}},
                   1 + pick(4));
    agents.emplace(v.id, v);
    a.upsert_agent(std::move(v));
  }
  std::unordered_map<std::string, queued_run> runs;
  std::vector<placement> in_flight;
  std::set<std::string> placed;
  auto check = [&](const std::vector<placement>& ps) {
    for (const auto& p : ps) {
      const auto& r = runs.at(p.run_id);
      const auto& v = agents.at(p.agent_id);
      ASSERT_TRUE(v.plans.count(r.plan) && r.sel.matches(v.labels) &&
                  r.scope.matches(v.labels) &&
                  (r.target_agent.empty() || r.target_agent == v.name))
          << p.run_id << " -> " << p.agent_id;
      ASSERT_LE(a.reserved(p.agent_id), v.capacity) << p.agent_id;
      ASSERT_TRUE(placed.insert(p.run_id).second) << p.run_id << " placed twice";
    }
    in_flight.insert(in_flight.end(), ps.begin(), ps.end());
  };
  for (int i = 0; i < run_count; ++i) {
    auto target = pick(100) == 0 ? "name-a" + std::to_string(pick(agent_count)) : "";
    auto r = run("r" + std::to_string(i), static_cast<uint64_t>(i + 1),
                 "p" + std::to_string(pick(plan_count)), pick(4),
                 selectors[static_cast<size_t>(pick(4))],
                 scopes[static_cast<size_t>(pick(2))], target);
    runs.emplace(r.id, r);
    a.enqueue(std::move(r));
    // Like the routine, which tries to place on every submit.
    check(a.place());
  }
  // Drain: finish every run in flight, place again, until nothing moves.
  for (;;) {
    for (const auto& p : in_flight)
      a.release(p.agent_id);
    in_flight.clear();
    auto ps = a.place();
    if (ps.empty()) break;
    check(ps);
  }
  EXPECT_EQ(placed.size() + a.queue_size(), static_cast<size_t>(run_count));
  EXPECT_GT(placed.size(), static_cast<size_t>(run_count) * 9 / 10);
  // With every slot free, whatever is still queued has no eligible agent.
  size_t sampled = 0;
  for (const auto& [id, r] : runs) {
    if (!a.queued(id) || ++sampled > 20) continue;
    for (const auto& c : a.explain(id))
      ASSERT_FALSE(c.candidate) << id << " could go to " << c.agent_id;
  }
}

} // namespace
} // namespace polymesh
