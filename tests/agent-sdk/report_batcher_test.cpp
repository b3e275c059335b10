// Starts and finishes sent together: which calls go in one report, and how
// each caller gets its own answer, with the mesh's calls replaced by fakes.
#include "eventually.hpp"
#include "report_batcher.hpp"

#include <gtest/gtest.h>
#include <thread>

using namespace polymesh::sdk;
using namespace polymesh;
using namespace std::chrono_literals;
using nlohmann::json;
using polymesh::sdk::test_support::eventually;

namespace {

/// The mesh side: records every call; `report` answers each item with
/// `item_answer`, or the whole report with `whole` when set.
struct fake_calls {
  std::mutex mtx;
  std::condition_variable cv;
  bool hold_singles = false;
  std::vector<wire::report_request> reports;
  std::vector<std::string> singles;
  std::optional<http_reply> whole;
  std::function<json(const std::string& run, bool started)> item_answer =
      [](const std::string& run, bool started) {
        return json{{"run", run},
                    {"ok", true},
                    {"status", started ? "running" : "success"},
                    {"cancel_requested", false}};
      };

  report_batcher batcher(size_t max_items = 256, size_t max_bytes = 256 * 1024) {
    return report_batcher{
        [this](const wire::report_request& r) {
          std::lock_guard<std::mutex> guard{mtx};
          reports.push_back(r);
          if (whole) return *whole;
          json body{{"started", json::array()}, {"finished", json::array()}};
          for (auto& id : r.started)
            body["started"].push_back(item_answer(id, true));
          for (auto& [id, f] : r.finished)
            body["finished"].push_back(item_answer(id, false));
          return http_reply{200, body, ""};
        },
        [this](const std::string& run) { return single("start " + run); },
        [this](const std::string& run, const wire::finish_request&) {
          return single("finish " + run);
        },
        max_items, max_bytes};
  }

  http_reply single(const std::string& what) {
    std::unique_lock<std::mutex> guard{mtx};
    singles.push_back(what);
    cv.wait(guard, [this] { return !hold_singles; });
    return http_reply{200, json{{"single", what}}, ""};
  }

  void release() {
    std::lock_guard<std::mutex> guard{mtx};
    hold_singles = false;
    cv.notify_all();
  }
};

wire::finish_request success(std::string result = {}) {
  wire::finish_request f;
  f.status = run_status::success;
  f.exit_code = 0;
  f.result = std::move(result);
  return f;
}

/// Holds the batcher busy with a lone start of `r0` (sent as a single call
/// and held), so that the calls `more` makes meanwhile wait and go together.
template <class F>
std::vector<http_reply> while_busy(fake_calls& mesh, report_batcher& b, size_t n,
                                   F more) {
  mesh.hold_singles = true;
  std::thread first{[&] { EXPECT_TRUE(b.start("r0").ok()); }};
  EXPECT_TRUE(eventually([&] {
    std::lock_guard<std::mutex> guard{mesh.mtx};
    return mesh.singles.size() == 1;
  }));
  std::vector<http_reply> answers(n);
  std::vector<std::thread> callers;
  for (size_t i = 0; i < n; ++i)
    callers.emplace_back([&, i] { answers[i] = more(i); });
  EXPECT_TRUE(eventually([&] { return b.waiting() == n; }));
  mesh.release();
  first.join();
  for (auto& t : callers)
    t.join();
  return answers;
}

} // namespace

// This test ensures a call nobody else waits with goes out as the single-run
// call it stands for, not as a report.
TEST(report_batcher, lone_call_is_a_single_call) {
  fake_calls mesh;
  auto b = mesh.batcher();
  auto s = b.start("r1");
  auto f = b.finish("r1", success());
  EXPECT_EQ(s.body["single"], "start r1");
  EXPECT_EQ(f.body["single"], "finish r1");
  EXPECT_EQ(b.reports(), 0u);
}

