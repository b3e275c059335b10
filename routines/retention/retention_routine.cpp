#include "routines/retention/retention_routine.hpp"

#include "mesh/actors/messages.hpp"

#include <caf/actor_system.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/stateful_actor.hpp>

namespace polymesh {

namespace {

/// Runs deleted per transaction, so pruning never stalls other writes long.
constexpr size_t prune_batch = 5000;

struct retention_state {
  static inline const char* name = "retention";
  context_ptr ctx;
};

using self_ptr = caf::stateful_actor<retention_state>*;

/// Prunes one batch; asks for another at once while batches come back full.
caf::response_promise prune(self_ptr self) {
  auto rp = self->make_response_promise();
  auto& ctx = self->state.ctx;
  if (ctx->config.retention.count() == 0) {
    rp.deliver(size_t{0});
    return rp;
  }
  auto cutoff = ctx->now() - ctx->config.retention;
  self->request(ctx->store, caf::infinite, prune_atom::value, cutoff, prune_batch)
    .then(
      [=](size_t n) mutable {
        if (n == prune_batch)
          self->send(self, sweep_atom::value, true);
        rp.deliver(n);
      },
      [=](caf::error& err) mutable { rp.deliver(std::move(err)); });
  return rp;
}

caf::behavior retention_routine(self_ptr self, context_ptr ctx) {
  self->state.ctx = std::move(ctx);
  self->delayed_send(self, self->state.ctx->config.retention_interval, sweep_atom::value);
  return {
    [=](tick_atom) { return prune(self); },
    [=](sweep_atom) {
      prune(self);
      if (!self->state.ctx->stopping)
        self->delayed_send(self, self->state.ctx->config.retention_interval,
                           sweep_atom::value);
    },
    [=](sweep_atom, bool) { prune(self); },
  };
}

} // namespace

caf::actor spawn_retention_routine(caf::actor_system& sys, context_ptr ctx) {
  return sys.spawn(retention_routine, std::move(ctx));
}

} // namespace polymesh
