#include "mesh/domain/error.hpp"
#include "mesh/domain/run_state.hpp"

#include <gtest/gtest.h>
#include <string>
#include <vector>

namespace polymesh {
namespace {

const std::vector<run_status> all_statuses = {
    run_status::created, run_status::pending, run_status::running,
    run_status::success, run_status::error,   run_status::canceled,
};

const std::vector<run_event> all_events = {
    run_event::assign, run_event::deliver, run_event::start,   run_event::progress,
    run_event::finish, run_event::cancel,  run_event::requeue, run_event::abort,
};

// The legal transitions, written out from DESIGN.md "Run lifecycle"
// independently of the table in run_state.cpp. For `finish` and `abort` the
// target is the outcome the caller asks for, so each allowed outcome is listed.
struct transition {
  run_status from;
  run_event event;
  run_status to;
};

const std::vector<transition> legal = {
    {run_status::created, run_event::assign, run_status::pending},
    {run_status::pending, run_event::deliver, run_status::pending},
    {run_status::pending, run_event::start, run_status::running},
    {run_status::running, run_event::start, run_status::running},
    {run_status::running, run_event::progress, run_status::running},
    {run_status::pending, run_event::finish, run_status::success},
    {run_status::pending, run_event::finish, run_status::error},
    {run_status::pending, run_event::finish, run_status::canceled},
    {run_status::running, run_event::finish, run_status::success},
    {run_status::running, run_event::finish, run_status::error},
    {run_status::running, run_event::finish, run_status::canceled},
    {run_status::created, run_event::cancel, run_status::canceled},
    {run_status::pending, run_event::cancel, run_status::canceled},
    {run_status::running, run_event::cancel, run_status::canceled},
    {run_status::pending, run_event::requeue, run_status::created},
    {run_status::created, run_event::abort, run_status::error},
    {run_status::created, run_event::abort, run_status::canceled},
    {run_status::pending, run_event::abort, run_status::error},
    {run_status::pending, run_event::abort, run_status::canceled},
    {run_status::running, run_event::abort, run_status::error},
    {run_status::running, run_event::abort, run_status::canceled},
};

bool takes_outcome(run_event ev) {
  return ev == run_event::finish || ev == run_event::abort;
}

// The expected target of (from, event, outcome), or nullptr when illegal.
const transition* expected_for(run_status from, run_event ev, run_status outcome) {
  for (const auto& t : legal)
    if (t.from == from && t.event == ev && (!takes_outcome(ev) || t.to == outcome))
      return &t;
  return nullptr;
}

// Whether (from, event) is legal for some outcome.
bool legal_for_some_outcome(run_status from, run_event ev) {
  for (const auto& t : legal)
    if (t.from == from && t.event == ev) return true;
  return false;
}

// This test ensures every (status, event, outcome) combination is legal or
// illegal exactly as the independent list says, with the documented errors.
TEST(RunState, EveryCombinationMatchesTheExpectationList) {
  size_t legal_seen = 0;
  for (auto from : all_statuses) {
    for (auto ev : all_events) {
      for (auto outcome : all_statuses) {
        auto what = std::string{to_string(ev)} + " from " + to_string(from) + " as " +
                    to_string(outcome);
        auto got = next_status(from, ev, outcome);
        if (const auto* want = expected_for(from, ev, outcome)) {
          ASSERT_TRUE(got) << what << ": " << message_of(got.error());
          EXPECT_EQ(*got, want->to) << what;
          if (takes_outcome(ev)) ++legal_seen;
          continue;
        }
        ASSERT_FALSE(got) << what << " was allowed to " << to_string(*got);
        if (takes_outcome(ev) && legal_for_some_outcome(from, ev)) {
          // The transition exists; only the outcome asked for is wrong.
          EXPECT_EQ(code_of(got.error()), errc::invalid_argument) << what;
          EXPECT_EQ(field_of(got.error()), "outcome") << what;
        } else {
          EXPECT_EQ(code_of(got.error()), errc::illegal_transition) << what;
          EXPECT_EQ(field_of(got.error()), "status") << what;
          EXPECT_EQ(message_of(got.error()), std::string{"cannot "} + to_string(ev) +
                                                 " a run that is " + to_string(from))
              << what;
        }
      }
    }
  }
  // Every outcome-taking entry of the list was reached once.
  size_t listed = 0;
  for (const auto& t : legal)
    if (takes_outcome(t.event)) ++listed;
  EXPECT_EQ(legal_seen, listed);
}

// This test ensures a finished run refuses every event, whatever the outcome.
TEST(RunState, TerminalStatusesRefuseEverything) {
  for (auto from : {run_status::success, run_status::error, run_status::canceled})
    for (auto ev : all_events)
      for (auto outcome : all_statuses) {
        auto got = next_status(from, ev, outcome);
        ASSERT_FALSE(got);
        EXPECT_EQ(code_of(got.error()), errc::illegal_transition);
      }
}

// This test ensures the refusal names the event and the status, without a
// trailing period.
TEST(RunState, IllegalTransitionMessage) {
  auto got = next_status(run_status::created, run_event::start);
  ASSERT_FALSE(got);
  EXPECT_EQ(message_of(got.error()), "cannot start a run that is created");
  EXPECT_EQ(field_of(got.error()), "status");
  EXPECT_EQ(http_status(code_of(got.error())), 409);
}

// This test ensures progress needs a started run: a pending one is refused.
TEST(RunState, ProgressRequiresRunning) {
  EXPECT_FALSE(next_status(run_status::pending, run_event::progress));
  EXPECT_EQ(next_status(run_status::running, run_event::progress).value(),
            run_status::running);
}

// This test ensures an agent may report failure before it reported start.
TEST(RunState, PendingMayFinish) {
  EXPECT_EQ(
      next_status(run_status::pending, run_event::finish, run_status::error).value(),
      run_status::error);
}

// This test ensures `finish` and `abort` refuse a non-terminal outcome, and
// `abort` refuses success, as bad arguments rather than state conflicts.
TEST(RunState, OutcomeMustBeTerminal) {
  for (auto outcome : {run_status::created, run_status::pending, run_status::running}) {
    auto got = next_status(run_status::running, run_event::finish, outcome);
    ASSERT_FALSE(got);
    EXPECT_EQ(code_of(got.error()), errc::invalid_argument);
    EXPECT_NE(message_of(got.error()).back(), '.');
  }
  auto got = next_status(run_status::running, run_event::abort, run_status::success);
  ASSERT_FALSE(got);
  EXPECT_EQ(code_of(got.error()), errc::invalid_argument);
  EXPECT_EQ(field_of(got.error()), "outcome");
}

// This test ensures the outcome is ignored by events that do not end a run.
TEST(RunState, OutcomeIgnoredByOtherEvents) {
  EXPECT_EQ(
      next_status(run_status::created, run_event::assign, run_status::success).value(),
      run_status::pending);
  EXPECT_EQ(
      next_status(run_status::pending, run_event::requeue, run_status::running).value(),
      run_status::created);
}

// This test ensures each event has its stable name.
TEST(RunState, EventNames) {
  const std::vector<std::string> names = {"assign", "deliver", "start",   "progress",
                                          "finish", "cancel",  "requeue", "abort"};
  ASSERT_EQ(names.size(), all_events.size());
  for (size_t i = 0; i < names.size(); ++i)
    EXPECT_EQ(to_string(all_events[i]), names[i]);
}

run_record run_in(run_status status, std::string reason = {}, bool delivered = false) {
  run_record r;
  r.status = status;
  r.reason = std::move(reason);
  if (delivered) r.delivered_at = from_unix_ms(1'800'000'000'000);
  return r;
}

// This test ensures every row of DESIGN.md's Skadi table maps as documented.
TEST(RunState, SkadiStatus) {
  EXPECT_STREQ(skadi_status(run_in(run_status::created)), "queuing");
  EXPECT_STREQ(skadi_status(run_in(run_status::pending)), "queuing");
  EXPECT_STREQ(skadi_status(run_in(run_status::pending, {}, true)), "sent");
  EXPECT_STREQ(skadi_status(run_in(run_status::running)), "sent");
  EXPECT_STREQ(skadi_status(run_in(run_status::running, {}, true)), "sent");
  EXPECT_STREQ(skadi_status(run_in(run_status::success)), "succeeded");
  EXPECT_STREQ(skadi_status(run_in(run_status::error, "expired")), "expired");
  EXPECT_STREQ(skadi_status(run_in(run_status::error, "plan_failed")), "failed");
  EXPECT_STREQ(skadi_status(run_in(run_status::error, "agent_lost")), "failed");
  EXPECT_STREQ(skadi_status(run_in(run_status::error)), "failed");
  EXPECT_STREQ(skadi_status(run_in(run_status::canceled)), "canceled");
  EXPECT_STREQ(skadi_status(run_in(run_status::canceled, "expired")), "canceled");
}

// This test ensures a run back in `created` is `queuing` even if a stale
// `delivered_at` survived its requeue.
TEST(RunState, SkadiStatusOfRequeuedRun) {
  auto r = run_in(run_status::pending, {}, true);
  EXPECT_STREQ(skadi_status(r), "sent");
  r.status = run_status::created;
  EXPECT_STREQ(skadi_status(r), "queuing");
}

} // namespace
} // namespace polymesh
