// The store actor: a write it has taken in is answered even when it is told
// to exit before its commit (shutdown under load).
#include "mesh/actors/messages.hpp"
#include "mesh/actors/store_actor.hpp"
#include "mesh/domain/error.hpp"

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
  std::vector<std::string> committed;

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
    return committed;
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
    for (auto& w : batch)
      g.committed.push_back(std::get<put_run>(w).run.id);
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
  caf::expected<std::optional<artifact_blob>> get_artifact(const std::string&,
                                                           const std::string&) override {
    return unused();
  }
  caf::expected<std::optional<agent_record>> get_agent(const std::string&) override {
    return unused();
  }
  caf::expected<std::vector<agent_record>> list_agents() override { return unused(); }
  caf::expected<std::vector<token_record>> list_tokens() override { return unused(); }
  caf::expected<size_t> prune(timestamp, size_t) override { return unused(); }
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

// This test ensures a write the store actor took in just before it was told
// to exit is committed and answered. Its commit was queued behind the exit
// (a `flush` to itself), and CAF 0.17 drops an unanswered promise without a
// word: the run actor that asked, and with it meshd's shutdown, waited for
// ever.
TEST(store_actor, a_write_taken_in_before_an_exit_is_committed_and_answered) {
  caf::actor_system_config cfg;
  caf::actor_system sys{cfg};
  auto ctx = std::make_shared<mesh_context>();
  auto gate = std::make_shared<commit_gate>();
  auto store = spawn_store_actor(sys, ctx, std::make_unique<gated_store>(gate), 4096);
  caf::scoped_actor self{sys};

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

} // namespace
} // namespace polymesh
