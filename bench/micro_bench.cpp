// Micro benchmarks of the pure units: selector parse and match, one
// assignment decision with 10,000 agents and 100,000 queued runs across 50
// plans, what the metrics' counting costs, and what the SQLite store's
// triggers that keep the counts of finished runs cost a run's writes, and
// what keeping each run's log size costs a log append and saves a late
// upload's check. Run:
// polymesh_micro_bench
// [--benchmark_min_time=0.2] After Google Benchmark's own report it prints one
// machine-readable line per benchmark: `bench=micro name=... ns_per_op=...`.
#include "mesh/domain/metrics.hpp"
#include "mesh/domain/selector.hpp"
#include "mesh/store/store.hpp"
#include "routines/assignment/assigner.hpp"

#include <benchmark/benchmark.h>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <sqlite3.h>
#include <string>
#include <vector>

using namespace polymesh;

namespace {

const char* simple_text = "env=prod";
const char* complex_text =
    "env in (prod,staging),zone notin (z1,z2),!deprecated,tier>3,gpu,arch==amd64";

label_map agent_labels() {
  return {{"env", "prod"},   {"zone", "z7"},  {"tier", "5"},        {"gpu", "a100"},
          {"arch", "amd64"}, {"os", "linux"}, {"team", "platform"}, {"rack", "r12"}};
}

void BM_selector_parse_simple(benchmark::State& state) {
  std::string text = simple_text;
  for (auto _ : state) {
    auto sel = selector::parse(text);
    benchmark::DoNotOptimize(sel);
  }
}
BENCHMARK(BM_selector_parse_simple);

void BM_selector_parse_complex(benchmark::State& state) {
  std::string text = complex_text;
  for (auto _ : state) {
    auto sel = selector::parse(text);
    benchmark::DoNotOptimize(sel);
  }
}
BENCHMARK(BM_selector_parse_complex);

void BM_selector_match_simple(benchmark::State& state) {
  auto sel = *selector::parse(simple_text);
  auto labels = agent_labels();
  for (auto _ : state)
    benchmark::DoNotOptimize(sel.matches(labels));
}
BENCHMARK(BM_selector_match_simple);

void BM_selector_match_complex(benchmark::State& state) {
  auto sel = *selector::parse(complex_text);
  auto labels = agent_labels();
  for (auto _ : state)
    benchmark::DoNotOptimize(sel.matches(labels));
}
BENCHMARK(BM_selector_match_complex);

// -- assignment ----------------------------------------------------------------

constexpr int n_agents = 10'000;
constexpr int n_runs = 100'000;
constexpr int n_plans = 50;

std::string plan_name(int i) {
  return "plan-" + std::to_string(i % n_plans);
}

const std::vector<std::string>& run_selectors() {
  static const std::vector<std::string> texts{"", "env=prod", "zone in (z1,z2,z3)",
                                              "env!=dev,tier>3"};
  return texts;
}

/// Agent `i` of the simulated fleet: one slot, three labels, no plans yet.
agent_view bench_agent(int i) {
  agent_view v;
  v.id = "agent_" + std::to_string(i);
  v.name = "a" + std::to_string(i);
  v.labels = {{"env", i % 3 == 0 ? "prod" : (i % 3 == 1 ? "dev" : "staging")},
              {"zone", "z" + std::to_string(i % 10)},
              {"tier", std::to_string(i % 8)}};
  v.capacity = 1;
  return v;
}

struct fixture {
  assigner a;
  uint64_t seq = 0;
  std::vector<selector> sels;
  /// seq -> (plan, selector index) of every run made, to queue a like run.
  std::vector<std::pair<int, int>> kinds{{0, 0}};

  queued_run make_run(int plan, int sel) {
    queued_run r;
    r.seq = ++seq;
    r.id = "run_" + std::to_string(r.seq);
    r.priority = static_cast<int64_t>(r.seq % 3);
    r.plan = plan_name(plan);
    r.sel = sels[static_cast<size_t>(sel)];
    kinds.emplace_back(plan, sel);
    return r;
  }

  /// Queues a run like the placed run `id` (same plan and selector), so the
  /// mix of the queue stays the same.
  void replace(const std::string& id) {
    auto [plan, sel] = kinds[std::stoull(id.substr(4))];
    a.enqueue(make_run(plan, sel));
  }

