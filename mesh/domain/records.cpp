#include "mesh/domain/records.hpp"

namespace polymesh {

const char* to_string(run_status x) {
  switch (x) {
  case run_status::created: return "created";
  case run_status::pending: return "pending";
  case run_status::running: return "running";
  case run_status::success: return "success";
  case run_status::error: return "error";
  case run_status::canceled: return "canceled";
  }
  return "error";
}

const char* to_string(agent_status x) {
  switch (x) {
  case agent_status::online: return "online";
  case agent_status::draining: return "draining";
  case agent_status::offline: return "offline";
  case agent_status::deregistered: return "deregistered";
  }
  return "offline";
}

const char* to_string(token_kind x) {
  switch (x) {
  case token_kind::admin: return "admin";
  case token_kind::submitter: return "submitter";
  case token_kind::reader: return "reader";
  case token_kind::registration: return "registration";
  case token_kind::agent: return "agent";
  }
  return "reader";
}

namespace {

template <class Enum, size_t N>
std::optional<Enum> parse_enum(const std::string& text, const Enum (&values)[N]) {
  for (auto v : values)
    if (text == to_string(v)) return v;
  return std::nullopt;
}

} // namespace

std::optional<run_status> parse_run_status(const std::string& text) {
  static constexpr run_status all[] = {run_status::created, run_status::pending,
                                       run_status::running, run_status::success,
                                       run_status::error,   run_status::canceled};
  return parse_enum(text, all);
}

std::optional<agent_status> parse_agent_status(const std::string& text) {
  static constexpr agent_status all[] = {agent_status::online, agent_status::draining,
                                         agent_status::offline,
                                         agent_status::deregistered};
  return parse_enum(text, all);
}

std::optional<token_kind> parse_token_kind(const std::string& text) {
  static constexpr token_kind all[] = {token_kind::admin, token_kind::submitter,
                                       token_kind::reader, token_kind::registration,
                                       token_kind::agent};
  return parse_enum(text, all);
}

bool is_terminal(run_status x) {
  return x == run_status::success || x == run_status::error || x == run_status::canceled;
}

} // namespace polymesh
