// The run and agent actors alone, for the moments the HTTP tests can only
// race for: a user's cancel of a pending run asks the agent actor whether a
// poll carried the run, whose delivery may not have reached the run actor
// yet; a word or an offer of an agent's earlier session crosses a new
// registration.
#include "mesh/actors/agent_actor.hpp"
#include "mesh/actors/messages.hpp"
#include "mesh/actors/run_actor.hpp"
#include "mesh/domain/clock.hpp"

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/scoped_actor.hpp>
#include <caf/send.hpp>
#include <gtest/gtest.h>

namespace polymesh {
namespace {

/// Takes any other message without a word. `caf::drop` answers even a plain
/// send with an `unexpected_message` error, which ended the run actor (its
/// offer to the agent, its timer to the expiry routine) now and then before
/// the test's cancel reached it.
caf::result<caf::message> ignore(caf::scheduled_actor*, caf::message_view&) {
  return caf::message{}; // an empty answer to a send is none
}

/// A store actor that commits every batch at once.
caf::behavior committing_store(caf::event_based_actor* self) {
  self->set_default_handler(ignore);
  return {
      [](write_atom, const write_batch& batch) { return write_outcomes(batch.size()); }};
}

/// A store actor that commits every batch once told to (`flush`), and at
/// once after that.
caf::behavior held_store(caf::event_based_actor* self) {
  self->set_default_handler(ignore);
  struct held {
    std::vector<std::pair<caf::response_promise, size_t>> waiting;
    bool flushed = false;
  };
  auto st = std::make_shared<held>();
  return {[=](write_atom, const write_batch& batch) -> caf::result<write_outcomes> {
            if (st->flushed) return write_outcomes(batch.size());
            st->waiting.emplace_back(self->make_response_promise(), batch.size());
            return caf::delegated<write_outcomes>{};
          },
          [=](flush_atom) {
            st->flushed = true;
            for (auto& [rp, n] : st->waiting)
              rp.deliver(write_outcomes(n));
            st->waiting.clear();
          }};
}

/// Stands for the routines and registries the run actor tells things to.
caf::behavior sink(caf::event_based_actor* self) {
  self->set_default_handler(ignore);
  return {[](tick_atom) {}};
}

/// An agent actor that answers `recall` as told and passes the run's
/// `cancel` on to `observer`.
caf::behavior recalling_agent(caf::event_based_actor* self, bool carried,
                              timestamp carried_at, caf::actor observer) {
  self->set_default_handler(ignore);
  return {
      [=](recall_atom, const std::string&) -> std::tuple<bool, timestamp> {
        return {carried, carried_at};
      },
      [=](cancel_atom, const std::string& id) {
        self->send(observer, cancel_atom::value, id);
      },
  };
}

class lone_actors : public testing::Test {
protected:
  void SetUp() override {
    ctx->clock = &clock;
    ctx->store = keep(sys.spawn(committing_store));
    for (auto* handle : {&ctx->runs, &ctx->agents, &ctx->assignment, &ctx->expiry,
                         &ctx->liveness, &ctx->query})
      *handle = keep(sys.spawn(sink));
  }
  void TearDown() override {
    for (auto& a : spawned)
      caf::anon_send_exit(a, caf::exit_reason::user_shutdown);
  }

  caf::actor keep(caf::actor a) {
    spawned.push_back(a);
    return a;
  }

  /// Run `run_1` of plan `noop`, `status`, made a moment ago, once assigned.
  run_record a_run(run_status status) {
    run_record run;
    run.id = "run_1";
    run.seq = 1;
    run.plan = "noop";
    run.status = status;
    run.attempts = 1;
    run.created_at = clock.now();
    return run;
  }

  /// A pending run, assigned to `agent` a moment ago, not shown delivered.
  caf::actor pending_run(caf::actor agent) {
    auto run = a_run(run_status::pending);
    run.assigned_agent = "agt_1";
    run.assigned_at = clock.now();
    return keep(
        spawn_run_actor(parent.ptr(), ctx, run, run_origin::restored, std::move(agent)));
  }

  /// The answer to an admin's cancel.
  run_record cancel(caf::actor run) {
    caf::scoped_actor self{sys};
    caller admin;
    admin.token_id = "admin";
    admin.kind = token_kind::admin;
    run_record out;
    self->request(run, caf::infinite, cancel_atom::value, admin, std::string{"run_1"})
        .receive([&](run_record& r) { out = std::move(r); },
                 [&](caf::error& err) { ADD_FAILURE() << sys.render(err); });
    return out;
  }

