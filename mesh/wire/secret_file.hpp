// Files that hold a secret (a token): whether other users can read them.
// meshctl and the agent warn of such a file rather than refuse it: a
// token shared on purpose through a group is the admin's choice.
//
// Thread-safety: a free function; it only calls stat(2).
#pragma once

#include <cstdio>
#include <string>
#include <sys/stat.h>

namespace polymesh {

/// "" when only its owner may read or change `path` (or it cannot be looked
/// at), else what others may do, e.g. "readable by every user (mode 0644)".
[[nodiscard]] inline std::string open_to_others(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0 || (st.st_mode & 077) == 0) return {};
  char mode[8];
  std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
  const char* what = (st.st_mode & 004) != 0   ? "readable by every user"
                     : (st.st_mode & 040) != 0 ? "readable by its group"
                     : (st.st_mode & 022) != 0 ? "writable by other users"
                                               : "open to other users";
  return std::string{what} + " (mode " + mode + ")";
}

} // namespace polymesh