// This test ensures calls made while a request is out go in one report, and
// each caller gets its own item's answer, refusals included.
TEST(report_batcher, waiting_calls_share_one_report) {
  fake_calls mesh;
  mesh.item_answer = [](const std::string& run, bool started) {
    if (run == "r3")
      return json{
          {"run", run},
          {"ok", false},
          {"http_status", 409},
          {"error", {{"code", "illegal_transition"}, {"message", "already done"}}}};
    return json{{"run", run}, {"ok", true}, {"cancel_requested", started}};
  };
  auto b = mesh.batcher();
  auto answers = while_busy(mesh, b, 4, [&](size_t i) {
    auto run = "r" + std::to_string(i + 1);
    return i % 2 ? b.finish(run, success()) : b.start(run);
  });
  ASSERT_EQ(mesh.reports.size(), 1u);
  auto& sent = mesh.reports[0];
  EXPECT_EQ(sent.started.size() + sent.finished.size(), 4u);
  EXPECT_EQ(answers[0].status, 200);
  EXPECT_EQ(answers[0].body["cancel_requested"], true);
  EXPECT_EQ(answers[1].status, 200);
  EXPECT_EQ(answers[2].status, 409);
  EXPECT_FALSE(answers[2].transient());
  EXPECT_EQ(answers[2].error, "already done");
  EXPECT_EQ(answers[3].status, 200);
  EXPECT_EQ(mesh.singles.size(), 1u); // only r0's
}

// This test ensures a report that got no answer, or a 5xx, is every item's
// answer, so that each caller retries as it would have.
TEST(report_batcher, transient_failure_is_each_items) {
  fake_calls mesh;
  mesh.whole =
      http_reply{503, json{{"error", {{"message", "restarting"}}}}, "restarting"};
  auto b = mesh.batcher();
  auto answers = while_busy(
      mesh, b, 3, [&](size_t i) { return b.start("r" + std::to_string(i + 1)); });
  for (auto& a : answers) {
    EXPECT_EQ(a.status, 503);
    EXPECT_TRUE(a.transient());
  }
  EXPECT_EQ(mesh.singles.size(), 1u);
}

// This test ensures a report refused as a whole (a 400 for one item's
// result, say) or answered with lists that do not match sends each item on
// its own, so no run pays for another.
TEST(report_batcher, refused_or_mismatched_report_goes_item_by_item) {
  for (auto whole :
       {http_reply{400, json{{"error", {{"message", "too big"}}}}, "too big"},
        http_reply{200, json{{"started", json::array()}}, ""}}) {
    fake_calls mesh;
    mesh.whole = whole;
    auto b = mesh.batcher();
    auto answers = while_busy(mesh, b, 3, [&](size_t i) {
      return b.finish("r" + std::to_string(i + 1), success());
    });
    ASSERT_EQ(mesh.reports.size(), 1u);
    for (size_t i = 0; i < answers.size(); ++i)
      EXPECT_EQ(answers[i].body["single"], "finish r" + std::to_string(i + 1));
  }
}

// This test ensures large results are spread over reports that stay under
// the byte limit, and no item is left behind.
TEST(report_batcher, reports_stay_under_the_byte_limit) {
  fake_calls mesh;
  auto b = mesh.batcher(256, 100 * 1024);
  auto answers = while_busy(mesh, b, 5, [&](size_t i) {
    return b.finish("r" + std::to_string(i + 1), success(std::string(40 * 1024, 'x')));
  });
  for (auto& a : answers)
    EXPECT_TRUE(a.ok());
  size_t items = 0;
  for (auto& r : mesh.reports) {
    size_t bytes = 0;
    for (auto& [id, f] : r.finished)
      bytes += f.result.size();
    EXPECT_LE(bytes, 100u * 1024);
    items += r.finished.size();
  }
  // 5 finishes of 40 KiB: 2 + 2 in reports, the last alone as a single call.
  EXPECT_EQ(items + mesh.singles.size() - 1, 5u);
  EXPECT_GE(mesh.reports.size(), 2u);
}

// This test ensures the body the agent sends parses as the mesh parses it.
TEST(report_batcher, report_body_round_trips_through_the_wire_contract) {
  wire::report_request r;
  r.started = {"run_a", "run_b"};
  auto f = success("out");
  f.reason = "";
  wire::finish_request e;
  e.status = run_status::error;
  e.exit_code = 3;
  e.error = "boom";
  e.reason = "plan_failed";
  r.finished = {{"run_c", f}, {"run_d", e}};
  auto parsed = wire::parse_report_request(wire::to_json(r), wire::limits{});
  ASSERT_TRUE(parsed) << to_string(parsed.error());
  EXPECT_EQ(parsed->started, r.started);
  ASSERT_EQ(parsed->finished.size(), 2u);
  EXPECT_EQ(parsed->finished[0].first, "run_c");
  EXPECT_EQ(parsed->finished[0].second.result, "out");
  EXPECT_EQ(parsed->finished[1].first, "run_d");
  EXPECT_EQ(parsed->finished[1].second.status, run_status::error);
  EXPECT_EQ(parsed->finished[1].second.exit_code, 3);
  EXPECT_EQ(parsed->finished[1].second.error, "boom");
  EXPECT_EQ(parsed->finished[1].second.reason, "plan_failed");
}
