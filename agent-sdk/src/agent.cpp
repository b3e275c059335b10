// The agent runtime. Four kinds of threads:
// - the main thread (`loop`): registration, the one long-poll, token
//   renewal, handing runs to workers, and the drain at the end;
// - one worker per run (`work`): start, the plan, the final flush, finish
//   (the starts and finishes of runs that reach them together go in one
//   report, see `report_batcher`);
// - a log shipper per run that needs one (`ship`): log chunks and progress
//   heartbeats, which is also how a cancel request reaches a run between
//   polls. It starts with the run's first output or progress message, or
//   when its first heartbeat is near (see `on_demand.hpp`);
// - the `deadline_runner`'s thread, which starts those shippers.
// Workers and shippers run on `thread_pool` threads, kept between runs.
// Shared state lives in `impl` under `mtx_`; a run's own state in its
// `run_slot`.
#include "polymesh/sdk/agent.hpp"

#include "backoff.hpp"
#include "installation.hpp"
#include "log_buffer.hpp"
#include "mesh/domain/error.hpp"
#include "mesh/domain/labels.hpp"
#include "mesh/domain/log.hpp"
#include "mesh/wire/ca_file.hpp"
#include "mesh/wire/mesh_url.hpp"
#include "mesh_client.hpp"
#include "on_demand.hpp"
#include "polymesh/sdk/cancel_source.hpp"
#include "polymesh/sdk/process.hpp"
#include "polymesh/sdk/settings.hpp"
#include "process_tracking.hpp"
#include "recent_runs.hpp"
#include "report_batcher.hpp"
#include "run_dirs.hpp"
#include "thread_pool.hpp"
#include "utf8_start.hpp"

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <fstream>
#include <iterator>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <stdexcept>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <thread>
#include <unistd.h>
#include <utility>

namespace polymesh::sdk {

namespace {

using steady = std::chrono::steady_clock;
using std::chrono::milliseconds;

/// Chunks sent in one POST, and their data bytes at most (less when the
/// mesh's body limit needs it, see `mesh_limits`).
constexpr size_t chunks_per_request = 64;
constexpr size_t log_bytes_per_request = 128 * 1024;
/// Runs remembered after they ended (and cancels of runs not yet here), so
/// that an offer of one again is answered rather than run twice; and the
/// bytes of their finishes kept to answer with (`recent_runs`).
constexpr size_t recent_runs_kept = 4096;
constexpr size_t recent_finish_bytes = size_t{16} << 20;
/// Plan progress messages are sent at most this often.
constexpr milliseconds progress_min_interval{1000};
/// A worker or shipper thread idle this long ends.
constexpr milliseconds idle_thread_linger{10000};
/// Shippers due within this of each other are started together.
constexpr milliseconds shipper_start_slack{250};
/// While another installation holds the agent's name, how often the wait
/// says so at `warn` (each try is logged at `debug`).
constexpr std::chrono::minutes name_in_use_warn_every{5};

void info(const std::string& text) {
  polymesh::log(log_level::info, text);
}
void warn(const std::string& text) {
  polymesh::log(log_level::warn, text);
}

/// Warnings of calls retried while the mesh is out of reach. The first of a
/// kind (`poll`, `result`, ...) is a `warn`; more of that kind within
/// `retry_warn_every` are `debug` lines, counted, and the next `warn` says
/// how many there were. An outage cost a warning per run and backoff step,
/// which buried the lines that mattered.
class retry_warnings {
public:
  void operator()(const std::string& kind, const std::string& text) {
    auto now = steady::now();
    std::unique_lock<std::mutex> guard{mtx_};
    auto& k = kinds_[kind];
    if (k.warned && now - *k.warned < retry_warn_every) {
      ++k.hidden;
      guard.unlock();
      polymesh::log(log_level::debug, text);
      return;
    }
    auto hidden = std::exchange(k.hidden, 0);
    k.warned = now;
    guard.unlock();
    warn(hidden == 0 ? text
                     : text + " (and " + std::to_string(hidden) + " more such " +
                           (hidden == 1 ? "retry" : "retries") +
                           " since the last warning, logged at debug)");
  }

private:
  static constexpr std::chrono::minutes retry_warn_every{1};
  struct kind_state {
    std::optional<steady::time_point> warned;
    size_t hidden = 0;
  };
  std::mutex mtx_;
  std::map<std::string, kind_state> kinds_;
};

/// The last `n` bytes of `s`, not starting inside a UTF-8 character.
std::string tail_of(const std::string& s, size_t n) {
  if (s.size() <= n) return s;
  return s.substr(utf8_start(s, s.size() - n));
}

/// The first at most `n` bytes of `s`, not splitting a UTF-8 character
/// (cut where the log buffer ends a full chunk).
std::string head_of(const std::string& s, size_t n) {
  if (s.size() <= n) return s;
  return s.substr(0,
                  n - log_buffer::incomplete_utf8_tail(std::string_view{s}.substr(0, n)));
}

std::string host_name() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof buf - 1) != 0) return "unknown";
  return buf;
}

/// `polymesh-agent-NAME` in the temporary directory (TMPDIR, TMP, TEMP or
/// TEMPDIR, else /tmp); empty, and `why` said, when the variable names no
/// directory (the standard library would throw).
std::filesystem::path default_work_root(const std::string& name,
                                        std::string* why = nullptr) {
  std::error_code ec;
  auto tmp = std::filesystem::temp_directory_path(ec);
  if (ec) {
    if (why) {
      std::string var = "TMPDIR", where = "/tmp";
      for (const char* v : {"TMPDIR", "TMP", "TEMP", "TEMPDIR"})
        if (const char* dir = std::getenv(v)) {
          var = v;
          where = var + " names '" + dir + "', which";
          break;
        }
      *why = "work_dir: not set, and its default is in the temporary directory, but " +
             where + " is not a directory (" + ec.message() + "): set work_dir, or " +
             var + " to a directory";
    }
    return {};
  }
  return tmp / ("polymesh-agent-" + name);
}

/// `c` with the defaults that depend on the machine filled in.
agent_config with_defaults(agent_config c) {
  if (c.work_root.empty()) c.work_root = default_work_root(c.name);
  if (c.hostname.empty()) c.hostname = host_name();
  return c;
}

/// What tells one offer of run `r` from another: its assignment. A poll that
/// crossed the run's start carries the offer the agent took again; a meshd
/// restored from an older backup assigns the run anew.
std::string offer_of(const run_record& r) {
  return std::to_string(r.attempts) + "@" +
         (r.assigned_at ? std::to_string(r.assigned_at->time_since_epoch().count())
                        : std::string{"-"});
}

/// Whether `id` can name a directory under the work root: one path segment,
/// not hidden (the mesh's ids always are; a broken or hostile answer must
/// not make the agent create or remove anything elsewhere).
bool usable_run_id(const std::string& id) {
  return !id.empty() && id.size() <= 255 && id.front() != '.' &&
         id.find('/') == std::string::npos && id.find('\0') == std::string::npos;
}

/// What the agent says of a run's artifacts (one skipped, one the mesh
/// refused): each in the agent's log, and the first 20 in the run's own, on
/// stderr, for whoever submitted it (`[polymesh: artifact 'x' skipped: …]`);
/// `close` then says there how many more there were. The lines reach the
/// mesh only with a flush of the run's log after them.
class artifact_warnings {
public:
  /// `more` names what the lines left out of the run's log say ("skipped").
  artifact_warnings(std::string run_id, log_sink& run_log, std::string more)
      : run_id_(std::move(run_id))
      , run_log_(run_log)
      , more_(std::move(more)) {}

  void operator()(const std::string& what) {
    warn("run " + run_id_ + ": " + what);
    if (++count_ <= shown) run_log_.write(log_stream::err, "[polymesh: " + what + "]\n");
  }

  void close() {
    if (count_ > shown)
      run_log_.write(log_stream::err, "[polymesh: " + std::to_string(count_ - shown) +
                                          " more artifacts " + more_ +
                                          "; the agent's log names them]\n");
  }

private:
  static constexpr size_t shown = 20;
  std::string run_id_;
  log_sink& run_log_;
  std::string more_;
  size_t count_ = 0;
};

} // namespace

