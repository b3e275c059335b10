// Run endpoints over real HTTP: illegal transitions that change nothing,
// cancel, progress, logs, list filters and pagination.
#include "tests/support/mesh_fixture.hpp"

#include <caf/scoped_actor.hpp>
#include <httplib.h>
#include <set>
#include <thread>

namespace polymesh::test {
namespace {

using runs = mesh_fixture;

// This test ensures listings have a reader of their own: with it gone, a
// listing fails while reading a run, its log and `/readyz` still work. With
// one reader for everything, a listing that walked many rows (0.7 s with a
// million runs) held up every read behind it, `/readyz` included.
TEST_F(runs, listings_have_a_reader_of_their_own) {
  auto id = submit(json{{"plan", "noop"}}).body["id"].get<std::string>();
  ASSERT_EQ(call("GET", "/v1/runs", admin).status, 200);
  {
    caf::scoped_actor self{node_->system()};
    auto lists = node_->context()->lists;
    self->send_exit(lists, caf::exit_reason::kill);
    self->wait_for(lists);
  }
  EXPECT_EQ(call("GET", "/v1/runs", admin).status, 503);
  EXPECT_EQ(call("GET", "/v1/tokens", admin).status, 503);
  EXPECT_EQ(call("GET", "/v1/runs/" + id, admin).status, 200);
  EXPECT_EQ(call("GET", "/v1/runs/" + id + "/logs", admin).status, 200);
  EXPECT_EQ(call("GET", "/readyz", admin).status, 200);
}

std::string id_of(const response& r) {
  return r.body.value("id", "");
}

// This test ensures starting a run that no agent holds (created) is 409
// and leaves it created and unassigned (regression: it was 403).
TEST_F(runs, start_of_a_created_run_is_409_not_403_and_changes_nothing) {
  auto agent = register_agent("idle", json::object(), json::array({"other"}));
  auto sub = submit(json{{"plan", "noop"}});
  ASSERT_EQ(sub.status, 201) << sub.raw;
  auto id = id_of(sub);
  auto before = get_run(id);
  auto r = agent.start(id);
  EXPECT_EQ(r.status, 409) << r.raw;
  EXPECT_EQ(r.body["error"]["code"], "illegal_transition") << r.raw;
  auto after = get_run(id);
  EXPECT_EQ(after["status"], "created");
  EXPECT_TRUE(after["assigned_agent"].is_null());
  EXPECT_TRUE(after["started_at"].is_null());
  EXPECT_EQ(after["attempts"], before["attempts"]);
}

// This test ensures finishing, starting or cancelling a canceled run is 409
// and the run stays canceled with its reason.
TEST_F(runs, finish_of_a_canceled_run_is_409_and_changes_nothing) {
  auto agent = register_agent("worker", json::object());
  auto sub = submit(json{{"plan", "noop"}});
  ASSERT_EQ(sub.status, 201);
  auto id = id_of(sub);
  ASSERT_EQ(agent.take(1).size(), 1u);
  ASSERT_EQ(agent.start(id).status, 200);
  auto cancel = call("POST", "/v1/runs/" + id + "/cancel", admin);
  ASSERT_EQ(cancel.status, 200) << cancel.raw;
  EXPECT_TRUE(cancel.body["cancel_requested"].get<bool>());
  auto told = agent.progress(id, "still going");
  ASSERT_EQ(told.status, 200);
  EXPECT_TRUE(told.body["cancel_requested"].get<bool>());
  auto polled = agent.poll(0);
  EXPECT_EQ(polled.body["cancel"], json::array({id})) << polled.raw;
  ASSERT_EQ(agent.finish(id, "canceled").status, 200);
  EXPECT_EQ(state_of(id),
            (std::pair<std::string, std::string>{"canceled", "canceled_by_user"}));

  auto fin = agent.finish(id, "success", 0, "late");
  EXPECT_EQ(fin.status, 409) << fin.raw;
  EXPECT_EQ(fin.body["error"]["code"], "illegal_transition");
  EXPECT_EQ(agent.start(id).status, 409);
  auto again = call("POST", "/v1/runs/" + id + "/cancel", admin);
  EXPECT_EQ(again.status, 409) << again.raw;
  auto run = get_run(id);
  EXPECT_EQ(run["status"], "canceled");
  EXPECT_EQ(run["skadi_status"], "canceled");
  EXPECT_EQ(run["result"], "");
  // Late log chunks (a retried upload) are kept but change nothing else.
  auto logs = agent.logs(id, 0, "late\n");
  EXPECT_EQ(logs.status, 200) << logs.raw;
  EXPECT_EQ(get_run(id), run);
  EXPECT_EQ(call("GET", "/v1/runs/" + id + "/logs", admin).body["chunks"].size(), 1u);
}

// This test ensures cancelling a finished run is 409 and leaves its outcome
// untouched.
TEST_F(runs, cancel_of_a_finished_run_is_409_and_changes_nothing) {
  auto agent = register_agent("worker", json::object());
  auto id = id_of(submit(json{{"plan", "noop"}}));
  ASSERT_EQ(agent.take(1).size(), 1u);
  ASSERT_EQ(agent.start(id).status, 200);
  ASSERT_EQ(agent.finish(id, "error", 3, "boom").status, 200);
  auto before = get_run(id);
  auto r = call("POST", "/v1/runs/" + id + "/cancel", make_token("submitter"));
  EXPECT_EQ(r.status, 409) << r.raw;
  EXPECT_EQ(r.body["error"]["code"], "illegal_transition");
  auto after = get_run(id);
  EXPECT_EQ(after, before);
  EXPECT_EQ(after["status"], "error");
  EXPECT_EQ(after["reason"], "plan_failed");
  EXPECT_EQ(after["exit_code"], 3);
}

// This test ensures a page of a run's log ends at about 1 MiB of data
// whatever `limit` asks (10,000 chunks of 64 KiB were 640 MiB held by one
// request: 24 readers of four 4 MiB logs grew meshd to 619 MB), and that
// following `next_after` while `more` says so reads the whole log once, in
// order, and the page that ends it says so.
TEST_F(runs, a_log_page_ends_at_one_mebibyte_and_paging_reads_it_all) {
  auto agent = register_agent("talker", json::object());
  auto id = id_of(submit(json{{"plan", "noop"}}));
  ASSERT_EQ(agent.take(1).size(), 1u);
  ASSERT_EQ(agent.start(id).status, 200);
  const int chunks = 40;
  for (int i = 0; i < chunks; ++i)
    ASSERT_EQ(
        agent.logs(id, i, std::string(60 * 1024, static_cast<char>('a' + i % 26))).status,
        200);
  std::vector<int64_t> seqs;
  int64_t after = -1;
  auto page_after = [&](int64_t a) {
    return call("GET", "/v1/runs/" + id + "/logs?limit=10000&after=" + std::to_string(a),
                admin);
  };
  for (int pages = 0;; ++pages) {
    ASSERT_LT(pages, chunks);
    auto r = page_after(after);
    ASSERT_EQ(r.status, 200) << r.raw.substr(0, 200);
    auto& page = r.body["chunks"];
    ASSERT_FALSE(page.empty()) << "page after " << after;
    size_t bytes = 0;
    for (auto& c : page) {
      seqs.push_back(c["seq"].get<int64_t>());
      bytes += c["data"].get<std::string>().size();
    }
    EXPECT_LT(bytes, 1024 * 1024 + 60 * 1024) << "page after " << after;
    EXPECT_EQ(r.body["next_after"], seqs.back());
    after = seqs.back();
    if (!r.body["more"].get<bool>()) break;
  }
  auto end = page_after(after);
  ASSERT_EQ(end.status, 200);
  EXPECT_TRUE(end.body["chunks"].empty());
  EXPECT_EQ(end.body["more"], false);
  EXPECT_EQ(end.body["next_after"], after);
  ASSERT_EQ(seqs.size(), static_cast<size_t>(chunks));
  for (int i = 0; i < chunks; ++i)
    EXPECT_EQ(seqs[i], i);
}

// This test ensures a created run is canceled at once by the user, and a
// starting agent is refused afterwards.
TEST_F(runs, cancel_of_a_created_run_ends_it_at_once) {
  auto id = id_of(submit(json{{"plan", "noop"}}));
  auto r = call("POST", "/v1/runs/" + id + "/cancel", admin);
  ASSERT_EQ(r.status, 200) << r.raw;
  EXPECT_EQ(r.body["status"], "canceled");
  EXPECT_EQ(r.body["reason"], "canceled_by_user");
  EXPECT_FALSE(r.body["finished_at"].is_null());
  // No agent receives it later.
  auto agent = register_agent("late", json::object());
  auto polled = agent.poll(1);
  EXPECT_TRUE(polled.body["runs"].empty()) << polled.raw;
}

// This test ensures a repeated cancel of a running run answers the run
// unchanged at once (it used to wait 30 s for an answer that never came and
// then say 503), and the agent is told of the cancel once.
TEST_F(runs, repeated_cancel_of_a_running_run_answers_it_unchanged) {
  auto agent = register_agent("canceled-twice", json::object());
  auto id = id_of(submit(json{{"plan", "noop"}}));
  ASSERT_EQ(agent.take(1).size(), 1u);
  ASSERT_EQ(agent.start(id).status, 200);
  auto first = call("POST", "/v1/runs/" + id + "/cancel", admin);
  ASSERT_EQ(first.status, 200) << first.raw;
  EXPECT_EQ(first.body["cancel_requested"], true);
  for (int i = 0; i < 2; ++i) {
    auto again = call("POST", "/v1/runs/" + id + "/cancel", admin);
    ASSERT_EQ(again.status, 200) << again.raw;
    EXPECT_EQ(again.body, first.body);
  }
  EXPECT_EQ(get_run(id)["status"], "running");
}

// This test ensures log chunks are ordered by sequence, repeats are
// ignored, and `after` pages through them.
TEST_F(runs, logs_are_ordered_and_repeats_ignored) {
  auto agent = register_agent("logger", json::object());
  auto id = id_of(submit(json{{"plan", "noop"}}));
  ASSERT_EQ(agent.take(1).size(), 1u);
  ASSERT_EQ(agent.start(id).status, 200);
  ASSERT_EQ(agent.logs(id, 1, "b").status, 200);
  ASSERT_EQ(agent.logs(id, 0, "a").status, 200);
  ASSERT_EQ(agent.logs(id, 1, "b-again").status, 200);
  ASSERT_EQ(agent.logs(id, 2, "c").status, 200);
  auto all = call("GET", "/v1/runs/" + id + "/logs", admin);
  ASSERT_EQ(all.status, 200);
  ASSERT_EQ(all.body["chunks"].size(), 3u) << all.raw;
  EXPECT_EQ(all.body["chunks"][0]["data"], "a");
  EXPECT_EQ(all.body["chunks"][1]["data"], "b");
  EXPECT_EQ(all.body["chunks"][2]["data"], "c");
  EXPECT_EQ(all.body["more"], false);
  auto tail =
      call("GET", "/v1/runs/" + id + "/logs?after=0&limit=1", make_token("reader"));
  ASSERT_EQ(tail.status, 200) << tail.raw;
  ASSERT_EQ(tail.body["chunks"].size(), 1u);
  EXPECT_EQ(tail.body["chunks"][0]["seq"], 1);
  EXPECT_EQ(tail.body["next_after"], 1);
  EXPECT_EQ(tail.body["more"], true); // seq 2 follows
}

class log_ceiling : public mesh_fixture {
protected:
  void configure(mesh_config& c) override { c.max_log_bytes = 10; }

