#include "mesh/domain/metrics.hpp"

#include "mesh/domain/retry.hpp"

#include <algorithm>
#include <charconv>
#include <dirent.h>
#include <fstream>
#include <optional>
#include <sstream>
#include <sys/resource.h>
#include <unistd.h>

namespace polymesh {

namespace {

std::string number(double x) {
  char buf[64];
  // Shortest round-trip digits, never an exponent: "0.0005", not "5e-04".
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, x, std::chars_format::fixed);
  return ec == std::errc{} ? std::string{buf, end} : std::string{"NaN"};
}

std::string number(uint64_t x) {
  return std::to_string(x);
}

void sample(std::string& out, std::string_view name, std::string_view labels,
            const std::string& value) {
  out += name;
  if (!labels.empty()) {
    out += '{';
    out += labels;
    out += '}';
  }
  out += ' ';
  out += value;
  out += '\n';
}

std::string label(std::string_view key, std::string_view value) {
  return std::string{key} + "=\"" + escape_label_value(value) + '"';
}

uint64_t load(const std::atomic<uint64_t>& x) {
  return x.load(std::memory_order_relaxed);
}

void add(std::atomic<uint64_t>& x, uint64_t n) {
  x.fetch_add(n, std::memory_order_relaxed);
}

/// One counter without labels: its HELP and TYPE lines and its sample.
void render_counter(std::string& out, const char* name, const char* help,
                    const std::atomic<uint64_t>& value) {
  describe_metric(out, name, "counter", help);
  sample(out, name, "", number(load(value)));
}

} // namespace

std::string escape_label_value(std::string_view value) {
  std::string out;
  out.reserve(value.size());
  for (char c : value) {
    if (c == '\\')
      out += "\\\\";
    else if (c == '"')
      out += "\\\"";
    else if (c == '\n')
      out += "\\n";
    else
      out += c;
  }
  return out;
}

void describe_metric(std::string& out, std::string_view name, std::string_view type,
                     std::string_view help) {
  out += "# HELP ";
  out += name;
  out += ' ';
  out += help;
  out += "\n# TYPE ";
  out += name;
  out += ' ';
  out += type;
  out += '\n';
}

// -- latency_histogram -----------------------------------------------------------

latency_histogram::latency_histogram(std::vector<double> bounds)
    : bounds_(std::move(bounds))
    , buckets_(new std::atomic<uint64_t>[bounds_.size() + 1]) {
  for (double b : bounds_)
    bounds_ns_.push_back(static_cast<int64_t>(b * 1e9));
  for (size_t i = 0; i <= bounds_.size(); ++i)
    buckets_[i].store(0, std::memory_order_relaxed);
}

std::vector<double> latency_histogram::request_bounds() {
  return {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
          0.25,   0.5,   1,      2.5,   5,    10,    30};
}

std::vector<double> latency_histogram::run_bounds() {
  return {0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 600, 1800, 3600, 21600};
}

void latency_histogram::observe(std::chrono::nanoseconds d) {
  auto ns = std::max<int64_t>(0, d.count());
  auto it = std::lower_bound(bounds_ns_.begin(), bounds_ns_.end(), ns);
  add(buckets_[static_cast<size_t>(it - bounds_ns_.begin())], 1);
  add(sum_ns_, static_cast<uint64_t>(ns));
}

uint64_t latency_histogram::count() const {
  uint64_t n = 0;
  for (size_t i = 0; i <= bounds_.size(); ++i)
    n += load(buckets_[i]);
  return n;
}

void latency_histogram::render(std::string& out, std::string_view name,
                               std::string_view labels) const {
  std::string prefix{labels};
  if (!prefix.empty()) prefix += ',';
  auto bucket = std::string{name} + "_bucket";
  uint64_t cumulative = 0;
  for (size_t i = 0; i < bounds_.size(); ++i) {
    cumulative += load(buckets_[i]);
    sample(out, bucket, prefix + label("le", number(bounds_[i])), number(cumulative));
  }
  cumulative += load(buckets_[bounds_.size()]);
  sample(out, bucket, prefix + label("le", "+Inf"), number(cumulative));
  sample(out, std::string{name} + "_sum", labels,
         number(static_cast<double>(load(sum_ns_)) / 1e9));
  sample(out, std::string{name} + "_count", labels, number(cumulative));
}

// -- http_metrics ----------------------------------------------------------------