std::string agent_config::validate() const {
  if (mesh_url.empty()) return "mesh_url: is required";
  if (auto e = wire::mesh_url_problem(mesh_url); !e.empty()) return "mesh_url: " + e;
  if (!mesh_ca_file.empty() && ::access(mesh_ca_file.c_str(), R_OK) != 0)
    return "mesh_ca_file: cannot read '" + mesh_ca_file + "'";
  if (!mesh_ca_file.empty() && !wire::holds_a_pem_certificate(mesh_ca_file))
    return "mesh_ca_file: '" + mesh_ca_file +
           "' holds no PEM certificate (it must hold that of the CA that signed the "
           "mesh's)";
  if (registration_token.empty()) return "registration_token: is required";
  // It goes into a header: a line break (read with its file's last line)
  // cut the request short, and the mesh answered something else.
  if (std::any_of(registration_token.begin(), registration_token.end(),
                  [](unsigned char c) { return c <= ' ' || c == 0x7f; }))
    return "registration_token: has a space, tab, line break or control character in it "
           "(a line break read from its file?)";
  // What the mesh's registration refuses, found before the agent registers.
  if (auto e = wire::validate_agent_identity(name, version, hostname))
    return field_of(e) + ": " + message_of(e);
  if (auto e = validate_labels(label_map{labels.begin(), labels.end()}))
    return field_of(e) + ": " + message_of(e);
  if (capacity < 1 || capacity > 4096) return "capacity: must be between 1 and 4096";
  // A chunk ends on a character boundary: it must hold the longest (4 bytes).
  if (log_chunk_bytes < 4 || log_chunk_bytes > 64 * 1024)
    return "log_chunk_bytes: must be between 4 and 65536";
  if (log_buffer_bytes < log_chunk_bytes)
    return "log_buffer_bytes: must be at least log_chunk_bytes";
  if (backoff_initial.count() < 1) return "backoff.initial: must be at least 1ms";
  if (backoff_max < backoff_initial)
    return "backoff.max: must be at least backoff.initial (" +
           duration_text(backoff_initial) + "), got " + duration_text(backoff_max);
  if (poll_wait.count() < 0) return "poll_wait: must not be negative";
  if (request_timeout.count() < 1) return "request_timeout: must be at least 1ms";
  if (drain_deadline.count() < 0) return "drain_deadline: must not be negative";
  if (kill_grace.count() < 0) return "kill_grace: must not be negative";
  if (shutdown_result_grace.count() < 0)
    return "shutdown_result_grace: must not be negative";
  if (upload_retry_for.count() < 0 || upload_retry_for > std::chrono::hours{24})
    return "upload_retry_for: must be between 0 and 1d";
  if (log_flush_interval.count() < 1) return "log_flush_interval: must be at least 1ms";
  if (deregister_timeout.count() < 1) return "deregister_timeout: must be at least 1ms";
  if (std::string why; work_root.empty() && default_work_root(name, &why).empty())
    return why;
  return {};
}

/// Why the retries of a finished run's last uploads (log chunks, progress
/// message, artifacts) stopped short.
enum class upload_stop {
  /// They did not: everything was sent, or refused for good.
  none,
  /// `upload_retry_for` passed since the plan returned.
  retry_time_over,
  /// A cancel of the run came after its plan returned.
  canceled,
  /// The drain's `shutdown_result_grace` passed.
  shutting_down,
};

/// What a finished run's last uploads left unsent when their retries
/// stopped, for the one warning that says so.
struct upload_loss {
  upload_stop why = upload_stop::none;
  /// The failure of the try after which they stopped.
  std::string last_failure;
  size_t log_bytes = 0;
  bool progress = false;
  std::vector<std::string> artifacts;
};

/// One run in flight.
struct run_slot {
  run_slot(run_record r, std::optional<steady::time_point> deadline)
      : run(std::move(r))
      , cancel(deadline) {}

  run_record run;
  cancel_source cancel;
  /// The mesh ended the run without us (it ended our session, or the run
  /// itself: the agent was offline too long): its end is recorded there, so
  /// it is not reported.
  std::atomic<bool> ended_by_mesh{false};
  /// How the mesh ended it, for the log: "with the agent's session" or
  /// the mesh's words. Set before `ended_by_mesh`.
  std::string ended_how = "with the agent's session";
  /// The plan has returned; only its result is still to be sent.
  std::atomic<bool> plan_returned{false};
  /// The plan was called (not refused before: canceled, no such plan).
  std::atomic<bool> plan_started{false};
  /// Set for a run this agent already ran, offered again: it is answered
  /// with what is remembered of it (`answer_again`), never run. Its
  /// `plan_returned` is set from the start: only a finish is to be sent.
  std::optional<recent_runs::memory> recalled;
  /// When the plan returned, plus `upload_retry_for`: no retry of the run's
  /// last uploads starts after it. Set before `plan_returned`.
  steady::time_point uploads_until{};
  /// A cancel of the run came after its plan returned: the retries of its
  /// last uploads stop at once (its outcome stays what it was). Set under
  /// the agent's `mtx`, which `upload_nap` waits on.
  std::atomic<bool> canceled_while_uploading{false};
  /// The mesh refused a report because another session of this agent holds
  /// the run: nothing more is sent for it.
  std::atomic<bool> held_elsewhere{false};
  std::mutex mtx;
  std::string progress;
  bool progress_dirty = false;
  /// Under `mtx`.
  upload_loss lost;
};

struct agent::impl {
  impl(agent_config c, plan_set p)
      : cfg(with_defaults(std::move(c)))
      , plans(std::move(p))
      , client(cfg.mesh_url, cfg.request_timeout, connection_linger, cfg.mesh_ca_file)
      , reports([this](const wire::report_request& r) { return client.report(r); },
                [this](const std::string& run) { return client.start(run); },
                [this](const std::string& run, const wire::finish_request& r) {
                  return client.finish(run, r);
                })
      , dirs(cfg.work_root) {
    client.on_session_change(
        [this](const mesh_client::session_change& c) { session_changed(c); });
  }

  agent_config cfg;
  plan_set plans;
  mesh_client client;
  /// Starts and finishes of runs that end together go in one request.
  report_batcher reports;
  run_dirs dirs;
  retry_warnings retry_warn;
  std::thread main;

  mutable std::mutex mtx;
  std::condition_variable cv;
  bool started = false;
  bool registered = false;
  bool draining = false;
  bool cancel_now = false;
  bool stopped = false;
  steady::time_point drain_at{};
  std::string fatal;
  /// Another agent registered under our name: stop without deregistering.
  bool name_taken = false;
  /// This agent's installation in the work root, locked while it runs.
  installation inst;
  /// Whether registrations carry the installation (a meshd before it
  /// refuses the field).
  bool send_instance = true;
  std::map<std::string, std::shared_ptr<run_slot>> active;
  /// The runs that ended here lately, and how.
  recent_runs recent{recent_runs_kept, recent_finish_bytes};
  /// Until when the mesh holds this agent back, as its last poll said (""
  /// for not held); the poll loop's alone.
  std::string held_until;
  /// Cancels received for runs not (yet) active.
  std::set<std::string> early_cancel_set;
  std::deque<std::string> early_cancels;
  uint64_t n_started = 0;
  uint64_t n_finished = 0;
  /// Set when results that still fail to send should be given up.
  std::atomic<bool> abandon_results{false};
  /// Declared last but one: destroyed first but one, it joins its threads
  /// before anything a run's worker or shipper uses is gone.
  thread_pool pool{idle_thread_linger};
  /// Starts the shippers of quiet runs for their first heartbeat. Declared
  /// last: its thread starts tasks on `pool`.
  deadline_runner shipper_starts{shipper_start_slack};

  backoff make_backoff() const {
    return backoff{backoff_policy{cfg.backoff_initial, cfg.backoff_max}};
  }

  /// How often a running run's shipper reports, as the mesh asked.
  std::chrono::seconds heartbeat() const {
    return std::chrono::seconds{std::max<int64_t>(1, client.heartbeat_interval_s())};
  }

  bool is_draining() const {
    std::lock_guard<std::mutex> guard{mtx};
    return draining;
  }

  /// Sleeps up to `d`, waking early when the drain begins.
  void nap(milliseconds d) {
    std::unique_lock<std::mutex> guard{mtx};
    cv.wait_for(guard, d, [this] { return draining; });
  }

  wire::register_request registration() const {
    wire::register_request req;
    req.name = cfg.name;
    req.labels = label_map{cfg.labels.begin(), cfg.labels.end()};
    for (auto& [name, p] : plans)
      req.plans.push_back(name);
    req.capacity = cfg.capacity;
    req.version = cfg.version;
    req.hostname = cfg.hostname;
    if (send_instance) req.instance = inst.id();
    return req;
  }

  /// The client registered again because the mesh had ended our session:
  /// an admin removed the agent, or another registration under its name
  /// superseded it. The mesh ended the old session's running runs with it
  /// (api.md, "Agent gone"), so they stop here too. When the session number
  /// jumped, someone else registered under our name in between: two agents
  /// sharing a name would supersede each other forever, so this one stops.
  void session_changed(const mesh_client::session_change& c) {
    if (note_session_change(c)) client.interrupt_poll();
  }

