// Waiting for a run over HTTP: `GET /v1/runs/{id}?wait=S&while_status=` and
// `POST /v1/runs?wait=S` answer when the run changes, not before.
#include "tests/support/mesh_fixture.hpp"

#include <chrono>
#include <future>

namespace polymesh::test {
namespace {

class run_wait : public mesh_fixture {
protected:
  /// A run no agent takes (none is registered yet): it stays `created`.
  std::string queued_run() {
    auto sub = submit(json{{"plan", "noop"}});
    EXPECT_EQ(sub.status, 201) << sub.raw;
    return sub.body.value("id", "");
  }
};

/// Whether `n` clients wait on runs now (a thread of `http.run_waits` each).
bool run_waits_are(const std::function<response()>& readyz, int64_t n) {
  return eventually([&] { return readyz().body["http"]["run_waits"] == n; });
}

// This test ensures a client waiting on a run is answered when the run
// leaves the status it waits in, with the new status, at each step of its
// life: created → pending, pending → running, and (waiting for the end)
// running → success. An answer before the change would show the old one;
// one at the end of the wait (30 s) would take too long.
TEST_F(run_wait, a_wait_answers_when_the_run_leaves_the_status) {
  auto began = std::chrono::steady_clock::now();
  auto readyz = [&] { return call("GET", "/readyz", admin); };
  auto id = queued_run();
  auto path = "/v1/runs/" + id + "?wait=30";

  auto waiting = std::async(std::launch::async, [&] {
    return call("GET", path + "&while_status=created", admin);
  });
  ASSERT_TRUE(run_waits_are(readyz, 1));
  auto agent = register_agent("w-1", json::object());
  ASSERT_EQ(agent.take(1).size(), 1u);
  auto r = waiting.get();
  ASSERT_EQ(r.status, 200) << r.raw;
  EXPECT_EQ(r.body["status"], "pending") << r.raw;
  EXPECT_EQ(r.body["assigned_agent"], agent.id);

  waiting = std::async(std::launch::async, [&] {
    return call("GET", path + "&while_status=pending", admin);
  });
  ASSERT_TRUE(run_waits_are(readyz, 1));
  ASSERT_EQ(agent.start(id).status, 200);
  r = waiting.get();
  ASSERT_EQ(r.status, 200) << r.raw;
  EXPECT_EQ(r.body["status"], "running") << r.raw;

  waiting = std::async(std::launch::async, [&] { return call("GET", path, admin); });
  ASSERT_TRUE(run_waits_are(readyz, 1));
  ASSERT_EQ(agent.progress(id, "half way").status, 200);
  ASSERT_EQ(agent.finish(id, "success", 0, "done").status, 200);
  r = waiting.get();
  ASSERT_EQ(r.status, 200) << r.raw;
  EXPECT_EQ(r.body["status"], "success") << r.raw;
  EXPECT_EQ(r.body["result"], "done");
  EXPECT_EQ(r.body["progress"], "half way");
  EXPECT_TRUE(run_waits_are(readyz, 0));
  EXPECT_LT(std::chrono::steady_clock::now() - began, std::chrono::seconds{20});
}

// This test ensures a wait whose time is up answers with the run as it is,
// and not before its time: `wait=1` on a run no agent can take.
TEST_F(run_wait, a_wait_whose_time_is_up_answers_the_run_unchanged) {
  auto id = queued_run();
  auto began = std::chrono::steady_clock::now();
  auto r = call("GET", "/v1/runs/" + id + "?wait=1", admin);
  auto took = std::chrono::steady_clock::now() - began;
  ASSERT_EQ(r.status, 200) << r.raw;
  EXPECT_EQ(r.body["status"], "created");
  EXPECT_EQ(r.body["id"], id);
  EXPECT_GE(took, std::chrono::seconds{1});
  EXPECT_EQ(call("GET", "/readyz", admin).body["http"]["run_waits"], 0);
}

// This test ensures a wait on a run that already left the status (or has
// ended, or is not known) answers at once, however long the wait asked.
TEST_F(run_wait, a_wait_on_a_changed_ended_or_unknown_run_answers_at_once) {
  auto id = queued_run();
  auto began = std::chrono::steady_clock::now();
  auto r = call("GET", "/v1/runs/" + id + "?wait=30&while_status=running", admin);
  ASSERT_EQ(r.status, 200) << r.raw;
  EXPECT_EQ(r.body["status"], "created");
  ASSERT_EQ(call("POST", "/v1/runs/" + id + "/cancel", admin).status, 200);
  r = call("GET", "/v1/runs/" + id + "?wait=30", admin);
  ASSERT_EQ(r.status, 200) << r.raw;
  EXPECT_EQ(r.body["status"], "canceled");
  r = call("GET", "/v1/runs/run_doesnotexist?wait=30", admin);
  EXPECT_EQ(r.status, 404) << r.raw;
  EXPECT_EQ(r.body["error"]["code"], "not_found");
  // Three 30 s waits that did not wait take well under one of them.
  EXPECT_LT(std::chrono::steady_clock::now() - began, std::chrono::seconds{20});
}

// This test ensures a bad wait is a 400 naming the parameter, and changes
// nothing: no run is created by a refused submit.
TEST_F(run_wait, bad_waits_are_400_naming_the_parameter_and_change_nothing) {
  auto id = queued_run();
  auto run = "/v1/runs/" + id;
  struct bad {
    std::string query;
    std::string field;
  };
  for (const auto& b :
       {bad{"?wait=1&while_status=success", "while_status"},
        bad{"?wait=1&while_status=sleeping", "while_status"},
        bad{"?while_status=created", "while_status"}, bad{"?wait=soon", "wait"},
        bad{"?wait=-1", "wait"}, bad{"?wait=1&until=success", "until"}}) {
    auto r = call("GET", run + b.query, admin);
    EXPECT_EQ(r.status, 400) << b.query << " " << r.raw;
    EXPECT_EQ(r.body["error"]["field"], b.field) << b.query << " " << r.raw;
  }
  auto r = call("POST", "/v1/runs?wait=x", admin, json{{"plan", "noop"}});
  EXPECT_EQ(r.status, 400) << r.raw;
  EXPECT_EQ(r.body["error"]["field"], "wait") << r.raw;
  r = call("POST", "/v1/runs?wait=1&while_status=created", admin, json{{"plan", "noop"}});
  EXPECT_EQ(r.status, 400) << r.raw;
  EXPECT_EQ(r.body["error"]["field"], "while_status") << r.raw;
  auto list = call("GET", "/v1/runs", admin);
  ASSERT_EQ(list.status, 200) << list.raw;
  EXPECT_EQ(list.body["runs"].size(), 1u) << list.raw;
  EXPECT_EQ(get_run(id)["status"], "created");
}

// This test ensures `POST /v1/runs?wait=S` is a run in one request: it
// answers 201 with the run once an agent finished it, result included (not
// at the end of the wait).
TEST_F(run_wait, a_submit_with_wait_answers_with_the_finished_run) {
  auto began = std::chrono::steady_clock::now();
  auto agent = register_agent("w-1", json::object());
  auto submitted = std::async(std::launch::async, [&] {
    return call("POST", "/v1/runs?wait=30", admin,
                json{{"plan", "noop"}, {"payload", "ping"}});
  });
  auto runs = agent.take(1);
  ASSERT_EQ(runs.size(), 1u);
  auto id = runs[0]["id"].get<std::string>();
  EXPECT_EQ(runs[0]["payload"], "ping");
  ASSERT_EQ(agent.start(id).status, 200);
  ASSERT_EQ(agent.finish(id, "success", 0, "pong").status, 200);
  auto r = submitted.get();
  ASSERT_EQ(r.status, 201) << r.raw;
  EXPECT_EQ(r.body["id"], id);
  EXPECT_EQ(r.body["status"], "success") << r.raw;
  EXPECT_EQ(r.body["result"], "pong");
  EXPECT_LT(std::chrono::steady_clock::now() - began, std::chrono::seconds{20});
}

} // namespace
} // namespace polymesh::test

