// The agent's YAML config. The document is first turned into JSON, then each
// section is read with a strict `settings_reader`, which rejects keys nobody
// read: this file is the one table of the agent's keys, in the order of
// config/agent.example.yaml.
#include "mesh/config/yaml_guard.hpp"
#include "mesh/domain/log.hpp"
#include "mesh/wire/json.hpp"
#include "mesh/wire/secret_file.hpp"
#include "polymesh/sdk/agent_yaml.hpp"

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <yaml-cpp/yaml.h>

namespace polymesh::sdk {

namespace {

using json = nlohmann::json;
using namespace std::chrono_literals;

json scalar_to_json(const YAML::Node& node) {
  auto text = node.Scalar();
  if (node.Tag() == "!") return text; // quoted: always a string
  if (text.empty() || text == "~" || text == "null") return nullptr;
  if (text == "true") return true;
  if (text == "false") return false;
  bool digits = !text.empty();
  for (size_t i = 0; i < text.size(); ++i)
    digits = digits && ((text[i] >= '0' && text[i] <= '9') || (i == 0 && text[i] == '-'));
  // Leading zeros stay strings: YAML 1.1 would read 010 as octal.
  if (digits && text != "-" && text.size() < 18 && !(text.size() > 1 && text[0] == '0'))
    return std::stoll(text);
  return text;
}

/// Refuses text that is not UTF-8: it cannot become JSON (a plugin's
/// settings are handed over as JSON text; the strict dump would abort).
void check_utf8(const std::string& text, const std::string& path) {
  if (!wire::is_utf8(text)) throw config_error(path, "is not UTF-8 text");
}

/// `node` as JSON; `path` is its dotted key, for errors; `budget` bounds the
/// depth and size (an alias in its own anchor, aliases of aliases).
json node_to_json(const YAML::Node& node, yaml_budget& budget, const std::string& path) {
  budget.enter(node);
  json out;
  switch (node.Type()) {
  case YAML::NodeType::Map: {
    out = json::object();
    for (auto it = node.begin(); it != node.end(); ++it) {
      auto key = it->first.Scalar();
      auto at = path.empty() ? key : path + "." + key;
      check_utf8(key, at);
      if (out.contains(key)) throw config_error(at, "duplicate key");
      out[key] = node_to_json(it->second, budget, at);
    }
    break;
  }
  case YAML::NodeType::Sequence: {
    out = json::array();
    for (auto&& x : node)
      out.push_back(
          node_to_json(x, budget, path + "[" + std::to_string(out.size()) + "]"));
    break;
  }
  case YAML::NodeType::Scalar:
    check_utf8(node.Scalar(), path);
    out = scalar_to_json(node);
    break;
  default: out = nullptr;
  }
  budget.leave();
  return out;
}

std::string resolve(const std::string& path, const std::string& base_dir) {
  if (path.empty() || base_dir.empty() || std::filesystem::path{path}.is_absolute())
    return path;
  return (std::filesystem::path{base_dir} / path).lexically_normal().string();
}

/// One `plugins` entry: a path, or `{path, isolation, limits}`.
plugin_entry read_plugin_entry(const nlohmann::json& item, const std::string& key,
                               const std::string& base_dir) {
  plugin_entry out;
  if (item.is_string()) {
    out.path = item.get<std::string>();
  } else if (item.is_object()) {
    settings_reader in{item, key};
    out.path = in.string("path");
    auto isolation = in.string("isolation", to_string(out.isolation));
    auto parsed = parse_plugin_isolation(isolation);
    if (!parsed)
      throw config_error(key + ".isolation",
                         "expected process or none, got '" + isolation + "'");
    out.isolation = *parsed;
    settings_reader limits{in.raw("limits"), in.path("limits")};
    out.limits = read_resource_limits(limits);
    if (!out.limits.empty() && out.isolation == plugin_isolation::none)
      throw config_error(key + ".limits",
                         "apply only with isolation: process (a plan in the agent's "
                         "process would share them with the agent)");
    in.finish();
  } else {
    throw config_error(key, "expected a path, or a map with path, isolation and limits");
  }
  if (out.path.empty())
    throw config_error(item.is_object() ? key + ".path" : key,
                       "is empty; give the plugin's file");
  out.path = resolve(out.path, base_dir);
  return out;
}

std::string read_token_file(const std::string& path, const std::string& key,
                            std::vector<std::string>& warnings) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec))
    throw config_error(key,
                       "'" + path + "' is a directory, not a file holding the token");
  std::ifstream in{path};
  if (!in) throw config_error(key, "cannot read '" + path + "': " + std::strerror(errno));
  if (auto open = open_to_others(path); !open.empty())
    warnings.push_back(key + ": '" + path + "' is " + open + "; chmod 600 it");
  std::stringstream ss;
  ss << in.rdbuf();
  auto text = ss.str();
  auto begin = text.find_first_not_of(" \t\r\n");
  auto end = text.find_last_not_of(" \t\r\n");
  if (begin == std::string::npos) throw config_error(key, "'" + path + "' is empty");
  return text.substr(begin, end - begin + 1);
}

} // namespace

