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

/// `text` with its control characters (a tab aside) written as escapes: a
/// log line is one line, and names and messages from elsewhere (a plan's
/// artifact file, a request) must not forge lines or drive the terminal.
std::string one_line(const std::string& text) {
  static const char hex[] = "0123456789abcdef";
  std::string out;
  out.reserve(text.size());
  for (unsigned char c : text) {
    if (c >= 0x20 && c != 0x7f) {
      out += static_cast<char>(c);
    } else if (c == '\t') {
      out += '\t';
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else {
      out += "\\x";
      out += hex[c >> 4];
      out += hex[c & 0xf];
    }
  }
  return out;
}

} // namespace

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
  auto line =
      to_rfc3339(system_clock{}.now()) + " " + to_string(level) + " " + safe + "\n";
  std::fputs(line.c_str(), stderr);
}

void set_log_handler(std::function<void(log_level, const std::string&)> handler) {
  std::lock_guard<std::mutex> guard{out_mtx};
  out_handler = std::move(handler);
}

} // namespace polymesh
