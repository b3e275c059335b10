// The metrics meshd exposes at `GET /metrics`: histogram buckets, label
// escaping, the cap on run-end reasons, and the text format's shape.
#include "mesh/domain/metrics.hpp"

#include <gtest/gtest.h>
#include <sstream>
#include <thread>

namespace polymesh {
namespace {

using namespace std::chrono_literals;

/// The value of the sample line that starts with `head` (name and labels),
/// or -1 when there is none.
double value_of(const std::string& text, const std::string& head) {
  std::istringstream in{text};
  for (std::string line; std::getline(in, line);)
    if (line.rfind(head + " ", 0) == 0) return std::stod(line.substr(head.size() + 1));
  return -1;
}

run_record ended_run(run_status status, std::string reason) {
  run_record r;
  r.id = "run_1";
  r.status = status;
  r.reason = std::move(reason);
  r.created_at = timestamp{} + 10s;
  r.started_at = timestamp{} + 12s;
  r.finished_at = timestamp{} + 15s;
  return r;
}

// This test ensures a histogram's buckets are cumulative, an observation on
// a bound falls into that bound's bucket, and `_sum` and `_count` add up.
TEST(metrics, histogram_buckets_are_cumulative) {
  latency_histogram h{{0.001, 0.01, 1}};
  h.observe(500us);
  h.observe(1ms); // on the bound: le="0.001"
  h.observe(5ms);
  h.observe(2s);
  h.observe(-3ms); // a clock step backwards counts as zero
  std::string out;
  h.render(out, "x_seconds", "route=\"/a\"");
  EXPECT_EQ(value_of(out, "x_seconds_bucket{route=\"/a\",le=\"0.001\"}"), 3) << out;
  EXPECT_EQ(value_of(out, "x_seconds_bucket{route=\"/a\",le=\"0.01\"}"), 4) << out;
  EXPECT_EQ(value_of(out, "x_seconds_bucket{route=\"/a\",le=\"1\"}"), 4) << out;
  EXPECT_EQ(value_of(out, "x_seconds_bucket{route=\"/a\",le=\"+Inf\"}"), 5) << out;
  EXPECT_EQ(value_of(out, "x_seconds_count{route=\"/a\"}"), 5) << out;
  EXPECT_DOUBLE_EQ(value_of(out, "x_seconds_sum{route=\"/a\"}"), 2.0065) << out;
  EXPECT_EQ(h.count(), 5u);
}

// This test ensures label values cannot break the format: backslashes,
// quotes and newlines are escaped.
TEST(metrics, label_values_are_escaped) {
  EXPECT_EQ(escape_label_value("plain"), "plain");
  EXPECT_EQ(escape_label_value("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
}

// This test ensures run ends are counted by status and reason, that reasons
// beyond the cap are counted as `other` rather than growing the output
// without bound, and that waits and run times are observed.
TEST(metrics, run_ends_are_counted_with_a_bounded_set_of_reasons) {
  mesh_metrics m;
  m.runs_submitted(3);
  m.run_ended(ended_run(run_status::success, ""));
  m.run_ended(ended_run(run_status::success, ""));
  m.run_ended(ended_run(run_status::error, "plan_failed"));
  for (size_t i = 0; i < mesh_metrics::max_end_reasons + 10; ++i)
    m.run_ended(ended_run(run_status::error, "reason_" + std::to_string(i)));
  std::string out;
  m.render(out);
  EXPECT_EQ(value_of(out, "polymesh_runs_submitted_total"), 3) << out;
  EXPECT_EQ(value_of(out, "polymesh_runs_ended_total{status=\"success\",reason=\"\"}"), 2)
      << out;
  EXPECT_EQ(
      value_of(out, "polymesh_runs_ended_total{status=\"error\",reason=\"plan_failed\"}"),
      1);
  // 2 pairs known before the loop, so 62 of its reasons get their own line.
  EXPECT_EQ(value_of(out, "polymesh_runs_ended_total{status=\"error\",reason=\"other\"}"),
            12)
      << out;
  size_t lines = 0;
  std::istringstream in{out};
  for (std::string line; std::getline(in, line);)
    if (line.rfind("polymesh_runs_ended_total{", 0) == 0) ++lines;
  EXPECT_EQ(lines, mesh_metrics::max_end_reasons + 1);
  auto ended = mesh_metrics::max_end_reasons + 13;
  EXPECT_EQ(value_of(out, "polymesh_run_wait_seconds_count"), ended);
  EXPECT_EQ(value_of(out, "polymesh_run_wait_seconds_bucket{le=\"1\"}"), 0) << out;
  EXPECT_EQ(value_of(out, "polymesh_run_wait_seconds_bucket{le=\"5\"}"), ended) << out;
  EXPECT_EQ(value_of(out, "polymesh_run_duration_seconds_sum"), 3.0 * ended) << out;
}

// This test ensures a run that ended without starting (canceled in the
// queue) is counted as ended but adds no wait or run time.
TEST(metrics, a_run_that_never_started_has_no_wait) {
  mesh_metrics m;
  auto r = ended_run(run_status::canceled, "canceled_by_user");
  r.started_at.reset();
  m.run_ended(r);
  std::string out;
  m.render(out);
  EXPECT_EQ(
      value_of(
          out,
          "polymesh_runs_ended_total{status=\"canceled\",reason=\"canceled_by_user\"}"),
      1);
  EXPECT_EQ(value_of(out, "polymesh_run_wait_seconds_count"), 0);
  EXPECT_EQ(value_of(out, "polymesh_run_duration_seconds_count"), 0);
}

// This test ensures commits and failed commits are told apart and only
// committed writes are counted.
TEST(metrics, store_commits_and_failures) {
  mesh_metrics m;
  m.committed(5, 2ms, true);
  m.committed(3, 1ms, false);
  std::string out;
  m.render(out);
  EXPECT_EQ(value_of(out, "polymesh_store_commits_total"), 1);
  EXPECT_EQ(value_of(out, "polymesh_store_commit_failures_total"), 1);
  EXPECT_EQ(value_of(out, "polymesh_store_writes_total"), 5);
  EXPECT_EQ(value_of(out, "polymesh_store_commit_duration_seconds_count"), 2);
}

// This test ensures requests are counted per endpoint and status, requests
// no endpoint took go to route "other", and concurrent counting loses
// nothing.
TEST(metrics, http_requests_per_route_and_status) {
  http_metrics m{{{"GET", "/v1/runs"}, {"POST", "/v1/runs"}}};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&] {
      for (int i = 0; i < 1000; ++i)
        m.answered(1, 201, 1ms);
    });
  for (auto& t : threads)
    t.join();
  m.answered(0, 200, 3ms);
  m.answered(0, -1, 3ms); // a handler that set no status is sent as 200
  m.refused(404);
  std::string out;
  m.render(out);
  EXPECT_EQ(value_of(out, "polymesh_http_requests_total{method=\"POST\",route=\"/v1/"
                          "runs\",code=\"201\"}"),
            4000)
      << out;
  EXPECT_EQ(value_of(out, "polymesh_http_requests_total{method=\"GET\",route=\"/v1/"
                          "runs\",code=\"200\"}"),
            2);
  EXPECT_EQ(value_of(out, "polymesh_http_requests_total{method=\"\",route=\"other\","
                          "code=\"404\"}"),
            1);
  EXPECT_EQ(value_of(out, "polymesh_http_request_duration_seconds_count{method=\"POST\","
                          "route=\"/v1/runs\"}"),
            4000);
  EXPECT_NE(out.find("# TYPE polymesh_http_requests_total counter\n"), std::string::npos);
  EXPECT_NE(out.find("# TYPE polymesh_http_request_duration_seconds histogram\n"),
            std::string::npos);
}

// This test ensures the process metrics are read from /proc: this test
// process has memory, threads and open descriptors.
TEST(metrics, process_metrics_are_read) {
  std::string out;
  render_process_metrics(out);
  EXPECT_GT(value_of(out, "process_resident_memory_bytes"), 1e6) << out;
  EXPECT_GE(value_of(out, "process_threads"), 1) << out;
  EXPECT_GE(value_of(out, "process_open_fds"), 3) << out;
  EXPECT_GT(value_of(out, "process_start_time_seconds"), 1.6e9) << out;
  EXPECT_GE(value_of(out, "process_cpu_seconds_total"), 0) << out;
}

} // namespace
} // namespace polymesh
