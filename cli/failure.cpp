#include "cli/failure.hpp"

#include "mesh/domain/error.hpp"

namespace polymesh::cli {

std::vector<std::string> caret_lines(const std::string& text, int64_t position) {
  auto at = static_cast<size_t>(std::max<int64_t>(0, position));
  if (at > text.size()) at = text.size();
  return {text, std::string(at, ' ') + "^"};
}

failure usage_failure(const caf::error& err, const std::string& input) {
  auto message = message_of(err);
  if (auto field = field_of(err);
      !field.empty() && message.find(field) == std::string::npos)
    message = field + ": " + message;
  std::vector<std::string> details;
  if (auto pos = position_of(err); pos >= 0) details = caret_lines(input, pos);
  return failure{exit_usage, message, std::move(details)};
}

failure usage_failure_of_flag(const caf::error& err,
                              const std::map<std::string, std::string>& flags) {
  auto field = field_of(err);
  auto it = flags.find(field.substr(0, field.find_first_of(".[")));
  if (it == flags.end()) return usage_failure(err);
  auto message = message_of(err);
  if (auto named = "field '" + field + "' "; message.rfind(named, 0) == 0)
    message.erase(0, named.size());
  if (field == "timeout_s" || field == "ttl_s") message += " seconds";
  auto flag = it->second;
  if (field != it->first) flag += " (" + field + ")";
  return failure{exit_usage, flag + ": " + message};
}

} // namespace polymesh::cli