  /// `session_changed` under the lock; true when the agent must stop.
  bool note_session_change(const mesh_client::session_change& c) {
    std::lock_guard<std::mutex> guard{mtx};
    auto ended = end_runs_with_session_locked();
    auto runs_text = ended == 0 ? std::string{}
                                : "; stopping its " + std::to_string(ended) +
                                      (ended == 1 ? " run" : " runs") +
                                      " here, which the mesh ended with it";
    // A gap our own unanswered registrations explain is not someone else.
    if (c.id == c.old_id && c.session > c.old_session + 1 + c.unanswered) {
      fatal = "another agent registered under the name '" + cfg.name +
              "' while this one (" + c.old_id + ") held session " +
              std::to_string(c.old_session) +
              ": each agent needs a name of its own; stopping" + runs_text;
      polymesh::log(log_level::error, fatal);
      name_taken = true;
      if (!draining) {
        draining = true;
        drain_at = steady::now();
      }
      cv.notify_all();
      return true;
    }
    warn("the mesh ended session " + std::to_string(c.old_session) + " of " + c.old_id +
         (c.token_expired
              ? std::string{" (its access token expired while the mesh was "
                            "out of reach, so the agent registered again)"}
              : std::string{" (an admin removed the agent, or it was replaced "
                            "after going offline)"}) +
         "; registered again as " + c.id + " session " + std::to_string(c.session) +
         runs_text);
    return false;
  }

  /// Stops the active runs, which the mesh ended with the agent's session
  /// (they are not reported); returns how many plans were still running
  /// (one that returned is only waiting to send its result).
  size_t end_runs_with_session_locked() {
    size_t ended = 0;
    for (auto& [id, slot] : active) {
      slot->ended_by_mesh = true;
      if (slot->cancel.cancel(cancel_reason::canceled_by_user) && !slot->plan_returned)
        ++ended;
    }
    return ended;
  }

  /// The name is another installation's for now: whatever session we held
  /// is over. Its runs stop, nothing more is sent on it (no drain, no
  /// deregistration), and the registration that ends the wait is a fresh
  /// start, not a sign that someone took over our session.
  void lose_session() {
    {
      std::lock_guard<std::mutex> guard{mtx};
      end_runs_with_session_locked();
      registered = false;
    }
    client.forget_session();
  }

  bool register_until_ok() {
    auto b = make_backoff();
    bool session_lost = false;
    // When the name-in-use refusal is next logged at `warn`; brought
    // forward by any other outcome, so that it is said again after, say, a
    // mesh outage.
    steady::time_point next_warning{};
    while (!is_draining()) {
      auto r = client.register_agent(cfg.registration_token, registration());
      // A stop ends a registration in flight: a frozen mesh held it.
      if (!r.ok() && is_draining()) {
        if (r.status == 0)
          info("stopped while registering; a mesh that reads the registration "
               "later shows this agent online until agents.offline_after");
        break;
      }
      if (r.status == 400 && send_instance && error_code_of(r, "field") == "instance") {
        warn("the mesh does not know agents' installations (a meshd older than this "
             "agent): registering without one, so a second agent under this name "
             "would take it over");
        send_instance = false;
        continue;
      }
      if (r.ok()) {
        std::lock_guard<std::mutex> guard{mtx};
        registered = true;
        info("agent '" + cfg.name + "' registered as " + client.agent_id() + " with " +
             std::to_string(plans.size()) + (plans.size() == 1 ? " plan" : " plans") +
             ", capacity " + std::to_string(cfg.capacity));
        // An admin's drain outlasts a restart: say why no run comes.
        if (r.body.is_object() && r.body.value("drained_by", nlohmann::json{}) == "admin")
          warn("agent '" + cfg.name +
               "' is drained by an admin: it takes no new runs until `meshctl agents "
               "undrain " +
               cfg.name + "`");
        return true;
      }
      if (name_in_use(r)) {
        // The other agent keeps the name while it runs; this one takes it
        // once that one leaves or goes offline (which may take hours when
        // it was started by mistake: warn now and then, not every try).
        if (!std::exchange(session_lost, true)) lose_session();
        auto d = b.next();
        auto now = steady::now();
        bool say = now >= next_warning;
        if (say) next_warning = now + name_in_use_warn_every;
        polymesh::log(say ? log_level::warn : log_level::debug,
                      "cannot register yet: " + r.error + "; trying again in " +
                          std::to_string(d.count()) + " ms");
        nap(d);
        continue;
      }
      next_warning = {};
      if (!r.transient()) {
        std::lock_guard<std::mutex> guard{mtx};
        fatal = "registration refused: " + r.describe();
        polymesh::log(log_level::error, fatal);
        return false;
      }
      auto d = b.next();
      retry_warn("register", "cannot register with the mesh at " + cfg.mesh_url + " (" +
                                 r.describe() + "), retrying in " +
                                 std::to_string(d.count()) + " ms");
      nap(d);
    }
    return false;
  }

  void loop() {
    if (auto err = cfg.prepare_work_root(); !err.empty()) {
      {
        std::lock_guard<std::mutex> guard{mtx};
        fatal = err;
      }
      polymesh::log(log_level::error, err);
      drain_phase();
      return;
    }
    if (auto err = inst.claim(cfg.work_root, cfg.name); !err.empty()) {
      {
        std::lock_guard<std::mutex> guard{mtx};
        fatal = err;
      }
      polymesh::log(log_level::error, err);
      drain_phase();
      return;
    }
    dirs.sweep();
    if (register_until_ok()) {
      auto b = make_backoff();
      bool polls_failing = false;
      bool polls_unanswered = false;
      while (!is_draining()) {
        if (client.token_due()) {
          // A stop ends it (a frozen mesh would hold the drain for a
          // request_timeout); the drain renews the token itself.
          auto r = client.refresh_token(true);
          if (!r.ok() && !is_draining()) warn("token refresh failed: " + r.describe());
        }
        auto wait_ms =
            std::min<int64_t>(cfg.poll_wait.count(), client.poll_wait_max_s() * 1000);
        // Wake in time to renew the token before it is due (but not in a
        // tight loop when the renewal keeps failing).
        wait_ms = std::min<int64_t>(
            wait_ms, std::max<int64_t>(1000, client.until_token_due().count()));
        // After polls that got no answer, a quick look first: a long poll
        // that succeeds returns (and so says the mesh answers again) only
        // when its wait ends, which left the last log line saying polls
        // fail. Not after a refusal (a 503 when the mesh has no long-poll
        // room): a quick look would pass and undo the backoff.
        if (polls_unanswered) wait_ms = 0;
        auto r = client.poll(wait_ms / 1000);
        // Zombies of processes that plans left behind and that ended after
        // their run: an idle agent would keep them (and the user's process
        // limit counts them).
        reap_adopted_orphans();
        if (is_draining()) break;
        if (r.ok() && polls_failing) {
          info("the mesh answers again");
          polls_failing = false;
        }
        polls_unanswered = !r.ok() && r.status == 0;
        if (!r.ok()) {
          auto refused = client.registration_refused();
          if (refused && name_in_use(*refused)) {
            // Our session ended (we went offline) and another installation
            // took the name meanwhile: wait for it, as at start (which says
            // who holds it).
            warn("the mesh ended this agent's session, and another installation "
                 "registered under its name meanwhile: waiting for the name");
            if (!register_until_ok()) break;
            continue;
          }
          if (refused) {
            // Our session ended and the mesh will not take us back (a
            // revoked registration token): nothing here can go on.
            std::lock_guard<std::mutex> guard{mtx};
            end_runs_with_session_locked();
            fatal = "the mesh ended this agent's session and refused to register it "
                    "again: " +
                    refused->describe();
            polymesh::log(log_level::error, fatal);
            break;
          }
          if (r.status == 403 || r.status == 404) {
            // An admin removed us, or the mesh lost us: start a new session.
            warn("poll refused (" + r.describe() + "); registering again");
            if (!register_until_ok()) break;
            continue;
          }
          auto d = b.next();
          polls_failing = true;
          retry_warn("poll", "poll failed (" + r.describe() + "), retrying in " +
                                 std::to_string(d.count()) + " ms");
          nap(d);
          continue;
        }
        b.reset();
        handle_poll(r.body);
        if (wait_ms < 1000 && (!r.body.is_object() ||
                               r.body.value("runs", nlohmann::json::array()).empty()))
          nap(milliseconds{250}); // a mesh that grants no wait: do not spin
      }
    }
    drain_phase();
  }

  /// Says in the agent's log when the mesh begins to hold this agent back
  /// (runs offered to it were not started within the delivery lease) and
  /// when it stops: the agent is given no run meanwhile, and its operator
  /// reads this log, not the mesh's. Once per hold.
  void note_hold(const nlohmann::json& body) {
    auto it = body.find("held_until");
    if (it == body.end()) return; // a mesh that does not hold agents back
    auto until = it->is_string() ? it->get<std::string>() : std::string{};
    if (until == held_until) return;
    if (!until.empty()) {
      auto n = body.value("lapsed_leases", nlohmann::json{});
      warn("the mesh holds this agent back until " + until + ": " +
           (n.is_number_integer() ? std::to_string(n.get<int64_t>())
                                  : std::string{"some"}) +
           " runs offered to it in a row were not started within its delivery lease, "
           "so it gives it no new run until then (a run it starts ends the hold); "
           "look for what kept them from starting: a host too busy, a stuck plan "
           "start, answers lost on the way");
    } else {
      info("the mesh no longer holds this agent back");
    }
    held_until = until;
  }

