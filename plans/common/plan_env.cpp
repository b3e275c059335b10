#include "plans/common/plan_env.hpp"

#include <algorithm>
#include <set>

namespace polymesh::plans {

exec_settings read_exec_settings(sdk::settings_reader& in) {
  exec_settings s;
  s.path = in.string("path", s.path);
  // A program is looked up in these directories, and the plan's processes
  // get them as PATH: a relative or empty entry would be the run's own work
  // directory, where anything the run wrote would shadow the real programs.
  size_t begin = 0;
  for (int entry = 1;; ++entry) {
    auto end = s.path.find(':', begin);
    auto dir = s.path.substr(begin, end == std::string::npos ? end : end - begin);
    if (dir.empty() || dir.front() != '/')
      throw sdk::config_error(
          in.path("path"), "entry " + std::to_string(entry) + " " +
                               (dir.empty() ? std::string{"is empty"} : "'" + dir + "'") +
                               ": each entry must be an absolute directory (a relative "
                               "or empty one is the run's work directory)");
    if (end == std::string::npos) break;
    begin = end + 1;
  }
  s.env = in.string_map("env");
  for (auto& [k, v] : s.env)
    if (auto err = check_admin_env_name(k); !err.empty())
      throw sdk::config_error(in.path("env." + k), err);
  s.result_tail_bytes = static_cast<size_t>(
      in.integer("result_tail_bytes", int64_t(s.result_tail_bytes), 0, 60 * 1024));
  sdk::settings_reader lim{in.raw("limits"), in.path("limits")};
  s.limits = sdk::read_resource_limits(lim);
  return s;
}

std::string unknown_param(const nlohmann::json& params,
                          std::initializer_list<std::string_view> allowed,
                          const std::string& hint) {
  if (!params.is_object()) return {};
  for (auto& [key, value] : params.items())
    if (std::find(allowed.begin(), allowed.end(), key) == allowed.end())
      return "params." + key + ": unknown key (" + hint + ")";
  return {};
}

std::string got_instead(const std::string& param, const nlohmann::json& v) {
  if (v.is_string()) {
    auto text = v.get<std::string>();
    if (text.size() > 40) text = text.substr(0, 40) + "...";
    return ", got a string '" + text + "' (meshctl: --param " + param + ":=" + text + ")";
  }
  return std::string{", got "} + (v.is_boolean()  ? "a boolean"
                                  : v.is_number() ? "a number"
                                  : v.is_array()  ? "a list"
                                  : v.is_object() ? "a map"
                                                  : "null");
}

std::string why_not_executable(const std::string& program, const std::string& path,
                               const std::string& dir) {
  bool relative = program.front() != '/' && program.find('/') != std::string::npos;
  if (!sdk::find_program(relative ? dir + "/" + program : program, path).empty())
    return {};
  if (program.find('/') == std::string::npos)
    return "'" + program + "' is not an executable in the plan's path (" + path + ")";
  return "'" + program + "' is not an executable file" + (relative ? " in " + dir : "");
}

std::map<std::string, std::string> run_environment(const exec_settings& s,
                                                   const sdk::run_context& ctx) {
  auto env = s.env;
  env["PATH"] = s.path;
  env["HOME"] = ctx.work_dir.string();
  env["POLYMESH_RUN_ID"] = ctx.run_id;
  env["POLYMESH_RETRY_NUMBER"] = std::to_string(ctx.retry_number);
  env["POLYMESH_RETRY_OF"] = ctx.retry_of;
  env["POLYMESH_WORK_DIR"] = ctx.work_dir.string();
  env["POLYMESH_ARTIFACTS_DIR"] = ctx.artifacts_dir.string();
  return env;
}

sdk::process_spec make_spec(const exec_settings& s, const sdk::run_context& ctx,
                            std::vector<std::string> argv, std::string cwd) {
  sdk::process_spec spec;
  spec.argv = std::move(argv);
  spec.env = run_environment(s, ctx);
  spec.search_path = s.path;
  spec.cwd = cwd.empty() ? ctx.work_dir.string() : std::move(cwd);
  spec.kill_grace = ctx.kill_grace;
  spec.limits = s.limits;
  return spec;
}

std::string check_admin_env_name(const std::string& name) {
  if (name.empty() || name.size() > 128)
    return "environment variable names must be 1 to 128 characters";
  for (size_t i = 0; i < name.size(); ++i) {
    char c = name[i];
    bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_' ||
              (i > 0 && c >= '0' && c <= '9');
    if (!ok)
      return "environment variable name '" + name +
             "' must use only letters, digits and '_' and not start with a digit";
  }
  if (name == "PATH")
    return "environment variable 'PATH' is set by the agent; set the plan's `path` "
           "instead";
  if (name == "HOME")
    return "environment variable 'HOME' is set by the agent (to the run's work "
           "directory)";
  if (name.rfind("POLYMESH_", 0) == 0)
    return "environment variable '" + name +
           "' is set by the agent (POLYMESH_* describe the run)";
  return {};
}

std::string check_env_name(const std::string& name) {
  if (name.empty() || name.size() > 64)
    return "environment variable names must be 1 to 64 characters";
  for (size_t i = 0; i < name.size(); ++i) {
    char c = name[i];
    bool ok = (c >= 'A' && c <= 'Z') || c == '_' || (i > 0 && c >= '0' && c <= '9');
    if (!ok)
      return "environment variable name '" + name +
             "' must use only A-Z, 0-9 and '_' and not start with a digit";
  }
  static const std::set<std::string> reserved{
      "PATH",   "HOME", "IFS",  "ENV", "BASH_ENV", "SHELL",      "SHELLOPTS",
      "CDPATH", "PS4",  "LANG", "TZ",  "TMPDIR",   "PYTHONPATH", "PERL5LIB"};
  if (reserved.count(name) || name.rfind("LD_", 0) == 0 ||
      name.rfind("POLYMESH_", 0) == 0 || name.rfind("BASH_FUNC_", 0) == 0)
    return "environment variable '" + name +
           "' is reserved: the agent sets it, or it changes which code programs load";
  return {};
}

sdk::plan_result outcome_of(const sdk::process_outcome& out, std::string tail) {
  if (!out.started) return sdk::plan_result::failure(out.error);
  if (out.success()) return sdk::plan_result::success(std::move(tail), 0);
  // Ended with no status to tell (see `process_outcome::error`).
  if (!out.error.empty())
    return sdk::plan_result::failure("command " + out.error, std::nullopt,
                                     std::move(tail));
  std::optional<int64_t> code;
  if (out.signal == 0)
    code = out.exit_code;
  else
    code = 128 + out.signal; // the shell's convention
  return sdk::plan_result::failure("command " + out.describe(), code, std::move(tail));
}

} // namespace polymesh::plans
