#include "routines/retention/retention_routine.hpp"

#include "mesh/actors/messages.hpp"
#include "mesh/domain/error.hpp"
#include "mesh/domain/log.hpp"

#include <caf/actor_system.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/stateful_actor.hpp>
#include <chrono>
#include <functional>
#include <malloc.h>

namespace polymesh {

namespace {

/// Runs deleted per transaction, so pruning never stalls other writes long.
constexpr size_t prune_batch = 5000;

/// How often freed heap memory is handed back to the kernel.
constexpr auto trim_interval = std::chrono::minutes{1};

using trim_atom = caf::atom_constant<caf::atom("trim")>;

/// Hands the heap's free pages back to the kernel. glibc keeps what a burst
/// of large requests freed (log pages, artifacts, batch answers, many
/// threads' arenas) and meshd's RSS stayed at the burst's peak: 276 MB
/// resident for a 10 MB live heap after a soak, 53 MB after a trim. A trim
/// takes 2-3 ms, about 0.1 s after a burst, and locks one arena at a time.
void trim_heap() {
  auto started = std::chrono::steady_clock::now();
  bool released = ::malloc_trim(0) != 0;
  auto took = std::chrono::duration_cast<std::chrono::microseconds>(
      std::chrono::steady_clock::now() - started);
  log(log_level::debug, std::string{"malloc_trim: "} +
                            (released ? "released memory" : "nothing to release") +
                            " in " + std::to_string(took.count()) + " us");
}

struct retention_state {
  static inline const char* name = "retention";
  context_ptr ctx;
  /// Prunes failed in a row; logged at 1, 2, 4, 8, … so that a store that
  /// keeps failing (a full disk) does not flood the log.
  uint64_t failures = 0;
};

using self_ptr = caf::stateful_actor<retention_state>*;

/// Counts and logs one prune's outcome.
void account(self_ptr self, const caf::expected<size_t>& n) {
  auto& st = self->state;
  st.ctx->metrics.pruned(n ? *n : 0, static_cast<bool>(n));
  if (!n) {
    auto k = ++st.failures;
    if ((k & (k - 1)) == 0)
      log(log_level::warn,
          "retention: pruning finished runs failed (" + std::to_string(k) +
              (k == 1 ? " time" : " times in a row") +
              ", tried again every retention.interval): " + message_of(n.error()));
    return;
  }
  if (st.failures > 0)
    log(log_level::info, "retention: pruning works again after " +
                             std::to_string(st.failures) +
                             (st.failures == 1 ? " failed attempt" : " failed attempts"));
  st.failures = 0;
}

/// Prunes one batch and calls `done` with the count (or the error); asks
/// itself for another batch at once while batches delete anything (a batch
/// ends early once it held the writer `retention.max_hold`).
void prune(self_ptr self, std::function<void(caf::expected<size_t>)> done) {
  auto& ctx = self->state.ctx;
  if (ctx->config.retention.count() == 0) return done(size_t{0});
  auto cutoff = ctx->now() - ctx->config.retention;
  self->request(ctx->store, caf::infinite, prune_atom::value, cutoff, prune_batch)
      .then(
          [=](size_t n) {
            account(self, n);
            if (n > 0) self->send(self, sweep_atom::value, true);
            done(n);
          },
          [=](caf::error& err) {
            caf::expected<size_t> failed{std::move(err)};
            account(self, failed);
            done(std::move(failed));
          });
}

/// Starts a pass: tokens that expired before the cutoff leave memory (their
/// rows stay: the token history, apart from agents' tokens, which the store
/// prunes), once per pass rather than per batch; then the first batch.
void start_pass(self_ptr self, std::function<void(caf::expected<size_t>)> done) {
  auto& ctx = self->state.ctx;
  if (ctx->config.retention.count() > 0)
    if (auto n = ctx->tokens->drop_expired(ctx->now() - ctx->config.retention); n > 0)
      log(log_level::debug, "retention: " + std::to_string(n) +
                                " tokens that expired before the cutoff left memory");
  prune(self, std::move(done));
}

void ignore(caf::expected<size_t>) {
  // Counted and logged by `account`; a failed prune is retried at the next
  // interval, and nothing is lost.
}

caf::behavior retention_routine(self_ptr self, context_ptr ctx) {
  self->state.ctx = std::move(ctx);
  self->delayed_send(self, self->state.ctx->config.retention_interval, sweep_atom::value);
  self->delayed_send(self, trim_interval, trim_atom::value);
  return {
      [=](tick_atom) -> caf::result<size_t> {
        auto rp = self->make_response_promise<size_t>();
        start_pass(self, [rp](caf::expected<size_t> n) mutable {
          if (n)
            rp.deliver(*n);
          else
            rp.deliver(n.error());
        });
        return rp;
      },
      [=](sweep_atom) {
        start_pass(self, ignore);
        if (!self->state.ctx->stopping)
          self->delayed_send(self, self->state.ctx->config.retention_interval,
                             sweep_atom::value);
      },
      [=](sweep_atom, bool) { prune(self, ignore); },
      [=](trim_atom) {
        trim_heap();
        if (!self->state.ctx->stopping)
          self->delayed_send(self, trim_interval, trim_atom::value);
      },
  };
}

} // namespace

caf::actor spawn_retention_routine(caf::actor_system& sys, context_ptr ctx) {
  // Detached: a trim after a burst takes tens of milliseconds (87 ms for
  // 74 MB), which a CAF worker would take from the actors queued behind it.
  return sys.spawn<caf::detached>(retention_routine, std::move(ctx));
}

} // namespace polymesh
