// mesh-bench: load tool for meshd over its REST API (docs/benchmarks.md).
//
//   mesh-bench submit  --url URL [--runs 20000] [--clients 4] [--batch 1]
//                      [--answer minimal|full] [--durable full]   (--answer: batch
//                                         answers with `Prefer: return=minimal` or not)
//   mesh-bench latency --url URL [--runs 2000]
//   mesh-bench e2e     --url URL [--runs 20000] [--clients 4] [--agents 8] [--slots 8]
//                      [--batch 1] [--protocol single|report|report-implicit]
//                                        (--agents 0: agents run elsewhere, e.g.
//                                         mesh-agent; add --expect-agents N)
//   mesh-bench token   --url URL [--kind registration]   (prints a new token)
//   mesh-bench agents  --url URL --pid PID [--agents 1000] [--rate 200] [--wake-seconds
//   5]
//                      [--idle-seconds 10]
//   mesh-bench restart --meshd BIN --dir DIR [--finished 1000000] [--unfinished 10000]
//                      [--repeat 3]
//
// Every subcommand prints exactly one machine-readable line on stdout
// (`bench=NAME key=value ...`); progress goes to stderr. The admin token comes
// from POLYMESH_ADMIN_TOKEN. Loopback only; every loop is bounded by a count
// and by `--max-seconds`.
#include "mesh/domain/clock.hpp"
#include "mesh/domain/records.hpp"
#include "mesh/store/store.hpp"

#include <algorithm>
#include <arpa/inet.h>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <fcntl.h>
#include <fstream>
#include <httplib.h>
#include <map>
#include <mutex>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <nlohmann/json.hpp>
#include <signal.h>
#include <sstream>
#include <string>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <unordered_map>
#include <unordered_set>
#include <vector>

using nlohmann::json;

namespace {

// -- utilities -----------------------------------------------------------------

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

void sleep_ms(int64_t ms) {
  std::this_thread::sleep_for(std::chrono::milliseconds{ms});
}

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "mesh-bench: %s\n", what.c_str());
  std::exit(1);
}

/// `--key value` options.
struct options {
  std::map<std::string, std::string> kv;

  options(int argc, char** argv, int first) {
    for (int i = first; i < argc; ++i) {
      std::string k = argv[i];
      if (k.rfind("--", 0) != 0 || i + 1 >= argc)
        die("expected --key value, got '" + k + "'");
      kv[k.substr(2)] = argv[++i];
    }
  }
  [[nodiscard]] std::string str(const std::string& k,
                                const std::string& fallback = "") const {
    auto i = kv.find(k);
    return i == kv.end() ? fallback : i->second;
  }
  [[nodiscard]] int64_t num(const std::string& k, int64_t fallback) const {
    auto i = kv.find(k);
    return i == kv.end() ? fallback : std::stoll(i->second);
  }
  [[nodiscard]] std::string need(const std::string& k) const {
    auto i = kv.find(k);
    if (i == kv.end()) die("--" + k + " is required");
    return i->second;
  }
};

/// p-th percentile (0..100) of `xs` (sorted in place), nearest rank.
double percentile(std::vector<double>& xs, double p) {
  if (xs.empty()) return 0;
  std::sort(xs.begin(), xs.end());
  auto rank = static_cast<size_t>(p / 100.0 * static_cast<double>(xs.size()) + 0.999999);
  rank = std::clamp<size_t>(rank, 1, xs.size());
  return xs[rank - 1];
}

std::string fmt(double x, int digits = 1) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", digits, x);
  return buf;
}

/// `name_p50_us=.. name_p90_us=.. name_p99_us=.. name_max_us=..` from ns samples.
std::string pcts(const std::string& name, std::vector<double> ns) {
  for (auto& x : ns)
    x /= 1000.0;
  std::string out;
  for (auto [label, p] :
       {std::pair{"p50", 50.0}, {"p90", 90.0}, {"p99", 99.0}, {"max", 100.0}})
    out += " " + name + "_" + label + "_us=" + fmt(percentile(ns, p));
  return out;
}

struct endpoint {
  std::string host;
  int port = 0;
};

endpoint parse_url(const std::string& url) {
  auto rest = url;
  if (rest.rfind("http://", 0) == 0) rest = rest.substr(7);
  while (!rest.empty() && rest.back() == '/')
    rest.pop_back();
  auto colon = rest.rfind(':');
  if (colon == std::string::npos) die("--url must be http://HOST:PORT");
  return {rest.substr(0, colon), std::stoi(rest.substr(colon + 1))};
}

std::unique_ptr<httplib::Client> client_for(const endpoint& ep) {
  auto c = std::make_unique<httplib::Client>(ep.host, ep.port);
  c->set_tcp_nodelay(true);
  c->set_keep_alive(true);
  c->set_connection_timeout(5, 0);
  c->set_read_timeout(60, 0);
  c->set_write_timeout(10, 0);
  return c;
}

// -- raw HTTP on sockets, with kernel receive times --------------------------------
// The agents workload speaks HTTP on its own sockets: the simulator (one
// epoll loop for every agent) and the submitter of its wake window. Both run
// on the 2 cores meshd uses, so besides the time a thread read an answer
// they record when the kernel received it (SO_TIMESTAMPNS): a wake delayed
// only because the load generator's thread waited for a core can then be
// told apart from one meshd delayed.

/// The IPv4 socket address of `ep`.
sockaddr_in address_of(const endpoint& ep) {
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(ep.port));
  inet_pton(AF_INET, ep.host.c_str(), &addr.sin_addr);
  return addr;
}

/// When an answer arrived: as its reader saw it (`now_ns`) and as the
/// kernel stamped it (CLOCK_REALTIME ns, -1 if it did not).
struct arrival {
  int64_t read = 0;
  int64_t kernel = -1;
};

/// Asks the kernel to stamp every segment `fd` receives.
void stamp_receives(int fd) {
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, &one, sizeof one);
}

/// `recv` that also returns, in `*stamp`, when the kernel received the last
/// of the bytes read (CLOCK_REALTIME ns; left as it was if none came).
ssize_t recv_stamped(int fd, char* buf, size_t len, int64_t* stamp) {
  iovec iov{buf, len};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(timespec))];
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  auto n = ::recvmsg(fd, &msg, 0);
  if (n <= 0) return n;
  for (auto* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c))
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_TIMESTAMPNS) {
      timespec ts{};
      std::memcpy(&ts, CMSG_DATA(c), sizeof ts);
      *stamp = static_cast<int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
    }
  return n;
}

