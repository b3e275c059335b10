#include "isolation_wire.hpp"

#include <gtest/gtest.h>

using namespace polymesh::sdk::detail;

namespace {

host_run_spec sample() {
  host_run_spec spec;
  spec.plugin_path = "/opt/plugins/deploy.so";
  spec.plan_name = "deploy";
  spec.settings_json = R"({"region":"eu"})";
  spec.run_id = "run_42";
  spec.run_plan = "deploy";
  spec.params_json = R"({"version":"1.2"})";
  spec.payload = std::string{"bin\0ary\xff", 8};
  spec.work_dir = "/var/lib/mesh-agent/runs/run_42/work";
  spec.artifacts_dir = "";
  spec.deadline_steady_ns = 1234567890123;
  spec.kill_grace_ms = -7;
  return spec;
}

} // namespace

// This test ensures every field of a run's spec, binary payload and empty
// strings included, reaches the host as the agent wrote it.
TEST(isolation_wire, a_spec_decodes_to_what_was_encoded) {
  auto spec = sample();
  auto back = decode_host_run_spec(encode(spec));
  ASSERT_TRUE(back);
  EXPECT_EQ(back->plugin_path, spec.plugin_path);
  EXPECT_EQ(back->plan_name, spec.plan_name);
  EXPECT_EQ(back->settings_json, spec.settings_json);
  EXPECT_EQ(back->run_id, spec.run_id);
  EXPECT_EQ(back->run_plan, spec.run_plan);
  EXPECT_EQ(back->params_json, spec.params_json);
  EXPECT_EQ(back->payload, spec.payload);
  EXPECT_EQ(back->work_dir, spec.work_dir);
  EXPECT_EQ(back->artifacts_dir, spec.artifacts_dir);
  EXPECT_EQ(back->deadline_steady_ns, spec.deadline_steady_ns);
  EXPECT_EQ(back->kill_grace_ms, spec.kill_grace_ms);
}

// This test ensures a spec cut short, with bytes after its end, or of
// another layout is refused rather than misread.
TEST(isolation_wire, a_truncated_padded_or_foreign_spec_is_refused) {
  auto bytes = encode(sample());
  for (size_t len = 0; len < bytes.size(); ++len)
    EXPECT_FALSE(decode_host_run_spec(std::string_view{bytes}.substr(0, len))) << len;
  EXPECT_FALSE(decode_host_run_spec(bytes + "x"));
  auto foreign = bytes;
  foreign[0] = 'P';
  EXPECT_FALSE(decode_host_run_spec(foreign));
  EXPECT_FALSE(decode_host_run_spec(""));
}

// This test ensures a run's result, binary bytes, an exit code of each sign
// and an empty part included, reaches the agent as the host wrote it.
TEST(isolation_wire, a_result_decodes_to_what_was_encoded) {
  host_run_result with_code;
  with_code.ok = true;
  with_code.exit_code = -3;
  with_code.result = std::string{"{\"n\":1}\0\xff", 9};
  with_code.error = "warned";
  host_run_result without_code;
  without_code.error = std::string{"cannot start\0 here", 18};
  for (auto& r : {with_code, without_code}) {
    auto back = decode_host_run_result(encode(r));
    ASSERT_TRUE(back);
    EXPECT_EQ(back->ok, r.ok);
    EXPECT_EQ(back->exit_code, r.exit_code);
    EXPECT_EQ(back->result, r.result);
    EXPECT_EQ(back->error, r.error);
  }
}

// This test ensures a result payload cut short before the end of its result
// is refused rather than misread; the error is the rest, so an empty one is
// a complete payload.
TEST(isolation_wire, a_truncated_result_is_refused) {
  host_run_result r;
  r.exit_code = 7;
  r.result = "partial";
  auto bytes = encode(r);
  for (size_t len = 0; len < bytes.size(); ++len)
    EXPECT_FALSE(decode_host_run_result(std::string_view{bytes}.substr(0, len))) << len;
  auto back = decode_host_run_result(bytes);
  ASSERT_TRUE(back);
  EXPECT_EQ(back->result, "partial");
  EXPECT_EQ(back->error, "");
}
