// Strict reading of a plan's settings (the `plans.<name>` section of the
// agent config, handed over as JSON): each key is read once with its type
// and bounds, and `finish` rejects keys nobody read. Errors name the dotted
// key, e.g. `plans.shell.programs[2]: expected a string`.
//
// Thread-safety: a reader is used by one thread, at config time.
#pragma once

#include <chrono>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

namespace polymesh::sdk {

/// A configuration problem; `what()` names the dotted key.
class config_error : public std::runtime_error {
public:
  config_error(const std::string& key, const std::string& message)
      : std::runtime_error(key.empty() ? message : key + ": " + message)
      , key_(key) {}
  [[nodiscard]] const std::string& key() const { return key_; }

private:
  std::string key_;
};

/// A setting that is valid but will not work as written on this host (a
/// program that is not installed, a directory that is not there): the plan
/// still builds, for the host may gain it later, and the key and message
/// reach the innermost `config_warnings` of this thread. `make_plans` logs
/// them as warnings or hands them back; `mesh-agent --check` prints them. In
/// a plugin built on plugin.hpp they reach the agent's collector the same way
/// (through the ABI's `create`). Outside any collector (a factory called on
/// its own) the warning is dropped.
void config_warning(const std::string& key, const std::string& message);

/// Collects this thread's `config_warning`s, as `key: message`, while it lives.
class config_warnings {
public:
  config_warnings();
  ~config_warnings();
  config_warnings(const config_warnings&) = delete;
  config_warnings& operator=(const config_warnings&) = delete;

  [[nodiscard]] const std::vector<std::string>& lines() const { return lines_; }

private:
  friend void config_warning(const std::string& key, const std::string& message);
  std::vector<std::string> lines_;
  config_warnings* outer_;
};

/// Parses `250ms`, `90s`, `10m`, `2h`, `7d` or `0` (no leading zero);
/// nullopt otherwise. A number too large for milliseconds in 64 bits gives
/// `milliseconds::max()`, past any bound a caller checks, never a wrapped
/// small value.
[[nodiscard]] std::optional<std::chrono::milliseconds>
parse_duration_text(const std::string& text);
/// `d` as `parse_duration_text` reads it, in the largest unit that divides
/// it: `1h`, `90s`, `1500ms`, `0`.
[[nodiscard]] std::string duration_text(std::chrono::milliseconds d);

class settings_reader {
public:
  /// `settings` must be an object or null (null reads as empty). `prefix`
  /// is the dotted key of the section, e.g. `plans.shell`.
  settings_reader(const nlohmann::json& settings, std::string prefix);

  [[nodiscard]] std::string string(const char* key, std::string fallback = {});
  [[nodiscard]] bool boolean(const char* key, bool fallback);
  [[nodiscard]] int64_t integer(const char* key, int64_t fallback, int64_t lo,
                                int64_t hi);
  /// A duration string like `10s`; bounds in milliseconds.
  [[nodiscard]] std::chrono::milliseconds duration(const char* key,
                                                   std::chrono::milliseconds fallback,
                                                   std::chrono::milliseconds lo,
                                                   std::chrono::milliseconds hi);
  [[nodiscard]] std::vector<std::string> strings(const char* key);
  [[nodiscard]] std::map<std::string, std::string> string_map(const char* key);
  /// The raw value (null when absent); the key counts as read.
  [[nodiscard]] const nlohmann::json& raw(const char* key);
  /// `prefix.key`, for errors about a value read through `raw`.
  [[nodiscard]] std::string path(const std::string& key) const;
  /// Throws `config_error` for the first key that was never read.
  void finish() const;

private:
  /// `raw(key)`, refusing a key that is there with no value (`capacity:`):
  /// a scalar left empty is a mistake, not a request for the default.
  const nlohmann::json& scalar(const char* key);

  const nlohmann::json& settings_;
  std::string prefix_;
  std::set<std::string> known_;
};

} // namespace polymesh::sdk
