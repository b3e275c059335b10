#include "polymesh/sdk/agent_yaml.hpp"
#include "polymesh/sdk/log.hpp"
#include "polymesh/sdk/testkit.hpp"
#include "tests/support/tls_cert.hpp"

#include <filesystem>
#include <fstream>
#include <gtest/gtest.h>
#include <optional>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#include <vector>

using namespace polymesh::sdk;
using namespace std::chrono_literals;

namespace {

const char* minimal = R"(
mesh: {url: "http://127.0.0.1:7700", registration_token: "reg-1"}
agent: {name: a1}
plans: {echo: {}}
)";

/// The error parsing `yaml` raises, if any.
std::optional<config_error> error_of(const std::string& yaml) {
  try {
    (void)parse_agent_yaml(yaml);
  } catch (const config_error& e) {
    return e;
  }
  return std::nullopt;
}

std::string error_key(const std::string& yaml) {
  auto e = error_of(yaml);
  return e ? e->key() : "(no error)";
}

std::string error_text(const std::string& yaml) {
  auto e = error_of(yaml);
  return e ? e->what() : "(no error)";
}

} // namespace

// This test ensures the documented example config parses with the documented
// values, as agent.md's steps use it: copied next to the registration token
// it reads from `agent.token`.
TEST(agent_config, example_file_parses) {
  testkit::temp_dir dir;
  std::filesystem::copy_file(POLYMESH_SOURCE_DIR "/config/agent.example.yaml",
                             dir.path() / "agent.yaml");
  std::ofstream{dir.path() / "agent.token"} << "pm_reg.secret\n";
  std::filesystem::permissions(dir.path() / "agent.token",
                               std::filesystem::perms::owner_read |
                                   std::filesystem::perms::owner_write);
  auto cfg = load_agent_yaml((dir.path() / "agent.yaml").string());
  EXPECT_EQ(cfg.agent.registration_token, "pm_reg.secret");
  EXPECT_TRUE(cfg.warnings.empty());
  EXPECT_EQ(cfg.agent.mesh_url, "http://127.0.0.1:7700");
  EXPECT_EQ(cfg.agent.name, "dev-1");
  EXPECT_EQ(cfg.agent.labels.at("env"), "dev");
  EXPECT_EQ(cfg.agent.capacity, 2);
  EXPECT_EQ(cfg.agent.drain_deadline, 60s);
  EXPECT_EQ(cfg.agent.upload_retry_for, 5min);
  EXPECT_EQ(cfg.agent.log_flush_interval, 500ms);
  EXPECT_EQ(cfg.agent.log_max_run_bytes, 100u * 1024 * 1024);
  EXPECT_EQ(cfg.agent.backoff_max, 30s);
  EXPECT_EQ(cfg.plans.count("shell"), 1u);
  EXPECT_EQ(cfg.log_level, "info");
}

// This test ensures defaults apply when only the required keys are given.
TEST(agent_config, minimal_uses_defaults) {
  auto cfg = parse_agent_yaml(minimal);
  EXPECT_EQ(cfg.agent.capacity, 1);
  EXPECT_EQ(cfg.agent.registration_token, "reg-1");
  EXPECT_EQ(cfg.agent.log_chunk_bytes, 16384u);
  EXPECT_TRUE(cfg.plans.at("echo").is_object());
}

