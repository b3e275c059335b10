// The run spec's encoding: a magic word, then each string as a 4-byte
// length and its bytes, then the two integers.
#include "isolation_wire.hpp"

#include <cstring>

namespace polymesh::sdk::detail {

namespace {

/// Changes with the layout below: a host of another build refuses the spec
/// instead of misreading it.
constexpr std::string_view spec_magic{"polymesh-run-spec-2\n"};

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

void frame_header(char (&header)[frame_header_size], char type, size_t len) {
  header[0] = type;
  auto n = static_cast<uint32_t>(len);
  std::memcpy(header + 1, &n, sizeof n);
}

} // namespace polymesh::sdk::detail
