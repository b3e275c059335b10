// meshctl: the admin and user CLI of a polymesh mesh (docs/cli.md).
//
// Reading order: main.cpp (global flags, exit codes) -> settings.hpp (where
// flags come from) -> commands.hpp and the *_commands.cpp files (one per
// command group) -> mesh_client.hpp (HTTP and error messages) -> output.hpp
// (tables, json/yaml, colour, spinner).
#include "cli/commands.hpp"
#include "cli/failure.hpp"

#include <csignal>
#include <iostream>
#include <string_view>
#include <unistd.h>

using namespace polymesh::cli;

namespace {

/// Ctrl-C or SIGTERM while waiting: erase the spinner line and exit 128 +
/// the signal (130, 143) as shells do.
/// Only async-signal-safe calls here.
extern "C" void on_interrupt(int sig) {
  static const char erase[] = "\r\033[2K";
  if (::isatty(STDERR_FILENO) == 1) [[maybe_unused]]
    auto n = ::write(STDERR_FILENO, erase, sizeof erase - 1);
  ::_exit(128 + sig);
}

/// For "a subcommand is required": a message naming the commands there are,
/// and the word given where one was expected (`meshctl runs frobnicate`).
std::string missing_command_message(CLI::App& app) {
  CLI::App* at = &app;
  for (auto subs = at->get_subcommands(); !subs.empty(); subs = at->get_subcommands())
    at = subs.front();
  auto commands = at->get_subcommands([](CLI::App*) { return true; });
  // With fallthrough, a word the command did not take may sit with a parent.
  auto rest = app.remaining(true);
  if (commands.empty()) return {};
  std::string names;
  for (auto* c : commands)
    if (!c->get_name().empty()) names += (names.empty() ? "" : ", ") + c->get_name();
  std::string path;
  for (auto* a = at; a != nullptr; a = a->get_parent())
    path = a->get_name() + (path.empty() ? "" : " " + path);
  if (rest.empty() || rest.front().rfind('-', 0) == 0)
    return "'" + path + "' needs a command: " + names;
  return "unknown command '" + rest.front() + "' for '" + path + "'; commands: " + names;
}

/// Refuses an empty value for every option and argument that takes one, on
/// `app` and its subcommands: an unset shell variable (`--scope "$SCOPE"`)
/// must not quietly mean "not given" (`tokens create --scope ""` made a token
/// of full reach, `--ttl ""` one that never expires, `--priority ""` was 0).
/// Runs before any other check of the option, so the message is this one.
void refuse_empty_values(CLI::App& app) {
  static const CLI::Validator needs_value{
      [](std::string& value) {
        return value.empty()
                   ? std::string{"needs a value, not an empty one (an unset shell "
                                 "variable?)"}
                   : std::string{};
      },
      ""};
  for (auto* opt : app.get_options())
    if (opt->get_items_expected_max() > 0) opt->transform(needs_value);
  for (auto* sub : app.get_subcommands([](CLI::App*) { return true; }))
    refuse_empty_values(*sub);
}

void print_failure(const failure& f, bool color) {
  auto red = color ? "\033[31m" : "";
  auto reset = color ? "\033[0m" : "";
  std::cerr << red << "error:" << reset << ' ' << f.what() << '\n';
  for (auto& line : f.details())
    std::cerr << "  " << line << '\n';
}

} // namespace

