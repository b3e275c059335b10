#include "plans/sleep/sleep_plan.hpp"
#include "polymesh/sdk/testkit.hpp"

#include <gtest/gtest.h>
#include <thread>

using namespace polymesh;

// This test ensures a short sleep succeeds.
TEST(sleep_plan, short_sleep_succeeds) {
  auto plan = plans::make_sleep_plan(nullptr, "plans.sleep");
  sdk::testkit::scratch_run run;
  run.ctx.params = {{"seconds", 0.01}};
  auto r = plan->run(run.ctx);
  EXPECT_TRUE(r.ok) << r.error;
}

// This test ensures a cancel ends a long sleep early with an error.
TEST(sleep_plan, cancel_interrupts) {
  auto plan = plans::make_sleep_plan(nullptr, "plans.sleep");
  sdk::testkit::scratch_run run;
  run.ctx.params = {{"seconds", 600}};
  run.cancel.cancel(sdk::cancel_reason::canceled_by_user);
  auto r = plan->run(run.ctx);
  EXPECT_FALSE(r.ok);
  EXPECT_NE(r.error.find("canceled_by_user"), std::string::npos);
}

// This test ensures the deadline of the token ends the sleep as a timeout.
TEST(sleep_plan, deadline_interrupts_as_timeout) {
  auto plan = plans::make_sleep_plan(nullptr, "plans.sleep");
  sdk::testkit::scratch_run run{sdk::cancel_token::clock_type::now()};
  run.ctx.params = {{"seconds", 600}};
  auto r = plan->run(run.ctx);
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(run.cancel.reason(), sdk::cancel_reason::timeout);
}

// This test ensures a `seconds` of the wrong type says what it got, and how
// meshctl sends a number (`--param seconds=5` sends the string "5").
TEST(sleep_plan, a_seconds_of_the_wrong_type_says_what_it_got) {
  auto plan = plans::make_sleep_plan(nlohmann::json::object(), "plans.sleep");
  sdk::testkit::scratch_run run;
  for (auto [value, says] :
       {std::pair{nlohmann::json("5"),
                  ", got a string '5' (meshctl: --param seconds:=5)"},
        std::pair{nlohmann::json(-2), ", got -2"},
        std::pair{nlohmann::json::array(), ", got a list"}}) {
    run.ctx.params = {{"seconds", value}};
    auto r = plan->run(run.ctx);
    EXPECT_FALSE(r.ok);
    EXPECT_EQ(r.error,
              std::string{"params.seconds: expected a non-negative number"} + says);
  }
  // An unknown key is named as every plan names it (`params.KEY: unknown key`).
  run.ctx.params = {{"secs", 1}};
  EXPECT_EQ(plan->run(run.ctx).error, "params.secs: unknown key (expected seconds)");
}

// This test ensures sleeps beyond the configured max are refused.
TEST(sleep_plan, max_is_enforced) {
  auto plan = plans::make_sleep_plan(nlohmann::json{{"max", "1s"}}, "plans.sleep");
  sdk::testkit::scratch_run run;
  run.ctx.params = {{"seconds", 5}};
  auto r = plan->run(run.ctx);
  EXPECT_FALSE(r.ok);
  EXPECT_NE(r.error.find("plans.sleep.max"), std::string::npos);
  // Values too large for milliseconds in 64 bits used to wrap negative and
  // "succeed" at once.
  for (double huge : {1e16, 1e30}) {
    run.ctx.params = {{"seconds", huge}};
    auto big = plan->run(run.ctx);
    EXPECT_FALSE(big.ok) << huge;
    EXPECT_NE(big.error.find("plans.sleep.max"), std::string::npos) << big.error;
  }
}

// This test ensures the refusal states a max below or between whole seconds
// as it is: `500ms` was "at most 0 seconds", `1500ms` "at most 1 seconds".
TEST(sleep_plan, a_max_in_milliseconds_is_stated_as_it_is) {
  for (auto [max, shown] : {std::pair{"500ms", "0.5"},
                            {"1500ms", "1.5"},
                            {"1250ms", "1.25"},
                            {"2s", "2"},
                            {"1001ms", "1.001"}}) {
    auto plan = plans::make_sleep_plan(nlohmann::json{{"max", max}}, "plans.sleep");
    sdk::testkit::scratch_run run;
    run.ctx.params = {{"seconds", 3}};
    auto r = plan->run(run.ctx);
    EXPECT_EQ(r.error, std::string{"params.seconds: at most "} + shown +
                           " seconds are allowed (plans.sleep.max)");
  }
}
