// The host side of the plugin ABI (plugin_abi.h): dlopen, version check,
// and a C++ `plan` around each C plan table.
#include "polymesh/sdk/plugin_loader.hpp"

#include "isolated_run.hpp"
#include "polymesh/sdk/plugin_abi.h"
#include "polymesh/sdk/settings.hpp"

#include <algorithm>
#include <cstring>
#include <dlfcn.h>
#include <filesystem>
#include <link.h>
#include <mutex>
#include <string_view>

namespace polymesh::sdk {

namespace {

/// The strings a `polymesh_run_v1` points at, owned for the run's length.
struct plugin_run_args {
  explicit plugin_run_args(const run_context& ctx)
      : params_(ctx.params.dump())
      , work_(ctx.work_dir.string())
      , artifacts_(ctx.artifacts_dir.string()) {}

  /// A `polymesh_run_v1` for `ctx` without host callbacks.
  [[nodiscard]] polymesh_run_v1 fill(const run_context& ctx) const {
    polymesh_run_v1 r{};
    r.run_id = ctx.run_id.c_str();
    r.plan = ctx.plan.c_str();
    r.params_json = params_.c_str();
    r.payload = ctx.payload.c_str();
    r.payload_len = ctx.payload.size();
    r.work_dir = work_.c_str();
    r.artifacts_dir = artifacts_.c_str();
    r.deadline_ms = -1;
    if (auto d = ctx.cancel->deadline())
      r.deadline_ms =
          std::max<int64_t>(0, std::chrono::duration_cast<std::chrono::milliseconds>(
                                   *d - cancel_token::clock_type::now())
                                   .count());
    r.kill_grace_ms = ctx.kill_grace.count();
    return r;
  }

private:
  std::string params_;
  std::string work_;
  std::string artifacts_;
};

/// The state of one run of a plugin plan, behind `polymesh_run_v1::host`.
struct run_state {
  run_context* ctx = nullptr;
  std::mutex mtx;
  bool has_result = false;
  plan_result result;
};

int reason_code(cancel_reason r) {
  switch (r) {
  case cancel_reason::none: return POLYMESH_NOT_CANCELED;
  case cancel_reason::canceled_by_user: return POLYMESH_CANCELED_BY_USER;
  case cancel_reason::timeout: return POLYMESH_TIMEOUT;
  case cancel_reason::agent_shutdown: return POLYMESH_AGENT_SHUTDOWN;
  }
  return POLYMESH_NOT_CANCELED;
}

void host_log(void* host, int stream, const char* data, size_t len) {
  auto* st = static_cast<run_state*>(host);
  if (data && len > 0)
    st->ctx->log->write(stream == POLYMESH_STDERR ? log_stream::err : log_stream::out,
                        std::string_view{data, len});
}

int host_wait_canceled(void* host, int64_t timeout_ms) {
  auto* st = static_cast<run_state*>(host);
  if (timeout_ms > 0) st->ctx->cancel->wait_for(std::chrono::milliseconds{timeout_ms});
  return reason_code(st->ctx->cancel->reason());
}

void host_progress(void* host, const char* message) {
  auto* st = static_cast<run_state*>(host);
  if (st->ctx->progress) st->ctx->progress(message ? message : "");
}

void host_set_result(void* host, int ok, int has_exit_code, int64_t exit_code,
                     const char* result, const char* error) {
  auto* st = static_cast<run_state*>(host);
  std::lock_guard<std::mutex> guard{st->mtx};
  st->has_result = true;
  st->result.ok = ok != 0;
  st->result.exit_code = has_exit_code ? std::optional<int64_t>{exit_code} : std::nullopt;
  st->result.result = result ? result : "";
  st->result.error = error ? error : "";
}

/// A plan living in a plugin.
class plugin_plan final : public plan {
public:
  /// `isolated` names the host and what it runs, for isolation `process`;
  /// none for `none`.
  plugin_plan(polymesh_plan_v1 table, void* instance,
              std::optional<isolated_plan> isolated)
      : table_(table)
      , instance_(instance)
      , isolated_(std::move(isolated)) {}
  ~plugin_plan() override { table_.destroy(instance_); }

