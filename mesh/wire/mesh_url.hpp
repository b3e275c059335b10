// The mesh's URL as meshctl and agents take it: http[s]://HOST[:PORT][/PATH],
// the path being a reverse proxy's prefix. One check for both, so that a
// URL one of them takes the other takes too.
//
// Thread-safety: a pure function.
#pragma once

#include <string>

namespace polymesh::wire {

/// "" when `url` is a usable mesh URL, else what is wrong with it, quoting
/// it, e.g. "mesh URL has no host, got 'http://:80'".
[[nodiscard]] std::string mesh_url_problem(const std::string& url);

} // namespace polymesh::wire
