// Embedded mode: an agent running as a thread inside another program. The
// host program defines its own plan in code (no YAML, no plugin), starts the
// agent next to its own work, and shuts it down when it is done.
//
//   polymesh_embedded_example --mesh http://127.0.0.1:7700 --token-file reg.token
//       --name embedded-1 --label env=dev --runs 1
//
// Plan `greet` returns "embedded says: <payload>"; the built-in `echo` plan
// is offered too, built from the catalog as mesh-agent builds it. With
// `--runs N` the program drains the agent after N runs finished and exits 0;
// otherwise it runs until SIGINT/SIGTERM. In this tree it is a target of
// agent-sdk/CMakeLists.txt; built against an installed polymesh, see
// agent-sdk/examples/embedded-out-of-tree/CMakeLists.txt.
#include "polymesh/plans/builtin_plans.hpp"
#include "polymesh/sdk/agent.hpp"

#include <CLI/CLI.hpp>
#include <csignal>
#include <fstream>
#include <iostream>
#include <sstream>
#include <thread>

using namespace polymesh::sdk;

namespace {

std::atomic<bool> interrupted{false};

void on_signal(int) {
  interrupted = true;
}

} // namespace

int main(int argc, char** argv) {
  CLI::App app{"An agent embedded in another program"};
  std::string mesh;
  std::string token_file;
  std::string name = "embedded";
  std::vector<std::string> labels;
  uint64_t runs = 0;
  app.add_option("--mesh", mesh, "Mesh URL")->required();
  app.add_option("--token-file", token_file, "File holding a registration token")
      ->required();
  app.add_option("--name", name, "Agent name");
  app.add_option("--label", labels, "KEY=VALUE (repeatable)");
  app.add_option("--runs", runs,
                 "Exit after this many runs finished (0: until a signal)");
  CLI11_PARSE(app, argc, argv);

  agent_config cfg;
  cfg.mesh_url = mesh;
  std::ifstream in{token_file};
  std::stringstream ss;
  ss << in.rdbuf();
  cfg.registration_token = ss.str();
  while (!cfg.registration_token.empty() && std::isspace(cfg.registration_token.back()))
    cfg.registration_token.pop_back();
  cfg.name = name;
  cfg.capacity = 2;
  for (auto& kv : labels) {
    auto eq = kv.find('=');
    if (eq == std::string::npos) {
      std::cerr << "--label: expected KEY=VALUE, got '" << kv << "'" << std::endl;
      return 2;
    }
    cfg.labels[kv.substr(0, eq)] = kv.substr(eq + 1);
  }
  if (auto err = cfg.validate(); !err.empty()) {
    std::cerr << "config: " << err << std::endl;
    return 2;
  }

  // The host's own plan, written in code.
  plan_set plans;
  plans["greet"] = std::make_shared<function_plan>([](run_context& ctx) {
    auto text = "embedded says: " + ctx.payload;
    ctx.log->line(text);
    return plan_result::success(text);
  });
  // A built-in plan, with the settings its `plans.echo` config section holds.
  plan_catalog catalog;
  polymesh::plans::add_builtin_plans(catalog);
  plans["echo"] = catalog.find("echo")->factory(nlohmann::json::object(), "plans.echo");

  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
  agent a{cfg, plans};
  a.start();
  std::cout << "host program: agent thread started" << std::endl;
  // The host program would do its own work here; it watches the agent.
  while (!interrupted && !a.wait_for(std::chrono::milliseconds{100})) {
    if (runs > 0 && a.stats().finished >= runs) break;
  }
  a.drain();
  a.wait();
  auto s = a.stats();
  std::cout << "host program: agent stopped after " << s.finished << " runs" << std::endl;
  if (!s.fatal_error.empty()) {
    std::cerr << s.fatal_error << std::endl;
    return 1;
  }
  return 0;
}