std::string lowercase(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

/// One HTTP/1.1 keep-alive request to `ep`, as bytes to write.
std::string http_request(const endpoint& ep, const std::string& method,
                         const std::string& path, const std::string& token,
                         const std::string& body) {
  std::string r = method + " " + path + " HTTP/1.1\r\nHost: " + ep.host + ":" +
                  std::to_string(ep.port) + "\r\nAuthorization: Bearer " + token +
                  "\r\nConnection: keep-alive\r\n";
  if (!body.empty()) r += "Content-Type: application/json\r\n";
  r += "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
  return r;
}

/// The `id` of the run object in a submit's answer ("" if none).
std::string run_id_in(const std::string& answer) {
  auto id_at = answer.find("\"id\":\"");
  if (id_at == std::string::npos) return {};
  id_at += 6;
  return answer.substr(id_at, answer.find('"', id_at) - id_at);
}

/// The length of the first complete HTTP response in `in` (head and
/// Content-Length body), or 0 while it is incomplete.
size_t response_length(const std::string& in) {
  auto head_end = in.find("\r\n\r\n");
  if (head_end == std::string::npos) return 0;
  auto lower = lowercase(in.substr(0, head_end));
  size_t length = 0;
  auto cl = lower.find("content-length:");
  if (cl != std::string::npos) length = std::stoul(lower.substr(cl + 15));
  return in.size() < head_end + 4 + length ? 0 : head_end + 4 + length;
}

/// Whether a response head ends its connection (`Connection: close`).
bool closes_connection(const std::string& head) {
  return lowercase(head).find("connection: close") != std::string::npos;
}

/// One keep-alive connection that submits runs and notes when the kernel
/// received each answer.
class stamped_submitter {
public:
  stamped_submitter(endpoint ep, std::string token)
      : ep_{std::move(ep)}
      , token_{std::move(token)} {}
  ~stamped_submitter() {
    if (fd_ >= 0) ::close(fd_);
  }
  stamped_submitter(const stamped_submitter&) = delete;
  stamped_submitter& operator=(const stamped_submitter&) = delete;

  /// POST /v1/runs {"plan":"noop"}; the new run's id ("" on failure), and in
  /// `*received` the kernel's receive time of the answer.
  std::string submit(int* status, int64_t* received) {
    *status = -1;
    if (fd_ < 0 && !connect_once()) return {};
    auto req = http_request(ep_, "POST", "/v1/runs", token_, R"({"plan":"noop"})");
    if (::send(fd_, req.data(), req.size(), MSG_NOSIGNAL) !=
        static_cast<ssize_t>(req.size()))
      return drop();
    std::string in;
    char buf[4096];
    size_t len = 0;
    while ((len = response_length(in)) == 0) {
      auto n = recv_stamped(fd_, buf, sizeof buf, received);
      if (n <= 0) return drop();
      in.append(buf, static_cast<size_t>(n));
    }
    *status = std::atoi(in.c_str() + 9);
    auto answer = in.substr(0, len);
    if (closes_connection(answer.substr(0, answer.find("\r\n\r\n")))) drop();
    return *status == 201 ? run_id_in(answer) : std::string{};
  }

private:
  bool connect_once() {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    // The same bounds as the httplib clients: no answer in 60 s is a failure.
    timeval read_timeout{60, 0}, write_timeout{10, 0};
    setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &read_timeout, sizeof read_timeout);
    setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &write_timeout, sizeof write_timeout);
    stamp_receives(fd_);
    auto addr = address_of(ep_);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) return true;
    drop();
    return false;
  }
  std::string drop() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
    return {};
  }

  endpoint ep_;
  std::string token_;
  int fd_ = -1;
};

httplib::Headers bearer(const std::string& token) {
  return {{"Authorization", "Bearer " + token}};
}

std::string admin_token() {
  const char* t = std::getenv("POLYMESH_ADMIN_TOKEN");
  if (!t || !*t) die("POLYMESH_ADMIN_TOKEN must be set to meshd's admin token");
  return t;
}

std::string create_token(const endpoint& ep, const std::string& kind) {
  auto c = client_for(ep);
  json body{{"kind", kind}, {"name", "bench-" + kind + "-" + std::to_string(now_ns())}};
  auto res =
      c->Post("/v1/tokens", bearer(admin_token()), body.dump(), "application/json");
  if (!res || res->status != 201)
    die("POST /v1/tokens failed: " + (res ? std::to_string(res->status) + " " + res->body
                                          : httplib::to_string(res.error())));
  return json::parse(res->body).at("token").get<std::string>();
}

struct agent_creds {
  std::string id;
  std::string token;
};

agent_creds register_agent(httplib::Client& c, const std::string& reg_token,
                           const std::string& name, int64_t capacity) {
  json body{{"name", name},
            {"labels", {{"bench", "1"}}},
            {"plans", {"noop"}},
            {"capacity", capacity}};
  for (int attempt = 0; attempt < 5; ++attempt) {
    auto res =
        c.Post("/v1/agents/register", bearer(reg_token), body.dump(), "application/json");
    if (res && res->status == 201) {
      auto j = json::parse(res->body);
      return {j.at("id").get<std::string>(), j.at("access_token").get<std::string>()};
    }
    std::fprintf(stderr, "register %s: %s\n", name.c_str(),
                 res ? (std::to_string(res->status) + " " + res->body).c_str()
                     : httplib::to_string(res.error()).c_str());
    sleep_ms(100);
  }
  die("cannot register agent " + name);
}

/// POST /v1/runs {plan: noop}; returns the run id or "" on failure.
std::string submit_one(httplib::Client& c, const httplib::Headers& auth, int* status) {
  static const std::string body = R"({"plan":"noop"})";
  auto res = c.Post("/v1/runs", auth, body, "application/json");
  *status = res ? res->status : -1;
  if (!res || res->status != 201) return {};
  return run_id_in(res->body);
}

/// Whether batch submits ask for `Prefer: return=minimal` (`--answer`).
bool minimal_answers = true;

/// POST /v1/runs/batch with `n` noop runs; returns how many were created.
int64_t submit_batch(httplib::Client& c, httplib::Headers auth, int64_t n, int* status) {
  std::string body = R"({"runs":[)";
  for (int64_t i = 0; i < n; ++i)
    body += i ? R"(,{"plan":"noop"})" : R"({"plan":"noop"})";
  body += "]}";
  if (minimal_answers) auth.emplace("Prefer", "return=minimal");
  auto res = c.Post("/v1/runs/batch", auth, body, "application/json");
  *status = res ? res->status : -1;
  if (!res || res->status != 201) return 0;
  int64_t created = 0;
  for (size_t at = 0; (at = res->body.find("\"created\":true", at)) != std::string::npos;
       ++at)
    ++created;
  return created;
}

/// Ids of the runs in a poll answer `{runs:[...], cancel:[...]}`.
std::vector<std::string> run_ids(const std::string& body) {
  std::vector<std::string> out;
  auto j = json::parse(body, nullptr, false);
  if (j.is_discarded() || !j.contains("runs")) return out;
  for (auto& r : j["runs"])
    out.push_back(r.at("id").get<std::string>());
  return out;
}

json readyz(const endpoint& ep) {
  auto c = client_for(ep);
  auto res = c->Get("/readyz", bearer(admin_token()));
  if (!res || res->status != 200) return json::object();
  return json::parse(res->body, nullptr, false);
}

/// One count from /readyz (`section.key`, e.g. runs.success), or -1 when it
/// cannot be read.
int64_t readyz_count(const endpoint& ep, const char* section, const char* key) {
  auto ready = readyz(ep);
  return ready.is_object() && ready.contains(section)
             ? ready[section].value(key, int64_t{-1})
             : -1;
}

// -- submit --------------------------------------------------------------------

struct submit_result {
  int64_t ok = 0;
  int64_t errors = 0;
  int64_t first_ns = 0;
  int64_t last_ns = 0;
  std::vector<double> latencies;
};