// This test ensures unknown keys, bad values and missing keys name the dotted key.
TEST(agent_config, errors_name_the_key) {
  std::string base =
      "mesh: {url: 'http://h:1', registration_token: t}\nplans: {echo: {}}\n";
  EXPECT_EQ(error_key(base + "agent: {name: a, capcity: 2}"), "agent.capcity");
  EXPECT_EQ(error_key(base + "agent: {name: a, capacity: 0}"), "agent.capacity");
  EXPECT_EQ(error_key(base + "agent: {name: a, drain_deadline: 10}"),
            "agent.drain_deadline");
  EXPECT_EQ(error_key(base + "agent: {name: a}\nlogs: {chunk_bytes: many}"),
            "logs.chunk_bytes");
  // A chunk smaller than the longest UTF-8 character would split one.
  EXPECT_EQ(error_key(base + "agent: {name: a}\nlogs: {chunk_bytes: 3}"),
            "logs.chunk_bytes");
  EXPECT_EQ(error_key(base + "agent: {name: -bad-}"), "agent.name");
  EXPECT_EQ(error_text(base + "agent: {name: -bad-}"),
            "agent.name: agent name must start and end with a letter or digit");
  EXPECT_EQ(error_key(base + "agent: {name: a}\nextra: 1"), "extra");
  EXPECT_EQ(error_key("agent: {name: a}\nplans: {echo: {}}"), "mesh.url");
  EXPECT_EQ(error_key("mesh: {url: 'ftp://x'}\nagent: {name: a}\nplans: {echo: {}}"),
            "mesh.registration_token");
  EXPECT_EQ(error_key("mesh: {url: 'ftp://x', registration_token: t}\nagent: {name: a}\n"
                      "plans: {echo: {}}"),
            "mesh.url");
  EXPECT_EQ(
      error_key("mesh: {url: 'http://h:1', registration_token: t}\nagent: {name: a}"),
      "plans");
  // The URL meshctl would refuse, refused here too, saying why.
  for (const auto& [url, says] : std::vector<std::pair<std::string, std::string>>{
           {"http://:7700", "mesh URL has no host, got 'http://:7700'"},
           {"http://user:secret@h:7700", "must not hold a user or password"},
           {"http://h:80:90", "host 'h:80' is not a name or an address"},
           {"http://h:0", "port must be 1 to 65535, got '0'"},
           {"http://h:70000", "port must be 1 to 65535, got '70000'"},
           {"http://h:7700/?x=1", "without a query or fragment"}}) {
    auto text =
        error_text("mesh: {url: '" + url +
                   "', registration_token: t}\nagent: {name: a}\nplans: {echo: {}}");
    EXPECT_EQ(text.rfind("mesh.url: ", 0), 0u) << url << ": " << text;
    EXPECT_NE(text.find(says), std::string::npos) << url << ": " << text;
  }
  EXPECT_NO_THROW(parse_agent_yaml("mesh: {url: 'http://[::1]:7700/prefix/', "
                                   "registration_token: t}\nagent: {name: a}\n"
                                   "plans: {echo: {}}"));
}

// This test ensures the messages a config mistake gets are the ones that
// help: a duplicate names its dotted key, a misspelt `plan:` is an unknown
// key (not "enable a plan"), a rule between two keys names both by their
// YAML names, the bad value is shown, and a label the mesh would refuse is
// found before the agent starts.
TEST(agent_config, messages_name_keys_values_and_labels) {
  std::string mesh = "mesh: {url: 'http://h:1', registration_token: t}\n";
  EXPECT_EQ(error_key(mesh + "agent: {name: a}\nplans: {echo: {}}\nmesh: {url: x}"),
            "mesh");
  EXPECT_EQ(error_key("mesh: {url: 'http://h:1', url: 'http://h:2', registration_token: "
                      "t}\nagent: {name: a}\nplans: {echo: {}}"),
            "mesh.url");
  EXPECT_EQ(error_key(mesh + "agent: {name: a}\nplan: {echo: {}}"), "plan");
  auto buffer = error_text(mesh + "agent: {name: a}\nplans: {echo: {}}\n"
                                  "logs: {chunk_bytes: 1000, buffer_bytes: 10}");
  EXPECT_NE(buffer.find("logs.buffer_bytes"), std::string::npos) << buffer;
  EXPECT_NE(buffer.find("at least logs.chunk_bytes"), std::string::npos) << buffer;
  auto timeout = error_text(
      "mesh: {url: 'http://h:1', registration_token: t, request_timeout: 20m}\n"
      "agent: {name: a}\nplans: {echo: {}}");
  EXPECT_NE(timeout.find("mesh.request_timeout: expected a duration in 1s..10m, got 20m"),
            std::string::npos)
      << timeout;
  auto fraction = error_text(mesh + "agent: {name: a, capacity: 2.5}\nplans: {echo: {}}");
  EXPECT_NE(fraction.find("a fraction '2.5'"), std::string::npos) << fraction;
  EXPECT_EQ(
      error_key(mesh + "agent: {name: a, labels: {'bad key!': x}}\nplans: {echo: {}}"),
      "agent.labels.bad key!");
}

