// Forward declarations of the SDK's public types, for headers that only
// pass them around.
#pragma once

#include <cstdint>

namespace polymesh::sdk {

enum class log_stream : uint8_t;
enum class cancel_reason : uint8_t;

class log_sink;
class cancel_token;
class cancel_source;
class plan;
class function_plan;
class plan_catalog;
class settings_reader;
class config_error;
class agent;
class plugin_registrar;

struct run_context;
struct plan_result;
struct process_spec;
struct process_outcome;
struct resource_limit;
struct agent_config;
struct agent_stats;
struct agent_file_config;

} // namespace polymesh::sdk
