#include "plans/shell/command_line.hpp"

#include <gtest/gtest.h>

using polymesh::plans::parse_command_line;
using argv_t = std::vector<std::string>;

// This test ensures blanks split words and quotes keep them together.
TEST(command_line, splits_and_unquotes) {
  EXPECT_EQ(parse_command_line("df -h /").argv, (argv_t{"df", "-h", "/"}));
  EXPECT_EQ(parse_command_line("  echo   'a b'  \"c d\" e\\ f ").argv,
            (argv_t{"echo", "a b", "c d", "e f"}));
  EXPECT_EQ(parse_command_line("echo 'x;y|z $HOME'").argv,
            (argv_t{"echo", "x;y|z $HOME"}));
  EXPECT_EQ(parse_command_line("echo \"say \\\"hi\\\"\"").argv,
            (argv_t{"echo", "say \"hi\""}));
  EXPECT_EQ(parse_command_line("echo ''").argv, (argv_t{"echo", ""}));
  EXPECT_EQ(parse_command_line("echo a\\;b").argv, (argv_t{"echo", "a;b"}));
}

// This test ensures `free; rm -rf /` is refused instead of becoming two commands.
TEST(command_line, injection_is_refused) {
  auto c = parse_command_line("free; rm -rf /");
  EXPECT_TRUE(c.argv.empty());
  EXPECT_NE(c.error.find("';' at position 4"), std::string::npos) << c.error;
  for (auto text : {"free && rm -rf /", "free | sh", "free > /etc/passwd", "echo $(id)",
                    "echo `id`", "echo $HOME", "ls *", "free\nrm -rf /", "echo \"$(id)\"",
                    "echo ~root", "a & b", "(free)", "echo {a,b}", "echo # x"})
    EXPECT_FALSE(parse_command_line(text).error.empty()) << text;
}

// This test ensures malformed quoting and empty commands are errors.
TEST(command_line, malformed_is_refused) {
  EXPECT_NE(parse_command_line("echo 'abc").error.find("unterminated single quote"),
            std::string::npos);
  EXPECT_NE(parse_command_line("echo \"abc").error.find("unterminated double quote"),
            std::string::npos);
  EXPECT_NE(parse_command_line("echo \\").error.find("trailing backslash"),
            std::string::npos);
  EXPECT_NE(parse_command_line("   ").error.find("empty"), std::string::npos);
}

// This test ensures a NUL byte is refused as such wherever it is: quoted, it
// was refused with a hint to quote it differently (in "..." to use '...',
// unquoted to quote it), which led in a circle.
TEST(command_line, a_nul_byte_is_refused_quoted_or_not) {
  using namespace std::string_view_literals;
  for (auto text : {"echo a\0b"sv, "echo \"a\0b\""sv, "echo 'a\0b'"sv, "echo \\\0"sv})
    EXPECT_NE(
        parse_command_line(text).error.find(
            "a NUL byte at position " + std::to_string(text.find('\0')) +
            " is not allowed: a program's arguments cannot hold one, quoted or not"),
        std::string::npos)
        << parse_command_line(text).error;
}
