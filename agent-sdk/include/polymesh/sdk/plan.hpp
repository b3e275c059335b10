// The plan interface: what a plan receives for one run and what it returns.
//
// A plan is a named handler living on an agent. For each run the runtime
// builds a `run_context` (the run's id, params, payload, a fresh working
// directory, an artifacts directory, a log sink and a cancellation token) and
// calls `plan::run` on a worker thread of its own. The runtime owns every
// object the context refers to; they stay valid until `run` returns.
//
// Thread-safety: `plan::run` may be called concurrently for different runs
// (up to the agent's capacity), so a plan keeps per-run state on the stack.
// The log sink and the token may be used from any thread of that run.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

namespace polymesh::sdk {

/// Which stream a piece of output came from.
enum class log_stream : uint8_t {
  /// The plan's standard output (or its own informational lines).
  out,
  /// The plan's standard error (or its own diagnostics).
  err,
};

/// `stdout` or `stderr`, the names the mesh uses.
[[nodiscard]] const char* to_string(log_stream s);

/// Receives a run's output. Writes are kept in order and none are lost; a
/// write may block for a while when the mesh is slower than the plan (the
/// runtime bounds the memory it holds per run).
class log_sink {
public:
  virtual ~log_sink() = default;
  /// Appends raw bytes; no newline is added.
  virtual void write(log_stream stream, std::string_view data) = 0;
  /// Appends `line` and a newline to stdout.
  void line(std::string_view text);
  /// Appends `line` and a newline to stderr.
  void error_line(std::string_view text);
};

/// Why a run was told to stop.
enum class cancel_reason : uint8_t {
  /// Not canceled.
  none,
  /// A user asked the mesh to cancel the run, or the mesh ended it without
  /// the agent (the agent was removed, or was offline past
  /// `agents.offline_after`: the run is `error/agent_lost` there); in the
  /// latter case nothing the plan sends afterwards is kept.
  canceled_by_user,
  /// The run's timeout passed.
  timeout,
  /// The agent is shutting down and the drain deadline passed.
  agent_shutdown,
};

/// `canceled_by_user`, `timeout`, `agent_shutdown` (or `none`).
[[nodiscard]] const char* to_string(cancel_reason r);

/// Tells a plan whether it should stop. A plan that runs for long checks
/// `canceled()` (or blocks in `wait_for`) and returns soon after it fires;
/// processes started through `run_process` are stopped automatically.
class cancel_token {
public:
  using clock_type = std::chrono::steady_clock;

  virtual ~cancel_token() = default;
  /// True once the run must stop (cancel requested or deadline passed).
  [[nodiscard]] virtual bool canceled() const = 0;
  /// Why; `none` while not canceled.
  [[nodiscard]] virtual cancel_reason reason() const = 0;
  /// The run's deadline (its timeout), if any.
  [[nodiscard]] virtual std::optional<clock_type::time_point> deadline() const = 0;
  /// Blocks up to `d`; returns true as soon as the token is canceled.
  virtual bool wait_for(std::chrono::milliseconds d) const = 0;
};

/// Everything a plan gets for one run. All references outlive `plan::run`.
struct run_context {
  /// The run's id, as the mesh knows it.
  std::string run_id;
  /// The plan name the run asked for.
  std::string plan;
  /// 0 for a run submitted; n for the mesh's nth automatic retry of it
  /// (docs/api.md, "Automatic retries"): its first tries may have left
  /// work half done.
  int64_t retry_number = 0;
  /// The run this one retries ("" for a run submitted).
  std::string retry_of;
  /// The run's params, always a JSON object.
  nlohmann::json params = nlohmann::json::object();
  /// The run's payload, opaque text (for `shell`: the command line).
  std::string payload;
  /// A fresh, empty directory owned by this run; emptied afterwards.
  std::filesystem::path work_dir;
  /// Files left here are the run's artifacts; emptied afterwards.
  std::filesystem::path artifacts_dir;
  log_sink* log = nullptr;
  const cancel_token* cancel = nullptr;
  /// Between SIGTERM and SIGKILL when the run's processes are canceled (the
  /// agent's `kill_grace`); plans pass it on to `process_spec`.
  std::chrono::milliseconds kill_grace{10000};
  /// Reports a short progress message to the mesh (rate limited by the
  /// runtime; the last message wins; cut to its first 4096 bytes, the most
  /// the mesh takes). May be empty.
  std::function<void(std::string)> progress;
};

/// What a plan reports back.
struct plan_result {
  /// Whether the plan did what it was asked.
  bool ok = true;
  /// The exit code of the process the plan ran, if any.
  std::optional<int64_t> exit_code;
  /// A short text result shown to the user (e.g. the tail of the output).
  std::string result;
  /// What went wrong, when `ok` is false; no trailing period.
  std::string error;

  [[nodiscard]] static plan_result success(std::string result = {},
                                           std::optional<int64_t> exit_code = {});
  [[nodiscard]] static plan_result failure(std::string error,
                                           std::optional<int64_t> exit_code = {},
                                           std::string result = {});
};

/// A named handler. Implementations must be safe to call concurrently for
/// different runs. Throwing from `run` is reported as an error result.
class plan {
public:
  virtual ~plan() = default;
  [[nodiscard]] virtual plan_result run(run_context& ctx) = 0;
};

/// Adapts a function to `plan`, for plans that need no state.
class function_plan final : public plan {
public:
  using function_type = std::function<plan_result(run_context&)>;
  explicit function_plan(function_type f)
      : f_(std::move(f)) {}
  [[nodiscard]] plan_result run(run_context& ctx) override { return f_(ctx); }

private:
  function_type f_;
};

} // namespace polymesh::sdk
