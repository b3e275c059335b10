// A listening socket systemd passes meshd (socket activation, sd_listen_fds
// (3)): `meshd.socket` holds the port while meshd restarts, so clients that
// connect meanwhile wait in the socket's queue instead of being refused, and
// a port below 1024 needs no capability. meshd takes one TCP socket, as
// descriptor 3, when `LISTEN_PID` names it; `http.listen` is not used then.
//
// Thread-safety: `take_inherited_socket` at start-up, before any thread
// (it changes the environment); `inherited_socket_of` is pure.
#pragma once

#include <caf/expected.hpp>
#include <optional>
#include <string>
#include <sys/types.h>
#include <utility>

namespace polymesh {

/// The first descriptor systemd passes (`SD_LISTEN_FDS_START`).
inline constexpr int inherited_socket_fd = 3;

/// The descriptor of the socket passed to process `self` by the values of
/// `LISTEN_PID` and `LISTEN_FDS` (null: unset); none when they are unset or
/// name another process (a parent's, left in the environment). An error
/// says why they cannot be used: not numbers, or not one socket.
[[nodiscard]] caf::expected<std::optional<int>>
inherited_socket_of(const char* listen_pid, const char* listen_fds, pid_t self);

/// `inherited_socket_of` for this process's environment, from which it then
/// removes `LISTEN_PID`, `LISTEN_FDS` and `LISTEN_FDNAMES` (as
/// `sd_listen_fds(1)` does), so that no program meshd starts takes them.
[[nodiscard]] caf::expected<std::optional<int>> take_inherited_socket();

/// The address a listening TCP socket `fd` is bound to, as (host, port), or
/// why it cannot be served on: not a socket, not listening, not TCP.
[[nodiscard]] caf::expected<std::pair<std::string, int>> listening_address(int fd);

} // namespace polymesh
