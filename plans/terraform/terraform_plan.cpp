#include "plans/terraform/terraform_plan.hpp"

#include "polymesh/sdk/output_tail.hpp"

#include <filesystem>
#include <fstream>

namespace polymesh::plans {

namespace {

namespace fs = std::filesystem;

bool valid_var_name(const std::string& n) {
  if (n.empty() || n.size() > 128 ||
      !(std::isalpha(static_cast<unsigned char>(n[0])) || n[0] == '_'))
    return false;
  for (char c : n)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_' && c != '-')
      return false;
  return true;
}

/// A run id as the mesh makes them (`run_` and base32), so that it can
/// name a file: no `/`, no `..`.
bool valid_run_id(const std::string& id) {
  if (id.size() < 5 || id.size() > 64 || id.compare(0, 4, "run_") != 0) return false;
  for (char c : id)
    if (!std::islower(static_cast<unsigned char>(c)) &&
        !std::isdigit(static_cast<unsigned char>(c)) && c != '_')
      return false;
  return true;
}

/// Where a `plan` run's plan file is kept for an `apply` with `plan_run`.
std::string kept_plan(const std::string& workspace, const std::string& run_id) {
  return workspace + "/.polymesh/plans/" + run_id + ".tfplan";
}

/// Why kept plans of `workspace` cannot be used: `.polymesh` or
/// `.polymesh/plans` is a symlink (the workspace's content could point it
/// anywhere); "" when they can.
std::string kept_plans_refused(const std::string& workspace) {
  for (auto dir :
       {fs::path{workspace} / ".polymesh", fs::path{workspace} / ".polymesh/plans"}) {
    std::error_code ec;
    if (fs::is_symlink(fs::symlink_status(dir, ec)))
      return dir.string() +
             " is a symlink; kept plans are never written or read through one";
  }
  return {};
}

/// Removes the kept plans in `dir` last written more than `keep` ago (none
/// when `keep` is 0); what cannot be removed stays, for the next plan.
void remove_old_plans(const fs::path& dir, std::chrono::milliseconds keep) {
  if (keep.count() == 0) return;
  auto cutoff = fs::file_time_type::clock::now() - keep;
  std::error_code ec;
  for (auto it = fs::directory_iterator{dir, ec}; !ec && it != fs::directory_iterator{};
       it.increment(ec)) {
    std::error_code stat_ec;
    if (it->path().extension() == ".tfplan" && it->is_regular_file(stat_ec) &&
        it->last_write_time(stat_ec) < cutoff && !stat_ec)
      fs::remove(it->path(), stat_ec);
  }
}

terraform_steps refuse(std::string why) {
  terraform_steps t;
  t.error = std::move(why);
  return t;
}

/// Forwards to the log and keeps stdout in a file (the rendered plan).
class file_tee final : public sdk::log_sink {
public:
  file_tee(sdk::log_sink& next, const std::string& path)
      : next_(next)
      , out_(path) {}
  void write(sdk::log_stream s, std::string_view data) override {
    next_.write(s, data);
    if (s == sdk::log_stream::out)
      out_.write(data.data(), static_cast<std::streamsize>(data.size()));
  }

private:
  sdk::log_sink& next_;
  std::ofstream out_;
};

class terraform_plan final : public sdk::plan {
public:
  explicit terraform_plan(terraform_settings s)
      : s_(std::move(s)) {}

