#include "mesh/domain/retry.hpp"

#include "mesh/domain/error.hpp"

#include <algorithm>
#include <iterator>

namespace polymesh {

caf::expected<std::string> retry_on_text(const std::vector<std::string>& names,
                                         const std::string& field) {
  std::vector<bool> named(std::size(retry_reasons), false);
  for (size_t i = 0; i < names.size(); ++i) {
    auto at = field + "[" + std::to_string(i) + "]";
    auto it = std::find(std::begin(retry_reasons), std::end(retry_reasons), names[i]);
    if (it == std::end(retry_reasons)) {
      std::string known;
      for (auto r : retry_reasons)
        known += (known.empty() ? "" : ", ") + std::string{r};
      return make_error(errc::invalid_argument,
                        "field '" + at + "' is '" + names[i] +
                            "', not an end a retry may follow (one of " + known + ")",
                        at);
    }
    auto k = static_cast<size_t>(it - std::begin(retry_reasons));
    if (named[k])
      return make_error(errc::invalid_argument,
                        "field '" + at + "' names '" + names[i] + "' a second time", at);
    named[k] = true;
  }
  std::string out;
  for (size_t k = 0; k < named.size(); ++k)
    if (named[k]) out += (out.empty() ? "" : ",") + std::string{retry_reasons[k]};
  return out;
}

std::vector<std::string> retry_on_list(std::string_view text) {
  std::vector<std::string> out;
  while (!text.empty()) {
    auto comma = text.find(',');
    out.emplace_back(text.substr(0, comma));
    if (comma == std::string_view::npos) break;
    text.remove_prefix(comma + 1);
  }
  return out;
}

bool retried(const run_record& ended) {
  if (!is_terminal(ended.status) || ended.status == run_status::success) return false;
  if (ended.retry_number >= ended.retry_max || !ended.retried_by.empty()) return false;
  if (ended.cancel_requested && ended.cancel_reason != "timeout") return false;
  // A run for one agent whose agent left: its retry, for that agent too,
  // could only end `error/expired` at once.
  if (!ended.target_agent.empty() &&
      (ended.reason == "agent_lost" || ended.reason == "agent_shutdown" ||
       ended.reason == "agent_removed"))
    return false;
  auto on = retry_on_list(ended.retry_on);
  return std::find(on.begin(), on.end(), ended.reason) != on.end();
}

run_record make_retry(const run_record& ended, std::string id, uint64_t seq,
                      timestamp now) {
  run_record r;
  r.id = std::move(id);
  r.seq = seq;
  r.plan = ended.plan;
  r.selector = ended.selector;
  r.scope = ended.scope;
  r.target_agent = ended.target_agent;
  r.params = ended.params;
  r.payload = ended.payload;
  r.priority = ended.priority;
  r.concurrency_key = ended.concurrency_key;
  r.submitted_by = ended.submitted_by;
  r.timeout_s = ended.timeout_s;
  r.ttl_s = ended.ttl_s;
  r.retry_max = ended.retry_max;
  r.retry_on = ended.retry_on;
  r.retry_number = ended.retry_number + 1;
  r.retry_of = ended.id;
  r.queue_seq = queue_order(ended);
  r.created_at = now;
  return r;
}

} // namespace polymesh
