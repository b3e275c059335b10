// The agent runtime against a fake mesh: a small cpp-httplib server speaking
// the agent side of the REST API, with knobs to fail calls the way a
// restarting or overloaded meshd would. Lets the retry, ordering, cancel and
// drain rules be checked without a real meshd (the integration tests do that).
#include "eventually.hpp"
#include "mesh/domain/clock.hpp"
#include "mesh/domain/error.hpp"
#include "mesh/domain/log.hpp"
#include "mesh/domain/run_state.hpp"
#include "mesh/wire/json.hpp"
#include "polymesh/sdk/agent.hpp"
#include "polymesh/sdk/log.hpp"
#include "polymesh/sdk/plan.hpp"
#include "polymesh/sdk/process.hpp"

#include <algorithm>
#include <condition_variable>
#include <fcntl.h>
#include <fstream>
#include <gtest/gtest.h>
#include <httplib.h>
#include <optional>
#include <set>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <thread>

using namespace polymesh::sdk;
using namespace std::chrono_literals;
using nlohmann::json;
using polymesh::sdk::test_support::eventually;

namespace {

class fake_mesh {
public:
  fake_mesh() {
    svr_.set_tcp_nodelay(true);
    svr_.Post("/v1/agents/register", [this](const httplib::Request& req,
                                            httplib::Response& res) {
      stall();
      std::lock_guard<std::mutex> g{mtx_};
      ++register_attempts_;
      if (register_garbage_ > 0) {
        --register_garbage_;
        res.status = 201;
        return res.set_content("<html>proxy says hi</html>", "text/html");
      }
      if (register_failures_ > 0) {
        --register_failures_;
        return reply(res, 503, json{{"error", {{"message", "starting"}}}});
      }
      if (req.get_header_value("Authorization") != "Bearer reg-token") {
        res.status = 401;
        res.set_content(R"({"error":{"code":"unauthenticated","message":"bad token"}})",
                        "application/json");
        return;
      }
      auto body = json::parse(req.body);
      if (refuse_instance_ && body.contains("instance"))
        return reply(res, 400,
                     json{{"error",
                           {{"code", "invalid_argument"},
                            {"field", "instance"},
                            {"message", "unknown field 'instance'"}}}});
      if (name_in_use_ > 0) {
        --name_in_use_;
        return reply(res, 409,
                     json{{"error",
                           {{"code", "name_in_use"},
                            {"field", "name"},
                            {"message", "an agent named 'unit-agent' is connected from "
                                        "another installation on host 'other'"}}}});
      }
      registrations_.push_back(std::move(body));
      ++session_;
      token_ = "tok-r" + std::to_string(registrations_.size());
      reply(res, 201, session_json());
    });
    svr_.Post("/v1/agents/a1/token",
              [this](const httplib::Request& req, httplib::Response& res) {
                if (!authorized(req, res)) return;
                stall();
                std::lock_guard<std::mutex> g{mtx_};
                ++refreshes_;
                token_ = "tok" + std::to_string(refreshes_);
                reply(res, 200, session_json());
              });
    svr_.Get(R"(/v1/agents/a1/runs)",
             [this](const httplib::Request& req, httplib::Response& res) {
               if (!authorized(req, res)) return;
               std::unique_lock<std::mutex> g{mtx_};
               ++polls_;
               poll_waits_.push_back(req.get_param_value("wait"));
               if (poll_failures_ > 0) {
                 // The answer's head goes out, then the connection breaks.
                 --poll_failures_;
                 res.set_content_provider(
                     16, "application/json",
                     [](size_t, size_t, httplib::DataSink&) { return false; });
                 return;
               }
               if (poll_refusals_ > 0) {
                 --poll_refusals_;
                 return reply(res, 503, json{{"error", {{"message", "no room"}}}});
               }
               auto ready = [this] {
                 return !pending_json().empty() || !cancels_.empty() || stopping_;
               };
               cv_.wait_for(g, 1s, ready);
               json body{{"runs", pending_json()}, {"cancel", cancels_}};
               body.update(poll_extra_);
               cancels_.clear();
               reply(res, 200, body);
             });
    svr_.Post(R"(/v1/runs/([^/]+)/start)",
              [this](const httplib::Request& req, httplib::Response& res) {
                if (!authorized(req, res)) return;
                std::lock_guard<std::mutex> g{mtx_};
                auto [status, body] = start_locked(req.matches[1].str());
                reply(res, status, body);
              });
    svr_.Post(R"(/v1/runs/([^/]+)/logs)",
              [this](const httplib::Request& req, httplib::Response& res) {
                if (!authorized(req, res)) return;
                std::lock_guard<std::mutex> g{mtx_};
                if (refuse_locked(req.matches[1].str(), res)) return;
                if (log_refusal_)
                  return reply(res, log_refusal_->first, log_refusal_->second);
                if (fail_logs_every_other_ && (++log_calls_ % 2 == 1))
                  return reply(res, 503, json{{"error", {{"message", "busy"}}}});
                auto id = req.matches[1].str();
                auto body = json::parse(req.body);
                for (auto& c : body["chunks"]) {
                  auto seq = c["seq"].get<int64_t>();
                  auto& chunks = logs_[id];
                  if (!chunks.count(seq)) // repeats by seq are ignored, like meshd
                    chunks[seq] = c["stream"].get<std::string>() + ":" +
                                  c["data"].get<std::string>();
                }
                reply(res, 200, json{{"accepted", 1}});
              });
    svr_.Post(R"(/v1/runs/([^/]+)/progress)", [this](const httplib::Request& req,
                                                     httplib::Response& res) {
      if (!authorized(req, res)) return;
      std::lock_guard<std::mutex> g{mtx_};
      if (refuse_locked(req.matches[1].str(), res)) return;
      auto body = json::parse(req.body, nullptr, false);
      if (body.is_object())
        progress_[req.matches[1].str()].push_back(body.value("message", ""));
      if (gone_here_.count(req.matches[1].str()))
        return reply(
            res, 404,
            json{{"error",
                  {{"code", "not_found"},
                   {"message", "run '" + req.matches[1].str() + "' not found"}}}});
      if (ended_here_.count(req.matches[1].str()))
        return reply(res, 409,
                     json{{"error",
                           {{"code", "illegal_transition"},
                            {"message", "cannot progress a run that is error"},
                            {"field", "status"}}}});
      reply(res, 200,
            json{{"cancel_requested",
                  cancel_by_progress_.count(req.matches[1].str()) > 0}});
    });
    svr_.Post(R"(/v1/runs/([^/]+)/finish)", [this](const httplib::Request& req,
                                                   httplib::Response& res) {
      if (!authorized(req, res)) return;
      stall();
      std::lock_guard<std::mutex> g{mtx_};
      auto [status, body] = finish_locked(req.matches[1].str(), json::parse(req.body));
      reply(res, status, body);
    });
    // Like meshd: starts, then finishes, each answered on its own.
    svr_.Post("/v1/agents/a1/report", [this](const httplib::Request& req,
                                             httplib::Response& res) {
      if (!authorized(req, res)) return;
      stall();
      std::lock_guard<std::mutex> g{mtx_};
      ++reports_;
      auto in = json::parse(req.body);
      json out{{"started", json::array()}, {"finished", json::array()}};
      auto item = [](const std::string& id, int status, const json& body) {
        if (status == 200)
          return json{{"run", id},
                      {"ok", true},
                      {"status", body.value("status", "")},
                      {"cancel_requested", body.value("cancel_requested", false)}};
        return json{{"run", id},
                    {"ok", false},
                    {"http_status", status},
                    {"error", body["error"]}};
      };
      for (auto& id : in.value("started", json::array())) {
        auto [status, body] = start_locked(id.get<std::string>());
        out["started"].push_back(item(id.get<std::string>(), status, body));
      }
      for (auto f : in.value("finished", json::array())) {
        auto id = f["run"].get<std::string>();
        f.erase("run");
        auto [status, body] = finish_locked(id, f);
        out["finished"].push_back(item(id, status, body));
      }
      reply(res, 200, out);
    });
    svr_.Put(R"(/v1/runs/([^/]+)/artifacts/(.+))",
             [this](const httplib::Request& req, httplib::Response& res) {
               if (!authorized(req, res)) return;
               stall();
               std::lock_guard<std::mutex> g{mtx_};
               if (refuse_locked(req.matches[1].str(), res)) return;
               ++artifact_attempts_[req.matches[1].str()][req.matches[2].str()];
               if (artifact_refusal_)
                 return reply(res, artifact_refusal_->first, artifact_refusal_->second);
               artifacts_[req.matches[1].str()][req.matches[2].str()] = req.body;
               reply(res, 201, json{{"name", req.matches[2].str()}});
             });
    svr_.Delete("/v1/agents/a1",
                [this](const httplib::Request& req, httplib::Response& res) {
                  {
                    std::lock_guard<std::mutex> g{mtx_};
                    if (revoke_at_deregistration_) token_ = "revoked";
                    if (std::exchange(refuse_deregistration_then_stall_, false)) {
                      stall_ = true;
                      return reply(res, 401, json{{"error", {{"message", "no"}}}});
                    }
                  }
                  if (!authorized(req, res)) return;
                  stall();
                  std::lock_guard<std::mutex> g{mtx_};
                  deregistered_ = true;
                  reply(res, 200, json{{"id", "a1"}});
                });
    port_ = svr_.bind_to_any_port("127.0.0.1");
    thread_ = std::thread{[this] { svr_.listen_after_bind(); }};
    // A stop before the loop runs is lost, and the join would wait for good.
    eventually([this] { return svr_.is_running(); });
    // Test processes run in parallel and reuse run ids: each its own root.
    auto tmpl =
        (std::filesystem::temp_directory_path() / "polymesh-agent-test-XXXXXX").string();
    if (::mkdtemp(tmpl.data()) != nullptr) work_root_ = tmpl;
  }

  ~fake_mesh() {
    {
      std::lock_guard<std::mutex> g{mtx_};
      stopping_ = true;
      cv_.notify_all();
    }
    svr_.stop();
    thread_.join();
    std::error_code ec;
    if (!work_root_.empty()) std::filesystem::remove_all(work_root_, ec);
  }

  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }
  std::filesystem::path work_root() const { return work_root_; }

  void submit(const std::string& id, const std::string& plan,
              json params = json::object(), std::string payload = {},
              int64_t timeout_s = 0) {
    std::lock_guard<std::mutex> g{mtx_};
    runs_[id] =
        json{{"id", id},           {"plan", plan},        {"params", params},
             {"payload", payload}, {"status", "pending"}, {"timeout_s", timeout_s},
             {"attempts", 1}};
    pending_.insert(id);
    cv_.notify_all();
  }

  /// As `submit`, with more fields of meshd's run object from `extra`.
  void submit_with(const std::string& id, const std::string& plan, const json& extra) {
    submit(id, plan);
    std::lock_guard<std::mutex> g{mtx_};
    runs_[id].update(extra);
  }

  /// As meshd restored from a backup taken before `id` ended: the run is
  /// queued again and assigned to the agent anew (its next attempt), and
  /// nothing of its end is known.
  void restore(const std::string& id) {
    std::lock_guard<std::mutex> g{mtx_};
    finished_.erase(id);
    started_.erase(id);
    ended_here_.erase(id);
    runs_[id]["attempts"] = runs_[id]["attempts"].get<int>() + 1;
    pending_.insert(id);
    cv_.notify_all();
  }

  /// Offers `id` again as it was offered before, as a poll that crossed its
  /// start would.
  void offer_again(const std::string& id) {
    std::lock_guard<std::mutex> g{mtx_};
    pending_.insert(id);
    cv_.notify_all();
  }

  void cancel(const std::string& id) {
    std::lock_guard<std::mutex> g{mtx_};
    cancels_.push_back(id);
    cv_.notify_all();
  }

  /// Lets stalled calls (see `stall_`) and later ones be answered.
  void unstall() {
    std::lock_guard<std::mutex> g{mtx_};
    stall_ = false;
    cv_.notify_all();
  }

  /// Stops offering `id`.
  void withdraw(const std::string& id) {
    std::lock_guard<std::mutex> g{mtx_};
    pending_.erase(id);
  }

  template <class F> auto with(F f) {
    std::lock_guard<std::mutex> g{mtx_};
    return f(*this);
  }

