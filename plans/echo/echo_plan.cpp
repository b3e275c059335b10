#include "plans/echo/echo_plan.hpp"

#include "plans/common/plan_env.hpp"
#include "polymesh/sdk/settings.hpp"

namespace polymesh::plans {

std::shared_ptr<sdk::plan> make_echo_plan(const nlohmann::json& settings,
                                          const std::string& key) {
  sdk::settings_reader{settings, key}.finish();
  return std::make_shared<sdk::function_plan>([](sdk::run_context& ctx) {
    int64_t code = 0;
    if (auto it = ctx.params.find("exit_code"); it != ctx.params.end() && it->is_string())
      return sdk::plan_result::failure("params.exit_code: expected an integer in 0..255" +
                                       got_instead("exit_code", *it));
    try {
      sdk::settings_reader params{ctx.params, "params"};
      code = params.integer("exit_code", 0, 0, 255);
      params.finish();
    } catch (const sdk::config_error& e) {
      return sdk::plan_result::failure(e.what());
    }
    ctx.log->write(sdk::log_stream::out, ctx.payload);
    if (code != 0)
      return sdk::plan_result::failure("exit_code " + std::to_string(code) + " requested",
                                       code, ctx.payload);
    return sdk::plan_result::success(ctx.payload, 0);
  });
}

} // namespace polymesh::plans