http_metrics::http_metrics(std::vector<std::pair<std::string, std::string>> routes) {
  auto init = [](route& r) {
    r.by_status.reset(new std::atomic<uint64_t>[statuses]);
    for (int i = 0; i < statuses; ++i)
      r.by_status[i].store(0, std::memory_order_relaxed);
  };
  for (auto& [method, path] : routes) {
    auto& r = routes_.emplace_back();
    r.method = std::move(method);
    r.path = std::move(path);
    init(r);
  }
  other_.path = "other";
  init(other_);
}

void http_metrics::count(route& r, int status) {
  // cpp-httplib sends 200 for a handler that set no status (-1); a status
  // outside 100..599 otherwise would be a bug, and counts as 500.
  if (status == -1) status = 200;
  if (status < first_status || status >= first_status + statuses) status = 500;
  add(r.by_status[status - first_status], 1);
}

void http_metrics::answered(size_t route, int status, std::chrono::nanoseconds took) {
  auto& r = route < routes_.size() ? routes_[route] : other_;
  count(r, status);
  r.seconds.observe(took);
}

void http_metrics::refused(int status) {
  count(other_, status);
}

void http_metrics::render(std::string& out) const {
  auto labels_of = [](const route& r) {
    return label("method", r.method) + ',' + label("route", r.path);
  };
  describe_metric(out, "polymesh_http_requests_total", "counter",
                  "HTTP requests answered, by endpoint and status (route \"other\": "
                  "refused before any endpoint took them)");
  auto counts = [&](const route& r) {
    for (int i = 0; i < statuses; ++i)
      if (auto n = load(r.by_status[i]); n != 0)
        sample(out, "polymesh_http_requests_total",
               labels_of(r) + ',' + label("code", std::to_string(first_status + i)),
               number(n));
  };
  for (auto& r : routes_)
    counts(r);
  counts(other_);
  describe_metric(out, "polymesh_http_request_duration_seconds", "histogram",
                  "Time from a request's arrival at its endpoint to the answer (a "
                  "long-poll's includes its wait)");
  for (auto& r : routes_)
    if (r.seconds.count() != 0)
      r.seconds.render(out, "polymesh_http_request_duration_seconds", labels_of(r));
}

// -- mesh_metrics ----------------------------------------------------------------

mesh_metrics::mesh_metrics() = default;

void mesh_metrics::runs_submitted(uint64_t n) {
  add(submitted_, n);
}

void mesh_metrics::run_ended(const run_record& run) {
  {
    std::lock_guard<std::mutex> guard{ended_mtx_};
    std::pair<std::string, std::string> key{to_string(run.status), run.reason};
    auto it = ended_.find(key);
    if (it == ended_.end() && ended_.size() >= max_end_reasons) {
      key.second = "other";
      it = ended_.find(key);
    }
    if (it == ended_.end())
      ended_.emplace(std::move(key), 1);
    else
      ++it->second;
  }
  if (!run.started_at) return;
  wait_.observe(*run.started_at - run.created_at);
  if (run.finished_at) run_time_.observe(*run.finished_at - *run.started_at);
}

void mesh_metrics::committed(size_t writes, std::chrono::nanoseconds took, bool ok) {
  add(ok ? commits_ : commit_failures_, 1);
  if (ok) add(writes_, writes);
  commit_seconds_.observe(took);
}

void mesh_metrics::pruned(size_t runs, bool ok) {
  if (ok)
    add(pruned_, runs);
  else
    add(prune_failures_, 1);
}

void mesh_metrics::lease_lapsed() {
  add(lease_lapses_, 1);
}

void mesh_metrics::run_retried(const run_record& ended) {
  static_assert(std::tuple_size_v<decltype(retried_)> == std::size(retry_reasons));
  for (size_t i = 0; i < std::size(retry_reasons); ++i)
    if (retry_reasons[i] == ended.reason) add(retried_[i], 1);
}

void mesh_metrics::agents_held(int64_t n) {
  agents_held_.store(n, std::memory_order_relaxed);
}