  std::set<std::string> conflict_;
  /// Starts answered 409 because of `conflict_`.
  int conflicts_answered_ = 0;
  /// Runs another session of the agent started: their starts pass (meshd
  /// checks no holder for a pending run), every later report is refused.
  std::set<std::string> held_elsewhere_;
  std::map<std::string, int> refused_;
  std::set<std::string> cancel_by_progress_;
  /// Runs the mesh ended without the agent (agent_lost): a heartbeat is a 409.
  std::set<std::string> ended_here_;
  /// Runs whose heartbeat is a 404, as for a run the mesh no longer has.
  std::set<std::string> gone_here_;
  int finish_failures_ = 0;
  int register_failures_ = 0;
  int register_attempts_ = 0;
  int register_garbage_ = 0;
  int refreshes_ = 0;
  std::map<std::string, std::vector<std::string>> progress_;
  int unauthorized_ = 0;
  std::optional<std::chrono::milliseconds> token_life_;
  /// How far the mesh's wall clock is behind the agent's (ahead if
  /// negative): its `token_expires_at` is off by that much.
  std::chrono::milliseconds clock_behind_{0};
  std::string token_ = "tok";
  bool fail_logs_every_other_ = false;
  std::map<std::string, std::map<std::string, std::string>> artifacts_;
  /// Uploads tried, by run and name (refused ones too).
  std::map<std::string, std::map<std::string, int>> artifact_attempts_;
  /// While set, every artifact upload, or log request, gets this status and
  /// body.
  std::optional<std::pair<int, json>> artifact_refusal_;
  std::optional<std::pair<int, json>> log_refusal_;
  /// Finishes, reports, artifact uploads and deregistrations get no answer
  /// while set, like a frozen meshd's; `stalled_` counts them.
  bool stall_ = false;
  int stalled_ = 0;
  std::set<std::string> started_;
  /// Starts answered, refused ones too.
  std::map<std::string, int> starts_;
  std::map<std::string, json> finished_;
  std::map<std::string, std::vector<json>> finish_attempts_;
  std::map<std::string, std::map<int64_t, std::string>> logs_;
  std::vector<json> registrations_;
  /// Answer a registration with an `instance` as a meshd before it did.
  bool refuse_instance_ = false;
  /// The registration answer's `drained_by`.
  json drained_by_ = nullptr;
  /// Registrations refused `name_in_use` before the next one is taken.
  int name_in_use_ = 0;
  /// The session number, sent in answers when `count_sessions_`.
  int64_t session_ = 0;
  bool count_sessions_ = false;
  bool deregistered_ = false;
  /// A deregistration ends the session (its token is refused from then on).
  bool revoke_at_deregistration_ = false;
  /// The first deregistration is refused 401, and every call held after it.
  bool refuse_deregistration_then_stall_ = false;
  int max_running_ = 0;
  int polls_ = 0;
  /// Fields every poll answer carries besides `runs` and `cancel`.
  json poll_extra_ = json::object();
  /// Polls that get no answer, then polls answered 503, before the next is
  /// served; the `wait` each asked.
  int poll_failures_ = 0;
  int poll_refusals_ = 0;
  std::vector<std::string> poll_waits_;
  int reports_ = 0;
  std::filesystem::path work_root_;

private:
  json session_json() {
    // Like meshd: an expiry within the representable range (year < 2262).
    auto life = token_life_.value_or(std::chrono::milliseconds{std::chrono::hours{1}});
    auto expires =
        polymesh::to_rfc3339(std::chrono::system_clock::now() - clock_behind_ + life);
    json out{{"id", "a1"},
             {"access_token", token_},
             {"token_expires_at", expires},
             {"token_expires_in_s",
              std::chrono::duration_cast<std::chrono::seconds>(life).count()},
             {"poll_wait_max_s", 1},
             {"heartbeat_interval_s", 1},
             {"drained_by", drained_by_}};
    if (count_sessions_) out["session"] = session_;
    return out;
  }

  void stall() {
    std::unique_lock<std::mutex> g{mtx_};
    if (!stall_) return;
    ++stalled_;
    cv_.wait(g, [this] { return !stall_ || stopping_; });
  }

  bool authorized(const httplib::Request& req, httplib::Response& res) {
    std::lock_guard<std::mutex> g{mtx_};
    if (req.get_header_value("Authorization") == "Bearer " + token_) return true;
    ++unauthorized_;
    reply(res, 401, json{{"error", {{"message", "no"}}}});
    return false;
  }

  static void reply(httplib::Response& res, int status, const json& body) {
    res.status = status;
    res.set_content(body.dump(), "application/json");
  }

  json pending_json() {
    json out = json::array();
    for (auto& id : pending_)
      out.push_back(runs_[id]);
    return out;
  }

  json run_json(const std::string& id) { return runs_[id]; }

  /// meshd's answer to a report on `id` from this session when another
  /// session of the agent started it (`check_holder`'s own words); counted
  /// in `refused_`. REQUIRES: `mtx_` held.
  std::pair<int, json> refusal_locked(const std::string& id) {
    ++refused_[id];
    polymesh::run_record run;
    run.id = id;
    run.assigned_agent = "a1";
    run.status = polymesh::run_status::running;
    run.held_session = 1;
    auto err = polymesh::check_holder(run, "a1", 2);
    return {polymesh::http_status(polymesh::code_of(err)),
            polymesh::wire::error_body(err)};
  }

  /// Answers a report on a run in `held_elsewhere_` with `refusal_locked`;
  /// whether it did. REQUIRES: `mtx_` held.
  bool refuse_locked(const std::string& id, httplib::Response& res) {
    if (!held_elsewhere_.count(id)) return false;
    auto [status, body] = refusal_locked(id);
    reply(res, status, body);
    return true;
  }

  /// A start's status and body. REQUIRES: `mtx_` held.
  std::pair<int, json> start_locked(const std::string& id) {
    ++starts_[id];
    if (conflict_.count(id)) {
      pending_.erase(id);
      ++conflicts_answered_;
      return {409, json{{"error",
                         {{"code", "illegal_transition"}, {"message", "elsewhere"}}}}};
    }
    started_.insert(id);
    pending_.erase(id);
    ++running_now_;
    max_running_ = std::max(max_running_, running_now_);
    return {200, run_json(id)};
  }

  /// A finish's status and body. REQUIRES: `mtx_` held.
  std::pair<int, json> finish_locked(const std::string& id, const json& body) {
    finish_attempts_[id].push_back(body);
    if (held_elsewhere_.count(id)) {
      auto [status, refusal] = refusal_locked(id);
      return {status, refusal};
    }
    if (finish_failures_ > 0) {
      --finish_failures_;
      return {503, json{{"error", {{"message", "meshd restarting"}}}}};
    }
    if (finished_.count(id))
      return {409, json{{"error", {{"message", "already finished"}}}}};
    finished_[id] = body;
    // A finish of a pending run (not started) ends it too.
    if (!pending_.erase(id)) --running_now_;
    cv_.notify_all();
    return {200, run_json(id)};
  }

  httplib::Server svr_;
  std::thread thread_;
  int port_ = 0;
  std::mutex mtx_;
  std::condition_variable cv_;
  bool stopping_ = false;
  std::map<std::string, json> runs_;
  std::set<std::string> pending_;
  json cancels_ = json::array();
  int log_calls_ = 0;
  int running_now_ = 0;
};

/// A plan that blocks until canceled, counting how many run at once.
class blocking_plan final : public plan {
public:
  plan_result run(run_context& ctx) override {
    ++running;
    ctx.log->line("blocking");
    while (!ctx.cancel->wait_for(50ms)) {
    }
    --running;
    return plan_result::failure("canceled");
  }
  std::atomic<int> running{0};
};

agent_config config(const fake_mesh& mesh) {
  agent_config cfg;
  cfg.mesh_url = mesh.url();
  cfg.registration_token = "reg-token";
  cfg.name = "unit-agent";
  cfg.work_root = mesh.work_root();
  cfg.labels = {{"env", "test"}};
  cfg.capacity = 2;
  // The test binary's own /proc entries stay its user's (see
  // `an_agent_makes_its_process_non_dumpable`).
  cfg.stay_dumpable = true;
  cfg.poll_wait = 1s;
  cfg.backoff_initial = 10ms;
  cfg.backoff_max = 50ms;
  cfg.log_flush_interval = 20ms;
  cfg.kill_grace = 500ms;
  cfg.drain_deadline = 200ms;
  cfg.shutdown_result_grace = 2s;
  return cfg;
}

