// Splits a command line into argv without a shell, the way a shell would
// split a simple command, and refuses everything that would need a shell.
//
// Words are separated by blanks; 'single quotes' keep everything literal;
// "double quotes" keep everything literal except \" and \\; a backslash
// outside quotes makes the next character literal. Any unquoted shell
// operator or expansion character (; & | < > ( ) $ ` * ? [ ] { } ~ # and
// newlines) is refused, as is `$` or a backtick inside double quotes, so
// `free; rm -rf /` can never become two commands: it is an error naming the
// ';' and its position.
//
// Thread-safety: a pure function.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace polymesh::plans {

struct command_line {
  std::vector<std::string> argv;
  /// Why the text was refused ("" when `argv` is valid); no trailing period.
  std::string error;
};

[[nodiscard]] command_line parse_command_line(std::string_view text);

} // namespace polymesh::plans
