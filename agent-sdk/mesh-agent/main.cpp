// mesh-agent: the agent daemon. Reads its YAML config, loads plugins, builds
// the enabled plans, and runs the SDK's `agent` until a signal:
// SIGTERM/SIGINT/SIGHUP drain (finish running runs up to the drain deadline, cancel
// the rest, deregister, exit 0); a second signal cancels everything at once.
//
// Exit status: 0 after a drain, 1 when the mesh refused the agent (e.g. a
// bad registration token) or another agent took its name, 2 for a config or
// plugin error.
#include "mesh/domain/log.hpp"
#include "polymesh/plans/builtin_plans.hpp"
#include "polymesh/sdk/agent.hpp"
#include "polymesh/sdk/agent_yaml.hpp"
#include "polymesh/sdk/plugin_loader.hpp"

#include <CLI/CLI.hpp>
#include <csignal>
#include <fstream>
#include <iostream>
#include <pthread.h>
#include <sstream>
#include <sys/prctl.h>
#include <thread>

using namespace polymesh;

namespace {

int config_failure(const std::string& file, const std::string& message) {
  std::cerr << "mesh-agent: " << file << ": " << one_line(message) << std::endl;
  return 2;
}

/// `file` with the line of `key` in it (`agent.yaml:12`), as meshd names
/// a setting; `file` alone when the key is not found there.
std::string at_key(const std::string& file, const std::string& key) {
  if (key.empty()) return file;
  std::ifstream in{file};
  std::stringstream text;
  text << in.rdbuf();
  auto line = sdk::yaml_key_line(text.str(), key);
  return line ? file + ":" + std::to_string(*line) : file;
}

} // namespace

int main(int argc, char** argv) {
  CLI::App app{"mesh-agent — runs polymesh plans on this machine"};
  std::string config_file;
  bool check_only = false;
  bool list_plans = false;
  auto* config_opt = app.add_option("-c,--config", config_file,
                                    "YAML config (see " POLYMESH_EXAMPLES_DIR
                                    "/agent.example.yaml, config/ in the source)");
  app.add_flag("--check", check_only,
               "Validate the config, load plugins and plans, then exit");
  app.add_flag("--list-plans", list_plans,
               "Print the plans this binary can offer and exit");
  app.set_version_flag("--version", std::string{"mesh-agent "} + POLYMESH_VERSION);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help and --version exit 0; a usage error is a config error (2).
    return app.exit(e) == 0 ? 0 : 2;
  }
  if (config_opt->count() == 0 && !list_plans) {
    std::cerr << "mesh-agent: --config is required (see --help)" << std::endl;
    return 2;
  }

  // Without --config (only with --list-plans) the built-in plans are listed.
  sdk::agent_file_config cfg;
  if (config_opt->count() > 0) {
    try {
      cfg = sdk::load_agent_yaml(config_file);
    } catch (const sdk::config_error& e) {
      return config_failure(at_key(config_file, e.key()), e.what());
    }
  }
  log_level level = log_level::info;
  if (parse_log_level(cfg.log_level, level)) set_log_level(level);

  sdk::plan_catalog catalog;
  plans::add_builtin_plans(catalog);
  for (auto& plugin : cfg.plugins) {
    std::vector<std::string> added;
    if (auto err = sdk::load_plugin(plugin.path, catalog, &added, plugin.isolation,
                                    plugin.limits);
        !err.empty())
      return config_failure(config_file, "plugins: " + err);
    std::string names;
    for (auto& n : added)
      names += (names.empty() ? "" : ", ") + n;
    log(log_level::info, "plugin " + plugin.path + " loaded (isolation " +
                             sdk::to_string(plugin.isolation) + "): " + names);
  }
  if (list_plans) {
    for (auto& name : catalog.names()) {
      auto* e = catalog.find(name);
      std::cout << name << "\t" << e->origin << "\t" << e->description << "\n";
    }
    return 0;
  }
  sdk::plan_set plans;
  std::vector<std::string> warnings;
  try {
    plans = sdk::make_plans(catalog, cfg.plans, &warnings);
    warnings.insert(warnings.begin(), cfg.warnings.begin(), cfg.warnings.end());
  } catch (const sdk::config_error& e) {
    return config_failure(at_key(config_file, e.key()), e.what());
  }
  cfg.agent.version = POLYMESH_VERSION;
  if (auto err = cfg.agent.prepare_work_root(); !err.empty())
    return config_failure(config_file, "agent." + err);
  if (check_only) {
    // The warnings go with the verdict, whatever `log.level` hides.
    std::cout << "config OK: agent '" << cfg.agent.name << "', " << plans.size()
              << (plans.size() == 1 ? " plan" : " plans");
    if (!warnings.empty())
      std::cout << ", " << warnings.size()
                << (warnings.size() == 1 ? " warning:" : " warnings:");
    std::cout << "\n";
    for (auto& w : warnings)
      std::cout << "  " << one_line(w) << "\n"; // escaped as the log writes it
    std::cout << std::flush;
    return 0;
  }
  for (auto& w : warnings)
    log(log_level::warn, w);

  // Plans run as this user: keep them out of the agent's memory and
  // /proc/<pid>/environ, where its tokens are (no effect when run as root).
  ::prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);

  // Signals go to one waiting thread, never to a worker or a plan's child
  // (children get a clean signal mask in `run_process`).
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  // A closed terminal or ssh session: drain too, rather than die and leave
  // the runs' processes behind.
  sigaddset(&signals, SIGHUP);
  sigaddset(&signals, SIGUSR1);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  std::signal(SIGPIPE, SIG_IGN);

  sdk::agent agent{cfg.agent, std::move(plans)};
  agent.start();
  std::thread waiter{[&] {
    int seen = 0;
    for (;;) {
      int sig = 0;
      if (sigwait(&signals, &sig) != 0 || sig == SIGUSR1)
        return; // the agent stopped on its own
      const char* name = sig == SIGTERM ? "SIGTERM" : sig == SIGINT ? "SIGINT" : "SIGHUP";
      if (++seen == 1) {
        log(log_level::info, std::string{"received "} + name +
                                 ": draining (a second signal cancels running runs)");
        agent.drain();
      } else {
        log(log_level::info,
            std::string{"received "} + name + ", a second signal: canceling now");
        agent.cancel_all();
      }
    }
  }};
  agent.wait();
  pthread_kill(waiter.native_handle(), SIGUSR1);
  waiter.join();
  auto stats = agent.stats();
  if (!stats.fatal_error.empty()) {
    std::cerr << "mesh-agent: " << stats.fatal_error << std::endl;
    return 1;
  }
  log(log_level::info, "stopped");
  return 0;
}