// This test ensures mistakes `--check` used to pass are refused before the
// agent starts: a duration whose days overflow (it wrapped to a few hours),
// a leading zero (meshd refuses it too), a second YAML document nobody read,
// a misspelt section named as unknown (not as a missing mesh.url), and a
// name or hostname the mesh's registration refuses.
TEST(agent_config, mistakes_found_before_the_agent_starts) {
  std::string mesh = "mesh: {url: 'http://h:1', registration_token: t}\n";
  auto huge = error_text(mesh + "agent: {name: a, drain_deadline: 213503982335d}\n"
                                "plans: {echo: {}}");
  EXPECT_NE(huge.find("agent.drain_deadline: expected a duration in 0..1d, got "
                      "213503982335d (too large)"),
            std::string::npos)
      << huge;
  EXPECT_EQ(error_key(mesh + "agent: {name: a, poll_wait: 030s}\nplans: {echo: {}}"),
            "agent.poll_wait");
  auto two = error_text(mesh + "agent: {name: a}\nplans: {echo: {}}\n---\n"
                               "logs: {chunk_bytes: 0}\n");
  EXPECT_NE(two.find("expected one YAML document, got 2"), std::string::npos) << two;
  EXPECT_EQ(error_text("msh: {url: 'http://h:1', registration_token: t}\n"
                       "agent: {name: a}\nplans: {echo: {}}"),
            "msh: unknown key");
  EXPECT_EQ(error_key(mesh + "agnet: {name: a}\nplans: {echo: {}}"), "agnet");
  // A dotted key of a known section at the top level says how to write it
  // (meshd's rule too); another stays unknown.
  EXPECT_EQ(error_text(mesh + "agent: {name: a}\nagent.capacity: 3\nplans: {echo: {}}"),
            "agent.capacity: must be nested: write 'capacity' under 'agent:'");
  EXPECT_EQ(error_text(mesh + "agent: {name: a}\nagnet.capacity: 3\nplans: {echo: {}}"),
            "agnet.capacity: unknown key");
  EXPECT_EQ(error_text(mesh + "agent: {name: agt_x}\nplans: {echo: {}}"),
            "agent.name: agent names starting with 'agt_' are reserved for agent ids");
  EXPECT_EQ(error_text(mesh + "agent: {name: a, hostname: " + std::string(256, 'h') +
                       "}\nplans: {echo: {}}"),
            "agent.hostname: must be at most 255 bytes");
  auto fine =
      parse_agent_yaml(mesh + "agent: {name: a, hostname: " + std::string(255, 'h') +
                       ", drain_deadline: 1d}\nplans: {echo: {}}");
  EXPECT_EQ(fine.agent.drain_deadline, 24h);
}

// This test ensures `agent.upload_retry_for` is read as a duration of 0 to
// 1 day (5 minutes when left out), and a value out of bounds is refused
// naming the key.
TEST(agent_config, upload_retry_for_is_a_bounded_duration) {
  std::string mesh = "mesh: {url: 'http://h:1', registration_token: t}\n";
  auto with = [&](const std::string& value) {
    return mesh + "agent: {name: a, upload_retry_for: " + value + "}\nplans: {echo: {}}";
  };
  EXPECT_EQ(parse_agent_yaml(minimal).agent.upload_retry_for, 5min);
  EXPECT_EQ(parse_agent_yaml(with("0")).agent.upload_retry_for, 0ms);
  EXPECT_EQ(parse_agent_yaml(with("90s")).agent.upload_retry_for, 90s);
  EXPECT_EQ(parse_agent_yaml(with("1d")).agent.upload_retry_for, 24h);
  EXPECT_EQ(error_text(with("2d")),
            "agent.upload_retry_for: expected a duration in 0..1d, got 2d");
  EXPECT_EQ(error_text(with("5")),
            "agent.upload_retry_for: expected a duration like 90s, 10m or 2h, got a "
            "number");
  // What is wrong is said, as meshd says it.
  for (auto [text, why] :
       {std::pair{"-1s", "(durations cannot be negative)"},
        std::pair{"99999999999999999999d", "(too large)"},
        std::pair{"'90'", "(a unit is required unless the value is 0)"},
        std::pair{"090s", "(leading zeros are not allowed)"}}) {
    auto text_of = error_text(with(text));
    EXPECT_NE(text_of.find(why), std::string::npos) << text_of;
  }
}