  plan_result run(run_context& ctx) override {
    if (isolated_) return run_isolated(*isolated_, ctx);
    run_state st;
    st.ctx = &ctx;
    plugin_run_args args{ctx};
    auto r = args.fill(ctx);
    r.host = &st;
    r.log = &host_log;
    r.wait_canceled = &host_wait_canceled;
    r.progress = &host_progress;
    r.set_result = &host_set_result;
    table_.run(instance_, &r);
    std::lock_guard<std::mutex> guard{st.mtx};
    if (!st.has_result)
      return plan_result::failure("plugin plan '" + ctx.plan + "' returned no result");
    return st.result;
  }

private:
  polymesh_plan_v1 table_;
  void* instance_;
  std::optional<isolated_plan> isolated_;
};

/// Behind `polymesh_host_v1::host` while a plugin registers its plans.
struct registration {
  std::string path;
  plugin_isolation isolation = plugin_isolation::process;
  /// The `mesh-plugin-host` for isolation `process`, and the path it opens
  /// the plugin by.
  std::string host;
  std::string host_path;
  /// Limits on each run's host.
  std::vector<resource_limit> limits;
  plan_catalog* catalog = nullptr;
  std::vector<std::string> added;
  std::string error;
};

int host_add_plan(void* host, const polymesh_plan_v1* p) {
  auto* reg = static_cast<registration*>(host);
  if (!p || !p->name || !p->create || !p->run || !p->destroy) {
    if (reg->error.empty())
      reg->error = "plugin " + reg->path + " registered a plan with missing functions";
    return 1;
  }
  polymesh_plan_v1 table = *p;
  std::string name = p->name;
  auto factory = [table, name, isolation = reg->isolation, host = reg->host,
                  path = reg->host_path,
                  limits = reg->limits](const nlohmann::json& settings,
                                        const std::string& key) -> std::shared_ptr<plan> {
    // Room for a refusal, or for the warnings (a line each; those beyond
    // it come as a count, plugin.hpp's `warning_lines`).
    std::vector<char> buffer(16 * 1024, '\0');
    char* error = buffer.data();
    auto text = settings.is_null() ? std::string{"{}"} : settings.dump();
    void* instance = table.create(table.plan_data, text.c_str(), error, buffer.size());
    if (!instance) {
      // A plugin built on plugin.hpp already prefixes its message with the
      // dotted key ("plans.hello.greting: unknown key"); keep that key.
      std::string text = error[0] ? std::string{error, strnlen(error, buffer.size())}
                                  : "the plugin refused the settings";
      if (text.rfind(key, 0) == 0 && text.size() > key.size() &&
          (text[key.size()] == '.' || text[key.size()] == ':')) {
        auto colon = text.find(": ");
        if (colon != std::string::npos)
          throw config_error(text.substr(0, colon), text.substr(colon + 2));
      }
      throw config_error(key, text);
    }
    // Warnings the plugin left (plugin_abi.h), to this thread's collector;
    // no further than the buffer, should a plugin have filled it unended.
    for (std::string_view rest{error, strnlen(error, buffer.size())}; !rest.empty();) {
      auto end = std::min(rest.find('\n'), rest.size());
      if (end > 0) config_warning("", std::string{rest.substr(0, end)});
      rest.remove_prefix(std::min(end + 1, rest.size()));
    }
    std::optional<isolated_plan> isolated;
    if (isolation == plugin_isolation::process)
      isolated = isolated_plan{host, path, name, text, limits};
    return std::make_shared<plugin_plan>(table, instance, std::move(isolated));
  };
  auto err =
      reg->catalog->add(name, p->description ? p->description : "", factory, reg->path);
  if (!err.empty()) {
    if (reg->error.empty()) reg->error = "plugin " + reg->path + ": " + err;
    return 1;
  }
  reg->added.push_back(name);
  return 0;
}

} // namespace

const char* to_string(plugin_isolation i) {
  return i == plugin_isolation::process ? "process" : "none";
}

std::optional<plugin_isolation> parse_plugin_isolation(const std::string& text) {
  if (text == "process") return plugin_isolation::process;
  if (text == "none") return plugin_isolation::none;
  return std::nullopt;
}

std::string load_plugin(const std::string& path, plan_catalog& catalog,
                        std::vector<std::string>* added, plugin_isolation isolation,
                        std::vector<resource_limit> limits) {
  std::string host_program;
  if (isolation == plugin_isolation::process) {
    std::string why;
    auto found = find_plugin_host(&why);
    if (!found) return "plugin " + path + ": " + why;
    host_program = *found;
  }
  void* lib = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!lib) {
    const char* why = ::dlerror();
    return "cannot load plugin " + path + ": " + (why ? why : "unknown error");
  }
  auto* entry = reinterpret_cast<polymesh_plugin_init_fn>(
      ::dlsym(lib, POLYMESH_PLUGIN_ENTRY_SYMBOL));
  if (!entry) {
    ::dlclose(lib);
    return "plugin " + path +
           " has no '" POLYMESH_PLUGIN_ENTRY_SYMBOL
           "' entry point; is it a polymesh plan plugin built with POLYMESH_PLUGIN?";
  }
  // Registration goes into a scratch catalog first, so that a plugin that
  // fails half-way adds nothing.
  plan_catalog scratch = catalog;
  registration reg;
  reg.path = path;
  reg.isolation = isolation;
  reg.host = host_program;
  reg.limits = std::move(limits);
  // The host opens the plugin again for each run: by the path the loader
  // found here, absolute, so that neither a later change of the program's
  // directory nor the host's own library search path makes it another file.
  std::error_code ec;
  reg.host_path = path;
  if (link_map* map = nullptr;
      ::dlinfo(lib, RTLD_DI_LINKMAP, &map) == 0 && map && map->l_name && *map->l_name)
    reg.host_path = map->l_name;
  if (auto abs = std::filesystem::absolute(reg.host_path, ec); !ec)
    reg.host_path = abs.string();
  reg.catalog = &scratch;
  polymesh_host_v1 host{POLYMESH_PLUGIN_ABI_VERSION, &reg, &host_add_plan};
  auto version = entry(&host);
  if (version != POLYMESH_PLUGIN_ABI_VERSION) {
    // The library stays mapped: a plugin of another ABI may have started
    // threads or registered destructors we know nothing about.
    return "plugin " + path + " was built for plugin ABI version " +
           std::to_string(version) + ", this agent speaks version " +
           std::to_string(POLYMESH_PLUGIN_ABI_VERSION) +
           "; rebuild it against this agent-sdk";
  }
  if (!reg.error.empty()) return reg.error;
  if (reg.added.empty()) return "plugin " + path + " registered no plans";
  catalog = std::move(scratch);
  if (added) *added = reg.added;
  return {};
}

} // namespace polymesh::sdk
