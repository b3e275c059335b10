#include "polymesh/plans/builtin_plans.hpp"

#include "plans/echo/echo_plan.hpp"
#include "plans/noop/noop_plan.hpp"
#include "plans/script/script_plan.hpp"
#include "plans/shell/shell_plan.hpp"
#include "plans/sleep/sleep_plan.hpp"
#include "plans/terraform/terraform_plan.hpp"

namespace polymesh::plans {

void add_builtin_plans(sdk::plan_catalog& catalog) {
  auto add = [&](const char* name, const char* doc, sdk::plan_factory f) {
    (void)catalog.add(name, doc, std::move(f), "built-in");
  };
  add("noop", "Succeeds at once", make_noop_plan);
  add("echo", "Logs the payload and returns it", make_echo_plan);
  add("sleep", "Waits params.seconds, returns early when canceled", make_sleep_plan);
  add("shell", "Runs an allowed command line (payload) without a shell", make_shell_plan);
  add("script", "Runs a script from a configured directory", make_script_plan);
  add("terraform", "terraform init/plan/apply in an allowed workspace",
      make_terraform_plan);
}

} // namespace polymesh::plans