// This test ensures a key written with no value is refused by name rather
// than read as "use the default" (`capacity:` used to mean 1), while an empty
// section (`labels:`, a plan with no settings) is still an empty one.
TEST(agent_config, a_key_without_a_value_is_refused) {
  std::string mesh = "mesh: {url: 'http://h:1', registration_token: t}\n";
  for (auto [yaml, key] :
       {std::pair{"agent:\n  name: a\n  capacity:\nplans: {echo: {}}", "agent.capacity"},
        std::pair{"agent: {name: a, drain_deadline: ~}\nplans: {echo: {}}",
                  "agent.drain_deadline"},
        std::pair{"agent: {name: a, hostname: null}\nplans: {echo: {}}",
                  "agent.hostname"},
        std::pair{"agent: {name: a}\nplans: {echo: {}}\nlogs: {chunk_bytes: }",
                  "logs.chunk_bytes"}}) {
    SCOPED_TRACE(yaml);
    auto e = error_of(mesh + yaml);
    ASSERT_TRUE(e);
    EXPECT_EQ(e->key(), key);
    EXPECT_NE(std::string{e->what()}.find("has no value"), std::string::npos)
        << e->what();
  }
  auto cfg = parse_agent_yaml(mesh + "agent:\n  name: a\n  labels:\nplans:\n  echo:\n");
  EXPECT_TRUE(cfg.agent.labels.empty());
  EXPECT_EQ(cfg.plans.count("echo"), 1u);
}

// This test ensures a directory or an unreadable path given as the config
// file says so, instead of complaining about a missing mesh.url.
TEST(agent_config, unreadable_config_file_says_why) {
  testkit::temp_dir dir;
  try {
    (void)load_agent_yaml(dir.path().string());
    FAIL() << "a directory loaded as config";
  } catch (const config_error& e) {
    EXPECT_NE(std::string{e.what()}.find("is a directory"), std::string::npos)
        << e.what();
  }
  try {
    (void)load_agent_yaml((dir.path() / "missing.yaml").string());
    FAIL() << "a missing file loaded as config";
  } catch (const config_error& e) {
    EXPECT_NE(std::string{e.what()}.find("No such file or directory"), std::string::npos)
        << e.what();
  }
}

// This test ensures YAML that cannot become settings is a config error, not
// a crash or a hang: a document starting with ',' (yaml-cpp looped adding
// documents), an alias inside its own anchor (a stack overflow), aliases of
// aliases (millions of values from a few hundred bytes), text that is not
// UTF-8 (a plugin's settings aborted the agent).
TEST(agent_config, yaml_that_cannot_become_settings_is_a_config_error) {
  const std::string head = "mesh: {url: 'http://h:1', registration_token: t}\n"
                           "agent: {name: a}\n";
  EXPECT_EQ(error_text(",\n"), "invalid YAML: yaml-cpp: error at line 1, column 1: "
                               "unexpected ',' where a document starts");
  EXPECT_EQ(error_text(head + "plans: {echo: {x: &x [*x]}}\n"),
            "invalid YAML: yaml-cpp: error at line 3, column 19: nested deeper than 64 "
            "levels (an alias inside its own anchor?)");
  std::string laughs = "l0: &l0 [x, x, x, x, x, x, x, x, x, x]\n";
  for (int i = 1; i < 6; ++i) {
    laughs += "l" + std::to_string(i) + ": &l" + std::to_string(i) + " [";
    for (int j = 0; j < 10; ++j)
      laughs += (j ? ", *l" : "*l") + std::to_string(i - 1);
    laughs += "]\n";
  }
  EXPECT_NE(error_text(head + laughs).find("values once its aliases are expanded"),
            std::string::npos)
      << error_text(head + laughs);
  EXPECT_EQ(error_text(head + "plans: {echo: {greeting: \"Hi\xff\"}}\n"),
            "plans.echo.greeting: is not UTF-8 text");
}

