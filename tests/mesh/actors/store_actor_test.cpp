// The store actor: a write it has taken in is answered even when it is told
// to exit before its commit (shutdown under load); it records that meshd
// runs (at start, every 10 s of a busy or an idle store, and at exit).
#include "mesh/actors/messages.hpp"
#include "mesh/actors/store_actor.hpp"
#include "mesh/domain/clock.hpp"
#include "mesh/domain/error.hpp"
#include "mesh/domain/log.hpp"

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/scoped_actor.hpp>
#include <caf/send.hpp>
#include <condition_variable>
#include <gtest/gtest.h>
#include <mutex>

namespace polymesh {
namespace {

/// Where the test holds a store's commits, and what they committed. Shared:
/// the store actor deletes its store when it quits.
struct commit_gate {
  std::mutex mtx;
  std::condition_variable cv;
  bool closed = false;
  bool held = false;
  /// What each commit held, in order: run ids, and "alive@<unix ms>" for a
  /// `stamp_alive`.
  std::vector<std::string> committed;
  /// What the next `prune` answers.
  caf::expected<size_t> prune_answer{size_t{0}};
  /// A commit that holds a `stamp_alive` fails (a full disk).
  bool stamps_fail = false;

  /// The next commit waits inside `apply` until `open`.
  void close() {
    std::lock_guard<std::mutex> guard{mtx};
    closed = true;
  }
  void open() {
    std::lock_guard<std::mutex> guard{mtx};
    closed = false;
    cv.notify_all();
  }
  /// Waits until a commit is held at the closed gate.
  void wait_until_held() {
    std::unique_lock<std::mutex> lock{mtx};
    cv.wait(lock, [this] { return held; });
  }
  std::vector<std::string> runs_committed() {
    std::lock_guard<std::mutex> guard{mtx};
    std::vector<std::string> runs;
    for (auto& c : committed)
      if (c.rfind("alive@", 0) != 0) runs.push_back(c);
    return runs;
  }
  std::vector<std::string> all_committed() {
    std::lock_guard<std::mutex> guard{mtx};
    return committed;
  }
  /// Waits until `n` commits went through.
  void wait_until_committed(size_t n) {
    std::unique_lock<std::mutex> lock{mtx};
    cv.wait(lock, [&] { return committed.size() >= n; });
  }
};

/// A store whose commits pass a `commit_gate`; it keeps only the ids of the
/// runs it committed and answers nothing else.
class gated_store final : public store {
public:
  explicit gated_store(std::shared_ptr<commit_gate> gate)
      : gate_(std::move(gate)) {}

  caf::expected<std::vector<write_outcome>>
  apply(const std::vector<write>& batch) override {
    auto& g = *gate_;
    std::unique_lock<std::mutex> lock{g.mtx};
    g.held = g.closed;
    g.cv.notify_all();
    g.cv.wait(lock, [&g] { return !g.closed; });
    g.held = false;
    if (g.stamps_fail)
      for (auto& w : batch)
        if (std::holds_alternative<stamp_alive>(w))
          return make_error(errc::store_failure, "database or disk is full");
    for (auto& w : batch)
      if (auto* stamp = std::get_if<stamp_alive>(&w))
        g.committed.push_back("alive@" + std::to_string(to_unix_ms(stamp->at)));
      else
        g.committed.push_back(std::get<put_run>(w).run.id);
    g.cv.notify_all();
    return std::vector<write_outcome>(batch.size());
  }
  caf::expected<snapshot> load(timestamp) override { return unused(); }
  caf::expected<std::optional<run_record>> get_run(const std::string&) override {
    return unused();
  }
  caf::expected<run_page> list_runs(const run_filter&) override { return unused(); }
  caf::expected<int64_t> log_bytes(const std::string&) override { return unused(); }
  caf::expected<std::vector<int64_t>>
  stored_log_seqs(const std::string&, const std::vector<int64_t>&) override {
    return unused();
  }
  caf::expected<log_page> logs(const std::string&, int64_t, size_t, size_t) override {
    return unused();
  }
  caf::expected<std::vector<artifact_record>>
  list_artifacts(const std::string&) override {
    return unused();
  }
  caf::expected<std::optional<artifact_blob>>
  get_artifact(const std::string&, const std::string&, int64_t, size_t) override {
    return unused();
  }
  caf::expected<std::optional<agent_record>> get_agent(const std::string&) override {
    return unused();
  }
  caf::expected<std::vector<agent_record>> list_agents() override { return unused(); }
  caf::expected<std::vector<token_record>> list_tokens() override { return unused(); }
  caf::expected<size_t> prune(timestamp, size_t) override {
    std::lock_guard<std::mutex> guard{gate_->mtx};
    return gate_->prune_answer;
  }
  caf::expected<std::vector<std::pair<run_status, int64_t>>> count_runs() override {
    return unused();
  }

private:
  static caf::error unused() {
    return make_error(errc::internal, "not used by the store actor's tests");
  }
  std::shared_ptr<commit_gate> gate_;
};

write_batch put(const std::string& id) {
  run_record run;
  run.id = id;
  return write_batch{put_run{run, true}};
}

std::string alive_at(timestamp t) {
  return "alive@" + std::to_string(to_unix_ms(t));
}

/// A store actor over a `gated_store`, and an actor to ask it; it has made
/// its first stamp.
class store_actor_test : public ::testing::Test {
protected:
  void SetUp() override { gate->wait_until_committed(1); }
  // The store actor keeps itself alive with its stamp timer until told to
  // exit, as meshd's shutdown does.
  void TearDown() override {
    self->send_exit(store, caf::exit_reason::user_shutdown);
    self->wait_for(store);
  }

