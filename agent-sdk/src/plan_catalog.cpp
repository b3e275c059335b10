#include "polymesh/sdk/plan_catalog.hpp"

namespace polymesh::sdk {

bool valid_simple_name(const std::string& name) {
  if (name.empty() || name.size() > 128 ||
      !std::isalnum(static_cast<unsigned char>(name[0])))
    return false;
  for (char c : name)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '_' && c != '-')
      return false;
  return true;
}

std::string plan_catalog::add(std::string name, std::string description,
                              plan_factory factory, std::string origin) {
  if (!valid_simple_name(name))
    return "invalid plan name '" + name +
           "': use 1 to 128 letters, digits, '.', '_' or '-', starting with a letter or "
           "digit";
  if (!factory) return "plan '" + name + "' has no factory";
  if (auto it = entries_.find(name); it != entries_.end())
    return "plan '" + name + "' from " + origin + " is already provided by " +
           it->second.origin;
  entries_.emplace(
      name, entry{name, std::move(description), std::move(factory), std::move(origin)});
  return {};
}

const plan_catalog::entry* plan_catalog::find(const std::string& name) const {
  auto it = entries_.find(name);
  return it == entries_.end() ? nullptr : &it->second;
}

std::vector<std::string> plan_catalog::names() const {
  std::vector<std::string> out;
  for (auto& [name, e] : entries_)
    out.push_back(name);
  return out;
}

} // namespace polymesh::sdk
