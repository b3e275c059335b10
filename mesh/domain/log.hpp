// meshd's log: one line per event on stderr, `<RFC 3339 time> <level> <text>`.
// Secrets never go through here in full. Control characters in a text (a
// tab aside), and the bidirectional embeddings, overrides and isolates, are
// written as escapes (`\n`, `\r`, `\x1b`, `\u0085`, `\u2028`, `\u202e`),
// bytes that are not UTF-8 as `\xNN` and a backslash as `\\`, also to a
// handler: names and messages from elsewhere cannot forge lines or drive a
// terminal, and a line reads back unambiguously.
//
// Thread-safety: `log` may be called from any thread; lines never interleave.
#pragma once

#include <functional>
#include <string>

namespace polymesh {

enum class log_level : int { error = 0, warn = 1, info = 2, debug = 3 };

/// Sets the most verbose level written (default `info`).
void set_log_level(log_level level);
/// Parses `error`, `warn`, `info`, `debug`.
[[nodiscard]] bool parse_log_level(const std::string& text, log_level& out);
void log(log_level level, const std::string& text);
/// Lines at or above the level go to `handler` (one call at a time)
/// instead of stderr; an empty function restores stderr.
void set_log_handler(std::function<void(log_level, const std::string&)> handler);
[[nodiscard]] const char* to_string(log_level level);
/// `text` escaped as a log line writes it (above), for what is printed
/// outside the log (`mesh-agent --check`'s warnings).
[[nodiscard]] std::string one_line(const std::string& text);
/// The code point at `s[i]` when it is one that changes how the text around
/// it is laid out: the left-to-right and right-to-left marks, the line and
/// paragraph separators, the bidirectional embeddings, overrides and
/// isolates (U+200E, U+200F, U+2028..U+202E, U+2066..U+2069: a name could
/// show its letters in another order, "Trojan Source"); else 0. The log and
/// meshctl escape these.
[[nodiscard]] unsigned layout_mark(const std::string& s, size_t i);

} // namespace polymesh
