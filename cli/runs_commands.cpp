// `meshctl runs ...`: submit (optionally waiting and following the log),
// list, show, logs, cancel, explain, wait, artifacts.
#include "cli/commands.hpp"
#include "mesh/config/yaml_guard.hpp"
#include "mesh/domain/error.hpp"
#include "mesh/domain/ids.hpp"
#include "mesh/wire/json.hpp"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <map>
#include <optional>
#include <regex>
#include <set>
#include <sstream>
#include <string_view>
#include <sys/stat.h>
#include <thread>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

namespace polymesh::cli {

namespace {

bool terminal(const std::string& status) {
  return status == "success" || status == "error" || status == "canceled";
}

int exit_code_of(const std::string& status) {
  if (status == "success") return exit_ok;
  if (status == "canceled") return exit_canceled;
  return exit_failed;
}

std::string read_file(const std::string& path, const std::string& flag) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec))
    throw failure{exit_usage, flag + ": " + path + " is a directory, not a file"};
  std::ifstream in{path, std::ios::binary};
  if (!in)
    throw failure{exit_usage,
                  flag + ": cannot read " + path + ": " + std::strerror(errno)};
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

/// A plain (unquoted) YAML scalar as JSON. YAML 1.1 reads `1.10` as 1.1,
/// `010` as 8, `0x1F` as 31 and `yes` as true: a deploy's `version: 1.10`
/// would quietly become another version. So only the canonical forms become
/// numbers or booleans, anything YAML would read differently is refused with
/// a hint to quote it, and the rest stays text.
json plain_scalar(const YAML::Node& n, const std::string& where) {
  const auto& text = n.Scalar();
  static const std::regex integer{"-?(0|[1-9][0-9]*)"};
  static const std::regex decimal{"-?(0|[1-9][0-9]*)(\\.[0-9]+)?([eE][-+]?[0-9]+)?"};
  if (text == "true" || text == "false") return text == "true";
  int64_t i = 0;
  if (std::regex_match(text, integer) && YAML::convert<int64_t>::decode(n, i)) return i;
  double d = 0;
  if (std::regex_match(text, decimal) && YAML::convert<double>::decode(n, d) &&
      json(d).dump() == text)
    return d;
  bool b = false;
  std::string read_as;
  if (YAML::convert<int64_t>::decode(n, i))
    read_as = std::to_string(i);
  else if (YAML::convert<double>::decode(n, d))
    read_as = json(d).dump();
  else if (YAML::convert<bool>::decode(n, b))
    read_as = b ? "true" : "false";
  if (read_as.empty()) return text;
  throw failure{exit_usage, "--params-file: " + where + ": '" + text +
                                "' is ambiguous (YAML may read it as " + read_as +
                                "); quote it (\"" + text +
                                "\") to send it as text, or write " + read_as +
                                " for the value"};
}

/// `n` as JSON; `budget` bounds the depth and size (an alias inside its own
/// anchor, aliases of aliases).
json yaml_to_json(const YAML::Node& n, yaml_budget& budget, const std::string& where) {
  budget.enter(n);
  json out;
  switch (n.Type()) {
  case YAML::NodeType::Map: {
    out = json::object();
    for (auto it = n.begin(); it != n.end(); ++it) {
      auto key = it->first.as<std::string>();
      auto at = where.empty() ? key : where + "." + key;
      // yaml-cpp keeps both; the mesh refuses a key given twice in JSON.
      if (out.contains(key))
        throw failure{exit_usage, "--params-file: " + visible(at) + ": given twice"};
      out[key] = yaml_to_json(it->second, budget, at);
    }
    break;
  }
  case YAML::NodeType::Sequence: {
    out = json::array();
    size_t i = 0;
    for (auto& x : n)
      out.push_back(yaml_to_json(x, budget, where + "[" + std::to_string(i++) + "]"));
    break;
  }
  case YAML::NodeType::Scalar:
    // Quoted: always a string.
    out = n.Tag() == "!" ? json(n.Scalar()) : plain_scalar(n, where);
    break;
  default: out = nullptr;
  }
  budget.leave();
  return out;
}

/// `text` as JSON, discarded when it is not; `what` names it in the usage
/// error for JSON nested deeper than the mesh takes (deeper still would
/// overflow the stack when it is written out) or holding a key twice in
/// one object (the mesh refuses that too: the last one would have won).
json parse_json_value(const std::string& text, const std::string& what) {
  std::vector<std::set<std::string>> keys;
  return json::parse(
      text,
      [&](int depth, json::parse_event_t event, json& parsed) {
        if (depth > wire::max_json_depth)
          throw failure{exit_usage, what + ": nested deeper than " +
                                        std::to_string(wire::max_json_depth) +
                                        " levels, more than the mesh takes"};
        if (event == json::parse_event_t::object_start) keys.emplace_back();
        if (event == json::parse_event_t::object_end && !keys.empty()) keys.pop_back();
        if (event == json::parse_event_t::key && !keys.empty() &&
            !keys.back().insert(parsed.get<std::string>()).second)
          throw failure{exit_usage, what + ": has the key '" +
                                        visible(parsed.get<std::string>()) +
                                        "' twice in one object"};
        return true;
      },
      false);
}

/// `r`, a run as meshd answers it (an id and a status, both text), or exit 3:
/// a proxy or another server that answers JSON must not pass for a run with
/// every field blank (a submit would then wait on an empty id).
json run_answer(json r, const std::string& what) {
  if (!r.is_object() || !r["id"].is_string() || r["id"].get<std::string>().empty() ||
      !r["status"].is_string())
    throw failure{exit_refused, what + ": the answer is not a run (no id or status): is "
                                       "the mesh URL a meshd's?"};
  return r;
}

/// Standard input, whole; `flag` names it in a failure.
std::string read_stdin(const std::string& flag) {
  std::string text{std::istreambuf_iterator<char>{std::cin},
                   std::istreambuf_iterator<char>{}};
  if (std::cin.bad())
    throw failure{exit_usage, flag + ": cannot read standard input: " +
                                  std::strerror(errno ? errno : EIO)};
  return text;
}

/// The params object: `--params-file` (JSON or YAML; `-` is standard
/// input), then each `--param` on top. `k=v` sets a string, `k:=JSON` a
/// typed value.
json build_params(const std::string& file, const std::vector<std::string>& params) {
  json out = json::object();
  if (!file.empty()) {
    auto text =
        file == "-" ? read_stdin("--params-file -") : read_file(file, "--params-file");
    out = parse_json_value(text, "--params-file " + file);
    if (out.is_discarded()) {
      try {
        yaml_budget budget;
        out = yaml_to_json(YAML::Load(text), budget, "");
      } catch (const failure&) {
        throw;
      } catch (const std::exception& e) {
        throw failure{exit_usage, "--params-file " + file + ": neither JSON nor YAML (" +
                                      e.what() + ")"};
      }
    }
    if (!out.is_object())
      throw failure{exit_usage,
                    "--params-file " + file + ": must hold an object of parameters"};
  }
  for (auto& p : params) {
    auto eq = p.find('=');
    if (eq == std::string::npos || eq == 0)
      throw failure{exit_usage, "--param '" + p + "': expected KEY=VALUE or KEY:=JSON"};
    if (p[eq - 1] == ':') {
      auto value =
          parse_json_value(p.substr(eq + 1), "--param '" + p.substr(0, eq - 1) + "'");
      if (value.is_discarded())
        throw failure{exit_usage, "--param '" + p + "': the value after := is not JSON"};
      out[p.substr(0, eq - 1)] = value;
    } else {
      out[p.substr(0, eq)] = p.substr(eq + 1);
    }
  }
  return out;
}

