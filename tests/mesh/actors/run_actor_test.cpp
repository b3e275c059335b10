// The run actor: a user's cancel of a pending run asks the agent actor
// whether a poll carried the run, whose delivery may not have reached the run
// actor yet (the HTTP tests can only race for that moment).
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

class run_actor_cancel : public testing::Test {
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

  /// A pending run, assigned to `agent` a moment ago, not shown delivered.
  caf::actor pending_run(caf::actor agent) {
    run_record run;
    run.id = "run_1";
    run.seq = 1;
    run.plan = "noop";
    run.status = run_status::pending;
    run.assigned_agent = "agt_1";
    run.attempts = 1;
    run.created_at = clock.now();
    run.assigned_at = clock.now();
    return keep(spawn_run_actor(parent.ptr(), ctx, run, false, std::move(agent)));
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
TEST_F(run_actor_cancel, a_run_a_poll_carried_is_sent) {
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
TEST_F(run_actor_cancel, a_run_no_poll_carried_ends_at_once) {
  caf::scoped_actor observer{sys};
  auto run = pending_run(keep(sys.spawn(recalling_agent, false, timestamp{},
                                        caf::actor_cast<caf::actor>(observer))));
  auto r = cancel(run);
  EXPECT_EQ(r.status, run_status::canceled);
  EXPECT_EQ(r.reason, "canceled_by_user");
  EXPECT_FALSE(r.delivered_at);
}

} // namespace
} // namespace polymesh