// This test ensures the token can come from a file next to the config.
TEST(agent_config, token_file_relative_to_config) {
  testkit::temp_dir dir;
  std::ofstream{dir.path() / "reg.token"} << "  secret-token\n";
  std::ofstream{dir.path() / "agent.yaml"}
      << "mesh: {url: 'http://h:1', registration_token_file: reg.token}\n"
         "agent: {name: a}\nplans: {noop: {}}\n";
  auto cfg = load_agent_yaml((dir.path() / "agent.yaml").string());
  EXPECT_EQ(cfg.agent.registration_token, "secret-token");
}

// This test ensures a registration token file other users can read is
// warned of, naming the key, the file and its mode, and a private one is
// not; the warnings come back with the config (mesh-agent --check prints
// them under its verdict; they were logged before the log level was set).
TEST(agent_config, a_token_file_others_can_read_is_warned_of) {
  testkit::temp_dir dir;
  auto token = dir.path() / "reg.token";
  std::ofstream{token} << "secret-token\n";
  std::ofstream{dir.path() / "agent.yaml"}
      << "mesh: {url: 'http://h:1', registration_token_file: reg.token}\n"
         "agent: {name: a}\nplans: {noop: {}}\n";
  for (auto mode : {0644, 0620, 0600}) {
    ASSERT_EQ(::chmod(token.c_str(), static_cast<mode_t>(mode)), 0);
    auto lines = load_agent_yaml((dir.path() / "agent.yaml").string()).warnings;
    if (mode == 0644) {
      ASSERT_EQ(lines.size(), 1u);
      EXPECT_EQ(lines[0], "mesh.registration_token_file: '" + token.string() +
                              "' is readable by every user (mode 0644); chmod 600 it");
    } else if (mode == 0620) {
      ASSERT_EQ(lines.size(), 1u);
      EXPECT_NE(lines[0].find("is writable by other users (mode 0620)"),
                std::string::npos)
          << lines[0];
    } else {
      EXPECT_TRUE(lines.empty()) << lines[0];
    }
  }
}

// This test ensures a config file holding the registration token itself is
// warned of when other users can read it (only a token file was checked),
// and that a config file without the token is not.
TEST(agent_config, a_config_file_holding_the_token_open_to_others_is_warned_of) {
  testkit::temp_dir dir;
  auto file = dir.path() / "agent.yaml";
  std::ofstream{file} << "mesh: {url: 'http://h:1', registration_token: secret-token}\n"
                         "agent: {name: a}\nplans: {noop: {}}\n";
  ASSERT_EQ(::chmod(file.c_str(), 0644), 0);
  auto lines = load_agent_yaml(file.string()).warnings;
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0], "mesh.registration_token: config file '" + file.string() +
                          "' holds the token and is readable by every user (mode "
                          "0644); chmod 600 it, or move the token to "
                          "mesh.registration_token_file");
  ASSERT_EQ(::chmod(file.c_str(), 0600), 0);
  EXPECT_TRUE(load_agent_yaml(file.string()).warnings.empty());

  auto token = dir.path() / "reg.token";
  std::ofstream{token} << "secret-token\n";
  ASSERT_EQ(::chmod(token.c_str(), 0600), 0);
  std::ofstream{file} << "mesh: {url: 'http://h:1', registration_token_file: reg.token}\n"
                         "agent: {name: a}\nplans: {noop: {}}\n";
  ASSERT_EQ(::chmod(file.c_str(), 0644), 0);
  EXPECT_TRUE(load_agent_yaml(file.string()).warnings.empty());
  // A directory where the token file belongs says so (it read "is empty").
  std::filesystem::remove(token);
  std::filesystem::create_directory(token);
  try {
    (void)load_agent_yaml(file.string());
    ADD_FAILURE() << "a directory was taken for the token file";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string{e.what()}.find("is a directory"), std::string::npos)
        << e.what();
  }
}

