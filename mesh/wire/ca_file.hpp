// The CA file a client (mesh-agent, meshctl) is given to trust the mesh's
// TLS certificate by: checked when it is read, whatever the URL's scheme.
#pragma once

#include <string>

namespace polymesh::wire {

/// Whether `path` starts with a PEM certificate, as a TLS client needs its
/// CA file to: a key or an empty file fails every `https://` call ("the CA
/// file could not be loaded").
[[nodiscard]] bool holds_a_pem_certificate(const std::string& path);

} // namespace polymesh::wire
