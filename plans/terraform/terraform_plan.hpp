// `terraform`: runs `terraform init`, `plan` or `apply` in a workspace
// directory chosen from an allowed list, with the configured binary.
//
//   plans:
//     terraform:
//       binary: terraform                 # name looked up in `path`, or absolute
//       workspaces: [/srv/infra/prod, /srv/infra/dev]
//
// Params: `action` (init | plan | apply), `workspace` (one of the list,
// exactly), `vars` (map of names [A-Za-z_][A-Za-z0-9_-]* to strings,
// numbers or booleans, passed as `-var name=value` argv entries: no shell
// ever sees them), `init` (boolean, default true: `plan` and `apply` run
// `init` first), `plan_run` (apply only: the id of an earlier `plan` run in
// the same workspace on this agent, whose saved plan is applied exactly, and
// without `vars`). `plan` writes `plan.tfplan` (the plan file) and
// `plan.txt` (`terraform show` of it) into the run's artifacts directory,
// and keeps the plan file as `<workspace>/.polymesh/plans/<run id>.tfplan`
// for an `apply` with `plan_run`, which removes it once applied (kept plans
// older than `keep_plans`, 7 days by default, go when a plan keeps another).
//
// Thread-safety: the plan is immutable after construction.
#pragma once

#include "plans/common/plan_env.hpp"

#include <memory>

namespace polymesh::plans {

struct terraform_settings {
  /// Key `binary`.
  std::string binary = "terraform";
  /// Key `workspaces`.
  std::vector<std::string> workspaces;
  /// How long a kept plan file waits for its apply; older ones are removed
  /// when a plan run keeps a new one. 0 keeps them for ever. Key `keep_plans`.
  std::chrono::milliseconds keep_plans = std::chrono::hours{7 * 24};
  exec_settings exec;
};

[[nodiscard]] terraform_settings read_terraform_settings(const nlohmann::json& settings,
                                                         const std::string& key);

/// The argv lists one run executes, in order (computed from params).
struct terraform_steps {
  std::string workspace;
  std::vector<std::vector<std::string>> commands;
  /// The index of the `terraform show` step whose stdout becomes plan.txt,
  /// or -1.
  int show_step = -1;
  /// After the steps succeed: where the plan file is kept for a later apply
  /// (`plan`), or the kept plan file that was applied and goes (`apply`
  /// with `plan_run`); "" for neither.
  std::string save_plan_to;
  std::string applied_plan;
  std::string error;
};

/// `run_id` names the plan file kept by a `plan` run.
[[nodiscard]] terraform_steps plan_terraform_steps(const terraform_settings& s,
                                                   const nlohmann::json& params,
                                                   const std::string& artifacts_dir,
                                                   const std::string& run_id);

[[nodiscard]] std::shared_ptr<sdk::plan>
make_terraform_plan(const nlohmann::json& settings, const std::string& key);

} // namespace polymesh::plans
