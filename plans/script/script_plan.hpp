// `script`: runs an executable script from one configured directory.
//
//   plans:
//     script:
//       dir: /etc/polymesh/scripts
//
// Params: `script` (a file name in `dir`: [A-Za-z0-9][A-Za-z0-9._-]*, no
// path), `args` (list of strings, passed as arguments), `env` (map of
// names to strings/numbers/booleans, passed as environment variables; names
// are checked by `check_env_name`, so PATH, LD_* and the like cannot be set).
// The payload is passed as POLYMESH_PAYLOAD (one with a NUL byte is
// refused). A script reached through a symlink that leaves `dir` is
// refused; `dir` is resolved at each run (a `current` symlink a deploy
// moves takes effect at once), and the script runs as `<dir>/<name>`.
//
// Thread-safety: the plan is immutable after construction.
#pragma once

#include "plans/common/plan_env.hpp"

#include <memory>

namespace polymesh::plans {

struct script_settings {
  /// Absolute directory holding the scripts. Key `dir`.
  std::string dir;
  /// The variables a run may set through `params.env`. Key `run_env`;
  /// none by default. An allow-list, not a deny-list: interpreters read too
  /// many variables as code (PERL5OPT, PYTHONWARNINGS + BROWSER, RUBYOPT,
  /// NODE_OPTIONS, GIT_SSH_COMMAND, ...) for a list of dangerous names to hold.
  std::set<std::string> run_env;
  exec_settings exec;
};

[[nodiscard]] script_settings read_script_settings(const nlohmann::json& settings,
                                                   const std::string& key);

/// What a run asks for, validated.
struct script_call {
  std::string path;
  std::vector<std::string> args;
  std::map<std::string, std::string> env;
  /// "" when valid.
  std::string error;
};

[[nodiscard]] script_call resolve_script_call(const script_settings& s,
                                              const nlohmann::json& params);

[[nodiscard]] std::shared_ptr<sdk::plan> make_script_plan(const nlohmann::json& settings,
                                                          const std::string& key);

} // namespace polymesh::plans
