// A second C++ plugin, loaded next to the example one: plan `goodbye`
// returns "Goodbye, <payload>!". Its optional setting `program` names a file
// it would run; one that is not an executable file here is a warning.
#include "polymesh/sdk/plugin.hpp"

#include <unistd.h>

namespace {

using namespace polymesh::sdk;

void register_plans(plugin_registrar& r) {
  r.add("goodbye", "Says goodbye",
        [](const nlohmann::json& json, const std::string& key) {
          settings_reader settings{json, key};
          auto program = settings.string("program");
          settings.finish();
          if (!program.empty() && ::access(program.c_str(), X_OK) != 0)
            config_warning(key + ".program",
                           "'" + program + "' is not an executable file here");
          return std::make_shared<function_plan>([](run_context& ctx) {
            return plan_result::success("Goodbye, " + ctx.payload + "!");
          });
        });
}

} // namespace

POLYMESH_PLUGIN(register_plans)