/// Prints log chunks: data verbatim to stdout or stderr by stream in table
/// mode; one JSON object per line with `-o json`, a YAML document each with
/// `-o yaml`.
void print_chunks(const printer& out, const json& chunks) {
  for (auto& c : chunks) {
    if (out.format() == output_format::json) {
      std::cout << c.dump(-1, ' ', false, json::error_handler_t::replace) << '\n';
    } else if (out.format() == output_format::yaml) {
      std::cout << "---\n" << to_yaml(c) << '\n';
    } else {
      auto data = c.value("data", "");
      (c.value("stream", "stdout") == "stderr" ? std::cerr : std::cout) << data;
    }
  }
  std::cout << std::flush;
}

/// One page of run `id`'s log after seq `after`.
json logs_page(mesh_client& mesh, const std::string& id, int64_t after) {
  return answer_with(mesh.get("/v1/runs/" + url_encode(id) + "/logs",
                              {{"after", std::to_string(after)}, {"limit", "1000"}}),
                     {{"chunks", holds::list}}, mesh.last_call());
}

/// Fetches and prints every chunk after `after`; returns the new `after`.
/// `open_line` says whether the last chunk printed left its line unended.
int64_t drain_logs(mesh_client& mesh, const printer& out, const std::string& id,
                   int64_t after, spinner* sp, bool* open_line = nullptr) {
  for (;;) {
    auto page = logs_page(mesh, id, after);
    auto& chunks = page["chunks"];
    if (chunks.empty()) return after;
    if (sp) sp->clear();
    print_chunks(out, chunks);
    // A line the plan has not ended yet (a prompt, progress dots) stays on
    // screen: no spinner over it until the log ends the line.
    auto data = chunks.back().value("data", "");
    bool open = !out.structured() && !data.empty() && data.back() != '\n';
    if (sp) sp->hold(open);
    if (open_line) *open_line = open;
    after = page.value("next_after", after);
    // A meshd older than `more` is read until a page is empty.
    if (!page.value("more", true)) return after;
  }
}

/// Why a waiting run has no agent, in one line, or "" when one can take it
/// (or the question cannot be answered now).
std::string why_waiting(mesh_client& mesh, const std::string& id) {
  json body;
  try {
    body = mesh.get("/v1/runs/" + url_encode(id) + "/explain");
  } catch (const failure&) {
    return {};
  }
  if (body.value("assigned", true)) return {};
  if (body["waiting_for"].is_object()) return body.value("message", "");
  const auto& agents = body["agents"];
  if (agents.empty()) return body.value("message", "");
  std::string reasons;
  size_t shown = 0;
  bool busy = false;
  for (auto& a : agents) {
    if (a.value("candidate", false)) return {};
    // The last check: such an agent meets every other one.
    auto reason = a["reason"].is_string() ? a["reason"].get<std::string>() : "";
    busy = busy || reason.rfind("no free slot (", 0) == 0;
    if (shown == 3) continue;
    reasons += (shown++ ? "; " : "") + cell(a["agent_name"]) + ": " + cell(a["reason"]);
  }
  if (agents.size() > shown)
    reasons += "; " + std::to_string(agents.size() - shown) + " more";
  if (busy) return "every agent that could take it is busy (" + reasons + ")";
  return "no agent can take it (" + reasons + ")";
}

/// "; agent NAME is STATUS, last seen AGE" for a run whose agent is not
/// online, else "" (also when the mesh does not answer: the wait says so).
std::string agent_health(mesh_client& mesh, const json& run) {
  if (!run["assigned_agent"].is_string()) return {};
  json a;
  try {
    a = mesh.get_or_null("/v1/agents/" +
                         url_encode(run["assigned_agent"].get<std::string>()));
  } catch (const failure&) {
    return {};
  }
  if (!a.is_object()) return "; its agent is gone";
  auto status = a.value("status", "");
  if (status == "online") return {};
  return "; agent " + cell(a["name"]) + " is " + status + ", last seen " +
         age(a["last_seen_at"]);
}

/// A run that ended, and whether the log it streamed left a line unended.
struct finished_wait {
  json run;
  bool log_line_open = false;
};

