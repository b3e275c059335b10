// What `run_process` and isolated plugin runs (isolated_run.hpp) share about
// the children they fork: the ones the SDK reaps itself (so that
// `reap_adopted_orphans` leaves them alone and only the thread that started
// one collects its exit status), the child's first steps, and the parent's
// wait for its output.
//
// Thread-safety: every function may be called from any thread;
// `detach_child` only in a freshly forked child.
#pragma once

#include "polymesh/sdk/fwd.hpp"

#include <chrono>
#include <cstddef>
#include <filesystem>
#include <functional>
#include <sys/types.h>

namespace polymesh::sdk::detail {

/// How a child ended whose exit status someone else collected: the kernel,
/// when this process ignores SIGCHLD, or a `waitpid(-1)` elsewhere in it.
inline constexpr const char* status_collected_elsewhere =
    "ended, but something else in this program collected its exit status "
    "(is SIGCHLD ignored?)";

/// `fork`, with the child marked as reaped by the thread that started it
/// before any other thread can look (it may end at once).
pid_t fork_tracked();
/// Forgets `pid` once that thread reaped it.
void forget_program(pid_t pid);
/// Makes this process the reaper of its descendants' orphans (once), so
/// that a process that left its run's group comes back to the agent.
void become_subreaper();

/// In a child just forked by a thread of `agent_pid`: a session (and so a
/// process group, and no controlling terminal) of its own; death when the
/// forking thread ends (it waits for the child, so that means the agent
/// died); no blocked signal and every handler at its default.
/// Async-signal-safe. False when the agent is gone already.
[[nodiscard]] bool detach_child(pid_t agent_pid);

/// Marks every descriptor from `first` up close-on-exec (`close_range`,
/// with a loop over the descriptor limit before Linux 5.11).
/// Async-signal-safe.
void close_on_exec_from(unsigned first);

/// Polls the descriptors among `fds[0..n)` that are open (>= 0) for input,
/// up to `timeout_ms`, and calls `on_ready(i)` for each one readable, hung
/// up or in error. Returns how many were open; with none it does not wait.
size_t poll_inputs(const int* fds, size_t n, int timeout_ms,
                   const std::function<void(size_t)>& on_ready);

/// While a child's pipes are closed but it is not reaped yet (it is ending):
/// waits `wait` without spinning, ending early when `cancel` fires (a fired
/// token no longer waits: then it sleeps), and doubles `wait` up to 50 ms,
/// since the exit usually follows the close at once.
void nap_while_ending(const cancel_token& cancel, std::chrono::milliseconds& wait);

/// A process that a plan left running (an orphan this process adopted, or
/// a descendant of one) whose working directory is `dir` or below it; 0
/// when there is none (or `dir` cannot be resolved).
[[nodiscard]] pid_t leftover_in(const std::filesystem::path& dir);

} // namespace polymesh::sdk::detail
