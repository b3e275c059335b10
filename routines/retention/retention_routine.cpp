#include "routines/retention/retention_routine.hpp"

#include "mesh/actors/messages.hpp"

#include <caf/actor_system.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/stateful_actor.hpp>
#include <functional>

namespace polymesh {

namespace {

/// Runs deleted per transaction, so pruning never stalls other writes long.
constexpr size_t prune_batch = 5000;

struct retention_state {
  static inline const char* name = "retention";
  context_ptr ctx;
};

using self_ptr = caf::stateful_actor<retention_state>*;

/// Prunes one batch and calls `done` with the count (or the error); asks
/// itself for another batch at once while batches come back full.
void prune(self_ptr self, std::function<void(caf::expected<size_t>)> done) {
  auto& ctx = self->state.ctx;
  if (ctx->config.retention.count() == 0) return done(size_t{0});
  auto cutoff = ctx->now() - ctx->config.retention;
  self->request(ctx->store, caf::infinite, prune_atom::value, cutoff, prune_batch)
      .then(
          [=](size_t n) {
            if (n == prune_batch) self->send(self, sweep_atom::value, true);
            done(n);
          },
          [=](caf::error& err) { done(std::move(err)); });
}

void ignore(caf::expected<size_t>) {
  // A failed prune is retried at the next interval; nothing is lost.
}

caf::behavior retention_routine(self_ptr self, context_ptr ctx) {
  self->state.ctx = std::move(ctx);
  self->delayed_send(self, self->state.ctx->config.retention_interval, sweep_atom::value);
  return {
      [=](tick_atom) -> caf::result<size_t> {
        auto rp = self->make_response_promise<size_t>();
        prune(self, [rp](caf::expected<size_t> n) mutable {
          if (n)
            rp.deliver(*n);
          else
            rp.deliver(n.error());
        });
        return rp;
      },
      [=](sweep_atom) {
        prune(self, ignore);
        if (!self->state.ctx->stopping)
          self->delayed_send(self, self->state.ctx->config.retention_interval,
                             sweep_atom::value);
      },
      [=](sweep_atom, bool) { prune(self, ignore); },
  };
}

} // namespace

caf::actor spawn_retention_routine(caf::actor_system& sys, context_ptr ctx) {
  return sys.spawn(retention_routine, std::move(ctx));
}

} // namespace polymesh