/// Polls the run until it is terminal, streaming its log when `follow`.
/// Without `follow` each poll after the first waits in the mesh for up to
/// 1 s for the run to leave the status last seen, so a change shows at once.
/// A run that ended and was retried (`retried_by`) is followed by its retry,
/// said on stderr. Returns the final run object.
finished_wait wait_for_run(const command_context& ctx, mesh_client& mesh,
                           const std::string& first_id, bool follow) {
  auto id = first_id;
  auto out = ctx.out();
  spinner sp{ctx.config()};
  int64_t after = -1;
  bool open_line = false;
  auto interval = std::chrono::milliseconds{100};
  // A restarting mesh (an upgrade) must not fail the CI job waiting here:
  // the run goes on. Ride out an outage of up to `outage_grace`.
  constexpr auto outage_grace = std::chrono::seconds{60};
  std::optional<std::chrono::steady_clock::time_point> down_since;
  // Without a terminal there is no spinner: each change of state is a line
  // on stderr instead, so a CI log shows what the wait is about.
  bool lines = !ctx.config().interactive;
  std::string last_state;
  std::string last_status;
  auto asked = std::chrono::steady_clock::now();
  // A mesh older than `?wait=` on a run refuses it: then meshctl polls.
  bool mesh_waits = !follow;
  // A run still waiting after `explain_after` gets the mesh's reason (no
  // agent offers the plan, none matches...), again when it changes.
  constexpr auto explain_after = std::chrono::seconds{5};
  constexpr auto explain_every = std::chrono::seconds{30};
  auto next_explain = std::chrono::steady_clock::now() + explain_after;
  std::string last_why;
  // Without a terminal, a wait that prints nothing new says every minute that
  // it is still waiting (CI systems end a step that is silent for 10
  // minutes), and how the run's agent is when it is not online.
  const auto still_every = std::chrono::seconds{ctx.config().heartbeat_s};
  const auto began = std::chrono::steady_clock::now();
  auto next_still = began + still_every;
  // Agents are shown by name, looked up once per id (the id if it is gone).
  std::map<std::string, std::string> agent_names;
  auto agent_name = [&](const std::string& agent_id) {
    auto it = agent_names.find(agent_id);
    if (it != agent_names.end()) return it->second;
    std::string name = agent_id;
    try {
      auto a = mesh.get_or_null("/v1/agents/" + url_encode(agent_id));
      if (a.is_object() && a["name"].is_string()) name = a["name"].get<std::string>();
    } catch (const failure&) {
      // Shown by id; the wait itself reports a mesh that stopped answering.
    }
    return agent_names[agent_id] = name;
  };
  for (;;) {
    json run;
    // An outage counts from the start of the read that failed: a mesh that
    // hangs takes a whole answer's time to fail (60 s) before it is seen.
    auto attempt = std::chrono::steady_clock::now();
    try {
      if (follow) {
        auto before = after;
        after = drain_logs(mesh, out, id, after, &sp, &open_line);
        // The log said something: the wait is not silent.
        if (after != before) next_still = std::chrono::steady_clock::now() + still_every;
      }
      asked = std::chrono::steady_clock::now();
      auto path = "/v1/runs/" + url_encode(id);
      if (mesh_waits && !last_status.empty())
        path += "?wait=1&while_status=" + last_status;
      run = run_answer(mesh.get(path), "GET " + path);
    } catch (const failure& f) {
      if (mesh_waits && std::string_view{f.what()}.find(
                            "unknown query parameter 'wait'") != std::string_view::npos) {
        mesh_waits = false;
        continue;
      }
      auto now = std::chrono::steady_clock::now();
      if (f.code() != exit_unreachable ||
          now - down_since.value_or(attempt) >= outage_grace)
        throw;
      if (!down_since) {
        down_since = attempt;
        sp.clear();
        std::cerr << "meshctl: " << f.what() << "; retrying for up to "
                  << outage_grace.count() << " s" << std::endl;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds{500});
      continue;
    }
    if (down_since) {
      down_since.reset();
      sp.clear();
      std::cerr << "meshctl: the mesh answers again" << std::endl;
    }
    auto status = run.value("status", "");
    bool changed = status != last_status;
    last_status = status;
    if (terminal(status)) {
      // Chunks written just before the finish are still to be shown.
      if (follow) drain_logs(mesh, out, id, after, &sp, &open_line);
      sp.clear();
      if (!run["retried_by"].is_string()) return {std::move(run), open_line};
      // The mesh submitted it again: the wait goes on with the retry.
      auto next = run["retried_by"].get<std::string>();
      std::cerr << (open_line ? "\n" : "") << "meshctl: run " << id << " ended " << status
                << (run["reason"].is_string() ? "/" + run["reason"].get<std::string>()
                                              : "")
                << "; the mesh retries it as run " << next << " (retry "
                << cell(run["retry_number"].is_number_integer()
                            ? json(run["retry_number"].get<int64_t>() + 1)
                            : json(nullptr))
                << " of " << cell(run.value("retry", json::object()).value("max", json{}))
                << ")" << std::endl;
      open_line = false;
      id = next;
      after = -1;
      last_status.clear();
      last_state.clear();
      last_why.clear();
      continue;
    }
    std::string where =
        run["assigned_agent"].is_string()
            ? " on " + agent_name(run["assigned_agent"].get<std::string>())
            : std::string{};
    auto state = "run " + id + " " + status + where;
    auto now = std::chrono::steady_clock::now();
    if (state != last_state) {
      if (lines) std::cerr << "meshctl: " << state << std::endl;
      last_state = state;
      next_explain = now + explain_after;
      next_still = now + still_every;
    } else if (lines && now >= next_still) {
      next_still = now + still_every;
      auto secs = std::chrono::duration_cast<std::chrono::seconds>(now - began).count();
      std::cerr << (open_line ? "\n" : "") << "meshctl: " << state << ", waited "
                << (secs < 120 ? std::to_string(secs) + " s"
                               : std::to_string(secs / 60) + " min")
                << agent_health(mesh, run) << std::endl;
      open_line = false; // that line is ended now
    }
    if (status == "created" && now >= next_explain) {
      next_explain = now + explain_every;
      auto why = why_waiting(mesh, id);
      if (!why.empty() && why != last_why) {
        sp.clear();
        std::cerr << "meshctl: run " << id << " is waiting: " << why << std::endl;
      }
      last_why = why;
    }
    sp.update(state);
    if (mesh_waits) {
      // The next poll waits in the mesh. One that came back unchanged before
      // its second (a mesh with `agents.poll_wait_max: 0`, or all of its
      // `http.run_waits` taken) paces the loop.
      if (!changed) std::this_thread::sleep_until(asked + std::chrono::seconds{1});
      continue;
    }
    // Poll fast at first (short runs end quickly), then settle at 1 s.
    std::this_thread::sleep_for(interval);
    interval = std::min(interval * 2, std::chrono::milliseconds{1000});
  }
}

std::vector<std::pair<std::string, std::string>> run_fields(const json& r) {
  std::vector<std::pair<std::string, std::string>> kv{
      {"id", cell(r["id"])},
      {"plan", cell(r["plan"])},
      {"status", cell(r["status"])},
      {"skadi_status", cell(r["skadi_status"])},
      {"reason", cell(r["reason"])},
      {"selector", cell(r["selector"])},
      {"target agent", cell(r["target_agent"])},
      {"assigned agent", cell(r["assigned_agent"])},
      {"priority", cell(r["priority"])},
      {"concurrency key", cell(r["concurrency_key"])},
      {"attempts", cell(r["attempts"])},
  };
  // Retries: shown for runs that have them.
  if (auto retry = r.value("retry", json{}); retry.is_object()) {
    std::string on;
    for (auto& reason : retry.value("on", json::array()))
      on += (on.empty() ? "" : ", ") + cell(reason);
    auto max = cell(retry["max"]);
    kv.emplace_back("retry",
                    "up to " + max + (max == "1" ? " time" : " times") + ", after " + on);
  }
  if (r["retry_of"].is_string())
    kv.emplace_back("retry of",
                    cell(r["retry_of"]) + " (retry " + cell(r["retry_number"]) + ")");
  if (r["retried_by"].is_string()) kv.emplace_back("retried by", cell(r["retried_by"]));
  std::vector<std::pair<std::string, std::string>> rest{
      {"params", r.contains("params") ? cell(r["params"]) : "{}"},
      {"payload", cell(r["payload"])},
      {"exit code", cell(r["exit_code"])},
      {"result", cell(r["result"])},
      {"error", cell(r["error"])},
      {"progress", cell(r["progress"])},
      {"created", cell(r["created_at"])},
      {"assigned", cell(r["assigned_at"])},
      {"started", cell(r["started_at"])},
      {"finished", cell(r["finished_at"])},
  };
  kv.insert(kv.end(), rest.begin(), rest.end());
  return kv;
}

void print_run(const printer& out, const json& r) {
  if (out.structured())
    out.emit(r);
  else
    out.fields(run_fields(r));
}

