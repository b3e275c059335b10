// gearman-bench: the Gearman peer of mesh-bench (bench/compare-gearman.sh).
//
//   gearman-bench submit  --port P [--jobs 20000] [--clients 4]
//   gearman-bench e2e     --port P [--jobs 20000] [--clients 4] [--workers 8]
//   gearman-bench latency --port P [--jobs 2000]
//
// Equivalent work to mesh-bench: background jobs of a `noop` function
// (submit, e2e), worker processes with one slot each (8 slots in total), and
// for latency one idle worker: background jobs timed from JOB_CREATED to the
// worker holding the job (dispatch), foreground jobs timed submit -> result
// (e2e). Each subcommand prints one `bench=gearman-NAME ...` line.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <libgearman/gearman.h>
#include <map>
#include <mutex>
#include <string>
#include <sys/mman.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

namespace {

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

void sleep_ms(int64_t ms) {
  std::this_thread::sleep_for(std::chrono::milliseconds{ms});
}

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "gearman-bench: %s\n", what.c_str());
  std::exit(1);
}

std::map<std::string, std::string> parse(int argc, char** argv) {
  std::map<std::string, std::string> kv;
  for (int i = 2; i + 1 < argc; i += 2) {
    std::string k = argv[i];
    if (k.rfind("--", 0) != 0) die("expected --key value, got '" + k + "'");
    kv[k.substr(2)] = argv[i + 1];
  }
  return kv;
}

int64_t num(const std::map<std::string, std::string>& kv, const std::string& k,
            int64_t fallback) {
  auto i = kv.find(k);
  return i == kv.end() ? fallback : std::stoll(i->second);
}

double percentile(std::vector<double>& xs, double p) {
  if (xs.empty()) return 0;
  std::sort(xs.begin(), xs.end());
  auto rank = static_cast<size_t>(p / 100.0 * static_cast<double>(xs.size()) + 0.999999);
  rank = std::clamp<size_t>(rank, 1, xs.size());
  return xs[rank - 1];
}

std::string pcts(const std::string& name, std::vector<double> ns) {
  std::string out;
  for (auto& x : ns)
    x /= 1000.0;
  for (auto [label, p] :
       {std::pair{"p50", 50.0}, {"p90", 90.0}, {"p99", 99.0}, {"max", 100.0}}) {
    char buf[96];
    std::snprintf(buf, sizeof buf, " %s_%s_us=%.1f", name.c_str(), label,
                  percentile(ns, p));
    out += buf;
  }
  return out;
}

int port_g = 4730;

gearman_client_st* new_client() {
  auto* c = gearman_client_create(nullptr);
  if (!c || gearman_client_add_server(c, "127.0.0.1", static_cast<in_port_t>(port_g)) !=
                GEARMAN_SUCCESS)
    die("cannot create gearman client");
  return c;
}

/// Shared between the parent and its worker processes.
struct shared {
  std::atomic<int64_t> done;
  std::atomic<int64_t> last_done_ns;
  std::atomic<int> stop;
  /// latency: time the worker got job i (background jobs carry i).
  std::atomic<int64_t> held_at[4096];
};

shared* sh = nullptr;

void* noop_fn(gearman_job_st* job, void*, size_t* result_size, gearman_return_t* ret) {
  auto t = now_ns();
  auto size = gearman_job_workload_size(job);
  if (size > 0 && size < 16) {
    std::string w(static_cast<const char*>(gearman_job_workload(job)), size);
    if (w[0] == 'L') {
      auto i = std::stoll(w.substr(1));
      if (i >= 0 && i < 4096) sh->held_at[i] = t;
    }
  }
  sh->last_done_ns = now_ns();
  ++sh->done;
  *result_size = 0;
  *ret = GEARMAN_SUCCESS;
  return nullptr;
}