/// `clients` threads submit `runs` runs in total, `batch` runs per request
/// (1: `POST /v1/runs`, more: `POST /v1/runs/batch`); returns when all are
/// done or `deadline_ns` passes. Latencies are per request.
submit_result submit_many(const endpoint& ep, const std::string& token, int64_t runs,
                          int64_t clients, int64_t deadline_ns, bool keep_latencies,
                          int64_t batch = 1) {
  std::atomic<int64_t> next{0};
  std::mutex mx;
  submit_result total;
  total.first_ns = now_ns();
  std::vector<std::thread> threads;
  for (int64_t t = 0; t < clients; ++t) {
    threads.emplace_back([&] {
      auto c = client_for(ep);
      auto auth = bearer(token);
      submit_result mine;
      int64_t first;
      while ((first = next.fetch_add(batch)) < runs && now_ns() < deadline_ns) {
        auto n = std::min(batch, runs - first);
        auto t0 = now_ns();
        int status = 0;
        auto created = batch == 1 ? int64_t{!submit_one(*c, auth, &status).empty()}
                                  : submit_batch(*c, auth, n, &status);
        auto t1 = now_ns();
        if (created != n) {
          if (++mine.errors <= 3)
            std::fprintf(stderr, "submit failed: status %d\n", status);
          continue;
        }
        mine.ok += n;
        mine.last_ns = t1;
        if (keep_latencies) mine.latencies.push_back(static_cast<double>(t1 - t0));
      }
      std::lock_guard<std::mutex> guard{mx};
      total.ok += mine.ok;
      total.errors += mine.errors;
      total.last_ns = std::max(total.last_ns, mine.last_ns);
      total.latencies.insert(total.latencies.end(), mine.latencies.begin(),
                             mine.latencies.end());
    });
  }
  for (auto& t : threads)
    t.join();
  return total;
}

int cmd_submit(const options& o) {
  auto ep = parse_url(o.need("url"));
  auto runs = o.num("runs", 20000);
  auto clients = o.num("clients", 4);
  auto batch = std::clamp<int64_t>(o.num("batch", 1), 1, 1000);
  auto answer = o.str("answer", "minimal");
  if (answer != "minimal" && answer != "full") die("--answer must be minimal or full");
  minimal_answers = answer == "minimal";
  auto token = create_token(ep, "submitter");
  auto deadline = now_ns() + o.num("max-seconds", 120) * 1'000'000'000;
  auto r = submit_many(ep, token, runs, clients, deadline, true, batch);
  double secs = static_cast<double>(r.last_ns - r.first_ns) / 1e9;
  std::printf("bench=submit runs=%lld clients=%lld batch=%lld answer=%s ok=%lld "
              "errors=%lld seconds=%s runs_per_s=%s%s "
              "durable=%s\n",
              static_cast<long long>(runs), static_cast<long long>(clients),
              static_cast<long long>(batch), batch > 1 ? answer.c_str() : "full",
              static_cast<long long>(r.ok), static_cast<long long>(r.errors),
              fmt(secs, 3).c_str(), fmt(static_cast<double>(r.ok) / secs, 0).c_str(),
              pcts("submit", r.latencies).c_str(), o.str("durable", "unknown").c_str());
  return r.errors == 0 && r.ok == runs ? 0 : 1;
}

// -- latency -------------------------------------------------------------------

int cmd_latency(const options& o) {
  auto ep = parse_url(o.need("url"));
  auto runs = o.num("runs", 2000);
  auto gap_ms = o.num("gap-ms", 2);
  auto token = create_token(ep, "submitter");
  auto admin = client_for(ep);
  auto agent = register_agent(*admin, admin_token(),
                              "bench-latency-" + std::to_string(now_ns()), 1);

  std::mutex mx;
  std::condition_variable cv;
  bool polling = false; // the agent has (re)issued its poll
  std::unordered_map<std::string, int64_t> held_at, done_at;
  std::atomic<bool> stop{false};
  std::atomic<int64_t> agent_errors{0};

  std::thread agent_thread{[&] {
    auto poll_c = client_for(ep);
    auto work_c = client_for(ep);
    auto auth = bearer(agent.token);
    std::unordered_set<std::string> seen;
    auto path = "/v1/agents/" + agent.id + "/runs?wait=5";
    while (!stop) {
      {
        std::lock_guard<std::mutex> guard{mx};
        polling = true;
      }
      cv.notify_all();
      auto res = poll_c->Get(path, auth);
      auto t = now_ns();
      if (!res || res->status != 200) {
        ++agent_errors;
        sleep_ms(10);
        continue;
      }
      for (auto& id : run_ids(res->body)) {
        if (!seen.insert(id).second) continue;
        {
          std::lock_guard<std::mutex> guard{mx};
          polling = false;
          held_at[id] = t;
        }
        auto s = work_c->Post("/v1/runs/" + id + "/start", auth, "", "application/json");
        auto f = work_c->Post("/v1/runs/" + id + "/finish", auth,
                              R"({"status":"success"})", "application/json");
        auto td = now_ns();
        if (!s || s->status != 200 || !f || f->status != 200) ++agent_errors;
        {
          std::lock_guard<std::mutex> guard{mx};
          done_at[id] = td;
        }
        cv.notify_all();
      }
    }
  }};

  auto c = client_for(ep);
  auto auth = bearer(token);
  // Until the agent has re-issued its poll, and a little longer, so that the
  // poll is parked in meshd: the agent is idle when the next run comes.
  auto await_idle_agent = [&] {
    {
      std::unique_lock<std::mutex> lock{mx};
      cv.wait_for(lock, std::chrono::seconds{5}, [&] { return polling; });
    }
    sleep_ms(gap_ms);
  };
  std::vector<double> dispatch, dispatch_from_send, e2e, submit_rtt;
  int64_t missing = 0, negative = 0;
  for (int64_t i = 0; i < runs; ++i) {
    await_idle_agent();
    auto t0 = now_ns();
    int status = 0;
    auto id = submit_one(*c, auth, &status);
    auto t1 = now_ns();
    if (id.empty()) {
      ++missing;
      continue;
    }
    std::unique_lock<std::mutex> lock{mx};
    if (!cv.wait_for(lock, std::chrono::seconds{10},
                     [&] { return done_at.count(id) > 0; })) {
      ++missing;
      continue;
    }
    auto th = held_at[id];
    negative += th < t1;
    dispatch.push_back(static_cast<double>(std::max<int64_t>(0, th - t1)));
    dispatch_from_send.push_back(static_cast<double>(th - t0));
    e2e.push_back(static_cast<double>(done_at[id] - t0));
    submit_rtt.push_back(static_cast<double>(t1 - t0));
  }
  // The client's own view of a run, as Gearman's foreground job gives it:
  // `POST /v1/runs?wait=30` answers with the finished run.
  std::vector<double> one_request;
  for (int64_t i = 0; i < runs; ++i) {
    await_idle_agent();
    auto t0 = now_ns();
    auto res =
        c->Post("/v1/runs?wait=30", auth, R"({"plan":"noop"})", "application/json");
    auto t1 = now_ns();
    if (!res || res->status != 201 ||
        res->body.find(R"("status":"success")") == std::string::npos) {
      ++missing;
      continue;
    }
    one_request.push_back(static_cast<double>(t1 - t0));
  }
  stop = true;
  agent_thread.join();
  std::printf(
      "bench=latency runs=%lld measured=%zu missing=%lld agent_errors=%lld "
      "held_before_201=%lld%s%s%s%s%s\n",
      static_cast<long long>(runs), dispatch.size(), static_cast<long long>(missing),
      static_cast<long long>(agent_errors.load()), static_cast<long long>(negative),
      pcts("dispatch", dispatch).c_str(),
      pcts("dispatch_from_send", dispatch_from_send).c_str(), pcts("e2e", e2e).c_str(),
      pcts("submit", submit_rtt).c_str(), pcts("one_request", one_request).c_str());
  return missing == 0 ? 0 : 1;
}

// -- e2e -----------------------------------------------------------------------

/// Shared between the e2e parent and its agent processes.
struct e2e_shared {
  std::atomic<int64_t> done;
  /// Runs the report agents have received, each once per agent: when it
  /// reaches the target, no poll can bring more (unless a run was sent
  /// again after its lease lapsed, to another agent).
  std::atomic<int64_t> received;
  std::atomic<int64_t> last_done_ns;
  std::atomic<int64_t> errors;
  std::atomic<int> stop;
};