  sdk::plan_result run(sdk::run_context& ctx) override {
    auto steps =
        plan_terraform_steps(s_, ctx.params, ctx.artifacts_dir.string(), ctx.run_id);
    if (!steps.error.empty()) {
      ctx.log->error_line("refused: " + steps.error);
      return sdk::plan_result::failure(steps.error);
    }
    sdk::output_tail tail{ctx.log, s_.exec.result_tail_bytes};
    for (size_t i = 0; i < steps.commands.size(); ++i) {
      auto& argv = steps.commands[i];
      ctx.log->line("$ terraform " + argv[1]);
      if (ctx.progress) ctx.progress("terraform " + argv[1]);
      auto spec = make_spec(s_.exec, ctx, argv, steps.workspace);
      spec.env["TF_IN_AUTOMATION"] = "1";
      spec.env["TF_INPUT"] = "0";
      sdk::process_outcome out;
      if (static_cast<int>(i) == steps.show_step) {
        file_tee tee{tail, (ctx.artifacts_dir / "plan.txt").string()};
        out = sdk::run_process(spec, tee, *ctx.cancel);
      } else {
        out = sdk::run_process(spec, tail, *ctx.cancel);
      }
      if (!out.success()) {
        auto r = outcome_of(out, tail.tail());
        r.error = "terraform " + argv[1] + ": " + r.error;
        return r;
      }
    }
    if (!steps.save_plan_to.empty()) {
      // A plan file holds the variables in clear, sensitive ones too: the
      // agent's user alone may read it (also in a directory an older
      // version made with the umask's modes).
      std::error_code ec;
      auto kept_dir = fs::path{steps.save_plan_to}.parent_path();
      fs::create_directories(kept_dir, ec);
      // Best effort: a `.polymesh` another user owns (a shared checkout)
      // keeps its modes, and a symlink is not followed.
      for (auto& d : {kept_dir.parent_path(), kept_dir}) {
        std::error_code ignored;
        if (!ec && !fs::is_symlink(fs::symlink_status(d, ignored)))
          fs::permissions(d, fs::perms::owner_all, ignored);
      }
      if (!ec)
        fs::copy_file(ctx.artifacts_dir / "plan.tfplan", steps.save_plan_to,
                      fs::copy_options::overwrite_existing, ec);
      if (!ec)
        fs::permissions(steps.save_plan_to,
                        fs::perms::owner_read | fs::perms::owner_write, ec);
      if (ec) {
        auto why = "cannot keep the plan file as " + steps.save_plan_to + ": " +
                   ec.message() + " (an apply with plan_run cannot use it)";
        ctx.log->error_line(why);
        return sdk::plan_result::failure(why);
      }
      remove_old_plans(fs::path{steps.save_plan_to}.parent_path(), s_.keep_plans);
      nlohmann::json apply{
          {"action", "apply"}, {"workspace", steps.workspace}, {"plan_run", ctx.run_id}};
      ctx.log->line("plan kept for apply: params " + apply.dump() + " on this agent");
    }
    if (!steps.applied_plan.empty()) {
      std::error_code ec;
      fs::remove(steps.applied_plan, ec); // applied: terraform would refuse it again
    }
    return sdk::plan_result::success(tail.tail(), 0);
  }

private:
  terraform_settings s_;
};

} // namespace

terraform_settings read_terraform_settings(const nlohmann::json& settings,
                                           const std::string& key) {
  sdk::settings_reader in{settings, key};
  terraform_settings s;
  s.binary = in.string("binary", s.binary);
  s.workspaces = in.strings("workspaces");
  s.keep_plans = in.duration("keep_plans", s.keep_plans, std::chrono::milliseconds{0},
                             std::chrono::hours{24 * 3650});
  s.exec = read_exec_settings(in);
  in.finish();
  if (s.binary.empty() ||
      (s.binary.find('/') != std::string::npos && s.binary.front() != '/'))
    throw sdk::config_error(in.path("binary"),
                            "expected a program name or an absolute path");
  if (s.workspaces.empty())
    throw sdk::config_error(in.path("workspaces"),
                            "list at least one workspace directory");
  // Found now, not at the first run: an agent offering terraform without it
  // would take runs only to fail each one (and `mesh-agent --check` says so).
  if (auto why = why_not_executable(s.binary, s.exec.path); !why.empty())
    throw sdk::config_error(in.path("binary"),
                            s.binary.front() == '/'
                                ? why
                                : why +
                                      "; install it, or set binary to its absolute path");
  for (size_t i = 0; i < s.workspaces.size(); ++i) {
    auto& w = s.workspaces[i];
    if (w.empty() || w.front() != '/')
      throw sdk::config_error(in.path("workspaces[" + std::to_string(i) + "]"),
                              "expected an absolute directory path");
    w = fs::path{w}.lexically_normal().string();
    while (w.size() > 1 && w.back() == '/')
      w.pop_back();
    // A checkout may come later (a deploy clones it): a warning, not an error.
    std::error_code ec;
    if (!fs::is_directory(w, ec))
      sdk::config_warning(in.path("workspaces[" + std::to_string(i) + "]"),
                          "'" + w +
                              "' is not a directory; runs in it fail until it is there");
  }
  return s;
}

terraform_steps plan_terraform_steps(const terraform_settings& s,
                                     const nlohmann::json& params,
                                     const std::string& artifacts_dir,
                                     const std::string& run_id) {
  terraform_steps t;
  if (auto why =
          unknown_param(params, {"action", "workspace", "vars", "init", "plan_run"},
                        "expected action, workspace, vars, init, plan_run");
      !why.empty())
    return refuse(why);
  if (!params.contains("action") || !params["action"].is_string())
    return refuse("params.action: expected a string: init, plan or apply");
  auto action = params["action"].get<std::string>();
  if (action != "init" && action != "plan" && action != "apply")
    return refuse("params.action: expected init, plan or apply");
  if (!params.contains("workspace") || !params["workspace"].is_string())
    return refuse("params.workspace: expected one of the configured workspaces");
  auto ws = fs::path{params["workspace"].get<std::string>()}.lexically_normal().string();
  while (ws.size() > 1 && ws.back() == '/')
    ws.pop_back();
  bool allowed = false;
  for (auto& w : s.workspaces)
    allowed = allowed || w == ws;
  if (!allowed) {
    std::string list;
    for (auto& w : s.workspaces)
      list += (list.empty() ? "" : ", ") + w;
    return refuse("params.workspace: '" + ws + "' is not an allowed workspace (" + list +
                  ")");
  }
  t.workspace = ws;
  // What only a plan or an apply uses would be dropped unseen by an init.
  if (action == "init" && params.contains("vars"))
    return refuse("params.vars: an init takes no vars (they are for plan and apply)");
  if (action == "init" && params.contains("init"))
    return refuse("params.init: an init always runs terraform init (the param says "
                  "whether plan and apply run it first)");
  std::vector<std::string> vars;
  if (params.contains("vars")) {
    auto& v = params["vars"];
    if (!v.is_object()) return refuse("params.vars: expected a map of name: value");
    for (auto& [name, value] : v.items()) {
      if (!valid_var_name(name))
        return refuse("params.vars." + name + ": invalid variable name");
      std::string text;
      if (value.is_string())
        text = value.get<std::string>();
      else if (value.is_number() || value.is_boolean())
        text = value.dump();
      else
        return refuse("params.vars." + name + ": expected a string, number or boolean");
      if (text.find('\0') != std::string::npos)
        return refuse("params.vars." + name + ": NUL bytes are not allowed");
      vars.push_back("-var");
      vars.push_back(name + "=" + text);
    }
  }
  std::string plan_run;
  if (params.contains("plan_run")) {
    if (action != "apply")
      return refuse("params.plan_run: only an apply applies a kept plan");
    if (!params["plan_run"].is_string() ||
        !valid_run_id(params["plan_run"].get<std::string>()))
      return refuse("params.plan_run: expected the id of a plan run (run_...)");
    plan_run = params["plan_run"].get<std::string>();
    if (auto why = kept_plans_refused(ws); !why.empty())
      return refuse("params.plan_run: " + why);
    if (!vars.empty())
      return refuse("params.vars: a kept plan is applied with the vars it was planned "
                    "with; leave vars out");
    if (!fs::exists(kept_plan(ws, plan_run)))
      return refuse("params.plan_run: no kept plan of run " + plan_run + " in " + ws +
                    " on this agent (it was applied already, kept past keep_plans, or "
                    "planned on another agent or workspace: send the apply where the "
                    "plan ran)");
  }
  bool init = true;
  if (params.contains("init")) {
    if (!params["init"].is_boolean())
      return refuse("params.init: expected true or false" +
                    got_instead("init", params["init"]));
    init = params["init"].get<bool>();
  }
  auto& bin = s.binary;
  if (action == "init" || init)
    t.commands.push_back({bin, "init", "-input=false", "-no-color"});
  if (action == "plan") {
    auto plan_file = artifacts_dir + "/plan.tfplan";
    std::vector<std::string> cmd{bin, "plan", "-input=false", "-no-color",
                                 "-out=" + plan_file};
    cmd.insert(cmd.end(), vars.begin(), vars.end());
    t.commands.push_back(std::move(cmd));
    t.commands.push_back({bin, "show", "-no-color", plan_file});
    t.show_step = static_cast<int>(t.commands.size()) - 1;
    if (valid_run_id(run_id)) {
      if (auto why = kept_plans_refused(ws); !why.empty())
        return refuse("params.workspace: " + why);
      t.save_plan_to = kept_plan(ws, run_id);
    }
  } else if (action == "apply" && !plan_run.empty()) {
    // A saved plan applies without a prompt, exactly as it was reviewed;
    // terraform refuses it if the state changed since.
    t.applied_plan = kept_plan(ws, plan_run);
    t.commands.push_back({bin, "apply", "-input=false", "-no-color", t.applied_plan});
  } else if (action == "apply") {
    std::vector<std::string> cmd{bin, "apply", "-input=false", "-no-color",
                                 "-auto-approve"};
    cmd.insert(cmd.end(), vars.begin(), vars.end());
    t.commands.push_back(std::move(cmd));
  }
  return t;
}

std::shared_ptr<sdk::plan> make_terraform_plan(const nlohmann::json& settings,
                                               const std::string& key) {
  return std::make_shared<terraform_plan>(read_terraform_settings(settings, key));
}

} // namespace polymesh::plans
