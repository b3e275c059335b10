#include "plans/noop/noop_plan.hpp"
#include "polymesh/sdk/settings.hpp"
#include "polymesh/sdk/testkit.hpp"

#include <gtest/gtest.h>

using namespace polymesh;

// This test ensures noop succeeds at once with an empty result.
TEST(noop_plan, succeeds_with_empty_result) {
  auto plan = plans::make_noop_plan(nullptr, "plans.noop");
  sdk::testkit::scratch_run run;
  auto r = plan->run(run.ctx);
  EXPECT_TRUE(r.ok);
  EXPECT_EQ(r.result, "");
}

// This test ensures noop refuses settings it does not know, naming the key.
TEST(noop_plan, refuses_unknown_settings) {
  try {
    (void)plans::make_noop_plan(nlohmann::json{{"speed", 3}}, "plans.noop");
    FAIL() << "expected a config_error";
  } catch (const sdk::config_error& e) {
    EXPECT_EQ(e.key(), "plans.noop.speed");
  }
}

// This test ensures noop refuses params, naming the key: it took any, so a
// run submitted to the wrong plan succeeded without a sign.
TEST(noop_plan, refuses_params) {
  auto plan = plans::make_noop_plan(nullptr, "plans.noop");
  sdk::testkit::scratch_run run;
  run.ctx.params = {{"seconds", 5}};
  auto r = plan->run(run.ctx);
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.error, "params.seconds: unknown key (the noop plan takes no params)");
  run.ctx.params = nlohmann::json::object();
  EXPECT_TRUE(plan->run(run.ctx).ok);
}
