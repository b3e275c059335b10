#include "plans/shell/shell_plan.hpp"

#include "plans/common/plan_env.hpp"
#include "plans/shell/command_line.hpp"
#include "polymesh/sdk/output_tail.hpp"

#include <filesystem>

namespace polymesh::plans {

namespace {

std::string trim(std::string_view s) {
  auto b = s.find_first_not_of(" \t\r\n");
  if (b == std::string_view::npos) return {};
  auto e = s.find_last_not_of(" \t\r\n");
  return std::string{s.substr(b, e - b + 1)};
}

class shell_plan final : public sdk::plan {
public:
  explicit shell_plan(shell_settings s)
      : s_(std::move(s)) {}

  sdk::plan_result run(sdk::run_context& ctx) override {
    if (auto why = unknown_param(
            ctx.params, {},
            "the shell plan takes no params; the payload is the command line");
        !why.empty()) {
      ctx.log->error_line("refused: " + why);
      return sdk::plan_result::failure(why);
    }
    auto cmd = resolve_shell_command(s_, ctx.payload);
    if (!cmd.error.empty()) {
      ctx.log->error_line("refused: " + cmd.error);
      return sdk::plan_result::failure(cmd.error);
    }
    sdk::output_tail tail{ctx.log, s_.exec.result_tail_bytes};
    auto spec = make_spec(s_.exec, ctx, cmd.argv, cmd.cwd);
    auto out = sdk::run_process(spec, tail, *ctx.cancel);
    return outcome_of(out, tail.tail());
  }

private:
  shell_settings s_;
};

/// Rules that are valid but cannot work on this host as it is now: each is
/// a warning, not an error, for the host may gain the program or directory
/// before a run needs it, and the plan's other rules work meanwhile.
void warn_of_what_is_missing(const shell_settings& s, const sdk::settings_reader& in) {
  const std::string until = "; runs that need it fail until it is there";
  for (size_t i = 0; i < s.programs.size(); ++i)
    if (auto why = why_not_executable(s.programs[i], s.exec.path); !why.empty())
      sdk::config_warning(in.path("programs[" + std::to_string(i) + "]"), why + until);
  for (size_t i = 0; i < s.shortcuts.size(); ++i) {
    auto& sc = s.shortcuts[i];
    auto prefix = in.path("shortcuts[" + std::to_string(i) + "]");
    std::error_code ec;
    if (!sc.dir.empty() && !std::filesystem::is_directory(sc.dir, ec)) {
      sdk::config_warning(prefix + ".dir", "'" + sc.dir + "' is not a directory" + until);
      continue;
    }
    if (auto why = why_not_executable(sc.argv.front(), s.exec.path, sc.dir); !why.empty())
      sdk::config_warning(prefix + ".cmd", why + until);
  }
}

} // namespace

shell_settings read_shell_settings(const nlohmann::json& settings,
                                   const std::string& key) {
  sdk::settings_reader in{settings, key};
  shell_settings s;
  s.programs = in.strings("programs");
  for (size_t i = 0; i < s.programs.size(); ++i) {
    auto& p = s.programs[i];
    auto field = in.path("programs[" + std::to_string(i) + "]");
    if (p.empty() || parse_command_line(p).argv.size() != 1)
      throw sdk::config_error(field, "expected one program name or absolute path");
    if (p.find('/') != std::string::npos && p.front() != '/')
      throw sdk::config_error(field, "a program with a '/' must be an absolute path");
  }
  auto& shortcuts = in.raw("shortcuts");
  if (!shortcuts.is_null() && !shortcuts.is_array())
    throw sdk::config_error(in.path("shortcuts"), "expected a list of {short, dir, cmd}");
  for (size_t i = 0; shortcuts.is_array() && i < shortcuts.size(); ++i) {
    auto prefix = in.path("shortcuts[" + std::to_string(i) + "]");
    sdk::settings_reader sc{shortcuts[i], prefix};
    shell_shortcut x;
    x.short_name = trim(sc.string("short"));
    x.dir = sc.string("dir");
    x.cmd = sc.string("cmd");
    x.shell = sc.boolean("shell", false);
    sc.finish();
    if (x.short_name.empty()) throw sdk::config_error(prefix + ".short", "is required");
    if (x.cmd.empty()) throw sdk::config_error(prefix + ".cmd", "is required");
    if (!x.dir.empty() && x.dir.front() != '/')
      throw sdk::config_error(prefix + ".dir", "must be an absolute path");
    for (auto& other : s.shortcuts)
      if (other.short_name == x.short_name)
        throw sdk::config_error(prefix + ".short",
                                "'" + x.short_name + "' is defined twice");
    // Before the choice of shell: `sh -c` would run the command cut at it.
    if (x.cmd.find('\0') != std::string::npos)
      throw sdk::config_error(prefix + ".cmd",
                              "holds a NUL byte: a program's arguments "
                              "cannot hold one, with a shell or without");
    if (x.shell) {
      x.argv = {"/bin/sh", "-c", x.cmd};
    } else {
      auto parsed = parse_command_line(x.cmd);
      if (!parsed.error.empty())
        throw sdk::config_error(prefix + ".cmd",
                                parsed.error +
                                    "; set shell: true to run it through /bin/sh");
      x.argv = std::move(parsed.argv);
      auto& program = x.argv.front();
      if (program.empty()) throw sdk::config_error(prefix + ".cmd", "names no program");
      if (x.dir.empty() && program.front() != '/' &&
          program.find('/') != std::string::npos)
        throw sdk::config_error(prefix + ".cmd",
                                "'" + program +
                                    "' is a relative path, and without `dir` it would "
                                    "be looked up in the run's new, empty work dir: "
                                    "set dir, or write the program's absolute path");
    }
    s.shortcuts.push_back(std::move(x));
  }
  s.exec = read_exec_settings(in);
  in.finish();
  if (s.programs.empty() && s.shortcuts.empty())
    throw sdk::config_error(key, "allows nothing: add programs or shortcuts");
  warn_of_what_is_missing(s, in);
  return s;
}

shell_command resolve_shell_command(const shell_settings& s, std::string_view payload) {
  shell_command out;
  auto text = trim(payload);
  // Shortcuts first: an exact match, Skadi style.
  for (auto& sc : s.shortcuts)
    if (sc.short_name == text) {
      out.argv = sc.argv;
      out.cwd = sc.dir;
      out.rule = "shortcut " + sc.short_name;
      return out;
    }
  auto parsed = parse_command_line(text);
  if (!parsed.error.empty()) {
    out.error = parsed.error;
    return out;
  }
  auto& program = parsed.argv.front();
  for (auto& p : s.programs)
    if (p == program) {
      out.argv = std::move(parsed.argv);
      out.rule = "program " + p;
      return out;
    }
  std::string allowed;
  for (auto& p : s.programs)
    allowed += (allowed.empty() ? "" : ", ") + p;
  std::string shorts;
  for (auto& sc : s.shortcuts)
    shorts += (shorts.empty() ? "" : ", ") + sc.short_name;
  out.error = "command '" + program +
              "' is not allowed (programs: " + (allowed.empty() ? "none" : allowed) +
              "; shortcuts: " + (shorts.empty() ? "none" : shorts) + ")";
  return out;
}

std::shared_ptr<sdk::plan> make_shell_plan(const nlohmann::json& settings,
                                           const std::string& key) {
  return std::make_shared<shell_plan>(read_shell_settings(settings, key));
}

} // namespace polymesh::plans
