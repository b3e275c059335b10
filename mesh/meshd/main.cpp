// meshd: the mesh server. Reads the config (optional), opens the store in
// the data directory, restores agents and runs, and serves the REST API
// until SIGTERM, SIGINT or SIGHUP.
#include "mesh/actors/node.hpp"
#include "mesh/config/mesh_config.hpp"
#include "mesh/domain/error.hpp"
#include "mesh/domain/log.hpp"
#include "mesh/http/inherited_socket.hpp"
#include "mesh/http/open_files.hpp"
#include "mesh/http/server.hpp"
#include "mesh/store/schema_on_disk.hpp"
#include "mesh/store/sqlite_schema.hpp"
#include "mesh/store/store.hpp"

#include <CLI/CLI.hpp>
#include <array>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <pthread.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <thread>
#include <unistd.h>

using namespace polymesh;

namespace {

int fail(const caf::error& err) {
  auto field = field_of(err);
  auto message = message_of(err);
  // Config errors already name their key; others get the field in front.
  if (!field.empty() && message.find(field) == std::string::npos)
    message = field + ": " + message;
  std::cerr << "meshd: " << message << std::endl;
  return 2;
}

/// Gives meshd a futex hash sized for its threads. Since Linux 6.16 a
/// process gets a private futex hash sized by the CPUs, not the threads: 16
/// slots on 2 CPUs. Every parked long-poll is a thread blocked on a futex, so
/// with 10,000 agents each wake-up walked chains of ~600 waiters under a
/// contended bucket lock (half of the CAF workers' time in `futex_wake`,
/// docs/benchmarks.md). Older kernels do not know the call; nothing changes.
void size_futex_hash(int64_t threads) {
  constexpr int pr_futex_hash = 78;          // PR_FUTEX_HASH
  constexpr int pr_futex_hash_set_slots = 1; // PR_FUTEX_HASH_SET_SLOTS
  unsigned long slots = 256;
  while (slots < 2 * static_cast<unsigned long>(threads + 64) && slots < 65536)
    slots *= 2;
  if (prctl(pr_futex_hash, pr_futex_hash_set_slots, slots, 0, 0) == 0)
    log(log_level::debug, "futex hash: " + std::to_string(slots) + " slots");
}

/// `path` made absolute, for messages an operator acts on ("" as is).
std::string absolute(const std::string& path) {
  std::error_code ec;
  auto abs = std::filesystem::absolute(path, ec);
  return ec || path.empty() ? path : abs.lexically_normal().string();
}

/// Why listening on `host` (as split from `listen`) is unsafe: other hosts
/// reach it over plain HTTP, tokens in the clear. "" on loopback.
std::string exposure(const std::string& host, const std::string& listen) {
  // Host names are case-insensitive; Debian's /etc/hosts names ::1
  // ip6-localhost and ip6-loopback too.
  std::string name = host;
  for (auto& c : name)
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (name == "localhost" || name == "ip6-localhost" || name == "ip6-loopback" ||
      name == "::1" || name.rfind("127.", 0) == 0)
    return {};
  return listen + " is reachable from other hosts over plain HTTP (tokens in the "
                  "clear); keep meshd on loopback behind a TLS proxy "
                  "(docs/operations.md, Network)";
}

/// What `--check` prints: the settings that decide where meshd listens and
/// keeps its data, and what is there now. Reads; creates nothing.
/// Returns 2, saying why, when a path there is not what a start needs.
int print_check(const mesh_config& cfg) {
  namespace fs = std::filesystem;
  std::error_code ec;
  auto there = [&](const std::string& p) {
    if (fs::exists(p, ec)) return std::string{};
    return std::string{" (not there yet: created at the first start)"};
  };
  auto db = cfg.database_path();
  // A path this user may not reach would read as "not there yet".
  for (const std::string* p : std::array<const std::string*, 2>{&cfg.data_dir, &db}) {
    (void)fs::status(*p, ec);
    if (ec == std::errc::permission_denied) {
      std::cerr << "meshd: " << (p == &db ? "database '" : "data_dir '") << absolute(*p)
                << "': cannot reach it: " << ec.message()
                << " (run --check as meshd's user: sudo -u USER meshd --check ...)"
                << std::endl;
      return 2;
    }
  }
  if (fs::exists(cfg.data_dir, ec) && !fs::is_directory(cfg.data_dir, ec)) {
    std::cerr << "meshd: data_dir " << absolute(cfg.data_dir) << " is not a directory"
              << std::endl;
    return 2;
  }
  if (fs::is_directory(db, ec)) {
    std::cerr << "meshd: store.path " << absolute(db) << " is a directory, not a database"
              << std::endl;
    return 2;
  }
  // What a start would refuse in the database, or do to it first.
  std::string migration;
  if (fs::exists(db, ec)) {
    auto version = schema_version_on_disk(db);
    auto refuse = [&](const std::string& why) {
      std::cerr << "meshd: database '" << absolute(db) << "': " << why << std::endl;
      return 2;
    };
    if (!version) return refuse(message_of(version.error()));
    if (auto err = check_database_writable(db)) return refuse(message_of(err));
    if (*version > sqlite_schema_version)
      return refuse("database schema version " + std::to_string(*version) +
                    " is newer than this build supports (" +
                    std::to_string(sqlite_schema_version) + ")");
    if (*version > 0 && *version < sqlite_schema_version)
      migration = "  database: schema version " + std::to_string(*version) +
                  ", migrated to " + std::to_string(sqlite_schema_version) +
                  " at the next start (back it up first: docs/operations.md, "
                  "Upgrading)\n";
  }
  std::cout << "config OK: listen " << cfg.listen << ", data_dir "
            << absolute(cfg.data_dir) << there(cfg.data_dir) << ", database "
            << absolute(db) << there(db)
            << (fs::exists(db, ec) && fs::file_size(db, ec) == 0
                    ? " (an empty file: a new, empty mesh is started in it)"
                    : "")
            << "\n";
  auto hp = split_host_port(cfg.listen);
  if (auto why = hp ? exposure(hp->first, cfg.listen) : std::string{}; !why.empty())
    std::cout << "  listen: " << why << "\n";
  // A start raises its limit to the hard one (as the user running this;
  // a systemd unit's is LimitNOFILE=).
  if (auto why =
          open_files_shortfall(current_open_files_limit().hard,
                               static_cast<uint64_t>(cfg.http_threads + cfg.run_waits));
      !why.empty())
    std::cout << "  open files: " << why << "\n";
  std::cout << migration << std::flush;
  return 0;
}

} // namespace

