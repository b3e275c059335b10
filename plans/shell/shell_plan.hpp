// `shell`: Skadi's "a job is a message". The run's payload is a command
// line; it runs only when an allow rule of the plan's settings matches:
//
//   plans:
//     shell:
//       programs: [uptime, df, free]        # argv[0] must be one of these
//       shortcuts:                          # the payload equals `short`
//         - {short: deploy, dir: /srv/app, cmd: "./deploy.sh --prod"}
//         - {short: disk-report, cmd: "df -h | sort -k5", shell: true}
//
// A command is split into argv by `parse_command_line` and executed without
// a shell, so `free; rm -rf /` is refused, never run as two commands. Only a
// shortcut with `shell: true` (written by the admin, not the run) goes
// through `/bin/sh -c`. The output is the run's log; the result is its tail.
// A rule whose program or directory is not on this host is a
// `config_warning`, not an error: the host may gain it before a run needs it.
//
// Thread-safety: the plan is immutable after construction.
#pragma once

#include "plans/common/plan_env.hpp"

#include <memory>
#include <string>
#include <vector>

namespace polymesh::plans {

struct shell_shortcut {
  /// The exact payload that triggers it. Key `short`.
  std::string short_name;
  /// Working directory; "" means the run's fresh work dir. Key `dir`.
  std::string dir;
  /// The command, split like a payload unless `shell`. Key `cmd`.
  std::string cmd;
  /// Run `cmd` through `/bin/sh -c`. Key `shell`.
  bool shell = false;
  /// `cmd` as argv (computed).
  std::vector<std::string> argv;
};

struct shell_settings {
  /// Allowed program names (or absolute paths). Key `programs`.
  std::vector<std::string> programs;
  /// Key `shortcuts`.
  std::vector<shell_shortcut> shortcuts;
  exec_settings exec;
};

/// Throws `config_error` naming the key, e.g. `plans.shell.shortcuts[1].cmd`.
[[nodiscard]] shell_settings read_shell_settings(const nlohmann::json& settings,
                                                 const std::string& key);

/// A payload resolved against the rules.
struct shell_command {
  std::vector<std::string> argv;
  /// "" = the run's work dir.
  std::string cwd;
  /// Which rule allowed it, e.g. `shortcut deploy` or `program df`.
  std::string rule;
  /// Why it is refused; "" when allowed.
  std::string error;
};

[[nodiscard]] shell_command resolve_shell_command(const shell_settings& s,
                                                  std::string_view payload);

[[nodiscard]] std::shared_ptr<sdk::plan> make_shell_plan(const nlohmann::json& settings,
                                                         const std::string& key);

} // namespace polymesh::plans
