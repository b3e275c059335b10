// A second C++ plugin, loaded next to the example one: plan `goodbye`
// returns "Goodbye, <payload>!".
#include "polymesh/sdk/plugin.hpp"

namespace {

using namespace polymesh::sdk;

void register_plans(plugin_registrar& r) {
  r.add("goodbye", "Says goodbye", [](const nlohmann::json&, const std::string&) {
    return std::make_shared<function_plan>([](run_context& ctx) {
      return plan_result::success("Goodbye, " + ctx.payload + "!");
    });
  });
}

} // namespace

POLYMESH_PLUGIN(register_plans)