  void handle_poll(const nlohmann::json& body) {
    if (body.is_object()) note_hold(body);
    std::vector<run_record> deferred;
    if (auto it = body.find("runs"); it != body.end() && it->is_array()) {
      for (auto& j : *it) {
        auto rec = wire::run_from_json(j);
        if (!rec) continue;
        if (!usable_run_id(rec->id)) {
          warn("ignoring a run with an unusable id from the mesh");
          continue;
        }
        if (!launch(*rec)) deferred.push_back(std::move(*rec));
      }
    }
    if (auto it = body.find("cancel"); it != body.end() && it->is_array()) {
      std::lock_guard<std::mutex> guard{mtx};
      for (auto& id : *it) {
        if (!id.is_string()) continue;
        if (auto slot = active.find(id.get<std::string>()); slot != active.end()) {
          auto& s = *slot->second;
          if (s.cancel.cancel(cancel_reason::canceled_by_user))
            info("run " + slot->first + ": cancel requested by the mesh");
          // Its plan is done: what it still has to send is not retried.
          if (s.plan_returned && !s.canceled_while_uploading.exchange(true))
            cv.notify_all();
        } else {
          // The run may come later (it was offered while every slot was
          // taken): remember the cancel, the mesh tells it only once.
          remember_cancel(id.get<std::string>());
        }
      }
    }
    // A run came while every slot is taken: the mesh offers a slot's next
    // run as soon as the slot's result is in, usually before the worker has
    // cleaned up. Wait for the slot and start the run then. If no slot frees
    // in time the mesh carries the run again on a later poll.
    for (auto& rec : deferred) {
      {
        std::unique_lock<std::mutex> guard{mtx};
        cv.wait_for(guard, milliseconds{1000}, [this] {
          return draining || static_cast<int64_t>(active.size()) < cfg.capacity;
        });
        if (draining) return;
      }
      launch(std::move(rec));
    }
  }

  /// REQUIRES: `mtx` held.
  void remember_cancel(const std::string& id) {
    if (early_cancel_set.insert(id).second) {
      early_cancels.push_back(id);
      if (early_cancels.size() > recent_runs_kept) {
        early_cancel_set.erase(early_cancels.front());
        early_cancels.pop_front();
      }
    }
  }

  /// Starts a worker for a new run, or for the answer to an offer of a run
  /// that ended here; false when no slot is free.
  bool launch(run_record rec) {
    std::lock_guard<std::mutex> guard{mtx};
    // Runs not yet started come again on later polls: deliver each once.
    if (active.count(rec.id)) return true;
    auto recalled = recent.recall(rec.id);
    // Let go during a drain (the mesh gives it to an agent that takes
    // runs), or the offer taken, carried again by a poll that crossed the
    // run's start.
    if (recalled && (recalled->what == recent_runs::outcome::not_run ||
                     recalled->offer == offer_of(rec)))
      return true;
    // An answer runs no plan, so it needs no free slot (and a mesh restored
    // from an older backup does not know what the slots hold).
    if (!recalled && static_cast<int64_t>(active.size()) >= cfg.capacity)
      return false; // the mesh re-sends it when a slot is free
    std::optional<steady::time_point> deadline;
    if (rec.timeout_s > 0) deadline = steady::now() + std::chrono::seconds{rec.timeout_s};
    bool cancel_first = rec.cancel_requested || early_cancel_set.count(rec.id) > 0;
    auto slot = std::make_shared<run_slot>(std::move(rec), deadline);
    if (recalled) {
      slot->recalled = std::move(recalled);
      slot->plan_returned = true;
    }
    if (cancel_first) slot->cancel.cancel(cancel_reason::canceled_by_user);
    active.emplace(slot->run.id, slot);
    pool.run([this, slot] { work(slot); });
    return true;
  }

  /// Removes a run from the active set. REQUIRES: called by its worker last.
  /// A run `remember`ed is not run again when a later poll offers it (a
  /// poll that crossed its end, one during a drain, or a meshd restored
  /// from an older backup): it is answered (`launch`). A run the mesh
  /// refused to start, or whose plan never started, is not remembered: a
  /// later offer is a new assignment to this agent (its delivery lease
  /// lapsed meanwhile, or it went elsewhere and came back), to be taken.
  void forget(const std::shared_ptr<run_slot>& slot,
              std::optional<recent_runs::memory> remember, bool finished) {
    std::lock_guard<std::mutex> guard{mtx};
    active.erase(slot->run.id);
    if (remember) {
      remember->offer = offer_of(slot->run);
      recent.remember(slot->run.id, std::move(*remember));
    }
    if (finished) ++n_finished;
    cv.notify_all();
  }

  /// Answers an offer of a run that ended here (`slot->recalled`): a
  /// meshd restored from an older backup offers again the runs it had
  /// pending. The finish the mesh accepted then goes again; when that is no
  /// longer known, the run ends `error/already_ran`. Running it again could
  /// do its work twice (a deployment, a payment).
  void answer_again(const std::shared_ptr<run_slot>& slot) {
    auto& id = slot->run.id;
    auto memory = *slot->recalled;
    wire::finish_request fr;
    if (memory.what == recent_runs::outcome::finished) {
      fr = memory.finish;
      info("run " + id +
           " offered again, which this agent already ran: sending again the finish "
           "the mesh accepted (" +
           to_string(fr.status) + (fr.reason.empty() ? "" : "/" + fr.reason) + ")");
    } else {
      fr.status = run_status::error;
      fr.reason = "already_ran";
      fr.error = "agent '" + cfg.name +
                 "' already ran this run and no longer knows its outcome (it was "
                 "offered again, e.g. by a meshd restored from an older backup); not "
                 "running it twice";
      warn("run " + id +
           " offered again, which this agent already ran and whose outcome it no "
           "longer knows: ending it error/already_ran rather than running it twice");
    }
    send_finish(*slot, fr);
    forget(slot, std::move(memory), false);
  }

