// The wire between the agent and the host process of one isolated plugin
// run (`mesh-plugin-host`, docs/plugins.md "Isolation").
//
// The agent starts the host with `host_argument` and the run's plan name as
// its arguments, the run's spec on its stdin (a memory
// file, read whole before anything else), the run's stdout and stderr pipes
// as fds 1 and 2, the frames pipe as fd 3 and the cancel socket as fd 4.
// The host loads the plugin, creates the plan with its settings and runs it,
// and reports in frames on fd 3: output, progress and the result. The agent
// writes the cancel's reason to fd 4 and closes it.
//
// A frame is its type (1 byte), the payload's length (4 bytes, host order:
// both ends are the same machine) and the payload.
//
// Thread-safety: plain functions of their arguments.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace polymesh::sdk::detail {

/// Frame types, the first byte of a frame's header.
enum frame_type : char {
  frame_stdout = 'o',
  frame_stderr = 'e',
  frame_progress = 'p',
  frame_result = 'r',
  /// The `execve` of the host failed: the payload is its errno (4 bytes).
  frame_exec_failed = 'x',
  /// The host runs and read the spec (no payload): its first frame but a
  /// refusal of the spec, so that a host that ended before it (its
  /// libraries did not load) is told from a plan's `exit`.
  frame_started = 's',
};

/// A frame's header: type and payload length.
constexpr size_t frame_header_size = 5;
/// Output is sent in frames of at most this size.
constexpr size_t max_output_frame = 64 * 1024;
/// A larger frame means the pipe does not carry frames any more (something
/// in the host wrote to it): the host is stopped.
constexpr uint32_t max_frame = 64U * 1024 * 1024;
/// The host's descriptors besides stdio.
constexpr int host_frames_fd = 3;
constexpr int host_cancel_fd = 4;
/// The host's one argument: it was started by an agent, not by hand.
constexpr const char* host_argument = "--isolated-run";

/// What a host needs to run one plan: which plan of which plugin, its
/// settings, and the run's fields as `polymesh_run_v1` carries them.
struct host_run_spec {
  std::string plugin_path;
  /// The name the plugin registered the plan under.
  std::string plan_name;
  /// The plan's settings as JSON, as the agent's `create` got them.
  std::string settings_json;
  std::string run_id;
  /// The run's plan as the agent calls it (`polymesh_run_v1::plan`).
  std::string run_plan;
  std::string params_json;
  std::string payload;
  std::string work_dir;
  std::string artifacts_dir;
  /// The run's deadline on `std::chrono::steady_clock` (CLOCK_MONOTONIC,
  /// the same in every process of the machine), in nanoseconds since its
  /// epoch; -1: none. Absolute, so that the host's start and the plan's
  /// `create` are not added to the plan's time.
  int64_t deadline_steady_ns = -1;
  int64_t kill_grace_ms = 0;
};

/// What the plan passed to `polymesh_run_v1::set_result`, or the host's own
/// failure: the payload of a `frame_result`.
struct host_run_result {
  bool ok = false;
  /// None when the plan gave none.
  std::optional<int64_t> exit_code;
  std::string result;
  std::string error;
};

/// `spec` as the bytes the host reads from its stdin.
[[nodiscard]] std::string encode(const host_run_spec& spec);
/// The spec in `bytes`, or nullopt when they are not one (truncated, or
/// not written by this version's `encode`).
[[nodiscard]] std::optional<host_run_spec> decode_host_run_spec(std::string_view bytes);

/// `result` as the payload of a `frame_result`.
[[nodiscard]] std::string encode(const host_run_result& result);
/// The result in a `frame_result`'s `payload`, or nullopt when it is too
/// short for one.
[[nodiscard]] std::optional<host_run_result>
decode_host_run_result(std::string_view payload);

/// A frame's header for a payload of `len` bytes.
void frame_header(char (&header)[frame_header_size], char type, size_t len);

} // namespace polymesh::sdk::detail
