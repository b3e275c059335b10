// The agent's YAML configuration (config/agent.example.yaml documents every
// key). Parsing is strict like meshd's: each key is declared once in a table
// with its type and bounds, unknown keys are errors naming the dotted key,
// durations read like `90s`, `10m`, `2h`.
//
// Errors are thrown as `config_error` (settings.hpp); `mesh-agent` catches
// them at its edge and exits with status 2.
//
// Thread-safety: pure functions.
#pragma once

#include "polymesh/sdk/agent.hpp"
#include "polymesh/sdk/plan_catalog.hpp"
#include "polymesh/sdk/plugin_loader.hpp"
#include "polymesh/sdk/process.hpp"
#include "polymesh/sdk/settings.hpp"

#include <map>
#include <optional>
#include <string>
#include <vector>

namespace polymesh::sdk {

/// One entry of `plugins`: a path, or a map with `path` and `isolation`.
struct plugin_entry {
  std::string path;
  plugin_isolation isolation = plugin_isolation::process;
  /// Limits on each run's host process (isolation `process` only).
  std::vector<resource_limit> limits;
};

struct agent_file_config {
  agent_config agent;
  /// Shared libraries loaded before the plans are built. Key `plugins`.
  std::vector<plugin_entry> plugins;
  /// Enabled plans and their settings (null when the section is empty).
  /// Key `plans.<name>`.
  std::map<std::string, nlohmann::json> plans;
  /// `error`, `warn`, `info` or `debug`. Key `log.level`.
  std::string log_level = "info";
  /// What is allowed but unsafe, one `key: message` line each: a file
  /// holding the registration token that other users can read.
  std::vector<std::string> warnings;
};

/// Parses YAML text; relative paths (token file, plugins, work_dir) are
/// resolved against `base_dir` when it is not empty.
[[nodiscard]] agent_file_config parse_agent_yaml(const std::string& text,
                                                 const std::string& base_dir = {});
/// Reads and parses a file; relative paths are relative to its directory.
[[nodiscard]] agent_file_config load_agent_yaml(const std::string& path);

/// Converts a YAML document to JSON: maps, lists, and scalars that read as
/// integers, `true`/`false` or `null` when unquoted; everything else is a
/// string.
[[nodiscard]] nlohmann::json yaml_to_json(const std::string& text);

/// The line (1-based) in YAML `text` of the setting `key` as config errors
/// name it (`agent.capacity`, `plans.shell.shortcuts[0].cmd`), or of the
/// nearest enclosing one that is there (a missing key's section); none when
/// no part of it is there or the text is no YAML.
[[nodiscard]] std::optional<int> yaml_key_line(const std::string& text,
                                               const std::string& key);

/// Builds every enabled plan from `catalog`; throws `config_error` naming
/// `plans.<name>` for a plan nobody provides or with bad settings. What the
/// factories flag with `config_warning` is handed back in `warnings` when
/// given (the caller reports it), else logged as a warning each.
[[nodiscard]] plan_set make_plans(const plan_catalog& catalog,
                                  const std::map<std::string, nlohmann::json>& plans,
                                  std::vector<std::string>* warnings = nullptr);

} // namespace polymesh::sdk
