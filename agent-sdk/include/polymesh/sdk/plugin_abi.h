/* The plan plugin ABI, version 1: the only contract between mesh-agent and a
 * plan plugin loaded at runtime (a shared library).
 *
 * A plugin exports one C function, `polymesh_plugin_init`. The agent calls
 * it once, right after dlopen, with a `polymesh_host_v1` whose first field
 * is the agent's ABI version. The plugin returns the ABI version it was
 * built for and, only when the two match, registers its plans through
 * `host->add_plan` before returning. The agent refuses the plugin when the
 * versions differ or the symbol is missing, naming the file.
 *
 * Only C types cross the boundary, and nothing allocated on one side is
 * freed on the other: strings passed in are owned by the caller and valid
 * for the call only; a plan's result is handed over with `set_result`,
 * which copies. Exceptions must never cross (the C++ helper in
 * `polymesh/sdk/plugin.hpp` catches them).
 *
 * Threads: `create` and `destroy` run on the agent's start-up thread; `run`
 * runs on a worker thread per run, concurrently for different runs. With
 * the agent's default isolation (docs/plugins.md "Isolation") each run is
 * a process of its own instead (`mesh-plugin-host`): it loads the plugin,
 * calls `polymesh_plugin_init` and the plan's `create` with the same
 * settings, then `run`, and ends without `destroy`. The callbacks in
 * `polymesh_run_v1` may be called from any thread of that run until `run`
 * returns.
 *
 * Compatibility rule: any change to these structs or their meaning bumps
 * POLYMESH_PLUGIN_ABI_VERSION. */
#ifndef POLYMESH_SDK_PLUGIN_ABI_H
#define POLYMESH_SDK_PLUGIN_ABI_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define POLYMESH_PLUGIN_ABI_VERSION 1u
#define POLYMESH_PLUGIN_ENTRY_SYMBOL "polymesh_plugin_init"

enum polymesh_stream { POLYMESH_STDOUT = 1, POLYMESH_STDERR = 2 };

enum polymesh_cancel_reason {
  POLYMESH_NOT_CANCELED = 0,
  POLYMESH_CANCELED_BY_USER = 1,
  POLYMESH_TIMEOUT = 2,
  POLYMESH_AGENT_SHUTDOWN = 3,
};

/* One run, as seen by a plugin plan. */
typedef struct polymesh_run_v1 {
  const char* run_id;
  const char* plan;
  /* The run's params, a JSON object in text form. */
  const char* params_json;
  const char* payload;
  size_t payload_len;
  /* A fresh directory owned by the run, removed afterwards. */
  const char* work_dir;
  /* Files left here are the run's artifacts. */
  const char* artifacts_dir;
  /* Milliseconds until the run's deadline when `run` was called; -1: none. */
  int64_t deadline_ms;
  /* Between SIGTERM and SIGKILL when canceling the run's processes. */
  int64_t kill_grace_ms;

  /* Opaque; pass it back to every callback below. */
  void* host;
  /* Appends output; `stream` is a `polymesh_stream`. May block briefly. */
  void (*log)(void* host, int stream, const char* data, size_t len);
  /* Waits up to `timeout_ms` (0: just look); returns a
   * `polymesh_cancel_reason`, non-zero once the run must stop. */
  int (*wait_canceled)(void* host, int64_t timeout_ms);
  /* A short progress message for the mesh. */
  void (*progress)(void* host, const char* message);
  /* The outcome; call once before `run` returns (the last call wins). A run
   * that never calls it ends as an error. `exit_code` counts only when
   * `has_exit_code` is non-zero. */
  void (*set_result)(void* host, int ok, int has_exit_code, int64_t exit_code,
                     const char* result, const char* error);
} polymesh_run_v1;

/* One plan a plugin offers. The host copies the struct; `name`,
 * `description` and `plan_data` must stay valid while the library is
 * loaded (the agent never unloads plugins). */
typedef struct polymesh_plan_v1 {
  const char* name;
  const char* description;
  void* plan_data;
  /* Builds an instance from the plan's settings (JSON object text).
   * Returns NULL and writes a message (no trailing period) into `error` when
   * the settings are wrong. `error` is all zero bytes when the call starts;
   * a plugin that returns an instance may leave warnings in it, one per line
   * (`plans.NAME.KEY: message`), for settings that are valid but will not
   * work as written on this host; the agent reports them as its own (the
   * log, `mesh-agent --check`). An agent before this rule ignores them. */
  void* (*create)(void* plan_data, const char* settings_json, char* error,
                  size_t error_len);
  /* Executes one run; reports through `run->set_result`. */
  void (*run)(void* instance, const polymesh_run_v1* run);
  void (*destroy)(void* instance);
} polymesh_plan_v1;

/* What the agent offers the plugin during `polymesh_plugin_init`. */
typedef struct polymesh_host_v1 {
  /* Always the first field, in every version. */
  uint32_t abi_version;
  void* host;
  /* Returns 0, or non-zero when the plan is refused (bad or taken name). */
  int (*add_plan)(void* host, const polymesh_plan_v1* plan);
} polymesh_host_v1;

/* The entry point every plugin exports. */
typedef uint32_t (*polymesh_plugin_init_fn)(const polymesh_host_v1* host);

#ifdef __cplusplus
}
#endif

#endif
