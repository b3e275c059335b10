#include "polymesh/sdk/plan.hpp"

namespace polymesh::sdk {

const char* to_string(log_stream s) {
  return s == log_stream::out ? "stdout" : "stderr";
}

const char* to_string(cancel_reason r) {
  switch (r) {
  case cancel_reason::none: return "none";
  case cancel_reason::canceled_by_user: return "canceled_by_user";
  case cancel_reason::timeout: return "timeout";
  case cancel_reason::agent_shutdown: return "agent_shutdown";
  }
  return "none";
}

void log_sink::line(std::string_view text) {
  std::string s{text};
  s += '\n';
  write(log_stream::out, s);
}

void log_sink::error_line(std::string_view text) {
  std::string s{text};
  s += '\n';
  write(log_stream::err, s);
}

plan_result plan_result::success(std::string result, std::optional<int64_t> exit_code) {
  plan_result r;
  r.ok = true;
  r.result = std::move(result);
  r.exit_code = exit_code;
  return r;
}

plan_result plan_result::failure(std::string error, std::optional<int64_t> exit_code,
                                 std::string result) {
  plan_result r;
  r.ok = false;
  r.error = std::move(error);
  r.exit_code = exit_code;
  r.result = std::move(result);
  return r;
}

} // namespace polymesh::sdk