[[noreturn]] void worker_process() {
  auto* w = gearman_worker_create(nullptr);
  if (!w || gearman_worker_add_server(w, "127.0.0.1", static_cast<in_port_t>(port_g)) !=
                GEARMAN_SUCCESS)
    _exit(2);
  gearman_worker_add_function(w, "noop", 0, noop_fn, nullptr);
  gearman_worker_set_timeout(w, 200); // so that `stop` is seen
  while (!sh->stop) {
    auto rc = gearman_worker_work(w);
    if (rc != GEARMAN_SUCCESS && rc != GEARMAN_TIMEOUT && rc != GEARMAN_NO_ACTIVE_FDS &&
        rc != GEARMAN_IO_WAIT)
      sleep_ms(10);
  }
  gearman_worker_free(w);
  _exit(0);
}

std::vector<pid_t> start_workers(int64_t n) {
  std::vector<pid_t> pids;
  for (int64_t i = 0; i < n; ++i) {
    auto pid = fork();
    if (pid == 0) worker_process();
    pids.push_back(pid);
  }
  return pids;
}

void stop_workers(const std::vector<pid_t>& pids) {
  sh->stop = 1;
  for (auto pid : pids) {
    bool gone = false;
    for (int i = 0; i < 100 && !gone; ++i) {
      gone = waitpid(pid, nullptr, WNOHANG) == pid;
      if (!gone) sleep_ms(10);
    }
    if (!gone) {
      kill(pid, SIGKILL);
      waitpid(pid, nullptr, 0);
    }
  }
}

struct submit_stats {
  int64_t ok = 0, errors = 0, first_ns = 0, last_ns = 0;
};

submit_stats submit_background(int64_t jobs, int64_t clients, int64_t deadline_ns) {
  std::atomic<int64_t> next{0};
  std::mutex mx;
  submit_stats total;
  total.first_ns = now_ns();
  std::vector<std::thread> threads;
  auto tag = std::to_string(getpid()) + "-" + std::to_string(now_ns());
  for (int64_t t = 0; t < clients; ++t)
    threads.emplace_back([&] {
      auto* c = new_client();
      submit_stats mine;
      for (int64_t i; (i = next.fetch_add(1)) < jobs && now_ns() < deadline_ns;) {
        auto unique = tag + "-" + std::to_string(i);
        gearman_job_handle_t handle;
        auto rc = gearman_client_do_background(c, "noop", unique.c_str(), "x", 1, handle);
        if (rc != GEARMAN_SUCCESS) {
          if (++mine.errors <= 3)
            std::fprintf(stderr, "do_background: %s\n", gearman_client_error(c));
          continue;
        }
        ++mine.ok;
        mine.last_ns = now_ns();
      }
      gearman_client_free(c);
      std::lock_guard<std::mutex> guard{mx};
      total.ok += mine.ok;
      total.errors += mine.errors;
      total.last_ns = std::max(total.last_ns, mine.last_ns);
    });
  for (auto& t : threads)
    t.join();
  return total;
}

int cmd_submit(const std::map<std::string, std::string>& kv) {
  auto jobs = num(kv, "jobs", 20000);
  auto clients = num(kv, "clients", 4);
  auto deadline = now_ns() + num(kv, "max-seconds", 120) * 1'000'000'000;
  auto s = submit_background(jobs, clients, deadline);
  double secs = static_cast<double>(s.last_ns - s.first_ns) / 1e9;
  std::printf(
      "bench=gearman-submit jobs=%lld clients=%lld ok=%lld errors=%lld seconds=%.3f "
      "runs_per_s=%.0f complete=%s\n",
      static_cast<long long>(jobs), static_cast<long long>(clients),
      static_cast<long long>(s.ok), static_cast<long long>(s.errors), secs,
      static_cast<double>(s.ok) / secs, s.ok == jobs ? "yes" : "no");
  return 0;
}