/// Reports a finished wait and returns the exit code for its status.
int finish_wait(const command_context& ctx, const finished_wait& waited, bool follow) {
  const auto& run = waited.run;
  auto out = ctx.out();
  auto status = run.value("status", "");
  if (out.structured()) {
    if (follow && out.format() == output_format::json)
      std::cout << run.dump(-1, ' ', false, json::error_handler_t::replace) << '\n';
    else if (follow)
      // A document of its own after the chunks' documents.
      std::cout << "---\n" << to_yaml(run) << '\n';
    else
      out.emit(run);
  } else if (follow) {
    std::string line = "run " + run.value("id", "") + " " + status;
    if (run["reason"].is_string()) line += " (" + run["reason"].get<std::string>() + ")";
    if (run["exit_code"].is_number_integer())
      line += ", exit code " + std::to_string(run["exit_code"].get<int64_t>());
    // Why it failed, when the log may not say (a program not found, a
    // parameter the plan refused): the error's first line.
    if (auto error = run.value("error", json{});
        error.is_string() && !error.get<std::string>().empty()) {
      auto text = error.get<std::string>();
      auto first = text.substr(0, text.find('\n'));
      if (first.size() > 300) {
        // Not within a UTF-8 character.
        size_t cut = 300;
        while (cut > 0 && (static_cast<unsigned char>(first[cut]) & 0xc0) == 0x80)
          --cut;
        first = first.substr(0, cut) + "...";
      }
      line += ": " + first;
    }
    // A log that did not end its line. The error is the agent's text.
    std::cerr << (waited.log_line_open ? "\n" : "")
              << out.paint_err(visible(line), printer::status_color(status)) << '\n';
  } else {
    print_run(out, run);
  }
  return exit_code_of(status);
}

struct submit_options {
  std::string plan;
  std::string selector;
  std::string agent;
  std::vector<std::string> params;
  std::string params_file;
  std::string payload;
  int64_t priority = 0;
  std::string timeout;
  std::string ttl;
  std::string idempotency_key;
  std::string concurrency_key;
  /// `--retry`, when given.
  std::optional<int64_t> retry;
  std::string retry_on;
  bool wait = false;
  bool follow = false;
};

/// A refusal of the shared contract named by the flag that gave the value.
failure usage_failure_of_flag(const caf::error& err) {
  static const std::map<std::string, std::string> flags{
      {"plan", "PLAN"},
      {"selector", "-l/--selector"},
      {"agent", "--agent"},
      {"params", "--param"},
      {"payload", "--payload"},
      {"priority", "--priority"},
      {"timeout_s", "--timeout"},
      {"ttl_s", "--ttl"},
      {"idempotency_key", "--idempotency-key"},
      {"concurrency_key", "--concurrency-key"}};
  // `retry.max` and `retry.on[i]`: two flags of one field.
  if (auto field = field_of(err); field.rfind("retry.", 0) == 0) {
    auto message = message_of(err);
    if (auto named = "field '" + field + "' "; message.rfind(named, 0) == 0)
      message.erase(0, named.size());
    return failure{exit_usage,
                   (field.rfind("retry.on", 0) == 0 ? "--retry-on: " : "--retry: ") +
                       message};
  }
  return cli::usage_failure_of_flag(err, flags);
}

/// Posts the run; while the mesh cannot be reached or gives no answer, sends
/// it again for up to a minute (each send waits up to a minute for its
/// answer). Safe: the body carries an idempotency key, so the mesh creates
/// the run once however many of the sends it got. `resent` is set when a
/// send was repeated.
json post_run(mesh_client& mesh, const json& body, bool& resent) {
  constexpr auto outage_grace = std::chrono::seconds{60};
  std::optional<std::chrono::steady_clock::time_point> down_since;
  bool maybe_created = false;
  for (;;) {
    try {
      auto run = run_answer(mesh.post("/v1/runs", body), "POST /v1/runs");
      if (down_since) std::cerr << "meshctl: the mesh answers again" << std::endl;
      return run;
    } catch (const failure& f) {
      if ((f.code() != exit_unreachable && f.code() != exit_no_answer) || f.is_lasting())
        throw;
      maybe_created = maybe_created || f.code() == exit_no_answer;
      auto now = std::chrono::steady_clock::now();
      if (down_since && now - *down_since > outage_grace) {
        if (!maybe_created) throw;
        // A send got no answer: the run may exist. Repeating the same key
        // is safe; a submit without it could make a second run.
        auto key = body.value("idempotency_key", "");
        throw failure{exit_no_answer,
                      f.what(),
                      {"the run may have been created: submit again with "
                       "--idempotency-key " +
                       key + ", which creates it at most once"}};
      }
      if (!down_since) {
        down_since = now;
        std::cerr << "meshctl: " << f.what() << "; sending the run again for up to "
                  << outage_grace.count()
                  << " s (its idempotency key makes the mesh create it once)"
                  << std::endl;
      }
      resent = true;
      std::this_thread::sleep_for(std::chrono::milliseconds{500});
    }
  }
}

/// Sends `req` (checked against the shared contract first) and prints the
/// new run, or waits for it as `--wait` / `--follow` say; `origin` is
/// appended to the "submitted" line (" as a rerun of run_…"). Without an
/// idempotency key of the user's, the run gets one of meshctl's own, so that
/// a send that got no answer can be repeated without a second run.
int send_run(const command_context& ctx, wire::run_request req, bool wait, bool follow,
             const std::string& origin = {}) {
  bool own_key = req.idempotency_key.empty();
  if (own_key) req.idempotency_key = new_id("meshctl");
  auto body = wire::to_json(req);
  // The shared contract checks names and bounds before anything is sent;
  // size limits are the server's to enforce.
  wire::limits unbounded{SIZE_MAX, SIZE_MAX};
  if (auto parsed = wire::parse_run_request(body, unbounded); !parsed)
    throw usage_failure_of_flag(parsed.error());
  auto mesh = ctx.client();
  mesh.remember_input("selector", req.selector);
  bool resent = false;
  auto run = post_run(mesh, body, resent);
  auto id = run.value("id", "");
  // 200 instead of 201: the key was taken, and this is that earlier run
  // (whatever this submit asked for); with meshctl's own key, or after a
  // resend, most likely this submit's own send that got no answer.
  std::string what =
      mesh.last_status() == 200 && !own_key && !resent
          ? "already submitted with idempotency key '" + req.idempotency_key + "'"
          : "submitted" + origin;
  auto out = ctx.out();
  bool earlier = what.rfind("already", 0) == 0;
  if (!wait && !follow) {
    if (out.structured()) {
      // stdout stays the run alone; a script that reads it learns from
      // stderr that the run is an earlier one.
      if (earlier)
        std::cerr << "run " << id << " " << what << " (" << run.value("status", "")
                  << ")\n";
      out.emit(run);
    } else
      std::cout << "run " << id << " " << what << " ("
                << out.paint(run.value("status", ""),
                             printer::status_color(run.value("status", "")))
                << ")\n";
    return exit_ok;
  }
  if (!out.structured() || earlier)
    std::cerr << "run " << id << " " << what << "; "
              << (follow ? "following its log" : "waiting for it to end") << '\n';
  return finish_wait(ctx, wait_for_run(ctx, mesh, id, follow), follow);
}