/// One agent process: a poller and `slots` workers (start + finish).
[[noreturn]] void agent_process(const endpoint& ep, const agent_creds& agent,
                                int64_t slots, e2e_shared* sh, int64_t target) {
  std::mutex mx;
  std::condition_variable cv;
  std::deque<std::string> todo;
  std::thread poller{[&] {
    auto c = client_for(ep);
    auto auth = bearer(agent.token);
    std::unordered_set<std::string> seen;
    auto path = "/v1/agents/" + agent.id + "/runs?wait=2";
    while (!sh->stop) {
      auto res = c->Get(path, auth);
      if (!res || res->status != 200) {
        ++sh->errors;
        sleep_ms(10);
        continue;
      }
      std::vector<std::string> fresh;
      for (auto& id : run_ids(res->body))
        if (seen.insert(id).second) fresh.push_back(id);
      if (fresh.empty()) continue;
      {
        std::lock_guard<std::mutex> guard{mx};
        todo.insert(todo.end(), fresh.begin(), fresh.end());
      }
      cv.notify_all();
    }
  }};
  std::vector<std::thread> workers;
  for (int64_t w = 0; w < slots; ++w) {
    workers.emplace_back([&] {
      auto c = client_for(ep);
      auto auth = bearer(agent.token);
      while (!sh->stop) {
        std::string id;
        {
          std::unique_lock<std::mutex> lock{mx};
          cv.wait_for(lock, std::chrono::milliseconds{100},
                      [&] { return !todo.empty(); });
          if (todo.empty()) continue;
          id = todo.front();
          todo.pop_front();
        }
        auto s = c->Post("/v1/runs/" + id + "/start", auth, "", "application/json");
        auto f = c->Post("/v1/runs/" + id + "/finish", auth, R"({"status":"success"})",
                         "application/json");
        if (!s || s->status != 200 || !f || f->status != 200) {
          ++sh->errors;
          continue;
        }
        sh->last_done_ns = now_ns();
        ++sh->done;
      }
    });
  }
  while (!sh->stop && sh->done < target)
    sleep_ms(5);
  std::fflush(stderr);
  _exit(0); // the poller may sit in a long-poll; do not wait for it
}

/// One agent process speaking `POST /v1/agents/{id}/report`: a finish
/// travels with the next long-poll. With `confirm_start` (what an agent must
/// do before side effects) a received batch is started in its own report
/// (`wait=0`) before it runs: two requests per batch. Without it the start
/// rides with the finish: one request per batch, for plans that may run
/// twice. Once every run has been received, reports that carry finishes no
/// longer wait for more: the last finishes would otherwise be answered only
/// when their report's long-poll ran out, and the run's end time would
/// include it.
[[noreturn]] void report_agent_process(const endpoint& ep, const agent_creds& agent,
                                       bool confirm_start, e2e_shared* sh,
                                       int64_t target) {
  auto c = client_for(ep);
  auto auth = bearer(agent.token);
  auto base = "/v1/agents/" + agent.id + "/report";
  std::unordered_set<std::string> seen;
  std::vector<std::string> held; // received, not yet run
  std::vector<std::string> done; // run, finish not yet acknowledged
  int64_t requests = 0;
  auto post = [&](const json& body, int wait_s) -> json {
    ++requests;
    auto res = c->Post(base + "?wait=" + std::to_string(wait_s), auth, body.dump(),
                       "application/json");
    if (!res || res->status != 200) {
      ++sh->errors;
      sleep_ms(10);
      return nullptr;
    }
    return json::parse(res->body, nullptr, false);
  };
  auto take_runs = [&](const json& answer) {
    for (auto& r : answer["runs"])
      if (auto id = r["id"].get<std::string>(); seen.insert(id).second) {
        held.push_back(id);
        ++sh->received;
      }
  };
  while (!sh->stop && sh->done < target) {
    bool all_received = sh->received >= target;
    json body = json::object();
    if (!done.empty() || (!confirm_start && !held.empty())) {
      json finished = json::array();
      for (auto& id : confirm_start ? done : held)
        finished.push_back(json{{"run", id}, {"status", "success"}, {"exit_code", 0}});
      body["finished"] = std::move(finished);
      if (!confirm_start) body["started"] = held;
    }
    // A report without finishes may wait, as its answer acknowledges nothing
    // (and it picks up a run sent again after a lapsed lease, which
    // `received` counted twice), unless runs wait to be confirmed.
    bool acknowledges = body.contains("finished");
    bool to_confirm = confirm_start && !held.empty();
    auto answer = post(body, (all_received && acknowledges) || to_confirm ? 0 : 2);
    if (answer.is_null()) continue;
    auto acked = static_cast<int64_t>(answer["finished"].size());
    int64_t failed = 0;
    for (auto& item : answer["finished"])
      failed += item["ok"].get<bool>() ? 0 : 1;
    if (acked > 0) {
      sh->errors += failed;
      sh->last_done_ns = now_ns();
      sh->done += acked - failed;
      (confirm_start ? done : held).clear();
    }
    take_runs(answer);
    if (!confirm_start || held.empty()) continue;
    // Confirm the starts before running anything.
    auto started = post(json{{"started", held}}, 0);
    if (started.is_null()) continue;
    for (auto& item : started["started"])
      if (item["ok"].get<bool>())
        done.push_back(item["run"].get<std::string>());
      else
        ++sh->errors;
    held.clear();
    take_runs(started);
  }
  std::fprintf(stderr, "report agent: %lld requests for %zu runs\n",
               static_cast<long long>(requests), seen.size());
  std::fflush(stderr);
  _exit(0);
}

/// e2e with agents started elsewhere (`--agents 0`), e.g. real mesh-agent
/// processes: waits for `--expect-agents` online agents, submits, and
/// watches /readyz until every run succeeded.
int e2e_external(const options& o) {
  auto ep = parse_url(o.need("url"));
  auto runs = o.num("runs", 20000);
  auto clients = o.num("clients", 4);
  auto expect = o.num("expect-agents", 1);
  auto batch = std::clamp<int64_t>(o.num("batch", 1), 1, 1000);
  auto token = create_token(ep, "submitter");
  auto deadline = now_ns() + o.num("max-seconds", 180) * 1'000'000'000;
  for (;;) {
    if (readyz_count(ep, "agents", "online") >= expect) break;
    if (now_ns() > deadline) die("the external agents did not come online");
    sleep_ms(20);
  }
  auto before = readyz_count(ep, "runs", "success");
  if (before < 0) die("cannot read runs.success from /readyz");
  auto t0 = now_ns();
  auto sub = submit_many(ep, token, runs, clients, deadline, false, batch);
  int64_t done = 0;
  int64_t t_end = now_ns();
  while (now_ns() < deadline) {
    auto count = readyz_count(ep, "runs", "success");
    if (count < 0) { // not read this time (a timeout, a 503): ask again
      sleep_ms(20);
      continue;
    }
    done = count - before;
    t_end = now_ns();
    // The count is of the whole store: this benchmark needs a mesh of its own.
    if (done < 0)
      die("the mesh's count of successful runs fell while waiting (retention "
          "deleted runs?): run the benchmark against a mesh of its own");
    if (done >= sub.ok) break;
    // Each /readyz counts every run in the store (≈ 1.4 ms of meshd's CPU
    // at 20,000 runs): every 5 ms that was a quarter of a core taken from
    // the agents being measured. 20 ms is ≈ 0.1 % of a 20,000-run figure.
    sleep_ms(20);
  }
  double secs = static_cast<double>(t_end - t0) / 1e9;
  std::printf("bench=e2e agents=external expect_agents=%lld runs=%lld clients=%lld "
              "batch=%lld submitted=%lld done=%lld errors=%lld seconds=%s runs_per_s=%s "
              "verified_success=%lld verified=%s durable=%s\n",
              static_cast<long long>(expect), static_cast<long long>(runs),
              static_cast<long long>(clients), static_cast<long long>(batch),
              static_cast<long long>(sub.ok), static_cast<long long>(done),
              static_cast<long long>(sub.errors), fmt(secs, 3).c_str(),
              fmt(static_cast<double>(done) / secs, 0).c_str(),
              static_cast<long long>(done), done == runs ? "yes" : "no",
              o.str("durable", "unknown").c_str());
  if (done > runs)
    std::fprintf(stderr,
                 "mesh-bench: %lld more runs succeeded than were submitted: other "
                 "clients use this mesh; run the benchmark against a mesh of its "
                 "own\n",
                 static_cast<long long>(done - runs));
  return done == runs ? 0 : 1;
}

