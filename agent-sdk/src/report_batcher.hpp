// Starts and finishes of concurrent runs, sent to the mesh together.
//
// A worker calls `start` or `finish` and blocks until its own answer is in,
// as with a single-run call. Calls that arrive while a report is on its way
// wait and go together in the next one: `POST /v1/agents/{id}/report`
// (without `wait`) with every waiting start and finish. The first waiting
// caller sends it (no thread of its own), so a lone call costs one request,
// as before, and eight slots that finish together cost two instead of
// eight. A report stays well under the mesh's default body limit.
//
// Each item's answer is what the single-run call would have answered: the
// item's `http_status` and `error` when the mesh refused it, 200 with the
// run's `status` and `cancel_requested` when it took it. When the report as
// a whole fails, a transient failure (no answer, 5xx) is every item's
// answer, so each caller retries as before; any other refusal (say, a 400
// for one item's oversized result) makes each item go again in a call of
// its own, so that one run cannot cost the others their results.
//
// Thread-safety: `start` and `finish` may be called from any thread.
#pragma once

#include "mesh_client.hpp"

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>

namespace polymesh::sdk {

class report_batcher {
public:
  /// Sends one report. The single-run calls, for items a report refused.
  using report_call = std::function<http_reply(const wire::report_request&)>;
  using start_call = std::function<http_reply(const std::string& run)>;
  using finish_call =
      std::function<http_reply(const std::string& run, const wire::finish_request&)>;

  /// At most `max_bytes` of results and errors (and `max_items` items) go
  /// in one report; a larger item goes alone.
  report_batcher(report_call report, start_call start, finish_call finish,
                 size_t max_items = 256, size_t max_bytes = 256 * 1024);

  http_reply start(const std::string& run);
  http_reply finish(const std::string& run, const wire::finish_request& req);

  /// Reports sent so far (for tests and stats).
  [[nodiscard]] uint64_t reports() const;
  /// Calls waiting for a report to take them (for tests).
  [[nodiscard]] size_t waiting() const;

private:
  struct item {
    bool is_start = true;
    std::string run;
    const wire::finish_request* finish = nullptr;
    http_reply answer;
    bool done = false;
  };

  http_reply submit(item& it);
  /// Sends `batch` and fills in each item's answer. REQUIRES: `mtx_` not held.
  void send(const std::vector<item*>& batch);
  /// One item on its own, over its single-run call.
  http_reply send_alone(const item& it);

  report_call report_;
  start_call start_;
  finish_call finish_;
  size_t max_items_;
  size_t max_bytes_;

  mutable std::mutex mtx_;
  std::condition_variable cv_;
  std::deque<item*> waiting_;
  bool sending_ = false;
  uint64_t reports_ = 0;
};

} // namespace polymesh::sdk