int submit(const command_context& ctx, const submit_options& o) {
  wire::run_request req;
  req.plan = o.plan;
  req.selector = o.selector;
  req.agent = o.agent;
  auto params = build_params(o.params_file, o.params);
  try {
    req.params = params.dump();
  } catch (const json::type_error&) {
    auto at = not_utf8_at(params, "params");
    throw failure{exit_usage,
                  "'" + (at.empty() ? std::string{"params"} : at) +
                      "' (from --param or --params-file) is not UTF-8 text",
                  {"the mesh takes UTF-8 text only; nothing was sent"}};
  }
  req.payload = o.payload;
  // @FILE reads a file; @@TEXT sends @TEXT (a text that starts with @).
  if (o.payload.rfind("@@", 0) == 0)
    req.payload = o.payload.substr(1);
  else if (!o.payload.empty() && o.payload.front() == '@')
    req.payload = read_file(o.payload.substr(1), "--payload");
  req.priority = o.priority;
  req.timeout_s = o.timeout.empty() ? 0 : duration_seconds(o.timeout, "--timeout");
  req.ttl_s = o.ttl.empty() ? 0 : duration_seconds(o.ttl, "--ttl");
  req.idempotency_key = o.idempotency_key;
  req.concurrency_key = o.concurrency_key;
  if (!o.retry_on.empty() && !o.retry)
    throw failure{
        exit_usage,
        "--retry-on: names the ends to retry, but --retry N is not given",
        {"add --retry N (1 to 10): how many times the mesh may submit it again"}};
  if (o.retry && *o.retry == 0)
    // 0 would send no `retry` at all: leaving the flag out says that.
    throw failure{exit_usage,
                  "--retry: must be between 1 and 10",
                  {"leave --retry out for a run the mesh does not retry"}};
  // `send_run` checks the bound and the names before anything is sent.
  req.retry_max = o.retry.value_or(0);
  for (size_t at = 0; !o.retry_on.empty();) {
    auto comma = o.retry_on.find(',', at);
    auto name = o.retry_on.substr(at, comma == std::string::npos ? comma : comma - at);
    if (name.empty())
      throw failure{
          exit_usage,
          "--retry-on: '" + o.retry_on + "' has an empty name in its list",
          {"name the ends comma separated, e.g. --retry-on agent_lost,plan_failed"}};
    req.retry_on += (req.retry_on.empty() ? "" : ",") + name;
    if (comma == std::string::npos) break;
    at = comma + 1;
  }
  check_satisfiable(o.selector, "-l/--selector");
  return send_run(ctx, req, o.wait, o.follow);
}

struct rerun_options {
  std::string id;
  std::optional<int64_t> priority;
  std::string idempotency_key;
  bool wait = false;
  bool follow = false;
};

/// Submits a new run with what run `o.id` was submitted with: plan,
/// selector, target agent, params, payload, priority, timeout, ttl,
/// concurrency key and retry.
/// GET `path`, riding out an outage of up to a minute as the submit that
/// follows does (a restarting mesh must not fail a CI job's rerun).
json get_through_outage(mesh_client& mesh, const std::string& path) {
  constexpr auto outage_grace = std::chrono::seconds{60};
  std::optional<std::chrono::steady_clock::time_point> down_since;
  for (;;) {
    auto attempt = std::chrono::steady_clock::now();
    try {
      auto got = mesh.get(path);
      if (down_since) std::cerr << "meshctl: the mesh answers again" << std::endl;
      return got;
    } catch (const failure& f) {
      if (f.code() != exit_unreachable || f.is_lasting() ||
          std::chrono::steady_clock::now() - down_since.value_or(attempt) >= outage_grace)
        throw;
      if (!down_since) {
        down_since = attempt;
        std::cerr << "meshctl: " << f.what() << "; retrying for up to "
                  << outage_grace.count() << " s" << std::endl;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds{500});
    }
  }
}

int rerun(const command_context& ctx, const rerun_options& o) {
  auto mesh = ctx.client();
  auto old = get_through_outage(mesh, "/v1/runs/" + url_encode(o.id));
  wire::run_request req;
  req.plan = old.value("plan", "");
  req.selector = old.value("selector", "");
  if (old["target_agent"].is_string()) req.agent = old["target_agent"].get<std::string>();
  req.params = old.contains("params") ? old["params"].dump() : "{}";
  req.payload = old.value("payload", "");
  req.priority = o.priority.value_or(old.value("priority", int64_t{0}));
  req.timeout_s = old.value("timeout_s", int64_t{0});
  req.ttl_s = old.value("ttl_s", int64_t{0});
  if (old["concurrency_key"].is_string())
    req.concurrency_key = old["concurrency_key"].get<std::string>();
  if (auto retry = old.find("retry"); retry != old.end())
    wire::read_retry_json(*retry, req.retry_max, req.retry_on);
  req.idempotency_key = o.idempotency_key;
  return send_run(ctx, req, o.wait, o.follow, " as a rerun of " + old.value("id", o.id));
}

struct list_options {
  std::string status;
  std::string plan;
  std::string agent;
  std::string concurrency_key;
  int64_t limit = 50;
  std::string cursor;
};

int list_runs(const command_context& ctx, const list_options& o) {
  if (!o.plan.empty())
    if (auto err = wire::validate_plan_name(o.plan, "--plan")) throw usage_failure(err);
  if (!o.agent.empty())
    if (auto err = wire::validate_agent_name(o.agent, "--agent"))
      throw usage_failure(err);
  auto mesh = ctx.client();
  std::string agent_id = o.agent;
  if (!o.agent.empty()) {
    // The filter is by agent id; accept a name too.
    auto a = mesh.get_or_null("/v1/agents/" + url_encode(o.agent));
    if (a.is_object()) agent_id = a.value("id", o.agent);
  }
  auto body = mesh.get("/v1/runs", {{"status", o.status},
                                    {"plan", o.plan},
                                    {"agent", agent_id},
                                    {"concurrency_key", o.concurrency_key},
                                    {"limit", std::to_string(o.limit)},
                                    {"cursor", o.cursor}});
  body = answer_with(std::move(body), {{"runs", holds::list}}, mesh.last_call());
  auto out = ctx.out();
  if (out.structured()) {
    out.emit(body);
    return exit_ok;
  }
  // Show agent names, not ids.
  std::map<std::string, std::string> names;
  if (!body["runs"].empty()) {
    auto agents = mesh.get("/v1/agents");
    for (auto& a : agents["agents"])
      names[a.value("id", "")] = a.value("name", "");
  }
  std::vector<std::vector<std::string>> rows;
  for (auto& r : body["runs"]) {
    std::string agent = "-";
    if (r["assigned_agent"].is_string()) {
      agent = r["assigned_agent"].get<std::string>();
      if (auto it = names.find(agent); it != names.end()) agent = it->second;
    } else if (r["target_agent"].is_string()) {
      agent = "(" + r["target_agent"].get<std::string>() + ")";
    }
    // The reason, and where the run stands in a chain of retries.
    std::string reason = r["reason"].is_string() ? cell(r["reason"]) : "";
    auto add = [&reason](const std::string& part) {
      reason += (reason.empty() ? "" : ", ") + part;
    };
    if (r["retry_of"].is_string()) add("retry " + cell(r["retry_number"]));
    if (r["retried_by"].is_string()) add("retried");
    rows.push_back({cell(r["id"]), cell(r["plan"]), cell(r["status"]), agent,
                    cell(r["priority"]), age(r["created_at"]),
                    reason.empty() ? cell(r["reason"]) : reason});
  }
  if (rows.empty())
    std::cerr << "no runs match\n";
  else
    out.table({"ID", "PLAN", "STATUS", "AGENT", "PRIORITY", "CREATED", "REASON"}, rows,
              2);
  if (body["next_cursor"].is_string())
    std::cerr << "more: --cursor " << body["next_cursor"].get<std::string>() << '\n';
  return exit_ok;
}