int cmd_e2e(const options& o) {
  auto ep = parse_url(o.need("url"));
  auto runs = o.num("runs", 20000);
  auto clients = o.num("clients", 4);
  auto n_agents = o.num("agents", 8);
  auto slots = o.num("slots", 8);
  if (n_agents == 0) return e2e_external(o);
  if (slots % n_agents != 0) die("--slots must be a multiple of --agents");
  auto protocol = o.str("protocol", "single");
  if (protocol != "single" && protocol != "report" && protocol != "report-implicit")
    die("--protocol must be single, report or report-implicit");
  auto token = create_token(ep, "submitter");
  std::vector<agent_creds> agents;
  {
    auto c = client_for(ep);
    auto tag = std::to_string(now_ns());
    for (int64_t i = 0; i < n_agents; ++i)
      agents.push_back(register_agent(*c, admin_token(),
                                      "bench-e2e-" + tag + "-" + std::to_string(i),
                                      slots / n_agents));
  }
  auto* sh =
      static_cast<e2e_shared*>(mmap(nullptr, sizeof(e2e_shared), PROT_READ | PROT_WRITE,
                                    MAP_SHARED | MAP_ANONYMOUS, -1, 0));
  if (sh == MAP_FAILED) die("mmap failed");
  new (sh) e2e_shared{};
  std::vector<pid_t> children;
  for (auto& a : agents) { // fork before this process starts any thread
    auto pid = fork();
    if (pid == 0) {
      if (protocol == "report")
        report_agent_process(ep, a, true, sh, runs);
      else if (protocol == "report-implicit")
        report_agent_process(ep, a, false, sh, runs);
      else
        agent_process(ep, a, slots / n_agents, sh, runs);
    }
    children.push_back(pid);
  }
  sleep_ms(300); // let the agents' first polls park
  auto deadline = now_ns() + o.num("max-seconds", 180) * 1'000'000'000;
  auto t0 = now_ns();
  auto batch = std::clamp<int64_t>(o.num("batch", 1), 1, 1000);
  auto sub = submit_many(ep, token, runs, clients, deadline, false, batch);
  while (sh->done < sub.ok && now_ns() < deadline)
    sleep_ms(2);
  auto done = sh->done.load();
  auto t_end = sh->last_done_ns.load();
  sh->stop = 1;
  for (auto pid : children) {
    for (int i = 0; i < 100; ++i) {
      if (waitpid(pid, nullptr, WNOHANG) == pid) break;
      sleep_ms(20);
      if (i == 99) {
        kill(pid, SIGKILL);
        waitpid(pid, nullptr, 0);
      }
    }
  }
  double secs = static_cast<double>(t_end - t0) / 1e9;
  int64_t success = readyz_count(ep, "runs", "success");
  std::printf(
      "bench=e2e protocol=%s runs=%lld clients=%lld agents=%lld slots=%lld "
      "submitted=%lld "
      "done=%lld "
      "errors=%lld seconds=%s runs_per_s=%s submit_runs_per_s=%s verified_success=%lld "
      "verified=%s durable=%s\n",
      protocol.c_str(), static_cast<long long>(runs), static_cast<long long>(clients),
      static_cast<long long>(n_agents), static_cast<long long>(slots),
      static_cast<long long>(sub.ok), static_cast<long long>(done),
      static_cast<long long>(sh->errors.load() + sub.errors), fmt(secs, 3).c_str(),
      fmt(static_cast<double>(done) / secs, 0).c_str(),
      fmt(static_cast<double>(sub.ok) / (static_cast<double>(sub.last_ns - t0) / 1e9), 0)
          .c_str(),
      static_cast<long long>(success), success == runs ? "yes" : "no",
      o.str("durable", "unknown").c_str());
  return success == runs ? 0 : 1;
}

// -- agents: many long-polling agents from one epoll loop -----------------------

int64_t proc_rss_kb(int pid) {
  std::ifstream in{"/proc/" + std::to_string(pid) + "/status"};
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::stoll(line.substr(6));
  return -1;
}

int64_t proc_threads(int pid) {
  std::ifstream in{"/proc/" + std::to_string(pid) + "/status"};
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("Threads:", 0) == 0) return std::stoll(line.substr(8));
  return -1;
}

/// utime + stime of `pid`, in clock ticks.
int64_t proc_cpu_ticks(int pid) {
  std::ifstream in{"/proc/" + std::to_string(pid) + "/stat"};
  std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  auto close = all.rfind(')');
  if (close == std::string::npos) return -1;
  std::istringstream rest{all.substr(close + 2)};
  std::string field;
  int64_t utime = 0, stime = 0;
  // Fields after the command: state(3) ... utime is field 14, stime 15.
  for (int i = 3; i <= 15 && rest >> field; ++i) {
    if (i == 14) utime = std::stoll(field);
    if (i == 15) stime = std::stoll(field);
  }
  return utime + stime;
}

/// One simulated agent: one connection, one request at a time.
struct sim_agent {
  agent_creds creds;
  int fd = -1;
  bool connecting = false;
  bool ready = false;           // request written, awaiting the answer
  std::string out;              // bytes left to write
  std::string in;               // bytes read
  int64_t in_stamp = -1;        // when the kernel received the latest of them
  std::deque<std::string> next; // requests after the current one
  std::string current;          // the request in flight (re-sent after a reconnect)
  std::unordered_set<std::string> seen;
};

class sim_loop {
public:
  sim_loop(endpoint ep, std::vector<agent_creds> creds)
      : ep_{std::move(ep)} {
    ep_fd_ = epoll_create1(0);
    for (auto& c : creds) {
      agents_.emplace_back();
      agents_.back().creds = c;
    }
  }
  ~sim_loop() {
    for (auto& a : agents_)
      if (a.fd >= 0) ::close(a.fd);
    ::close(ep_fd_);
  }

  /// Runs until `stop`; connects at most `max_connecting` sockets at a time.
  void run(const std::atomic<bool>& stop, size_t max_connecting = 256) {
    size_t next_connect = 0;
    std::vector<epoll_event> events(1024);
    while (!stop) {
      while (next_connect < agents_.size() && connecting_ < max_connecting) {
        auto& a = agents_[next_connect++];
        a.current = poll_request(a);
        connect_agent(a);
      }
      int n = epoll_wait(ep_fd_, events.data(), static_cast<int>(events.size()), 20);
      for (int i = 0; i < n; ++i)
        handle(agents_[events[i].data.u64], events[i].events);
    }
  }

