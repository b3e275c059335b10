#include "plans/noop/noop_plan.hpp"

#include "plans/common/plan_env.hpp"
#include "polymesh/sdk/settings.hpp"

namespace polymesh::plans {

std::shared_ptr<sdk::plan> make_noop_plan(const nlohmann::json& settings,
                                          const std::string& key) {
  sdk::settings_reader{settings, key}.finish();
  return std::make_shared<sdk::function_plan>([](sdk::run_context& ctx) {
    if (auto why = unknown_param(ctx.params, {}, "the noop plan takes no params");
        !why.empty())
      return sdk::plan_result::failure(why);
    return sdk::plan_result::success();
  });
}

} // namespace polymesh::plans
