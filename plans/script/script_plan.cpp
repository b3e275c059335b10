#include "plans/script/script_plan.hpp"

#include "polymesh/sdk/output_tail.hpp"
#include "polymesh/sdk/plan_catalog.hpp"

#include <filesystem>

namespace polymesh::plans {

namespace {

namespace fs = std::filesystem;

constexpr size_t max_args = 256;
constexpr size_t max_value_bytes = 32 * 1024;

script_call refuse(std::string why) {
  script_call c;
  c.error = std::move(why);
  return c;
}

class script_plan final : public sdk::plan {
public:
  explicit script_plan(script_settings s)
      : s_(std::move(s)) {}

  sdk::plan_result run(sdk::run_context& ctx) override {
    auto call = resolve_script_call(s_, ctx.params);
    // Linux holds one environment string to 128 KiB (MAX_ARG_STRLEN), name,
    // '=' and NUL included; a larger payload would fail at exec with
    // "Argument list too long", which does not say why.
    constexpr size_t max_env_string = 128 * 1024;
    constexpr size_t max_payload = max_env_string - sizeof("POLYMESH_PAYLOAD=");
    if (call.error.empty() && ctx.payload.find('\0') != std::string::npos)
      call.error = "payload: has a NUL byte, which a script cannot receive in "
                   "POLYMESH_PAYLOAD (an environment string ends at the first one)";
    if (call.error.empty() && ctx.payload.size() > max_payload)
      call.error = "payload: " + std::to_string(ctx.payload.size()) +
                   " bytes is more than a script can receive in POLYMESH_PAYLOAD (at "
                   "most " +
                   std::to_string(max_payload) +
                   " bytes, Linux's limit for one environment string); pass large "
                   "input another way";
    if (!call.error.empty()) {
      ctx.log->error_line("refused: " + call.error);
      return sdk::plan_result::failure(call.error);
    }
    std::vector<std::string> argv{call.path};
    argv.insert(argv.end(), call.args.begin(), call.args.end());
    sdk::output_tail tail{ctx.log, s_.exec.result_tail_bytes};
    auto spec = make_spec(s_.exec, ctx, std::move(argv));
    for (auto& [k, v] : call.env)
      spec.env[k] = v;
    spec.env["POLYMESH_PAYLOAD"] = ctx.payload;
    auto out = sdk::run_process(spec, tail, *ctx.cancel);
    return outcome_of(out, tail.tail());
  }

private:
  script_settings s_;
};

} // namespace

script_settings read_script_settings(const nlohmann::json& settings,
                                     const std::string& key) {
  sdk::settings_reader in{settings, key};
  script_settings s;
  s.dir = in.string("dir");
  for (auto& name : in.strings("run_env")) {
    if (auto err = check_env_name(name); !err.empty())
      throw sdk::config_error(in.path("run_env"), err);
    s.run_env.insert(name);
  }
  s.exec = read_exec_settings(in);
  in.finish();
  if (s.dir.empty() || s.dir.front() != '/')
    throw sdk::config_error(in.path("dir"), "expected an absolute directory path");
  std::error_code ec;
  if (!fs::is_directory(s.dir, ec))
    throw sdk::config_error(in.path("dir"), "'" + s.dir + "' is not a directory");
  // Kept as written, resolved at each run: a `current` symlink that a
  // deploy moves to the next release takes effect without a restart.
  s.dir = fs::path{s.dir}.lexically_normal().string();
  if (s.dir.size() > 1 && s.dir.back() == '/') s.dir.pop_back();
  return s;
}

script_call resolve_script_call(const script_settings& s, const nlohmann::json& params) {
  script_call call;
  if (auto why =
          unknown_param(params, {"script", "args", "env"}, "expected script, args, env");
      !why.empty())
    return refuse(why);
  if (!params.contains("script") || !params["script"].is_string())
    return refuse("params.script: expected the name of a script in " + s.dir);
  auto name = params["script"].get<std::string>();
  if (!sdk::valid_simple_name(name))
    return refuse("params.script: '" + name +
                  "' is not a plain file name (letters, digits, '.', '_', '-')");
  std::error_code ec;
  auto root = fs::canonical(s.dir, ec);
  if (ec || !fs::is_directory(root, ec))
    return refuse("params.script: the scripts' directory " + s.dir + " is not there now" +
                  (ec ? " (" + ec.message() + ")" : std::string{}));
  // Run as `<dir>/<name>`, through the directory as it is now: `$0` keeps
  // the name the run asked for (a symlink's, not its target's).
  auto path = root / name;
  auto real = fs::canonical(path, ec);
  if (ec || !fs::is_regular_file(real, ec))
    return refuse("params.script: no script '" + name + "' in " + s.dir);
  auto inside = real.lexically_relative(root);
  if (inside.empty() || *inside.begin() == "..")
    return refuse("params.script: '" + name + "' leads outside " + s.dir);
  call.path = path.string();
  if (params.contains("args")) {
    auto& args = params["args"];
    if (!args.is_array() || args.size() > max_args)
      return refuse("params.args: expected a list of at most " +
                    std::to_string(max_args) + " strings");
    for (size_t i = 0; i < args.size(); ++i) {
      if (!args[i].is_string())
        return refuse("params.args[" + std::to_string(i) + "]: expected a string");
      auto a = args[i].get<std::string>();
      if (a.find('\0') != std::string::npos || a.size() > max_value_bytes)
        return refuse("params.args[" + std::to_string(i) + "]: NUL bytes or too long");
      call.args.push_back(std::move(a));
    }
  }
  if (params.contains("env")) {
    auto& env = params["env"];
    if (!env.is_object()) return refuse("params.env: expected a map of NAME: value");
    for (auto& [k, v] : env.items()) {
      if (auto err = check_env_name(k); !err.empty())
        return refuse("params.env." + k + ": " + err);
      if (!s.run_env.count(k))
        return refuse("params.env." + k +
                      ": this agent does not let runs set it; its admin may list it in "
                      "the script plan's run_env");
      std::string value;
      if (v.is_string())
        value = v.get<std::string>();
      else if (v.is_number() || v.is_boolean())
        value = v.dump();
      else
        return refuse("params.env." + k + ": expected a string, number or boolean");
      if (value.find('\0') != std::string::npos || value.size() > max_value_bytes)
        return refuse("params.env." + k + ": NUL bytes or too long");
      call.env[k] = std::move(value);
    }
  }
  return call;
}

std::shared_ptr<sdk::plan> make_script_plan(const nlohmann::json& settings,
                                            const std::string& key) {
  return std::make_shared<script_plan>(read_script_settings(settings, key));
}

} // namespace polymesh::plans
