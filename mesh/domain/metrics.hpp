// What meshd counts for `GET /metrics`, and the Prometheus text format
// (version 0.0.4) it is rendered in.
//
// Ownership: one `mesh_metrics` per mesh, held by its context, and one
// `http_metrics` per HTTP server. HTTP threads, CAF workers and the store's
// thread count into them at once: counting is relaxed atomics, except a run's
// end, whose reason is a string (one mutex, taken once per finished run).
// Rendering reads while counting goes on, so a scrape may see a histogram's
// `_count` one ahead of a bucket; every counter only grows.
#pragma once

#include "mesh/domain/records.hpp"

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace polymesh {

/// `value` as a Prometheus label value: `\`, `"` and newlines escaped.
[[nodiscard]] std::string escape_label_value(std::string_view value);

/// Appends `# HELP` and `# TYPE` lines for the metric family `name`.
void describe_metric(std::string& out, std::string_view name, std::string_view type,
                     std::string_view help);

/// A cumulative histogram of durations over fixed bucket bounds.
class latency_histogram {
public:
  /// `bounds`: upper bounds in seconds, ascending; `+Inf` is implied.
  explicit latency_histogram(std::vector<double> bounds);
  /// Bounds for request-like latencies: 0.5 ms to 30 s.
  [[nodiscard]] static std::vector<double> request_bounds();
  /// Bounds for run waits and run times: 10 ms to 6 h.
  [[nodiscard]] static std::vector<double> run_bounds();

  /// Counts one observation; a negative `d` counts as zero.
  void observe(std::chrono::nanoseconds d);
  /// Appends the `_bucket`, `_sum` and `_count` samples of `name`;
  /// `labels` (e.g. `route="/v1/runs"`) go before `le`, and may be empty.
  void render(std::string& out, std::string_view name, std::string_view labels) const;
  [[nodiscard]] uint64_t count() const;

private:
  std::vector<double> bounds_;
  std::vector<int64_t> bounds_ns_;
  /// One counter per bucket (not cumulative), the last one for `+Inf`.
  std::unique_ptr<std::atomic<uint64_t>[]> buckets_;
  std::atomic<uint64_t> sum_ns_{0};
};

/// The HTTP API's answers: per declared endpoint, how many of each status
/// and how long the handler took (a streamed download's bytes go out after).
class http_metrics {
public:
  /// One `{method, path}` per declared endpoint, in their order.
  explicit http_metrics(std::vector<std::pair<std::string, std::string>> routes);

  /// Endpoint number `route` answered `status` after `took`.
  void answered(size_t route, int status, std::chrono::nanoseconds took);
  /// The HTTP layer refused a request before any endpoint took it (no such
  /// path, wrong method, body too large ...): counted as route `other`.
  void refused(int status);
  void render(std::string& out) const;

private:
  static constexpr int first_status = 100;
  static constexpr int statuses = 500; // 100..599
  struct route {
    std::string method;
    std::string path;
    std::unique_ptr<std::atomic<uint64_t>[]> by_status;
    latency_histogram seconds{latency_histogram::request_bounds()};
  };
  static void count(route& r, int status);
  /// A deque: a `route` cannot move (its counters are atomic).
  std::deque<route> routes_;
  route other_;
};

/// Runs and the store, counted by the actors.
class mesh_metrics {
public:
  /// Distinct `{status, reason}` pairs kept for ended runs; later ones are
  /// counted under reason `other` (agents choose their own reasons).
  static constexpr size_t max_end_reasons = 64;

  mesh_metrics();

  /// `n` runs were durably accepted.
  void runs_submitted(uint64_t n);
  /// `run` durably reached its terminal state.
  void run_ended(const run_record& run);
  /// The store committed `writes` writes in one transaction, or failed to.
  void committed(size_t writes, std::chrono::nanoseconds took, bool ok);
  /// Retention pruned `runs` finished runs, or failed to (`ok` false).
  void pruned(size_t runs, bool ok);
  /// A run's delivery lease lapsed (its agent did not start it in time).
  void lease_lapsed();
  /// The mesh durably submitted a retry of `ended` (see `retry.hpp`).
  void run_retried(const run_record& ended);
  /// `n` agents are held back now after lapsed leases.
  void agents_held(int64_t n);
  void render(std::string& out) const;

private:
  std::atomic<uint64_t> submitted_{0};
  mutable std::mutex ended_mtx_;
  std::map<std::pair<std::string, std::string>, uint64_t> ended_;
  latency_histogram wait_{latency_histogram::run_bounds()};
  latency_histogram run_time_{latency_histogram::run_bounds()};
  std::atomic<uint64_t> commits_{0};
  std::atomic<uint64_t> commit_failures_{0};
  std::atomic<uint64_t> writes_{0};
  latency_histogram commit_seconds_{latency_histogram::request_bounds()};
  std::atomic<uint64_t> pruned_{0};
  std::atomic<uint64_t> prune_failures_{0};
  std::atomic<uint64_t> lease_lapses_{0};
  /// Retries made, by the reason of the end they followed (`retry_reasons`).
  std::array<std::atomic<uint64_t>, 6> retried_{};
  std::atomic<int64_t> agents_held_{0};
};

/// Appends the standard `process_*` metrics of this process, read from
/// `/proc/self` (CPU time, resident and virtual memory, open and maximum
/// file descriptors, threads, start time). Missing files leave them out.
void render_process_metrics(std::string& out);

} // namespace polymesh
