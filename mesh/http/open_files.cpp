#include "mesh/http/open_files.hpp"

#include <climits>
#include <sys/resource.h>
#include <utility>

namespace polymesh {

namespace {

uint64_t finite(rlim_t value) {
  return value == RLIM_INFINITY ? UINT64_MAX : static_cast<uint64_t>(value);
}

} // namespace

open_files_limit current_open_files_limit() {
  rlimit now{};
  if (::getrlimit(RLIMIT_NOFILE, &now) != 0) return {};
  return {finite(now.rlim_cur), finite(now.rlim_max)};
}

std::pair<open_files_limit, open_files_limit> raise_open_files_limit() {
  auto before = current_open_files_limit();
  rlimit now{};
  if (::getrlimit(RLIMIT_NOFILE, &now) == 0 && now.rlim_cur != now.rlim_max) {
    now.rlim_cur = now.rlim_max;
    (void)::setrlimit(RLIMIT_NOFILE, &now);
  }
  return {before, current_open_files_limit()};
}

std::string open_files_shortfall(uint64_t limit, uint64_t connections) {
  auto needed = connections + open_files_reserve;
  if (limit == 0 || limit >= needed) return {};
  return "the limit is " + std::to_string(limit) +
         " (ulimit -n; LimitNOFILE= under systemd), below the " + std::to_string(needed) +
         " that " + std::to_string(connections) +
         " connections (http.threads + http.run_waits) and meshd's own " +
         std::to_string(open_files_reserve) + " files need: fewer than " +
         std::to_string(refuse_connections_from(limit)) +
         " connections are served at once, the others answered 503 "
         "(docs/operations.md, Sizing)";
}

int refuse_connections_from(uint64_t limit) {
  if (limit == 0 || limit >= static_cast<uint64_t>(INT_MAX)) return INT_MAX;
  return static_cast<int>(limit >= 2 * open_files_reserve ? limit - open_files_reserve
                                                          : limit / 2);
}

} // namespace polymesh
