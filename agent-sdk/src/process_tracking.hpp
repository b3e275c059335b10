// The children the SDK reaps itself: programs `run_process` started and
// isolated plugin runs (isolated_run.hpp). `reap_adopted_orphans` leaves
// them alone, so that only the thread that started one collects its exit
// status.
//
// Thread-safety: both functions may be called from any thread.
#pragma once

#include <sys/types.h>

namespace polymesh::sdk::detail {

/// `fork`, with the child marked as reaped by the thread that started it
/// before any other thread can look (it may end at once).
pid_t fork_tracked();
/// Forgets `pid` once that thread reaped it.
void forget_program(pid_t pid);

} // namespace polymesh::sdk::detail