  /// Asks the store actor for a prune that the store answers `answer`.
  void prune(caf::expected<size_t> answer) {
    {
      std::lock_guard<std::mutex> guard{gate->mtx};
      gate->prune_answer = std::move(answer);
    }
    self->request(store, std::chrono::seconds{10}, prune_atom::value, timestamp{},
                  size_t{10})
        .receive([](size_t) {}, [](caf::error&) {});
  }

  manual_clock clock;
  caf::actor_system_config cfg;
  caf::actor_system sys{cfg};
  std::shared_ptr<mesh_context> ctx = [this] {
    auto c = std::make_shared<mesh_context>();
    c->clock = &clock;
    return c;
  }();
  std::shared_ptr<commit_gate> gate = std::make_shared<commit_gate>();
  caf::actor store =
      spawn_store_actor(sys, ctx, std::make_unique<gated_store>(gate), 4096);
  caf::scoped_actor self{sys};
};

void write_now(caf::scoped_actor& self, const caf::actor& store, const std::string& id) {
  self->request(store, std::chrono::seconds{10}, write_atom::value, put(id))
      .receive([](write_outcomes&) {},
               [](caf::error& err) { FAIL() << caf::to_string(err); });
}

// This test ensures the store records that meshd runs: at start, with a
// commit it makes anyway once the last stamp is 10 s old (after the commit's
// own writes, whose outcomes stay theirs), and at exit, whose stamp is when
// meshd stopped. The next start honours agents' tokens that expired between
// the last stamp and then; without the stamps every expired token ended its
// agent's session and runs after an outage longer than agents.token_ttl.
TEST_F(store_actor_test, records_that_meshd_runs_at_start_every_10s_and_at_exit) {
  auto t0 = clock.now();
  write_now(self, store, "run_a");
  clock.advance(std::chrono::seconds{9});
  write_now(self, store, "run_b");
  clock.advance(std::chrono::seconds{1});
  write_now(self, store, "run_c");
  write_now(self, store, "run_d");
  clock.advance(std::chrono::seconds{5});
  self->send_exit(store, caf::exit_reason::user_shutdown);
  self->wait_for(store);
  EXPECT_EQ(gate->all_committed(),
            (std::vector<std::string>{alive_at(t0), "run_a", "run_b", "run_c",
                                      alive_at(t0 + std::chrono::seconds{10}), "run_d",
                                      alive_at(t0 + std::chrono::seconds{15})}));
}

/// The store is marked failing with `why`, and one failed commit is counted.
void expect_one_failed_commit(const mesh_context& ctx, const std::string& why) {
  EXPECT_NE(ctx.store_status.error().find(why), std::string::npos)
      << ctx.store_status.error();
  std::string rendered;
  ctx.metrics.render(rendered);
  EXPECT_NE(rendered.find("polymesh_store_commit_failures_total 1\n"), std::string::npos)
      << rendered;
}

// This test ensures a record that meshd runs which fails on its own (an
// idle mesh whose disk filled) marks the store failing and counts as a
// failed commit, as a failed prune does: an alert on the failure counter
// stayed silent while `/readyz` said 503.
TEST_F(store_actor_test, a_failed_stamp_counts_as_a_failed_commit) {
  {
    std::lock_guard<std::mutex> guard{gate->mtx};
    gate->stamps_fail = true;
  }
  self->send_exit(store, caf::exit_reason::user_shutdown);
  self->wait_for(store);
  expect_one_failed_commit(*ctx, "database or disk is full");
}

// This test ensures a write the store actor took in just before it was told
// to exit is committed and answered. Its commit was queued behind the exit
// (a `flush` to itself), and CAF 0.17 drops an unanswered promise without a
// word: the run actor that asked, and with it meshd's shutdown, waited for
// ever.
TEST_F(store_actor_test, a_write_taken_in_before_an_exit_is_committed_and_answered) {
  // The first write holds the store's thread inside its commit, so the
  // second write and then the exit queue up behind it, in that order.
  gate->close();
  auto first = self->request(store, caf::infinite, write_atom::value, put("run_a"));
  gate->wait_until_held();
  auto second =
      self->request(store, std::chrono::seconds{10}, write_atom::value, put("run_b"));
  caf::anon_send_exit(store, caf::exit_reason::user_shutdown);
  gate->open();

  std::string first_answer;
  first.receive([&](write_outcomes&) { first_answer = "committed"; },
                [&](caf::error& err) { first_answer = caf::to_string(err); });
  EXPECT_EQ(first_answer, "committed");
  std::string second_answer;
  second.receive([&](write_outcomes&) { second_answer = "committed"; },
                 [&](caf::error& err) { second_answer = caf::to_string(err); });
  EXPECT_EQ(second_answer, "committed");
  EXPECT_EQ(gate->runs_committed(), (std::vector<std::string>{"run_a", "run_b"}));
}

// This test ensures a prune that fails (retention on a full disk) marks the
// store failing, as a failed write does, so `/readyz` and
// `polymesh_store_healthy` show it on a mesh that takes no other write;
// one that deletes rows marks it healthy again, one that deletes nothing
// says nothing.
TEST_F(store_actor_test, a_failed_prune_marks_the_store_failing) {
  prune(make_error(errc::internal, "database or disk is full"));
  expect_one_failed_commit(*ctx, "database or disk is full");
  prune(size_t{0});
  EXPECT_NE(ctx->store_status.error(), "") << "deleting nothing wrote nothing";
  prune(size_t{3});
  EXPECT_EQ(ctx->store_status.error(), "");
}

// This test ensures failed commits reach meshd's log, without flooding it:
// the first of a run of failures with its cause, then at most one line a
// minute counting the failures since, and a line when commits succeed
// again. Before, a full disk answered 500s that no log line explained.
TEST_F(store_actor_test, failed_commits_are_logged_once_a_minute_and_their_end_too) {
  std::mutex mtx;
  std::vector<std::string> lines;
  set_log_handler([&](log_level level, const std::string& text) {
    std::lock_guard<std::mutex> guard{mtx};
    lines.push_back(std::string{to_string(level)} + " " + text);
  });
  auto full = [](const std::string& n) {
    return make_error(errc::store_failure, "database or disk is full " + n);
  };
  prune(full("(1)"));
  clock.advance(std::chrono::seconds{20});
  prune(full("(2)"));
  clock.advance(std::chrono::seconds{20});
  prune(full("(3)"));
  clock.advance(std::chrono::seconds{20});
  prune(full("(4)"));
  prune(size_t{2});
  prune(full("(5)"));
  set_log_handler({});
  EXPECT_EQ(lines,
            (std::vector<std::string>{
                "error store: a commit failed (writes are answered 500 store_failure, "
                "and /readyz 503, until one succeeds): database or disk is full (1)",
                "error store: 3 more commits failed (4 in a row), the last: database or "
                "disk is full (4)",
                "info store: commits succeed again, after 4 failed",
                "error store: a commit failed (writes are answered 500 store_failure, "
                "and /readyz 503, until one succeeds): database or disk is full (5)"}));
}

} // namespace
} // namespace polymesh
