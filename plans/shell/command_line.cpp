#include "plans/shell/command_line.hpp"

namespace polymesh::plans {

namespace {

bool is_blank(char c) {
  return c == ' ' || c == '\t';
}

/// Characters a shell would treat as operators or expansions when unquoted.
bool is_meta(char c) {
  switch (c) {
  case ';':
  case '&':
  case '|':
  case '<':
  case '>':
  case '(':
  case ')':
  case '$':
  case '`':
  case '*':
  case '?':
  case '[':
  case ']':
  case '{':
  case '}':
  case '~':
  case '#':
  case '\n':
  case '\r': return true;
  default: return false;
  }
}

std::string shown(char c) {
  if (c == '\n') return "a newline";
  if (c == '\r') return "a carriage return";
  return std::string{"'"} + c + "'";
}

command_line refuse(std::string why) {
  command_line out;
  out.error = std::move(why);
  return out;
}

} // namespace

command_line parse_command_line(std::string_view text) {
  // First, whatever quotes it: no quoting passes a NUL to a program (its
  // arguments end at one), so a hint to quote it would lead in a circle.
  if (auto nul = text.find('\0'); nul != std::string_view::npos)
    return refuse(
        "a NUL byte at position " + std::to_string(nul) +
        " is not allowed: a program's arguments cannot hold one, quoted or not");
  command_line out;
  std::string word;
  bool in_word = false;
  size_t i = 0;
  while (i < text.size()) {
    char c = text[i];
    if (is_blank(c)) {
      if (in_word) {
        out.argv.push_back(std::move(word));
        word.clear();
        in_word = false;
      }
      ++i;
      continue;
    }
    if (c == '\'') {
      auto close = text.find('\'', i + 1);
      if (close == std::string_view::npos)
        return refuse("unterminated single quote at position " + std::to_string(i));
      word.append(text.substr(i + 1, close - i - 1));
      in_word = true;
      i = close + 1;
      continue;
    }
    if (c == '"') {
      size_t j = i + 1;
      in_word = true;
      for (;; ++j) {
        if (j >= text.size())
          return refuse("unterminated double quote at position " + std::to_string(i));
        char d = text[j];
        if (d == '"') break;
        if (d == '\\' && j + 1 < text.size() &&
            (text[j + 1] == '"' || text[j + 1] == '\\')) {
          word += text[++j];
          continue;
        }
        if (d == '$' || d == '`')
          return refuse("shell expansion " + shown(d) + " at position " +
                        std::to_string(j) +
                        " is not allowed: the command runs without a shell; use single "
                        "quotes for a literal");
        word += d;
      }
      i = j + 1;
      continue;
    }
    if (c == '\\') {
      if (i + 1 >= text.size())
        return refuse("trailing backslash at position " + std::to_string(i));
      char next = text[i + 1];
      if (next == '\n')
        return refuse("escaped " + shown(next) + " at position " + std::to_string(i + 1) +
                      " is not allowed");
      word += next;
      in_word = true;
      i += 2;
      continue;
    }
    if (is_meta(c))
      return refuse("shell metacharacter " + shown(c) + " at position " +
                    std::to_string(i) +
                    " is not allowed: the shell plan runs one command without a shell "
                    "(quote it to pass it literally)");
    word += c;
    in_word = true;
    ++i;
  }
  if (in_word) out.argv.push_back(std::move(word));
  if (out.argv.empty()) return refuse("the command is empty");
  return out;
}

} // namespace polymesh::plans