// This test ensures mesh.ca_file is read relative to the config, and one
// that cannot be read or holds no certificate (a key, an empty file: every
// call failed, retried for good, and --check said OK) is a config error
// naming mesh.ca_file.
TEST(agent_config, ca_file_relative_to_config_and_checked) {
  testkit::temp_dir dir;
  auto tls = polymesh::test::write_self_signed_cert(dir.path().string());
  std::filesystem::rename(tls.cert, dir.path() / "ca.pem");
  std::ofstream{dir.path() / "agent.yaml"}
      << "mesh: {url: 'https://h:1', registration_token: t, ca_file: ca.pem}\n"
         "agent: {name: a}\nplans: {noop: {}}\n";
  auto cfg = load_agent_yaml((dir.path() / "agent.yaml").string());
  EXPECT_EQ(cfg.agent.mesh_ca_file, (dir.path() / "ca.pem").string());
  EXPECT_EQ(error_text("mesh: {url: 'https://h:1', registration_token: t, ca_file: "
                       "/nonexistent/ca.pem}\nagent: {name: a}\nplans: {noop: {}}\n"),
            "mesh.ca_file: cannot read '/nonexistent/ca.pem'");
  for (auto* not_a_ca : {"key.pem", "empty.pem"}) {
    auto path = (dir.path() / not_a_ca).string();
    std::ofstream{path, std::ios::app}.flush();
    EXPECT_EQ(error_text("mesh: {url: 'https://h:1', registration_token: t, ca_file: " +
                         path + "}\nagent: {name: a}\nplans: {noop: {}}\n"),
              "mesh.ca_file: '" + path +
                  "' holds no PEM certificate (it must hold that of the CA that signed "
                  "the mesh's)");
  }
}

// This test ensures a plugin is a path (isolated in a child process) or a
// map with path and isolation, relative to the config, and every other
// form is refused naming the entry.
TEST(agent_config, plugin_entries) {
  const std::string head = "mesh: {url: 'http://h:1', registration_token: t}\n"
                           "agent: {name: a}\nplans: {noop: {}}\n";
  auto cfg = parse_agent_yaml(head + "plugins: [a.so, {path: /p/b.so, isolation: none}, "
                                     "{path: c.so, isolation: process}]\n",
                              "/etc/polymesh");
  ASSERT_EQ(cfg.plugins.size(), 3u);
  EXPECT_EQ(cfg.plugins[0].path, "/etc/polymesh/a.so");
  EXPECT_EQ(cfg.plugins[0].isolation, plugin_isolation::process);
  EXPECT_EQ(cfg.plugins[1].path, "/p/b.so");
  EXPECT_EQ(cfg.plugins[1].isolation, plugin_isolation::none);
  EXPECT_EQ(cfg.plugins[2].path, "/etc/polymesh/c.so");
  EXPECT_EQ(cfg.plugins[2].isolation, plugin_isolation::process);
  EXPECT_EQ(error_text(head + "plugins: [a.so, {path: b.so, isolation: thread}]\n"),
            "plugins[1].isolation: expected process or none, got 'thread'");
  EXPECT_EQ(error_text(head + "plugins: [{isolation: none}]\n"),
            "plugins[0].path: is empty; give the plugin's file");
  EXPECT_EQ(error_text(head + "plugins: [{path: a.so, isolate: true}]\n"),
            "plugins[0].isolate: unknown key");
  EXPECT_EQ(error_text(head + "plugins: [[a.so]]\n"),
            "plugins[0]: expected a path, or a map with path, isolation and limits");
  EXPECT_EQ(error_text(head + "plugins: a.so\n"),
            "plugins: expected a list of plugin paths (or maps with path, isolation, "
            "limits)");
  // Limits on each run's host, as the built-in plans have them; not for
  // plans in the agent's own process.
  auto limited = parse_agent_yaml(
      head + "plugins: [{path: a.so, limits: {address_space_bytes: 1073741824, "
             "open_files: 64}}]\n");
  ASSERT_EQ(limited.plugins[0].limits.size(), 2u);
  EXPECT_EQ(limited.plugins[0].limits[0].resource, RLIMIT_AS);
  EXPECT_EQ(limited.plugins[0].limits[0].soft, 1073741824u);
  EXPECT_EQ(limited.plugins[0].limits[1].resource, RLIMIT_NOFILE);
  EXPECT_EQ(error_text(head + "plugins: [{path: a.so, limits: {memory: 1}}]\n"),
            "plugins[0].limits.memory: unknown key");
  EXPECT_EQ(error_text(head + "plugins: [{path: a.so, isolation: none, limits: "
                              "{open_files: 64}}]\n"),
            "plugins[0].limits: apply only with isolation: process (a plan in the "
            "agent's process would share them with the agent)");
}

