#include "polymesh/sdk/settings.hpp"

#include <algorithm>
#include <limits>

namespace polymesh::sdk {

namespace {

const nlohmann::json& null_json() {
  static const nlohmann::json null;
  return null;
}

std::string type_of(const nlohmann::json& j) {
  if (j.is_string()) {
    auto& s = j.get_ref<const std::string&>();
    bool numeric = !s.empty() && s.find_first_not_of("0123456789.-") == std::string::npos;
    if (numeric && s.find('.') != std::string::npos) return "a fraction '" + s + "'";
    if (numeric && s.size() > 1 && s[0] == '0')
      return "'" + s + "' (leading zeros are not read as numbers)";
    return "a string '" + s + "'";
  }
  if (j.is_boolean()) return "a boolean";
  if (j.is_number()) return "a number";
  if (j.is_array()) return "a list";
  if (j.is_object()) return "a map";
  return "an empty value";
}

/// The innermost collector of this thread.
thread_local config_warnings* current_warnings = nullptr;

} // namespace

void config_warning(const std::string& key, const std::string& message) {
  if (current_warnings)
    current_warnings->lines_.push_back(key.empty() ? message : key + ": " + message);
}

config_warnings::config_warnings()
    : outer_(current_warnings) {
  current_warnings = this;
}

config_warnings::~config_warnings() {
  current_warnings = outer_;
}

std::optional<std::chrono::milliseconds> parse_duration_text(const std::string& text) {
  if (text == "0") return std::chrono::milliseconds{0};
  size_t i = 0;
  while (i < text.size() && text[i] >= '0' && text[i] <= '9')
    ++i;
  // No leading zero (`030s`), as meshd reads durations.
  if (i == 0 || i > 12 || (i > 1 && text[0] == '0')) return std::nullopt;
  auto n = std::stoll(text.substr(0, i));
  auto unit = text.substr(i);
  int64_t ms;
  if (unit == "ms")
    ms = 1;
  else if (unit == "s")
    ms = 1000;
  else if (unit == "m")
    ms = 60'000;
  else if (unit == "h")
    ms = 3'600'000;
  else if (unit == "d")
    ms = 86'400'000;
  else
    return std::nullopt;
  // Twelve digits of days overflow: past any bound, never wrapped to a
  // small value.
  if (n > std::numeric_limits<int64_t>::max() / ms)
    return std::chrono::milliseconds::max();
  return std::chrono::milliseconds{n * ms};
}

settings_reader::settings_reader(const nlohmann::json& settings, std::string prefix)
    : settings_(settings.is_null() ? null_json() : settings)
    , prefix_(std::move(prefix)) {
  if (!settings_.is_null() && !settings_.is_object())
    throw config_error(prefix_, "expected a map of settings, got " + type_of(settings_));
}

std::string settings_reader::path(const std::string& key) const {
  return prefix_.empty() ? key : prefix_ + "." + key;
}

const nlohmann::json& settings_reader::raw(const char* key) {
  known_.insert(key);
  if (!settings_.is_object()) return null_json();
  auto it = settings_.find(key);
  return it == settings_.end() ? null_json() : *it;
}

const nlohmann::json& settings_reader::scalar(const char* key) {
  auto& v = raw(key);
  if (v.is_null() && settings_.is_object() && settings_.contains(key))
    throw config_error(path(key),
                       "has no value; give one, or leave the key out for the default");
  return v;
}

std::string settings_reader::string(const char* key, std::string fallback) {
  auto& v = scalar(key);
  if (v.is_null()) return fallback;
  if (v.is_string()) return v.get<std::string>();
  if (v.is_number_integer()) return std::to_string(v.get<int64_t>());
  throw config_error(path(key), "expected a string, got " + type_of(v));
}

bool settings_reader::boolean(const char* key, bool fallback) {
  auto& v = scalar(key);
  if (v.is_null()) return fallback;
  if (!v.is_boolean())
    throw config_error(path(key), "expected true or false, got " + type_of(v));
  return v.get<bool>();
}

int64_t settings_reader::integer(const char* key, int64_t fallback, int64_t lo,
                                 int64_t hi) {
  auto& v = scalar(key);
  if (v.is_null()) return fallback;
  if (!v.is_number_integer())
    throw config_error(path(key), "expected an integer, got " + type_of(v));
  auto x = v.get<int64_t>();
  if (x < lo || x > hi)
    throw config_error(path(key), "expected an integer in " + std::to_string(lo) + ".." +
                                      std::to_string(hi) + ", got " + std::to_string(x));
  return x;
}

namespace {

/// What is wrong with a text that is no duration, as meshd says it: "" when
/// nothing more specific than "not a duration" can be said.
std::string why_no_duration(const nlohmann::json& v) {
  if (!v.is_string()) return {};
  auto text = v.get<std::string>();
  if (!text.empty() && text[0] == '-') return " (durations cannot be negative)";
  auto digits = std::min(text.find_first_not_of("0123456789"), text.size());
  if (digits == 0) return {};
  if (digits > 12) return " (too large)";
  if (digits == text.size()) return " (a unit is required unless the value is 0)";
  if (digits > 1 && text[0] == '0') return " (leading zeros are not allowed)";
  return {};
}

} // namespace

std::string duration_text(std::chrono::milliseconds d) {
  // As the agent's config writes it: the largest unit that divides it
  // (`1h`, `90s`, `1500ms`), `0` for nothing.
  auto ms = d.count();
  if (ms == 0) return "0";
  for (auto [size, unit] : {std::pair<int64_t, const char*>{86'400'000, "d"},
                            {3'600'000, "h"},
                            {60'000, "m"},
                            {1'000, "s"}})
    if (ms % size == 0) return std::to_string(ms / size) + unit;
  return std::to_string(ms) + "ms";
}

std::chrono::milliseconds settings_reader::duration(const char* key,
                                                    std::chrono::milliseconds fallback,
                                                    std::chrono::milliseconds lo,
                                                    std::chrono::milliseconds hi) {
  auto& v = scalar(key);
  if (v.is_null()) return fallback;
  std::optional<std::chrono::milliseconds> d;
  if (v.is_string())
    d = parse_duration_text(v.get<std::string>());
  else if (v.is_number_integer() && v.get<int64_t>() == 0)
    d = std::chrono::milliseconds{0};
  if (!d)
    throw config_error(path(key), "expected a duration like 90s, 10m or 2h, got " +
                                      type_of(v) + why_no_duration(v));
  if (*d < lo || *d > hi)
    throw config_error(path(key), "expected a duration in " + duration_text(lo) + ".." +
                                      duration_text(hi) + ", got " +
                                      (*d == std::chrono::milliseconds::max()
                                           ? v.get<std::string>() + " (too large)"
                                           : duration_text(*d)));
  return *d;
}

std::vector<std::string> settings_reader::strings(const char* key) {
  auto& v = raw(key);
  std::vector<std::string> out;
  if (v.is_null()) return out;
  if (!v.is_array())
    throw config_error(path(key), "expected a list of strings, got " + type_of(v));
  for (size_t i = 0; i < v.size(); ++i) {
    if (!v[i].is_string())
      throw config_error(path(key) + "[" + std::to_string(i) + "]",
                         "expected a string, got " + type_of(v[i]));
    out.push_back(v[i].get<std::string>());
  }
  return out;
}

std::map<std::string, std::string> settings_reader::string_map(const char* key) {
  auto& v = raw(key);
  std::map<std::string, std::string> out;
  if (v.is_null()) return out;
  if (!v.is_object())
    throw config_error(path(key), "expected a map of strings, got " + type_of(v));
  for (auto& [k, x] : v.items()) {
    if (x.is_string())
      out.emplace(k, x.get<std::string>());
    else if (x.is_number_integer())
      out.emplace(k, std::to_string(x.get<int64_t>()));
    else
      throw config_error(path(key) + "." + k, "expected a string, got " + type_of(x));
  }
  return out;
}

void settings_reader::finish() const {
  if (!settings_.is_object()) return;
  for (auto& [k, v] : settings_.items())
    if (known_.count(k) == 0) throw config_error(path(k), "unknown key");
}

} // namespace polymesh::sdk