json yaml_to_json(const std::string& text) {
  try {
    auto docs = load_all_documents(text);
    // A second document (`---`) would be read by nobody: refused, as meshd does.
    if (docs.size() > 1)
      throw config_error("", "expected one YAML document, got " +
                                 std::to_string(docs.size()) +
                                 " (a line '---' starts another)");
    yaml_budget budget;
    return docs.empty() ? json{} : node_to_json(docs.front(), budget, {});
  } catch (const YAML::Exception& e) {
    throw config_error("", std::string{"invalid YAML: "} + e.what());
  }
}

namespace {

/// parse_agent_yaml; `token_inline` says whether the text itself holds the
/// registration token.
agent_file_config parse(const std::string& text, const std::string& base_dir,
                        bool& token_inline) {
  auto doc = yaml_to_json(text);
  agent_file_config out;
  auto& a = out.agent;
  settings_reader top{doc, ""};
  // A misspelt section (`msh:`) is an unknown key, not a missing one.
  static constexpr std::array sections{"mesh",    "agent", "logs", "backoff",
                                       "plugins", "plans", "log"};
  for (auto section : sections)
    (void)top.raw(section);
  // `agent.capacity: 3` at the top level: a known section, the wrong layout.
  if (doc.is_object())
    for (auto& [key, value] : doc.items())
      if (auto dot = key.find('.');
          dot != std::string::npos && std::find(sections.begin(), sections.end(),
                                                key.substr(0, dot)) != sections.end())
        throw config_error(key, "must be nested: write '" + key.substr(dot + 1) +
                                    "' under '" + key.substr(0, dot) + ":'");
  top.finish();

  settings_reader mesh{top.raw("mesh"), "mesh"};
  a.mesh_url = mesh.string("url");
  if (a.mesh_url.empty())
    throw config_error("mesh.url", "is required, e.g. http://127.0.0.1:7700");
  a.registration_token = mesh.string("registration_token");
  auto token_file = resolve(mesh.string("registration_token_file"), base_dir);
  a.request_timeout = mesh.duration("request_timeout", a.request_timeout, 1s, 10min);
  a.mesh_ca_file = resolve(mesh.string("ca_file"), base_dir);
  mesh.finish();
  if (!a.registration_token.empty() && !token_file.empty())
    throw config_error("mesh.registration_token_file",
                       "give either mesh.registration_token or this, not both");
  token_inline = !a.registration_token.empty();
  if (!token_file.empty())
    a.registration_token =
        read_token_file(token_file, "mesh.registration_token_file", out.warnings);
  if (a.registration_token.empty())
    throw config_error("mesh.registration_token",
                       "is required (or mesh.registration_token_file)");

  settings_reader ag{top.raw("agent"), "agent"};
  a.name = ag.string("name");
  if (a.name.empty()) throw config_error("agent.name", "is required");
  for (auto& [k, v] : ag.string_map("labels"))
    a.labels[k] = v;
  a.capacity = ag.integer("capacity", a.capacity, 1, 4096);
  a.work_root = resolve(ag.string("work_dir"), base_dir);
  a.drain_deadline = ag.duration("drain_deadline", a.drain_deadline, 0ms, 24h);
  a.kill_grace = ag.duration("kill_grace", a.kill_grace, 0ms, 1h);
  a.upload_retry_for = ag.duration("upload_retry_for", a.upload_retry_for, 0ms, 24h);
  a.shutdown_result_grace =
      ag.duration("shutdown_result_grace", a.shutdown_result_grace, 0ms, 24h);
  a.deregister_timeout =
      ag.duration("deregister_timeout", a.deregister_timeout, 100ms, 10min);
  a.poll_wait = ag.duration("poll_wait", a.poll_wait, 0ms, 1h);
  a.hostname = ag.string("hostname");
  ag.finish();

  settings_reader logs{top.raw("logs"), "logs"};
  a.log_chunk_bytes = static_cast<size_t>(
      logs.integer("chunk_bytes", int64_t(a.log_chunk_bytes), 4, 64 * 1024));
  a.log_buffer_bytes = static_cast<size_t>(
      logs.integer("buffer_bytes", int64_t(a.log_buffer_bytes), 1, int64_t{1} << 30));
  a.log_max_run_bytes = static_cast<size_t>(
      logs.integer("max_run_bytes", int64_t(a.log_max_run_bytes), 0, int64_t{1} << 40));
  a.log_flush_interval =
      logs.duration("flush_interval", a.log_flush_interval, 10ms, 1min);
  logs.finish();

  settings_reader bo{top.raw("backoff"), "backoff"};
  a.backoff_initial = bo.duration("initial", a.backoff_initial, 1ms, 1h);
  a.backoff_max = bo.duration("max", a.backoff_max, 1ms, 24h);
  bo.finish();

  auto& plugins = top.raw("plugins");
  if (!plugins.is_null() && !plugins.is_array())
    throw config_error(
        "plugins",
        "expected a list of plugin paths (or maps with path, isolation, limits)");
  if (plugins.is_array())
    for (size_t i = 0; i < plugins.size(); ++i)
      out.plugins.push_back(
          read_plugin_entry(plugins[i], "plugins[" + std::to_string(i) + "]", base_dir));

  auto& plans = top.raw("plans");
  if (!plans.is_null() && !plans.is_object())
    throw config_error("plans", "expected a map of plan names to their settings");
  if (plans.is_object())
    for (auto& [name, settings] : plans.items()) {
      if (!settings.is_null() && !settings.is_object())
        throw config_error("plans." + name, "expected a map of settings (or {})");
      out.plans[name] = settings;
    }

  settings_reader lg{top.raw("log"), "log"};
  out.log_level = lg.string("level", out.log_level);
  if (out.log_level != "error" && out.log_level != "warn" && out.log_level != "info" &&
      out.log_level != "debug")
    throw config_error("log.level", "expected one of error, warn, info, debug, got '" +
                                        out.log_level + "'");
  lg.finish();
  if (out.plans.empty())
    throw config_error("plans", "enable at least one plan, e.g. plans: {echo: {}}");

  if (auto err = a.validate(); !err.empty()) {
    auto colon = err.find(':');
    auto field = err.substr(0, colon);
    static const std::map<std::string, std::string> keys{
        {"mesh_url", "mesh.url"},
        {"mesh_ca_file", "mesh.ca_file"},
        {"name", "agent.name"},
        {"hostname", "agent.hostname"},
        {"capacity", "agent.capacity"},
        {"work_dir", "agent.work_dir"},
        {"log_chunk_bytes", "logs.chunk_bytes"},
        {"log_buffer_bytes", "logs.buffer_bytes"},
        {"backoff", "backoff"},
        {"registration_token", "mesh.registration_token"}};
    auto it = keys.find(field);
    auto message = colon == std::string::npos ? err : err.substr(colon + 2);
    // The message may name other fields by their SDK names too (only the
    // snake_case ones: "agent name must …" is prose, not the field).
    for (auto& [sdk_name, key] : keys)
      for (auto at = sdk_name.find('_') == std::string::npos ? std::string::npos
                                                             : message.find(sdk_name);
           at != std::string::npos; at = message.find(sdk_name, at + key.size()))
        message.replace(at, sdk_name.size(), key);
    throw config_error(it != keys.end()                 ? it->second
                       : field.rfind("labels.", 0) == 0 ? "agent." + field
                                                        : field,
                       message);
  }
  return out;
}

} // namespace