  void work(std::shared_ptr<run_slot> slot) {
    if (slot->recalled) return answer_again(slot);
    auto& run = slot->run;
    // -- start ----------------------------------------------------------------
    auto b = make_backoff();
    for (;;) {
      if (slot->cancel.reason() == cancel_reason::agent_shutdown || is_draining()) {
        // Not started: the mesh gives it to someone else.
        forget(slot, recent_runs::memory{recent_runs::outcome::not_run, {}, {}}, false);
        return;
      }
      auto r = reports.start(run.id);
      if (r.ok()) {
        // A cancel requested before the start: run nothing, report canceled
        // now instead of letting the mesh wait for its cancel grace.
        if (r.body.is_object() && r.body.value("cancel_requested", false))
          slot->cancel.cancel(cancel_reason::canceled_by_user);
        break;
      }
      if (!r.transient()) {
        info("run " + run.id + " not started (" + r.describe() + "); dropping it");
        forget(slot, std::nullopt, false);
        return;
      }
      std::this_thread::sleep_for(std::min(b.next(), milliseconds{2000}));
    }
    {
      std::lock_guard<std::mutex> guard{mtx};
      ++n_started;
    }
    info("run " + run.id + " (" + run.plan + ") started");

    // -- prepare --------------------------------------------------------------
    auto root = dirs.path_of(run.id);
    run_context ctx;
    ctx.run_id = run.id;
    ctx.plan = run.plan;
    ctx.retry_number = run.retry_number;
    ctx.retry_of = run.retry_of;
    ctx.params = nlohmann::json::parse(run.params, nullptr, false);
    if (!ctx.params.is_object()) ctx.params = nlohmann::json::object();
    ctx.payload = run.payload;
    ctx.work_dir = root / "work";
    ctx.artifacts_dir = root / "artifacts";
    ctx.cancel = &slot->cancel;
    ctx.kill_grace = cfg.kill_grace;
    // The lower of the agent's own ceiling and the mesh's, named in the note
    // (the mesh's less the room its notes need: not the setting's figure).
    auto limits = client.limits();
    auto own_ceiling = cfg.log_max_run_bytes == 0 ? SIZE_MAX : cfg.log_max_run_bytes;
    auto mesh_ceiling = limits.run_log_bytes();
    auto mesh_key = [&] {
      return "the mesh's runs.max_log_bytes (" + std::to_string(limits.max_log_bytes) +
             ", less " + std::to_string(limits.max_log_bytes - mesh_ceiling) +
             " bytes kept for notes)";
    };
    log_buffer logs{limits.log_chunk_bytes(cfg.log_chunk_bytes), cfg.log_buffer_bytes,
                    &slot->cancel, std::min(own_ceiling, mesh_ceiling),
                    mesh_ceiling < own_ceiling ? mesh_key() : "logs.max_run_bytes"};
    ctx.log = &logs;
    auto first_beat = steady::now() + heartbeat();
    auto shipper = std::make_shared<on_demand_task>(
        [this](std::function<void()> task) { pool.run(std::move(task)); },
        [&] { ship(slot, logs, first_beat); });
    // Weak: a plan could keep its context's callbacks past its run.
    std::weak_ptr<on_demand_task> wake = shipper;
    logs.on_first_write([wake] {
      if (auto s = wake.lock()) s->trigger();
    });
    ctx.progress = [slot, wake](std::string message) {
      // A longer message would be refused, and with it the heartbeat that
      // carries it: the run would expire while it runs.
      message = head_of(message, wire::max_progress_bytes);
      {
        std::lock_guard<std::mutex> guard{slot->mtx};
        slot->progress = std::move(message);
        slot->progress_dirty = true;
      }
      if (auto s = wake.lock()) s->trigger();
    };
    // Early enough that the shipper's first wait ends at the heartbeat.
    shipper_starts.at(std::max(steady::now(),
                               first_beat - cfg.log_flush_interval - shipper_start_slack),
                      shipper);

    // -- run ------------------------------------------------------------------
    plan_result res;
    bool plan_ran = false;
    if (auto ec = dirs.prepare(run.id)) {
      res = plan_result::failure("cannot create the run's directories under " +
                                 cfg.work_root.string() + ": " + ec.message());
    } else if (slot->cancel.canceled()) {
      res = plan_result::failure("canceled before the plan started");
    } else if (auto p = plans.find(run.plan); p == plans.end()) {
      res = plan_result::failure("this agent does not offer plan '" + run.plan + "'");
    } else {
      plan_ran = true;
      slot->plan_started = true;
      try {
        res = p->second->run(ctx);
      } catch (const std::exception& e) {
        res = plan_result::failure(std::string{"plan threw an exception: "} + e.what());
      } catch (...) {
        res = plan_result::failure("plan threw an unknown exception");
      }
    }

    // -- flush, report, clean up ------------------------------------------------
    // The outcome is what it was when the plan returned: a timeout or a
    // cancel while the logs and artifacts are sent changes nothing.
    auto why = slot->cancel.reason();
    // Listed while the run's log still takes lines, so that what is skipped
    // is said there too (the first 20; the agent's log names every one).
    std::vector<std::string> artifacts;
    if (!slot->held_elsewhere && !slot->ended_by_mesh) {
      artifact_warnings skipped{run.id, logs, "skipped"};
      artifacts = list_artifacts(ctx.artifacts_dir, skipped);
      skipped.close();
    }
    logs.close();
    {
      // Under the lock: `drain_phase` waits for every plan to return. Only
      // a drain is told: the poll thread may wait on `cv` for a free slot,
      // and waking it here, before the slot is free, costs a context switch
      // per run.
      std::lock_guard<std::mutex> guard{mtx};
      slot->uploads_until = steady::now() + cfg.upload_retry_for;
      slot->plan_returned = true;
      if (draining) cv.notify_all();
    }
    shipper->close();
    // What the uploads skip, or the mesh refuses for good, is said in the
    // run's log too, after the plan's output: the run is running in the mesh
    // until its result is reported, and takes more log chunks meanwhile; a
    // closed `logs` takes writes still (with the next seqs), and they are
    // flushed before the result.
    artifact_warnings not_stored{run.id, logs, "refused or skipped"};
    upload_artifacts(*slot, ctx.artifacts_dir, artifacts, not_stored);
    not_stored.close();
    flush_logs(*slot, logs);
    warn_of_lost_uploads(*slot);
    auto accepted = report(*slot, why, res, plan_ran);
    // A process the run left running (on purpose, without its tracking
    // entry, process.hpp; or one the agent cannot tell apart) would share
    // the next run's directory.
    bool reusable = true;
    if (auto pid = detail::leftover_in(root)) {
      reusable = false;
      info("run " + run.id + ": process " + std::to_string(pid) +
           ", which it left running, is in its directory: the directory is removed,"
           " not reused");
    }
    if (auto ec = dirs.retire(run.id, reusable))
      warn("run " + run.id + ": cannot remove " + root.string() + ": " + ec.message());
    std::optional<recent_runs::memory> memory;
    if (accepted)
      memory =
          recent_runs::memory{recent_runs::outcome::finished, std::move(*accepted), {}};
    else if (plan_ran)
      memory = recent_runs::memory{recent_runs::outcome::ran, {}, {}};
    forget(slot, std::move(memory), true);
  }

  /// Ships log chunks and progress until the plan is done, then the rest.
  void ship(const std::shared_ptr<run_slot>& slot, log_buffer& logs,
            steady::time_point first_beat) {
    auto& id = slot->run.id;
    auto last_send = steady::now();
    auto beat_every = heartbeat();
    auto next_beat = first_beat;
    auto next_progress = steady::now();
    auto b = make_backoff();
    while (!slot->plan_returned) {
      logs.wait_ready(cfg.log_flush_interval);
      auto now = steady::now();
      if (!send_logs(*slot, logs, now - last_send >= cfg.log_flush_interval)) {
        auto d = std::min(b.next(), milliseconds{2000});
        std::this_thread::sleep_for(d);
      } else {
        b.reset();
        last_send = now;
      }
      if (slot->held_elsewhere) return;
      std::string message;
      bool send_progress = false;
      {
        std::lock_guard<std::mutex> guard{slot->mtx};
        if ((slot->progress_dirty && now >= next_progress) || now >= next_beat) {
          message = slot->progress;
          slot->progress_dirty = false;
          send_progress = true;
        }
      }
      if (send_progress) {
        next_progress = now + progress_min_interval;
        next_beat = now + beat_every;
        auto r = client.progress(id, message);
        if (stop_if_held_elsewhere(*slot, r, &logs)) return;
        if (stop_if_ended_by_mesh(*slot, r, &logs)) return;
        if (r.ok() && r.body.is_object() && r.body.value("cancel_requested", false))
          if (slot->cancel.cancel(cancel_reason::canceled_by_user))
            info("run " + id + ": cancel requested by the mesh");
      }
    }
    flush_logs(*slot, logs);
    if (slot->held_elsewhere || slot->ended_by_mesh) return;
    // The last progress message wins (plan.hpp), also one given just before
    // the plan returned or within the rate limit, which the loop above did
    // not get to send. Retried like the log; a refusal (the run ended in
    // the mesh meanwhile) drops it.
    b.reset();
    for (;;) {
      std::string message;
      {
        std::lock_guard<std::mutex> guard{slot->mtx};
        if (!slot->progress_dirty) return;
        if (slot->lost.why != upload_stop::none) {
          slot->lost.progress = true;
          return;
        }
        message = slot->progress;
      }
      auto r = client.progress(id, message);
      if (!r.transient()) {
        stop_if_held_elsewhere(*slot, r, nullptr);
        std::lock_guard<std::mutex> guard{slot->mtx};
        if (slot->progress == message) slot->progress_dirty = false;
        return;
      }
      if (uploads_stop(*slot, r)) continue; // noted as lost above
      auto d = b.next();
      retry_warn("progress", "run " + id + ": cannot send its last progress message (" +
                                 r.describe() + "), retrying in " +
                                 std::to_string(d.count()) + " ms");
      upload_nap(*slot, d);
      if (uploads_stop(*slot, r)) continue; // noted as lost above
    }
  }

  /// Sends all of `slot`'s log that is left, in order, before the result;
  /// retried while `uploads_stop` allows. Called once the plan has returned
  /// (by its shipper), and again after the artifacts' uploads (for what
  /// they said in the log).
  void flush_logs(run_slot& slot, log_buffer& logs) {
    auto& id = slot.run.id;
    auto b = make_backoff();
    while (!logs.empty()) {
      http_reply failure;
      if (send_logs(slot, logs, true, &failure)) {
        b.reset();
        continue;
      }
      auto give_up = [&] {
        std::lock_guard<std::mutex> guard{slot.mtx};
        slot.lost.log_bytes += logs.buffered_bytes();
        logs.discard();
      };
      if (uploads_stop(slot, failure)) {
        give_up();
        break;
      }
      auto d = b.next();
      retry_warn("log", "run " + id + ": cannot send the last " +
                            std::to_string(logs.buffered_bytes()) + " log bytes (" +
                            failure.describe() + "), retrying in " +
                            std::to_string(d.count()) + " ms");
      upload_nap(slot, d);
      if (uploads_stop(slot, failure)) {
        give_up();
        break;
      }
    }
  }

  /// Why the retries of `slot`'s last uploads stop now, if they do.
  upload_stop upload_stop_now(const run_slot& slot) const {
    if (abandon_results) return upload_stop::shutting_down;
    if (slot.canceled_while_uploading) return upload_stop::canceled;
    if (steady::now() >= slot.uploads_until) return upload_stop::retry_time_over;
    return upload_stop::none;
  }

  /// After `r`, a failed try of one of `slot`'s last uploads that is worth
  /// retrying: true when no retry follows, for this upload or the run's
  /// later ones (`lost` says why from now on).
  bool uploads_stop(run_slot& slot, const http_reply& r) {
    auto why = upload_stop_now(slot);
    std::lock_guard<std::mutex> guard{slot.mtx};
    if (slot.lost.why != upload_stop::none) return true;
    if (why == upload_stop::none) return false;
    slot.lost.why = why;
    slot.lost.last_failure = r.describe();
    return true;
  }