int show_logs(const command_context& ctx, const std::string& id, bool follow) {
  auto mesh = ctx.client();
  auto out = ctx.out();
  // As `runs wait -f`: the log, then how the run ended (the final run object
  // as the last JSON line with -o json).
  if (follow) return finish_wait(ctx, wait_for_run(ctx, mesh, id, true), true);
  if (out.structured()) {
    // One object of the API's shape. As JSON it is written page by page, as
    // `emit` would print it whole, so that a long log is never all in
    // memory; YAML is gathered first.
    bool stream = out.format() == output_format::json;
    json all = json::array();
    size_t written = 0;
    int64_t after = -1;
    for (;;) {
      auto page = logs_page(mesh, id, after);
      if (page["chunks"].empty()) break;
      for (auto& c : page["chunks"]) {
        if (!stream) {
          all.push_back(c);
          continue;
        }
        auto text = c.dump(2, ' ', false, json::error_handler_t::replace);
        for (size_t at = text.find('\n'); at != std::string::npos;
             at = text.find('\n', at + 1))
          text.insert(at + 1, "    ");
        std::cout << (written++ == 0 ? "{\n  \"chunks\": [\n    " : ",\n    ") << text;
      }
      after = page.value("next_after", after);
      if (!page.value("more", true)) break;
    }
    if (!stream)
      out.emit(json{{"chunks", all}, {"next_after", after}});
    else
      std::cout << (written == 0 ? "{\n  \"chunks\": []" : "\n  ]")
                << ",\n  \"next_after\": " << after << "\n}\n";
    return exit_ok;
  }
  drain_logs(mesh, out, id, -1, nullptr);
  return exit_ok;
}

int explain(const command_context& ctx, const std::string& id) {
  auto mesh = ctx.client();
  auto body =
      answer_with(mesh.get("/v1/runs/" + url_encode(id) + "/explain"),
                  {{"assigned", holds::flag}, {"status", holds::text}}, mesh.last_call());
  auto out = ctx.out();
  if (out.structured()) {
    out.emit(body);
    return exit_ok;
  }
  auto status = body.value("status", "");
  if (body.value("assigned", false)) {
    // Explain is about waiting runs; say where this one is instead.
    std::cout << "run " << id << " is "
              << out.paint(status, printer::status_color(status));
    if (body["assigned_agent"].is_string())
      std::cout << " (agent " << body["assigned_agent"].get<std::string>() << ")";
    std::cout << ": nothing to explain, it is not waiting for an agent\n";
    return exit_ok;
  }
  std::cout << "run " << id << " is " << out.paint(status, printer::status_color(status))
            << ": " << body.value("message", "") << '\n';
  std::vector<std::vector<std::string>> rows;
  for (auto& a : body["agents"])
    rows.push_back(
        {cell(a["agent_name"]), a.value("candidate", false) ? "yes" : "no",
         a["reason"].is_string() ? a["reason"].get<std::string>() : "can take it"});
  if (!rows.empty()) {
    std::cout << '\n';
    out.table({"AGENT", "CANDIDATE", "REASON"}, rows, 1);
  }
  return exit_ok;
}

} // namespace

