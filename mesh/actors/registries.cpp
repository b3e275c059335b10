#include "mesh/actors/registries.hpp"

#include "mesh/actors/agent_actor.hpp"
#include "mesh/actors/messages.hpp"
#include "mesh/actors/run_actor.hpp"
#include "mesh/domain/error.hpp"
#include "mesh/domain/ids.hpp"
#include "mesh/domain/log.hpp"
#include "mesh/domain/selector.hpp"
#include "mesh/wire/json.hpp"

#include <caf/actor_system.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/stateful_actor.hpp>
#include <functional>
#include <limits>
#include <memory>
#include <unordered_map>

namespace polymesh {

namespace {

// -- run registry ------------------------------------------------------------------

struct run_registry_state {
  static inline const char* name = "run-registry";
  context_ptr ctx;
  std::unordered_map<std::string, caf::actor> live;
};

using run_self = caf::stateful_actor<run_registry_state>*;

/// The actor that answers for run `id`: its run actor, or the query actor.
const caf::actor& route(run_self self, const std::string& id) {
  auto it = self->state.live.find(id);
  return it != self->state.live.end() ? it->second : self->state.ctx->query;
}

run_record new_run(run_registry_state& st, const caller& c,
                   const wire::run_request& req) {
  run_record run;
  run.id = new_id("run");
  run.seq = st.ctx->next_run_seq();
  run.plan = req.plan;
  run.selector = req.selector;
  run.scope = c.scope;
  run.target_agent = req.agent;
  run.params = req.params;
  run.payload = req.payload;
  run.priority = req.priority;
  run.timeout_s = req.timeout_s;
  run.ttl_s = req.ttl_s;
  run.idempotency_key = req.idempotency_key;
  run.concurrency_key = req.concurrency_key;
  run.retry_max = req.retry_max;
  run.retry_on = req.retry_on;
  run.submitted_by = c.token_id;
  run.created_at = st.ctx->now();
  return run;
}

/// Creates every run of a batch in one store request, hence one transaction:
/// all of them are durable or none is. Only then does each get its actor,
/// taking the same path as a run restored at start-up. A run whose
/// idempotency key is taken answers with the run that holds it.
caf::result<create_results> create_batch(run_self self, const caller& c,
                                         const run_requests& reqs) {
  auto& st = self->state;
  std::vector<run_record> runs;
  write_batch writes;
  for (auto& req : reqs) {
    runs.push_back(new_run(st, c, req));
    writes.emplace_back(put_run{runs.back(), true});
  }
  auto rp = self->make_response_promise<create_results>();
  self->request(st.ctx->store, caf::infinite, write_atom::value, std::move(writes))
      .then(
          [=](const write_outcomes& out) mutable {
            auto results = std::make_shared<create_results>(runs.size());
            auto missing = std::make_shared<size_t>(0);
            auto failed = std::make_shared<bool>(false);
            for (size_t i = 0; i < runs.size(); ++i) {
              if (out[i].written) {
                auto& st = self->state;
                st.ctx->metrics.runs_submitted(1);
                st.live.emplace(runs[i].id, spawn_run_actor(self, st.ctx, runs[i],
                                                            run_origin::restored, {}));
                (*results)[i] = create_result{runs[i], true, {}};
                continue;
              }
              ++*missing;
              self->request(self->state.ctx->query, caf::infinite, get_atom::value,
                            out[i].existing_id)
                  .then(
                      [=](run_record& existing) mutable {
                        (*results)[i] =
                            answer_for_taken_key(std::move(existing), runs[i]);
                        if (--*missing == 0 && !*failed) rp.deliver(std::move(*results));
                      },
                      [=](caf::error& err) mutable {
                        if (!*failed) rp.deliver(std::move(err));
                        *failed = true;
                      });
            }
            if (*missing == 0) rp.deliver(std::move(*results));
          },
          [=](caf::error& err) mutable { rp.deliver(std::move(err)); });
  return rp;
}

caf::behavior run_registry(run_self self, context_ptr ctx, uint64_t max_seq) {
  self->state.ctx = std::move(ctx);
  self->state.ctx->last_run_seq.store(max_seq, std::memory_order_relaxed);
  // Run actors are not linked to us (see `spawn_run_actor`): pass our exit on.
  self->set_exit_handler([=](caf::exit_msg& msg) {
    for (auto& [id, actor] : self->state.live)
      self->send_exit(actor, msg.reason);
    self->state.live.clear();
    self->quit(msg.reason);
  });
  return {
      [=](create_atom, const caller& c, const wire::run_request& req) {
        auto& st = self->state;
        auto run = new_run(st, c, req);
        auto id = run.id;
        auto actor =
            spawn_run_actor(self, st.ctx, std::move(run), run_origin::submitted, {});
        st.live.emplace(id, actor);
        return self->delegate(actor, admit_atom::value);
      },
      [=](create_atom, const caller& c, const run_requests& reqs) {
        return create_batch(self, c, reqs);
      },
      [=](admit_atom, run_record& run, const caf::actor& agent) {
        auto id = run.id;
        auto actor = spawn_run_actor(self, self->state.ctx, std::move(run),
                                     run_origin::restored, agent);
        self->state.live.emplace(id, actor);
        return true;
      },
      [=](admit_atom, run_record& run, retry_atom) {
        // A retry its run actor stored; that actor queues it.
        auto id = run.id;
        auto actor = spawn_run_actor(self, self->state.ctx, std::move(run),
                                     run_origin::retried, {});
        self->state.live.emplace(id, actor);
        return actor;
      },
      [=](start_atom a, const caller& c, const std::string& id) {
        return self->delegate(route(self, id), a, c, id);
      },
      [=](progress_atom a, const caller& c, const std::string& id,
          const std::string& msg) {
        return self->delegate(route(self, id), a, c, id, msg);
      },
      [=](logs_atom a, const caller& c, const std::string& id,
          const wire::log_request& req) {
        return self->delegate(route(self, id), a, c, id, req);
      },
      [=](finish_atom a, const caller& c, const std::string& id,
          const wire::finish_request& req) {
        return self->delegate(route(self, id), a, c, id, req);
      },
      [=](cancel_atom a, const caller& c, const std::string& id) {
        return self->delegate(route(self, id), a, c, id);
      },
      [=](watch_atom a, const std::string& id, const watch_request& w) {
        // A run without an actor has ended (or never was): the query actor
        // answers with it, or with `not_found`, at once.
        auto it = self->state.live.find(id);
        if (it == self->state.live.end())
          return self->delegate(self->state.ctx->query, get_atom::value, id);
        return self->delegate(it->second, a, w);
      },
      [=](watch_atom a, const std::string& id, uint64_t watcher) {
        // A wait's deadline: for the run actor if it is still there (one
        // that ended has answered its waiters).
        auto it = self->state.live.find(id);
        if (it != self->state.live.end()) self->send(it->second, a, watcher);
      },
      [=](done_atom, const std::string& id) {
        auto it = self->state.live.find(id);
        if (it == self->state.live.end()) return;
        // Everything routed so far is already in its mailbox, ahead of this.
        self->send(it->second, stop_atom::value);
        self->state.live.erase(it);
      },
      [=](count_atom) { return static_cast<uint64_t>(self->state.live.size()); },
      [=](shutdown_atom a) {
        for (auto& [id, actor] : self->state.live)
          self->send(actor, a);
      },
  };
}

// -- agent registry -------------------------------------------------------------

struct agent_registry_state {
  static inline const char* name = "agent-registry";
  context_ptr ctx;
  std::unordered_map<std::string, caf::actor> by_id;
  std::unordered_map<std::string, std::string> id_by_name;
  std::unordered_map<std::string, agent_record> mirror;
  /// By name, agents that had left (deregistered) before meshd started and
  /// are not forgotten yet: not loaded as agents (a restart stays fast with
  /// many of them), but a token scoped elsewhere may not take the name.
  /// Gone when the name registers or is forgotten.
  std::unordered_map<std::string, left_agent> left;
};

using agent_self = caf::stateful_actor<agent_registry_state>*;

/// The actor of the agent with this id or name, or nullptr.
caf::actor find_agent(agent_self self, const std::string& id_or_name) {
  auto& st = self->state;
  if (auto it = st.by_id.find(id_or_name); it != st.by_id.end()) return it->second;
  if (auto it = st.id_by_name.find(id_or_name); it != st.id_by_name.end())
    return st.by_id[it->second];
  return nullptr;
}

caf::error no_agent(const std::string& id_or_name) {
  return make_error(
      errc::not_found,
      "no agent with id or name '" + wire::printable_prefix(id_or_name, 64) + "'", "id");
}

caf::actor add_agent(agent_self self, agent_record rec, bool restored) {
  auto& st = self->state;
  auto id = rec.id;
  st.id_by_name[rec.name] = id;
  st.mirror[id] = rec;
  auto actor = spawn_agent_actor(self, st.ctx, std::move(rec), restored);
  st.by_id[id] = actor;
  return actor;
}

/// How often the registry looks for agents to forget (`agents.forget_after`).
constexpr auto forget_sweep_every = std::chrono::minutes{1};

/// Deletes the stored rows of agents forgotten by now (`agents.forget_after`
/// after they were last heard from; forgetting an offline agent stores it
/// deregistered first), then calls `then`: they were kept for ever, and
/// every start reads the whole table. Only after a sweep that forgot some
/// (an agent, or the name of one that left before a restart): the rows
/// earlier versions kept go at start-up (`mesh_node::boot`).
void delete_forgotten_rows(agent_self self, timestamp now, size_t forgotten,
                           std::function<void()> then) {
  auto& st = self->state;
  auto after = st.ctx->config.forget_after;
  if (after.count() == 0 || forgotten == 0) return then();
  // Forgotten when `last_seen_at + after <= now` (the sweep's `now`); the
  // store deletes rows seen strictly before its bound, in milliseconds.
  write_batch batch{delete_forgotten_agents{now - after + std::chrono::milliseconds{1},
                                            std::numeric_limits<int64_t>::max()}};
  self->request(st.ctx->store, caf::infinite, write_atom::value, std::move(batch))
      .await([then](const write_outcomes&) { then(); },
             [then](caf::error& err) {
               log(log_level::warn, "the rows of forgotten agents were not deleted, "
                                    "tried again after the next agent forgotten: " +
                                        message_of(err));
               then();
             });
}

/// Forgets every agent offline or deregistered for `agents.forget_after`
/// that agrees it still is, then deletes the rows of forgotten agents;
/// calls `then` with how many went. Our mailbox waits for each agent's
/// answer, so a registration cannot reach an agent that is about to go.
void forget_quiet_agents(agent_self self, std::function<void(size_t)> forgotten) {
  auto& st = self->state;
  auto after = st.ctx->config.forget_after;
  auto now = st.ctx->now();
  // Agents that left before a restart have no actor, only a name in `left`:
  // their rows go too (not counted: they were not listed).
  size_t names_dropped = 0;
  if (after.count() > 0) {
    for (auto it = st.left.begin(); it != st.left.end();) {
      if (it->second.last_seen_at + after <= now) {
        it = st.left.erase(it);
        ++names_dropped;
      } else {
        ++it;
      }
    }
  }
  auto then = [self, forgotten, names_dropped, now](size_t n) {
    delete_forgotten_rows(self, now, n + names_dropped, [forgotten, n] { forgotten(n); });
  };
  std::vector<std::pair<std::string, caf::actor>> asked;
  if (after.count() > 0)
    for (auto& [id, rec] : st.mirror)
      if ((rec.status == agent_status::offline ||
           rec.status == agent_status::deregistered) &&
          rec.last_seen_at + after <= now)
        if (auto it = st.by_id.find(id); it != st.by_id.end())
          asked.emplace_back(id, it->second);
  if (asked.empty()) {
    then(0);
    return;
  }
  auto left = std::make_shared<size_t>(asked.size());
  auto gone = std::make_shared<size_t>(0);
  for (auto& [id, actor] : asked) {
    auto done = [=] {
      if (--*left == 0) then(*gone);
    };
    self->request(actor, caf::infinite, forget_atom::value)
        .await(
            [=, id = id](bool forgotten) mutable {
              auto& st = self->state;
              if (forgotten) {
                auto rec = st.mirror[id];
                log(log_level::info, "agent " + rec.name + " (" + id +
                                         ") forgotten: " + to_string(rec.status) +
                                         " for agents.forget_after");
                if (auto n = st.id_by_name.find(rec.name);
                    n != st.id_by_name.end() && n->second == id)
                  st.id_by_name.erase(n);
                st.by_id.erase(id);
                st.mirror.erase(id);
                self->send(st.ctx->assignment, forget_atom::value, id, rec.name);
                ++*gone;
              }
              done();
            },
            [=, id = id](caf::error& err) mutable {
              log(log_level::warn, "agent " + id + " not forgotten, tried again later: " +
                                       message_of(err));
              done();
            });
  }
}

caf::behavior agent_registry(agent_self self, context_ptr ctx) {
  self->state.ctx = std::move(ctx);
  self->delayed_send(self, forget_sweep_every, forget_atom::value, sweep_atom::value);
  return {
      [=](forget_atom) -> caf::result<size_t> {
        auto rp = self->make_response_promise<size_t>();
        forget_quiet_agents(self, [rp](size_t n) mutable { rp.deliver(n); });
        return rp;
      },
      [=](forget_atom, sweep_atom) {
        forget_quiet_agents(self, [](size_t) {});
        if (!self->state.ctx->stopping)
          self->delayed_send(self, forget_sweep_every, forget_atom::value,
                             sweep_atom::value);
      },
      [=](register_atom a, const caller& c,
          const wire::register_request& req) -> caf::result<caf::message> {
        // By name only: a name that happens to be another agent's id must
        // not reach that agent.
        auto& st = self->state;
        auto by_name = st.id_by_name.find(req.name);
        caf::actor actor =
            by_name != st.id_by_name.end() ? st.by_id[by_name->second] : caf::actor{};
        if (!c.scope.empty()) {
          auto scope = selector::parse(c.scope, "scope");
          if (!scope || !scope->matches(req.labels))
            return make_error(
                errc::forbidden,
                "agent labels are outside the token's scope (" + c.scope + ")", "labels");
          // Registering under a name supersedes that agent's session (or
          // takes the name of one that left before meshd started): a scoped
          // token may do it only to an agent inside its scope, or a dev token
          // could take over a prod agent and receive its runs.
          // An agent a token of this very scope registered is its own (even
          // with labels an admin set outside it before that was refused).
          const label_map* owner = nullptr;
          if (actor) {
            if (auto known = st.mirror.find(by_name->second);
                known != st.mirror.end() && known->second.scope != c.scope)
              owner = &known->second.labels;
          } else if (auto left = st.left.find(req.name); left != st.left.end()) {
            owner = &left->second.labels;
          }
          if (owner && !scope->matches(*owner))
            return make_error(
                errc::forbidden,
                "an agent named '" + req.name + (actor ? "' exists" : "' that left is") +
                    " outside the token's scope (" + c.scope + "); choose another name",
                "name");
        }
        if (!actor) {
          agent_record rec;
          rec.id = new_id("agt");
          rec.name = req.name;
          actor = add_agent(self, std::move(rec), false);
          st.left.erase(req.name);
        }
        return self->delegate(actor, a, c, req);
      },
      [=](admit_atom, agent_record& rec) {
        return add_agent(self, std::move(rec), true);
      },
      [=](admit_atom, reserve_atom, std::vector<left_agent>& left) {
        for (auto& a : left) {
          auto name = a.name;
          self->state.left[name] = std::move(a);
        }
      },
      [=](refresh_atom a, const caller& c,
          const std::string& id) -> caf::result<caf::message> {
        if (auto actor = find_agent(self, id)) return self->delegate(actor, a, c);
        return no_agent(id);
      },
      [=](revoked_atom a, const std::string& agent_id, const std::string& token_id) {
        if (auto actor = find_agent(self, agent_id)) self->send(actor, a, token_id);
      },
      [=](poll_atom a, const caller& c, const std::string& id,
          int64_t wait_ms) -> caf::result<caf::message> {
        if (auto actor = find_agent(self, id))
          return self->delegate(actor, a, c, wait_ms);
        return no_agent(id);
      },
      [=](dereg_atom a, const caller& c,
          const std::string& id) -> caf::result<caf::message> {
        if (auto actor = find_agent(self, id)) return self->delegate(actor, a, c);
        return no_agent(id);
      },
      [=](touch_atom a, const std::string& id) {
        if (auto actor = find_agent(self, id)) self->send(actor, a);
      },
      [=](get_atom a, const std::string& id) -> caf::result<caf::message> {
        if (auto actor = find_agent(self, id)) return self->delegate(actor, a);
        return no_agent(id);
      },
      [=](drain_atom a, const std::string& id,
          bool by_admin) -> caf::result<caf::message> {
        if (auto actor = find_agent(self, id)) return self->delegate(actor, a, by_admin);
        return no_agent(id);
      },
      [=](undrain_atom a, const std::string& id) -> caf::result<caf::message> {
        if (auto actor = find_agent(self, id)) return self->delegate(actor, a);
        return no_agent(id);
      },
      [=](labels_atom a, const std::string& id, const label_map& labels,
          const std::vector<std::string>& if_match) -> caf::result<caf::message> {
        if (auto actor = find_agent(self, id))
          return self->delegate(actor, a, labels, if_match);
        return no_agent(id);
      },
      [=](list_atom) {
        agent_list out;
        out.reserve(self->state.mirror.size());
        for (auto& [id, rec] : self->state.mirror)
          out.push_back(rec);
        std::sort(
            out.begin(), out.end(),
            [](const agent_record& a, const agent_record& b) { return a.name < b.name; });
        return out;
      },
      [=](update_atom, const agent_record& rec) { self->state.mirror[rec.id] = rec; },
      [=](shutdown_atom a) {
        for (auto& [id, actor] : self->state.by_id)
          self->send(actor, a);
      },
  };
}

// -- token registry ---------------------------------------------------------------

struct token_registry_state {
  static inline const char* name = "token-registry";
  context_ptr ctx;
};

using token_self = caf::stateful_actor<token_registry_state>*;

/// Persists `records`, then puts them into the token cache.
void persist_tokens(token_self self, std::vector<token_record> records,
                    std::function<void()> then, std::function<void(caf::error)> fail) {
  write_batch batch;
  for (auto& r : records)
    batch.emplace_back(put_token{r});
  self->request(self->state.ctx->store, caf::infinite, write_atom::value,
                std::move(batch))
      .await(
          [=](const write_outcomes&) {
            for (auto& r : records) {
              if (r.revoked_at)
                self->state.ctx->tokens->erase(r.id);
              else
                self->state.ctx->tokens->put(r);
            }
            then();
          },
          [=](caf::error& err) { fail(std::move(err)); });
}

issued_token mint(token_self self, token_kind kind, std::string name, std::string scope,
                  int64_t ttl_s) {
  auto now = self->state.ctx->now();
  issued_token out;
  auto secret = new_secret();
  out.record.id = new_id("tok");
  out.record.kind = kind;
  out.record.name = std::move(name);
  out.record.scope = std::move(scope);
  out.record.secret_hash = sha256_hex(secret);
  out.record.created_at = now;
  if (ttl_s > 0) out.record.expires_at = now + std::chrono::seconds{ttl_s};
  out.token = token_cache::format(out.record.id, secret);
  return out;
}

caf::behavior token_registry(token_self self, context_ptr ctx) {
  self->state.ctx = std::move(ctx);
  return {
      [=](create_atom, const wire::token_request& req) -> caf::result<issued_token> {
        auto tok = mint(self, req.kind, req.name, req.scope, req.ttl_s);
        auto rp = self->make_response_promise<issued_token>();
        persist_tokens(
            self, {tok.record}, [=]() mutable { rp.deliver(tok); },
            [=](caf::error err) mutable { rp.deliver(std::move(err)); });
        return rp;
      },
      [=](issue_atom, const std::string& agent_id,
          int64_t session) -> caf::result<issued_token> {
        auto& st = self->state;
        auto ttl = std::chrono::duration_cast<std::chrono::seconds>(
            st.ctx->config.agent_token_ttl);
        auto tok = mint(self, token_kind::agent, "agent " + agent_id, "", ttl.count());
        tok.record.agent_id = agent_id;
        tok.record.agent_session = session;
        // Tokens of earlier sessions of this agent die with this one's birth.
        // Its expired ones leave the cache (their rows go with retention):
        // an agent renews every two thirds of a token's life, so they would
        // pile up for as long as meshd runs.
        std::vector<token_record> records{tok.record};
        for (auto& old : st.ctx->tokens->of_agent(agent_id))
          if (old.agent_session != session) {
            old.revoked_at = tok.record.created_at;
            records.push_back(old);
          } else if (old.expires_at && *old.expires_at <= tok.record.created_at) {
            st.ctx->tokens->erase(old.id);
          }
        auto rp = self->make_response_promise<issued_token>();
        persist_tokens(
            self, std::move(records), [=]() mutable { rp.deliver(tok); },
            [=](caf::error err) mutable { rp.deliver(std::move(err)); });
        return rp;
      },
      [=](revoke_atom, const std::string& id) -> caf::result<token_record> {
        auto rec = self->state.ctx->tokens->find(id);
        auto now = self->state.ctx->now();
        if (!rec || rec->revoked_at || (rec->expires_at && *rec->expires_at <= now))
          return make_error(errc::not_found,
                            "no live token with id '" + id +
                                "' (unknown, expired or already revoked)",
                            "id");
        rec->revoked_at = now;
        auto rp = self->make_response_promise<token_record>();
        auto out = *rec;
        persist_tokens(
            self, {*rec},
            [=]() mutable {
              // Its agent answers a poll waiting on it, and goes offline
              // when no token of its session is left.
              if (out.kind == token_kind::agent)
                self->send(self->state.ctx->agents, revoked_atom::value, out.agent_id,
                           out.id);
              rp.deliver(out);
            },
            [=](caf::error err) mutable { rp.deliver(std::move(err)); });
        return rp;
      },
      [=](revoke_atom, agent_atom, const std::string& agent_id) -> caf::result<bool> {
        auto records = self->state.ctx->tokens->of_agent(agent_id);
        if (records.empty()) return true;
        auto now = self->state.ctx->now();
        for (auto& r : records)
          r.revoked_at = now;
        auto rp = self->make_response_promise<bool>();
        persist_tokens(
            self, std::move(records), [=]() mutable { rp.deliver(true); },
            [=](caf::error err) mutable { rp.deliver(std::move(err)); });
        return rp;
      },
      // Agent tokens a timer routine honoured through a stall or a jump of
      // the clock, already in the cache: stored here, where token writes
      // are made one after another, unless revoked or changed since.
      [=](update_atom, const token_list& honoured) {
        token_list still;
        for (auto& t : honoured)
          if (auto rec = self->state.ctx->tokens->find(t.id);
              rec && !rec->revoked_at && rec->expires_at == t.expires_at)
            still.push_back(*rec);
        if (still.empty()) return;
        auto n = still.size();
        persist_tokens(
            self, std::move(still), [] {},
            [n](caf::error err) {
              log(log_level::warn,
                  "the longer life of " + std::to_string(n) +
                      " agent access tokens after a stall was not stored (it holds "
                      "until meshd stops): " +
                      message_of(err));
            });
      },
  };
}

} // namespace

caf::actor spawn_run_registry(caf::actor_system& sys, context_ptr ctx, uint64_t max_seq) {
  return sys.spawn(run_registry, std::move(ctx), max_seq);
}

caf::actor spawn_agent_registry(caf::actor_system& sys, context_ptr ctx) {
  return sys.spawn(agent_registry, std::move(ctx));
}

caf::actor spawn_token_registry(caf::actor_system& sys, context_ptr ctx) {
  return sys.spawn(token_registry, std::move(ctx));
}

} // namespace polymesh
