// A second C++ plugin, loaded next to the example one: plan `goodbye`
// returns "Goodbye, <payload>!". Its optional setting `program` names a file
// it would run; one that is not an executable file here is a warning.
// `warnings: N` raises N more warnings, to fill the ABI's buffer.
#include "polymesh/sdk/plugin.hpp"

#include <unistd.h>

namespace {

using namespace polymesh::sdk;

void register_plans(plugin_registrar& r) {
  r.add("goodbye", "Says goodbye",
        [](const nlohmann::json& json, const std::string& key) {
          settings_reader settings{json, key};
          auto program = settings.string("program");
          auto more = settings.integer("warnings", 0, 0, 1000);
          settings.finish();
          if (!program.empty() && ::access(program.c_str(), X_OK) != 0)
            config_warning(key + ".program",
                           "'" + program + "' is not an executable file here");
          for (int64_t i = 1; i <= more; ++i)
            config_warning(key + ".warnings", "warning " + std::to_string(i) + " of " +
                                                  std::to_string(more) +
                                                  ", as many as were asked for");
          return std::make_shared<function_plan>([](run_context& ctx) {
            return plan_result::success("Goodbye, " + ctx.payload + "!");
          });
        });
}

} // namespace

POLYMESH_PLUGIN(register_plans)
