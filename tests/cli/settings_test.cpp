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

// This test ensures a token can come from a file (--token-file or
// MESH_TOKEN_FILE), so it shows neither in `ps` nor in shell history, with
// whitespace around it ignored; both flags at once, an empty file and a
// missing file are usage errors that name the flag and the file.
TEST_F(settings_cmd, token_from_a_file) {
  auto token_file = dir + "/admin.token";
  {
    std::ofstream f{token_file};
    f << "  " << admin << "\n";
  }
  auto flag =
      ctl_raw({"--mesh", url, "--token-file", token_file, "status", "-o", "json"});
  ASSERT_EQ(flag.code, 0) << flag.err;
  EXPECT_EQ(flag.json_out()["status"], "ready");
  auto env = ctl_raw({"status", "-o", "json"},
                     {"MESH_URL=" + url, "MESH_TOKEN_FILE=" + token_file});
  ASSERT_EQ(env.code, 0) << env.err;

  auto both =
      ctl_raw({"--mesh", url, "--token", admin, "--token-file", token_file, "status"});
  EXPECT_EQ(both.code, 64);
  EXPECT_NE(both.err.find("not both"), std::string::npos) << both.err;
  auto missing = ctl_raw({"--mesh", url, "--token-file", dir + "/nope", "status"});
  EXPECT_EQ(missing.code, 64);
  EXPECT_NE(missing.err.find("--token-file: cannot read token file " + dir + "/nope"),
            std::string::npos)
      << missing.err;
  {
    std::ofstream f{dir + "/empty.token"};
    f << "\n";
  }
  auto empty =
      ctl_raw({"status"}, {"MESH_URL=" + url, "MESH_TOKEN_FILE=" + dir + "/empty.token"});
  EXPECT_EQ(empty.code, 64);
  EXPECT_NE(empty.err.find("MESH_TOKEN_FILE: token file"), std::string::npos)
      << empty.err;
}

} // namespace
} // namespace polymesh::cli_test
