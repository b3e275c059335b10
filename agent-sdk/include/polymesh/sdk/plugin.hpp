// Writing a plan plugin in C++: implement `plan`, write a function that
// registers factories, and put `POLYMESH_PLUGIN(that_function)` in one .cpp
// of a shared library linked against `polymesh_plan_api`:
//
//   void register_plans(polymesh::sdk::plugin_registrar& r) {
//     r.add("hello", "Greets the payload", [](const nlohmann::json& settings,
//                                             const std::string& key) { ... });
//   }
//   POLYMESH_PLUGIN(register_plans)
//
// This header adapts C++ plans to the C ABI of `plugin_abi.h`: it checks the
// agent's ABI version, turns the C callbacks into a `log_sink` and a
// `cancel_token`, and keeps exceptions on the plugin's side of the boundary.
// See docs/plugins.md.
#pragma once

#include "polymesh/sdk/plan.hpp"
#include "polymesh/sdk/plan_catalog.hpp"
#include "polymesh/sdk/plugin_abi.h"
#include "polymesh/sdk/settings.hpp"

#include <algorithm>
#include <cstdio>
#include <deque>
#include <dlfcn.h>

namespace polymesh::sdk {

/// Collects the plans of a plugin during `polymesh_plugin_init`.
class plugin_registrar {
public:
  struct entry {
    std::string name;
    std::string description;
    plan_factory factory;
  };

  void add(std::string name, std::string description, plan_factory factory) {
    entries_.push_back(
        entry{std::move(name), std::move(description), std::move(factory)});
  }

