// Which ends a run's `retry` follows, and what its retry is.
#include "mesh/domain/error.hpp"
#include "mesh/domain/retry.hpp"

#include <gtest/gtest.h>

namespace polymesh {
namespace {

run_record ended_run(const std::string& reason, run_status status = run_status::error) {
  run_record r;
  r.id = "run_1";
  r.seq = 7;
  r.status = status;
  r.reason = reason;
  r.retry_max = 2;
  r.retry_on = std::string{default_retry_on};
  return r;
}

// This test ensures `on` is kept in one order whatever order it was sent
// in, and that a reason a retry may not follow, or one named twice, is
// refused naming its entry.
TEST(Retry, OnIsKeptInOneOrderAndCheckedEntryByEntry) {
  auto text = retry_on_text({"timeout", "agent_lost", "plan_failed"}, "retry.on");
  ASSERT_TRUE(text);
  EXPECT_EQ(*text, "agent_lost,plan_failed,timeout");
  EXPECT_EQ(retry_on_list(*text),
            (std::vector<std::string>{"agent_lost", "plan_failed", "timeout"}));
  EXPECT_TRUE(retry_on_list("").empty());

  auto unknown = retry_on_text({"agent_lost", "success"}, "retry.on");
  ASSERT_FALSE(unknown);
  EXPECT_EQ(field_of(unknown.error()), "retry.on[1]");
  EXPECT_NE(message_of(unknown.error()).find("'success'"), std::string::npos);
  auto twice = retry_on_text({"expired", "expired"}, "retry.on");
  ASSERT_FALSE(twice);
  EXPECT_EQ(field_of(twice.error()), "retry.on[1]");
}

// This test ensures a run is retried only when it ended with a reason its
// `on` names, has retries left, was not retried yet and nobody asked to
// cancel it; a run stopped for its timeout is, when `on` names `timeout`.
TEST(Retry, OnlyTheEndsNamedWithRetriesLeftAreRetried) {
  EXPECT_TRUE(retried(ended_run("agent_lost")));
  EXPECT_TRUE(retried(ended_run("agent_shutdown", run_status::canceled)));
  EXPECT_FALSE(retried(ended_run("plan_failed"))) << "not named by default";
  EXPECT_FALSE(retried(ended_run("", run_status::success)));

  auto unfinished = ended_run("agent_lost");
  unfinished.status = run_status::running;
  EXPECT_FALSE(retried(unfinished));
  auto none = ended_run("agent_lost");
  none.retry_max = 0;
  EXPECT_FALSE(retried(none));
  auto last = ended_run("agent_lost");
  last.retry_number = 2;
  EXPECT_FALSE(retried(last)) << "its chain had max retries";
  auto done = ended_run("agent_lost");
  done.retried_by = "run_2";
  EXPECT_FALSE(retried(done));
  auto asked = ended_run("agent_lost");
  asked.cancel_requested = true;
  asked.cancel_reason = "canceled_by_user";
  EXPECT_FALSE(retried(asked));

  auto named = ended_run("agent_lost");
  named.target_agent = "web-1";
  EXPECT_FALSE(retried(named)) << "its retry could only go to the agent that left";
  named.reason = "agent_shutdown";
  named.status = run_status::canceled;
  EXPECT_FALSE(retried(named));
  named.reason = "plan_failed";
  named.status = run_status::error;
  named.retry_on = "plan_failed";
  EXPECT_TRUE(retried(named));

  auto overran = ended_run("timeout");
  overran.retry_on = "timeout";
  overran.cancel_requested = true;
  overran.cancel_reason = "timeout";
  EXPECT_TRUE(retried(overran));
}

// This test ensures the retry is the same request, new and unassigned, one
// further along its chain, without the idempotency key, and queued in the
// place of its chain's first run.
TEST(Retry, TheRetryIsTheSameRequestInItsFirstRunsPlace) {
  auto r = ended_run("agent_lost");
  r.plan = "deploy";
  r.selector = "env=prod";
  r.scope = "env in (prod)";
  r.target_agent = "web-1";
  r.assigned_agent = "agt_1";
  r.params = R"({"v":2})";
  r.payload = "p";
  r.priority = 3;
  r.concurrency_key = "prod";
  r.idempotency_key = "k";
  r.submitted_by = "tok_1";
  r.timeout_s = 60;
  r.ttl_s = 600;
  r.attempts = 2;
  r.retry_number = 1;
  r.retry_of = "run_0";
  r.queue_seq = 3;
  r.started_at = timestamp{std::chrono::milliseconds{5}};
  r.finished_at = timestamp{std::chrono::milliseconds{9}};
  auto now = timestamp{std::chrono::milliseconds{10}};
  auto next = make_retry(r, "run_2", 12, now);
  EXPECT_EQ(next.id, "run_2");
  EXPECT_EQ(next.seq, 12u);
  EXPECT_EQ(next.queue_seq, 3u) << "the chain's first run's place";
  EXPECT_EQ(queue_order(next), 3u);
  EXPECT_EQ(next.status, run_status::created);
  EXPECT_EQ(next.reason, "");
  EXPECT_EQ(next.created_at, now);
  EXPECT_EQ(next.attempts, 0);
  EXPECT_EQ(next.assigned_agent, "");
  EXPECT_FALSE(next.started_at);
  EXPECT_FALSE(next.finished_at);
  EXPECT_EQ(next.idempotency_key, "");
  EXPECT_EQ(next.retry_number, 2);
  EXPECT_EQ(next.retry_of, "run_1");
  EXPECT_EQ(next.retried_by, "");
  for (auto [a, b] : {std::pair{next.plan, r.plan},
                      {next.selector, r.selector},
                      {next.scope, r.scope},
                      {next.target_agent, r.target_agent},
                      {next.params, r.params},
                      {next.payload, r.payload},
                      {next.concurrency_key, r.concurrency_key},
                      {next.submitted_by, r.submitted_by},
                      {next.retry_on, r.retry_on}})
    EXPECT_EQ(a, b);
  EXPECT_EQ(next.priority, 3);
  EXPECT_EQ(next.timeout_s, 60);
  EXPECT_EQ(next.ttl_s, 600);
  EXPECT_EQ(next.retry_max, 2);

  r.queue_seq = 0;
  EXPECT_EQ(make_retry(r, "run_3", 13, now).queue_seq, 7u) << "a first run's own seq";
}

} // namespace
} // namespace polymesh