std::optional<int> yaml_key_line(const std::string& text, const std::string& key) {
  YAML::Node node;
  try {
    auto docs = load_all_documents(text);
    if (docs.empty()) return std::nullopt;
    node = docs.front();
  } catch (const YAML::Exception&) {
    return std::nullopt;
  }
  std::optional<int> line;
  std::string_view rest{key};
  while (!rest.empty()) {
    YAML::Node next;
    size_t used = 0;
    if (node.IsSequence() && rest.front() == '[') {
      auto close = rest.find(']');
      if (close == std::string_view::npos) break;
      size_t index = 0;
      for (auto c : rest.substr(1, close - 1)) {
        if (c < '0' || c > '9') return line;
        index = index * 10 + static_cast<size_t>(c - '0');
      }
      if (index >= node.size()) break;
      next = node[index];
      used = close + 1;
    } else if (node.IsMap()) {
      // The longest key that the rest starts with: keys may hold dots
      // (labels such as app.kubernetes.io/name).
      for (auto it = node.begin(); it != node.end(); ++it) {
        if (!it->first.IsScalar()) continue;
        const auto& k = it->first.Scalar();
        if (k.size() <= used || rest.substr(0, k.size()) != k) continue;
        if (k.size() < rest.size() && rest[k.size()] != '.' && rest[k.size()] != '[')
          continue;
        used = k.size();
        line = it->first.Mark().line + 1; // the key's line
        next = it->second;
      }
      if (used == 0) break;
    } else {
      break;
    }
    if (node.IsSequence()) line = next.Mark().line + 1;
    node = next;
    rest.remove_prefix(used);
    if (!rest.empty() && rest.front() == '.') rest.remove_prefix(1);
  }
  return line;
}

