// One run of a plugin plan in a process of its own (plugin isolation
// `process`, docs/plugins.md).
//
// The agent forks and, in the child, execs `mesh-plugin-host`
// (agent-sdk/plugin-host/) with the run's spec on its stdin. The host is a
// fresh process: it loads the plugin, creates the plan with its settings,
// calls the plan's `run` and reports through a pipe, in frames
// (isolation_wire.hpp): output, progress and the result. The agent turns the
// frames into writes to the run's log, progress messages and the plan's
// result, and hands a cancel to the host through a socket. What the host
// writes to its own stdout and stderr goes to the run's log too. A crash, an
// `abort` or an `exit` in the plan ends the host, not the agent: the run
// ends as an error that says how the host ended.
//
// Thread-safety: `run_isolated` may be called from many threads at once; it
// blocks the calling thread until the host and its pipes are done.
#pragma once

#include "polymesh/sdk/plan.hpp"
#include "polymesh/sdk/process.hpp"

#include <optional>
#include <string>
#include <vector>

namespace polymesh::sdk {

/// How long a child may take after it was told to stop before the agent
/// kills it: its programs get `kill_grace` to stop, the plan as long again
/// to return.
[[nodiscard]] std::chrono::milliseconds
isolated_stop_limit(std::chrono::milliseconds kill_grace);

/// Which plan an isolated run runs, and with what.
struct isolated_plan {
  /// The `mesh-plugin-host` program (`find_plugin_host`).
  std::string host;
  std::string plugin_path;
  /// The name the plugin registered the plan under.
  std::string plan_name;
  /// The plan's settings as JSON, as the agent's own `create` got them.
  std::string settings_json;
  /// Set on the host before it starts (the plugin entry's `limits`).
  std::vector<resource_limit> limits;
};

/// The `mesh-plugin-host` to start: `$POLYMESH_PLUGIN_HOST` when set, else
/// the first executable of: next to this program, where `cmake --install`
/// puts it relative to this program's directory, its install path. Nullopt
/// with `*error` naming where it looked.
[[nodiscard]] std::optional<std::string> find_plugin_host(std::string* error);

/// Runs `which` in a host process for `ctx` and returns the plan's result,
/// or a failure naming how the host ended.
[[nodiscard]] plan_result run_isolated(const isolated_plan& which, run_context& ctx);

} // namespace polymesh::sdk
