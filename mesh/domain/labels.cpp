#include "mesh/domain/labels.hpp"

#include "mesh/domain/error.hpp"
#include "mesh/domain/ids.hpp"

#include <string_view>

namespace polymesh {

namespace {

// Kubernetes' limits (`validation.IsQualifiedName`, `IsValidLabelValue`).
constexpr size_t max_name_length = 63;
constexpr size_t max_prefix_length = 253;
constexpr size_t max_value_length = 63;

// ASCII only: Kubernetes' regular expressions use explicit ranges, so a
// locale-aware `isalnum` would accept letters Kubernetes rejects.
bool is_alnum(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

bool is_lower_alnum(char c) {
  return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]` for a non-empty `text`.
bool is_name(std::string_view text) {
  if (text.empty() || !is_alnum(text.front()) || !is_alnum(text.back())) return false;
  for (char c : text)
    if (!is_alnum(c) && c != '-' && c != '_' && c != '.') return false;
  return true;
}

// One RFC 1123 label: `[a-z0-9]([-a-z0-9]*[a-z0-9])?`. Kubernetes puts no
// length limit on the parts of a subdomain, only on the whole.
bool is_dns_label(std::string_view text) {
  if (text.empty() || !is_lower_alnum(text.front()) || !is_lower_alnum(text.back()))
    return false;
  for (char c : text)
    if (!is_lower_alnum(c) && c != '-') return false;
  return true;
}

bool is_dns_subdomain(std::string_view text) {
  for (;;) {
    auto dot = text.find('.');
    if (!is_dns_label(text.substr(0, dot))) return false;
    if (dot == std::string_view::npos) return true;
    text.remove_prefix(dot + 1);
  }
}

caf::error invalid(const std::string& field, const char* rule) {
  return make_error(errc::invalid_argument, rule, field);
}

} // namespace

caf::error validate_label_key(const std::string& key, const std::string& field) {
  std::string_view name = key;
  if (auto slash = name.find('/'); slash != std::string_view::npos) {
    auto prefix = name.substr(0, slash);
    name.remove_prefix(slash + 1);
    if (name.find('/') != std::string_view::npos)
      return invalid(field, "label key must be a name with an optional DNS subdomain "
                            "prefix and a single '/' (e.g. 'example.com/MyName')");
    if (prefix.empty()) return invalid(field, "label key prefix must not be empty");
    if (prefix.size() > max_prefix_length)
      return invalid(field, "label key prefix must be 253 characters or fewer");
    if (!is_dns_subdomain(prefix))
      return invalid(field,
                     "label key prefix must be a lowercase DNS subdomain: lowercase "
                     "alphanumeric characters, '-' or '.', and each '.'-separated "
                     "part must start and end with an alphanumeric character");
  }
  if (name.empty()) return invalid(field, "label key name must not be empty");
  if (name.size() > max_name_length)
    return invalid(field, "label key name must be 63 characters or fewer");
  if (!is_name(name))
    return invalid(field, "label key name must consist of alphanumeric characters, '-', "
                          "'_' or '.', and must start and end with an alphanumeric "
                          "character");
  return {};
}

caf::error validate_label_value(const std::string& value, const std::string& field) {
  if (value.size() > max_value_length)
    return invalid(field, "label value must be 63 characters or fewer");
  if (!value.empty() && !is_name(value))
    return invalid(field, "label value must be empty or consist of alphanumeric "
                          "characters, '-', '_' or '.', and must start and end with an "
                          "alphanumeric character");
  return {};
}

caf::error validate_labels(const label_map& labels) {
  if (labels.size() > max_labels)
    return make_error(errc::invalid_argument,
                      "at most " + std::to_string(max_labels) +
                          " labels are allowed, got " + std::to_string(labels.size()),
                      "labels");
  for (const auto& [key, value] : labels) {
    auto field = "labels." + key;
    if (auto err = validate_label_key(key, field)) return err;
    if (auto err = validate_label_value(value, field)) return err;
  }
  return {};
}

std::string labels_etag(const label_map& labels) {
  // Keys and values hold no NUL: one between each makes the text one map's.
  std::string text;
  for (const auto& [key, value] : labels) {
    text += key;
    text += '\0';
    text += value;
    text += '\0';
  }
  return "\"" + sha256_hex(text).substr(0, 32) + "\"";
}

} // namespace polymesh
