#include "plans/echo/echo_plan.hpp"
#include "polymesh/sdk/testkit.hpp"

#include <gtest/gtest.h>

using namespace polymesh;

// This test ensures echo logs the payload to stdout and returns it.
TEST(echo_plan, returns_and_logs_payload) {
  auto plan = plans::make_echo_plan(nullptr, "plans.echo");
  sdk::testkit::scratch_run run;
  run.ctx.payload = "hello mesh\n";
  auto r = plan->run(run.ctx);
  EXPECT_TRUE(r.ok);
  EXPECT_EQ(r.result, "hello mesh\n");
  EXPECT_EQ(run.log.out(), "hello mesh\n");
}

// This test ensures params.exit_code turns the run into an error with that code.
TEST(echo_plan, exit_code_param_fails_with_code) {
  auto plan = plans::make_echo_plan(nullptr, "plans.echo");
  sdk::testkit::scratch_run run;
  run.ctx.params = {{"exit_code", 3}};
  auto r = plan->run(run.ctx);
  EXPECT_FALSE(r.ok);
  ASSERT_TRUE(r.exit_code.has_value());
  EXPECT_EQ(*r.exit_code, 3);
}

// This test ensures an exit_code sent as a string (what `meshctl --param
// exit_code=3` sends) says how to send a number.
TEST(echo_plan, a_string_exit_code_says_how_to_send_a_number) {
  auto plan = plans::make_echo_plan(nullptr, "plans.echo");
  sdk::testkit::scratch_run run;
  run.ctx.params = {{"exit_code", "3"}};
  auto r = plan->run(run.ctx);
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.error, "params.exit_code: expected an integer in 0..255, got a string '3' "
                     "(meshctl: --param exit_code:=3)");
}

// This test ensures unknown params are an error naming the field.
TEST(echo_plan, unknown_param_is_an_error) {
  auto plan = plans::make_echo_plan(nullptr, "plans.echo");
  sdk::testkit::scratch_run run;
  run.ctx.params = {{"loud", true}};
  auto r = plan->run(run.ctx);
  EXPECT_FALSE(r.ok);
  EXPECT_NE(r.error.find("params.loud"), std::string::npos) << r.error;
}