  /// Whether the retries of `slot`'s last uploads have stopped.
  static bool uploads_stopped(run_slot& slot) {
    std::lock_guard<std::mutex> guard{slot.mtx};
    return slot.lost.why != upload_stop::none;
  }

  /// Sleeps `d` before a retry of one of `slot`'s last uploads; wakes at
  /// the end of `upload_retry_for`, and at once on a cancel of the run or
  /// when the drain gives up on results. The caller asks `uploads_stop`
  /// again before it tries again (it sent one more upload after a cancel).
  void upload_nap(run_slot& slot, milliseconds d) {
    std::unique_lock<std::mutex> guard{mtx};
    cv.wait_until(guard, std::min(steady::now() + d, slot.uploads_until), [&] {
      return abandon_results.load() || slot.canceled_while_uploading.load();
    });
  }

  /// Says, once, what `slot`'s last uploads left unsent and why, if they
  /// stopped short.
  void warn_of_lost_uploads(run_slot& slot) {
    upload_loss l;
    {
      std::lock_guard<std::mutex> guard{slot.mtx};
      l = slot.lost;
    }
    std::vector<std::string> what;
    if (l.log_bytes > 0) what.push_back(std::to_string(l.log_bytes) + " log bytes");
    if (l.progress) what.push_back("its last progress message");
    if (!l.artifacts.empty()) {
      constexpr size_t named = 10;
      std::string names;
      for (size_t i = 0; i < l.artifacts.size() && i < named; ++i)
        names += (i == 0 ? "'" : ", '") + l.artifacts[i] + "'";
      if (l.artifacts.size() > named)
        names += " and " + std::to_string(l.artifacts.size() - named) + " more";
      what.push_back((l.artifacts.size() == 1 ? "artifact " : "artifacts ") + names);
    }
    if (l.why == upload_stop::none || what.empty()) return;
    std::string list;
    for (size_t i = 0; i < what.size(); ++i)
      list += (i == 0 ? "" : i + 1 == what.size() ? " and " : ", ") + what[i];
    std::string text = "run " + slot.run.id + ": ";
    switch (l.why) {
    case upload_stop::retry_time_over:
      text += "giving up on its last uploads, which the mesh did not take within "
              "agent.upload_retry_for (" +
              duration_text(cfg.upload_retry_for) + ")";
      break;
    case upload_stop::canceled:
      text += "canceled while its last uploads were retried";
      break;
    case upload_stop::shutting_down:
      text += "giving up on its last uploads: the agent is shutting down";
      break;
    case upload_stop::none: break;
    }
    text +=
        ": not confirmed as stored: " + list + " (last failure: " + l.last_failure + ")";
    if (l.why != upload_stop::shutting_down)
      text += "; reporting its result without them";
    warn(text);
  }

  /// When `r` says that another session of this agent holds the run (the
  /// agent registered again since the run started), no report on the run
  /// can succeed: says so once, drops what is left of its log (`logs`, if
  /// given), and marks the run, so that nothing more is sent for it rather
  /// than each chunk, artifact and result refused with a warning of its own.
  /// True when `r` is that refusal.
  bool stop_if_held_elsewhere(run_slot& slot, const http_reply& r, log_buffer* logs) {
    if (!run_held_by_another_session(r)) return false;
    if (logs) logs->discard();
    if (!slot.held_elsewhere.exchange(true))
      warn("run " + slot.run.id + ": the mesh refuses its reports (" + r.describe() +
           "); sending nothing more for it: its unsent log, artifacts and result are "
           "dropped");
    return true;
  }

  /// When the mesh refuses a heartbeat because the run is no longer running
  /// there (it ended it as `agent_lost` or `expired` while the agent was out
  /// of touch, or gave it back to the queue), or refuses a heartbeat, log
  /// chunks or an artifact because it has no such run at all (retention
  /// pruned it, or meshd was restored from an older backup): the
  /// plan is stopped, rather than hold a slot the mesh counts as free (its
  /// next runs would bounce off this agent until the plan ended), and
  /// nothing more is sent for it. True when `r` is that refusal.
  bool stop_if_ended_by_mesh(run_slot& slot, const http_reply& r, log_buffer* logs) {
    bool ended = r.status == 409 && error_code_of(r, "code") == "illegal_transition";
    // meshd's own 404 (a proxy's would not say `not_found` in meshd's JSON).
    bool unknown = r.status == 404 && error_code_of(r, "code") == "not_found";
    if (!ended && !unknown) return false;
    if (slot.ended_by_mesh) return true;
    slot.ended_how = "(" + r.describe() + ")";
    slot.ended_by_mesh = true;
    if (logs) logs->discard();
    slot.cancel.cancel(cancel_reason::canceled_by_user);
    warn("run " + slot.run.id + ": the mesh no longer runs it (" + r.describe() +
         "); stopping it here, nothing more is sent for it");
    return true;
  }

  /// Sends the next chunks; false on a transient failure (retry later),
  /// which is then in `failure` when given.
  bool send_logs(run_slot& slot, log_buffer& logs, bool flush,
                 http_reply* failure = nullptr) {
    auto chunks = logs.take(
        chunks_per_request, flush,
        client.limits().log_bytes_per_request(chunks_per_request, log_bytes_per_request));
    if (chunks.empty()) return true;
    wire::log_request req;
    for (auto& c : chunks) {
      log_chunk lc;
      lc.seq = c.seq;
      lc.stream = to_string(c.stream);
      lc.data = std::move(c.data);
      req.chunks.push_back(std::move(lc));
    }
    auto& id = slot.run.id;
    auto r = client.logs(id, req);
    if (r.transient()) {
      if (failure) *failure = std::move(r);
      return false;
    }
    if (stop_if_held_elsewhere(slot, r, &logs)) return true;
    if (stop_if_ended_by_mesh(slot, r, &logs)) return true;
    if (!r.ok())
      warn("run " + id + ": log chunks refused (" + r.describe() + "); dropping them");
    logs.ack(chunks.back().seq);
    return true;
  }

  /// The regular files the plan left under `dir`, named by their paths
  /// relative to it, in sorted order. What is skipped is said through
  /// `skip`, in the agent's log and the run's own (the plan's submitter
  /// does not read the agent's). Symlinks and other special files are
  /// skipped (the plan could point one at a secret).
  static std::vector<std::string> list_artifacts(const std::filesystem::path& dir,
                                                 artifact_warnings& skip) {
    namespace fs = std::filesystem;
    std::vector<std::string> files;
    std::error_code ec;
    // The plan may have replaced the directory itself with a symlink (to the
    // agent's config, say): the listing would follow it.
    if (fs::is_symlink(fs::symlink_status(dir, ec))) {
      skip("its artifacts directory was replaced by a symlink; nothing uploaded");
      return files;
    }
    // Directory by directory: one the plan left unreadable (or too deep to
    // name) is skipped with a warning naming it, and the rest still go.
    std::vector<fs::path> listing{dir};
    while (!listing.empty()) {
      auto at = std::move(listing.back());
      listing.pop_back();
      auto where =
          at == dir ? std::string{} : at.lexically_relative(dir).generic_string();
      auto cannot_list = [&](const std::error_code& why) {
        if (where.empty())
          skip("cannot list artifacts in " + dir.string() + ": " + why.message());
        else
          skip("artifacts under '" + where +
               "/' skipped: cannot list them: " + why.message());
      };
      fs::directory_iterator it{at, ec};
      if (ec) {
        if (!(where.empty() && ec == std::errc::no_such_file_or_directory))
          cannot_list(ec);
        continue;
      }
      for (fs::directory_iterator end; it != end; it.increment(ec)) {
        if (ec) break;
        auto rel = it->path().lexically_relative(dir).generic_string();
        auto st = it->symlink_status(ec);
        if (ec) {
          skip("artifact '" + rel + "' skipped: " + ec.message());
          ec.clear();
          continue;
        }
        if (fs::is_directory(st)) { // not followed when a symlink
          listing.push_back(it->path());
          continue;
        }
        if (!fs::is_regular_file(st)) {
          skip("artifact '" + rel + "' skipped: " +
               (fs::is_symlink(st) ? "a symlink (never uploaded, nor followed)"
                                   : "not a regular file (a FIFO, socket or device)"));
          continue;
        }
        // The name as it is: the log escapes what is not printable.
        if (auto why = wire::artifact_name_problem(rel); !why.empty()) {
          skip("artifact '" + rel + "' skipped: its name " + why);
          continue;
        }
        files.push_back(rel);
      }
      if (ec) {
        cannot_list(ec);
        ec.clear();
      }
    }
    std::sort(files.begin(), files.end());
    return files;
  }

