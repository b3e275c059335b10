// A C++ plugin whose registration throws: the agent refuses it, and the
// exception's text reaches the agent's log.
#include "polymesh/sdk/plugin.hpp"

#include <stdexcept>

namespace {

void register_plans(polymesh::sdk::plugin_registrar&) {
  throw std::runtime_error("cannot find my license file\n\x1b[31mlook in \\etc");
}

} // namespace

POLYMESH_PLUGIN(register_plans)
