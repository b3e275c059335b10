// Where meshctl's global settings come from. Each is taken from the first
// source that sets it: command-line flag, environment, config file, default.
//
//   setting  flag          environment    config key  default
//   mesh     --mesh URL    MESH_URL       mesh        http://127.0.0.1:7700
//   token    --token T     MESH_TOKEN     token       (none)
//            --token-file  MESH_TOKEN_FILE
//   output   -o FORMAT     MESH_OUTPUT    output      table
//   colour   --no-color    NO_COLOR       color       on when stdout is a TTY
//   heartbeat              MESH_WAIT_HEARTBEAT         60 (seconds, 1 to 3600)
//
// The config file is `--config FILE`, else `$MESHCTL_CONFIG`, else
// `$XDG_CONFIG_HOME/polymesh/meshctl.yaml` (`~/.config/...` without XDG). A
// missing default file is fine; a named file that is missing, an unknown key
// or a bad value is a usage failure naming the file and key. A token file
// (kept out of `ps` and shell history) holds the token, whitespace around it
// ignored; `--token` and `--token-file` together are a usage failure, and
// so is a token, from any source, with a blank, line break or control
// character inside (it would go into the Authorization header as it is).
//
// Thread-safety: called once from `main`'s thread.
#pragma once

#include <string>

namespace polymesh::cli {

/// The global flags as parsed; empty strings mean "not given" (an empty
/// value given is refused while parsing).
struct global_flags {
  std::string mesh;
  std::string token;
  std::string token_file;
  std::string ca_file;
  std::string output;
  std::string config;
  bool no_color = false;
};

enum class output_format { table, json, yaml };

struct settings {
  /// `http://HOST:PORT` or `https://HOST:PORT`, no trailing slash.
  std::string mesh_url = "http://127.0.0.1:7700";
  std::string token;
  /// PEM certificate authorities to trust for an https mesh ("" = the
  /// system's).
  std::string ca_file;
  output_format output = output_format::table;
  /// Colour and spinners on stdout / stderr; only ever true on a TTY.
  bool color_stdout = false;
  bool color_stderr = false;
  /// True when stderr is a terminal: progress lines go there.
  bool interactive = false;
  /// Without a terminal, how often a wait with nothing new to say says that
  /// it is still waiting.
  int heartbeat_s = 60;
  /// The config file that was read ("" when none).
  std::string config_file;
};

/// Resolves the settings; throws `failure` (exit_usage) on a bad value.
[[nodiscard]] settings resolve_settings(const global_flags& flags);

/// The default config file path (see above), or "" when $HOME is unset.
[[nodiscard]] std::string default_config_path();

} // namespace polymesh::cli
