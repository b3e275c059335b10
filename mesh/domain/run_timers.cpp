#include "mesh/domain/run_timers.hpp"

#include <algorithm>
#include <array>

namespace polymesh {

const char* to_string(timer_action x) {
  switch (x) {
  case timer_action::none: return "none";
  case timer_action::ttl_lapsed: return "ttl_lapsed";
  case timer_action::lease_lapsed: return "lease_lapsed";
  case timer_action::result_expired: return "result_expired";
  case timer_action::timed_out: return "timed_out";
  case timer_action::cancel_grace_lapsed: return "cancel_grace_lapsed";
  }
  return "none";
}

namespace {

struct candidate {
  timer_action action;
  std::optional<timestamp> at;
};

/// Every rule of the header's table with its deadline (nullopt where the
/// rule does not apply), most urgent action first.
std::array<candidate, 5> candidates(const run_record& run, const run_timing& t) {
  std::array<candidate, 5> out{{{timer_action::cancel_grace_lapsed, std::nullopt},
                                {timer_action::result_expired, std::nullopt},
                                {timer_action::timed_out, std::nullopt},
                                {timer_action::lease_lapsed, std::nullopt},
                                {timer_action::ttl_lapsed, std::nullopt}}};
  bool sent = run.status == run_status::running ||
              (run.status == run_status::pending && run.delivered_at);
  auto agents_could_answer = [&](timestamp since) {
    return std::max(since, t.windows_from);
  };
  if (run.status == run_status::created && run.ttl_s > 0)
    out[4].at = run.created_at + std::chrono::seconds{run.ttl_s};
  // Never delivered: its agent has not polled since it was assigned (a
  // program whose poll loop hangs while it still reports on other runs);
  // the lease counts from the assignment.
  if (run.status == run_status::pending && !run.cancel_requested) {
    if (auto since = run.delivered_at ? run.delivered_at : run.assigned_at)
      out[3].at = agents_could_answer(*since) + t.delivery_lease;
  }
  if (run.status == run_status::running && run.timeout_s > 0 && run.started_at &&
      !run.cancel_requested)
    out[2].at = *run.started_at + std::chrono::seconds{run.timeout_s};
  if (sent) {
    auto last = run.last_activity_at ? *run.last_activity_at
                                     : run.delivered_at.value_or(run.created_at);
    out[1].at = agents_could_answer(last) + t.result_expiry;
  }
  if (sent && run.cancel_requested && run.cancel_requested_at)
    out[0].at = agents_could_answer(*run.cancel_requested_at) + t.cancel_grace;
  return out;
}

} // namespace

std::optional<timestamp> next_deadline(const run_record& run, const run_timing& timing) {
  std::optional<timestamp> best;
  for (auto& c : candidates(run, timing))
    if (c.at && (!best || *c.at < *best)) best = c.at;
  return best;
}

timer_action due_action(const run_record& run, const run_timing& timing, timestamp now) {
  for (auto& c : candidates(run, timing))
    if (c.at && *c.at <= now) return c.action;
  return timer_action::none;
}

} // namespace polymesh
