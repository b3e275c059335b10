// The built-in plans, one folder each: noop, echo, sleep, shell, script,
// terraform. `add_builtin_plans` puts their factories into a catalog;
// mesh-agent builds only those enabled under `plans:` in its config.
#pragma once

#include "polymesh/sdk/plan_catalog.hpp"

namespace polymesh::plans {

void add_builtin_plans(sdk::plan_catalog& catalog);

} // namespace polymesh::plans