int main(int argc, char** argv) {
  CLI::App app{"meshd — the polymesh mesh server"};
  std::string config_file;
  std::string listen;
  std::string data_dir;
  bool print_endpoints = false;
  bool check_only = false;
  const std::vector<CLI::Option*> paths{
      app.add_option("--config", config_file,
                     "YAML config file (see " POLYMESH_EXAMPLES_DIR
                     "/mesh.example.yaml, config/ in the source)"),
      app.add_option("--listen", listen,
                     "HOST:PORT to listen on (port 0 picks a free port)"),
      app.add_option("--data-dir", data_dir,
                     "Directory for the database and admin.token"),
  };
  app.add_flag("--endpoints", print_endpoints, "Print the API's endpoint table and exit");
  app.add_flag("--check", check_only,
               "Check the config and flags, print where meshd would listen and keep its "
               "data, and exit (0, or 2 naming the first error); creates nothing");
  app.footer("Environment: POLYMESH_ADMIN_TOKEN sets the bootstrap admin token (at least "
             "16 characters, no space at either end, no line break, tab or other "
             "control character); without it meshd creates one and writes it to "
             "DATA_DIR/admin.token on its first start. Defaults of every setting: "
             "mesh.example.yaml (above) and docs/config.md.");
  app.set_version_flag("--version", std::string{"meshd "} + POLYMESH_VERSION);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help and --version exit 0; a usage error is a start-up failure (2).
    return app.exit(e) == 0 ? 0 : 2;
  }
  for (auto* opt : paths)
    if (opt->count() > 0 && opt->as<std::string>().empty()) {
      std::cerr << "meshd: " << opt->get_name() << ": expected a non-empty value"
                << std::endl;
      return 2;
    }

  if (print_endpoints) {
    std::cout << endpoints_markdown();
    return 0;
  }

  mesh_config cfg;
  if (!config_file.empty()) {
    auto loaded = load_mesh_config(config_file);
    if (!loaded) return fail(loaded.error());
    cfg = std::move(*loaded);
  }
  if (!listen.empty()) cfg.listen = listen;
  if (!data_dir.empty()) cfg.data_dir = data_dir;
  if (auto err = validate(cfg)) return fail(err);
  if (auto err = check_admin_token_env()) return fail(err);
  auto hp = split_host_port(cfg.listen);
  if (!hp) return fail(hp.error());
  if (check_only) {
    return print_check(cfg);
  }
  // Socket activation: the socket systemd holds for meshd, instead of
  // `listen` (read before any thread starts: it changes the environment).
  auto inherited = take_inherited_socket();
  if (!inherited) return fail(inherited.error());
  log_level level = log_level::info;
  if (parse_log_level(cfg.log_level, level)) set_log_level(level);
  size_futex_hash(cfg.http_threads + cfg.run_waits);
  auto [files_before, files] = raise_open_files_limit();
  if (files.soft > files_before.soft)
    log(log_level::debug, "open files: limit raised from " +
                              std::to_string(files_before.soft) + " to " +
                              std::to_string(files.soft) + " (the hard limit)");
  if (auto why = open_files_shortfall(
          files.soft, static_cast<uint64_t>(cfg.http_threads + cfg.run_waits));
      !why.empty())
    log(log_level::warn, "open files: " + why);

  // The database holds payloads, logs and token hashes: whatever meshd
  // creates (also a store.path outside the 0700 data directory, its WAL
  // files, new parent directories) is for its own user only.
  ::umask(077);

  // Signals go to one waiting thread, never to a worker.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  // A closed terminal: shut down cleanly too (meshd does not reload).
  sigaddset(&signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  std::signal(SIGPIPE, SIG_IGN);

  system_clock clk;
  std::error_code ec;
  // An empty file is no database either: what a failed restore (an empty
  // backup, a `cp` cut short) leaves, worth the same warning.
  auto found = std::filesystem::file_size(cfg.database_path(), ec);
  bool fresh = ec || found == 0;
  bool was_empty_file = !ec && found == 0;
  auto node = mesh_node::start(cfg, clk);
  if (!node) return fail(node.error());
  auto& r = (*node)->restored();
  // A new database is worth a line of its own: a mistyped --data-dir or
  // store.path starts an empty mesh that no token of the real one opens.
  if (fresh)
    log(log_level::warn,
        "store " + absolute(cfg.database_path()) +
            (was_empty_file ? ": the database file was empty (0 bytes); started a new, "
                              "empty mesh"
                            : ": no database was there; started a new, "
                              "empty mesh"));
  else
    log(log_level::info, "store " + absolute(cfg.database_path()) + ": restored " +
                             std::to_string(r.agents) + " agents, " +
                             std::to_string(r.runs) + " unfinished runs, " +
                             std::to_string(r.tokens) + " tokens in " +
                             std::to_string(static_cast<int>(r.seconds * 1000)) + " ms");
  if (!(*node)->admin_token_file().empty())
    log(log_level::warn,
        "admin token written to " + absolute((*node)->admin_token_file()));

  http_server server{**node};
  std::string host = hp->first;
  int port = 0;
  std::string listen_setting = cfg.listen;
  if (*inherited) {
    auto address = server.adopt(**inherited);
    if (!address) return fail(address.error());
    std::tie(host, port) = *address;
    listen_setting =
        "the socket systemd passed (" + host + ":" + std::to_string(port) + ")";
    log(log_level::info, "serving on the socket systemd passed (socket activation); "
                         "http.listen (" +
                             cfg.listen + ") is not used");
  } else {
    auto bound = server.bind(hp->first, hp->second);
    if (!bound) return fail(bound.error());
    port = *bound;
  }
  auto shown_host = host.find(':') != std::string::npos ? "[" + host + "]" : host;
  // Started before meshd says it listens: a thread the system refuses is a
  // start-up failure (exit 2), not an abort after `listening on`. A second
  // signal while requests finish cuts their connections at once instead of
  // after http.stop_grace.
  std::thread waiter;
  std::atomic<bool> served{false};
  try {
    waiter = std::thread{[&] {
      for (int signals_seen = 0;; ++signals_seen) {
        int sig = 0;
        sigwait(&signals, &sig);
        if (served) return; // sent by main once serve() returned
        const char* name = sig == SIGTERM  ? "SIGTERM"
                           : sig == SIGINT ? "SIGINT"
                                           : "SIGHUP";
        if (signals_seen > 0) {
          log(log_level::info, std::string{"received "} + name +
                                   " again: cutting the requests still in progress");
          server.hurry();
          continue;
        }
        log(log_level::info, std::string{"received "} + name + ", shutting down");
        (*node)->begin_shutdown();
        server.stop();
      }
    }};
  } catch (const std::system_error& e) {
    std::cerr << "meshd: cannot start its signal thread: " << e.what() << std::endl;
    return 2;
  }
  std::printf("listening on http://%s:%d\n", shown_host.c_str(), port);
  std::fflush(stdout);
  if (auto why = exposure(host, listen_setting); !why.empty())
    log(log_level::warn, "listening on " + why);

  server.serve();
  // serve() also returns if the listener fails; make sure the waiter ends.
  served = true;
  pthread_kill(waiter.native_handle(), SIGTERM);
  waiter.join();
  (*node)->shutdown();
  log(log_level::info, "stopped");
  return 0;
}
