// How meshctl fails: its exit codes, and the one exception type that carries
// a message people understand from wherever it is raised to `main`, which
// prints it and exits with its code.
//
// Thread-safety: values and pure functions.
#pragma once

#include <caf/error.hpp>
#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

namespace polymesh::cli {

/// meshctl's exit codes (docs/cli.md "Exit codes"); scripts may rely on them.
enum exit_code : int {
  /// The command did what was asked; `runs submit --wait`: the run succeeded.
  exit_ok = 0,
  /// `runs submit --wait` / `runs wait`: the run ended in error.
  exit_failed = 1,
  /// `runs submit --wait` / `runs wait`: the run was canceled.
  exit_canceled = 2,
  /// The command could not do what was asked: the mesh refused the request
  /// (4xx, 500) or answered something else than meshd would, or a download
  /// could not be checked or written. Never a run's own outcome.
  exit_refused = 3,
  /// Bad command line or config file (BSD `EX_USAGE`); nothing was sent.
  exit_usage = 64,
  /// The mesh could not be reached, or answered 503 (shutting down,
  /// overloaded): worth retrying (BSD `EX_UNAVAILABLE`).
  exit_unreachable = 69,
  /// A change was sent but no answer came (the connection broke, or the
  /// answer took longer than meshctl waits): it may have been carried out,
  /// so repeating it blindly may do it twice (BSD `EX_TEMPFAIL`).
  exit_no_answer = 75,
};

/// A failure to report: the first line, indented detail lines (a caret
/// display, a hint) and the exit code.
class failure : public std::runtime_error {
public:
  failure(int code, const std::string& message, std::vector<std::string> details = {})
      : std::runtime_error(message)
      , code_(code)
      , details_(std::move(details)) {}

  [[nodiscard]] int code() const { return code_; }
  [[nodiscard]] const std::vector<std::string>& details() const { return details_; }

  /// Marks an unreachable mesh that trying again soon will not reach (a
  /// host name that does not resolve, a TLS setup that fails): a command
  /// that rides out outages gives up at once.
  failure& lasting() {
    lasting_ = true;
    return *this;
  }
  [[nodiscard]] bool is_lasting() const { return lasting_; }

private:
  int code_;
  std::vector<std::string> details_;
  bool lasting_ = false;
};

/// Two lines: `text`, and a caret under the 0-based `position` (clamped to
/// one past the end, where "expected more" errors point).
[[nodiscard]] std::vector<std::string> caret_lines(const std::string& text,
                                                   int64_t position);

/// A usage failure from a local validation error (`make_error` form): the
/// message, the field, and for selectors `input` with a caret under the
/// error's position.
[[nodiscard]] failure usage_failure(const caf::error& err, const std::string& input = {});
/// A refusal of the API's contract named by the flag that gave the value
/// (`--timeout: must be between 0 and 2592000 seconds`), not by the API's
/// field (`timeout_s`); `flags` maps fields to flags. Other fields as
/// `usage_failure`.
[[nodiscard]] failure
usage_failure_of_flag(const caf::error& err,
                      const std::map<std::string, std::string>& flags);

} // namespace polymesh::cli