void mesh_metrics::render(std::string& out) const {
  render_counter(out, "polymesh_runs_submitted_total",
                 "Runs durably accepted (single submits and batch items)", submitted_);
  describe_metric(out, "polymesh_runs_ended_total", "counter",
                  "Runs that durably reached a terminal state, by status and reason");
  {
    std::lock_guard<std::mutex> guard{ended_mtx_};
    for (auto& [key, n] : ended_)
      sample(out, "polymesh_runs_ended_total",
             label("status", key.first) + ',' + label("reason", key.second), number(n));
  }
  describe_metric(out, "polymesh_run_wait_seconds", "histogram",
                  "From a run's submit to its start, for runs that ended after starting");
  wait_.render(out, "polymesh_run_wait_seconds", "");
  describe_metric(out, "polymesh_run_duration_seconds", "histogram",
                  "From a run's start to its end");
  run_time_.render(out, "polymesh_run_duration_seconds", "");
  render_counter(out, "polymesh_store_commits_total",
                 "Store transactions committed (each one group of writes)", commits_);
  render_counter(out, "polymesh_store_commit_failures_total",
                 "Store transactions that failed (their writes did not happen)",
                 commit_failures_);
  render_counter(out, "polymesh_store_writes_total",
                 "Writes in committed store transactions", writes_);
  describe_metric(out, "polymesh_store_commit_duration_seconds", "histogram",
                  "Time to apply and commit one group of writes, fsync included");
  commit_seconds_.render(out, "polymesh_store_commit_duration_seconds", "");
  render_counter(out, "polymesh_runs_pruned_total",
                 "Finished runs deleted by retention, with their logs and artifacts",
                 pruned_);
  render_counter(out, "polymesh_retention_failures_total",
                 "Retention prunes that failed (retried at the next interval)",
                 prune_failures_);
  render_counter(out, "polymesh_delivery_lease_lapses_total",
                 "Runs placed with an agent that did not start them within "
                 "runs.delivery_lease",
                 lease_lapses_);
  describe_metric(out, "polymesh_runs_retried_total", "counter",
                  "Runs the mesh submitted again after their end (retry.on), by that "
                  "end's reason");
  for (size_t i = 0; i < std::size(retry_reasons); ++i)
    sample(out, "polymesh_runs_retried_total",
           label("reason", std::string{retry_reasons[i]}),
           number(retried_[i].load(std::memory_order_relaxed)));
  describe_metric(out, "polymesh_agents_held_back", "gauge",
                  "Agents placed no run for now after runs placed with them were not "
                  "started (agents.hold_back_max)");
  out += "polymesh_agents_held_back " +
         std::to_string(agents_held_.load(std::memory_order_relaxed)) + "\n";
}

// -- process metrics -------------------------------------------------------------

void render_process_metrics(std::string& out) {
  std::ifstream stat_file{"/proc/self/stat"};
  std::string stat{std::istreambuf_iterator<char>{stat_file}, {}};
  // Fields after the command name, which is in parentheses and may hold spaces;
  // field 3 (state) is fields[0].
  std::vector<std::string> fields;
  if (auto close = stat.rfind(')'); close != std::string::npos) {
    std::istringstream rest{stat.substr(close + 1)};
    for (std::string f; rest >> f;)
      fields.push_back(f);
  }
  auto field = [&](size_t n) -> std::optional<double> {
    if (n < 3 || n - 3 >= fields.size()) return std::nullopt;
    return std::strtod(fields[n - 3].c_str(), nullptr);
  };
  auto ticks = static_cast<double>(::sysconf(_SC_CLK_TCK));
  auto page = static_cast<double>(::sysconf(_SC_PAGESIZE));
  auto gauge = [&](const char* name, const char* type, const char* help, double value) {
    describe_metric(out, name, type, help);
    sample(out, name, "", number(value));
  };
  if (auto u = field(14), s = field(15); u && s && ticks > 0)
    gauge("process_cpu_seconds_total", "counter", "User and system CPU time spent",
          (*u + *s) / ticks);
  if (auto rss = field(24))
    gauge("process_resident_memory_bytes", "gauge", "Resident memory size", *rss * page);
  if (auto vsize = field(23))
    gauge("process_virtual_memory_bytes", "gauge", "Virtual memory size", *vsize);
  if (auto threads = field(20))
    gauge("process_threads", "gauge", "Threads of the process", *threads);
  if (auto start = field(22); start && ticks > 0) {
    std::ifstream proc_stat{"/proc/stat"};
    for (std::string line; std::getline(proc_stat, line);) {
      if (line.rfind("btime ", 0) != 0) continue;
      gauge("process_start_time_seconds", "gauge",
            "Start time of the process since the Unix epoch",
            std::strtod(line.c_str() + 6, nullptr) + *start / ticks);
      break;
    }
  }
  if (DIR* dir = ::opendir("/proc/self/fd")) {
    double open = 0;
    while (auto* entry = ::readdir(dir))
      if (entry->d_name[0] != '.') ++open;
    ::closedir(dir);
    gauge("process_open_fds", "gauge", "Open file descriptors",
          open - 1); // minus `dir`'s own
  }
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur != RLIM_INFINITY)
    gauge("process_max_fds", "gauge", "Maximum open file descriptors",
          static_cast<double>(limit.rlim_cur));
}

} // namespace polymesh