  caf::actor_system_config cfg;
  caf::actor_system sys{cfg};
  /// Spawns the run actor and lives as long as the test.
  caf::scoped_actor parent{sys};
  manual_clock clock;
  context_ptr ctx = std::make_shared<mesh_context>();
  std::vector<caf::actor> spawned;
};

// This test ensures a cancel of a run a poll has carried, while the poll's
// `deliver` is still on its way, is a request the agent is told of, with the
// delivery time of that poll: the agent holds the run.
TEST_F(lone_actors, a_run_a_poll_carried_is_sent) {
  caf::scoped_actor observer{sys};
  auto carried_at = clock.now();
  clock.advance(std::chrono::milliseconds{3});
  auto run = pending_run(keep(sys.spawn(recalling_agent, true, carried_at,
                                        caf::actor_cast<caf::actor>(observer))));
  auto r = cancel(run);
  EXPECT_EQ(r.status, run_status::pending);
  EXPECT_TRUE(r.cancel_requested);
  EXPECT_EQ(r.cancel_reason, "canceled_by_user");
  EXPECT_EQ(r.delivered_at, carried_at);
  std::string told;
  // Bounded, so that a failure does not hang the suite.
  observer->receive([&](cancel_atom, const std::string& id) { told = id; },
                    caf::after(std::chrono::seconds{30}) >> [] {});
  EXPECT_EQ(told, "run_1");
}

// This test ensures a cancel of a run no poll carried ends it at once (the
// agent actor has taken the offer back).
TEST_F(lone_actors, a_run_no_poll_carried_ends_at_once) {
  caf::scoped_actor observer{sys};
  auto run = pending_run(keep(sys.spawn(recalling_agent, false, timestamp{},
                                        caf::actor_cast<caf::actor>(observer))));
  auto r = cancel(run);
  EXPECT_EQ(r.status, run_status::canceled);
  EXPECT_EQ(r.reason, "canceled_by_user");
  EXPECT_FALSE(r.delivered_at);
}

/// The run as its actor has it now (after every message sent before).
run_record current(caf::actor_system& sys, caf::scoped_actor& from, caf::actor run) {
  run_record out;
  from->request(run, caf::infinite, watch_atom::value, watch_request{})
      .receive([&](run_record& r) { out = std::move(r); },
               [&](caf::error& err) { ADD_FAILURE() << sys.render(err); });
  return out;
}

/// The run as its actor has it once told that session `session` of agent
/// `agt_1` is gone (`why`).
run_record after_word(caf::actor_system& sys, caf::scoped_actor& from, caf::actor run,
                      const std::string& why, int64_t session) {
  from->send(run, lost_atom::value, why, std::string{"agt_1"}, session);
  return current(sys, from, run);
}

// This test ensures a queued run that names an agent stays queued when that
// agent's old session lets it go because a new registration superseded it
// (a word that reaches a run the delivery lease had just put back in the
// queue: it ended `error/expired`), and ends `error/expired` when the agent
// deregisters.
TEST_F(lone_actors, a_queued_run_naming_a_superseded_agent_stays_queued) {
  auto run = a_run(run_status::created);
  run.target_agent = "agt_1";
  auto actor =
      keep(spawn_run_actor(parent.ptr(), ctx, run, run_origin::restored, caf::actor{}));
  caf::scoped_actor self{sys};
  auto after = after_word(sys, self, actor, "superseded", 1);
  EXPECT_EQ(after.status, run_status::created);
  EXPECT_EQ(after.reason, "");
  auto gone = after_word(sys, self, actor, "deregistered", 1);
  EXPECT_EQ(gone.status, run_status::error);
  EXPECT_EQ(gone.reason, "expired");
}

// This test ensures a run placed with an agent's session ignores a late
// word of an earlier session of that agent (the run had gone back to the
// queue and been placed again meanwhile: it went back once more), and
// takes one of the session that holds it.
TEST_F(lone_actors, a_word_of_an_earlier_session_does_not_take_a_new_placement) {
  auto agent = keep(sys.spawn(sink));
  auto actor = keep(spawn_run_actor(parent.ptr(), ctx, a_run(run_status::created),
                                    run_origin::restored, caf::actor{}));
  caf::scoped_actor self{sys};
  bool taken = false;
  self->request(actor, caf::infinite, assign_atom::value, std::string{"agt_1"}, agent,
                int64_t{2})
      .receive([&](bool t) { taken = t; },
               [&](caf::error& err) { ADD_FAILURE() << sys.render(err); });
  ASSERT_TRUE(taken);
  EXPECT_EQ(after_word(sys, self, actor, "superseded", 1).status, run_status::pending);
  auto requeued = after_word(sys, self, actor, "superseded", 2);
  EXPECT_EQ(requeued.status, run_status::created);
  EXPECT_EQ(requeued.reason, "agent_superseded");
}

// This test ensures a late log upload to a run that ended is answered when
// the registry's `stop` follows it in the run actor's mailbox: the actor
// waits for the store before it goes (it went first, and the upload's caller
// waited for its timeout and got a 503, its chunks stored).
TEST_F(lone_actors, a_late_log_upload_is_answered_before_the_run_actor_stops) {
  auto store = keep(sys.spawn(held_store));
  ctx->store = store;
  auto run = a_run(run_status::success);
  run.assigned_agent = "agt_1";
  run.held_session = 1;
  run.finished_at = clock.now();
  auto actor =
      keep(spawn_run_actor(parent.ptr(), ctx, run, run_origin::restored, caf::actor{}));
  caf::scoped_actor self{sys};
  caller agent;
  agent.kind = token_kind::agent;
  agent.agent_id = "agt_1";
  agent.agent_session = 1;
  wire::log_request req;
  req.chunks.push_back(log_chunk{0, "stdout", "late", {}});
  auto answer = self->request(actor, std::chrono::seconds{30}, logs_atom::value, agent,
                              std::string{"run_1"}, req);
  self->send(actor, stop_atom::value); // the registry, on the run's `done`
  self->send(store, flush_atom::value);
  std::string got;
  std::move(answer).receive([&](bool) { got = "answered"; },
                            [&](caf::error& err) { got = sys.render(err); });
  EXPECT_EQ(got, "answered");
}

// This test ensures an agent actor takes a run placed with its current
// session (or restored at start-up), and sends one placed with an earlier
// session back as `superseded`: offered while a new registration replaced
// the plans, labels and slots it was placed by, it was carried to the new
// session, which might not offer its plan, meet its selector or have a slot.
TEST_F(lone_actors, an_offer_for_an_earlier_session_goes_back) {
  agent_record agent;
  agent.id = "agt_1";
  agent.name = "a";
  agent.session = 2;
  agent.status = agent_status::online;
  agent.capacity = 4;
  agent.plans = {"noop"};
  agent.registered_at = clock.now() - std::chrono::seconds{5};
  auto actor = keep(spawn_agent_actor(parent.ptr(), ctx, agent, true));
  caf::scoped_actor run{sys};
  auto offer = [&](int64_t seq, int64_t session) {
    run_record r;
    r.id = "run_" + std::to_string(seq);
    r.seq = seq;
    r.plan = "noop";
    r.status = run_status::pending;
    r.assigned_agent = "agt_1";
    run->send(actor, offer_atom::value, r, caf::actor_cast<caf::actor>(run), session);
  };
  offer(1, 1);
  std::string why;
  std::string from;
  // Bounded, so that a failure does not hang the suite.
  run->receive(
      [&](lost_atom, const std::string& w, const std::string& a, int64_t) {
        why = w;
        from = a;
      },
      caf::after(std::chrono::seconds{30}) >> [] {});
  EXPECT_EQ(why, "superseded");
  EXPECT_EQ(from, "agt_1");
  offer(2, 2);
  offer(3, 0);
  // Restored at start-up (session 0): a pending run assigned before this
  // session registered was placed with an earlier one; a running run comes
  // with the session that started it.
  auto restored = [&](int64_t seq, run_status status, int64_t session) {
    run_record r;
    r.id = "run_" + std::to_string(seq);
    r.seq = seq;
    r.plan = "noop";
    r.status = status;
    r.assigned_agent = "agt_1";
    r.assigned_at = clock.now() - std::chrono::seconds{10};
    run->send(actor, offer_atom::value, r, caf::actor_cast<caf::actor>(run), session);
    std::string word;
    run->receive(
        [&](lost_atom, const std::string& w, const std::string&, int64_t) { word = w; },
        caf::after(std::chrono::seconds{30}) >> [] {});
    return word;
  };
  EXPECT_EQ(restored(4, run_status::pending, 0), "superseded");
  EXPECT_EQ(restored(5, run_status::running, 1), "superseded");
  caller c;
  c.kind = token_kind::agent;
  c.agent_id = "agt_1";
  c.agent_session = 2;
  std::vector<std::string> carried;
  run->request(actor, caf::infinite, poll_atom::value, c, int64_t{0})
      .receive(
          [&](poll_result& p) {
            for (auto& r : p.runs)
              carried.push_back(r.id);
          },
          [&](caf::error& err) { ADD_FAILURE() << sys.render(err); });
  EXPECT_EQ(carried, (std::vector<std::string>{"run_2", "run_3"}));
}

} // namespace
} // namespace polymesh
