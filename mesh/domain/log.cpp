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
  std::lock_guard<std::mutex> guard{out_mtx};
  if (out_handler) return out_handler(level, text);
  auto line =
      to_rfc3339(system_clock{}.now()) + " " + to_string(level) + " " + text + "\n";
  std::fputs(line.c_str(), stderr);
}

void set_log_handler(std::function<void(log_level, const std::string&)> handler) {
  std::lock_guard<std::mutex> guard{out_mtx};
  out_handler = std::move(handler);
}

} // namespace polymesh