/// `1234` -> `1.2 KiB`.
std::string human_size(const json& bytes) {
  if (!bytes.is_number_integer()) return cell(bytes);
  auto n = static_cast<double>(bytes.get<int64_t>());
  const char* units[] = {"B", "KiB", "MiB", "GiB"};
  size_t u = 0;
  while (n >= 1024 && u + 1 < std::size(units)) {
    n /= 1024;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.1f %s", n, units[u]);
  return buf;
}

struct artifacts_options {
  std::string id;
  std::string get;
  std::string file;
  bool force = false;
};

int list_artifacts(const command_context& ctx, const std::string& id) {
  auto mesh = ctx.client();
  auto body = answer_with(mesh.get("/v1/runs/" + url_encode(id) + "/artifacts"),
                          {{"artifacts", holds::list}}, mesh.last_call());
  auto out = ctx.out();
  if (out.structured()) {
    out.emit(body);
    return exit_ok;
  }
  std::vector<std::vector<std::string>> rows;
  for (auto& a : body["artifacts"])
    rows.push_back({cell(a["name"]), human_size(a["size"]),
                    cell(a["sha256"]).substr(0, 12), age(a["created_at"])});
  if (rows.empty()) {
    std::cout << "run " << id << " has no artifacts\n";
    return exit_ok;
  }
  out.table({"NAME", "SIZE", "SHA256", "CREATED"}, rows);
  return exit_ok;
}

namespace {

/// Where `--get` puts the bytes, judged before they are downloaded the way cp
/// judges its destination: a symlink by what it points to, so the link itself is
/// never replaced.
struct destination {
  enum kind_t {
    /// Nothing there yet: a new file, written under a temporary name and renamed.
    new_file,
    /// A regular file: replaced the same way, only with `--force`.
    regular,
    /// A device or FIFO (any other kind of file): written into as it is.
    /// Nothing is replaced, so no `--force` is needed (`-O /dev/null`).
    stream,
  };
  kind_t kind = new_file;
  /// What is written or renamed over: the file given, or a symlink's target.
  std::string path;
};

/// Judges `file` before anything is downloaded; throws the refusal, if any.
destination destination_of(const std::string& file, bool force) {
  namespace fs = std::filesystem;
  std::error_code ec;
  destination d{destination::new_file, file};
  auto st = fs::status(file, ec);
  if (fs::is_symlink(fs::symlink_status(file, ec))) {
    // Writing through a link that points nowhere would create a file wherever
    // it says, perhaps far from where the user looks; GNU cp refuses too.
    if (st.type() == fs::file_type::not_found)
      throw failure{
          exit_usage,
          file + " is a symlink to " + fs::read_symlink(file, ec).string() +
              ", which does not exist",
          {"nothing is written through a dangling symlink (nor by cp); create what "
           "it points to, or choose another file with --file"}};
    auto target = fs::canonical(file, ec);
    if (ec) // A loop, or a target that cannot be looked at.
      throw failure{exit_refused,
                    "cannot write " + file + ": " + ec.message(),
                    {"nothing was written"}};
    d.path = target.string();
  }
  switch (st.type()) {
  // Not there, or not to be looked at: the write says why if it fails.
  case fs::file_type::not_found:
  case fs::file_type::none: return d;
  case fs::file_type::regular: d.kind = destination::regular; break;
  case fs::file_type::directory:
    throw failure{
        exit_usage, file + " is a directory", {"choose another file with --file"}};
  default: d.kind = destination::stream; return d;
  }
  if (!force) {
    std::vector<std::string> hints{
        "pass --force to overwrite it, or --file to choose another"};
    if (d.path != file)
      hints.insert(hints.begin(), "it is a symlink to " + d.path +
                                      "; --force replaces that file, not the link");
    throw failure{exit_usage, file + " already exists", std::move(hints)};
  }
  return d;
}

/// Writes `bytes` into the device or FIFO at `path` as cp does: opened as it is,
/// never created or truncated (a FIFO waits here for its reader; a socket refuses
/// to be opened). `file` names it in a failure.
void write_into(const std::string& path, const std::string& file, const std::string& name,
                const std::string& bytes) {
  size_t done = 0;
  auto cannot_write = [&](int err) {
    return failure{exit_refused,
                   "cannot write " + file + ": " + std::strerror(err),
                   {(done == 0 ? std::string{"nothing was written; "}
                               : "cut short after " + std::to_string(done) + " of " +
                                     std::to_string(bytes.size()) + " bytes; ") +
                    name + " is still in the mesh"}};
  };
  int fd = ::open(path.c_str(), O_WRONLY | O_NOCTTY | O_CLOEXEC);
  if (fd < 0) throw cannot_write(errno);
  // Judged before the download; a regular file put there since must not be
  // overwritten in place without `--force`.
  struct stat st {};
  int err = ::fstat(fd, &st) != 0 ? errno : S_ISREG(st.st_mode) ? EEXIST : 0;
  if (err != 0) {
    ::close(fd);
    throw cannot_write(err);
  }
  while (done < bytes.size()) {
    auto n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      err = errno;
      ::close(fd);
      throw cannot_write(err);
    }
    done += static_cast<size_t>(n);
  }
  ::close(fd);
}

/// Writes `bytes` to a new file at `path`, or replaces the regular file there,
/// under a temporary name in the same directory and renamed: an interrupted
/// download never leaves half a file under the real name. `file` names it in a
/// failure.
void write_replacing(const std::string& path, const std::string& file,
                     const std::string& name, const std::string& bytes) {
  namespace fs = std::filesystem;
  auto tmp = path + ".meshctl-partial";
  auto cannot_write = [&](const std::string& why) {
    std::error_code ignored;
    fs::remove(tmp, ignored);
    return failure{exit_refused,
                   "cannot write " + file + ": " + why,
                   {"nothing was written; " + name + " is still in the mesh"}};
  };
  {
    errno = 0;
    std::ofstream out{tmp, std::ios::binary | std::ios::trunc};
    if (!out) throw cannot_write(std::strerror(errno ? errno : EIO));
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    if (!out.flush()) throw cannot_write(std::strerror(errno ? errno : EIO));
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) throw cannot_write(ec.message());
}

} // namespace

/// Downloads one artifact to a file (or stdout), verified against the sha256
/// the mesh sends before a byte is written. A file is written under a
/// temporary name and renamed; a device or FIFO is written into.
int get_artifact(const command_context& ctx, const artifacts_options& o) {
  namespace fs = std::filesystem;
  auto base = o.get.substr(o.get.rfind('/') + 1);
  auto file = o.file.empty() ? base : o.file;
  bool to_stdout = file == "-";
  std::error_code ec;
  // Into a directory, as cp does: DIR/NAME.
  if (!to_stdout && !o.file.empty() && fs::is_directory(file, ec))
    file = (fs::path{file} / base).string();
  destination dest;
  if (!to_stdout) dest = destination_of(file, o.force);
  auto mesh = ctx.client();
  std::string path = "/v1/runs/" + url_encode(o.id) + "/artifacts/";
  // Keep the name's '/' separators; every segment is encoded on its own.
  size_t start = 0;
  for (;;) {
    auto end = o.get.find('/', start);
    path += url_encode(o.get.substr(start, end == std::string::npos ? end : end - start));
    if (end == std::string::npos) break;
    path += '/';
    start = end + 1;
  }
  auto answer = mesh.get_bytes(path);
  auto actual = sha256_hex(answer.bytes);
  if (!answer.sha256.empty() && answer.sha256 != actual)
    throw failure{exit_refused,
                  "artifact " + o.get + " arrived damaged: sha256 " + actual +
                      ", the mesh says " + answer.sha256,
                  {"nothing was written; try again"}};
  auto summary = "saved " + o.get + " (" + std::to_string(answer.bytes.size()) +
                 " bytes, sha256 " + actual.substr(0, 12) + ")";
  auto out = ctx.out();
  // What was saved where, for a script: `-o json` prints this instead of
  // the sentence (to stderr when the bytes went to stdout).
  json saved{{"run", o.id},
             {"name", o.get},
             {"file", to_stdout ? "-" : file},
             {"bytes", answer.bytes.size()},
             {"sha256", actual}};
  if (to_stdout) {
    std::cout.write(answer.bytes.data(),
                    static_cast<std::streamsize>(answer.bytes.size()));
    std::cout.flush();
    std::cerr << summary << " to stdout\n";
    return exit_ok;
  }
  if (dest.kind == destination::stream) {
    write_into(dest.path, file, o.get, answer.bytes);
  } else {
    write_replacing(dest.path, file, o.get, answer.bytes);
  }
  if (out.structured())
    out.emit(saved);
  else
    std::cout << summary << " to " << file << '\n';
  return exit_ok;
}

namespace {

/// The options `submit` and `rerun` share: an idempotency key, and whether
/// to wait for the new run or follow its log.
void add_submission_options(CLI::App* cmd, std::string& idempotency_key, bool& wait,
                            bool& follow) {
  cmd->add_option("--idempotency-key", idempotency_key,
                  "A repeat with the same key returns the same run");
  cmd->add_flag("--wait", wait, "Wait for the end; exit 0 success, 1 error, 2 canceled");
  cmd->add_flag("-f,--follow", follow,
                "Stream the run's log while it runs (implies --wait)");
}

} // namespace

