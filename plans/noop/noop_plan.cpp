#include "plans/noop/noop_plan.hpp"

#include "polymesh/sdk/settings.hpp"

namespace polymesh::plans {

std::shared_ptr<sdk::plan> make_noop_plan(const nlohmann::json& settings,
                                          const std::string& key) {
  sdk::settings_reader{settings, key}.finish();
  return std::make_shared<sdk::function_plan>(
      [](sdk::run_context&) { return sdk::plan_result::success(); });
}

} // namespace polymesh::plans
