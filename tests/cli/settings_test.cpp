// Where meshctl's settings come from: flags, MESH_* environment, config file.
#include "tests/cli/meshctl_harness.hpp"

#include <fstream>

namespace polymesh::cli_test {
namespace {

using settings_cmd = meshctl_test;

// This test ensures settings come from MESH_URL / MESH_TOKEN and from the
// config file, flags winning over both, and unknown config keys are refused.
TEST_F(settings_cmd, settings_from_env_and_config_file) {
  auto env =
      ctl_raw({"status", "-o", "json"}, {"MESH_URL=" + url, "MESH_TOKEN=" + admin});
  ASSERT_EQ(env.code, 0) << env.err;
  EXPECT_EQ(env.json_out()["status"], "ready");

  auto cfg_dir = dir + "/.config/polymesh";
  ASSERT_EQ(std::system(("mkdir -p " + cfg_dir).c_str()), 0);
  {
    std::ofstream f{cfg_dir + "/meshctl.yaml"};
    f << "mesh: " << url << "\ntoken: " << admin << "\noutput: json\n";
  }
  auto file = ctl_raw({"status"});
  ASSERT_EQ(file.code, 0) << file.err;
  EXPECT_EQ(file.json_out()["status"], "ready");
  auto flag_wins = ctl_raw({"--token", "wrong-token", "status"});
  EXPECT_EQ(flag_wins.code, 1);
  EXPECT_NE(flag_wins.err.find("not authenticated"), std::string::npos) << flag_wins.err;

  {
    std::ofstream f{dir + "/other.yaml"};
    f << "mesh: " << url << "\ncolour: true\n";
  }
  auto unknown = ctl_raw({"--config", dir + "/other.yaml", "status"});
  EXPECT_EQ(unknown.code, 64);
  EXPECT_NE(unknown.err.find("'colour' is unknown"), std::string::npos) << unknown.err;
}

} // namespace
} // namespace polymesh::cli_test
