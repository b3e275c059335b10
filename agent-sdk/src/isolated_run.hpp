// One run of a plugin plan in a child process forked from the agent (plugin
// isolation `process`, docs/plugins.md).
//
// The child is a copy of the agent in which only the forking thread exists.
// It calls the plan's `run` and reports through a pipe, in frames: output,
// progress and the result. The parent turns the frames into writes to the
// run's log, progress messages and the plan's result, and hands a cancel to
// the child through a second pipe. What the child writes to its own stdout
// and stderr goes to the run's log too. A crash, an `abort` or an `exit` in
// the plan ends the child, not the agent: the run ends as an error that
// says how the child ended.
//
// Thread-safety: `run_isolated` may be called from many threads at once; it
// blocks the calling thread until the child and its pipes are done.
#pragma once

#include "polymesh/sdk/plan.hpp"
#include "polymesh/sdk/plugin_abi.h"

namespace polymesh::sdk {

/// The strings a `polymesh_run_v1` points at, owned for the run's length.
struct plugin_run_args {
  explicit plugin_run_args(const run_context& ctx);

  /// A `polymesh_run_v1` for `ctx` without host callbacks.
  [[nodiscard]] polymesh_run_v1 fill(const run_context& ctx) const;

private:
  std::string params_;
  std::string work_;
  std::string artifacts_;
};

/// How long a child may take after it was told to stop before the agent
/// kills it: its programs get `kill_grace` to stop, the plan as long again
/// to return.
[[nodiscard]] std::chrono::milliseconds
isolated_stop_limit(std::chrono::milliseconds kill_grace);

/// Runs `table.run(instance, …)` in a forked child for `ctx` and returns the
/// plan's result, or a failure naming how the child ended.
[[nodiscard]] plan_result run_isolated(const polymesh_plan_v1& table, void* instance,
                                       run_context& ctx);

} // namespace polymesh::sdk