agent_file_config parse_agent_yaml(const std::string& text, const std::string& base_dir) {
  bool token_inline = false;
  return parse(text, base_dir, token_inline);
}

agent_file_config load_agent_yaml(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec))
    throw config_error("", "cannot read config file '" + path + "': it is a directory");
  std::ifstream in{path};
  if (!in)
    throw config_error("",
                       "cannot read config file '" + path + "': " + std::strerror(errno));
  std::stringstream ss;
  ss << in.rdbuf();
  auto base = std::filesystem::absolute(path).parent_path().string();
  bool token_inline = false;
  auto out = parse(ss.str(), base, token_inline);
  if (auto open = token_inline ? open_to_others(path) : std::string{}; !open.empty())
    out.warnings.insert(out.warnings.begin(), "mesh.registration_token: config file '" +
                                                  path + "' holds the token and is " +
                                                  open +
                                                  "; chmod 600 it, or move the token to "
                                                  "mesh.registration_token_file");
  return out;
}

plan_set make_plans(const plan_catalog& catalog,
                    const std::map<std::string, nlohmann::json>& plans,
                    std::vector<std::string>* warnings) {
  config_warnings collected;
  plan_set out;
  for (auto& [name, settings] : plans) {
    auto key = "plans." + name;
    auto* e = catalog.find(name);
    if (!e) {
      std::string known;
      for (auto& n : catalog.names())
        known += (known.empty() ? "" : ", ") + n;
      throw config_error(key, "no built-in plan or loaded plugin provides plan '" + name +
                                  "' (known: " + known + ")");
    }
    auto p = e->factory(settings, key);
    if (!p) throw config_error(key, "the plan's factory returned nothing");
    out.emplace(name, std::move(p));
  }
  if (warnings) {
    *warnings = collected.lines();
  } else {
    for (auto& line : collected.lines())
      log(log_level::warn, line);
  }
  return out;
}

} // namespace polymesh::sdk