void add_runs_commands(CLI::App& app, command_context& ctx) {
  auto* runs = app.add_subcommand("runs", "Submit, watch and manage runs");
  runs->require_subcommand(1);

  auto so = std::make_shared<submit_options>();
  auto* submit_cmd = runs->add_subcommand("submit", "Submit a run of PLAN");
  submit_cmd->add_option("PLAN", so->plan, "The plan to run")->required();
  submit_cmd->add_option("-l,--selector", so->selector,
                         "Only agents whose labels match, e.g. 'env=prod'");
  submit_cmd->add_option("--agent", so->agent, "Only this one agent (by name)");
  submit_cmd
      ->add_option("--param", so->params,
                   "Parameter KEY=VALUE (string) or KEY:=JSON; repeatable")
      ->allow_extra_args(false);
  submit_cmd->add_option("--params-file", so->params_file,
                         "Parameters from a JSON or YAML object file (- reads "
                         "standard input)");
  submit_cmd->add_option("--payload", so->payload,
                         "Payload text, @FILE to read it from a file, or @@TEXT for a "
                         "text starting with @");
  submit_cmd->add_option("--priority", so->priority, "Higher runs first (default 0)");
  submit_cmd->add_option("--timeout", so->timeout, "Run time limit, e.g. 90s, 10m, 2h");
  submit_cmd->add_option("--ttl", so->ttl, "How long it may wait for an agent, e.g. 10m");
  submit_cmd->add_option("--concurrency-key", so->concurrency_key,
                         "Run only when no other run with this key is pending or "
                         "running, e.g. a terraform workspace");
  auto so_retry = std::make_shared<int64_t>(0);
  auto* retry_opt =
      submit_cmd->add_option("--retry", *so_retry,
                             "Submit it again, up to N times (1 to 10), when it ends as "
                             "--retry-on says");
  submit_cmd->add_option(
      "--retry-on", so->retry_on,
      "Ends that retry it, comma separated: agent_lost, agent_shutdown, "
      "agent_removed (the default: its agent went away), expired, "
      "plan_failed, timeout");
  add_submission_options(submit_cmd, so->idempotency_key, so->wait, so->follow);
  submit_cmd->callback([&ctx, so, so_retry, retry_opt] {
    if (retry_opt->count() > 0) so->retry = *so_retry;
    ctx.action = [&ctx, so] { return submit(ctx, *so); };
  });

  auto ro = std::make_shared<rerun_options>();
  auto ro_priority = std::make_shared<int64_t>(0);
  auto* rerun_cmd = runs->add_subcommand(
      "rerun", "Submit a new run as run ID was submitted (plan, selector, agent, "
               "params, payload, priority, timeout, ttl, concurrency key, retry)");
  rerun_cmd->add_option("ID", ro->id, "The run to run again")->required();
  auto* rerun_priority = rerun_cmd->add_option("--priority", *ro_priority,
                                               "Another priority for the new run");
  add_submission_options(rerun_cmd, ro->idempotency_key, ro->wait, ro->follow);
  rerun_cmd->callback([&ctx, ro, ro_priority, rerun_priority] {
    if (rerun_priority->count() > 0) ro->priority = *ro_priority;
    ctx.action = [&ctx, ro] { return rerun(ctx, *ro); };
  });

  auto lo = std::make_shared<list_options>();
  auto* list = runs->add_subcommand("list", "List runs, newest first");
  list->alias("ls");
  list->add_option("--status", lo->status,
                   "created, pending, running, success, error, canceled")
      ->check(CLI::IsMember(
          {"created", "pending", "running", "success", "error", "canceled"}));
  list->add_option("--plan", lo->plan, "Only runs of this plan");
  list->add_option("--agent", lo->agent, "Only runs held by this agent (name or id)");
  list->add_option("--concurrency-key", lo->concurrency_key,
                   "Only runs with this concurrency key (the holder and those waiting)");
  list->add_option("--limit", lo->limit, "At most this many (1 to 1000, default 50)")
      ->check(CLI::Range(1, 1000));
  list->add_option("--cursor", lo->cursor, "Continue after a previous page");
  list->callback([&ctx, lo] { ctx.action = [&ctx, lo] { return list_runs(ctx, *lo); }; });

  auto id = std::make_shared<std::string>();
  auto* show = runs->add_subcommand("show", "Show one run");
  show->add_option("ID", *id, "Run id")->required();
  show->callback([&ctx, id] {
    ctx.action = [&ctx, id] {
      auto mesh = ctx.client();
      auto path = "/v1/runs/" + url_encode(*id);
      print_run(ctx.out(), run_answer(mesh.get(path), "GET " + path));
      return exit_ok;
    };
  });

  auto follow = std::make_shared<bool>(false);
  auto* logs = runs->add_subcommand("logs", "Print a run's log");
  logs->add_option("ID", *id, "Run id")->required();
  logs->add_flag("-f,--follow", *follow,
                 "Keep streaming until the run ends; exit code as for --wait");
  logs->callback([&ctx, id, follow] {
    ctx.action = [&ctx, id, follow] { return show_logs(ctx, *id, *follow); };
  });

  auto* cancel =
      runs->add_subcommand("cancel", "Cancel a run (a running one is told to stop)");
  cancel->add_option("ID", *id, "Run id")->required();
  cancel->callback([&ctx, id] {
    ctx.action = [&ctx, id] {
      auto mesh = ctx.client();
      auto path = "/v1/runs/" + url_encode(*id) + "/cancel";
      auto run = run_answer(mesh.post(path), "POST " + path);
      auto out = ctx.out();
      if (out.structured()) {
        out.emit(run);
      } else {
        auto status = run.value("status", "");
        std::cout << "run " << *id << " "
                  << (terminal(status) ? out.paint(status, printer::status_color(status))
                                       : "cancel requested (" + status + ")")
                  << '\n';
      }
      return exit_ok;
    };
  });

  auto* explain_cmd = runs->add_subcommand(
      "explain", "Why a waiting run is not dispatched, agent by agent");
  explain_cmd->add_option("ID", *id, "Run id")->required();
  explain_cmd->callback(
      [&ctx, id] { ctx.action = [&ctx, id] { return explain(ctx, *id); }; });

  auto ao = std::make_shared<artifacts_options>();
  auto* artifacts = runs->add_subcommand(
      "artifacts", "List a run's artifacts, or download one with --get");
  artifacts->add_option("ID", ao->id, "Run id")->required();
  artifacts->add_option("--get", ao->get, "Download the artifact with this name");
  // Not `-o`: that is the global output format.
  artifacts
      ->add_option("-O,--file", ao->file,
                   "Where --get writes (default: the name's last part in the current "
                   "directory; - for stdout)")
      ->needs(artifacts->get_option("--get"));
  artifacts->add_flag("--force", ao->force, "Overwrite an existing --file")
      ->needs(artifacts->get_option("--get"));
  artifacts->callback([&ctx, ao] {
    ctx.action = [&ctx, ao] {
      return ao->get.empty() ? list_artifacts(ctx, ao->id) : get_artifact(ctx, *ao);
    };
  });

  auto* wait = runs->add_subcommand(
      "wait", "Wait for a run to end; exit 0 success, 1 error, 2 canceled");
  wait->add_option("ID", *id, "Run id")->required();
  wait->add_flag("-f,--follow", *follow, "Stream its log while waiting");
  wait->callback([&ctx, id, follow] {
    ctx.action = [&ctx, id, follow] {
      auto mesh = ctx.client();
      return finish_wait(ctx, wait_for_run(ctx, mesh, *id, *follow), *follow);
    };
  });
}

} // namespace polymesh::cli
