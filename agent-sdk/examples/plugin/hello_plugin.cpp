// An example plan plugin: a shared library mesh-agent loads at runtime
// (`plugins: [/path/to/polymesh_hello_plugin.so]`, then `plans: {hello: {}}`).
// docs/plugins.md walks through it line by line.
//
// Plan `hello`: logs and returns "<greeting>, <payload>!". Settings:
// `greeting` (default "Hello"). Params: `wait_seconds` (number, default 0)
// waits first, returning early when the run is canceled.
#include "polymesh/sdk/plugin.hpp"

namespace {

using namespace polymesh::sdk;

class hello_plan final : public plan {
public:
  explicit hello_plan(std::string greeting)
      : greeting_(std::move(greeting)) {}

  plan_result run(run_context& ctx) override {
    double wait = ctx.params.value("wait_seconds", 0.0);
    if (wait > 0 && ctx.cancel->wait_for(
                        std::chrono::milliseconds{static_cast<int64_t>(wait * 1000)}))
      return plan_result::failure("canceled while waiting");
    auto text = greeting_ + ", " + (ctx.payload.empty() ? "world" : ctx.payload) + "!";
    ctx.log->line(text);
    return plan_result::success(text);
  }

private:
  std::string greeting_;
};

void register_plans(plugin_registrar& r) {
  r.add("hello", "Greets the payload",
        [](const nlohmann::json& settings, const std::string& key) {
          settings_reader in{settings, key};
          auto greeting = in.string("greeting", "Hello");
          in.finish();
          return std::make_shared<hello_plan>(greeting);
        });
}

} // namespace

POLYMESH_PLUGIN(register_plans)