namespace polymesh::test {
namespace {

using run_wait_stop = run_wait;

// This test ensures a client waiting on a run does not hold up meshd's
// stop: it is answered with the run as it is (the HTTP server's stop waits
// for every request in flight, and the wait asked for 30 s).
TEST_F(run_wait_stop, a_stopping_mesh_answers_waiting_clients_at_once) {
  auto id = queued_run();
  auto waiting = std::async(std::launch::async, [&, port = port] {
    return polymesh::test::call(port, "GET", "/v1/runs/" + id + "?wait=30", admin);
  });
  ASSERT_TRUE(eventually(
      [&] { return call("GET", "/readyz", admin).body["http"]["run_waits"] == 1; }));
  auto began = std::chrono::steady_clock::now();
  stop_mesh();
  EXPECT_LT(std::chrono::steady_clock::now() - began, std::chrono::seconds{20});
  auto r = waiting.get();
  ASSERT_EQ(r.status, 200) << r.raw;
  EXPECT_EQ(r.body["status"], "created");
}

} // namespace
} // namespace polymesh::test

namespace polymesh::test {
namespace {

class run_wait_room : public run_wait {
protected:
  // One long-poll place for agents (5 threads keep 4 for other requests),
  // two threads of their own for clients waiting on runs.
  void configure(mesh_config& c) override {
    c.http_threads = 5;
    c.run_waits = 2;
  }
};

// This test ensures clients waiting on runs never take an agent's place:
// with both of their own threads taken, an agent's long-poll is still
// served and carries a new run, and a third client wait is answered at
// once with the run as it is (not a 503, and not after its 30 s).
TEST_F(run_wait_room, client_waits_never_take_an_agents_place) {
  auto readyz = [&] { return call("GET", "/readyz", admin); };
  auto first = queued_run(), second = queued_run();
  auto w1 = std::async(std::launch::async, [&] {
    return call("GET", "/v1/runs/" + first + "?wait=30", admin);
  });
  auto w2 = std::async(std::launch::async, [&] {
    return call("GET", "/v1/runs/" + second + "?wait=30", admin);
  });
  ASSERT_TRUE(eventually([&] { return readyz().body["http"]["run_waits"] == 2; }));
  EXPECT_EQ(readyz().body["http"]["run_waits_max"], 2);

  auto began = std::chrono::steady_clock::now();
  auto third = call("GET", "/v1/runs/" + first + "?wait=30&while_status=created", admin);
  ASSERT_EQ(third.status, 200) << third.raw;
  EXPECT_EQ(third.body["status"], "created");
  EXPECT_LT(std::chrono::steady_clock::now() - began, std::chrono::seconds{20});

  // The agent's poll takes its place and carries the first run, which wakes
  // the first waiter; the second run waits for the next poll.
  auto agent = register_agent("w-1", json::object());
  auto polled = agent.poll(30);
  ASSERT_EQ(polled.status, 200) << polled.raw;
  ASSERT_EQ(polled.body["runs"].size(), 1u) << polled.raw;
  auto taken = polled.body["runs"][0]["id"].get<std::string>();
  ASSERT_EQ(agent.start(taken).status, 200);
  ASSERT_EQ(agent.finish(taken, "success").status, 200);
  auto& done = taken == first ? w1 : w2;
  auto r = done.get();
  ASSERT_EQ(r.status, 200) << r.raw;
  EXPECT_EQ(r.body["status"], "success");
  auto other = taken == first ? second : first;
  ASSERT_EQ(call("POST", "/v1/runs/" + other + "/cancel", admin).status, 200);
  EXPECT_EQ((taken == first ? w2 : w1).get().body["status"], "canceled");
}

} // namespace
} // namespace polymesh::test
