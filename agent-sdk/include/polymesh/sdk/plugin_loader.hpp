// Loads plan plugins (shared libraries) into a `plan_catalog`.
//
// The library is opened with dlopen, its `polymesh_plugin_init` entry point
// is called with this agent's ABI version, and the plans it registers are
// added to the catalog. A missing file, a missing entry point, a different
// ABI version or a plan name already taken is refused with an error naming
// the file. Plugins stay loaded for the life of the process.
//
// Thread-safety: call at start-up, on one thread.
#pragma once

#include "polymesh/sdk/plan_catalog.hpp"

#include <string>
#include <vector>

namespace polymesh::sdk {

/// Loads `path` and adds its plans to `catalog`. Returns "" or the error;
/// on success `added` (when given) receives the names of the new plans.
[[nodiscard]] std::string load_plugin(const std::string& path, plan_catalog& catalog,
                                      std::vector<std::string>* added = nullptr);

} // namespace polymesh::sdk
