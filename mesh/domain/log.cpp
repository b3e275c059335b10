#include "mesh/domain/log.hpp"

#include "mesh/domain/clock.hpp"

#include <atomic>
#include <cstdio>
#include <mutex>

namespace polymesh {

namespace {

std::atomic<int> max_level{static_cast<int>(log_level::info)};
std::mutex out_mtx;

const char* name(log_level level) {
  switch (level) {
  case log_level::error: return "error";
  case log_level::warn: return "warn";
  case log_level::info: return "info";
  case log_level::debug: return "debug";
  }
  return "info";
}

} // namespace

void set_log_level(log_level level) {
  max_level = static_cast<int>(level);
}

bool parse_log_level(const std::string& text, log_level& out) {
  for (auto l : {log_level::error, log_level::warn, log_level::info, log_level::debug})
    if (text == name(l)) {
      out = l;
      return true;
    }
  return false;
}

void log(log_level level, const std::string& text) {
  if (static_cast<int>(level) > max_level) return;
  auto line = to_rfc3339(system_clock{}.now()) + " " + name(level) + " " + text + "\n";
  std::lock_guard<std::mutex> guard{out_mtx};
  std::fputs(line.c_str(), stderr);
}

} // namespace polymesh
