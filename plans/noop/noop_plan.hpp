// `noop`: succeeds at once with an empty result. For tests, demos and
// measuring the mesh's own overhead. Takes no settings.
#pragma once

#include "polymesh/sdk/plan.hpp"

#include <memory>

namespace polymesh::plans {

[[nodiscard]] std::shared_ptr<sdk::plan> make_noop_plan(const nlohmann::json& settings,
                                                        const std::string& key);

} // namespace polymesh::plans
