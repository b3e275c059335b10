// Loads plan plugins (shared libraries) into a `plan_catalog`.
//
// The library is opened with dlopen, its `polymesh_plugin_init` entry point
// is called with this agent's ABI version, and the plans it registers are
// added to the catalog. A missing file, a missing entry point, a different
// ABI version or a plan name already taken is refused with an error naming
// the file. Plugins stay loaded for the life of the process. By default each
// run of a plugin's plan is a process of its own, `mesh-plugin-host`
// (`plugin_isolation`, docs/plugins.md), which must then be found at load.
//
// Thread-safety: call at start-up, on one thread.
#pragma once

#include "polymesh/sdk/plan_catalog.hpp"
#include "polymesh/sdk/process.hpp"

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace polymesh::sdk {

/// Where a plugin's runs execute.
enum class plugin_isolation : uint8_t {
  /// Each run in a process of its own (`mesh-plugin-host`, which loads the
  /// plugin and creates the plan afresh for that run): a crash, an `abort`
  /// or an `exit` in the plan ends that run as an error, and the agent and
  /// its other runs go on. What a run changes in the plan's memory is not
  /// seen by later runs.
  process,
  /// On the agent's worker thread, in the agent's process: no fork per run,
  /// but a crash takes the agent down with every run on it.
  none,
};

/// "process" or "none".
[[nodiscard]] const char* to_string(plugin_isolation i);
/// The isolation named `text` ("process", "none"), or nullopt.
[[nodiscard]] std::optional<plugin_isolation>
parse_plugin_isolation(const std::string& text);

/// Loads `path` and adds its plans to `catalog`, their runs isolated as
/// `isolation` says, each run's host process under `limits` (isolation
/// `process` only). Returns "" or the error; on success `added` (when
/// given) receives the names of the new plans.
[[nodiscard]] std::string
load_plugin(const std::string& path, plan_catalog& catalog,
            std::vector<std::string>* added = nullptr,
            plugin_isolation isolation = plugin_isolation::process,
            std::vector<resource_limit> limits = {});

} // namespace polymesh::sdk