  /// The stored log of `id`, concatenated.
  std::string stored_log(const std::string& id) {
    auto r = call("GET", "/v1/runs/" + id + "/logs", admin);
    EXPECT_EQ(r.status, 200) << r.raw;
    std::string text;
    for (auto& chunk : r.body["chunks"])
      text += chunk["data"].get<std::string>();
    return text;
  }
};

// This test ensures a run's log stops at runs.max_log_bytes: a request that
// would pass it is a 413 naming the setting and stores nothing, a repeated
// chunk is not counted twice (nor refused at the limit: it adds nothing),
// and the count survives a restart and the run's end (late chunks).
TEST_F(log_ceiling, a_log_past_the_ceiling_is_refused_and_stores_nothing) {
  auto agent = register_agent("logger", json::object());
  auto id = id_of(submit(json{{"plan", "noop"}}));
  ASSERT_EQ(agent.take(1).size(), 1u);
  ASSERT_EQ(agent.start(id).status, 200);
  ASSERT_EQ(agent.logs(id, 0, "1234").status, 200);
  ASSERT_EQ(agent.logs(id, 0, "1234").status, 200); // a retry: already stored
  auto over = agent.logs(id, 1, "1234567");         // 4 + 7 > 10
  EXPECT_EQ(over.status, 413) << over.raw;
  EXPECT_EQ(over.body["error"]["code"], "payload_too_large") << over.raw;
  EXPECT_EQ(over.body["error"]["field"], "chunks") << over.raw;
  EXPECT_NE(over.raw.find("runs.max_log_bytes"), std::string::npos) << over.raw;
  EXPECT_EQ(stored_log(id), "1234");
  ASSERT_EQ(agent.logs(id, 1, "5678").status, 200); // 8 of 10

  restart_mesh();
  agent.port = port;
  // The restored run learns what its log holds from the store.
  EXPECT_EQ(agent.logs(id, 2, "abc").status, 413);
  ASSERT_EQ(agent.logs(id, 2, "ab").status, 200); // exactly 10
  EXPECT_EQ(agent.logs(id, 3, "c").status, 413);
  // A retried upload at the limit adds nothing, so it is not refused.
  EXPECT_EQ(agent.logs(id, 2, "ab").status, 200);
  auto retried = call(
      "POST", "/v1/runs/" + id + "/logs", agent.token,
      json{{"chunks", {{{"seq", 0}, {"data", "1234"}}, {{"seq", 1}, {"data", "5678"}}}}});
  EXPECT_EQ(retried.status, 200) << retried.raw;
  ASSERT_EQ(agent.finish(id, "success").status, 200);
  // Late chunks of the finished run meet the same ceiling.
  EXPECT_EQ(agent.logs(id, 3, "c").status, 413);
  EXPECT_EQ(agent.logs(id, 1, "5678").status, 200); // a late retry
  EXPECT_EQ(stored_log(id), "12345678ab");
  EXPECT_EQ(get_run(id)["status"], "success");
}

// This test ensures uploads at once to a finished run keep to its log's
// ceiling, and retries at once of a chunk it holds are all answered 200
// (each upload was checked against what was stored, not what the others
// were storing: 10 bytes got past a 10-byte ceiling, and a retry that
// overlapped its original was a 413 though the chunk was stored).
TEST_F(log_ceiling, late_uploads_at_once_keep_to_the_ceiling) {
  auto agent = register_agent("logger", json::object());
  auto id = id_of(submit(json{{"plan", "noop"}}));
  ASSERT_EQ(agent.take(1).size(), 1u);
  ASSERT_EQ(agent.start(id).status, 200);
  ASSERT_EQ(agent.finish(id, "success").status, 200);
  std::vector<int> status(12);
  // Six uploads of seq 0 (an upload and its retries), and six of their own.
  auto seq_of = [](size_t i) {
    return i % 2 == 0 ? int64_t{0} : static_cast<int64_t>(i);
  };
  std::vector<std::thread> uploads;
  for (size_t i = 0; i < status.size(); ++i)
    uploads.emplace_back(
        [&, i] { status[i] = agent.logs(id, seq_of(i), "123456").status; });
  for (auto& t : uploads)
    t.join();
  // One chunk of 6 bytes is stored, whichever came first: a second would
  // pass 10. Every upload of that seq is answered 200, every other one 413.
  auto log = call("GET", "/v1/runs/" + id + "/logs", admin);
  ASSERT_EQ(log.body["chunks"].size(), 1u) << log.raw;
  auto stored = log.body["chunks"][0]["seq"].get<int64_t>();
  for (size_t i = 0; i < status.size(); ++i) {
    SCOPED_TRACE(i);
    EXPECT_EQ(status[i], seq_of(i) == stored ? 200 : 413);
  }
}

// This test ensures the mesh tells agents its limits when they register
// and in every poll answer (a poll and a report that polls), so that an
// agent still connected across a restart learns new ones.
TEST_F(log_ceiling, registration_and_polls_tell_the_agent_the_limits) {
  auto reg = call("POST", "/v1/agents/register", make_token("registration"),
                  json{{"name", "told"}, {"plans", json::array({"noop"})}});
  ASSERT_EQ(reg.status, 201) << reg.raw;
  EXPECT_EQ(reg.body["max_log_bytes"], 10) << reg.raw;
  auto agent = register_agent("polled", json::object());
  json limits{{"max_body_bytes", cfg.max_body_bytes},
              {"max_result_bytes", cfg.max_result_bytes},
              {"max_log_bytes", 10}};
  EXPECT_EQ(agent.poll(0).body["limits"], limits);
  EXPECT_EQ(agent.report(json::object(), 0).body["limits"], limits);
  EXPECT_FALSE(agent.report(json::object(), -1).body.contains("limits"));
}

// This test ensures GET /v1/runs filters by status, plan and agent, and
// the cursor pages through every run exactly once, newest first.
TEST_F(runs, list_filters_and_cursor_pagination) {
  std::vector<std::string> ids;
  for (int i = 0; i < 7; ++i) {
    auto r = submit(json{{"plan", i < 5 ? "build" : "deploy"}});
    ASSERT_EQ(r.status, 201);
    ids.push_back(id_of(r));
  }
  auto agent = register_agent("deployer", json::object(), json::array({"deploy"}), 4);
  ASSERT_EQ(agent.take(2).size(), 2u);
  ASSERT_EQ(agent.start(ids[5]).status, 200);

  std::vector<std::string> seen;
  std::string cursor;
  int pages = 0;
  do {
    auto path = "/v1/runs?limit=3" + (cursor.empty() ? "" : "&cursor=" + cursor);
    auto page = call("GET", path, admin);
    ASSERT_EQ(page.status, 200) << page.raw;
    ASSERT_LE(page.body["runs"].size(), 3u);
    for (auto& r : page.body["runs"])
      seen.push_back(r["id"].get<std::string>());
    cursor = page.body["next_cursor"].is_string()
                 ? page.body["next_cursor"].get<std::string>()
                 : std::string{};
    ASSERT_LT(++pages, 10);
  } while (!cursor.empty());
  std::vector<std::string> newest_first(ids.rbegin(), ids.rend());
  EXPECT_EQ(seen, newest_first);

  auto deploy = call("GET", "/v1/runs?plan=deploy", admin);
  ASSERT_EQ(deploy.body["runs"].size(), 2u);
  EXPECT_EQ(deploy.body["runs"][0]["id"], ids[6]);
  auto created = call("GET", "/v1/runs?status=created", admin);
  EXPECT_EQ(created.body["runs"].size(), 5u);
  auto running = call("GET", "/v1/runs?status=running", admin);
  ASSERT_EQ(running.body["runs"].size(), 1u);
  EXPECT_EQ(running.body["runs"][0]["id"], ids[5]);
  auto mine = call("GET", "/v1/runs?agent=" + agent.id, admin);
  EXPECT_EQ(mine.body["runs"].size(), 2u);
  auto by_name = call("GET", "/v1/runs?agent=" + agent.name, admin);
  EXPECT_EQ(by_name.body["runs"], mine.body["runs"]) << "an agent's name filters too";
  auto both = call("GET", "/v1/runs?plan=build&status=running", admin);
  EXPECT_TRUE(both.body["runs"].empty());
  auto none = call("GET", "/v1/runs?agent=nobody", admin);
  EXPECT_TRUE(none.body["runs"].empty());
  EXPECT_TRUE(none.body["next_cursor"].is_null());
  for (auto q : {"agent=-bad", "agent=", "plan=.x"}) {
    auto bad = call("GET", std::string{"/v1/runs?"} + q, admin);
    EXPECT_EQ(bad.status, 400) << q << ": " << bad.raw;
  }
}

// This test ensures every field the contract lists is present in run JSON.
TEST_F(runs, run_json_carries_every_contract_field) {
  auto r = submit(json{{"plan", "noop"},
                       {"selector", "env in (dev, qa)"},
                       {"params", {{"n", 1}}},
                       {"payload", "p"},
                       {"priority", 7},
                       {"timeout_s", 60},
                       {"ttl_s", 120}});
  ASSERT_EQ(r.status, 201) << r.raw;
  for (auto* key :
       {"id", "plan", "selector", "target_agent", "assigned_agent", "params", "payload",
        "priority", "status", "skadi_status", "reason", "exit_code", "result", "attempts",
        "created_at", "assigned_at", "delivered_at", "started_at", "finished_at"})
    EXPECT_TRUE(r.body.contains(key)) << key;
  EXPECT_EQ(r.body["params"], (json{{"n", 1}}));
  EXPECT_EQ(r.body["priority"], 7);
  EXPECT_EQ(r.body["status"], "created");
  EXPECT_EQ(r.body["skadi_status"], "queuing");
  EXPECT_EQ(get_run(id_of(r)), r.body);
}

// -- batch submit -------------------------------------------------------------

json batch_of(std::initializer_list<json> runs) {
  return json{{"runs", json(runs)}};
}

// This test ensures a batch creates every run, answers them in order, and
// agents receive them like single submits.
TEST_F(runs, batch_creates_every_run_in_order) {
  auto agent = register_agent("worker", json::object(), json::array({"noop"}), 3);
  auto r = call("POST", "/v1/runs/batch", admin,
                batch_of({{{"plan", "noop"}, {"payload", "a"}},
                          {{"plan", "noop"}, {"payload", "b"}, {"priority", 5}},
                          {{"plan", "noop"}, {"payload", "c"}}}));
  ASSERT_EQ(r.status, 201) << r.raw;
  auto& results = r.body["results"];
  ASSERT_EQ(results.size(), 3u);
  std::set<std::string> ids;
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_TRUE(results[i]["created"].get<bool>());
    EXPECT_EQ(results[i]["run"]["payload"], std::string(1, static_cast<char>('a' + i)));
    auto id = results[i]["run"]["id"].get<std::string>();
    ids.insert(id);
    EXPECT_EQ(get_run(id)["status"].is_string(), true);
  }
  EXPECT_EQ(results[1]["run"]["priority"], 5);
  // Listed newest first: the batch's order is the queue's order.
  auto listed = call("GET", "/v1/runs", admin).body["runs"];
  ASSERT_EQ(listed.size(), 3u);
  for (size_t i = 0; i < 3; ++i)
    EXPECT_EQ(listed[2 - i]["id"], results[i]["run"]["id"]);
  auto taken = agent.take(3);
  ASSERT_EQ(taken.size(), 3u);
  for (auto& run : taken)
    EXPECT_EQ(ids.count(run["id"].get<std::string>()), 1u);
}

// This test ensures a key taken by a run of another scope is a conflict, not
// that run: a dev-scoped token submitting `deploy-v1-prod` first used to make
// the prod submit (single or batch) answer 200 with the dev run, succeeded.
TEST_F(runs, idempotency_key_of_another_scope_is_a_conflict) {
  auto dev = make_token("submitter", "env=dev");
  auto squat = submit(json{{"plan", "noop"}, {"idempotency_key", "deploy-v1-prod"}}, dev);
  ASSERT_EQ(squat.status, 201) << squat.raw;
  auto single = submit(json{{"plan", "noop"}, {"idempotency_key", "deploy-v1-prod"}});
  EXPECT_EQ(single.status, 409) << single.raw;
  EXPECT_EQ(single.body["error"]["field"], "idempotency_key");
  auto batch = call("POST", "/v1/runs/batch", admin,
                    batch_of({{{"plan", "noop"}, {"idempotency_key", "deploy-v1-prod"}},
                              {{"plan", "noop"}, {"idempotency_key", "other"}}}));
  ASSERT_EQ(batch.status, 201) << batch.raw;
  auto& res = batch.body["results"];
  EXPECT_FALSE(res[0]["created"].get<bool>());
  EXPECT_EQ(res[0]["error"]["code"], "conflict") << batch.raw;
  EXPECT_FALSE(res[0].contains("run"));
  EXPECT_TRUE(res[1]["created"].get<bool>());
  // Nothing created at all (the one item refused) is a 200, as api.md says.
  auto refused_only =
      call("POST", "/v1/runs/batch", admin,
           batch_of({{{"plan", "noop"}, {"idempotency_key", "deploy-v1-prod"}}}));
  EXPECT_EQ(refused_only.status, 200) << refused_only.raw;
  EXPECT_EQ(refused_only.body["results"][0]["error"]["code"], "conflict");
  // The same scope still gets its own run back.
  auto repeat =
      submit(json{{"plan", "noop"}, {"idempotency_key", "deploy-v1-prod"}}, dev);
  EXPECT_EQ(repeat.status, 200) << repeat.raw;
  EXPECT_EQ(repeat.body["id"], squat.body["id"]);
}

// This test ensures idempotency keys hold inside a batch and across calls:
// a repeat answers with the run holding the key, and all repeats are 200.
TEST_F(runs, batch_honours_idempotency_keys) {
  auto first = submit(json{{"plan", "noop"}, {"idempotency_key", "k1"}});
  ASSERT_EQ(first.status, 201);
  auto r = call("POST", "/v1/runs/batch", admin,
                batch_of({{{"plan", "noop"}, {"idempotency_key", "k1"}},
                          {{"plan", "noop"}, {"idempotency_key", "k2"}},
                          {{"plan", "noop"}, {"idempotency_key", "k2"}}}));
  ASSERT_EQ(r.status, 201) << r.raw;
  auto& res = r.body["results"];
  EXPECT_FALSE(res[0]["created"].get<bool>());
  EXPECT_EQ(res[0]["run"]["id"], first.body["id"]);
  EXPECT_TRUE(res[1]["created"].get<bool>());
  EXPECT_FALSE(res[2]["created"].get<bool>());
  EXPECT_EQ(res[2]["run"]["id"], res[1]["run"]["id"]);

  auto again = call("POST", "/v1/runs/batch", admin,
                    batch_of({{{"plan", "noop"}, {"idempotency_key", "k2"}}}));
  EXPECT_EQ(again.status, 200) << again.raw;
  EXPECT_EQ(again.body["results"][0]["run"]["id"], res[1]["run"]["id"]);
  EXPECT_EQ(call("GET", "/v1/runs", admin).body["runs"].size(), 2u);
}

// This test ensures `Prefer: return=minimal` answers each run with its id
// and status only (and says so in Preference-Applied), while the runs are
// created whole; without it, or with another preference, answers are full.
TEST_F(runs, batch_with_prefer_return_minimal_answers_ids_only) {
  httplib::Client cli{"127.0.0.1", port};
  auto body = batch_of({{{"plan", "noop"}, {"payload", "a"}, {"idempotency_key", "m1"}},
                        {{"plan", "noop"}, {"payload", "b"}}})
                  .dump();
  auto post = [&](const char* prefer) {
    httplib::Headers h{{"Authorization", "Bearer " + admin}};
    if (prefer) h.emplace("Prefer", prefer);
    auto res = cli.Post("/v1/runs/batch", h, body, "application/json");
    EXPECT_TRUE(res);
    return res;
  };
  auto res = post("respond-async, Return=Minimal; x=1");
  ASSERT_EQ(res->status, 201) << res->body;
  EXPECT_EQ(res->get_header_value("Preference-Applied"), "return=minimal");
  auto results = json::parse(res->body)["results"];
  ASSERT_EQ(results.size(), 2u);
  for (auto& r : results) {
    EXPECT_TRUE(r["created"].get<bool>());
    EXPECT_EQ(r["run"].size(), 2u) << r.dump(); // id and status
    EXPECT_EQ(r["run"]["status"], "created");
    auto full = get_run(r["run"]["id"].get<std::string>());
    EXPECT_EQ(full["plan"], "noop");
    EXPECT_EQ(full["status"], "created");
  }
  EXPECT_EQ(get_run(results[1]["run"]["id"].get<std::string>())["payload"], "b");
  // The repeat of the keyed run names the run holding the key, minimally too.
  auto again = post("return=\"minimal\"");
  auto repeat = json::parse(again->body)["results"];
  EXPECT_FALSE(repeat[0]["created"].get<bool>());
  EXPECT_EQ(repeat[0]["run"]["id"], results[0]["run"]["id"]);
  // RFC 7240 allows blanks around the `=`.
  for (const char* spaced : {"return = minimal", "wait=1, return =\t\"minimal\";x=y"}) {
    auto r = post(spaced);
    ASSERT_EQ(r->status, 201) << r->body;
    EXPECT_EQ(r->get_header_value("Preference-Applied"), "return=minimal") << spaced;
  }
  for (const char* other :
       {"return=representation", "return=minimalist", "returns=minimal", "return"}) {
    auto full = post(other);
    ASSERT_EQ(full->status, 201) << full->body;
    EXPECT_FALSE(full->has_header("Preference-Applied"));
    EXPECT_EQ(json::parse(full->body)["results"][1]["run"]["payload"], "b");
  }
  auto plain = post(nullptr);
  EXPECT_EQ(json::parse(plain->body)["results"][1]["run"]["payload"], "b");
}

// This test ensures one bad run refuses the whole batch, naming the item,
// and creates nothing.
TEST_F(runs, batch_with_one_bad_run_is_400_naming_it_and_creates_nothing) {
  auto bad_plan = call("POST", "/v1/runs/batch", admin,
                       batch_of({{{"plan", "noop"}}, {{"plan", "bad plan!"}}}));
  EXPECT_EQ(bad_plan.status, 400) << bad_plan.raw;
  EXPECT_EQ(bad_plan.body["error"]["field"], "runs[1].plan");

  auto bad_selector = call("POST", "/v1/runs/batch", admin,
                           batch_of({{{"plan", "noop"}, {"selector", "env in (a"}}}));
  EXPECT_EQ(bad_selector.status, 400) << bad_selector.raw;
  EXPECT_EQ(bad_selector.body["error"]["field"], "runs[0].selector");
  EXPECT_TRUE(bad_selector.body["error"].contains("position")) << bad_selector.raw;

  auto unknown = call("POST", "/v1/runs/batch", admin,
                      batch_of({{{"plan", "noop"}, {"colour", "red"}}}));
  EXPECT_EQ(unknown.status, 400) << unknown.raw;
  EXPECT_EQ(unknown.body["error"]["field"], "runs[0].colour");

  auto no_agent =
      call("POST", "/v1/runs/batch", admin,
           batch_of({{{"plan", "noop"}}, {{"plan", "noop"}, {"agent", "ghost"}}}));
  EXPECT_EQ(no_agent.status, 404) << no_agent.raw;
  EXPECT_EQ(no_agent.body["error"]["field"], "runs[1].agent");

  EXPECT_EQ(call("POST", "/v1/runs/batch", admin, json{{"runs", json::array()}}).status,
            400);
  EXPECT_EQ(call("POST", "/v1/runs/batch", admin, json{{"runs", "noop"}}).status, 400);
  EXPECT_EQ(call("POST", "/v1/runs/batch", admin, batch_of({"noop"})).status, 400);
  json many = json::array();
  for (int i = 0; i < 1001; ++i)
    many.push_back(json{{"plan", "noop"}});
  auto too_many = call("POST", "/v1/runs/batch", admin, json{{"runs", many}});
  EXPECT_EQ(too_many.status, 400) << too_many.raw;
  EXPECT_EQ(too_many.body["error"]["field"], "runs");
  EXPECT_EQ(
      call("POST", "/v1/runs/batch", make_token("reader"), batch_of({{{"plan", "noop"}}}))
          .status,
      403);

  EXPECT_EQ(call("GET", "/v1/runs", admin).body["runs"], json::array());
}

// This test ensures batched runs are durable: after a restart they are
// there and an agent registered afterwards receives them.
TEST_F(runs, batched_runs_survive_a_restart) {
  auto r = call("POST", "/v1/runs/batch", admin,
                batch_of({{{"plan", "noop"}}, {{"plan", "noop"}}}));
  ASSERT_EQ(r.status, 201) << r.raw;
  restart_mesh();
  auto agent = register_agent("late", json::object(), json::array({"noop"}), 2);
  auto taken = agent.take(2);
  ASSERT_EQ(taken.size(), 2u);
  for (auto& run : taken) {
    ASSERT_EQ(agent.start(run["id"]).status, 200);
    ASSERT_EQ(agent.finish(run["id"], "success").status, 200);
  }
  EXPECT_EQ(get_run(r.body["results"][0]["run"]["id"])["status"], "success");
  EXPECT_EQ(get_run(r.body["results"][1]["run"]["id"])["status"], "success");
}

} // namespace
} // namespace polymesh::test