// This test ensures quoted YAML scalars stay strings and plain ones get types.
TEST(agent_config, yaml_scalars) {
  auto j = yaml_to_json("a: 10\nb: '10'\nc: true\nd: 010\ne: ~\nf: [x, 2]");
  EXPECT_TRUE(j["a"].is_number_integer());
  EXPECT_TRUE(j["b"].is_string());
  EXPECT_TRUE(j["c"].is_boolean());
  EXPECT_EQ(j["d"], "010");
  EXPECT_TRUE(j["e"].is_null());
  EXPECT_EQ(j["f"][1], 2);
}

// This test ensures an enabled plan nobody provides is an error naming plans.<name>.
TEST(agent_config, unknown_plan_is_refused) {
  plan_catalog catalog;
  try {
    (void)make_plans(catalog, {{"ghost", nullptr}});
    FAIL();
  } catch (const config_error& e) {
    EXPECT_EQ(e.key(), "plans.ghost");
  }
}

// This test ensures an unusable work root is found before the agent starts
// (it used to register and then fail every run it took), naming `work_dir`,
// and a missing one is created.
TEST(agent_config, prepare_work_root_creates_or_names_the_problem) {
  testkit::temp_dir dir;
  agent_config c;
  c.name = "a1";
  c.work_root = dir.path() / "deep" / "work";
  EXPECT_EQ(c.prepare_work_root(), "");
  EXPECT_TRUE(std::filesystem::is_directory(c.work_root));
  EXPECT_TRUE(std::filesystem::is_empty(c.work_root)) << "the probe was left behind";

  std::ofstream{dir.path() / "file"} << "x";
  c.work_root = dir.path() / "file";
  EXPECT_NE(c.prepare_work_root().find("work_dir: cannot use " + c.work_root.string()),
            std::string::npos);
  c.work_root = "/proc/polymesh-nope";
  EXPECT_NE(c.prepare_work_root().find("work_dir: cannot use /proc/polymesh-nope: "),
            std::string::npos);
}

// This test ensures a default work root (in $TMPDIR, where anyone may make
// it first) that is a symbolic link is refused: whoever made it could point
// it at a directory of their own once the agent had checked it. A
// configured one may be a link of this user's, not another user's.
TEST(agent_config,
     a_symlinked_work_root_is_refused_where_another_user_could_have_made_it) {
  testkit::temp_dir dir;
  std::filesystem::create_directories(dir.path() / "target");
  std::filesystem::create_directory_symlink(dir.path() / "target",
                                            dir.path() / "polymesh-agent-a1");
  const char* old = std::getenv("TMPDIR");
  std::string saved = old ? old : "";
  ::setenv("TMPDIR", dir.path().c_str(), 1);
  agent_config c;
  c.name = "a1";
  auto err = c.prepare_work_root();
  // Filled in, as the agent does before it starts: still the default.
  c.work_root = dir.path() / "polymesh-agent-a1";
  auto filled = c.prepare_work_root();
  c.work_root.clear();
  if (old)
    ::setenv("TMPDIR", saved.c_str(), 1);
  else
    ::unsetenv("TMPDIR");
  EXPECT_NE(err.find("it is a symbolic link"), std::string::npos) << err;
  EXPECT_NE(filled.find("it is a symbolic link"), std::string::npos) << filled;
  std::filesystem::create_directory_symlink(dir.path() / "target", dir.path() / "mine");
  c.work_root = dir.path() / "mine";
  EXPECT_EQ(c.prepare_work_root(), "");
  if (::lchown(c.work_root.c_str(), 65534, 65534) != 0)
    GTEST_SKIP() << "cannot give a symlink away without root";
  for (auto spelled : {c.work_root, c.work_root / "", c.work_root / "."}) {
    SCOPED_TRACE(spelled.string());
    c.work_root = spelled;
    EXPECT_NE(c.prepare_work_root().find("a symbolic link that uid 65534 owns"),
              std::string::npos);
  }
}

