#include "polymesh/sdk/settings.hpp"

#include <functional>
#include <gtest/gtest.h>

using namespace polymesh::sdk;
using namespace std::chrono_literals;
using nlohmann::json;

// This test ensures duration texts parse in every unit and junk does not.
TEST(settings, durations) {
  EXPECT_EQ(parse_duration_text("250ms"), 250ms);
  EXPECT_EQ(parse_duration_text("90s"), 90s);
  EXPECT_EQ(parse_duration_text("10m"), 10min);
  EXPECT_EQ(parse_duration_text("2h"), 2h);
  EXPECT_EQ(parse_duration_text("1d"), 24h);
  EXPECT_EQ(parse_duration_text("0"), 0ms);
  for (auto d : {0ms, 1ms, 1500ms, 1000ms, 90000ms, 3600000ms, 86400000ms * 7}) {
    EXPECT_EQ(parse_duration_text(duration_text(d)), d) << duration_text(d);
  }
  EXPECT_EQ(duration_text(90s), "90s");
  EXPECT_EQ(duration_text(1h), "1h");
  EXPECT_EQ(duration_text(1500ms), "1500ms");
  for (auto bad : {"", "s", "10", "10x", "-1s", "1.5s"})
    EXPECT_FALSE(parse_duration_text(bad).has_value()) << bad;
}

// This test ensures unknown keys are errors naming the dotted key.
TEST(settings, unknown_key_names_dotted_path) {
  json j{{"known", "x"}, {"typo", 1}};
  settings_reader in{j, "plans.demo"};
  EXPECT_EQ(in.string("known"), "x");
  try {
    in.finish();
    FAIL();
  } catch (const config_error& e) {
    EXPECT_EQ(e.key(), "plans.demo.typo");
    EXPECT_STREQ(e.what(), "plans.demo.typo: unknown key");
  }
}

// This test ensures types and bounds are checked with the key in the message.
TEST(settings, types_and_bounds) {
  json j{{"n", 99}, {"b", "yes"}, {"d", "5x"}, {"list", {"a", 1}}};
  settings_reader in{j, "s"};
  EXPECT_THROW((void)in.integer("n", 0, 1, 10), config_error);
  EXPECT_THROW((void)in.boolean("b", false), config_error);
  EXPECT_THROW((void)in.duration("d", 1s, 0ms, 1h), config_error);
  // Bounds read as the config writes durations.
  auto settings = json::object({{"wait", "2h"}});
  settings_reader long_one{settings, "agent"};
  try {
    (void)long_one.duration("wait", 1s, 1s, 1h);
    ADD_FAILURE() << "no error";
  } catch (const config_error& e) {
    EXPECT_STREQ(e.what(), "agent.wait: expected a duration in 1s..1h, got 2h");
    EXPECT_EQ(e.key(), "agent.wait");
  }
  try {
    (void)in.strings("list");
    FAIL();
  } catch (const config_error& e) {
    EXPECT_EQ(e.key(), "s.list[1]");
  }
}

// This test ensures absent keys give their defaults and null settings read as empty.
TEST(settings, defaults) {
  settings_reader in{nullptr, "x"};
  EXPECT_EQ(in.string("a", "dflt"), "dflt");
  EXPECT_EQ(in.integer("b", 7, 0, 10), 7);
  EXPECT_EQ(in.duration("c", 3s, 0ms, 1h), 3s);
  EXPECT_NO_THROW(in.finish());
  EXPECT_THROW((settings_reader{json{1, 2}, "x"}), config_error);
}

// This test ensures a key present with a null value (YAML `max:`) is refused
// by every scalar read, naming the dotted key, while an absent key takes the
// default and a null list or map reads as empty.
TEST(settings, a_key_with_no_value_is_refused) {
  json j{{"s", nullptr}, {"b", nullptr},    {"n", nullptr},
         {"d", nullptr}, {"list", nullptr}, {"map", nullptr}};
  settings_reader in{j, "plans.demo"};
  for (auto read : std::vector<std::function<void()>>{
           [&] { (void)in.string("s"); }, [&] { (void)in.boolean("b", true); },
           [&] { (void)in.integer("n", 1, 0, 9); },
           [&] { (void)in.duration("d", 1s, 0ms, 1h); }}) {
    try {
      read();
      ADD_FAILURE() << "no error";
    } catch (const config_error& e) {
      EXPECT_NE(std::string{e.what()}.find("has no value"), std::string::npos)
          << e.what();
      EXPECT_EQ(e.key().rfind("plans.demo.", 0), 0u) << e.key();
    }
  }
  EXPECT_TRUE(in.strings("list").empty());
  EXPECT_TRUE(in.string_map("map").empty());
  EXPECT_EQ(in.integer("absent", 7, 0, 9), 7);
}