int main(int argc, char** argv) {
  // A closed pipe (`meshctl runs logs -f ID | head`) ends us quietly, by
  // SIGPIPE (141) as other Unix tools, also when the parent left the signal
  // ignored or blocked: blocked, a write failed and was reported as a full
  // disk (exit 3).
  std::signal(SIGPIPE, SIG_DFL);
  sigset_t pipe_signal;
  sigemptyset(&pipe_signal);
  sigaddset(&pipe_signal, SIGPIPE);
  ::sigprocmask(SIG_UNBLOCK, &pipe_signal, nullptr);
  // Ctrl-C (130) and SIGTERM (143, a CI job's timeout) leave no spinner line.
  std::signal(SIGINT, on_interrupt);
  std::signal(SIGTERM, on_interrupt);
  command_context ctx;
  CLI::App app{
      "meshctl: submit and watch runs, manage agents and tokens of a polymesh mesh",
      "meshctl"};
  app.fallthrough();
  app.set_version_flag("--version", std::string{"meshctl "} + POLYMESH_VERSION);
  app.add_option("--mesh", ctx.flags.mesh,
                 "Mesh URL (env MESH_URL; default http://127.0.0.1:7700)");
  app.add_option("--token", ctx.flags.token,
                 "API token (env MESH_TOKEN; shows in ps, prefer --token-file)");
  app.add_option("--token-file", ctx.flags.token_file,
                 "File holding the API token (env MESH_TOKEN_FILE)");
  app.add_option("--ca-file", ctx.flags.ca_file,
                 "PEM CA certificates to trust for an https mesh instead of the "
                 "system's (env MESH_CA_FILE)");
  app.add_option("-o,--output", ctx.flags.output, "Output format: table, json or yaml")
      ->check(CLI::IsMember({"table", "json", "yaml"}));
  app.add_option(
      "--config", ctx.flags.config,
      "Config file (env MESHCTL_CONFIG; default ~/.config/polymesh/meshctl.yaml)");
  app.add_flag("--no-color", ctx.flags.no_color,
               "No colour even on a TTY (env NO_COLOR)");
  app.footer(
      "Exit codes: 0 ok, 1 the waited-for run ended in error, 2 it was canceled, "
      "3 refused or failed (the mesh said no, a download could not be verified), "
      "64 usage error, 69 mesh unreachable or unavailable, 75 a change was sent but "
      "no answer came (it may have been done), 130 interrupted, 141 standard output "
      "closed (its reader, such as head, went away), 143 terminated. "
      "See docs/cli.md");

  add_agents_commands(app, ctx);
  add_runs_commands(app, ctx);
  add_tokens_commands(app, ctx);
  add_mesh_commands(app, ctx);
  add_completion_command(app, ctx);
  refuse_empty_values(app);
  app.require_subcommand(1);

  try {
    app.parse(argc, argv);
  } catch (const CLI::Success& e) {
    // --help and --version.
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    // Worded like every other meshctl error; CLI11's text says what is wrong.
    std::string missing;
    if (dynamic_cast<const CLI::RequiredError*>(&e) &&
        std::string_view{e.what()}.find("subcommand") != std::string_view::npos)
      missing = missing_command_message(app);
    std::cerr << "error: " << (missing.empty() ? std::string{e.what()} : missing)
              << "\n  run with --help for usage" << std::endl;
    return exit_usage;
  }
  try {
    try {
      ctx.resolved = resolve_settings(ctx.flags);
    } catch (const failure& f) {
      ctx.settings_error = f;
    }
    int code = ctx.action ? ctx.action() : exit_usage;
    // What could not be written (a full disk, `> /dev/full`) is no success:
    // a CI step must not pass with a cut-off log or artifact.
    std::cout.flush();
    if (!std::cout)
      throw failure{exit_refused, "cannot write the output to standard output (a full "
                                  "disk, or a file that cannot grow)"};
    return code;
  } catch (const failure& f) {
    print_failure(f, ctx.resolved && ctx.resolved->color_stderr);
    return f.code();
  } catch (const json::exception& e) {
    // A field of an answer that meshctl read as something else: another
    // server, or a meshd of another version (or a bug here: the text says).
    print_failure(
        failure{exit_refused,
                std::string{"an answer did not have the shape meshctl expects ("} +
                    e.what() +
                    "): the mesh URL may not be a meshd's, or meshd and "
                    "meshctl differ in version"},
        false);
    return exit_refused;
  } catch (const std::exception& e) {
    print_failure(failure{exit_refused, e.what()}, false);
    return exit_refused;
  }
}