  std::atomic<size_t> polls_parked_first{0}; // agents whose first poll is written
  std::atomic<int64_t> all_parked_ns{0};
  std::atomic<int64_t> errors{0};
  std::atomic<int64_t> reconnects{0};
  std::atomic<int64_t> polls_answered{0};

  /// run id -> when the poll answer carrying it arrived at the agent.
  std::mutex mx;
  std::unordered_map<std::string, arrival> received;

private:
  std::string request(const std::string& method, const std::string& path,
                      const std::string& token, const std::string& body) {
    return http_request(ep_, method, path, token, body);
  }
  std::string poll_request(const sim_agent& a) {
    return request("GET", "/v1/agents/" + a.creds.id + "/runs?wait=30", a.creds.token,
                   "");
  }

  void connect_agent(sim_agent& a) {
    a.fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(a.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    stamp_receives(a.fd);
    auto addr = address_of(ep_);
    a.in.clear();
    a.out = a.current;
    a.ready = false;
    a.connecting = true;
    ++connecting_;
    int rc = ::connect(a.fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
    if (rc != 0 && errno != EINPROGRESS) {
      ++errors;
    }
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP;
    ev.data.u64 = static_cast<uint64_t>(&a - agents_.data());
    epoll_ctl(ep_fd_, EPOLL_CTL_ADD, a.fd, &ev);
  }

  void reconnect(sim_agent& a) {
    if (a.connecting) {
      a.connecting = false;
      --connecting_;
    }
    epoll_ctl(ep_fd_, EPOLL_CTL_DEL, a.fd, nullptr);
    ::close(a.fd);
    ++reconnects;
    connect_agent(a);
  }

  void want_write(sim_agent& a, bool on) {
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLRDHUP | (on ? EPOLLOUT : 0u);
    ev.data.u64 = static_cast<uint64_t>(&a - agents_.data());
    epoll_ctl(ep_fd_, EPOLL_CTL_MOD, a.fd, &ev);
  }

  void handle(sim_agent& a, uint32_t evs) {
    if (evs & EPOLLOUT) {
      if (a.connecting) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(a.fd, SOL_SOCKET, SO_ERROR, &err, &len);
        a.connecting = false;
        --connecting_;
        if (err != 0) {
          ++errors;
          reconnect(a);
          return;
        }
      }
      while (!a.out.empty()) {
        auto n = ::send(a.fd, a.out.data(), a.out.size(), MSG_NOSIGNAL);
        if (n <= 0) break;
        a.out.erase(0, static_cast<size_t>(n));
      }
      if (a.out.empty()) {
        want_write(a, false);
        if (!a.ready) {
          a.ready = true;
          if (!first_parked_.count(&a - agents_.data())) {
            first_parked_.insert(&a - agents_.data());
            if (++polls_parked_first == agents_.size()) all_parked_ns = now_ns();
          }
        }
      }
    }
    if (evs & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
      char buf[16384];
      bool closed = false;
      for (;;) {
        auto n = recv_stamped(a.fd, buf, sizeof buf, &a.in_stamp);
        if (n > 0) {
          a.in.append(buf, static_cast<size_t>(n));
          continue;
        }
        if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) closed = true;
        break;
      }
      bool close_after = false;
      while (parse_response(a, close_after)) {
      }
      if (closed || close_after) {
        // The server ends keep-alive connections (after N requests or idle):
        // reconnect and send the request still in flight again.
        reconnect(a);
      }
    }
  }

  /// Consumes one complete response from `a.in`; returns false if incomplete.
  bool parse_response(sim_agent& a, bool& close_after) {
    auto length = response_length(a.in);
    if (length == 0) return false;
    auto t = now_ns();
    auto head_end = a.in.find("\r\n\r\n");
    std::string head = a.in.substr(0, head_end);
    int status = std::atoi(head.c_str() + 9);
    std::string body = a.in.substr(head_end + 4, length - head_end - 4);
    a.in.erase(0, length);
    if (closes_connection(head)) close_after = true;
    bool was_poll = a.current.rfind("GET ", 0) == 0;
    if (status != 200) {
      ++errors;
      if (errors < 5) std::fprintf(stderr, "agent answer %d: %s\n", status, body.c_str());
    } else if (was_poll) {
      ++polls_answered;
      for (auto& id : run_ids(body)) {
        if (!a.seen.insert(id).second) continue;
        {
          std::lock_guard<std::mutex> guard{mx};
          received.emplace(id, arrival{t, a.in_stamp});
        }
        a.next.push_back(request("POST", "/v1/runs/" + id + "/start", a.creds.token, ""));
        a.next.push_back(request("POST", "/v1/runs/" + id + "/finish", a.creds.token,
                                 R"({"status":"success"})"));
      }
    }
    // The next request: queued work first, then poll again.
    if (!a.next.empty()) {
      a.current = a.next.front();
      a.next.pop_front();
    } else {
      a.current = poll_request(a);
    }
    if (!close_after) {
      a.out = a.current;
      a.ready = false;
      want_write(a, true);
    }
    return !close_after;
  }

  endpoint ep_;
  int ep_fd_ = -1;
  std::vector<sim_agent> agents_;
  size_t connecting_ = 0;
  std::unordered_set<int64_t> first_parked_;
};