  /// Uploads `files` (`list_artifacts`) from `dir` before the result is
  /// sent, so that a finished run's artifacts are there when users look.
  /// Also after a failed or canceled run: partial output helps. What is
  /// skipped or refused for good is said through `not_stored`; a failure that
  /// is retried is not.
  void upload_artifacts(run_slot& slot, const std::filesystem::path& dir,
                        const std::vector<std::string>& files,
                        artifact_warnings& not_stored) {
    if (slot.held_elsewhere || slot.ended_by_mesh) return;
    // Once the retries stopped (for the log, or an artifact), the rest is
    // not tried: the mesh evidently does not take the run's uploads.
    auto lose_from = [&](size_t i) {
      std::lock_guard<std::mutex> guard{slot.mtx};
      slot.lost.artifacts.insert(slot.lost.artifacts.end(),
                                 files.begin() + static_cast<std::ptrdiff_t>(i),
                                 files.end());
    };
    for (size_t i = 0; i < files.size(); ++i) {
      auto& name = files[i];
      if (uploads_stopped(slot)) return lose_from(i);
      int fd = -1;
      size_t size = 0;
      if (auto err = open_artifact(dir, name, fd, size); !err.empty()) {
        not_stored("artifact '" + name + "' skipped: " + err);
        continue;
      }
      bool go_on = upload_artifact(slot, name, fd, size, not_stored);
      ::close(fd);
      if (!go_on) {
        if (uploads_stopped(slot)) lose_from(i);
        return;
      }
    }
  }

  /// Uploads one artifact, retrying while the mesh cannot take it; false
  /// when no more are to be sent: the retries stopped (`uploads_stop`), the
  /// mesh no longer has the run, or another session holds it. A refusal
  /// for good (413 over `runs.max_artifact_bytes`, 409 at
  /// `runs.max_artifacts`, ...) is said through `not_stored` with the mesh's
  /// words, once.
  bool upload_artifact(run_slot& slot, const std::string& name, int fd, size_t size,
                       artifact_warnings& not_stored) {
    auto& id = slot.run.id;
    auto b = make_backoff();
    for (;;) {
      auto r = client.put_artifact(id, name, fd, size);
      if (r.ok()) {
        info("run " + id + ": artifact '" + name + "' uploaded (" + std::to_string(size) +
             " bytes)");
        return true;
      }
      if (stop_if_held_elsewhere(slot, r, nullptr)) return false;
      if (stop_if_ended_by_mesh(slot, r, nullptr)) return false;
      // A process left behind may still write to it: what it had when it
      // was listed is gone, and a mix of old and new bytes is no artifact.
      struct stat st {};
      if (::fstat(fd, &st) == 0 && static_cast<size_t>(st.st_size) < size) {
        not_stored("artifact '" + name + "' skipped: it shrank from " +
                   std::to_string(size) + " to " + std::to_string(st.st_size) +
                   " bytes while it was uploaded");
        return true;
      }
      if (!r.transient()) {
        not_stored("artifact '" + name + "' refused by the mesh: " + r.describe());
        return true;
      }
      if (uploads_stop(slot, r)) return false;
      auto d = b.next();
      retry_warn("artifact", "run " + id + ": cannot upload artifact '" + name + "' (" +
                                 r.describe() + "), retrying in " +
                                 std::to_string(d.count()) + " ms");
      upload_nap(slot, d);
      if (uploads_stop(slot, r)) return false;
    }
  }

  /// Reports the run's outcome; returns the finish when the mesh accepted
  /// it.
  std::optional<wire::finish_request> report(run_slot& slot, cancel_reason why,
                                             const plan_result& res, bool plan_ran) {
    auto& run = slot.run;
    if (slot.ended_by_mesh) {
      info("run " + run.id + " stopped: the mesh ended it " + slot.ended_how);
      return std::nullopt;
    }
    if (slot.held_elsewhere) return std::nullopt; // said when the mesh first refused
    wire::finish_request fr;
    fr.exit_code = res.exit_code;
    switch (why) {
    case cancel_reason::canceled_by_user:
      fr.status = run_status::canceled;
      fr.reason = "canceled_by_user";
      fr.error = "canceled on request";
      break;
    case cancel_reason::timeout:
      fr.status = run_status::error;
      fr.reason = "timeout";
      fr.error = "run exceeded its timeout of " + std::to_string(run.timeout_s) + "s";
      break;
    case cancel_reason::agent_shutdown:
      fr.status = run_status::canceled;
      fr.reason = "agent_shutdown";
      fr.error = "agent shut down before the run finished";
      break;
    case cancel_reason::none:
      fr.status = res.ok ? run_status::success : run_status::error;
      if (!res.ok) {
        fr.reason = "plan_failed";
        fr.error = res.error.empty() ? "the plan failed without saying why"
                                     : tail_of(res.error, 4000);
      }
      break;
    }
    // What the stopped plan said, after the cause: it may tell whether it
    // stopped cleanly, or was killed (`… did not return within … ms of being
    // told to stop; killed`) or crashed.
    if (why != cancel_reason::none && plan_ran && !res.ok && !res.error.empty())
      fr.error += " (the plan's error: " + tail_of(res.error, 3000) + ")";
    // The tail the mesh takes: `runs.max_result_bytes`, and what fits its body
    // limit next to the error text.
    fr.result = tail_of(res.result, client.limits().result_bytes(fr.error.size()));
    if (!send_finish(slot, fr)) return std::nullopt;
    return fr;
  }

  /// Sends `fr`, the run's finish; true when the mesh accepted it. It is
  /// kept until the mesh takes it or refuses it for good: a restarting mesh
  /// gets the same outcome again, never a different one.
  bool send_finish(run_slot& slot, const wire::finish_request& fr) {
    auto& run = slot.run;
    auto b = make_backoff();
    for (;;) {
      auto r = reports.finish(run.id, fr);
      if (r.ok()) {
        info("run " + run.id + " finished: " + to_string(fr.status) +
             (fr.reason.empty() ? "" : " (" + fr.reason + ")"));
        return true;
      }
      if (stop_if_held_elsewhere(slot, r, nullptr)) return false;
      if (!r.transient()) {
        warn("run " + run.id + ": result refused (" + r.describe() + ")");
        return false;
      }
      if (abandon_results) {
        warn("run " + run.id + ": giving up on sending the result (" + r.describe() +
             ")");
        return false;
      }
      auto d = b.next();
      retry_warn("result", "run " + run.id + ": cannot send the result (" + r.describe() +
                               "), retrying in " + std::to_string(d.count()) + " ms");
      retry_nap(d);
    }
  }

  /// Sleeps `d` before a retry of a run's result; wakes early when the
  /// drain gives up on results, so that shutting down keeps to
  /// `shutdown_result_grace` instead of sleeping out a backoff.
  void retry_nap(milliseconds d) {
    std::unique_lock<std::mutex> guard{mtx};
    cv.wait_for(guard, d, [this] { return abandon_results.load(); });
  }

  bool wait_idle_until(steady::time_point until, bool stop_on_cancel_now) {
    auto idle = [&] { return active.empty() || (stop_on_cancel_now && cancel_now); };
    for (;;) {
      // The token is renewed while runs drain, as the poll loop does: a
      // drain longer than the third of `agents.token_ttl` left at its start
      // outlived the token, and the agent registered again and lost its runs.
      auto renew_at =
          steady::now() + std::max(client.until_token_due(), milliseconds{1000});
      std::unique_lock<std::mutex> guard{mtx};
      if (cv.wait_until(guard, std::min(until, renew_at), idle)) return active.empty();
      if (steady::now() >= until) return false;
      bool in_session = registered && !name_taken;
      guard.unlock();
      if (in_session && client.token_due()) {
        // Within the drain's time: a frozen mesh held it a request_timeout.
        auto left = std::chrono::duration_cast<milliseconds>(until - steady::now());
        auto r = client.refresh_token(false, std::max(left, milliseconds{1}));
        if (!r.ok()) warn("token refresh failed: " + r.describe());
      }
    }
  }

  /// Until every active run's plan that started has returned; says so once
  /// when that takes longer than its programs may (`run_process`: the
  /// grace, then 2.5 s for leftovers; an isolated plugin's host: twice the
  /// grace and a second). A run whose plan has not started is not waited
  /// for: its worker may be in a call to a mesh that does not answer, which
  /// the result grace ends.
  void wait_plans_returned() {
    std::unique_lock<std::mutex> guard{mtx};
    auto returned = [&] {
      return std::all_of(active.begin(), active.end(), [](const auto& a) {
        return !a.second->plan_started || a.second->plan_returned;
      });
    };
    auto expected = 2 * cfg.kill_grace + milliseconds{2500};
    if (cv.wait_for(guard, expected, returned)) return;
    std::string ids;
    for (auto& [id, slot] : active)
      if (slot->plan_started && !slot->plan_returned)
        ids += (ids.empty() ? "" : ", ") + id;
    warn("draining: the plans of " + ids + " have not returned " +
         std::to_string(expected.count()) +
         " ms after their cancel; waiting for them (a plan must return once its "
         "cancel token fires)");
    cv.wait(guard, returned);
  }

  void cancel_active() {
    std::lock_guard<std::mutex> guard{mtx};
    for (auto& [id, slot] : active)
      if (!slot->plan_returned && slot->cancel.cancel(cancel_reason::agent_shutdown))
        info("run " + id + ": canceled, the agent is shutting down");
  }