int cmd_e2e(const std::map<std::string, std::string>& kv) {
  auto jobs = num(kv, "jobs", 20000);
  auto clients = num(kv, "clients", 4);
  auto workers = start_workers(num(kv, "workers", 8));
  sleep_ms(300);
  auto deadline = now_ns() + num(kv, "max-seconds", 180) * 1'000'000'000;
  auto t0 = now_ns();
  auto s = submit_background(jobs, clients, deadline);
  while (sh->done < s.ok && now_ns() < deadline)
    sleep_ms(2);
  auto done = sh->done.load();
  double secs = static_cast<double>(sh->last_done_ns.load() - t0) / 1e9;
  stop_workers(workers);
  std::printf(
      "bench=gearman-e2e jobs=%lld clients=%lld workers=%lld submitted=%lld done=%lld "
      "errors=%lld seconds=%.3f runs_per_s=%.0f complete=%s\n",
      static_cast<long long>(jobs), static_cast<long long>(clients),
      static_cast<long long>(workers.size()), static_cast<long long>(s.ok),
      static_cast<long long>(done), static_cast<long long>(s.errors), secs,
      static_cast<double>(done) / secs, done == jobs ? "yes" : "no");
  return 0;
}

int cmd_latency(const std::map<std::string, std::string>& kv) {
  auto jobs = std::min<int64_t>(num(kv, "jobs", 2000), 4096);
  auto gap_ms = num(kv, "gap-ms", 2);
  auto workers = start_workers(1);
  sleep_ms(300);
  auto* c = new_client();
  auto tag = std::to_string(getpid()) + "-" + std::to_string(now_ns());
  std::vector<double> dispatch, dispatch_send, e2e;
  int64_t missing = 0;
  // Dispatch: background job created (JOB_CREATED back) -> worker holds it.
  for (int64_t i = 0; i < jobs; ++i) {
    sleep_ms(gap_ms); // the worker is idle (asleep in PRE_SLEEP)
    auto w = "L" + std::to_string(i);
    auto unique = tag + "-d" + std::to_string(i);
    gearman_job_handle_t handle;
    auto t0 = now_ns();
    auto rc = gearman_client_do_background(c, "noop", unique.c_str(), w.data(), w.size(),
                                           handle);
    auto t1 = now_ns();
    if (rc != GEARMAN_SUCCESS) {
      ++missing;
      continue;
    }
    auto until = now_ns() + 5'000'000'000LL;
    while (sh->held_at[i] == 0 && now_ns() < until) // the worker stamps the time
      std::this_thread::sleep_for(std::chrono::microseconds{50});
    if (sh->held_at[i] == 0) {
      ++missing;
      continue;
    }
    dispatch.push_back(static_cast<double>(std::max<int64_t>(0, sh->held_at[i] - t1)));
    dispatch_send.push_back(static_cast<double>(sh->held_at[i] - t0));
  }
  // End to end: a foreground job, submit -> result.
  for (int64_t i = 0; i < jobs; ++i) {
    sleep_ms(gap_ms);
    auto unique = tag + "-e" + std::to_string(i);
    size_t size = 0;
    gearman_return_t rc;
    auto t0 = now_ns();
    void* result = gearman_client_do(c, "noop", unique.c_str(), "x", 1, &size, &rc);
    auto t1 = now_ns();
    free(result);
    if (rc != GEARMAN_SUCCESS) {
      ++missing;
      continue;
    }
    e2e.push_back(static_cast<double>(t1 - t0));
  }
  gearman_client_free(c);
  stop_workers(workers);
  std::printf("bench=gearman-latency jobs=%lld measured=%zu missing=%lld%s%s%s\n",
              static_cast<long long>(jobs), dispatch.size(),
              static_cast<long long>(missing), pcts("dispatch", dispatch).c_str(),
              pcts("dispatch_from_send", dispatch_send).c_str(),
              pcts("e2e", e2e).c_str());
  return 0;
}

} // namespace

int main(int argc, char** argv) {
  if (argc < 2) die("usage: gearman-bench submit|e2e|latency --port P ...");
  auto kv = parse(argc, argv);
  port_g = static_cast<int>(num(kv, "port", 4730));
  sh = static_cast<shared*>(mmap(nullptr, sizeof(shared), PROT_READ | PROT_WRITE,
                                 MAP_SHARED | MAP_ANONYMOUS, -1, 0));
  if (sh == MAP_FAILED) die("mmap failed");
  new (sh) shared{};
  std::string cmd = argv[1];
  if (cmd == "submit") return cmd_submit(kv);
  if (cmd == "e2e") return cmd_e2e(kv);
  if (cmd == "latency") return cmd_latency(kv);
  die("unknown subcommand '" + cmd + "'");
}