int cmd_agents(const options& o) {
  auto ep = parse_url(o.need("url"));
  int pid = static_cast<int>(o.num("pid", 0));
  if (pid <= 0) die("--pid (meshd's pid) is required");
  auto n = o.num("agents", 1000);
  auto rate = o.num("rate", 200);
  auto wake_seconds = o.num("wake-seconds", 5);
  auto idle_seconds = o.num("idle-seconds", 10);
  auto reg_threads = o.num("register-threads", 4);
  auto rss_start = proc_rss_kb(pid);

  // 1. Register N agents (a few threads of plain HTTP).
  auto reg_token = create_token(ep, "registration");
  std::vector<agent_creds> creds(static_cast<size_t>(n));
  auto t_reg = now_ns();
  {
    std::atomic<int64_t> next{0};
    std::vector<std::thread> threads;
    auto tag = std::to_string(now_ns());
    for (int64_t t = 0; t < reg_threads; ++t)
      threads.emplace_back([&] {
        auto c = client_for(ep);
        for (int64_t i; (i = next.fetch_add(1)) < n;)
          creds[static_cast<size_t>(i)] =
              register_agent(*c, reg_token, "sim-" + tag + "-" + std::to_string(i), 1);
      });
    for (auto& t : threads)
      t.join();
  }
  double reg_s = static_cast<double>(now_ns() - t_reg) / 1e9;
  std::fprintf(stderr, "registered %lld agents in %.2f s\n", static_cast<long long>(n),
               reg_s);

  // 2. Baseline: meshd's CPU with the agents registered but not connected.
  long ticks_per_s = sysconf(_SC_CLK_TCK);
  auto baseline_seconds = o.num("baseline-seconds", 5);
  auto b0 = proc_cpu_ticks(pid);
  auto bw0 = now_ns();
  sleep_ms(baseline_seconds * 1000);
  double baseline_cpu_pct = static_cast<double>(proc_cpu_ticks(pid) - b0) /
                            static_cast<double>(ticks_per_s) /
                            (static_cast<double>(now_ns() - bw0) / 1e9) * 100.0;

  // 3. Connect them all, each with one long-poll outstanding.
  sim_loop loop{ep, creds};
  std::atomic<bool> stop{false};
  auto t_conn = now_ns();
  std::thread loop_thread{[&] { loop.run(stop); }};
  auto deadline = now_ns() + o.num("max-seconds", 120) * 1'000'000'000;
  while (loop.all_parked_ns == 0 && now_ns() < deadline)
    sleep_ms(5);
  double connect_s =
      loop.all_parked_ns ? static_cast<double>(loop.all_parked_ns - t_conn) / 1e9 : -1;
  std::fprintf(stderr, "connected %zu agents in %.2f s\n", loop.polls_parked_first.load(),
               connect_s);
  // Written is not parked: wait until meshd's handlers hold every poll
  // (/readyz http.long_polls), so the idle window below measures idle.
  int64_t parked = 0;
  while ((parked = readyz_count(ep, "http", "long_polls")) < n && now_ns() < deadline)
    sleep_ms(20);
  double parked_s = static_cast<double>(now_ns() - t_conn) / 1e9;
  std::fprintf(stderr, "meshd holds %lld long-polls after %.2f s\n",
               static_cast<long long>(parked), parked_s);
  auto rss_connected = proc_rss_kb(pid);
  auto threads = proc_threads(pid);

  // 4. Idle CPU over idle_seconds, every agent in a long-poll.
  // Sampled every second, so a backlog still draining (CPU falling) can be
  // told from a steady cost; idle_events counts what the agents saw meanwhile
  // (poll answers, errors, reconnects: all should stay 0).
  auto events = [&] {
    return loop.polls_answered.load() + loop.errors.load() + loop.reconnects.load();
  };
  auto e0 = events();
  auto c0 = proc_cpu_ticks(pid);
  auto w0 = now_ns();
  std::string series;
  for (int64_t s = 0, prev = c0; s < idle_seconds; ++s) {
    sleep_ms(1000);
    auto c = proc_cpu_ticks(pid);
    series +=
        (series.empty() ? "" : ",") +
        fmt(static_cast<double>(c - prev) * 100.0 / static_cast<double>(ticks_per_s), 0);
    prev = c;
  }
  auto c1 = proc_cpu_ticks(pid);
  auto w1 = now_ns();
  auto idle_events = events() - e0;
  double idle_cpu_pct = static_cast<double>(c1 - c0) / static_cast<double>(ticks_per_s) /
                        (static_cast<double>(w1 - w0) / 1e9) * 100.0;

  // 5. Wake latency: submit at `rate`/s, time 201 -> the agent reads it.
  auto token = create_token(ep, "submitter");
  struct submit_times {
    int64_t sent = 0;
    arrival answer; // the 201
  };
  std::unordered_map<std::string, submit_times> submitted;
  {
    stamped_submitter c{ep, token};
    auto total = rate * wake_seconds;
    auto period = 1'000'000'000 / std::max<int64_t>(1, rate);
    auto start = now_ns();
    for (int64_t i = 0; i < total; ++i) {
      auto due = start + i * period;
      while (now_ns() < due)
        std::this_thread::sleep_for(std::chrono::microseconds{200});
      auto t0 = now_ns();
      int status = 0;
      int64_t stamp = -1;
      auto id = c.submit(&status, &stamp);
      auto t1 = now_ns();
      if (!id.empty()) submitted[id] = {t0, {t1, stamp}};
    }
  }
  auto wait_until = now_ns() + 5'000'000'000LL;
  size_t got = 0;
  while (now_ns() < wait_until) {
    {
      std::lock_guard<std::mutex> guard{loop.mx};
      got = 0;
      for (auto& [id, t] : submitted)
        got += loop.received.count(id);
    }
    if (got == submitted.size()) break;
    sleep_ms(20);
  }
  std::vector<double> wake, wake_send, wake_kernel;
  int64_t before_201 = 0;
  {
    std::lock_guard<std::mutex> guard{loop.mx};
    for (auto& [id, t] : submitted) {
      auto i = loop.received.find(id);
      if (i == loop.received.end()) continue;
      auto& agent_got = i->second;
      before_201 += agent_got.read < t.answer.read;
      wake.push_back(
          static_cast<double>(std::max<int64_t>(0, agent_got.read - t.answer.read)));
      wake_send.push_back(static_cast<double>(agent_got.read - t.sent));
      if (agent_got.kernel >= 0 && t.answer.kernel >= 0)
        wake_kernel.push_back(static_cast<double>(
            std::max<int64_t>(0, agent_got.kernel - t.answer.kernel)));
    }
  }
  if (auto path = o.str("trace", ""); !path.empty()) {
    // One line per run, in submit order: ns since the first send of the
    // send, the 201 and the agent's read (-1: never read), then the kernel's
    // receive times of the 201 and of the agent's answer, in ns since the
    // first 201's (-1: none). To tell a tail spread over the window from one
    // stall that delays a burst, and meshd's delays from the simulator's.
    std::vector<std::pair<int64_t, std::string>> order; // (sent, id)
    for (auto& [id, t] : submitted)
      order.push_back({t.sent, id});
    std::sort(order.begin(), order.end());
    if (FILE* f = std::fopen(path.c_str(), "w")) {
      auto t0 = order.empty() ? 0 : order.front().first;
      auto k0 = order.empty() ? 0 : submitted[order.front().second].answer.kernel;
      auto since_k0 = [&](int64_t k) {
        return static_cast<long long>(k < 0 ? -1 : k - k0);
      };
      std::lock_guard<std::mutex> guard{loop.mx};
      for (auto& [sent, id] : order) {
        auto& t = submitted[id];
        auto i = loop.received.find(id);
        bool read = i != loop.received.end();
        std::fprintf(f, "%lld %lld %lld %lld %lld\n", static_cast<long long>(sent - t0),
                     static_cast<long long>(t.answer.read - t0),
                     static_cast<long long>(read ? i->second.read - t0 : -1),
                     since_k0(t.answer.kernel), since_k0(read ? i->second.kernel : -1));
      }
      std::fclose(f);
    }
  }
  sleep_ms(500); // let the agents start + finish what they got
  auto rss_end = proc_rss_kb(pid);
  stop = true;
  loop_thread.join();
  std::printf("bench=agents agents=%lld register_s=%s connect_s=%s parked_s=%s "
              "meshd_threads=%lld "
              "rss_start_mb=%s rss_connected_mb=%s rss_end_mb=%s idle_cpu_pct=%s "
              "idle_cpu_series=%s idle_events=%lld baseline_cpu_pct=%s idle_seconds=%lld "
              "wake_rate=%lld wake_runs=%zu woken=%zu "
              "woken_before_201=%lld%s%s "
              "errors=%lld reconnects=%lld\n",
              static_cast<long long>(n), fmt(reg_s, 2).c_str(), fmt(connect_s, 2).c_str(),
              fmt(parked_s, 2).c_str(), static_cast<long long>(threads),
              fmt(static_cast<double>(rss_start) / 1024.0).c_str(),
              fmt(static_cast<double>(rss_connected) / 1024.0).c_str(),
              fmt(static_cast<double>(rss_end) / 1024.0).c_str(),
              fmt(idle_cpu_pct, 2).c_str(), series.c_str(),
              static_cast<long long>(idle_events), fmt(baseline_cpu_pct, 2).c_str(),
              static_cast<long long>(idle_seconds), static_cast<long long>(rate),
              submitted.size(), wake.size(), static_cast<long long>(before_201),
              pcts("wake", wake).c_str(),
              (pcts("wake_kernel", wake_kernel) + " wake_kernel_n=" +
               std::to_string(wake_kernel.size()) + pcts("wake_from_send", wake_send))
                  .c_str(),
              static_cast<long long>(loop.errors.load()),
              static_cast<long long>(loop.reconnects.load()));
  return 0;
}

