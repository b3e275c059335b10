// `sleep`: waits, then succeeds; returns early when canceled. For tests of
// cancel, timeouts, drains and capacity, and for benchmarks.
// Params: `seconds` (number, default 1; fractions allowed). Settings:
// `max` (duration, default 1h): longer requests are refused.
#pragma once

#include "polymesh/sdk/plan.hpp"

#include <memory>

namespace polymesh::plans {

[[nodiscard]] std::shared_ptr<sdk::plan> make_sleep_plan(const nlohmann::json& settings,
                                                         const std::string& key);

} // namespace polymesh::plans
