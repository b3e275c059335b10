// The run timer rules, driven by a manual clock: which deadline governs a
// run in each state, and what is due when the clock passes it.
#include "mesh/domain/run_timers.hpp"

#include <gtest/gtest.h>

namespace polymesh {
namespace {

using namespace std::chrono_literals;

class run_timers_test : public ::testing::Test {
protected:
  manual_clock clock;
  run_timing timing; // lease 30 s, result expiry 10 min, cancel grace 30 s

  run_record created(int64_t ttl_s = 0) {
    run_record r;
    r.id = "run_1";
    r.created_at = clock.now();
    r.ttl_s = ttl_s;
    return r;
  }
  run_record delivered() {
    auto r = created();
    r.status = run_status::pending;
    r.assigned_at = clock.now();
    r.delivered_at = clock.now();
    return r;
  }
  run_record running(int64_t timeout_s = 0) {
    auto r = delivered();
    r.status = run_status::running;
    r.started_at = clock.now();
    r.last_activity_at = clock.now();
    r.timeout_s = timeout_s;
    return r;
  }
};

// This test ensures a created run without a TTL has no timer, and one with a
// TTL lapses exactly at created_at + ttl.
TEST_F(run_timers_test, ttl_governs_created_runs) {
  EXPECT_FALSE(next_deadline(created(), timing));
  auto r = created(60);
  EXPECT_EQ(next_deadline(r, timing), r.created_at + 60s);
  clock.advance(59s);
  EXPECT_EQ(due_action(r, timing, clock.now()), timer_action::none);
  clock.advance(1s);
  EXPECT_EQ(due_action(r, timing, clock.now()), timer_action::ttl_lapsed);
}

// This test ensures an assigned run no poll has carried goes back after the
// lease, counted from its assignment (it had no timer: an agent that stopped
// polling but kept reporting on other runs, so stayed online, held it for
// ever), and has no result expiry: its agent has not seen it.
TEST_F(run_timers_test, undelivered_pending_run_goes_back_after_the_lease) {
  auto r = delivered();
  r.delivered_at.reset();
  EXPECT_EQ(next_deadline(r, timing), *r.assigned_at + timing.delivery_lease);
  clock.advance(timing.delivery_lease - 1ms);
  EXPECT_EQ(due_action(r, timing, clock.now()), timer_action::none);
  clock.advance(1ms);
  EXPECT_EQ(due_action(r, timing, clock.now()), timer_action::lease_lapsed);
  r.cancel_requested = true;
  EXPECT_FALSE(next_deadline(r, timing));
}

// This test ensures a delivered, unstarted run goes back after the lease.
TEST_F(run_timers_test, delivery_lease_lapses) {
  auto r = delivered();
  EXPECT_EQ(next_deadline(r, timing), *r.delivered_at + timing.delivery_lease);
  clock.advance(timing.delivery_lease - 1ms);
  EXPECT_EQ(due_action(r, timing, clock.now()), timer_action::none);
  clock.advance(1ms);
  EXPECT_EQ(due_action(r, timing, clock.now()), timer_action::lease_lapsed);
}

// This test ensures a running run expires after result_expiry of silence,
// counted from its last activity, not from its start.
TEST_F(run_timers_test, result_expiry_counts_from_last_activity) {
  auto r = running();
  clock.advance(9min);
  r.last_activity_at = clock.now();
  EXPECT_EQ(next_deadline(r, timing), *r.last_activity_at + timing.result_expiry);
  clock.advance(9min);
  EXPECT_EQ(due_action(r, timing, clock.now()), timer_action::none);
  clock.advance(1min);
  EXPECT_EQ(due_action(r, timing, clock.now()), timer_action::result_expired);
}

// This test ensures the run timeout fires at started_at + timeout_s, and
// once the cancel is requested the grace governs instead.
TEST_F(run_timers_test, timeout_then_cancel_grace) {
  auto r = running(120);
  EXPECT_EQ(next_deadline(r, timing), *r.started_at + 120s);
  clock.advance(120s);
  EXPECT_EQ(due_action(r, timing, clock.now()), timer_action::timed_out);
  r.cancel_requested = true;
  r.cancel_reason = "timeout";
  r.cancel_requested_at = clock.now();
  EXPECT_EQ(due_action(r, timing, clock.now()), timer_action::none);
  EXPECT_EQ(next_deadline(r, timing), clock.now() + timing.cancel_grace);
  clock.advance(timing.cancel_grace);
  EXPECT_EQ(due_action(r, timing, clock.now()), timer_action::cancel_grace_lapsed);
}

// This test ensures the earliest applicable deadline is the one armed.
TEST_F(run_timers_test, earliest_deadline_wins) {
  auto r = running(3600); // timeout in 1 h, expiry in 10 min
  EXPECT_EQ(next_deadline(r, timing), *r.last_activity_at + timing.result_expiry);
  auto quick = running(5);
  EXPECT_EQ(next_deadline(quick, timing), *quick.started_at + 5s);
}

// This test ensures terminal runs have no timer and nothing is ever due.
TEST_F(run_timers_test, terminal_runs_have_no_timer) {
  for (auto s : {run_status::success, run_status::error, run_status::canceled}) {
    auto r = running(1);
    r.status = s;
    EXPECT_FALSE(next_deadline(r, timing)) << to_string(s);
    clock.advance(1h);
    EXPECT_EQ(due_action(r, timing, clock.now()), timer_action::none) << to_string(s);
  }
}

// This test ensures deadlines come only from stored timestamps, so a run
// restored after a restart gets the same deadline it had before.
TEST_F(run_timers_test, deadlines_are_a_function_of_the_record) {
  auto r = running(300);
  auto before = next_deadline(r, timing);
  clock.advance(2h); // meshd was down for two hours
  EXPECT_EQ(next_deadline(r, timing), before);
  EXPECT_EQ(due_action(r, timing, clock.now()), timer_action::result_expired)
      << "the most urgent of several lapsed deadlines is reported";
}

// This test ensures the windows that wait on an agent (result expiry,
// delivery lease, cancel grace) count from no earlier than the mesh's start:
// after an outage longer than the result expiry, every running run expired
// the moment the mesh was back, its agent's result refused. The TTL and the
// run's timeout stay in wall time.
TEST_F(run_timers_test, windows_that_wait_on_an_agent_count_from_the_mesh_start) {
  auto run = running(3600);
  auto lease = delivered();
  auto cancel = running();
  cancel.cancel_requested = true;
  cancel.cancel_requested_at = clock.now();
  auto queued = created(60);
  clock.advance(15min); // meshd was down
  timing.windows_from = clock.now();
  EXPECT_EQ(due_action(run, timing, clock.now()), timer_action::none);
  EXPECT_EQ(next_deadline(run, timing), clock.now() + timing.result_expiry);
  EXPECT_EQ(next_deadline(lease, timing), clock.now() + timing.delivery_lease);
  EXPECT_EQ(next_deadline(cancel, timing), clock.now() + timing.cancel_grace);
  EXPECT_EQ(due_action(queued, timing, clock.now()), timer_action::ttl_lapsed);
  auto quick = running(5);
  quick.started_at = clock.now() - 1h;
  EXPECT_EQ(due_action(quick, timing, clock.now()), timer_action::timed_out);
  clock.advance(timing.result_expiry);
  EXPECT_EQ(due_action(run, timing, clock.now()), timer_action::result_expired)
      << "an agent that stays silent after the restart still expires its run";
}

} // namespace
} // namespace polymesh