// -- restart -------------------------------------------------------------------

void populate(const std::string& db, int64_t finished, int64_t unfinished) {
  polymesh::store_options so;
  so.synchronous = "normal";
  auto st = polymesh::open_sqlite_store(db, so);
  if (!st) die("cannot open store " + db + ": " + caf::to_string(st.error()));
  auto now = std::chrono::system_clock::now();
  uint64_t seq = 0;
  auto make = [&](bool done) {
    polymesh::run_record r;
    r.seq = ++seq;
    char id[40];
    std::snprintf(id, sizeof id, "run_bench%020llu",
                  static_cast<unsigned long long>(r.seq));
    r.id = id;
    r.plan = "noop";
    r.submitted_by = "tok_bench";
    r.created_at = now - std::chrono::minutes{30};
    if (done) {
      r.status = polymesh::run_status::success;
      r.assigned_agent = "agent_bench";
      r.attempts = 1;
      r.exit_code = 0;
      r.assigned_at = r.created_at;
      r.delivered_at = r.created_at;
      r.started_at = r.created_at;
      r.finished_at = now - std::chrono::minutes{10};
      r.last_activity_at = r.finished_at;
    }
    return r;
  };
  const int64_t batch_size = 20000;
  auto t0 = now_ns();
  for (int64_t done_left = finished, open_left = unfinished; done_left + open_left > 0;) {
    std::vector<polymesh::write> batch;
    batch.reserve(static_cast<size_t>(batch_size));
    while (static_cast<int64_t>(batch.size()) < batch_size && done_left + open_left > 0) {
      bool done = done_left > 0;
      (done ? done_left : open_left)--;
      batch.emplace_back(polymesh::put_run{make(done), false});
    }
    auto out = (*st)->apply(batch);
    if (!out) die("store apply failed: " + caf::to_string(out.error()));
  }
  std::fprintf(stderr, "populated %lld finished + %lld unfinished runs in %.1f s\n",
               static_cast<long long>(finished), static_cast<long long>(unfinished),
               static_cast<double>(now_ns() - t0) / 1e9);
}

int free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  socklen_t len = sizeof addr;
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  int port = ntohs(addr.sin_port);
  ::close(fd);
  return port;
}

struct start_times {
  double listening_s = -1;
  double healthz_s = -1;
  double readyz_s = -1;
};

/// Starts meshd on `dir`, times `listening`, /healthz and /readyz, stops it.
start_times time_start(const std::string& meshd, const std::string& dir,
                       int64_t max_seconds) {
  int port = free_port();
  int pipefd[2];
  if (pipe(pipefd) != 0) die("pipe failed");
  auto listen = "127.0.0.1:" + std::to_string(port);
  auto t0 = now_ns();
  pid_t pid = fork();
  if (pid == 0) {
    dup2(pipefd[1], 1);
    ::close(pipefd[0]);
    ::close(pipefd[1]);
    execl(meshd.c_str(), meshd.c_str(), "--listen", listen.c_str(), "--data-dir",
          dir.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  ::close(pipefd[1]);
  start_times out;
  std::atomic<int64_t> listening_ns{0};
  std::thread reader{[&] {
    std::string acc;
    char buf[4096];
    for (;;) {
      auto n = ::read(pipefd[0], buf, sizeof buf);
      if (n <= 0) break;
      acc.append(buf, static_cast<size_t>(n));
      if (!listening_ns && acc.find("listening on") != std::string::npos)
        listening_ns = now_ns();
    }
  }};
  httplib::Client c{"127.0.0.1", port};
  c.set_tcp_nodelay(true);
  c.set_connection_timeout(0, 100'000);
  auto deadline = t0 + max_seconds * 1'000'000'000;
  while (now_ns() < deadline) {
    if (out.healthz_s < 0) {
      auto res = c.Get("/healthz");
      if (res && res->status == 200)
        out.healthz_s = static_cast<double>(now_ns() - t0) / 1e9;
    }
    if (out.healthz_s >= 0) {
      auto res = c.Get("/readyz", bearer(admin_token()));
      if (res && res->status == 200) {
        out.readyz_s = static_cast<double>(now_ns() - t0) / 1e9;
        break;
      }
    }
    std::this_thread::sleep_for(std::chrono::microseconds{500});
  }
  if (listening_ns) out.listening_s = static_cast<double>(listening_ns - t0) / 1e9;
  kill(pid, SIGTERM);
  for (int i = 0; i < 300 && waitpid(pid, nullptr, WNOHANG) != pid; ++i)
    sleep_ms(20);
  if (kill(pid, 0) == 0) {
    kill(pid, SIGKILL);
    waitpid(pid, nullptr, 0);
  }
  reader.join();
  ::close(pipefd[0]);
  if (out.listening_s < 0 && listening_ns)
    out.listening_s = static_cast<double>(listening_ns - t0) / 1e9;
  return out;
}

int cmd_restart(const options& o) {
  auto meshd = o.need("meshd");
  auto dir = o.need("dir");
  auto finished = o.num("finished", 1'000'000);
  auto unfinished = o.num("unfinished", 10'000);
  auto repeat = o.num("repeat", 3);
  // Needed for /readyz: checked before meshd starts, so that a missing token
  // does not end the program with a meshd of its own still running.
  (void)admin_token();
  auto db = dir + "/mesh.db";
  std::ifstream exists{db};
  if (!exists.good() || o.str("populate", "auto") == "always")
    populate(db, finished, unfinished);
  else
    std::fprintf(stderr, "reusing %s\n", db.c_str());
  std::vector<double> listening, healthz, ready;
  for (int64_t i = 0; i < repeat; ++i) {
    auto t = time_start(meshd, dir, o.num("max-seconds", 60));
    std::fprintf(stderr, "start %lld: listening %.3f s, healthz %.3f s, readyz %.3f s\n",
                 static_cast<long long>(i + 1), t.listening_s, t.healthz_s, t.readyz_s);
    listening.push_back(t.listening_s);
    healthz.push_back(t.healthz_s);
    ready.push_back(t.readyz_s);
  }
  auto med = [](std::vector<double> xs) { return percentile(xs, 50); };
  auto mx = [](std::vector<double> xs) { return percentile(xs, 100); };
  std::printf("bench=restart finished=%lld unfinished=%lld repeat=%lld listening_s=%s "
              "healthz_s=%s readyz_s=%s healthz_max_s=%s\n",
              static_cast<long long>(finished), static_cast<long long>(unfinished),
              static_cast<long long>(repeat), fmt(med(listening), 3).c_str(),
              fmt(med(healthz), 3).c_str(), fmt(med(ready), 3).c_str(),
              fmt(mx(healthz), 3).c_str());
  return 0;
}

} // namespace

int main(int argc, char** argv) {
  std::signal(SIGPIPE, SIG_IGN);
  if (argc < 2) {
    std::fprintf(
        stderr,
        "usage: mesh-bench submit|latency|e2e|agents|restart|token --key value ...\n");
    return 2;
  }
  std::string cmd = argv[1];
  options o{argc, argv, 2};
  if (cmd == "submit") return cmd_submit(o);
  if (cmd == "token") {
    std::printf(
        "%s\n",
        create_token(parse_url(o.need("url")), o.str("kind", "registration")).c_str());
    return 0;
  }
  if (cmd == "latency") return cmd_latency(o);
  if (cmd == "e2e") return cmd_e2e(o);
  if (cmd == "agents") return cmd_agents(o);
  if (cmd == "restart") return cmd_restart(o);
  die("unknown subcommand '" + cmd + "'");
}
