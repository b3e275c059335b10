#include "mesh/actors/query_actor.hpp"

#include "mesh/actors/messages.hpp"
#include "mesh/actors/run_actor.hpp"
#include "mesh/domain/error.hpp"
#include "mesh/domain/run_state.hpp"
#include "mesh/wire/json.hpp"

#include <caf/actor_system.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/stateful_actor.hpp>
#include <unordered_map>

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
  if (!*r)
    return make_error(errc::not_found,
                      "no run with id '" + wire::printable_prefix(id, 64) + "'", "id");
  return std::move(**r);
}

/// An agent may only touch runs that were assigned to it.
caf::expected<run_record> find_own_run(self_ptr self, const caller& c,
                                       const std::string& id) {
  auto r = find_run(self, id);
  if (r && r->assigned_agent != c.agent_id)
    return make_error(errc::forbidden, "run '" + id + "' is not assigned to this agent");
  // Back in the queue (a lapsed lease, a lost agent), it still names its last
  // agent, which no longer holds it.
  if (r && r->status == run_status::created)
    return make_error(errc::forbidden,
                      "run '" + id +
                          "' is back in the queue, waiting for an agent; "
                          "it is not assigned to this agent");
  if (r)
    if (auto err = check_holder(*r, c.agent_id, c.agent_session)) return err;
  return r;
}

caf::error finished(const run_record& r, const char* what) {
  return make_error(
      errc::illegal_transition,
      std::string{"cannot "} + what + " a run that is " + to_string(r.status), "status");
}

caf::error artifact_conflict(const artifact_record& a) {
  return make_error(errc::conflict,
                    "run '" + a.run_id + "' already has a different artifact named '" +
                        a.name + "'; artifacts cannot be replaced",
                    "name");
}

/// What refuses an upload named `name` to run `run_id` whatever its bytes:
/// a run not assigned to the caller, or one that holds the most artifacts
/// allowed and none of this name (whose identical repeat is fine). Asked
/// before an upload's body is read, and again once it is. Otherwise whether
/// the run holds an artifact of that name already.
caf::expected<bool> upload_check(self_ptr self, const caller& c,
                                 const std::string& run_id, const std::string& name) {
  auto& st = self->state;
  auto r = find_own_run(self, c, run_id);
  if (!r) return r.error();
  auto existing = st.db->list_artifacts(run_id);
  if (!existing) return existing.error();
  for (auto& a : *existing)
    if (a.name == name) return true;
  // Checked again by the store when it writes (uploads at once).
  if (auto err = check_artifact_room(st.ctx->config.max_artifacts, run_id,
                                     static_cast<int64_t>(existing->size())))
    return err;
  return false;
}

/// Stores an uploaded artifact of a run assigned to the caller. Any status is
/// fine: a retried upload may arrive after the run's result.
caf::result<artifact_put> put_artifact_of(self_ptr self, const caller& c,
                                          artifact_record meta, artifact_bytes data) {
  auto& st = self->state;
  if (auto checked = upload_check(self, c, meta.run_id, meta.name); !checked)
    return checked.error();
  auto existing = st.db->list_artifacts(meta.run_id);
  if (!existing) return existing.error();
  for (auto& a : *existing) {
    if (a.name != meta.name) continue;
    if (a.sha256 == meta.sha256) return artifact_put{a, false};
    return artifact_conflict(meta);
  }
  meta.created_at = st.ctx->now();
  write_batch batch;
  batch.emplace_back(put_artifact{meta, std::move(data), st.ctx->config.max_artifacts});
  auto promise = self->make_response_promise<artifact_put>();
  self->request(st.ctx->store, caf::infinite, write_atom::value, std::move(batch))
      .then(
          [promise, meta](write_outcomes& out) mutable {
            // Other uploads at once took the last room, or retention
            // deleted the run meanwhile.
            if (!out.empty() && out.front().refused) {
              promise.deliver(std::move(out.front().refused));
              return;
            }
            // Lost a race with a concurrent upload of the same name.
            if (!out.empty() && !out.front().written) {
              if (out.front().existing_sha256 == meta.sha256)
                promise.deliver(artifact_put{meta, false});
              else
                promise.deliver(artifact_conflict(meta));
              return;
            }
            promise.deliver(artifact_put{meta, true});
          },
          [promise](caf::error& err) mutable { promise.deliver(std::move(err)); });
  return promise;
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
      [=](logs_atom, list_atom, const std::string& id,
          const std::vector<int64_t>& seqs) -> caf::result<std::vector<int64_t>> {
        auto n = self->state.db->stored_log_seqs(id, seqs);
        if (!n) return n.error();
        return std::move(*n);
      },
      [=](logs_atom, count_atom, const std::string& id) -> caf::result<int64_t> {
        auto n = self->state.db->log_bytes(id);
        if (!n) return n.error();
        return *n;
      },
      [=](logs_atom, const std::string& id, int64_t after,
          size_t limit) -> caf::result<log_page> {
        auto r = find_run(self, id);
        if (!r) return r.error();
        auto chunks = self->state.db->logs(id, after, limit, log_page_bytes);
        if (!chunks) return chunks.error();
        return std::move(*chunks);
      },
      [=](artifact_atom, list_atom, const std::string& id) -> caf::result<artifact_list> {
        auto r = find_run(self, id);
        if (!r) return r.error();
        auto list = self->state.db->list_artifacts(id);
        if (!list) return list.error();
        return std::move(*list);
      },
      [=](artifact_atom, get_atom, const std::string& id, const std::string& name,
          int64_t offset, int64_t max_bytes) -> caf::result<artifact_blob> {
        auto blob = self->state.db->get_artifact(
            id, name, offset, static_cast<size_t>(std::max<int64_t>(max_bytes, 0)));
        if (!blob) return blob.error();
        if (*blob) return std::move(**blob);
        auto r = find_run(self, id);
        if (!r) return r.error();
        return make_error(errc::not_found,
                          "run '" + id + "' has no artifact named '" + name + "'",
                          "name");
      },
      [=](artifact_atom, check_atom, const caller& c, const std::string& run_id,
          const std::string& name) -> caf::result<bool> {
        auto held = upload_check(self, c, run_id, name);
        if (!held) return held.error();
        return *held;
      },
      [=](artifact_atom, const caller& c, artifact_record& meta,
          artifact_bytes& data) -> caf::result<artifact_put> {
        return put_artifact_of(self, c, std::move(meta), std::move(data));
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
        return append_late(self, self->state.ctx->store, id, std::move(req.chunks),
                           self->state.ctx->now(), self->state.ctx->config.max_log_bytes,
                           false);
      },
      [=](finish_atom, const caller& c, const std::string& id,
          const wire::finish_request& req) -> caf::result<run_record> {
        auto r = find_own_run(self, c, id);
        if (!r) return r.error();
        if (auto err = refuse_finish_of_ended(*r, req)) return err;
        return std::move(*r); // an idempotent repeat
      },
      [=](cancel_atom, const caller& c,
          const std::string& id) -> caf::result<run_record> {
        auto r = find_run(self, id);
        if (!r) return r.error();
        // As for a live run: a scoped token learns nothing of a run outside it.
        if (!c.scope.empty() && r->scope != c.scope)
          return make_error(errc::forbidden, "run is outside this token's scope");
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