  /// `busy_percent` of the agents have no free slot.
  explicit fixture(int busy_percent) {
    for (auto& t : run_selectors())
      sels.push_back(*selector::parse(t));
    kinds.reserve(n_runs * 4);
    for (int i = 0; i < n_agents; ++i) {
      auto v = bench_agent(i);
      for (int p = 0; p < 5; ++p)
        v.plans.insert(plan_name(i + p * 10));
      a.upsert_agent(v);
      if (i % 100 < busy_percent) a.reserve(v.id);
    }
    for (int i = 0; i < n_runs; ++i)
      a.enqueue(make_run(i % n_plans, (i / n_plans) % static_cast<int>(sels.size())));
  }
};

fixture& shared_fixture(int busy_percent) {
  static std::unique_ptr<fixture> idle;
  static std::unique_ptr<fixture> busy;
  auto& f = busy_percent == 0 ? idle : busy;
  if (!f) f = std::make_unique<fixture>(busy_percent);
  return *f;
}

/// One decision: place() of one run, then put things back (release the slot,
/// queue a fresh run of the same plan) so the state stays the same. The
/// restore is paused out of the measurement.
void BM_assign_place_one(benchmark::State& state) {
  auto& f = shared_fixture(static_cast<int>(state.range(0)));
  int64_t placed = 0;
  for (auto _ : state) {
    auto p = f.a.place(1);
    state.PauseTiming();
    for (auto& x : p) {
      ++placed;
      f.a.release(x.agent_id);
      f.replace(x.run_id);
    }
    state.ResumeTiming();
  }
  state.counters["placed_per_iter"] =
      static_cast<double>(placed) / static_cast<double>(state.iterations());
  state.counters["queued"] = static_cast<double>(f.a.queue_size());
}
BENCHMARK(BM_assign_place_one)->Arg(0)->Arg(99)->ArgName("busy_pct");

/// The whole cycle a placement costs the routine: place(1), release the slot
/// when the run finishes, enqueue a new run. Not paused.
void BM_assign_cycle(benchmark::State& state) {
  auto& f = shared_fixture(static_cast<int>(state.range(0)));
  for (auto _ : state) {
    auto p = f.a.place(1);
    for (auto& x : p) {
      f.a.release(x.agent_id);
      f.replace(x.run_id);
    }
  }
  state.counters["queued"] = static_cast<double>(f.a.queue_size());
}
BENCHMARK(BM_assign_cycle)->Arg(0)->Arg(99)->ArgName("busy_pct");

/// The first run of a kind not seen before (a plan and selector without a
/// class yet), with 10,000 idle agents offering its plan: enqueue() and
/// place(1), each iteration with a new selector. `ranked_all=0` stops there:
/// what the routine does before it answers anything else. `ranked_all=1`
/// also calls rank_more() until the class has looked at every agent: the
/// whole CPU a new class costs. Freeing the placed slot is not measured.
void BM_assign_new_class(benchmark::State& state) {
  bool rank_all = state.range(0) != 0;
  auto a = std::make_unique<assigner>();
  for (int i = 0; i < n_agents; ++i) {
    auto v = bench_agent(i);
    v.plans = {"noop"};
    a->upsert_agent(v);
  }
  uint64_t seq = 0;
  int64_t placed = 0;
  for (auto _ : state) {
    ++seq;
    queued_run r;
    r.seq = seq;
    r.id = "run_" + std::to_string(seq);
    r.plan = "noop";
    r.sel = *selector::parse("env!=kind" + std::to_string(seq));
    a->enqueue(std::move(r));
    auto p = a->place(1);
    while (rank_all && a->ranking())
      a->rank_more();
    state.PauseTiming();
    placed += static_cast<int64_t>(p.size());
    for (auto& x : p)
      a->release(x.agent_id);
    state.ResumeTiming();
  }
  state.counters["placed_per_iter"] =
      static_cast<double>(placed) / static_cast<double>(state.iterations());
}
// Each new class keeps what it ranked while idle, so the iterations are
// bounded.
BENCHMARK(BM_assign_new_class)->Arg(0)->Arg(1)->ArgName("ranked_all")->Iterations(200);

// What `GET /metrics` adds to each answered request (two clock reads and
// the counting) and to each finished run.
void BM_metrics_count_request(benchmark::State& state) {
  http_metrics m{{{"POST", "/v1/runs"}}};
  for (auto _ : state) {
    auto began = std::chrono::steady_clock::now();
    m.answered(0, 201, std::chrono::steady_clock::now() - began);
  }
}
BENCHMARK(BM_metrics_count_request);

void BM_metrics_count_run_end(benchmark::State& state) {
  mesh_metrics m;
  run_record r;
  r.status = run_status::success;
  r.created_at = timestamp{};
  r.started_at = r.created_at + std::chrono::milliseconds{20};
  r.finished_at = r.created_at + std::chrono::milliseconds{900};
  for (auto _ : state)
    m.run_ended(r);
}
BENCHMARK(BM_metrics_count_run_end);

/// A scratch SQLite store under TMPDIR, `synchronous=normal` so that no
/// fsync hides what is measured; removed with it.
struct scratch_store {
  std::string dir;
  std::string path;
  std::unique_ptr<store> db;

