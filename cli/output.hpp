// How meshctl prints: `-o json` and `-o yaml` print the API's objects as the
// mesh returned them (for scripts); `-o table` prints aligned tables and
// key/value blocks for people, with colour only when stdout is a TTY.
// Progress (the spinner line) goes to stderr, and only when it is a TTY.
//
// Thread-safety: one printer per process, used from `main`'s thread.
#pragma once

#include "cli/settings.hpp"

#include <chrono>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

namespace polymesh::cli {

using json = nlohmann::json;

enum class color { none, red, green, yellow, blue, gray, bold };

class printer {
public:
  explicit printer(const settings& s)
      : s_(s) {}

  [[nodiscard]] bool structured() const { return s_.output != output_format::table; }
  [[nodiscard]] output_format format() const { return s_.output; }

  /// Prints `j` as JSON (pretty, 2 spaces) or YAML, per `-o`.
  void emit(const json& j) const;
  /// Prints an aligned table; cells of `status_column` are coloured by value.
  void table(const std::vector<std::string>& header,
             const std::vector<std::vector<std::string>>& rows,
             int status_column = -1) const;
  /// Prints `key: value` lines with the keys aligned.
  void fields(const std::vector<std::pair<std::string, std::string>>& kv) const;
  /// `text` wrapped in colour codes when stdout is a colour TTY.
  [[nodiscard]] std::string paint(const std::string& text, color c) const;
  /// `text` coloured for stderr (warnings, progress).
  [[nodiscard]] std::string paint_err(const std::string& text, color c) const;
  /// The colour of a run or agent status.
  [[nodiscard]] static color status_color(const std::string& status);

private:
  const settings& s_;
};

/// A one-line progress display on stderr (`⠋ waiting for run ... (12s)`),
/// redrawn in place; does nothing unless stderr is a TTY.
class spinner {
public:
  explicit spinner(const settings& s)
      : on_(s.interactive) {}
  ~spinner() { clear(); }
  /// Redraws the line with `text` and the next animation frame.
  void update(const std::string& text);
  /// Erases the line, e.g. before printing log output.
  void clear();
  /// While held (log output that did not end its line), `update` draws
  /// nothing: its line would erase that output.
  void hold(bool held) { held_ = held; }

private:
  bool on_;
  bool shown_ = false;
  bool held_ = false;
  size_t frame_ = 0;
  std::chrono::steady_clock::time_point started_ = std::chrono::steady_clock::now();
};

/// Renders JSON as YAML (block style, keys in the JSON's order).
[[nodiscard]] std::string to_yaml(const json& j);

/// `s` with control characters but newlines and tabs written as escapes
/// (`\x1b`, `\u009b`): a payload or result cannot clear the screen, set
/// the terminal's title or overwrite a line for whoever looks at it. So are
/// the Unicode line separators and the bidirectional controls (`\u2028`,
/// `\u202e`), with which a text could show its words in another order.
[[nodiscard]] std::string visible(const std::string& s);

/// Text of a JSON value for a table cell: strings bare, null as `-`, others
/// as JSON (control characters but newlines and tabs as escapes).
[[nodiscard]] std::string cell(const json& j);

/// `2026-11-23T20:45:03.120Z` as `12s ago` / `3m ago` / `2h ago` / `4d ago`;
/// `-` for null.
[[nodiscard]] std::string age(const json& rfc3339);

/// Labels as `k=v,k2=v2`, `-` when empty.
[[nodiscard]] std::string labels_text(const json& labels);

} // namespace polymesh::cli
