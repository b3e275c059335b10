// The plans an agent can offer: built-in ones, ones linked into a custom
// agent binary, and ones loaded from plugins. Each entry is a factory that
// turns the plan's settings (the `plans.<name>` section of the agent config)
// into a ready `plan`; only plans named in the config are instantiated.
//
// Thread-safety: fill it at start-up on one thread; read-only afterwards.
#pragma once

#include "polymesh/sdk/plan.hpp"

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace polymesh::sdk {

/// The simple-name rule of the mesh (`wire::validate_plan_name`), for plan
/// names and for anything a plan lets a run name by itself (e.g. a script):
/// 1..128 of [A-Za-z0-9._-], a letter or digit first. Kept here rather than
/// linked from `polymesh_wire` so plugins do not pull in CAF.
[[nodiscard]] bool valid_simple_name(const std::string& name);

/// Builds a plan from its settings; throws `config_error` naming the key.
/// `key` is the dotted config key of the section, e.g. `plans.shell`.
using plan_factory = std::function<std::shared_ptr<plan>(const nlohmann::json& settings,
                                                         const std::string& key)>;

class plan_catalog {
public:
  struct entry {
    std::string name;
    std::string description;
    plan_factory factory;
    /// Where it comes from: `built-in`, `linked`, or the plugin's path.
    std::string origin;
  };

  /// Adds a plan; returns "" or an error (bad name, name taken, naming the
  /// other origin).
  std::string add(std::string name, std::string description, plan_factory factory,
                  std::string origin = "linked");

  [[nodiscard]] const entry* find(const std::string& name) const;
  [[nodiscard]] std::vector<std::string> names() const;

private:
  std::map<std::string, entry> entries_;
};

} // namespace polymesh::sdk
