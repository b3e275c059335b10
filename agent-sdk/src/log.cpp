#include "polymesh/sdk/log.hpp"

#include "mesh/domain/log.hpp"

namespace polymesh::sdk {

bool set_log_level(const std::string& level) {
  polymesh::log_level parsed{};
  if (!parse_log_level(level, parsed)) return false;
  polymesh::set_log_level(parsed);
  return true;
}

void set_log_handler(
    std::function<void(const std::string& level, const std::string& text)> handler) {
  if (!handler) return polymesh::set_log_handler(nullptr);
  polymesh::set_log_handler(
      [handler = std::move(handler)](polymesh::log_level level, const std::string& text) {
        handler(to_string(level), text);
      });
}

} // namespace polymesh::sdk