  /// Stable addresses: the agent keeps pointers to entries for the life of
  /// the process.
  std::deque<entry>& entries() { return entries_; }

private:
  std::deque<entry> entries_;
};

namespace plugin_detail {

struct instance {
  std::shared_ptr<plan> p;
};

class host_log final : public log_sink {
public:
  explicit host_log(const polymesh_run_v1* r)
      : r_(r) {}
  void write(log_stream s, std::string_view data) override {
    r_->log(r_->host, s == log_stream::out ? POLYMESH_STDOUT : POLYMESH_STDERR,
            data.data(), data.size());
  }

private:
  const polymesh_run_v1* r_;
};

class host_cancel final : public cancel_token {
public:
  explicit host_cancel(const polymesh_run_v1* r)
      : r_(r) {
    if (r->deadline_ms >= 0)
      deadline_ = clock_type::now() + std::chrono::milliseconds{r->deadline_ms};
  }
  bool canceled() const override { return r_->wait_canceled(r_->host, 0) != 0; }
  cancel_reason reason() const override {
    switch (r_->wait_canceled(r_->host, 0)) {
    case POLYMESH_CANCELED_BY_USER: return cancel_reason::canceled_by_user;
    case POLYMESH_TIMEOUT: return cancel_reason::timeout;
    case POLYMESH_AGENT_SHUTDOWN: return cancel_reason::agent_shutdown;
    default: return cancel_reason::none;
    }
  }
  std::optional<clock_type::time_point> deadline() const override { return deadline_; }
  bool wait_for(std::chrono::milliseconds d) const override {
    return r_->wait_canceled(r_->host, d.count()) != 0;
  }

private:
  const polymesh_run_v1* r_;
  std::optional<clock_type::time_point> deadline_;
};

/// `warnings`, one per line, in at most `room - 1` bytes: a line break (or a
/// NUL) in a warning becomes a space, a warning too long for what is left is cut
/// (ending `...`), and those that do not fit at all are counted on a last
/// line.
inline std::string warning_lines(const std::vector<std::string>& warnings, size_t room) {
  constexpr size_t note_room = 48; // "(N more warnings did not fit)"
  std::string out;
  for (size_t i = 0; i < warnings.size(); ++i) {
    auto line = warnings[i];
    for (char c : {'\n', '\r', '\0'})
      std::replace(line.begin(), line.end(), c, ' ');
    // The last warning needs no room for the count after it.
    auto used = out.size() + (out.empty() ? 0 : 1) +
                (i + 1 < warnings.size() ? note_room : 0) + 1;
    auto left = room > used ? room - used : 0;
    if (line.size() > left) {
      if (left < 64) {
        auto note = "(" + std::to_string(warnings.size() - i) + " more warning" +
                    (warnings.size() - i == 1 ? "" : "s") + " did not fit)";
        if (out.size() + 1 + note.size() < room) out += (out.empty() ? "" : "\n") + note;
        break;
      }
      auto cut = left - 3;
      while (cut > 0 && (static_cast<unsigned char>(line[cut]) & 0xC0) == 0x80)
        --cut; // not inside a UTF-8 sequence
      line = line.substr(0, cut) + "...";
    }
    out += (out.empty() ? "" : "\n") + line;
  }
  return out;
}

inline void* create(void* data, const char* settings_json, char* error,
                    size_t error_len) {
  auto* e = static_cast<plugin_registrar::entry*>(data);
  try {
    auto settings = nlohmann::json::parse(settings_json ? settings_json : "null");
    // The plugin's own copy of this library collects its `config_warning`s;
    // they cross to the agent in `error`, one per line (plugin_abi.h).
    config_warnings warnings;
    auto p = e->factory(settings, "plans." + e->name);
    if (!p)
      throw config_error("plans." + e->name, "the plugin's factory returned no plan");
    auto lines = warning_lines(warnings.lines(), error_len);
    std::snprintf(error, error_len, "%s", lines.c_str());
    return new instance{std::move(p)};
  } catch (const std::exception& ex) {
    std::snprintf(error, error_len, "%s", ex.what());
  } catch (...) {
    std::snprintf(error, error_len, "plans.%s: unknown exception", e->name.c_str());
  }
  return nullptr;
}

inline void run(void* inst, const polymesh_run_v1* r) {
  host_log log{r};
  host_cancel cancel{r};
  run_context ctx;
  ctx.run_id = r->run_id;
  ctx.plan = r->plan;
  ctx.params =
      nlohmann::json::parse(r->params_json ? r->params_json : "{}", nullptr, false);
  if (!ctx.params.is_object()) ctx.params = nlohmann::json::object();
  ctx.payload.assign(r->payload ? r->payload : "", r->payload_len);
  ctx.work_dir = r->work_dir;
  ctx.artifacts_dir = r->artifacts_dir;
  ctx.log = &log;
  ctx.cancel = &cancel;
  ctx.kill_grace = std::chrono::milliseconds{r->kill_grace_ms};
  ctx.progress = [r](std::string message) { r->progress(r->host, message.c_str()); };
  plan_result res;
  try {
    res = static_cast<instance*>(inst)->p->run(ctx);
  } catch (const std::exception& e) {
    res = plan_result::failure(std::string{"plan threw an exception: "} + e.what());
  } catch (...) {
    res = plan_result::failure("plan threw an unknown exception");
  }
  r->set_result(r->host, res.ok ? 1 : 0, res.exit_code ? 1 : 0, res.exit_code.value_or(0),
                res.result.c_str(), res.error.c_str());
}

inline void destroy(void* inst) {
  delete static_cast<instance*>(inst);
}

/// Writes why registering the plans failed to stderr, the agent's log: one
/// line naming the plugin's file (the one holding `mine`, an object of the
/// plugin's own), its ASCII control characters (a tab aside) and
/// backslashes escaped, so a message of several lines or with terminal
/// sequences cannot garble or forge the log. (The agent's log also escapes
/// Unicode line separators and bytes that are not UTF-8; this inline code
/// in the plugin does not, as plugins.md says.)
inline void registration_failed(const void* mine, const char* why) {
  std::string line = "plugin ";
  Dl_info file{};
  if (dladdr(mine, &file) && file.dli_fname) line += file.dli_fname;
  line += ": registering its plans failed: ";
  for (const char* p = why; *p; ++p) {
    auto c = static_cast<unsigned char>(*p);
    if (c == '\\') {
      line += "\\\\";
    } else if (c == '\n') {
      line += "\\n";
    } else if (c == '\r') {
      line += "\\r";
    } else if ((c < 0x20 && c != '\t') || c == 0x7f) {
      char hex[8];
      std::snprintf(hex, sizeof hex, "\\x%02x", c);
      line += hex;
    } else {
      line += static_cast<char>(c);
    }
  }
  std::fprintf(stderr, "%s\n", line.c_str());
}

/// `registrar` is the plugin's own (see `POLYMESH_PLUGIN`): a static local
/// here would be one object for every plugin in the process, since GCC
/// makes such statics of inline functions unique symbols across libraries.
inline uint32_t init(const polymesh_host_v1* host,
                     void (*register_plans)(plugin_registrar&),
                     plugin_registrar& registrar) {
  // Touch nothing but the version before it is known to match.
  if (!host || host->abi_version != POLYMESH_PLUGIN_ABI_VERSION)
    return POLYMESH_PLUGIN_ABI_VERSION;
  if (registrar.entries().empty()) {
    // The ABI has no error channel here: the agent's stderr is its log, and
    // the agent then says the plugin registered no plans.
    try {
      register_plans(registrar);
    } catch (const std::exception& e) {
      registration_failed(&registrar, e.what());
      registrar.entries().clear();
    } catch (...) {
      registration_failed(&registrar, "unknown exception");
      registrar.entries().clear();
    }
  }
  for (auto& e : registrar.entries()) {
    polymesh_plan_v1 p{e.name.c_str(), e.description.c_str(), &e, &create, &run,
                       &destroy};
    host->add_plan(host->host, &p);
  }
  return POLYMESH_PLUGIN_ABI_VERSION;
}

} // namespace plugin_detail

} // namespace polymesh::sdk

/// Defines the plugin's entry point around `register_function`, a
/// `void(polymesh::sdk::plugin_registrar&)`, with a registrar of the
/// plugin's own (internal linkage, so plugins loaded together keep theirs).
#define POLYMESH_PLUGIN(register_function)                                               \
  namespace {                                                                            \
  ::polymesh::sdk::plugin_registrar polymesh_plugin_registrar;                           \
  }                                                                                      \
  extern "C" __attribute__((visibility("default"))) uint32_t polymesh_plugin_init(       \
      const polymesh_host_v1* host) {                                                    \
    return ::polymesh::sdk::plugin_detail::init(host, register_function,                 \
                                                polymesh_plugin_registrar);              \
  }
