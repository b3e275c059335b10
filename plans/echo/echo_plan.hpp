// `echo`: writes the payload to the run's log and returns it as the result.
// Params: `exit_code` (integer, default 0): when non-zero the run fails
// with that exit code, which makes the error path easy to demo and test.
// Takes no settings.
#pragma once

#include "polymesh/sdk/plan.hpp"

#include <memory>

namespace polymesh::plans {

[[nodiscard]] std::shared_ptr<sdk::plan> make_echo_plan(const nlohmann::json& settings,
                                                        const std::string& key);

} // namespace polymesh::plans
