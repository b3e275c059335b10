#include "mesh/actors/query_actor.hpp"

#include "mesh/actors/messages.hpp"
#include "mesh/domain/error.hpp"

#include <caf/actor_system.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/stateful_actor.hpp>

namespace polymesh {

namespace {

struct query_state {
  static inline const char* name = "query";
  std::shared_ptr<store> db;
  context_ptr ctx;
};

using self_ptr = caf::stateful_actor<query_state>*;

caf::expected<run_record> find_run(self_ptr self, const std::string& id) {
  auto r = self->state.db->get_run(id);
  if (!r) return r.error();
  if (!*r) return make_error(errc::not_found, "no run with id '" + id + "'", "id");
  return std::move(**r);
}

/// An agent may only touch runs that were assigned to it.
caf::expected<run_record> find_own_run(self_ptr self, const caller& c,
                                       const std::string& id) {
  auto r = find_run(self, id);
  if (r && r->assigned_agent != c.agent_id)
    return make_error(errc::forbidden, "run '" + id + "' is not assigned to this agent");
  return r;
}

caf::error finished(const run_record& r, const char* what) {
  return make_error(
      errc::illegal_transition,
      std::string{"cannot "} + what + " a run that is " + to_string(r.status), "status");
}

caf::behavior query_actor(self_ptr self, context_ptr ctx, std::shared_ptr<store> db) {
  self->state.db = std::move(db);
  self->state.ctx = std::move(ctx);
  return {
      [=](get_atom, const std::string& id) -> caf::result<run_record> {
        auto r = find_run(self, id);
        if (!r) return r.error();
        return std::move(*r);
      },
      [=](list_atom, const run_filter& filter) -> caf::result<run_page> {
        auto page = self->state.db->list_runs(filter);
        if (!page) return page.error();
        return std::move(*page);
      },
      [=](logs_atom, const std::string& id, int64_t after,
          size_t limit) -> caf::result<log_list> {
        auto r = find_run(self, id);
        if (!r) return r.error();
        auto chunks = self->state.db->logs(id, after, limit);
        if (!chunks) return chunks.error();
        return std::move(*chunks);
      },
      [=](count_atom) -> caf::result<status_counts> {
        auto counts = self->state.db->count_runs();
        if (!counts) return counts.error();
        return std::move(*counts);
      },
      [=](list_atom, agent_atom) -> caf::result<agent_list> {
        auto agents = self->state.db->list_agents();
        if (!agents) return agents.error();
        return std::move(*agents);
      },
      [=](list_atom, tokens_atom) -> caf::result<token_list> {
        auto tokens = self->state.db->list_tokens();
        if (!tokens) return tokens.error();
        return std::move(*tokens);
      },
      // -- calls about runs without a live actor ---------------------------------
      [=](start_atom, const caller& c, const std::string& id) -> caf::result<run_record> {
        auto r = find_own_run(self, c, id);
        if (!r) return r.error();
        return finished(*r, "start");
      },
      [=](progress_atom, const caller& c, const std::string& id,
          const std::string&) -> caf::result<bool> {
        auto r = find_own_run(self, c, id);
        if (!r) return r.error();
        return finished(*r, "report progress on");
      },
      [=](logs_atom, const caller& c, const std::string& id,
          wire::log_request& req) -> caf::result<bool> {
        // Late chunks of a finished run (a retried upload) are still kept.
        auto r = find_own_run(self, c, id);
        if (!r) return r.error();
        write_batch batch;
        auto now = self->state.ctx->now();
        for (auto& chunk : req.chunks) {
          chunk.at = now;
          batch.emplace_back(append_log{id, std::move(chunk)});
        }
        auto promise = self->make_response_promise<bool>();
        self->request(self->state.ctx->store, caf::infinite, write_atom::value,
                      std::move(batch))
            .then(
                [promise](const write_outcomes&) mutable { promise.deliver(true); },
                [promise](caf::error& err) mutable { promise.deliver(std::move(err)); });
        return promise;
      },
      [=](finish_atom, const caller& c, const std::string& id,
          const wire::finish_request& req) -> caf::result<run_record> {
        auto r = find_own_run(self, c, id);
        if (!r) return r.error();
        if (r->status == req.status) return std::move(*r); // an idempotent repeat
        return make_error(errc::illegal_transition,
                          "run already finished as " + std::string{to_string(r->status)},
                          "status");
      },
      [=](cancel_atom, const caller&, const std::string& id) -> caf::result<run_record> {
        auto r = find_run(self, id);
        if (!r) return r.error();
        return finished(*r, "cancel");
      },
  };
}

} // namespace

caf::actor spawn_query_actor(caf::actor_system& sys, context_ptr ctx,
                             std::unique_ptr<store> reader) {
  return sys.spawn<caf::detached>(query_actor, std::move(ctx),
                                  std::shared_ptr<store>{std::move(reader)});
}

} // namespace polymesh
