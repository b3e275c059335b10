// `meshctl plans list` and `meshctl status`: views of the whole mesh.
#include "cli/commands.hpp"

#include <iostream>
#include <map>

namespace polymesh::cli {

namespace {

/// Plans offered by agents: there is no plans endpoint, so this aggregates
/// `GET /v1/agents` (deregistered agents offer nothing).
json plans_of(const json& agents) {
  struct counts {
    int64_t agents = 0, online = 0, draining = 0, offline = 0, slots = 0;
  };
  std::map<std::string, counts> by_plan;
  for (auto& a : agents) {
    auto status = a.value("status", "");
    if (status == "deregistered") continue;
    for (auto& p : a["plans"]) {
      auto& c = by_plan[p.get<std::string>()];
      ++c.agents;
      if (status == "online") {
        ++c.online;
        c.slots += a.value("capacity", int64_t{1});
      } else if (status == "draining") {
        ++c.draining;
      } else {
        ++c.offline;
      }
    }
  }
  json out = json::array();
  for (auto& [plan, c] : by_plan)
    out.push_back(json{{"plan", plan},
                       {"agents", c.agents},
                       {"online", c.online},
                       {"draining", c.draining},
                       {"offline", c.offline},
                       {"online_slots", c.slots}});
  return json{{"plans", out}};
}

int list_plans(const command_context& ctx) {
  auto mesh = ctx.client();
  auto plans = plans_of(answer_with(mesh.get("/v1/agents"), {{"agents", holds::list}},
                                    mesh.last_call())["agents"]);
  auto out = ctx.out();
  if (out.structured()) {
    out.emit(plans);
    return exit_ok;
  }
  std::vector<std::vector<std::string>> rows;
  for (auto& p : plans["plans"])
    rows.push_back({p["plan"].get<std::string>(),
                    std::to_string(p["agents"].get<int64_t>()),
                    std::to_string(p["online"].get<int64_t>()),
                    std::to_string(p["draining"].get<int64_t>()),
                    std::to_string(p["offline"].get<int64_t>()),
                    std::to_string(p["online_slots"].get<int64_t>())});
  if (rows.empty())
    std::cerr << "no agent offers any plan\n";
  else
    out.table({"PLAN", "AGENTS", "ONLINE", "DRAINING", "OFFLINE", "SLOTS"}, rows);
  return exit_ok;
}

int status(const command_context& ctx) {
  auto mesh = ctx.client();
  auto ready =
      answer_with(mesh.get("/readyz"), {{"status", holds::text}}, mesh.last_call());
  auto out = ctx.out();
  if (out.structured()) {
    out.emit(ready);
    return exit_ok;
  }
  auto count = [](const json& obj, const char* key) {
    return obj.is_object() && obj.contains(key) ? obj[key].get<int64_t>() : int64_t{0};
  };
  auto& runs = ready["runs"];
  auto& agents = ready["agents"];
  auto list = [&](const json& obj, std::initializer_list<const char*> keys) {
    std::string text;
    for (auto* k : keys) {
      if (!text.empty()) text += "  ";
      auto n = count(obj, k);
      auto part = std::string{k} + " " + std::to_string(n);
      text += n > 0 ? out.paint(part, printer::status_color(k)) : part;
    }
    return text;
  };
  out.fields({
      {"mesh", mesh.base_url()},
      {"status", ready.value("status", "")},
      {"agents", list(agents, {"online", "draining", "offline", "deregistered"})},
      {"queue depth", std::to_string(count(runs, "created")) + " waiting for an agent"},
      {"runs",
       list(runs, {"created", "pending", "running", "success", "error", "canceled"})},
  });
  return exit_ok;
}

} // namespace

void add_mesh_commands(CLI::App& app, command_context& ctx) {
  auto* plans = app.add_subcommand("plans", "Plans offered by the agents");
  plans->require_subcommand(1);
  auto* list = plans->add_subcommand("list", "Each plan with its agent and slot counts");
  list->alias("ls");
  list->callback([&ctx] { ctx.action = [&ctx] { return list_plans(ctx); }; });

  auto* st = app.add_subcommand(
      "status", "Mesh health: agents by status, runs by status, queue depth");
  st->callback([&ctx] { ctx.action = [&ctx] { return status(ctx); }; });
}

} // namespace polymesh::cli
