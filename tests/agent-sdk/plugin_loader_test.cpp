#include "polymesh/sdk/agent_yaml.hpp"
#include "polymesh/sdk/plugin_loader.hpp"
#include "polymesh/sdk/testkit.hpp"

#include <gtest/gtest.h>

using namespace polymesh::sdk;

// This test ensures the example plugin loads and its plan runs through the C ABI.
TEST(plugin_loader, example_plugin_runs) {
  plan_catalog catalog;
  std::vector<std::string> added;
  ASSERT_EQ(load_plugin(POLYMESH_HELLO_PLUGIN, catalog, &added), "");
  EXPECT_EQ(added, std::vector<std::string>{"hello"});
  EXPECT_EQ(catalog.find("hello")->origin, POLYMESH_HELLO_PLUGIN);
  auto plans = make_plans(catalog, {{"hello", nlohmann::json{{"greeting", "Hi"}}}});
  testkit::scratch_run run;
  run.ctx.payload = "mesh";
  auto r = plans.at("hello")->run(run.ctx);
  EXPECT_TRUE(r.ok);
  EXPECT_EQ(r.result, "Hi, mesh!");
  EXPECT_EQ(run.log.out(), "Hi, mesh!\n");
}

// This test ensures the plugin's cancel path works across the ABI.
TEST(plugin_loader, example_plugin_sees_cancel) {
  plan_catalog catalog;
  ASSERT_EQ(load_plugin(POLYMESH_HELLO_PLUGIN, catalog), "");
  auto plans = make_plans(catalog, {{"hello", nullptr}});
  testkit::scratch_run run;
  run.ctx.params = {{"wait_seconds", 600}};
  run.cancel.cancel(cancel_reason::canceled_by_user);
  auto r = plans.at("hello")->run(run.ctx);
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.error, "canceled while waiting");
}

// This test ensures plugin settings errors come back through the ABI naming
// the dotted key once (not "plans.hello: plans.hello.greting: …").
TEST(plugin_loader, plugin_settings_are_strict) {
  plan_catalog catalog;
  ASSERT_EQ(load_plugin(POLYMESH_HELLO_PLUGIN, catalog), "");
  try {
    (void)make_plans(catalog, {{"hello", nlohmann::json{{"greting", "x"}}}});
    FAIL();
  } catch (const config_error& e) {
    EXPECT_STREQ(e.what(), "plans.hello.greting: unknown key");
    EXPECT_EQ(e.key(), "plans.hello.greting");
  }
}

// This test ensures an ABI mismatch is refused with both versions and the file named.
TEST(plugin_loader, abi_mismatch_is_refused) {
  plan_catalog catalog;
  auto err = load_plugin(POLYMESH_ABI_MISMATCH_PLUGIN, catalog);
  EXPECT_NE(err.find(POLYMESH_ABI_MISMATCH_PLUGIN), std::string::npos) << err;
  EXPECT_NE(err.find("plugin ABI version 999, this agent speaks version 1"),
            std::string::npos)
      << err;
  EXPECT_TRUE(catalog.names().empty());
}

// This test ensures a library without the entry point is refused, naming the file.
TEST(plugin_loader, missing_entry_point_is_refused) {
  plan_catalog catalog;
  auto err = load_plugin(POLYMESH_NO_ENTRY_PLUGIN, catalog);
  EXPECT_NE(err.find(POLYMESH_NO_ENTRY_PLUGIN), std::string::npos) << err;
  EXPECT_NE(err.find("no 'polymesh_plugin_init' entry point"), std::string::npos) << err;
}

// This test ensures a missing file is refused, naming it.
TEST(plugin_loader, missing_file_is_refused) {
  plan_catalog catalog;
  auto err = load_plugin("/nonexistent/plugin.so", catalog);
  EXPECT_NE(err.find("cannot load plugin /nonexistent/plugin.so"), std::string::npos)
      << err;
}

// This test ensures a plugin cannot take the name of a plan that exists already.
TEST(plugin_loader, name_clash_is_refused) {
  plan_catalog catalog;
  ASSERT_EQ(catalog.add(
                "hello", "",
                [](const nlohmann::json&, const std::string&) {
                  return std::shared_ptr<plan>{};
                },
                "built-in"),
            "");
  auto err = load_plugin(POLYMESH_HELLO_PLUGIN, catalog);
  EXPECT_NE(err.find("already provided by built-in"), std::string::npos) << err;
}

// This test ensures two C++ plugins load together, each with its own plans:
// their registrars were one object (a static of an inline function, which
// GCC makes unique across libraries), so the second plugin offered the
// first one's plans again and was refused for the clash.
TEST(plugin_loader, two_cpp_plugins_load_together) {
  plan_catalog catalog;
  std::vector<std::string> added;
  ASSERT_EQ(load_plugin(POLYMESH_HELLO_PLUGIN, catalog), "");
  ASSERT_EQ(load_plugin(POLYMESH_GOODBYE_PLUGIN, catalog, &added), "");
  EXPECT_EQ(added, std::vector<std::string>{"goodbye"});
  auto plans = make_plans(catalog, {{"hello", nullptr}, {"goodbye", nullptr}});
  testkit::scratch_run run;
  run.ctx.payload = "mesh";
  EXPECT_EQ(plans.at("hello")->run(run.ctx).result, "Hello, mesh!");
  EXPECT_EQ(plans.at("goodbye")->run(run.ctx).result, "Goodbye, mesh!");
}

// This test ensures a plugin whose registration throws is refused, and the
// exception's text is in the agent's log (stderr), not swallowed.
TEST(plugin_loader, a_throwing_registration_is_refused_with_its_message) {
  plan_catalog catalog;
  testing::internal::CaptureStderr();
  auto err = load_plugin(POLYMESH_THROWING_PLUGIN, catalog);
  auto log = testing::internal::GetCapturedStderr();
  EXPECT_NE(err.find("registered no plans"), std::string::npos) << err;
  EXPECT_NE(log.find("registering its plans failed: cannot find my license file"),
            std::string::npos)
      << log;
  EXPECT_TRUE(catalog.names().empty());
}
