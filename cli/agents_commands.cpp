// `meshctl agents ...`: list, show, label, drain, undrain, remove.
#include "cli/commands.hpp"
#include "mesh/config/mesh_config.hpp"
#include "mesh/domain/labels.hpp"
#include "mesh/domain/selector.hpp"
#include "mesh/wire/json.hpp"

#include <algorithm>
#include <chrono>
#include <iostream>
#include <optional>
#include <random>
#include <thread>

namespace polymesh::cli {

int64_t duration_seconds(const std::string& text, const std::string& flag) {
  auto d = parse_duration(text, flag);
  if (!d)
    throw failure{exit_usage,
                  flag + ": '" + text +
                      "' is not a duration; use a number with a unit, e.g. 90s, "
                      "10m, 2h, 1d"};
  auto ms = d->count();
  if (ms < 0) throw failure{exit_usage, flag + ": must not be negative"};
  return (ms + 999) / 1000;
}

void check_selector(const std::string& text, const std::string& flag) {
  if (auto sel = selector::parse(text, flag); !sel)
    throw usage_failure(sel.error(), text);
}

void check_satisfiable(const std::string& text, const std::string& flag) {
  auto sel = selector::parse(text, flag);
  if (!sel) throw usage_failure(sel.error(), text);
  if (auto why = sel->contradiction(); !why.empty())
    throw failure{exit_usage, flag + ": the selector can never match an agent: " + why};
  // What the mesh stores, and would refuse as too long.
  if (auto stored = wire::canonical_selector(*sel, flag); !stored)
    throw usage_failure(stored.error());
}

namespace {

/// `a` if it is an agent as meshd answers one.
json agent_answer(const mesh_client& mesh, json a) {
  return answer_with(
      std::move(a),
      {{"id", holds::id}, {"status", holds::text}, {"labels", holds::object}},
      mesh.last_call());
}

} // namespace

json find_agent(mesh_client& mesh, const std::string& id_or_name) {
  // An id (`agt_…`) passes as a name too; a typo fails here with exit 64,
  // not as "no such endpoint" from the mesh.
  if (auto err = wire::validate_agent_name(id_or_name, "NAME")) throw usage_failure(err);
  return agent_answer(mesh, mesh.get("/v1/agents/" + url_encode(id_or_name)));
}

namespace {

/// Whether meshd holds the agent back now (runs placed with it were not
/// started).
bool held_back(const json& a) {
  return a.contains("held_until") && a["held_until"].is_string();
}

/// The agent's status; an offline agent that comes back draining (it was
/// drained) says so.
std::string status_text(const json& a) {
  auto status = cell(a["status"]);
  if (status == "offline" && a.value("drained", false)) status += " (drained)";
  if (held_back(a)) status += " (held back)";
  return status;
}

/// Whether meshd holds the agent back after runs placed with it were not
/// started, and how many in a row lapsed.
std::string held_text(const json& a) {
  auto lapsed = a.value("lapsed_leases", json{});
  auto row = lapsed.is_number_integer() && lapsed.get<int64_t>() > 0
                 ? cell(lapsed) + " run" + (lapsed.get<int64_t>() == 1 ? "" : "s") +
                       " in a row not started within the delivery lease"
                 : std::string{};
  if (held_back(a))
    return "until " + cell(a["held_until"]) + (row.empty() ? "" : "  (" + row + ")");
  return row.empty() ? "no" : "no (" + row + ")";
}

std::vector<std::pair<std::string, std::string>> agent_fields(const json& a) {
  std::string plans;
  for (auto& p : a.value("plans", json::array()))
    plans += (plans.empty() ? "" : ",") + p.get<std::string>();
  return {
      {"id", cell(a["id"])},
      {"name", cell(a["name"])},
      {"status", cell(a["status"])},
      // An offline agent drained comes back draining.
      {"drained", !a.value("drained", false)                 ? "no"
                  : a.value("drained_by", json{}) == "admin" ? "yes (by an admin)"
                  : a.value("drained_by", json{}) == "agent" ? "yes (by the agent)"
                                                             : "yes"},
      {"held back", held_text(a)},
      {"labels", labels_text(a["labels"])},
      {"plans", plans.empty() ? "-" : plans},
      {"capacity", cell(a["capacity"])},
      {"version", cell(a["version"])},
      {"hostname", cell(a["hostname"])},
      {"scope", cell(a["scope"])},
      {"registered", cell(a["registered_at"]) + "  (" + age(a["registered_at"]) + ")"},
      {"last seen", cell(a["last_seen_at"]) + "  (" + age(a["last_seen_at"]) + ")"},
  };
}

void print_agent(const command_context& ctx, const json& a) {
  auto out = ctx.out();
  if (out.structured()) return out.emit(a);
  out.fields(agent_fields(a));
}

struct list_options {
  std::string selector;
  std::string status;
  std::string plan;
};

int list_agents(const command_context& ctx, const list_options& o) {
  check_selector(o.selector, "-l/--selector");
  if (!o.plan.empty())
    if (auto err = wire::validate_plan_name(o.plan, "--plan")) throw usage_failure(err);
  auto mesh = ctx.client();
  mesh.remember_input("selector", o.selector);
  auto body = answer_with(
      mesh.get("/v1/agents",
               {{"selector", o.selector}, {"status", o.status}, {"plan", o.plan}}),
      {{"agents", holds::list}}, mesh.last_call());
  auto out = ctx.out();
  if (out.structured()) {
    out.emit(body);
    return exit_ok;
  }
  std::vector<std::vector<std::string>> rows;
  for (auto& a : body["agents"]) {
    std::string plans;
    for (auto& p : a["plans"])
      plans += (plans.empty() ? "" : ",") + p.get<std::string>();
    rows.push_back({cell(a["name"]), status_text(a), labels_text(a["labels"]), plans,
                    cell(a["capacity"]), age(a["last_seen_at"]), cell(a["id"])});
  }
  if (rows.empty()) {
    std::cerr << "no agents match\n";
    return exit_ok;
  }
  out.table({"NAME", "STATUS", "LABELS", "PLANS", "SLOTS", "LAST SEEN", "ID"}, rows, 1);
  return exit_ok;
}

/// One `k=v` (set) or `k-` (remove) edit of an agent's labels.
struct label_edit {
  std::string key;
  std::optional<std::string> value; // none: remove
};

/// Reads the edits, validating each key and value the way the mesh will,
/// before anything is sent (exit 64).
std::vector<label_edit> parse_label_edits(const std::vector<std::string>& edits) {
  std::vector<label_edit> out;
  for (auto& e : edits) {
    if (e.size() > 1 && e.back() == '-' && e.find('=') == std::string::npos) {
      auto key = e.substr(0, e.size() - 1);
      if (auto err = validate_label_key(key, "labels." + key)) throw usage_failure(err);
      out.push_back({key, std::nullopt});
      continue;
    }
    auto eq = e.find('=');
    if (eq == std::string::npos || eq == 0)
      throw failure{exit_usage,
                    "'" + e + "' is neither KEY=VALUE (set) nor KEY- (remove)"};
    auto key = e.substr(0, eq);
    auto value = e.substr(eq + 1);
    if (auto err = validate_label_key(key, "labels." + key)) throw usage_failure(err);
    if (auto err = validate_label_value(value, "labels." + key)) throw usage_failure(err);
    out.push_back({key, value});
  }
  return out;
}

/// `labels` with `edits` applied; removing a label the agent does not have
/// is a failure (exit 1: it depends on the agent, and nothing is changed).
json edit_labels(json labels, const std::vector<label_edit>& edits) {
  if (!labels.is_object()) labels = json::object();
  for (auto& e : edits) {
    if (e.value) {
      labels[e.key] = *e.value;
    } else if (labels.contains(e.key)) {
      labels.erase(e.key);
    } else {
      throw failure{exit_refused, "label '" + e.key + "' is not set on this agent"};
    }
  }
  return labels;
}

/// How often `agents label` reads and writes again when the labels changed
/// under it; it waits a random while, longer each time, before each retry.
constexpr int relabel_attempts = 20;

/// The agent `name` with `edits` applied to its labels. The API replaces
/// all labels at once, so this reads them, edits and writes them back on
/// the condition (`If-Match`) that they are still what was read: an edit
/// made meanwhile (another `agents label`) is read again and kept, not
/// overwritten.
json relabel(mesh_client& mesh, const std::string& name,
             const std::vector<label_edit>& edits) {
  for (int attempt = 1;; ++attempt) {
    auto agent = find_agent(mesh, name);
    auto etag = mesh.last_etag();
    auto labels = edit_labels(agent["labels"], edits);
    auto path = "/v1/agents/" + url_encode(agent["id"].get<std::string>());
    try {
      return agent_answer(mesh, mesh.patch(path, json{{"labels", labels}}, etag));
    } catch (const failure&) {
      if (mesh.last_status() != 412) throw;
      if (attempt == relabel_attempts)
        throw failure{exit_refused,
                      "the labels of agent '" + name + "' kept changing while meshctl " +
                          "edited them: gave up after " +
                          std::to_string(relabel_attempts) + " tries, nothing changed",
                      {"other edits of its labels are going on; try again"}};
    }
    // Edits at once retry at once: spread them (5 ms to 0.5 s).
    static thread_local std::mt19937 rng{std::random_device{}()};
    auto most = std::min(25 * attempt, 500);
    std::this_thread::sleep_for(
        std::chrono::milliseconds{std::uniform_int_distribution<int>{5, most}(rng)});
  }
}

/// `agents drain NAME` or `agents undrain NAME` (`verb`): POSTs the agent's
/// `/verb` and prints the status it is left in, painted `paint`.
void add_drain_command(CLI::App* agents, command_context& ctx,
                       const std::shared_ptr<std::string>& name, const std::string& verb,
                       const std::string& description, color paint) {
  auto* cmd = agents->add_subcommand(verb, description);
  cmd->add_option("NAME", *name, "Agent name or id")->required();
  cmd->callback([&ctx, name, verb, paint] {
    ctx.action = [&ctx, name, verb, paint] {
      auto mesh = ctx.client();
      auto id = find_agent(mesh, *name)["id"].get<std::string>();
      auto a = agent_answer(mesh, mesh.post("/v1/agents/" + url_encode(id) + "/" + verb));
      auto out = ctx.out();
      if (out.structured())
        out.emit(a);
      else
        std::cout << "agent " << a.value("name", *name) << " is "
                  << out.paint(a.value("status", ""), paint) << '\n';
      return exit_ok;
    };
  });
}

} // namespace

void add_agents_commands(CLI::App& app, command_context& ctx) {
  auto* agents = app.add_subcommand("agents", "Inspect and manage agents");
  agents->require_subcommand(1);

  auto lo = std::make_shared<list_options>();
  auto* list =
      agents->add_subcommand("list", "List agents, filtered by selector, status, plan");
  list->alias("ls");
  list->add_option("-l,--selector", lo->selector, "Label selector, e.g. 'env=prod,gpu'");
  list->add_option("--status", lo->status, "online, draining, offline or deregistered")
      ->check(CLI::IsMember({"online", "draining", "offline", "deregistered"}));
  list->add_option("--plan", lo->plan, "Only agents that offer this plan");
  list->callback(
      [&ctx, lo] { ctx.action = [&ctx, lo] { return list_agents(ctx, *lo); }; });

  auto name = std::make_shared<std::string>();
  auto* show = agents->add_subcommand("show", "Show one agent by name or id");
  show->add_option("NAME", *name, "Agent name or id")->required();
  show->callback([&ctx, name] {
    ctx.action = [&ctx, name] {
      auto mesh = ctx.client();
      print_agent(ctx, find_agent(mesh, *name));
      return exit_ok;
    };
  });

  auto edits = std::make_shared<std::vector<std::string>>();
  auto* label =
      agents->add_subcommand("label", "Set (KEY=VALUE) or remove (KEY-) labels at "
                                      "runtime; the next assignment uses them");
  label->add_option("NAME", *name, "Agent name or id")->required();
  label->add_option("EDITS", *edits, "KEY=VALUE to set, KEY- to remove")->required();
  label->callback([&ctx, name, edits] {
    ctx.action = [&ctx, name, edits] {
      auto mesh = ctx.client();
      auto parsed = parse_label_edits(*edits);
      auto updated = relabel(mesh, *name, parsed);
      auto out = ctx.out();
      if (out.structured())
        out.emit(updated);
      else
        std::cout << "agent " << updated.value("name", *name)
                  << " labels: " << labels_text(updated["labels"]) << '\n';
      return exit_ok;
    };
  });

  add_drain_command(agents, ctx, name, "drain",
                    "Stop giving an agent new runs; it finishes what it has",
                    color::yellow);
  add_drain_command(agents, ctx, name, "undrain", "Give a drained agent new runs again",
                    color::green);

  auto* remove = agents->add_subcommand(
      "remove",
      "Remove an agent: revoke its token; its runs go back to the queue or end");
  remove->alias("rm");
  remove->add_option("NAME", *name, "Agent name or id")->required();
  remove->callback([&ctx, name] {
    ctx.action = [&ctx, name] {
      auto mesh = ctx.client();
      auto id = find_agent(mesh, *name)["id"].get<std::string>();
      auto a = agent_answer(mesh, mesh.del("/v1/agents/" + url_encode(id)));
      auto out = ctx.out();
      if (out.structured())
        out.emit(a);
      else
        std::cout << "agent " << a.value("name", *name) << " removed\n";
      return exit_ok;
    };
  });
}

} // namespace polymesh::cli