  void drain_phase() {
    steady::time_point deadline;
    bool announce;
    {
      std::lock_guard<std::mutex> guard{mtx};
      deadline = drain_at + cfg.drain_deadline;
      announce = registered && !name_taken;
      if (!active.empty())
        info("draining: waiting up to " + std::to_string(cfg.drain_deadline.count()) +
             " ms for " + std::to_string(active.size()) +
             (active.size() == 1 ? " run" : " runs"));
    }
    // Tell the mesh first, so that it gives new runs to other agents rather
    // than to one that no longer polls for them (they would wait here until
    // the deregistration sends them back). One try: the drain goes on anyway.
    if (announce) {
      auto r = client.drain(
          std::min<milliseconds>(cfg.request_timeout, std::chrono::seconds{5}));
      if (!r.ok())
        warn("cannot tell the mesh this agent is draining (" + r.describe() +
             "); it may still assign runs here until the deregistration");
    }
    if (!wait_idle_until(deadline, true)) {
      cancel_active();
      // The result grace starts once every plan has returned: a plan that
      // cleans up after its cancel still sends its log, artifacts and
      // result (they were dropped unsent when the cleanup outlasted
      // kill_grace + shutdown_result_grace). Programs the plans run end
      // within kill_grace; a plan in this process that does not return is
      // waited for all the same, as it always was (nothing can stop it).
      wait_plans_returned();
      auto grace = steady::now() + cfg.shutdown_result_grace;
      if (!wait_idle_until(grace, false)) {
        // Calls waiting for a mesh that does not answer end now, rather
        // than each after its request_timeout.
        client.stop_calls();
        std::unique_lock<std::mutex> guard{mtx};
        abandon_results = true;
        cv.notify_all(); // retry naps end now
        cv.wait(guard, [this] { return active.empty(); });
      }
    }
    dirs.clear();
    bool was_registered;
    {
      std::lock_guard<std::mutex> guard{mtx};
      // A session taken over by another agent is not ours to end.
      was_registered = registered && !name_taken;
    }
    if (was_registered) deregister();
    // Another process may be this agent now (an embedding program starting
    // it again, say).
    inst.release();
    std::lock_guard<std::mutex> guard{mtx};
    registered = false;
    stopped = true;
    cv.notify_all();
  }

  /// Up to three tries, within `deregister_timeout` in all.
  void deregister() {
    auto until = steady::now() + cfg.deregister_timeout;
    auto left = [&] {
      return std::chrono::duration_cast<milliseconds>(until - steady::now());
    };
    auto b = make_backoff();
    for (int attempt = 1;; ++attempt) {
      auto r = client.deregister(
          std::max(milliseconds{1}, std::min(left(), cfg.request_timeout)));
      if (r.ok() || !r.transient()) {
        info(r.ok() ? "deregistered" : "deregister refused: " + r.describe());
        return;
      }
      auto nap = std::min({b.next(), milliseconds{2000}, left()});
      if (attempt == 3 || nap <= milliseconds{0}) {
        warn("cannot deregister (" + r.describe() +
             "); the mesh will mark this agent offline after agents.offline_after");
        return;
      }
      std::this_thread::sleep_for(nap);
    }
  }
};

std::string agent_config::prepare_work_root() const {
  namespace fs = std::filesystem;
  std::string why;
  auto root =
      (work_root.empty() ? default_work_root(name, &why) : work_root).lexically_normal();
  if (root.empty()) return why;
  // `dir/` and `dir/.` name `dir` itself, a symlink included.
  if (!root.has_filename() && root.has_parent_path() && root != root.root_path())
    root = root.parent_path();
  bool is_default = root == default_work_root(name).lexically_normal();
  auto problem = [&](const std::string& why) {
    return "work_dir: cannot use " + root.string() + ": " + why;
  };
  std::error_code ec;
  fs::create_directories(root, ec);
  if (ec) return problem(ec.message());
  if (!fs::is_directory(root, ec)) return problem("not a directory");
  // Runs' files live here: only this user may enter. The default root is in
  // /tmp, where another user could have made it (or a symlink) first: a
  // symlink there is refused (whoever made it could point it elsewhere
  // later, and each run's directory is found by its path), and one in a
  // configured path must be this user's or root's.
  struct stat st {};
  if (::lstat(root.c_str(), &st) != 0) return problem(std::strerror(errno));
  if (S_ISLNK(st.st_mode)) {
    if (is_default)
      return problem("it is a symbolic link, and the default work root must be a real "
                     "directory (its maker could point it elsewhere); remove it, or set "
                     "agent.work_dir");
    if (st.st_uid != ::geteuid() && st.st_uid != 0)
      return problem("it is a symbolic link that uid " + std::to_string(st.st_uid) +
                     " owns (it could point it elsewhere); use the directory's own path");
  }
  if (::stat(root.c_str(), &st) != 0) return problem(std::strerror(errno));
  if (st.st_uid != ::geteuid())
    return problem("it belongs to uid " + std::to_string(st.st_uid) + ", not to uid " +
                   std::to_string(::geteuid()) + ", which runs this agent");
  fs::permissions(root, fs::perms::owner_all, fs::perm_options::replace, ec);
  if (ec) return problem("cannot make it private (mode 0700): " + ec.message());
  // The agent makes each run's directories with mkdir: try one.
  auto probe = root / (".probe-" + std::to_string(::getpid()));
  if (!fs::create_directory(probe, ec) && ec) return problem(ec.message());
  fs::remove(probe, ec);
  return {};
}

namespace {

/// `cfg`, or std::invalid_argument naming its first problem.
agent_config checked(agent_config cfg, const plan_set& plans) {
  if (auto err = cfg.validate(); !err.empty())
    throw std::invalid_argument("agent_config: " + err);
  // What the mesh's registration refuses, found before the agent starts.
  if (plans.empty()) throw std::invalid_argument("plans: offer at least one plan");
  if (plans.size() > wire::max_agent_plans)
    throw std::invalid_argument("plans: at most " +
                                std::to_string(wire::max_agent_plans) + " plans, got " +
                                std::to_string(plans.size()));
  for (auto& [name, p] : plans) {
    if (auto e = wire::validate_plan_name(name, "plans"))
      throw std::invalid_argument("plans: '" + wire::printable_prefix(name, 64) +
                                  "': " + message_of(e));
    if (!p) throw std::invalid_argument("plan '" + name + "' is a null pointer");
  }
  return cfg;
}

} // namespace

agent::agent(agent_config cfg, plan_set plans)
    : impl_(std::make_unique<impl>(checked(std::move(cfg), plans), std::move(plans))) {}

agent::~agent() {
  bool running;
  {
    std::lock_guard<std::mutex> guard{impl_->mtx};
    running = impl_->started;
  }
  if (running) {
    cancel_all();
    wait();
  }
}

void agent::start() {
  std::lock_guard<std::mutex> guard{impl_->mtx};
  if (impl_->started) return;
  impl_->started = true;
  // Plans run as this user: keep them out of the process's memory and
  // /proc/<pid>/environ, where the tokens are (no effect for root's plans).
  if (!impl_->cfg.stay_dumpable) ::prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
  impl_->main = std::thread{[this] { impl_->loop(); }};
}

void agent::drain() {
  {
    std::lock_guard<std::mutex> guard{impl_->mtx};
    if (impl_->draining) return;
    impl_->draining = true;
    impl_->drain_at = steady::now();
    impl_->cv.notify_all();
  }
  impl_->client.interrupt_poll();
}

void agent::cancel_all() {
  drain();
  {
    std::lock_guard<std::mutex> guard{impl_->mtx};
    impl_->cancel_now = true;
    impl_->cv.notify_all();
  }
  impl_->cancel_active();
}

void agent::wait() {
  std::thread t;
  {
    std::lock_guard<std::mutex> guard{impl_->mtx};
    t = std::move(impl_->main);
  }
  if (t.joinable()) t.join();
  // Another caller may be joining the thread: wait for its end all the same.
  std::unique_lock<std::mutex> guard{impl_->mtx};
  impl_->cv.wait(guard, [this] { return impl_->stopped || !impl_->started; });
}

bool agent::wait_for(milliseconds d) {
  std::unique_lock<std::mutex> guard{impl_->mtx};
  // As `wait`: an agent never started has no runtime to wait for.
  return impl_->cv.wait_for(guard, d,
                            [this] { return impl_->stopped || !impl_->started; });
}

agent_stats agent::stats() const {
  std::lock_guard<std::mutex> guard{impl_->mtx};
  agent_stats s;
  s.registered = impl_->registered;
  s.draining = impl_->draining;
  s.stopped = impl_->stopped;
  s.agent_id = impl_->registered ? impl_->client.agent_id() : std::string{};
  s.running = impl_->active.size();
  s.started = impl_->n_started;
  s.finished = impl_->n_finished;
  s.fatal_error = impl_->fatal;
  return s;
}

} // namespace polymesh::sdk
