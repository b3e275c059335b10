#include "mesh/domain/log.hpp"

#include "mesh/domain/clock.hpp"

#include <atomic>
#include <cstdio>
#include <mutex>

namespace polymesh {

namespace {

std::atomic<int> max_level{static_cast<int>(log_level::info)};
std::mutex out_mtx;
std::function<void(log_level, const std::string&)> out_handler;

/// The length of the well-formed UTF-8 sequence at `s[i]` (a byte of 0x80
/// or above), or 0: overlong forms, surrogates and code points past
/// U+10FFFF are not well formed.
size_t utf8_sequence(const std::string& s, size_t i) {
  auto byte = [&](size_t k) { return static_cast<unsigned char>(s[i + k]); };
  unsigned char c = byte(0);
  size_t n = c >= 0xc2 && c <= 0xdf   ? 2
             : c >= 0xe0 && c <= 0xef ? 3
             : c >= 0xf0 && c <= 0xf4 ? 4
                                      : 0;
  if (n == 0 || i + n > s.size()) return 0;
  for (size_t k = 1; k < n; ++k)
    if ((byte(k) & 0xc0) != 0x80) return 0;
  unsigned char second = byte(1);
  if ((c == 0xe0 && second < 0xa0) || (c == 0xed && second > 0x9f) ||
      (c == 0xf0 && second < 0x90) || (c == 0xf4 && second > 0x8f))
    return 0;
  return n;
}

} // namespace

unsigned layout_mark(const std::string& s, size_t i) {
  if (i + 2 >= s.size() || static_cast<unsigned char>(s[i]) != 0xe2) return 0;
  auto b1 = static_cast<unsigned char>(s[i + 1]);
  auto b2 = static_cast<unsigned char>(s[i + 2]);
  if ((b1 & 0xc0) != 0x80 || (b2 & 0xc0) != 0x80) return 0;
  unsigned cp = 0x2000u + ((b1 & 0x3fu) << 6) + (b2 & 0x3fu);
  bool mark = cp == 0x200e || cp == 0x200f || (cp >= 0x2028 && cp <= 0x202e) ||
              (cp >= 0x2066 && cp <= 0x2069);
  return mark ? cp : 0;
}

/// `text` as one line that says exactly what it held: control characters
/// (a tab aside) as escapes — `\n`, `\r`, `\x1b`, and the C1 controls and
/// the marks that change the layout (`layout_mark`: `evil\u202etxt.exe`
/// reads as another name) as `\u0085`, `\u2028`, `\u202e` — bytes that
/// are not UTF-8 as `\xNN`, and a backslash as `\\`, so that no escape
/// can be faked. Names and messages from elsewhere (a plan's artifact file,
/// a request) must not forge lines or drive the terminal.
std::string one_line(const std::string& text) {
  static const char hex[] = "0123456789abcdef";
  std::string out;
  out.reserve(text.size());
  auto escape = [&](const char* prefix, unsigned value, int digits) {
    out += prefix;
    for (int shift = 4 * (digits - 1); shift >= 0; shift -= 4)
      out += hex[(value >> shift) & 0xf];
  };
  for (size_t i = 0; i < text.size();) {
    auto c = static_cast<unsigned char>(text[i]);
    auto n = c >= 0x80 ? utf8_sequence(text, i) : 1;
    if (c >= 0x80 && n == 0) {
      escape("\\x", c, 2);
      ++i;
      continue;
    }
    if (n > 1) {
      auto second = static_cast<unsigned char>(text[i + 1]);
      if (c == 0xc2 && second <= 0x9f)
        escape("\\u", second, 4); // U+0080..U+009F
      else if (auto mark = layout_mark(text, i))
        escape("\\u", mark, 4);
      else
        out.append(text, i, n);
      i += n;
      continue;
    }
    if (c == '\\')
      out += "\\\\";
    else if (c >= 0x20 && c != 0x7f)
      out += static_cast<char>(c);
    else if (c == '\t')
      out += '\t';
    else if (c == '\n')
      out += "\\n";
    else if (c == '\r')
      out += "\\r";
    else
      escape("\\x", c, 2);
    ++i;
  }
  return out;
}

const char* to_string(log_level level) {
  switch (level) {
  case log_level::error: return "error";
  case log_level::warn: return "warn";
  case log_level::info: return "info";
  case log_level::debug: return "debug";
  }
  return "info";
}

void set_log_level(log_level level) {
  max_level = static_cast<int>(level);
}

bool parse_log_level(const std::string& text, log_level& out) {
  for (auto l : {log_level::error, log_level::warn, log_level::info, log_level::debug})
    if (text == to_string(l)) {
      out = l;
      return true;
    }
  return false;
}

void log(log_level level, const std::string& text) {
  if (static_cast<int>(level) > max_level) return;
  auto safe = one_line(text);
  std::lock_guard<std::mutex> guard{out_mtx};
  if (out_handler) return out_handler(level, safe);
  auto line = to_rfc3339(std::chrono::time_point_cast<duration>(
                  std::chrono::system_clock::now())) +
              " " + to_string(level) + " " + safe + "\n";
  std::fputs(line.c_str(), stderr);
}

void set_log_handler(std::function<void(log_level, const std::string&)> handler) {
  std::lock_guard<std::mutex> guard{out_mtx};
  out_handler = std::move(handler);
}

} // namespace polymesh