plan_set echo_plans(std::shared_ptr<blocking_plan> blocker = nullptr) {
  plan_set p;
  p["echo"] = std::make_shared<function_plan>([](run_context& ctx) {
    ctx.log->write(log_stream::out, ctx.payload);
    if (ctx.params.value("fail", false))
      return plan_result::failure(ctx.params.value("error", "asked to fail"), 3,
                                  "partial");
    return plan_result::success(ctx.payload, 0);
  });
  p["lines"] = std::make_shared<function_plan>([](run_context& ctx) {
    for (int i = 0; i < 200; ++i)
      ctx.log->write(i % 3 ? log_stream::out : log_stream::err,
                     "line " + std::to_string(i) + "\n");
    return plan_result::success();
  });
  p["progress"] = std::make_shared<function_plan>([](run_context& ctx) {
    ctx.progress(ctx.params.value("message", "step 1 of 2"));
    // Stays until the mesh cancels it, so the shipper has time to report.
    while (!ctx.cancel->wait_for(50ms)) {
    }
    return plan_result::failure("canceled");
  });
  // Two messages within the rate limit, and returns at once.
  p["progress_then_return"] = std::make_shared<function_plan>([](run_context& ctx) {
    ctx.progress("step 1 of 2");
    ctx.progress("step 2 of 2");
    return plan_result::success();
  });
  // Writes nothing and reports no progress: only the heartbeat speaks for it.
  p["quiet"] = std::make_shared<function_plan>([](run_context& ctx) {
    while (!ctx.cancel->wait_for(50ms)) {
    }
    return plan_result::failure("canceled");
  });
  // Writes more than a small log buffer holds, leaves two artifacts.
  p["output_and_artifacts"] = std::make_shared<function_plan>([](run_context& ctx) {
    for (int i = 0; i < 200; ++i)
      ctx.log->write(log_stream::out, "line " + std::to_string(i) + "\n");
    std::ofstream{ctx.artifacts_dir / "a.txt"} << "a";
    std::ofstream{ctx.artifacts_dir / "b.txt"} << "b";
    return plan_result::success("done");
  });
  // Succeeds at once, leaving an artifact.
  p["artifact"] = std::make_shared<function_plan>([](run_context& ctx) {
    std::ofstream{ctx.artifacts_dir / "out.txt"} << "made";
    return plan_result::success("made it");
  });
  // Leaves files whose names the mesh refuses, and one it takes.
  p["odd_artifact_names"] = std::make_shared<function_plan>([](run_context& ctx) {
    for (const char* name : {"new\nline", "bad\xffname", "q?mark", "ok.txt"})
      std::ofstream{ctx.artifacts_dir / name} << "x";
    std::filesystem::create_symlink("ok.txt", ctx.artifacts_dir / "link");
    ::mkfifo((ctx.artifacts_dir / "pipe").c_str(), 0600);
    return plan_result::success();
  });
  // Leaves a file on each side of a tree too deep to be named by a path
  // (past PATH_MAX: it cannot be listed, even by root).
  p["deep_artifacts"] = std::make_shared<function_plan>([](run_context& ctx) {
    std::ofstream{ctx.artifacts_dir / "a.txt"} << "a";
    std::ofstream{ctx.artifacts_dir / "z.txt"} << "z";
    int fd = ::open(ctx.artifacts_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    const std::string name(200, 'd');
    for (int depth = 0; depth < 25 && fd >= 0; ++depth) {
      ::mkdirat(fd, name.c_str(), 0700);
      int next = ::openat(fd, name.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
      ::close(fd);
      fd = next;
    }
    if (fd >= 0) {
      int file = ::openat(fd, "deep.txt", O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
      if (file >= 0) ::close(file);
      ::close(fd);
    }
    return plan_result::success();
  });
  p["block"] = blocker
                   ? std::static_pointer_cast<plan>(blocker)
                   : std::static_pointer_cast<plan>(std::make_shared<blocking_plan>());
  return p;
}

/// Takes the SDK's log lines, as `level text`, while it lives, and gives
/// stderr back when it goes: also when an assertion ends a test early,
/// before the lines the handler writes to are gone.
class log_capture {
public:
  log_capture() {
    set_log_handler([this](const std::string& level, const std::string& text) {
      std::lock_guard<std::mutex> g{mtx_};
      lines_.push_back(level + " " + text);
    });
  }
  ~log_capture() { set_log_handler(nullptr); }
  log_capture(const log_capture&) = delete;
  log_capture& operator=(const log_capture&) = delete;

  /// How many lines hold `what`.
  [[nodiscard]] long count(const std::string& what) const {
    std::lock_guard<std::mutex> g{mtx_};
    return std::count_if(lines_.begin(), lines_.end(), [&](const std::string& l) {
      return l.find(what) != std::string::npos;
    });
  }
  [[nodiscard]] std::vector<std::string> lines() const {
    std::lock_guard<std::mutex> g{mtx_};
    return lines_;
  }

private:
  mutable std::mutex mtx_;
  std::vector<std::string> lines_;
};

} // namespace

/// Drains `a` and waits for it to stop; returns how long that took.
std::chrono::steady_clock::duration drain_time(agent& a) {
  auto began = std::chrono::steady_clock::now();
  a.drain();
  a.wait();
  return std::chrono::steady_clock::now() - began;
}

/// Once the agent polls (so registered: a stalled mesh holds registrations
/// too), makes the fake mesh hold every call like a frozen meshd.
bool freeze_once_polling(fake_mesh& mesh) {
  if (!eventually([&] { return mesh.with([](fake_mesh& m) { return m.polls_; }) > 0; }))
    return false;
  mesh.with([](fake_mesh& m) { return m.stall_ = true; });
  return true;
}

/// Waits (bounded) until the fake mesh has received `id`'s finish.
bool finished(fake_mesh& mesh, const std::string& id) {
  return eventually(
      [&] { return mesh.with([&](fake_mesh& m) { return m.finished_.count(id) > 0; }); });
}

// This test ensures a run is started, its log shipped, its result reported, and the agent
// deregisters on drain.
TEST(agent, runs_and_reports_success) {
  fake_mesh mesh;
  agent a{config(mesh), echo_plans()};
  a.start();
  mesh.submit("r1", "echo", json::object(), "hello\n");
  ASSERT_TRUE(finished(mesh, "r1"));
  mesh.with([](fake_mesh& m) {
    EXPECT_EQ(m.finished_["r1"]["status"], "success");
    EXPECT_EQ(m.finished_["r1"]["result"], "hello\n");
    EXPECT_EQ(m.logs_["r1"][0], "stdout:hello\n");
    EXPECT_EQ(m.registrations_.at(0)["labels"]["env"], "test");
    EXPECT_EQ(m.registrations_.at(0)["capacity"], 2);
    return 0;
  });
  a.drain();
  a.wait();
  EXPECT_TRUE(mesh.with([](fake_mesh& m) { return m.deregistered_; }));
  EXPECT_EQ(a.stats().finished, 1u);
}

// This test ensures a plan learns from the run it is given whether the mesh
// retried it, which time, and of which run; a run submitted says 0 and "".
TEST(agent, a_plan_learns_it_runs_a_retry) {
  fake_mesh mesh;
  auto plans = echo_plans();
  plans["retry"] = std::make_shared<function_plan>([](run_context& ctx) {
    return plan_result::success(std::to_string(ctx.retry_number) + " '" + ctx.retry_of +
                                "'");
  });
  agent a{config(mesh), plans};
  a.start();
  mesh.submit_with("r2", "retry", json{{"retry_number", 2}, {"retry_of", "r1"}});
  mesh.submit("r3", "retry");
  ASSERT_TRUE(finished(mesh, "r2"));
  ASSERT_TRUE(finished(mesh, "r3"));
  mesh.with([](fake_mesh& m) {
    EXPECT_EQ(m.finished_["r2"]["result"], "2 'r1'");
    EXPECT_EQ(m.finished_["r3"]["result"], "0 ''");
    return 0;
  });
  a.drain();
  a.wait();
}

// This test ensures a failing plan is reported as error with its exit code and reason
// plan_failed.
TEST(agent, reports_error_with_exit_code) {
  fake_mesh mesh;
  agent a{config(mesh), echo_plans()};
  a.start();
  mesh.submit("r1", "echo", json{{"fail", true}});
  ASSERT_TRUE(finished(mesh, "r1"));
  mesh.with([](fake_mesh& m) {
    auto& f = m.finished_["r1"];
    EXPECT_EQ(f["status"], "error");
    EXPECT_EQ(f["exit_code"], 3);
    EXPECT_EQ(f["reason"], "plan_failed");
    EXPECT_EQ(f["error"], "asked to fail");
    return 0;
  });
  // A failure with no text still tells the user something.
  mesh.submit("r2", "echo", json{{"fail", true}, {"error", ""}});
  ASSERT_TRUE(finished(mesh, "r2"));
  EXPECT_EQ(mesh.with([](fake_mesh& m) { return m.finished_["r2"]["error"]; }),
            "the plan failed without saying why");
}

// This test ensures a result refused with 503 (meshd restarting) is re-sent unchanged
// until accepted, once; and that the retries after the first warning are
// logged at debug (each was a warning: an outage buried the log).
TEST(agent, result_is_resent_until_accepted) {
  fake_mesh mesh;
  mesh.with([](fake_mesh& m) { return m.finish_failures_ = 3; });
  log_capture log;
  agent a{config(mesh), echo_plans()};
  a.start();
  mesh.submit("r1", "echo", json::object(), "x");
  ASSERT_TRUE(finished(mesh, "r1"));
  mesh.with([](fake_mesh& m) {
    auto& attempts = m.finish_attempts_["r1"];
    EXPECT_EQ(attempts.size(), 4u);
    for (auto& x : attempts)
      EXPECT_EQ(x, attempts.front());
    return 0;
  });
  EXPECT_EQ(log.count("warn run r1: cannot send the result"), 1);
}

// This test ensures shutting down keeps to `shutdown_result_grace` when a
// result cannot be sent: the retry's backoff sleep ends when the drain gives
// up on results (it used to be slept out, 20 s here), and the run that had
// already returned is not canceled.
TEST(agent, drain_gives_up_on_results_without_sleeping_out_the_backoff) {
  fake_mesh mesh;
  mesh.with([](fake_mesh& m) { return m.finish_failures_ = 1000000; });
  auto cfg = config(mesh);
  cfg.backoff_initial = 20s;
  cfg.backoff_max = 20s;
  cfg.shutdown_result_grace = 300ms;
  agent a{cfg, echo_plans()};
  a.start();
  mesh.submit("r1", "echo", json::object(), "x");
  ASSERT_TRUE(eventually([&] {
    return mesh.with([](fake_mesh& m) { return m.finish_attempts_["r1"].size(); }) >= 1;
  }));
  EXPECT_LT(drain_time(a), 10s);
  EXPECT_EQ(mesh.with([](fake_mesh& m) {
    return m.finish_attempts_["r1"].front().value("reason", "");
  }),
            "");
}

// This test ensures a drain keeps to its budget when the mesh stops
// answering (a frozen meshd): the result's call in flight ends when the
// result grace runs out, and deregistering keeps to `deregister_timeout`.
// Each used to wait out its `request_timeout`, a minute here, one after the
// other (three deregistration tries).
TEST(agent, a_drain_keeps_to_its_budget_when_the_mesh_stops_answering) {
  fake_mesh mesh;
  auto cfg = config(mesh);
  cfg.request_timeout = 60s;
  cfg.shutdown_result_grace = 300ms;
  cfg.deregister_timeout = 500ms;
  agent a{cfg, echo_plans()};
  a.start();
  ASSERT_TRUE(freeze_once_polling(mesh));
  mesh.submit("r1", "echo", json::object(), "x");
  ASSERT_TRUE(eventually(
      [&] { return mesh.with([](fake_mesh& m) { return m.stalled_; }) == 1; }));
  EXPECT_LT(drain_time(a), 20s);
  EXPECT_EQ(mesh.with([](fake_mesh& m) { return m.stalled_; }), 2)
      << "the finish and one deregistration that took all of deregister_timeout";
}

// This test ensures an agent told to stop while a frozen mesh holds its
// registration stops at once: it waited out `request_timeout` (30 s by
// default) first.
TEST(agent, a_stop_during_a_registration_the_mesh_holds_is_prompt) {
  fake_mesh mesh;
  mesh.with([](fake_mesh& m) { return m.stall_ = true; });
  auto cfg = config(mesh);
  cfg.request_timeout = 60s;
  agent a{cfg, echo_plans()};
  a.start();
  ASSERT_TRUE(eventually(
      [&] { return mesh.with([](fake_mesh& m) { return m.stalled_; }) == 1; }));
  EXPECT_LT(drain_time(a), 10s);
  EXPECT_EQ(mesh.with([](fake_mesh& m) { return m.stalled_; }), 1)
      << "registered again, or deregistered without a session";
}

// This test ensures a stop while a frozen mesh holds the poll loop's token
// renewal is prompt: it waited out `request_timeout` before the drain began.
TEST(agent, a_stop_during_a_token_renewal_the_mesh_holds_is_prompt) {
  fake_mesh mesh;
  mesh.with([](fake_mesh& m) { return m.token_life_ = 1500ms; });
  auto cfg = config(mesh);
  cfg.request_timeout = 60s;
  cfg.deregister_timeout = 500ms;
  agent a{cfg, echo_plans()};
  a.start();
  ASSERT_TRUE(freeze_once_polling(mesh));
  ASSERT_TRUE(eventually(
      [&] { return mesh.with([](fake_mesh& m) { return m.stalled_; }) == 1; }));
  EXPECT_LT(drain_time(a), 10s);
}

// This test ensures a stop is prompt while a frozen mesh holds the
// registration that replaces a session the mesh refused a poll for (401):
// that renewal waited out `request_timeout` before the drain began.
TEST(agent, a_stop_during_a_renewal_after_a_refused_poll_is_prompt) {
  fake_mesh mesh;
  auto cfg = config(mesh);
  cfg.request_timeout = 60s;
  cfg.deregister_timeout = 500ms;
  agent a{cfg, echo_plans()};
  a.start();
  ASSERT_TRUE(
      eventually([&] { return mesh.with([](fake_mesh& m) { return m.polls_; }) > 0; }));
  mesh.with([](fake_mesh& m) {
    m.token_ = "revoked";
    return m.stall_ = true;
  });
  ASSERT_TRUE(eventually(
      [&] { return mesh.with([](fake_mesh& m) { return m.stalled_; }) == 1; }));
  EXPECT_LT(drain_time(a), 10s);
  EXPECT_EQ(mesh.with([](fake_mesh& m) { return m.stalled_; }), 1)
      << "the deregistration registered again to leave";
}

// This test ensures a deregistration refused for its token (the mesh ended
// the session meanwhile) does not register the agent again only to leave.
TEST(agent, a_refused_deregistration_does_not_register_again) {
  fake_mesh mesh;
  mesh.with([](fake_mesh& m) { return m.revoke_at_deregistration_ = true; });
  log_capture log;
  agent a{config(mesh), echo_plans()};
  a.start();
  ASSERT_TRUE(eventually([&] { return a.stats().registered; }));
  drain_time(a);
  EXPECT_EQ(mesh.with([](fake_mesh& m) { return m.registrations_.size(); }), 1u);
  EXPECT_EQ(log.count("deregister refused: HTTP 401"), 1);
}

// This test ensures a deregistration refused 401 keeps to
// `deregister_timeout` with its renewal and its repeat, which a frozen mesh
// holds: each had the whole time (8 s here), one after the other.
TEST(agent, a_deregistration_keeps_to_its_time_through_a_renewal) {
  fake_mesh mesh;
  mesh.with([](fake_mesh& m) { return m.refuse_deregistration_then_stall_ = true; });
  auto cfg = config(mesh);
  cfg.request_timeout = 60s;
  cfg.deregister_timeout = 4s;
  agent a{cfg, echo_plans()};
  a.start();
  ASSERT_TRUE(eventually([&] { return a.stats().registered; }));
  auto took = drain_time(a);
  EXPECT_LT(took, 7s) << "two waits of 4 s each take 8"; // 3 s for a loaded host
  EXPECT_GE(mesh.with([](fake_mesh& m) { return m.stalled_; }), 1)
      << "no renewal was held";
}

// This test ensures the drain's token renewal keeps to `drain_deadline` when a
// frozen mesh holds it: it waited out `request_timeout` (a minute here).
TEST(agent, a_drain_keeps_to_its_deadline_when_the_mesh_holds_its_renewal) {
  fake_mesh mesh;
  mesh.with([](fake_mesh& m) { return m.token_life_ = 1500ms; });
  auto blocker = std::make_shared<blocking_plan>();
  auto cfg = config(mesh);
  cfg.request_timeout = 60s;
  cfg.drain_deadline = 2s;
  cfg.shutdown_result_grace = 300ms;
  cfg.deregister_timeout = 500ms;
  agent a{cfg, echo_plans(blocker)};
  a.start();
  mesh.submit("r1", "block");
  ASSERT_TRUE(eventually([&] { return blocker->running == 1; }));
  mesh.with([](fake_mesh& m) { return m.stall_ = true; });
  EXPECT_LT(drain_time(a), 10s);
  EXPECT_GE(mesh.with([](fake_mesh& m) { return m.stalled_; }), 1)
      << "no token renewal was held";
}

// This test ensures log chunks arrive complete and in order although every other log call
// fails.
TEST(agent, logs_survive_failures_in_order) {
  fake_mesh mesh;
  mesh.with([](fake_mesh& m) { return m.fail_logs_every_other_ = true; });
  auto cfg = config(mesh);
  cfg.log_chunk_bytes = 64;
  agent a{cfg, echo_plans()};
  a.start();
  mesh.submit("r1", "lines");
  ASSERT_TRUE(finished(mesh, "r1"));
  std::string expect_out, expect_err;
  for (int i = 0; i < 200; ++i)
    (i % 3 ? expect_out : expect_err) += "line " + std::to_string(i) + "\n";
  mesh.with([&](fake_mesh& m) {
    std::string out, err;
    int64_t next = 0;
    for (auto& [seq, text] : m.logs_["r1"]) {
      EXPECT_EQ(seq, next++); // no gap: nothing lost
      auto colon = text.find(':');
      (text.substr(0, colon) == "stdout" ? out : err) += text.substr(colon + 1);
    }
    EXPECT_EQ(out, expect_out);
    EXPECT_EQ(err, expect_err);
    return 0;
  });
}

// This test ensures a 409 on start drops the run without running or finishing it.
TEST(agent, start_conflict_drops_run) {
  fake_mesh mesh;
  mesh.with([](fake_mesh& m) { return m.conflict_.insert("r1").second; });
  agent a{config(mesh), echo_plans()};
  a.start();
  mesh.submit("r1", "echo");
  mesh.submit("r2", "echo");
  ASSERT_TRUE(finished(mesh, "r2"));
  EXPECT_EQ(mesh.with([](fake_mesh& m) { return m.finish_attempts_.count("r1"); }), 0u);
}

// This test ensures a run dropped on a 409 at start is taken when the mesh
// offers it again (assigned to this agent anew, e.g. after its delivery
// lease lapsed while the agent was stopped): it was ignored for good, and
// the mesh assigned it to the idle agent again and again.
TEST(agent, a_run_refused_at_start_is_taken_when_offered_again) {
  fake_mesh mesh;
  mesh.with([](fake_mesh& m) { return m.conflict_.insert("r1").second; });
  agent a{config(mesh), echo_plans()};
  a.start();
  mesh.submit("r1", "echo");
  ASSERT_TRUE(eventually([&] {
    // At least once: a poll that crossed the first refusal may carry it again.
    return mesh.with([](fake_mesh& m) { return m.conflicts_answered_; }) >= 1;
  }));
  mesh.with([](fake_mesh& m) { return m.conflict_.erase("r1"); });
  mesh.submit("r1", "echo");
  ASSERT_TRUE(finished(mesh, "r1"));
  EXPECT_EQ(mesh.with([](fake_mesh& m) { return m.finished_["r1"]["status"]; }),
            "success");
}

// This test ensures the agent's log says once when the mesh begins to hold
// the agent back (its poll answers say so) and once when it stops: the agent
// gets no runs meanwhile, and its operator reads this log.
TEST(agent, a_hold_the_mesh_tells_of_is_logged_once_at_its_start_and_end) {
  log_capture log;
  fake_mesh mesh;
  agent a{config(mesh), echo_plans()};
  a.start();
  auto polls = [&] { return mesh.with([](fake_mesh& m) { return m.polls_; }); };
  ASSERT_TRUE(eventually([&] { return polls() > 0; }));
  mesh.with([](fake_mesh& m) {
    m.poll_extra_ = {{"held_until", "2026-12-07T19:00:00.000Z"}, {"lapsed_leases", 2}};
    return 0;
  });
  auto seen = polls();
  ASSERT_TRUE(eventually([&] { return polls() >= seen + 3; }, 10s));
  EXPECT_EQ(log.count("the mesh holds this agent back until 2026-12-07T19:00:00.000Z: 2 "
                      "runs offered to it in a row were not started"),
            1)
      << testing::PrintToString(log.lines());
  mesh.with([](fake_mesh& m) {
    m.poll_extra_ = {{"held_until", nullptr}, {"lapsed_leases", 2}};
    return 0;
  });
  seen = polls();
  ASSERT_TRUE(eventually([&] { return polls() >= seen + 3; }, 10s));
  EXPECT_EQ(log.count("the mesh no longer holds this agent back"), 1);
  EXPECT_EQ(log.count("holds this agent back until"), 1);
  a.drain();
  a.wait();
}

// This test ensures a cancel in the poll answer stops the run, reported canceled_by_user.
TEST(agent, cancel_from_poll) {
  fake_mesh mesh;
  auto blocker = std::make_shared<blocking_plan>();
  agent a{config(mesh), echo_plans(blocker)};
  a.start();
  mesh.submit("r1", "block");
  ASSERT_TRUE(eventually([&] { return blocker->running == 1; }));
  mesh.cancel("r1");
  ASSERT_TRUE(finished(mesh, "r1"));
  mesh.with([](fake_mesh& m) {
    EXPECT_EQ(m.finished_["r1"]["status"], "canceled");
    EXPECT_EQ(m.finished_["r1"]["reason"], "canceled_by_user");
    // The cause, then what the plan said (here "canceled"): a plan killed
    // for not stopping says so there.
    EXPECT_EQ(m.finished_["r1"]["error"],
              "canceled on request (the plan's error: canceled)");
    return 0;
  });
}

// This test ensures the progress heartbeat delivers a cancel too.
TEST(agent, cancel_from_progress) {
  fake_mesh mesh;
  mesh.with([](fake_mesh& m) { return m.cancel_by_progress_.insert("r1").second; });
  agent a{config(mesh), echo_plans()};
  a.start();
  mesh.submit("r1", "block");
  ASSERT_TRUE(finished(mesh, "r1"));
  EXPECT_EQ(mesh.with([](fake_mesh& m) { return m.finished_["r1"]["reason"]; }),
            "canceled_by_user");
}

// This test ensures a run the mesh ended while the agent was out of touch
// (agent_lost: its heartbeat is a 409), or no longer has at all (pruned by a
// short retention, meshd restored from an older backup: a 404), is stopped
// here, frees its slot at once and sends nothing more: the plan ran on,
// holding a slot the mesh counted as free, so the next runs bounced off the
// agent until it ended.
TEST(agent, a_run_the_mesh_ended_is_stopped_here_and_frees_its_slot) {
  for (bool gone : {false, true}) {
    SCOPED_TRACE(gone ? "404" : "409");
    fake_mesh mesh;
    mesh.with([&](fake_mesh& m) {
      return (gone ? m.gone_here_ : m.ended_here_).insert("r1").second;
    });
    log_capture log;
    auto cfg = config(mesh);
    cfg.capacity = 1;
    agent a{cfg, echo_plans()};
    a.start();
    mesh.submit("r1", "quiet");
    std::string refusal = gone ? "HTTP 404: run 'r1' not found"
                               : "HTTP 409: cannot progress a run that is error";
    ASSERT_TRUE(eventually([&] {
      return log.count("run r1 stopped: the mesh ended it (" + refusal + ")") == 1;
    }));
    mesh.submit("r2", "echo", json::object(), "next");
    ASSERT_TRUE(finished(mesh, "r2"));
    a.drain();
    a.wait();
    EXPECT_EQ(log.count("warn run r1: the mesh no longer runs it (" + refusal +
                        "); stopping it here, nothing more is sent for it"),
              1);
    mesh.with([](fake_mesh& m) {
      EXPECT_EQ(m.finished_.count("r1"), 0u) << "its end is the mesh's";
      EXPECT_EQ(m.progress_["r1"].size(), 1u) << "no heartbeat after the refusal";
      return 0;
    });
  }
}

// This test ensures a run that writes nothing still sends its heartbeat (its
// log shipper starts for it), and so learns of a cancel.
TEST(agent, quiet_run_heartbeats_and_learns_of_a_cancel) {
  fake_mesh mesh;
  mesh.with([](fake_mesh& m) { return m.cancel_by_progress_.insert("r1").second; });
  agent a{config(mesh), echo_plans()};
  a.start();
  mesh.submit("r1", "quiet");
  ASSERT_TRUE(finished(mesh, "r1"));
  mesh.with([](fake_mesh& m) {
    EXPECT_EQ(m.finished_["r1"]["reason"], "canceled_by_user");
    EXPECT_FALSE(m.progress_["r1"].empty());
    return 0;
  });
}

// This test ensures a run past its timeout ends error/timeout.
TEST(agent, timeout_is_an_error) {
  fake_mesh mesh;
  agent a{config(mesh), echo_plans()};
  a.start();
  mesh.submit("r1", "block", json::object(), "", 1);
  ASSERT_TRUE(finished(mesh, "r1"));
  mesh.with([](fake_mesh& m) {
    EXPECT_EQ(m.finished_["r1"]["status"], "error");
    EXPECT_EQ(m.finished_["r1"]["reason"], "timeout");
    return 0;
  });
}

// This test ensures a run's outcome is what it was when the plan returned:
// a plan that succeeded within its timeout stays `success` although the
// timeout passes while its artifact is still being uploaded. It used to be
// reported `error/timeout` (the token's reason was read at the report).
TEST(agent, a_plan_that_returned_in_time_keeps_its_outcome) {
  fake_mesh mesh;
  agent a{config(mesh), echo_plans()};
  a.start();
  ASSERT_TRUE(freeze_once_polling(mesh));
  mesh.submit("r1", "artifact", json::object(), "", 2);
  ASSERT_TRUE(eventually(
      [&] { return mesh.with([](fake_mesh& m) { return m.stalled_; }) == 1; }));
  // The upload began after the run started, so its 2 s timeout is over by
  // then: this waits for the deadline itself, not for another thread.
  std::this_thread::sleep_for(2100ms);
  mesh.unstall();
  ASSERT_TRUE(finished(mesh, "r1"));
  mesh.with([](fake_mesh& m) {
    EXPECT_EQ(m.finished_["r1"]["status"], "success") << m.finished_["r1"].dump();
    EXPECT_EQ(m.artifacts_["r1"]["out.txt"], "made");
    return 0;
  });
}

/// meshd's answer to an upload its disk has no room for.
json no_room() {
  return json{
      {"error",
       {{"code", "store_failure"}, {"message", "not enough free space for the upload"}}}};
}

// This test ensures the last log chunks or artifacts of a finished run that
// the mesh keeps refusing (a meshd short of disk answers 500) are given up
// once `upload_retry_for` has passed since the plan returned, with a warning
// naming the run and what was not sent, and that the run's result is then
// reported and its slot freed: they were retried for good, and the run held
// its slot as long.
TEST(agent, a_finished_runs_uploads_the_mesh_keeps_refusing_are_given_up_in_time) {
  for (bool logs : {false, true}) {
    SCOPED_TRACE(logs ? "log chunks refused" : "artifacts refused");
    fake_mesh mesh;
    log_capture log;
    auto cfg = config(mesh);
    cfg.capacity = 1;
    cfg.upload_retry_for = 300ms;
    agent a{cfg, echo_plans()};
    a.start();
    mesh.with([&](fake_mesh& m) {
      (logs ? m.log_refusal_ : m.artifact_refusal_) = std::make_pair(500, no_room());
      return 0;
    });
    mesh.submit("r1", "output_and_artifacts");
    ASSERT_TRUE(finished(mesh, "r1"));
    mesh.with([&](fake_mesh& m) {
      EXPECT_EQ(m.finished_["r1"]["status"], "success");
      EXPECT_EQ(m.finished_["r1"]["result"], "done");
      EXPECT_TRUE(m.artifacts_["r1"].empty());
      // After the retries stopped, the rest is not tried.
      EXPECT_EQ(m.artifact_attempts_["r1"]["b.txt"], 0);
      if (!logs) {
        EXPECT_GE(m.artifact_attempts_["r1"]["a.txt"], 2);
      }
      return 0;
    });
    // Lines 0 to 199 of `output_and_artifacts`, none of them taken.
    std::string not_sent = logs ? "1690 log bytes and artifacts 'a.txt', 'b.txt'"
                                : "artifacts 'a.txt', 'b.txt'";
    EXPECT_EQ(
        log.count(
            "warn run r1: giving up on its last uploads, which the mesh did "
            "not take within agent.upload_retry_for (300ms): not confirmed as stored: " +
            not_sent +
            " (last failure: HTTP 500: not enough free space for the "
            "upload); reporting its result without them"),
        1);
    // The slot is free again.
    mesh.with([](fake_mesh& m) {
      m.log_refusal_.reset();
      m.artifact_refusal_.reset();
      return 0;
    });
    mesh.submit("r2", "echo", json::object(), "next");
    ASSERT_TRUE(finished(mesh, "r2"));
  }
}

/// Makes `mesh` answer every artifact upload 500 for want of room.
void refuse_artifacts_for_room(fake_mesh& mesh) {
  mesh.with([](fake_mesh& m) {
    m.artifact_refusal_ = std::make_pair(500, no_room());
    return 0;
  });
}

/// How often `mesh` was sent artifact `name` of run `run`.
int artifact_tries(fake_mesh& mesh, const std::string& run, const std::string& name) {
  return mesh.with([&](fake_mesh& m) { return m.artifact_attempts_[run][name]; });
}

/// The log of run `id` as `mesh` holds it: each chunk as `stream:data`.
std::string run_log_of(fake_mesh& mesh, const std::string& id) {
  return mesh.with([&](fake_mesh& m) {
    std::string all;
    for (auto& [seq, chunk] : m.logs_[id])
      all += chunk;
    return all;
  });
}

// This test ensures a cancel of a run that comes while its plan's artifacts
// are retried stops the retries at once, and that the agent polls on
// meanwhile: the result then goes out with the outcome the plan returned.
// The retries went on for good, cancel or not.
TEST(agent, a_cancel_stops_the_retries_of_a_finished_runs_uploads) {
  fake_mesh mesh;
  log_capture log;
  auto cfg = config(mesh);
  cfg.upload_retry_for = 1h;
  agent a{cfg, echo_plans()};
  a.start();
  refuse_artifacts_for_room(mesh);
  mesh.submit("r1", "artifact");
  auto tries = [&] { return artifact_tries(mesh, "r1", "out.txt"); };
  ASSERT_TRUE(eventually([&] { return tries() >= 3; }));
  auto polls = mesh.with([](fake_mesh& m) { return m.polls_; });
  ASSERT_TRUE(eventually([&] {
    return mesh.with([](fake_mesh& m) { return m.polls_; }) >= polls + 2;
  })) << "the retries held up the poll";
  EXPECT_EQ(mesh.with([](fake_mesh& m) { return m.finish_attempts_.count("r1"); }), 0u);
  mesh.cancel("r1");
  ASSERT_TRUE(finished(mesh, "r1"));
  EXPECT_EQ(mesh.with([](fake_mesh& m) { return m.finished_["r1"]["status"]; }),
            "success");
  EXPECT_EQ(
      log.count("warn run r1: canceled while its last uploads were retried: not "
                "confirmed as stored: artifact 'out.txt' (last failure: HTTP 500: not "
                "enough free space for the upload); reporting its result without them"),
      1);
}

// This test ensures a cancel that wakes the wait before a retry of a
// finished run's upload sends no more try: one was sent on waking, and
// against a meshd that does not answer it held the result up to
// mesh.request_timeout. The wait here is at least half an hour: a second
// try can only be the one the cancel woke.
TEST(agent, a_cancel_during_the_wait_before_a_retry_sends_no_more_upload) {
  fake_mesh mesh;
  log_capture log;
  auto cfg = config(mesh);
  cfg.upload_retry_for = 2h;
  cfg.backoff_initial = 1h;
  cfg.backoff_max = 1h;
  agent a{cfg, echo_plans()};
  a.start();
  refuse_artifacts_for_room(mesh);
  mesh.submit("r1", "artifact");
  ASSERT_TRUE(eventually([&] {
    return log.count("run r1: cannot upload artifact 'out.txt' (HTTP 500: not enough "
                     "free space for the upload), retrying in ") == 1;
  }));
  mesh.cancel("r1");
  ASSERT_TRUE(finished(mesh, "r1"));
  EXPECT_EQ(artifact_tries(mesh, "r1", "out.txt"), 1);
}

// This test ensures an artifact upload the mesh answers 500 (short of disk)
// says nothing in the run's own log while it is retried, and one line once
// the mesh refuses it for good (a 413), after which the result goes out.
TEST(agent, only_a_refusal_for_good_of_an_artifact_is_said_in_the_runs_log) {
  fake_mesh mesh;
  log_capture log;
  auto cfg = config(mesh);
  cfg.upload_retry_for = 1h;
  agent a{cfg, echo_plans()};
  a.start();
  refuse_artifacts_for_room(mesh);
  mesh.submit("r1", "artifact");
  ASSERT_TRUE(eventually([&] { return artifact_tries(mesh, "r1", "out.txt") >= 3; }));
  mesh.with([](fake_mesh& m) {
    m.artifact_refusal_ = std::make_pair(
        413, json{{"error",
                   {{"code", "payload_too_large"},
                    {"field", "body"},
                    {"message", "request body exceeds the limit of 2 bytes "
                                "(runs.max_artifact_bytes)"}}}});
    return 0;
  });
  ASSERT_TRUE(finished(mesh, "r1"));
  EXPECT_EQ(run_log_of(mesh, "r1"),
            "stderr:[polymesh: artifact 'out.txt' refused by the mesh: HTTP 413: "
            "request body exceeds the limit of 2 bytes (runs.max_artifact_bytes)]\n");
  EXPECT_EQ(
      log.count("warn run r1: artifact 'out.txt' refused by the mesh: HTTP 413: "
                "request body exceeds the limit of 2 bytes (runs.max_artifact_bytes)"),
      1);
}

// This test ensures meshd answering an artifact upload that it has no such
// run (its 404: pruned, or meshd restored from an older backup) ends the
// run's uploads at once, and no result is sent: each later artifact was
// tried and refused in turn, and then the result too.
TEST(agent, a_finished_run_the_mesh_no_longer_has_sends_nothing_more) {
  fake_mesh mesh;
  log_capture log;
  agent a{config(mesh), echo_plans()};
  a.start();
  mesh.with([](fake_mesh& m) {
    m.artifact_refusal_ =
        std::make_pair(404, json{{"error",
                                  {{"code", "not_found"},
                                   {"field", "id"},
                                   {"message", "no run with id 'r1'"}}}});
    return 0;
  });
  mesh.submit("r1", "output_and_artifacts");
  ASSERT_TRUE(eventually([&] {
    return log.count(
               "run r1 stopped: the mesh ended it (HTTP 404: no run with id 'r1')") == 1;
  }));
  drain_time(a);
  EXPECT_EQ(log.count("warn run r1: the mesh no longer runs it (HTTP 404: no run with id "
                      "'r1'); stopping it here, nothing more is sent for it"),
            1);
  mesh.with([](fake_mesh& m) {
    EXPECT_EQ(m.artifact_attempts_["r1"]["a.txt"], 1);
    EXPECT_EQ(m.artifact_attempts_["r1"]["b.txt"], 0);
    EXPECT_EQ(m.finish_attempts_.count("r1"), 0u);
    return 0;
  });
}

// This test ensures a run offered again after it ran here (a meshd restored
// from a backup taken before the run ended assigns it anew) is answered with
// the finish the mesh accepted then, the same outcome, exit code and result,
// and is not run again; and that a poll that crosses a run's start, offering
// it as it was, is not answered. The agent let every offer of a run it had
// run go unanswered: the restored mesh offered it again and again, each
// delivery lease.
TEST(agent, a_run_offered_again_after_it_ran_gets_its_finish_again) {
  fake_mesh mesh;
  log_capture log;
  auto ran = std::make_shared<std::atomic<int>>(0);
  auto plans = echo_plans();
  plans["counted"] = std::make_shared<function_plan>([ran](run_context&) {
    ++*ran;
    return plan_result::failure("it broke", 3, "partial result");
  });
  agent a{config(mesh), plans};
  a.start();
  mesh.submit("r1", "counted");
  ASSERT_TRUE(eventually([&] { return a.stats().finished == 1; }));
  auto polls = [&] { return mesh.with([](fake_mesh& m) { return m.polls_; }); };
  mesh.offer_again("r1");
  auto seen = polls();
  ASSERT_TRUE(eventually([&] { return polls() >= seen + 2; }));
  mesh.restore("r1");
  ASSERT_TRUE(finished(mesh, "r1"));
  EXPECT_EQ(*ran, 1);
  mesh.with([](fake_mesh& m) {
    EXPECT_EQ(m.starts_["r1"], 1);
    auto& attempts = m.finish_attempts_["r1"];
    EXPECT_EQ(attempts.size(), 2u) << "the crossing offer was answered";
    EXPECT_EQ(attempts.back(), attempts.front());
    EXPECT_EQ(attempts.front()["status"], "error");
    EXPECT_EQ(attempts.front()["reason"], "plan_failed");
    EXPECT_EQ(attempts.front()["exit_code"], 3);
    EXPECT_EQ(attempts.front()["result"], "partial result");
    return 0;
  });
  EXPECT_EQ(log.count("info run r1 offered again, which this agent already ran: sending "
                      "again the finish the mesh accepted (error/plan_failed)"),
            1);
}

// This test ensures a run offered again after its plan ran here, but whose
// finish the mesh never took (it ended the run itself meanwhile, then was
// restored from an older backup), ends error/already_ran instead of running
// a second time or going unanswered.
TEST(agent, a_run_offered_again_whose_outcome_is_not_known_ends_already_ran) {
  fake_mesh mesh;
  mesh.with([](fake_mesh& m) { return m.ended_here_.insert("r1").second; });
  log_capture log;
  agent a{config(mesh), echo_plans()};
  a.start();
  mesh.submit("r1", "quiet");
  ASSERT_TRUE(eventually([&] { return a.stats().finished == 1; }));
  mesh.restore("r1");
  ASSERT_TRUE(finished(mesh, "r1"));
  mesh.with([](fake_mesh& m) {
    EXPECT_EQ(m.starts_["r1"], 1);
    auto& f = m.finished_["r1"];
    EXPECT_EQ(f["status"], "error");
    EXPECT_EQ(f["reason"], "already_ran");
    EXPECT_FALSE(f.contains("exit_code"));
    EXPECT_EQ(f.value("error", ""),
              "agent 'unit-agent' already ran this run and no longer knows its outcome "
              "(it was offered again, e.g. by a meshd restored from an older backup); "
              "not running it twice");
    return 0;
  });
  EXPECT_EQ(log.count("warn run r1 offered again, which this agent already ran and whose "
                      "outcome it no longer knows: ending it error/already_ran rather "
                      "than running it twice"),
            1);
}

// This test ensures an artifact skipped for its name is logged with the name
// as it is, escaped where not printable: every such byte was shown as `?`,
// so `new\nline` and a real `q?mark` looked alike.
TEST(agent, an_artifact_skipped_for_its_name_is_named_exactly) {
  fake_mesh mesh;
  log_capture log;
  agent a{config(mesh), echo_plans()};
  a.start();
  mesh.submit("r1", "odd_artifact_names");
  ASSERT_TRUE(finished(mesh, "r1"));
  const std::string why = "' skipped: its name may contain only letters, digits";
  for (const char* shown : {"new\\nline", "bad\\xffname", "q?mark"})
    EXPECT_EQ(log.count(std::string{"warn run r1: artifact '"} + shown + why), 1)
        << shown;
  EXPECT_EQ(mesh.with([](fake_mesh& m) { return m.artifacts_["r1"].size(); }), 1u);
  // The run's own log says so too: its submitter does not read the agent's.
  auto run_log = run_log_of(mesh, "r1");
  EXPECT_EQ(run_log.rfind("stderr:[polymesh: artifact '", 0), 0u) << run_log;
  EXPECT_NE(run_log.find("[polymesh: artifact 'q?mark" + why), std::string::npos)
      << run_log;
  EXPECT_NE(run_log.find("[polymesh: artifact 'new\nline" + why), std::string::npos)
      << run_log;
  EXPECT_NE(run_log.find("[polymesh: artifact 'link' skipped: a symlink (never uploaded, "
                         "nor followed)]\n"),
            std::string::npos)
      << run_log;
  EXPECT_NE(
      run_log.find("[polymesh: artifact 'pipe' skipped: not a regular file (a FIFO, "
                   "socket or device)]\n"),
      std::string::npos)
      << run_log;
}

// This test ensures an entry of the artifacts that cannot be read (here a
// path past PATH_MAX, as root cannot be refused a directory) is skipped with
// a warning naming it, and the other artifacts still go: the listing stopped
// at the first such entry, and every file after it (in directory order) was
// lost with one warning naming the artifacts directory.
TEST(agent, an_artifact_that_cannot_be_read_skips_only_itself) {
  fake_mesh mesh;
  log_capture log;
  agent a{config(mesh), echo_plans()};
  a.start();
  mesh.submit("r1", "deep_artifacts");
  ASSERT_TRUE(finished(mesh, "r1"));
  auto sent = mesh.with([](fake_mesh& m) { return m.artifacts_["r1"]; });
  EXPECT_EQ(sent.size(), 2u);
  EXPECT_EQ(sent.count("a.txt"), 1u);
  EXPECT_EQ(sent.count("z.txt"), 1u);
  // The entry whose path is too long is named (a directory past the limit
  // cannot even be told from a file).
  EXPECT_EQ(log.count("warn run r1: artifact 'dddd"), 1);
  EXPECT_EQ(log.count("' skipped: File name too long"), 1);
  EXPECT_EQ(log.count("cannot list artifacts in"), 0);
}

// This test ensures a bad config or a null plan is refused when the agent
// is made, naming the problem (a URL without a scheme used to retry for
// good, a null plan to crash at the first run).
TEST(agent, a_bad_config_or_a_null_plan_is_refused_up_front) {
  fake_mesh mesh;
  auto cfg = config(mesh);
  cfg.mesh_url = "127.0.0.1:7700";
  try {
    agent a{cfg, echo_plans()};
    FAIL() << "a URL without a scheme was taken";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string{e.what()}.find("agent_config: mesh_url:"), std::string::npos)
        << e.what();
  }
  auto plans = echo_plans();
  plans["missing"] = nullptr;
  try {
    agent a{config(mesh), plans};
    FAIL() << "a null plan was taken";
  } catch (const std::invalid_argument& e) {
    EXPECT_STREQ(e.what(), "plan 'missing' is a null pointer");
  }
  // What the mesh would refuse at registration, refused here instead: it
  // was a fatal error only once the agent had started.
  auto refused = [&](agent_config c, plan_set p) -> std::string {
    try {
      agent a{std::move(c), std::move(p)};
    } catch (const std::invalid_argument& e) {
      return e.what();
    }
    return "taken";
  };
  auto spaced = echo_plans();
  spaced["two words"] = spaced["echo"];
  EXPECT_EQ(refused(config(mesh), spaced).rfind("plans: 'two words': ", 0), 0u)
      << refused(config(mesh), spaced);
  EXPECT_EQ(refused(config(mesh), plan_set{}), "plans: offer at least one plan");
  for (const auto* token : {"reg-token\n", " reg-token", "reg\ttoken"}) {
    auto c = config(mesh);
    c.registration_token = token;
    EXPECT_NE(
        refused(c, echo_plans()).find("agent_config: registration_token: has a space"),
        std::string::npos)
        << refused(c, echo_plans());
  }
  auto negative = config(mesh);
  negative.kill_grace = -1s;
  EXPECT_EQ(refused(negative, echo_plans()),
            "agent_config: kill_grace: must not be negative");
  for (auto retry_for : {-1ms, 24h + 1ms}) {
    auto c = config(mesh);
    c.upload_retry_for = retry_for;
    EXPECT_EQ(refused(c, echo_plans()),
              "agent_config: upload_retry_for: must be between 0 and 1d");
  }
  auto slow_start = config(mesh);
  slow_start.backoff_initial = 1h; // in its own range, but past max (30s)
  slow_start.backoff_max = 30s;
  EXPECT_EQ(refused(slow_start, echo_plans()),
            "agent_config: backoff.max: must be at least backoff.initial (1h), got 30s");
  // The default work root is in the temporary directory: a TMPDIR that
  // names none threw std::filesystem's error (mesh-agent aborted).
  const char* before = std::getenv("TMPDIR");
  std::string saved = before ? before : "";
  ::setenv("TMPDIR", "/nonexistent/polymesh-tmp", 1);
  auto defaulted = config(mesh);
  defaulted.work_root.clear();
  auto no_tmp = refused(defaulted, echo_plans());
  auto prepared = defaulted.prepare_work_root();
  if (before)
    ::setenv("TMPDIR", saved.c_str(), 1);
  else
    ::unsetenv("TMPDIR");
  EXPECT_EQ(no_tmp, "agent_config: work_dir: not set, and its default is in the "
                    "temporary directory, but TMPDIR names '/nonexistent/polymesh-tmp', "
                    "which is not a directory (No such file or directory): set "
                    "work_dir, or TMPDIR to a directory");
  EXPECT_EQ("agent_config: " + prepared, no_tmp);
}

// This test ensures an agent makes its process non-dumpable when it
// starts, so that plans (its user's processes) cannot read its memory and
// environment, tokens included, and leaves it alone when asked to: only
// mesh-agent's main did this, and an embedding program was open to its
// plans.
TEST(agent, an_agent_makes_its_process_non_dumpable) {
  fake_mesh mesh;
  ASSERT_EQ(::prctl(PR_GET_DUMPABLE), 1);
  {
    agent a{config(mesh), echo_plans()}; // stay_dumpable
    a.start();
    EXPECT_EQ(::prctl(PR_GET_DUMPABLE), 1);
  }
  auto cfg = config(mesh);
  cfg.stay_dumpable = false; // the default
  EXPECT_FALSE(agent_config{}.stay_dumpable);
  {
    agent a{cfg, echo_plans()};
    a.start();
    EXPECT_EQ(::prctl(PR_GET_DUMPABLE), 0);
  }
  ::prctl(PR_SET_DUMPABLE, 1, 0, 0, 0);
}

// This test ensures waiting on an agent never started returns at once, as
// `wait` did: `wait_for` waited out its whole time and said "still running".
TEST(agent, waiting_on_an_agent_never_started_returns_at_once) {
  fake_mesh mesh;
  agent a{config(mesh), echo_plans()};
  a.wait();
  EXPECT_TRUE(a.wait_for(60s));
}

// This test ensures every caller of `wait` returns only once the agent has
// stopped (a second caller used to return at once: the first had taken the
// thread to join).
TEST(agent, every_waiter_waits_for_the_end) {
  fake_mesh mesh;
  agent a{config(mesh), echo_plans()};
  a.start();
  std::atomic<int> waiting{0};
  std::atomic<int> saw_running{0};
  auto waiter = [&] {
    ++waiting;
    a.wait();
    if (!a.stats().stopped) ++saw_running;
  };
  std::thread first{waiter};
  std::thread second{waiter};
  ASSERT_TRUE(eventually([&] { return waiting == 2; }));
  ASSERT_TRUE(eventually([&] { return a.stats().registered; }));
  a.drain();
  first.join();
  second.join();
  EXPECT_EQ(saw_running, 0);
}

// This test ensures an embedding program can take the agent's log lines
// and choose their level (they always went to stderr, at info).
TEST(agent, an_embedding_program_takes_the_log_and_sets_its_level) {
  log_capture log;
  EXPECT_FALSE(set_log_level("chatty"));
  {
    fake_mesh mesh;
    agent a{config(mesh), echo_plans()};
    a.start();
    mesh.submit("r1", "echo", json::object(), "x");
    ASSERT_TRUE(finished(mesh, "r1"));
    EXPECT_TRUE(
        eventually([&] { return log.count("info run r1 finished: success") == 1; }));
    EXPECT_EQ(log.count("registered as a1"), 1);
    ASSERT_TRUE(set_log_level("warn"));
    mesh.submit("r2", "echo", json::object(), "x");
    ASSERT_TRUE(finished(mesh, "r2"));
    a.drain();
    a.wait();
  }
  ASSERT_TRUE(set_log_level("info"));
  EXPECT_EQ(log.count("run r2"), 0) << "info lines were written at level warn";
}

// This test ensures no more runs execute at once than the capacity.
TEST(agent, capacity_bounds_parallel_runs) {
  fake_mesh mesh;
  auto blocker = std::make_shared<blocking_plan>();
  agent a{config(mesh), echo_plans(blocker)};
  a.start();
  for (auto id : {"r1", "r2", "r3"})
    mesh.submit(id, "block");
  ASSERT_TRUE(eventually([&] { return blocker->running == 2; }));
  // Several more polls pass with the third run offered; it must stay unstarted.
  auto polls = mesh.with([](fake_mesh& m) { return m.polls_; });
  ASSERT_TRUE(eventually(
      [&] { return mesh.with([](fake_mesh& m) { return m.polls_; }) >= polls + 2; }));
  EXPECT_EQ(blocker->running, 2);
  EXPECT_EQ(mesh.with([](fake_mesh& m) { return m.started_.size(); }), 2u);
  a.cancel_all();
  a.wait();
  EXPECT_EQ(mesh.with([](fake_mesh& m) { return m.max_running_; }), 2);
}

// This test ensures a drain lets a quick run finish, cancels a long one as
// agent_shutdown, and deregisters.
TEST(agent, drain_cancels_after_deadline) {
  fake_mesh mesh;
  agent a{config(mesh), echo_plans()};
  a.start();
  mesh.submit("r1", "block");
  ASSERT_TRUE(eventually([&] {
    return mesh.with([](fake_mesh& m) { return m.started_.count("r1") > 0; });
  }));
  a.drain();
  a.wait();
  mesh.with([](fake_mesh& m) {
    EXPECT_EQ(m.finished_["r1"]["status"], "canceled");
    EXPECT_EQ(m.finished_["r1"]["reason"], "agent_shutdown");
    EXPECT_TRUE(m.deregistered_);
    return 0;
  });
  EXPECT_TRUE(a.stats().stopped);
}

// This test ensures a plan that cleans up after the drain's cancel for
// longer than kill_grace + shutdown_result_grace still sends its last log
// lines and its result: the grace counted from the cancel, so both were
// dropped unsent with the mesh up.
TEST(agent, a_plan_cleaning_up_after_the_drain_cancel_still_reports) {
  fake_mesh mesh;
  auto cfg = config(mesh);
  cfg.drain_deadline = 0ms;
  cfg.kill_grace = 100ms;
  cfg.shutdown_result_grace = 100ms;
  plan_set plans;
  std::atomic<bool> running{false};
  plans["cleanup"] = std::make_shared<function_plan>([&running](run_context& ctx) {
    running = true;
    while (!ctx.cancel->wait_for(50ms)) {
    }
    // Cleanup that outlasts both graces (work, not a wait for anything).
    std::this_thread::sleep_for(600ms);
    ctx.log->line("cleanup done");
    return plan_result::failure("cleaned up");
  });
  agent a{cfg, plans};
  a.start();
  mesh.submit("r1", "cleanup");
  ASSERT_TRUE(eventually([&] { return running.load(); }));
  a.drain();
  a.wait();
  mesh.with([](fake_mesh& m) {
    EXPECT_EQ(m.finished_["r1"]["reason"], "agent_shutdown") << m.finished_["r1"].dump();
    EXPECT_EQ(m.finished_["r1"]["error"],
              "agent shut down before the run finished (the plan's error: cleaned up)");
    std::string log;
    for (auto& [seq, text] : m.logs_["r1"])
      log += text;
    EXPECT_NE(log.find("cleanup done"), std::string::npos) << log;
    return 0;
  });
}

// This test ensures a refused registration token stops the agent with a fatal error.
TEST(agent, bad_registration_token_is_fatal) {
  fake_mesh mesh;
  auto cfg = config(mesh);
  cfg.registration_token = "wrong";
  agent a{cfg, echo_plans()};
  a.start();
  a.wait();
  EXPECT_NE(a.stats().fatal_error.find("registration refused: HTTP 401: bad token"),
            std::string::npos)
      << a.stats().fatal_error;
}

// This test ensures a mesh answering 503 at registration is retried until it
// accepts, the first failure warned of naming the mesh's URL.
TEST(agent, registration_is_retried) {
  log_capture log;
  fake_mesh mesh;
  mesh.with([](fake_mesh& m) { return m.register_failures_ = 3; });
  agent a{config(mesh), echo_plans()};
  a.start();
  ASSERT_TRUE(eventually([&] { return a.stats().registered; }));
  EXPECT_EQ(mesh.with([](fake_mesh& m) { return m.register_attempts_; }), 4);
  EXPECT_EQ(a.stats().agent_id, "a1");
  EXPECT_EQ(log.count("warn cannot register with the mesh at " + mesh.url() + " ("), 1)
      << "the first of the retries, naming where it tries";
}

// This test ensures an agent whose polls got no answer (a mesh restarting)
// says the mesh answers again as soon as it does: the first poll after them
// asks no wait, for a long poll that succeeded said so only when its wait
// ended. A refusal (503: no long-poll room) is not followed by a quick look,
// which would pass and undo the backoff.
TEST(agent, says_at_once_that_the_mesh_answers_again) {
  log_capture log;
  fake_mesh mesh;
  agent a{config(mesh), echo_plans()};
  a.start();
  ASSERT_TRUE(eventually([&] { return a.stats().registered; }));
  ASSERT_TRUE(
      eventually([&] { return mesh.with([](fake_mesh& m) { return m.polls_; }) > 0; }));
  mesh.with([](fake_mesh& m) { return m.poll_failures_ = 2; });
  ASSERT_TRUE(eventually([&] { return log.count("info the mesh answers again") == 1; }));
  a.drain();
  a.wait();
  auto waits = mesh.with([](fake_mesh& m) { return m.poll_waits_; });
  auto failed = std::find(waits.begin(), waits.end(), "0");
  ASSERT_NE(failed, waits.begin()) << "the first polls wait";
  EXPECT_EQ(log.count("poll failed"), 1) << "the second failure is at debug";
  // The polls before the failures waited; the two after each failure and
  // the quick look did not.
  size_t first_quick = static_cast<size_t>(failed - waits.begin());
  ASSERT_GE(waits.size(), first_quick + 2);
  EXPECT_NE(waits[first_quick - 1], "0");
  EXPECT_EQ(waits[first_quick], "0");
  EXPECT_EQ(waits[first_quick + 1], "0");

  fake_mesh refusing;
  refusing.with([](fake_mesh& m) { return m.poll_refusals_ = 2; });
  agent b{config(refusing), echo_plans()};
  b.start();
  ASSERT_TRUE(eventually(
      [&] { return refusing.with([](fake_mesh& m) { return m.polls_; }) >= 4; }));
  b.drain();
  b.wait();
  auto asked = refusing.with([](fake_mesh& m) { return m.poll_waits_; });
  EXPECT_EQ(std::count(asked.begin(), asked.begin() + 4, "0"), 0)
      << "no quick look after a 503";
}

// This test ensures an agent registers with its installation's id, the same
// after a restart on the same work root; and registers without one, warning,
// when the mesh is older and refuses the field.
TEST(agent, registers_with_its_installation_and_without_it_on_an_older_mesh) {
  fake_mesh mesh;
  for (int i = 0; i < 2; ++i) {
    agent a{config(mesh), echo_plans()};
    a.start();
    ASSERT_TRUE(eventually([&] { return a.stats().registered; }));
    a.drain();
    a.wait();
  }
  auto regs = mesh.with([](fake_mesh& m) { return m.registrations_; });
  ASSERT_EQ(regs.size(), 2u);
  auto id = regs[0].value("instance", "");
  EXPECT_EQ(id.size(), 32u) << regs[0].dump();
  EXPECT_EQ(regs[1].value("instance", ""), id) << "a restart keeps the installation";
  std::ifstream file{mesh.work_root() / ".agent-unit-agent"};
  std::string first_line;
  std::getline(file, first_line);
  EXPECT_EQ(first_line, id);

  fake_mesh older;
  older.with([](fake_mesh& m) { return m.refuse_instance_ = true; });
  log_capture log;
  agent a{config(older), echo_plans()};
  a.start();
  ASSERT_TRUE(eventually([&] { return a.stats().registered; }));
  a.drain();
  a.wait();
  EXPECT_EQ(older.with([](fake_mesh& m) { return m.register_attempts_; }), 2);
  auto kept = older.with([](fake_mesh& m) { return m.registrations_; });
  ASSERT_EQ(kept.size(), 1u);
  EXPECT_FALSE(kept[0].contains("instance")) << kept[0].dump();
  EXPECT_GE(log.count("a meshd older than this agent"), 1);
}

// This test ensures an agent whose session the mesh ended while another
// installation took its name waits, without stopping, until the name is
// free, and goes on under its new session: the session number that jumped
// meanwhile (the other agent's session) is not taken for a takeover. The
// wait warns once, and again after another outcome (the mesh failing).
TEST(agent, waits_while_another_installation_holds_its_name_then_goes_on) {
  log_capture log;
  fake_mesh mesh;
  mesh.with([](fake_mesh& m) { return m.count_sessions_ = true; });
  agent a{config(mesh), echo_plans()};
  a.start();
  mesh.submit("r1", "echo", json::object(), "before");
  ASSERT_TRUE(finished(mesh, "r1"));
  // The mesh ends the session (the agent was offline, say) and another
  // installation registers under the name, holding it until told.
  mesh.with([](fake_mesh& m) {
    m.token_ = "ended";
    m.session_ += 1;
    return m.name_in_use_ = 1000000;
  });
  const std::string waiting =
      "warn cannot register yet: an agent named 'unit-agent' is connected";
  ASSERT_TRUE(eventually([&] { return log.count(waiting) == 1; }));
  EXPECT_EQ(
      log.count("warn the mesh ended this agent's session, and another installation "
                "registered under its name meanwhile"),
      1);
  mesh.with([](fake_mesh& m) { return m.register_failures_ = 1; });
  ASSERT_TRUE(eventually([&] { return log.count(waiting) == 2; }));
  mesh.with([](fake_mesh& m) { return m.name_in_use_ = 0; });
  ASSERT_TRUE(eventually([&] {
    return mesh.with([](fake_mesh& m) { return m.registrations_.size(); }) == 2;
  }));
  mesh.submit("r2", "echo", json::object(), "after");
  ASSERT_TRUE(finished(mesh, "r2"));
  EXPECT_EQ(a.stats().fatal_error, "");
  EXPECT_EQ(log.count(waiting), 2) << "a warning on each try";
  EXPECT_EQ(log.count("another agent registered"), 0);
  a.drain();
  a.wait();
  EXPECT_EQ(a.stats().fatal_error, "");
  EXPECT_TRUE(mesh.with([](fake_mesh& m) { return m.deregistered_; }));
}

// This test ensures a log line stays one line and says exactly what its
// text held (an artifact's file name, say): control characters come as
// escapes, the C1 ones and the line and paragraph separators too, bytes
// that are not UTF-8 as `\xNN`, a backslash doubled (so `\n` in a name
// cannot pass for an escaped newline); a tab and UTF-8 as they are.
TEST(agent, a_log_line_cannot_be_split_or_drive_the_terminal) {
  log_capture log;
  polymesh::log(polymesh::log_level::warn,
                "artifact 'evil\n2026-12-05T00:00:00Z info forged\r\x1b[31mred\x7f\tü'");
  polymesh::log(polymesh::log_level::warn,
                "a\\nb \xc2\x9b"
                "31m \xc2\x85 \xe2\x80\xa8 \xe2\x80\xa9 \x9b \xc0\xaf "
                "\xed\xa0\x80 \xe2\x82 € 😀 \xc2\xa0.");
  // Bidirectional overrides and isolates turn a name around on screen.
  polymesh::log(polymesh::log_level::warn,
                "evil\xe2\x80\xaetxt.exe \xe2\x80\xaa \xe2\x81\xa6 "
                "\xe2\x81\xa9 \xe2\x80\xa7 \xe2\x81\xaa \xe2\x80\x8e \xe2\x80\x8f "
                "\xe2\x80\x8d");
  auto lines = log.lines();
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_EQ(lines[2],
            "warn evil\\u202etxt.exe \\u202a \\u2066 \\u2069 \xe2\x80\xa7 \xe2\x81\xaa "
            "\\u200e \\u200f \xe2\x80\x8d");
  EXPECT_EQ(
      lines[0],
      "warn artifact 'evil\\n2026-12-05T00:00:00Z info forged\\r\\x1b[31mred\\x7f\tü'");
  EXPECT_EQ(lines[1], "warn a\\\\nb \\u009b31m \\u0085 \\u2028 \\u2029 \\x9b \\xc0\\xaf "
                      "\\xed\\xa0\\x80 \\xe2\\x82 € 😀 \xc2\xa0.");
}

// This test ensures an agent that an admin's drain holds says so when it
// registers (it takes no runs until the undrain), and one that is not
// drained, or drained by itself, does not.
TEST(agent, says_when_an_admins_drain_holds_it) {
  log_capture log;
  auto warned = [&] {
    return log.count("warn agent 'unit-agent' is drained by an admin: it takes no new "
                     "runs until `meshctl agents undrain unit-agent`");
  };
  for (auto drained_by : {json(nullptr), json("agent"), json("admin")}) {
    fake_mesh mesh;
    mesh.with([&](fake_mesh& m) { return m.drained_by_ = drained_by; });
    agent a{config(mesh), echo_plans()};
    a.start();
    ASSERT_TRUE(eventually([&] { return a.stats().registered; }));
    a.drain();
    a.wait();
    EXPECT_EQ(warned(), drained_by == "admin" ? 1 : 0) << drained_by.dump();
  }
}

// This test ensures the access token is refreshed before it expires and later calls use
// the new one.
TEST(agent, token_is_refreshed_before_expiry) {
  fake_mesh mesh;
  mesh.with([](fake_mesh& m) { return m.token_life_ = 1500ms; });
  agent a{config(mesh), echo_plans()};
  a.start();
  ASSERT_TRUE(eventually(
      [&] { return mesh.with([](fake_mesh& m) { return m.refreshes_; }) >= 2; }));
  mesh.submit("r1", "echo", json::object(), "after refresh");
  ASSERT_TRUE(finished(mesh, "r1"));
  EXPECT_EQ(mesh.with([](fake_mesh& m) { return m.unauthorized_; }), 0);
}

// This test ensures the token's renewal is timed from its life in seconds, not from
// its expiry time read on the agent's own wall clock: a mesh whose clock is an hour
// behind (the token "expired" already) is not asked for a new token every second, and
// one an hour ahead (the token "lasts" an hour more) gets its renewal in time.
TEST(agent, token_renewal_ignores_the_difference_between_the_clocks) {
  {
    fake_mesh mesh;
    mesh.with([](fake_mesh& m) {
      m.token_life_ = std::chrono::hours{1};
      return m.clock_behind_ = std::chrono::hours{1};
    });
    agent a{config(mesh), echo_plans()};
    a.start();
    // Polls wait a second each (`poll_wait_max_s`): three of them outlast the 1 s
    // renewal a token read as expired would get.
    ASSERT_TRUE(eventually(
        [&] { return mesh.with([](fake_mesh& m) { return m.polls_; }) >= 3; }));
    EXPECT_EQ(mesh.with([](fake_mesh& m) { return m.refreshes_; }), 0);
  }
  fake_mesh mesh;
  mesh.with([](fake_mesh& m) {
    m.token_life_ = 1500ms;
    return m.clock_behind_ = -std::chrono::hours{1};
  });
  agent a{config(mesh), echo_plans()};
  a.start();
  ASSERT_TRUE(eventually(
      [&] { return mesh.with([](fake_mesh& m) { return m.refreshes_; }) >= 2; }));
}

// This test ensures a draining agent keeps renewing its token while its runs
// end: the renewal lived in the poll loop only, so a drain longer than the
// token's remaining life ended the session, and the runs with it.
TEST(agent, a_draining_agent_keeps_renewing_its_token) {
  fake_mesh mesh;
  mesh.with([](fake_mesh& m) { return m.token_life_ = 1500ms; });
  auto blocker = std::make_shared<blocking_plan>();
  auto cfg = config(mesh);
  cfg.drain_deadline = 60s; // far beyond the renewals, however slow the host
  agent a{cfg, echo_plans(blocker)};
  a.start();
  mesh.submit("r1", "block");
  ASSERT_TRUE(eventually([&] { return blocker->running == 1; }));
  a.drain();
  auto before = mesh.with([](fake_mesh& m) { return m.refreshes_; });
  EXPECT_TRUE(eventually(
      [&] { return mesh.with([](fake_mesh& m) { return m.refreshes_; }) >= before + 2; },
      30s));
  EXPECT_EQ(blocker->running, 1) << "the drain outlasted the renewals";
  // The drain ends with its run, canceled through its heartbeat (a
  // draining agent no longer polls).
  mesh.with([](fake_mesh& m) { return m.cancel_by_progress_.insert("r1").second; });
  a.wait();
}

// This test ensures a cancel that arrives while the run waits for a free slot is applied
// when it starts (regression: the run used to run until the next heartbeat).
TEST(agent, cancel_for_deferred_run_is_kept) {
  fake_mesh mesh;
  auto blocker = std::make_shared<blocking_plan>();
  auto cfg = config(mesh);
  cfg.capacity = 1;
  agent a{cfg, echo_plans(blocker)};
  a.start();
  mesh.submit("r1", "block");
  ASSERT_TRUE(eventually([&] { return blocker->running == 1; }));
  mesh.submit("r2", "block");
  mesh.cancel("r2"); // r2 is offered but no slot is free
  ASSERT_TRUE(
      eventually([&] { return mesh.with([](fake_mesh& m) { return m.polls_; }) >= 3; }));
  mesh.cancel("r1");
  ASSERT_TRUE(eventually(
      [&] { return mesh.with([](fake_mesh& m) { return m.finished_.count("r2") > 0; }); },
      5s));
  mesh.with([](fake_mesh& m) {
    EXPECT_EQ(m.finished_["r2"]["status"], "canceled");
    EXPECT_EQ(m.finished_["r2"]["reason"], "canceled_by_user");
    return 0;
  });
}

// This test ensures a revoked session is recovered: refresh refused, register again,
// carry on.
TEST(agent, revoked_token_leads_to_new_session) {
  fake_mesh mesh;
  agent a{config(mesh), echo_plans()};
  a.start();
  ASSERT_TRUE(eventually([&] { return a.stats().registered; }));
  mesh.with([](fake_mesh& m) { return m.token_ = "revoked"; });
  mesh.submit("r1", "echo", json::object(), "still here");
  ASSERT_TRUE(finished(mesh, "r1"));
  EXPECT_EQ(mesh.with([](fake_mesh& m) { return m.registrations_.size(); }), 2u);
  EXPECT_EQ(mesh.with([](fake_mesh& m) { return m.finished_["r1"]["result"]; }),
            "still here");
}

// This test ensures a run whose reports the mesh refuses because another
// session of the agent started it (the agent registered again since) costs
// one warning and no request after the first refusal: its further log
// chunks, its artifacts and its result are dropped, and its plan, writing
// into a full log buffer, goes on. Each refused request used to be followed
// by the next, each with a warning of its own.
TEST(agent, a_run_another_session_holds_gets_one_warning_and_no_more_requests) {
  log_capture log;
  {
    fake_mesh mesh;
    mesh.with([](fake_mesh& m) { return m.held_elsewhere_.insert("r1").second; });
    auto cfg = config(mesh);
    cfg.log_chunk_bytes = 64;
    cfg.log_buffer_bytes = 256;
    agent a{cfg, echo_plans()};
    a.start();
    mesh.submit("r1", "output_and_artifacts");
    ASSERT_TRUE(eventually([&] { return a.stats().finished == 1; }));
    a.drain();
    a.wait();
    mesh.with([](fake_mesh& m) {
      EXPECT_EQ(m.refused_["r1"], 1);
      EXPECT_TRUE(m.artifacts_["r1"].empty());
      EXPECT_TRUE(m.logs_["r1"].empty());
      return 0;
    });
  }
  std::vector<std::string> warnings;
  for (auto& line : log.lines())
    if (line.rfind("warn ", 0) == 0 && line.find("r1") != std::string::npos)
      warnings.push_back(line);
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_NE(warnings[0].find(std::string{polymesh::other_session_holds_run}),
            std::string::npos)
      << warnings[0];
  EXPECT_NE(warnings[0].find("sending nothing more for it"), std::string::npos)
      << warnings[0];
}

// This test ensures a plan's progress message reaches the mesh.
TEST(agent, progress_is_reported) {
  fake_mesh mesh;
  agent a{config(mesh), echo_plans()};
  a.start();
  mesh.submit("r1", "progress");
  ASSERT_TRUE(eventually([&] {
    return mesh.with([](fake_mesh& m) {
      auto& p = m.progress_["r1"];
      return std::find(p.begin(), p.end(), "step 1 of 2") != p.end();
    });
  }));
  mesh.cancel("r1");
  ASSERT_TRUE(finished(mesh, "r1"));
}

// This test ensures the last progress message reaches the mesh before the
// result even when the plan returns right after it (within the rate limit):
// "the last message wins" (plan.hpp), but it used to be dropped.
TEST(agent, the_last_progress_message_is_sent_when_the_plan_returns_at_once) {
  fake_mesh mesh;
  auto got = [&mesh](const std::string& message) {
    return mesh.with([&](fake_mesh& m) {
      auto& p = m.progress_["r1"];
      return std::find(p.begin(), p.end(), message) != p.end();
    });
  };
  // The first message goes out; the second, within the rate limit of the
  // first, waits for the shipper's next turn, which the plan's return ended.
  plan_set plans;
  plans["steps"] = std::make_shared<function_plan>([&got](run_context& ctx) {
    ctx.progress("step 1 of 2");
    if (!eventually([&] { return got("step 1 of 2"); }))
      return plan_result::failure("the first message never arrived");
    ctx.progress("step 2 of 2");
    return plan_result::success();
  });
  agent a{config(mesh), plans};
  a.start();
  mesh.submit("r1", "steps");
  ASSERT_TRUE(finished(mesh, "r1"));
  mesh.with([](fake_mesh& m) {
    EXPECT_EQ(m.finished_["r1"]["status"], "success") << m.finished_["r1"].dump();
    auto& p = m.progress_["r1"];
    EXPECT_EQ(p.empty() ? std::string{} : p.back(), "step 2 of 2");
    return 0;
  });
}

// This test ensures a progress message longer than the mesh takes (4096
// bytes) is cut there, on a character boundary, instead of being refused
// with the heartbeat that carries it (the run then expired while it ran).
TEST(agent, a_long_progress_message_is_cut_to_what_the_mesh_takes) {
  fake_mesh mesh;
  agent a{config(mesh), echo_plans()};
  a.start();
  auto message = std::string(4095, 'x') + "\u00e9 and more";
  mesh.submit("r1", "progress", json{{"message", message}});
  ASSERT_TRUE(eventually([&] {
    return mesh.with([](fake_mesh& m) { return !m.progress_["r1"].empty(); });
  }));
  mesh.cancel("r1");
  ASSERT_TRUE(finished(mesh, "r1"));
  EXPECT_EQ(mesh.with([](fake_mesh& m) { return m.progress_["r1"].front(); }),
            std::string(4095, 'x'));
}

// This test ensures a 2xx registration answer that is not the expected JSON is retried,
// not a crash.
TEST(agent, malformed_registration_answer_is_retried) {
  fake_mesh mesh;
  mesh.with([](fake_mesh& m) { return m.register_garbage_ = 2; });
  agent a{config(mesh), echo_plans()};
  a.start();
  ASSERT_TRUE(eventually([&] { return a.stats().registered; }));
  EXPECT_EQ(mesh.with([](fake_mesh& m) { return m.register_attempts_; }), 3);
}

// This test ensures each run starts in empty directories even though they are
// reused, that a run id which is not a plain name is never used as a path,
// and that a stopped agent leaves its work root empty.
TEST(agent, run_directories_are_empty_reused_and_cleaned_up) {
  fake_mesh mesh;
  auto cfg = config(mesh);
  cfg.capacity = 1;
  auto tmpl = (std::filesystem::temp_directory_path() / "polymesh-agent-XXXXXX").string();
  ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
  cfg.work_root = std::filesystem::path{tmpl} / "root";
  auto plans = echo_plans();
  plans["scribble"] = std::make_shared<function_plan>([](run_context& ctx) {
    namespace fs = std::filesystem;
    if (!fs::is_empty(ctx.work_dir) || !fs::is_empty(ctx.artifacts_dir))
      return plan_result::failure("directories not empty at the start");
    std::ofstream{ctx.work_dir / "scratch.txt"} << ctx.run_id;
    return plan_result::success();
  });
  agent a{cfg, plans};
  a.start();
  mesh.submit("../escape", "scribble");
  mesh.submit(".spare-1-0", "scribble"); // would be taken for a kept directory
  mesh.submit("r1", "scribble");
  ASSERT_TRUE(finished(mesh, "r1"));
  mesh.submit("r2", "scribble");
  ASSERT_TRUE(finished(mesh, "r2"));
  EXPECT_TRUE(mesh.with([](fake_mesh& m) {
    EXPECT_EQ(m.finished_["r1"]["status"], "success");
    EXPECT_EQ(m.finished_["r2"]["status"], "success") << m.finished_["r2"].dump();
    return m.started_.count("../escape") + m.started_.count(".spare-1-0");
  }) == 0u);
  mesh.withdraw("../escape");
  mesh.withdraw(".spare-1-0");
  EXPECT_FALSE(std::filesystem::exists(std::filesystem::path{tmpl} / "escape"));
  a.drain();
  a.wait();
  // Only the agent's installation stays, for its next start.
  std::vector<std::string> left;
  for (auto& e : std::filesystem::directory_iterator{cfg.work_root})
    left.push_back(e.path().filename().string());
  EXPECT_EQ(left, std::vector<std::string>{".agent-" + cfg.name});
  std::filesystem::remove_all(tmpl);
}

// This test ensures a run's directory with a process the run left running
// in it (on purpose, without its tracking entry, so it outlives the run) is
// not handed to the next run: that process's working directory used to
// become the next run's. A run that leaves nothing has its directory reused.
TEST(agent, a_directory_a_leftover_process_is_in_is_not_reused) {
  namespace fs = std::filesystem;
  fake_mesh mesh;
  auto cfg = config(mesh);
  cfg.capacity = 1; // each run starts after the one before was cleaned up
  auto pid_file = mesh.work_root().parent_path() /
                  (mesh.work_root().filename().string() + "-leftover.pid");
  auto plans = echo_plans();
  plans["leave"] = std::make_shared<function_plan>([&](run_context& ctx) {
    process_spec spec;
    spec.argv = {
        "sh", "-c",
        "env -u POLYMESH_TRACKING_ID setsid sh -c 'echo $$ > \"$0\"; exec sleep 600'"
        " \"$0\" </dev/null >/dev/null 2>&1 & while [ ! -s \"$0\" ]; do sleep 0.01;"
        " done",
        pid_file.string()};
    spec.env = {{"PATH", "/usr/bin:/bin"}};
    spec.cwd = ctx.work_dir.string();
    auto out = run_process(spec, *ctx.log, *ctx.cancel);
    return out.success() ? plan_result::success() : plan_result::failure(out.describe());
  });
  // Whether the leftover's working directory is this run's.
  std::atomic<bool> shared{false};
  plans["look"] = std::make_shared<function_plan>([&](run_context& ctx) {
    pid_t pid = 0;
    std::ifstream{pid_file} >> pid;
    std::error_code ec;
    auto cwd = fs::read_symlink("/proc/" + std::to_string(pid) + "/cwd", ec);
    shared = cwd == fs::canonical(ctx.work_dir, ec);
    return plan_result::success();
  });
  agent a{cfg, plans};
  a.start();
  mesh.submit("r1", "leave");
  ASSERT_TRUE(finished(mesh, "r1"));
  mesh.submit("r2", "look");
  ASSERT_TRUE(finished(mesh, "r2"));
  a.drain();
  a.wait();
  pid_t pid = 0;
  std::ifstream{pid_file} >> pid;
  ASSERT_GT(pid, 0);
  EXPECT_EQ(::kill(pid, 0), 0) << "the process left on purpose was ended";
  ::kill(pid, SIGKILL);
  fs::remove(pid_file);
  EXPECT_TRUE(mesh.with([](fake_mesh& m) {
    return m.finished_["r1"]["status"] == "success" &&
           m.finished_["r2"]["status"] == "success";
  }));
  EXPECT_FALSE(shared) << "r2 got the directory r1's leftover process is in";
}

// This test ensures runs that start and end together (their starts and
// finishes may share reports) are each started and finished exactly once,
// with their own results.
TEST(agent, runs_ending_together_are_each_reported_once) {
  fake_mesh mesh;
  auto cfg = config(mesh);
  cfg.capacity = 8;
  agent a{cfg, echo_plans()};
  a.start();
  ASSERT_TRUE(eventually([&] { return a.stats().registered; }));
  for (int i = 0; i < 8; ++i)
    mesh.submit("r" + std::to_string(i), "echo", json::object(),
                "out " + std::to_string(i));
  for (int i = 0; i < 8; ++i)
    ASSERT_TRUE(finished(mesh, "r" + std::to_string(i)));
  mesh.with([](fake_mesh& m) {
    EXPECT_EQ(m.started_.size(), 8u);
    for (int i = 0; i < 8; ++i) {
      auto id = "r" + std::to_string(i);
      EXPECT_EQ(m.finish_attempts_[id].size(), 1u) << id;
      EXPECT_EQ(m.finished_[id]["result"], "out " + std::to_string(i));
      EXPECT_EQ(m.finished_[id]["status"], "success");
    }
    return 0;
  });
}
