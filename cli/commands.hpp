// meshctl's command tree. Each `add_*_commands` declares one group of
// subcommands on the CLI11 app; a subcommand's callback only records what to
// do in `command_context::action`, which `main` runs after parsing succeeded
// and the global settings are resolved.
//
// Thread-safety: all of it runs on `main`'s thread.
#pragma once

#include "cli/failure.hpp"
#include "cli/mesh_client.hpp"
#include "cli/output.hpp"
#include "cli/settings.hpp"

#include <CLI/CLI.hpp>
#include <functional>
#include <memory>
#include <optional>

namespace polymesh::cli {

struct command_context {
  global_flags flags;
  /// What the chosen subcommand does; returns the exit code.
  std::function<int()> action;
  /// Set by `main` before `action` runs; when resolving failed,
  /// `settings_error` holds why and the accessors below throw it, so that
  /// commands that need no settings (`completion`) still work.
  std::optional<settings> resolved;
  std::optional<failure> settings_error;

  [[nodiscard]] const settings& config() const {
    if (!resolved) throw *settings_error;
    return *resolved;
  }
  [[nodiscard]] mesh_client client() const {
    return mesh_client{config().mesh_url, config().token, config().ca_file};
  }
  [[nodiscard]] printer out() const { return printer{config()}; }
};

void add_agents_commands(CLI::App& app, command_context& ctx);
void add_runs_commands(CLI::App& app, command_context& ctx);
void add_tokens_commands(CLI::App& app, command_context& ctx);
/// `plans list` and `status`.
void add_mesh_commands(CLI::App& app, command_context& ctx);
/// `completion bash`: prints a completion script generated from `app`.
void add_completion_command(CLI::App& app, command_context& ctx);

/// Bash completion for every command and option of `app`.
[[nodiscard]] std::string bash_completion(const CLI::App& app);

/// A duration flag (`90s`, `10m`, `2h`, `1d`) in whole seconds, rounded up;
/// throws a usage `failure` naming `flag`.
[[nodiscard]] int64_t duration_seconds(const std::string& text, const std::string& flag);

/// Parses a selector locally so a typo fails before anything is sent, with
/// a caret under the offending character; returns it unchanged.
void check_selector(const std::string& text, const std::string& flag);
/// As `check_selector`, and refuses a selector no agent can ever meet
/// (`env=prod,env=dev`), as the mesh would; for runs and scopes.
void check_satisfiable(const std::string& text, const std::string& flag);

/// The agent's record by id or name (the API accepts both).
[[nodiscard]] json find_agent(mesh_client& mesh, const std::string& id_or_name);

} // namespace polymesh::cli
