// The run spec's encoding: a magic word, then each string as a 4-byte
// length and its bytes, then the two integers. The result frame's payload:
// ok (1 byte), whether there is an exit code (1), the exit code (8), the
// result as a 4-byte length and its bytes, then the error (the rest).
#include "isolation_wire.hpp"

#include <cstring>

namespace polymesh::sdk::detail {

namespace {

/// Changes with the layout below, and with the frames the host sends (3:
/// `frame_started`): a host of another build refuses the spec instead of
/// misreading it or sending what the agent does not know.
constexpr std::string_view spec_magic{"polymesh-run-spec-3\n"};

template <class T> void put(std::string& out, T value) {
  char bytes[sizeof value];
  std::memcpy(bytes, &value, sizeof value);
  out.append(bytes, sizeof bytes);
}

void put_string(std::string& out, std::string_view s) {
  put(out, static_cast<uint32_t>(s.size()));
  out.append(s);
}

/// Reads from the front of `in`; false once it runs short.
struct reader {
  std::string_view in;

  template <class T> bool get(T& value) {
    if (in.size() < sizeof value) return false;
    std::memcpy(&value, in.data(), sizeof value);
    in.remove_prefix(sizeof value);
    return true;
  }

  bool get_string(std::string& s) {
    uint32_t len = 0;
    if (!get(len) || in.size() < len) return false;
    s.assign(in.data(), len);
    in.remove_prefix(len);
    return true;
  }
};

} // namespace

std::string encode(const host_run_spec& spec) {
  std::string out{spec_magic};
  for (const std::string* s : {&spec.plugin_path, &spec.plan_name, &spec.settings_json,
                               &spec.run_id, &spec.run_plan, &spec.params_json,
                               &spec.payload, &spec.work_dir, &spec.artifacts_dir})
    put_string(out, *s);
  put(out, spec.deadline_steady_ns);
  put(out, spec.kill_grace_ms);
  return out;
}

std::optional<host_run_spec> decode_host_run_spec(std::string_view bytes) {
  if (bytes.substr(0, spec_magic.size()) != spec_magic) return std::nullopt;
  reader in{bytes.substr(spec_magic.size())};
  host_run_spec spec;
  for (std::string* s : {&spec.plugin_path, &spec.plan_name, &spec.settings_json,
                         &spec.run_id, &spec.run_plan, &spec.params_json, &spec.payload,
                         &spec.work_dir, &spec.artifacts_dir})
    if (!in.get_string(*s)) return std::nullopt;
  if (!in.get(spec.deadline_steady_ns) || !in.get(spec.kill_grace_ms) || !in.in.empty())
    return std::nullopt;
  return spec;
}

std::string encode(const host_run_result& result) {
  std::string out;
  put(out, static_cast<char>(result.ok ? 1 : 0));
  put(out, static_cast<char>(result.exit_code ? 1 : 0));
  put(out, result.exit_code.value_or(0));
  put_string(out, result.result);
  out.append(result.error);
  return out;
}

std::optional<host_run_result> decode_host_run_result(std::string_view payload) {
  reader in{payload};
  char ok = 0;
  char has_exit_code = 0;
  int64_t exit_code = 0;
  host_run_result result;
  if (!in.get(ok) || !in.get(has_exit_code) || !in.get(exit_code) ||
      !in.get_string(result.result))
    return std::nullopt;
  result.ok = ok != 0;
  if (has_exit_code != 0) result.exit_code = exit_code;
  result.error = std::string{in.in};
  return result;
}

void frame_header(char (&header)[frame_header_size], char type, size_t len) {
  header[0] = type;
  auto n = static_cast<uint32_t>(len);
  std::memcpy(header + 1, &n, sizeof n);
}

} // namespace polymesh::sdk::detail