  /// Makes the directory and opens the store; false (and a skip) if not.
  bool open(benchmark::State& state) {
    namespace fs = std::filesystem;
    dir = (fs::temp_directory_path() / "polymesh_micro.XXXXXX").string();
    if (!mkdtemp(dir.data())) {
      dir.clear();
      state.SkipWithError("cannot make a scratch directory");
      return false;
    }
    path = (fs::path{dir} / "mesh.db").string();
    return reopen(state);
  }

  bool reopen(benchmark::State& state) {
    db.reset();
    auto opened = open_sqlite_store(path, store_options{"normal", "fast", false});
    if (!opened) {
      state.SkipWithError("cannot open the store");
      return false;
    }
    db = std::move(*opened);
    return true;
  }

  /// Runs `sql` on a connection of its own; false if it failed.
  bool exec(const char* sql) const {
    sqlite3* raw = nullptr;
    sqlite3_open(path.c_str(), &raw);
    auto rc = sqlite3_exec(raw, sql, nullptr, nullptr, nullptr);
    sqlite3_close(raw);
    return rc == SQLITE_OK;
  }

  ~scratch_store() {
    db.reset();
    std::error_code ec;
    if (!dir.empty()) std::filesystem::remove_all(dir, ec);
  }
};

/// A run's writes as meshd makes them, 8 runs to a transaction (one agent
/// with 8 slots): inserted `created`, then `pending`, `running` and
/// `success`, each write setting the changed fields only. Arg 1 with the
/// schema's `run_counts` triggers, 0 with them dropped: the difference is
/// what keeping the counts of finished runs costs a run. On a scratch
/// database under TMPDIR with `synchronous=normal`, so that no fsync hides
/// it; the store grows as the benchmark runs, as a real one does.
void BM_store_run_life(benchmark::State& state) {
  scratch_store scratch;
  if (!scratch.open(state)) return;
  if (state.range(0) == 0) {
    if (!scratch.exec(
            "DROP TRIGGER run_counts_on_end;"
            " DROP TRIGGER run_counts_on_leave; DROP TRIGGER run_counts_on_delete;"))
      return state.SkipWithError("cannot drop the triggers");
    if (!scratch.reopen(state)) return;
  }
  auto& db = scratch.db;
  constexpr int per_batch = 8;
  uint64_t seq = 0;
  auto now = std::chrono::system_clock::now();
  for (auto _ : state) {
    std::vector<run_record> runs(per_batch);
    std::vector<write> batch;
    for (auto& r : runs) {
      r.seq = ++seq;
      r.id = "run_" + std::to_string(r.seq);
      r.plan = "noop";
      r.created_at = now;
      batch.emplace_back(put_run{r, true});
    }
    if (!db->apply(batch)) return state.SkipWithError("insert failed");
    for (auto status : {run_status::pending, run_status::running, run_status::success}) {
      batch.clear();
      for (auto& r : runs) {
        auto next = r;
        next.status = status;
        next.assigned_agent = "agt_1";
        if (status == run_status::success) next.finished_at = now;
        batch.emplace_back(put_run{next, false, changed_run_fields(r, next)});
        r = next;
      }
      if (!db->apply(batch)) return state.SkipWithError("update failed");
    }
  }
  state.SetItemsProcessed(state.iterations() * per_batch);
}
// Alternately, three times each, so that a drift in the host's speed meets both.
BENCHMARK(BM_store_run_life)
    ->Arg(0)
    ->Arg(1)
    ->Arg(0)
    ->Arg(1)
    ->Arg(0)
    ->Arg(1)
    ->ArgName("run_counts")
    ->Iterations(5000);

/// A live run's log appends as meshd makes them: 8 chunks of 4 KiB to a
/// transaction, each added to its run's kept log size (schema version 12).
void BM_store_log_append(benchmark::State& state) {
  scratch_store scratch;
  if (!scratch.open(state)) return;
  constexpr int per_batch = 8;
  std::string data(4096, 'x');
  int64_t seq = 0;
  auto now = std::chrono::system_clock::now();
  for (auto _ : state) {
    std::vector<write> batch;
    for (int i = 0; i < per_batch; ++i)
      batch.emplace_back(append_log{"run_1", log_chunk{seq++, "stdout", data, now}});
    if (!scratch.db->apply(batch)) return state.SkipWithError("append failed");
  }
  state.SetItemsProcessed(state.iterations() * per_batch);
}
BENCHMARK(BM_store_log_append)->Iterations(5000);

/// The check of a log upload to an ended run, against `runs.max_log_bytes`,
/// inside the one write transaction every other write waits for: the run
/// holds 100 MiB of log, and the upload is refused as over the limit (so
/// each iteration checks the same log). Arg 1 reads the run's kept size;
/// arg 0 deletes it first, so the check sums the log, as it did before
/// schema version 12.
void BM_store_late_log_check(benchmark::State& state) {
  scratch_store scratch;
  if (!scratch.open(state)) return;
  auto now = std::chrono::system_clock::now();
  run_record run;
  run.seq = 1;
  run.id = "run_1";
  run.plan = "noop";
  run.status = run_status::success;
  run.created_at = now;
  run.finished_at = now;
  if (!scratch.db->apply({put_run{run, true}}))
    return state.SkipWithError("cannot store the run");
  constexpr int64_t mib = int64_t{1} << 20;
  std::string data(static_cast<size_t>(mib), 'x');
  for (int64_t seq = 0; seq < 100; ++seq)
    if (!scratch.db->apply({append_log{run.id, log_chunk{seq, "stdout", data, now}}}))
      return state.SkipWithError("cannot store the log");
  for (auto _ : state) {
    if (state.range(0) == 0) {
      state.PauseTiming();
      if (!scratch.exec("DELETE FROM run_log_sizes"))
        return state.SkipWithError("cannot delete the kept size");
      state.ResumeTiming();
    }
    auto out = scratch.db->apply(
        {append_late_logs{run.id, {log_chunk{100, "stdout", "x", now}}, 100 * mib}});
    if (!out || out->empty() || !out->front().refused)
      return state.SkipWithError("the upload was not refused");
  }
}
BENCHMARK(BM_store_late_log_check)
    ->Arg(0)
    ->Arg(1)
    ->ArgName("kept")
    ->Unit(benchmark::kMillisecond)
    ->Iterations(10);

/// Prints one `bench=micro` line per benchmark after the normal report.
class line_reporter : public benchmark::ConsoleReporter {
public:
  void ReportRuns(const std::vector<Run>& runs) override {
    ConsoleReporter::ReportRuns(runs);
    for (auto& r : runs) {
      std::string line = "bench=micro name=" + r.benchmark_name() +
                         " ns_per_op=" + std::to_string(r.GetAdjustedRealTime()) +
                         " cpu_ns_per_op=" + std::to_string(r.GetAdjustedCPUTime()) +
                         " iterations=" + std::to_string(r.iterations);
      for (auto& [name, c] : r.counters)
        line += " " + name + "=" + std::to_string(c.value);
      lines_.push_back(line);
    }
  }
  void Finalize() override {
    ConsoleReporter::Finalize();
    for (auto& l : lines_)
      std::printf("%s\n", l.c_str());
  }

private:
  std::vector<std::string> lines_;
};

} // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  line_reporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::Shutdown();
  return 0;
}
