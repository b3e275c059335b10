// A plugin built for a future ABI: it reports version 999 and registers
// nothing, as a plugin must when the versions differ. The agent must refuse it.
#include "polymesh/sdk/plugin_abi.h"

extern "C" __attribute__((visibility("default"))) uint32_t
polymesh_plugin_init(const polymesh_host_v1*) {
  return 999;
}
