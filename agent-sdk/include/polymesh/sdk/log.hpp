// The SDK's own log: what the agent runtime says about registration, runs,
// retries and shutdown. By default one line per event on stderr,
// `<RFC 3339 time> <level> <text>`, at `info` and above. A program that
// embeds the agent may choose the level, or take the lines itself (into its
// own logger, say). A line's control characters (a tab aside) come as
// escapes (`\n`, `\x1b`, `\u2028`), bytes that are not UTF-8 as `\xNN` and a
// backslash as `\\`: names from plans and the mesh cannot forge lines.
//
// Thread-safety: both functions may be called from any thread; they apply
// to the whole process.
#pragma once

#include <functional>
#include <string>

namespace polymesh::sdk {

/// The most verbose level written: `error`, `warn`, `info` (the default) or
/// `debug`. Returns false, and changes nothing, for anything else.
bool set_log_level(const std::string& level);

/// Lines at or above the level go to `handler` (the level's name and the
/// text, without time stamp or newline) instead of stderr; an empty function
/// restores stderr. The handler is called from the SDK's threads, one call
/// at a time, and must not call back into the SDK.
void set_log_handler(
    std::function<void(const std::string& level, const std::string& text)> handler);

} // namespace polymesh::sdk