// This test ensures the work root is private (mode 0700) and refused when
// another user owns it: the default one is in /tmp, where anyone could have
// created it (or a symlink) first.
TEST(agent_config, work_root_is_private_and_ours) {
  testkit::temp_dir dir;
  agent_config c;
  c.name = "a1";
  c.work_root = dir.path() / "open";
  std::filesystem::create_directories(c.work_root);
  std::filesystem::permissions(c.work_root, std::filesystem::perms::all);
  EXPECT_EQ(c.prepare_work_root(), "");
  EXPECT_EQ(std::filesystem::status(c.work_root).permissions(),
            std::filesystem::perms::owner_all);
  c.work_root = dir.path() / "theirs";
  std::filesystem::create_directories(c.work_root);
  if (::chown(c.work_root.c_str(), 65534, 65534) != 0)
    GTEST_SKIP() << "cannot give a directory away without root";
  EXPECT_NE(c.prepare_work_root().find("belongs to uid 65534"), std::string::npos);
}

// This test ensures a TMPDIR that names no directory, with `agent.work_dir`
// left at its default (in the temporary directory), is a config error
// naming the key and the variable: mesh-agent aborted on std::filesystem's
// exception.
TEST(agent_config, a_default_work_dir_without_a_temporary_directory_is_named) {
  const char* before = std::getenv("TMPDIR");
  std::string saved = before ? before : "";
  ::setenv("TMPDIR", "/nonexistent/polymesh-tmp", 1);
  auto key = error_key(minimal);
  auto text = error_text(minimal);
  if (before)
    ::setenv("TMPDIR", saved.c_str(), 1);
  else
    ::unsetenv("TMPDIR");
  EXPECT_EQ(key, "agent.work_dir");
  EXPECT_NE(
      text.find("TMPDIR names '/nonexistent/polymesh-tmp', which is not a directory"),
      std::string::npos)
      << text;
  EXPECT_NE(text.find("set agent.work_dir, or TMPDIR to a directory"), std::string::npos)
      << text;
}

// This test ensures a setting's line is found as config errors name the
// setting: through maps, lists and keys holding dots, and the nearest
// enclosing line for a key that is not there (a missing key's section).
TEST(agent_config, a_settings_line_is_found_by_its_dotted_key) {
  const std::string text = "mesh: {url: 'http://h:1'}\n"       // 1
                           "agent:\n"                          // 2
                           "  name: a\n"                       // 3
                           "  labels:\n"                       // 4
                           "    app.kubernetes.io/name: web\n" // 5
                           "plans:\n"                          // 6
                           "  shell:\n"                        // 7
                           "    shortcuts:\n"                  // 8
                           "      - {short: x, cmd: a}\n"      // 9
                           "      - short: y\n"                // 10
                           "        cmd: b\n";                 // 11
  EXPECT_EQ(yaml_key_line(text, "mesh.url"), 1);
  EXPECT_EQ(yaml_key_line(text, "agent.name"), 3);
  EXPECT_EQ(yaml_key_line(text, "agent.labels.app.kubernetes.io/name"), 5);
  EXPECT_EQ(yaml_key_line(text, "plans.shell.shortcuts[0].cmd"), 9);
  EXPECT_EQ(yaml_key_line(text, "plans.shell.shortcuts[1].cmd"), 11);
  EXPECT_EQ(yaml_key_line(text, "agent.capacity"), 2) << "missing: its section";
  EXPECT_EQ(yaml_key_line(text, "plans.shell.shortcuts[5]"), 8);
  EXPECT_EQ(yaml_key_line(text, "logs.level"), std::nullopt);
  EXPECT_EQ(yaml_key_line("a: [", "a"), std::nullopt) << "no YAML";
}
