// The environment and process settings shared by the plans that start
// programs (shell, script, terraform): exactly what the plan config allows
// plus a few POLYMESH_* variables describing the run. Nothing is inherited
// from the agent's own environment.
//
// Thread-safety: plain values and pure functions.
#pragma once

#include "polymesh/sdk/plan.hpp"
#include "polymesh/sdk/process.hpp"
#include "polymesh/sdk/settings.hpp"

#include <initializer_list>
#include <map>
#include <string>
#include <string_view>

namespace polymesh::plans {

/// The process keys every program-running plan accepts.
struct exec_settings {
  /// PATH of the programs, and where program names are looked up. Key `path`.
  std::string path = "/usr/local/bin:/usr/bin:/bin";
  /// Extra environment variables. Key `env`.
  std::map<std::string, std::string> env;
  /// Bytes of output returned as the result. Key `result_tail_bytes`.
  size_t result_tail_bytes = 4096;
  /// Optional rlimits. Keys `limits.cpu_seconds`, `limits.address_space_bytes`,
  /// `limits.open_files`, `limits.processes`, `limits.file_size_bytes`.
  std::vector<sdk::resource_limit> limits;
};

/// Reads the keys above from a plan's settings.
[[nodiscard]] exec_settings read_exec_settings(sdk::settings_reader& in);

/// The environment of one run's program: `env`, PATH, HOME = the work dir,
/// POLYMESH_RUN_ID, POLYMESH_RETRY_NUMBER, POLYMESH_RETRY_OF ("" for a run
/// submitted), POLYMESH_WORK_DIR, POLYMESH_ARTIFACTS_DIR.
[[nodiscard]] std::map<std::string, std::string>
run_environment(const exec_settings& s, const sdk::run_context& ctx);

/// A `process_spec` for `argv` in `cwd` (the work dir when empty).
[[nodiscard]] sdk::process_spec make_spec(const exec_settings& s,
                                          const sdk::run_context& ctx,
                                          std::vector<std::string> argv,
                                          std::string cwd = {});

/// Environment variable names a run may set: [A-Z_][A-Z0-9_]{0,63}, and not
/// one that changes how programs load or run (PATH, LD_*, IFS, ...).
[[nodiscard]] std::string check_env_name(const std::string& name);
/// Names the admin may set in a plan's `env`: [A-Za-z_][A-Za-z0-9_]{0,127}
/// (`http_proxy` is lower case), and not one the agent sets (PATH, HOME,
/// POLYMESH_*). The admin's values are constants no run can change, so
/// `LD_LIBRARY_PATH` or `TMPDIR` are the admin's to choose.
[[nodiscard]] std::string check_admin_env_name(const std::string& name);

/// Why `program` cannot be started here, or "" when it can: a name is
/// looked up in the `:`-separated `path`, an absolute path taken as it is,
/// a relative path (`./deploy.sh`) looked up in `dir`.
[[nodiscard]] std::string why_not_executable(const std::string& program,
                                             const std::string& path,
                                             const std::string& dir = {});

/// The refusal of the first key of `params` not in `allowed`,
/// "params.KEY: unknown key (HINT)", or "": a param meant for another plan
/// would be dropped unseen.
[[nodiscard]] std::string unknown_param(const nlohmann::json& params,
                                        std::initializer_list<std::string_view> allowed,
                                        const std::string& hint);

/// What a param of the wrong type holds, for an error after "expected ...":
/// `, got a string 'false' (meshctl: --param init:=false)` for a string,
/// which is what `--param k=v` sends, else `, got a list` and the like.
[[nodiscard]] std::string got_instead(const std::string& param, const nlohmann::json& v);

/// The usual end of a program-running plan: success on exit 0, else an
/// error carrying the exit code; the result is the output tail.
[[nodiscard]] sdk::plan_result outcome_of(const sdk::process_outcome& out,
                                          std::string tail);

} // namespace polymesh::plans
