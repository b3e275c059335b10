#include "mesh/config/mesh_config.hpp"
#include "mesh/domain/error.hpp"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <gtest/gtest.h>
#include <limits>
#include <set>
#include <sstream>
#include <unistd.h>

#ifndef POLYMESH_SOURCE_DIR
#error "config_tests needs POLYMESH_SOURCE_DIR to find config/ and docs/"
#endif

using namespace polymesh;
using namespace std::chrono_literals;

namespace {

const std::string source_dir = POLYMESH_SOURCE_DIR;
const std::string example_path = source_dir + "/config/mesh.example.yaml";
const std::string docs_path = source_dir + "/docs/config.md";

// Set to rewrite the example file and the key table in the docs from
// `mesh_config_keys()` instead of comparing them.
bool update_golden() {
  return std::getenv("POLYMESH_UPDATE_GOLDEN") != nullptr;
}

std::string read_text(const std::string& path) {
  std::ifstream in{path, std::ios::binary};
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

void write_text(const std::string& path, const std::string& text) {
  std::ofstream out{path, std::ios::binary | std::ios::trunc};
  out << text;
}

/// Splits `http.threads` into {"http", "threads"} and `listen` into {"", "listen"}.
std::pair<std::string, std::string> split_key(const std::string& key) {
  auto dot = key.find('.');
  if (dot == std::string::npos) return {"", key};
  return {key.substr(0, dot), key.substr(dot + 1)};
}

/// YAML that sets one dotted key to `value` (written verbatim).
std::string yaml_for(const std::string& key, const std::string& value) {
  auto [section, name] = split_key(key);
  if (section.empty()) return name + ": " + value + "\n";
  return section + ":\n  " + name + ": " + value + "\n";
}

/// Parses `yaml` expecting an invalid_argument error; returns it.
caf::error parse_error(const std::string& yaml) {
  auto cfg = parse_mesh_config(yaml);
  if (cfg) {
    ADD_FAILURE() << "expected an error for:\n" << yaml;
    return {};
  }
  EXPECT_EQ(code_of(cfg.error()), errc::invalid_argument) << message_of(cfg.error());
  return cfg.error();
}

mesh_config parse_ok(const std::string& yaml) {
  auto cfg = parse_mesh_config(yaml);
  EXPECT_TRUE(cfg) << "yaml:\n" << yaml << "\nerror: " << message_of(cfg.error());
  return cfg ? *cfg : mesh_config{};
}

void expect_same_config(const mesh_config& a, const mesh_config& b) {
  EXPECT_EQ(a.listen, b.listen);
  EXPECT_EQ(a.data_dir, b.data_dir);
  EXPECT_EQ(a.http_threads, b.http_threads);
  EXPECT_EQ(a.run_waits, b.run_waits);
  EXPECT_EQ(a.max_body_bytes, b.max_body_bytes);
  EXPECT_EQ(a.keep_alive_timeout, b.keep_alive_timeout);
  EXPECT_EQ(a.keep_alive_max_requests, b.keep_alive_max_requests);
  EXPECT_EQ(a.read_timeout, b.read_timeout);
  EXPECT_EQ(a.stop_grace, b.stop_grace);
  EXPECT_EQ(a.store_path, b.store_path);
  EXPECT_EQ(a.store_synchronous, b.store_synchronous);
  EXPECT_EQ(a.group_commit_max, b.group_commit_max);
  EXPECT_EQ(a.offline_after, b.offline_after);
  EXPECT_EQ(a.agent_token_ttl, b.agent_token_ttl);
  EXPECT_EQ(a.poll_wait_max, b.poll_wait_max);
  EXPECT_EQ(a.heartbeat_interval, b.heartbeat_interval);
  EXPECT_EQ(a.forget_after, b.forget_after);
  EXPECT_EQ(a.hold_back_max, b.hold_back_max);
  EXPECT_EQ(a.delivery_lease, b.delivery_lease);
  EXPECT_EQ(a.result_expiry, b.result_expiry);
  EXPECT_EQ(a.cancel_grace, b.cancel_grace);
  EXPECT_EQ(a.max_result_bytes, b.max_result_bytes);
  EXPECT_EQ(a.max_payload_bytes, b.max_payload_bytes);
  EXPECT_EQ(a.max_artifact_bytes, b.max_artifact_bytes);
  EXPECT_EQ(a.max_artifacts, b.max_artifacts);
  EXPECT_EQ(a.max_log_bytes, b.max_log_bytes);
  EXPECT_EQ(a.assignment_sweep, b.assignment_sweep);
  EXPECT_EQ(a.timer_resolution, b.timer_resolution);
  EXPECT_EQ(a.retention, b.retention);
  EXPECT_EQ(a.retention_interval, b.retention_interval);
  EXPECT_EQ(a.retention_max_hold, b.retention_max_hold);
  EXPECT_EQ(a.log_level, b.log_level);
}

// -- renderings of the key table, kept in the repository as golden files ----

std::vector<std::string> wrap(const std::string& text, size_t width) {
  std::vector<std::string> lines;
  std::istringstream words{text};
  std::string word;
  std::string line;
  while (words >> word) {
    if (!line.empty() && line.size() + 1 + word.size() > width) {
      lines.push_back(line);
      line.clear();
    }
    line += (line.empty() ? "" : " ") + word;
  }
  if (!line.empty()) lines.push_back(line);
  return lines;
}

std::string yaml_value(const std::string& text) {
  return text.empty() ? "\"\"" : text;
}

std::string render_example() {
  std::string out =
      "# meshd configuration: every key with its default value.\n"
      "#\n"
      "# Keep only what you change; an empty file means all defaults. Unknown keys\n"
      "# and out-of-range values are errors that name the key. Durations take a\n"
      "# unit: 250ms, 90s, 10m, 2h, 7d (plain 0 where 0 is allowed). Integers are\n"
      "# plain decimals without leading zeros.\n"
      "#\n"
      "# Reference: docs/config.md. The flags --listen and --data-dir override this\n"
      "# file. Generated from meshd's key table; tests/mesh/config/mesh_config_test.cpp\n"
      "# checks that it matches (POLYMESH_UPDATE_GOLDEN=1 config_tests rewrites it).\n";
  std::string current;
  for (const auto& key : mesh_config_keys()) {
    auto [section, name] = split_key(key.key);
    if (section != current) {
      out += "\n" + section + ":\n";
      current = section;
    } else {
      out += "\n";
    }
    std::string indent = section.empty() ? "" : "  ";
    for (const auto& line : wrap(key.doc, 78 - indent.size()))
      out += indent + "# " + line + "\n";
    out += indent + "# " + key.type + "; " + key.bounds + "\n";
    out += indent + name + ": " + yaml_value(key.default_value) + "\n";
  }
  return out;
}

const std::string docs_begin = "<!-- BEGIN generated key table: POLYMESH_UPDATE_GOLDEN=1 "
                               "config_tests rewrites it -->\n";
const std::string docs_end = "<!-- END generated key table -->\n";

std::string render_docs_table() {
  std::string out = "| Key | Type | Default | Bounds | Meaning |\n"
                    "|-----|------|---------|--------|---------|\n";
  for (const auto& key : mesh_config_keys())
    out += "| `" + key.key + "` | " + key.type + " | `" + yaml_value(key.default_value) +
           "` | " + key.bounds + " | " + key.doc + " |\n";
  return out;
}

/// The dotted keys an example file sets, read by indentation alone so that a
/// key commented out or misplaced does not count.
std::set<std::string> keys_in_example(const std::string& text) {
  std::set<std::string> keys;
  std::istringstream lines{text};
  std::string line;
  std::string section;
  while (std::getline(lines, line)) {
    auto first = line.find_first_not_of(' ');
    if (first == std::string::npos || line[first] == '#') continue;
    auto colon = line.find(':', first);
    if (colon == std::string::npos) continue;
    auto name = line.substr(first, colon - first);
    bool has_value = line.find_first_not_of(' ', colon + 1) != std::string::npos;
    if (first == 0 && !has_value)
      section = name;
    else if (first == 0)
      keys.insert(name), section.clear();
    else if (first == 2 && !section.empty())
      keys.insert(section + "." + name);
  }
  return keys;
}

} // namespace

// -- defaults ------------------------------------------------------------------

// This test ensures the documented defaults are the values a default config holds.
TEST(mesh_config, defaults_match_the_header) {
  mesh_config cfg;
  EXPECT_EQ(cfg.listen, "127.0.0.1:7700");
  EXPECT_EQ(cfg.data_dir, "./polymesh-data");
  EXPECT_EQ(cfg.http_threads, 64);
  EXPECT_EQ(cfg.run_waits, 16);
  EXPECT_EQ(cfg.max_body_bytes, 1 << 20);
  EXPECT_EQ(cfg.keep_alive_timeout, 2s);
  EXPECT_EQ(cfg.keep_alive_max_requests, 100);
  EXPECT_EQ(cfg.read_timeout, 10s);
  EXPECT_EQ(cfg.stop_grace, 10s);
  EXPECT_EQ(cfg.store_path, "");
  EXPECT_EQ(cfg.store_synchronous, "full");
  EXPECT_EQ(cfg.group_commit_max, 4096);
  EXPECT_EQ(cfg.offline_after, 3min);
  EXPECT_EQ(cfg.agent_token_ttl, 1h);
  EXPECT_EQ(cfg.poll_wait_max, 30s);
  EXPECT_EQ(cfg.heartbeat_interval, 30s);
  EXPECT_EQ(cfg.delivery_lease, 30s);
  EXPECT_EQ(cfg.result_expiry, 10min);
  EXPECT_EQ(cfg.cancel_grace, 30s);
  EXPECT_EQ(cfg.max_result_bytes, 64 * 1024);
  EXPECT_EQ(cfg.max_payload_bytes, 256 * 1024);
  EXPECT_EQ(cfg.assignment_sweep, 1s);
  EXPECT_EQ(cfg.timer_resolution, 100ms);
  EXPECT_EQ(cfg.retention, 7 * 24h);
  EXPECT_EQ(cfg.retention_interval, 1min);
  EXPECT_EQ(cfg.retention_max_hold, 200ms);
  EXPECT_EQ(cfg.log_level, "info");
}

// This test ensures the defaults pass every bound and cross-field rule.
TEST(mesh_config, defaults_are_valid) {
  auto err = validate(mesh_config{});
  EXPECT_FALSE(err) << message_of(err);
}

// This test ensures an empty or comment-only document yields all defaults.
TEST(mesh_config, empty_document_yields_defaults) {
  for (const char* yaml :
       {"", "\n", "# nothing here\n", "---\n", "~\n", "--- # c\n..."}) {
    SCOPED_TRACE(yaml);
    expect_same_config(parse_ok(yaml), mesh_config{});
  }
}

// This test ensures a section left empty or given as {} keeps its defaults.
TEST(mesh_config, empty_sections_yield_defaults) {
  auto cfg =
      parse_ok("http:\nstore: {}\nagents:\nruns: ~\nroutines:\nretention:\nlog:\n");
  expect_same_config(cfg, mesh_config{});
}

// This test ensures the database lives in data_dir unless store.path is set.
TEST(mesh_config, database_path_defaults_to_data_dir) {
  mesh_config cfg;
  EXPECT_EQ(cfg.database_path(), "./polymesh-data/mesh.db");
  cfg.data_dir = "/var/lib/polymesh/";
  EXPECT_EQ(cfg.database_path(), "/var/lib/polymesh/mesh.db");
  cfg.store_path = "/srv/db/mesh.sqlite";
  EXPECT_EQ(cfg.database_path(), "/srv/db/mesh.sqlite");
}

// -- each section ----------------------------------------------------------------

// This test ensures the top-level keys listen and data_dir are read.
TEST(mesh_config, top_level_keys_parse) {
  auto cfg = parse_ok("listen: 0.0.0.0:0\ndata_dir: /var/lib/polymesh\n");
  EXPECT_EQ(cfg.listen, "0.0.0.0:0");
  EXPECT_EQ(cfg.data_dir, "/var/lib/polymesh");
  EXPECT_EQ(cfg.database_path(), "/var/lib/polymesh/mesh.db");
}

// This test ensures every http key is read into its field.
TEST(mesh_config, http_section_parses) {
  auto cfg = parse_ok("http:\n  threads: 8\n  max_body_bytes: 4096\n"
                      "  keep_alive_timeout: 5s\n  keep_alive_max_requests: 7\n"
                      "  read_timeout: 30s\n  stop_grace: 250ms\n"
                      "runs:\n  max_result_bytes: 1000\n  max_payload_bytes: 2000\n");
  EXPECT_EQ(cfg.http_threads, 8);
  EXPECT_EQ(cfg.max_body_bytes, 4096);
  EXPECT_EQ(cfg.keep_alive_timeout, 5s);
  EXPECT_EQ(cfg.keep_alive_max_requests, 7);
  EXPECT_EQ(cfg.read_timeout, 30s);
  EXPECT_EQ(cfg.stop_grace, 250ms);
}

// This test ensures every store key is read into its field.
TEST(mesh_config, store_section_parses) {
  auto cfg = parse_ok("store:\n  path: /tmp/x.db\n  synchronous: normal\n"
                      "  group_commit_max: 1\n");
  EXPECT_EQ(cfg.store_path, "/tmp/x.db");
  EXPECT_EQ(cfg.store_synchronous, "normal");
  EXPECT_EQ(cfg.group_commit_max, 1);
  EXPECT_EQ(cfg.database_path(), "/tmp/x.db");
  EXPECT_EQ(parse_ok("store:\n  path: \"\"\n").store_path, "");
}

// This test ensures every agents key is read into its field.
TEST(mesh_config, agents_section_parses) {
  auto cfg = parse_ok("agents:\n  offline_after: 10m\n  token_ttl: 2h\n"
                      "  poll_wait_max: 0\n  heartbeat_interval: 1m\n"
                      "  hold_back_max: 0\n");
  EXPECT_EQ(cfg.offline_after, 10min);
  EXPECT_EQ(cfg.hold_back_max, 0ms);
  EXPECT_EQ(cfg.agent_token_ttl, 2h);
  EXPECT_EQ(cfg.poll_wait_max, 0ms);
  EXPECT_EQ(cfg.heartbeat_interval, 1min);
}

// This test ensures every runs key is read into its field.
TEST(mesh_config, runs_section_parses) {
  auto cfg = parse_ok("runs:\n  delivery_lease: 1m\n  result_expiry: 1h\n"
                      "  cancel_grace: 0\n  max_result_bytes: 100\n"
                      "  max_payload_bytes: 0\n");
  EXPECT_EQ(cfg.delivery_lease, 1min);
  EXPECT_EQ(cfg.result_expiry, 1h);
  EXPECT_EQ(cfg.cancel_grace, 0ms);
  EXPECT_EQ(cfg.max_result_bytes, 100);
  EXPECT_EQ(cfg.max_payload_bytes, 0);
}

// This test ensures every routines key is read into its field.
TEST(mesh_config, routines_section_parses) {
  auto cfg = parse_ok("routines:\n  assignment_sweep: 5s\n  timer_resolution: 1s\n");
  EXPECT_EQ(cfg.assignment_sweep, 5s);
  EXPECT_EQ(cfg.timer_resolution, 1s);
}

// This test ensures every retention key is read, and 0 means keep forever.
TEST(mesh_config, retention_section_parses) {
  auto cfg =
      parse_ok("retention:\n  finished_runs: 30d\n  interval: 5m\n  max_hold: 50ms\n");
  EXPECT_EQ(cfg.retention, 30 * 24h);
  EXPECT_EQ(cfg.retention_interval, 5min);
  EXPECT_EQ(cfg.retention_max_hold, 50ms);
  EXPECT_EQ(parse_ok("retention:\n  max_hold: 0\n").retention_max_hold, 0ms);
  EXPECT_EQ(parse_ok("retention:\n  finished_runs: 0\n").retention, 0ms);
}

// This test ensures each log level is accepted.
TEST(mesh_config, log_section_parses) {
  for (const char* level : {"error", "warn", "info", "debug"})
    EXPECT_EQ(parse_ok(std::string{"log:\n  level: "} + level + "\n").log_level, level);
}

// This test ensures flow style and quoted strings are read like block style.
TEST(mesh_config, flow_style_and_quoting_parse) {
  auto cfg =
      parse_ok("{listen: '[::1]:8080', http: {threads: 2}, log: {level: \"debug\"}, "
               "agents: {offline_after: \"5m\"}}");
  EXPECT_EQ(cfg.listen, "[::1]:8080");
  EXPECT_EQ(cfg.http_threads, 2);
  EXPECT_EQ(cfg.log_level, "debug");
  EXPECT_EQ(cfg.offline_after, 5min);
}

// -- unknown and duplicate keys ----------------------------------------------------

// This test ensures unknown keys at every level are errors naming the dotted key.
TEST(mesh_config, unknown_keys_are_errors) {
  struct {
    const char* yaml;
    const char* key;
  } cases[] = {
      {"htp:\n  threads: 8\n", "htp"},
      {"listen_addr: 1.2.3.4:5\n", "listen_addr"},
      {"http:\n  thread: 8\n", "http.thread"},
      {"store:\n  file: x\n", "store.file"},
      {"agents:\n  offline: 1m\n", "agents.offline"},
      {"runs:\n  lease: 1m\n", "runs.lease"},
      {"routines:\n  sweep: 1s\n", "routines.sweep"},
      {"retention:\n  days: 1\n", "retention.days"},
      {"log:\n  format: json\n", "log.format"},
      {"http:\n  threads: 8\n  http:\n    threads: 8\n", "http.http"},
      {"http:\n  \"threads.x\": 8\n", "http.threads.x"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.yaml);
    auto err = parse_error(c.yaml);
    EXPECT_EQ(field_of(err), c.key);
    EXPECT_EQ(message_of(err), std::string{"unknown key '"} + c.key + "'");
  }
}

// This test ensures the error for an unknown key points at the key in the text.
TEST(mesh_config, unknown_key_error_has_position) {
  std::string yaml = "http:\n  threads: 8\n  thread: 9\n";
  auto err = parse_error(yaml);
  EXPECT_EQ(position_of(err), static_cast<int64_t>(yaml.find("thread:")));
}

// This test ensures a known key written flat (http.threads) is refused with a hint.
TEST(mesh_config, flat_dotted_key_is_an_error) {
  auto err = parse_error("http.threads: 8\n");
  EXPECT_EQ(field_of(err), "http.threads");
  EXPECT_NE(message_of(err).find("must be nested"), std::string::npos) << message_of(err);
}

// This test ensures a key given twice is an error rather than last-one-wins.
TEST(mesh_config, duplicate_keys_are_errors) {
  auto err = parse_error("http:\n  threads: 8\n  threads: 9\n");
  EXPECT_EQ(field_of(err), "http.threads");
  EXPECT_EQ(message_of(err), "duplicate key 'http.threads'");
  EXPECT_EQ(field_of(parse_error("http: {}\nhttp: {}\n")), "http");
  EXPECT_EQ(field_of(parse_error("listen: a:1\nlisten: b:2\n")), "listen");
}

// -- wrong types --------------------------------------------------------------------

// This test ensures a map, sequence or nothing in place of any key's value is an error.
TEST(mesh_config, non_scalar_values_are_errors_for_every_key) {
  for (const auto& key : mesh_config_keys()) {
    for (const char* value : {"{a: 1}", "[1, 2]", "", "~"}) {
      SCOPED_TRACE(key.key + ": " + value);
      auto err = parse_error(yaml_for(key.key, value));
      EXPECT_EQ(field_of(err), key.key);
      EXPECT_EQ(message_of(err).rfind(key.key + ": expected ", 0), 0u) << message_of(err);
    }
  }
}

// This test ensures yes/on/true are not taken as a value of any (non-boolean) key.
TEST(mesh_config, boolean_words_are_errors_for_every_key) {
  for (const auto& key : mesh_config_keys()) {
    for (const char* value : {"yes", "on", "true", "off"}) {
      SCOPED_TRACE(key.key + ": " + value);
      EXPECT_EQ(field_of(parse_error(yaml_for(key.key, value))), key.key);
    }
  }
}

// This test ensures a quoted "yes" is an ordinary string where a path is expected.
TEST(mesh_config, quoted_boolean_word_is_a_path) {
  EXPECT_EQ(parse_ok("data_dir: \"yes\"\n").data_dir, "yes");
  auto err = parse_error("data_dir: yes\n");
  EXPECT_NE(message_of(err).find("quote it"), std::string::npos) << message_of(err);
}

// This test ensures integer keys take only plain decimal integers.
TEST(mesh_config, non_integers_are_errors) {
  for (const char* value : {"8.0", "8.5", "1e3", "0x10", "+8", "8 threads", "eight",
                            "\"8\"", "'8'", "!!int 8", "1_000", "8k"}) {
    SCOPED_TRACE(value);
    auto err = parse_error(yaml_for("http.threads", value));
    EXPECT_EQ(field_of(err), "http.threads");
    EXPECT_EQ(
        message_of(err).rfind("http.threads: expected an integer in 1..65536, got", 0),
        0u)
        << message_of(err);
  }
}

// This test ensures 010 is refused instead of silently becoming octal 8.
TEST(mesh_config, leading_zeros_are_errors) {
  auto err = parse_error("http:\n  threads: 010\n");
  EXPECT_EQ(field_of(err), "http.threads");
  EXPECT_NE(message_of(err).find("leading zeros"), std::string::npos) << message_of(err);
  EXPECT_EQ(field_of(parse_error("store:\n  group_commit_max: 00\n")),
            "store.group_commit_max");
  EXPECT_EQ(field_of(parse_error("agents:\n  offline_after: 03m\n")),
            "agents.offline_after");
  EXPECT_EQ(field_of(parse_error("listen: 127.0.0.1:0080\n")), "listen");
}

// This test ensures an integer too large for 64 bits is an error, not a wrap-around.
TEST(mesh_config, integer_overflow_is_an_error) {
  auto err = parse_error("http:\n  max_body_bytes: 99999999999999999999\n");
  EXPECT_EQ(field_of(err), "http.max_body_bytes");
  EXPECT_NE(message_of(err).find("out of range"), std::string::npos) << message_of(err);
}

// This test ensures a scalar where a section belongs is an error naming the section.
TEST(mesh_config, scalar_section_is_an_error) {
  for (const char* yaml : {"http: 8\n", "http: [threads]\n", "http: \"\"\n"}) {
    SCOPED_TRACE(yaml);
    auto err = parse_error(yaml);
    EXPECT_EQ(field_of(err), "http");
    EXPECT_EQ(message_of(err).rfind("http: expected a map of keys, got", 0), 0u)
        << message_of(err);
  }
}

// This test ensures a document that is not a map (or more than one document) is an error.
TEST(mesh_config, non_map_document_is_an_error) {
  EXPECT_EQ(field_of(parse_error("listen\n")), "");
  EXPECT_EQ(field_of(parse_error("- listen: a:1\n")), "");
  auto err = parse_error("listen: a:1\n---\nlisten: b:2\n");
  EXPECT_NE(message_of(err).find("one YAML document"), std::string::npos)
      << message_of(err);
}

// This test ensures a key that is not a plain name (e.g. a sequence) is an error.
TEST(mesh_config, complex_keys_are_errors) {
  EXPECT_EQ(field_of(parse_error("? [a, b]\n: 1\n")), "");
  EXPECT_EQ(field_of(parse_error("http:\n  ? {a: 1}\n  : 1\n")), "http");
}

// This test ensures yaml-cpp syntax errors become invalid_argument with line and column.
TEST(mesh_config, yaml_syntax_errors_carry_line_and_column) {
  auto err = parse_error("http:\n  threads: [8\n");
  EXPECT_EQ(field_of(err), "");
  EXPECT_NE(message_of(err).find("invalid YAML at line "), std::string::npos)
      << message_of(err);
  EXPECT_NE(message_of(err).find("column "), std::string::npos) << message_of(err);
  auto tab = parse_error("http:\n  threads: 8\n bad: 1\n");
  EXPECT_NE(message_of(tab).find("line 3"), std::string::npos) << message_of(tab);
  EXPECT_GE(position_of(tab), 0);
}

// This test ensures a document that starts with ',' is an error at its
// place (yaml-cpp 0.7's LoadAll added empty documents for good on it, and
// meshd grew until memory ran out).
TEST(mesh_config, a_document_starting_with_a_comma_is_an_error_not_a_hang) {
  for (auto [text, at] :
       {std::pair{",\n", "line 1, column 1"},
        std::pair{"listen: 127.0.0.1:0\n---\n,\n", "line 3, column 1"}}) {
    auto err = parse_error(text);
    EXPECT_EQ(message_of(err), std::string{"invalid YAML at "} + at +
                                   ": unexpected ',' where a document starts");
  }
}

// -- bounds -------------------------------------------------------------------------

// This test ensures values outside each key's bounds are errors naming the key.
TEST(mesh_config, out_of_bounds_values_are_errors) {
  struct {
    const char* key;
    const char* value;
  } cases[] = {
      {"http.threads", "0"},
      {"http.threads", "65537"},
      {"http.threads", "-1"},
      {"http.run_waits", "-1"},
      {"http.run_waits", "65537"},
      {"http.max_body_bytes", "1023"},
      {"http.max_body_bytes", "1073741825"},
      {"http.keep_alive_timeout", "0"},
      {"http.keep_alive_timeout", "500ms"},
      {"http.keep_alive_timeout", "1500ms"},
      {"http.keep_alive_timeout", "2h"},
      {"http.keep_alive_max_requests", "0"},
      {"http.keep_alive_max_requests", "1000001"},
      {"http.read_timeout", "0"},
      {"http.read_timeout", "2500ms"},
      {"http.stop_grace", "-1s"},
      {"http.stop_grace", "2h"},
      {"store.group_commit_max", "0"},
      {"store.group_commit_max", "1048577"},
      {"agents.offline_after", "0"},
      {"agents.offline_after", "2d"},
      {"agents.token_ttl", "59s"},
      {"agents.token_ttl", "366d"},
      {"agents.poll_wait_max", "61m"},
      {"agents.poll_wait_max", "1500ms"},
      {"agents.heartbeat_interval", "500ms"},
      {"agents.heartbeat_interval", "0"},
      {"runs.delivery_lease", "0"},
      {"runs.result_expiry", "31d"},
      {"runs.cancel_grace", "25h"},
      {"runs.max_result_bytes", "-1"},
      {"runs.max_payload_bytes", "1073741825"},
      {"routines.assignment_sweep", "0"},
      {"routines.timer_resolution", "0"},
      {"routines.timer_resolution", "1001ms"},
      {"routines.timer_resolution", "2s"},
      {"retention.finished_runs", "3651d"},
      {"retention.interval", "0"},
      {"retention.interval", "999ms"},
      {"retention.max_hold", "11s"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(std::string{c.key} + ": " + c.value);
    auto err = parse_error(yaml_for(c.key, c.value));
    EXPECT_EQ(field_of(err), c.key);
    EXPECT_EQ(message_of(err).rfind(std::string{c.key} + ": expected ", 0), 0u)
        << message_of(err);
  }
}

// This test ensures the exact bounds themselves are accepted.
TEST(mesh_config, boundary_values_are_accepted) {
  EXPECT_EQ(parse_ok("http:\n  threads: 1\n").http_threads, 1);
  EXPECT_EQ(parse_ok("http:\n  threads: 65536\n").http_threads, 65536);
  EXPECT_EQ(parse_ok("http:\n  run_waits: 0\n").run_waits, 0);
  EXPECT_EQ(parse_ok("http:\n  run_waits: 65536\n").run_waits, 65536);
  EXPECT_EQ(parse_ok("http:\n  max_body_bytes: 1073741824\n").max_body_bytes, 1 << 30);
  EXPECT_EQ(parse_ok("http:\n  max_body_bytes: 262145\n").max_body_bytes, 262145);
  EXPECT_EQ(parse_ok("http:\n  keep_alive_timeout: 1h\n").keep_alive_timeout, 1h);
  EXPECT_EQ(parse_ok("http:\n  keep_alive_timeout: 1000ms\n").keep_alive_timeout, 1s);
  EXPECT_EQ(parse_ok("agents:\n  token_ttl: 365d\n").agent_token_ttl, 365 * 24h);
  EXPECT_EQ(parse_ok("retention:\n  finished_runs: 3650d\n").retention, 3650 * 24h);
  EXPECT_EQ(parse_ok("routines:\n  timer_resolution: 1ms\n").timer_resolution, 1ms);
}

// This test ensures the error message states the bounds that were broken.
TEST(mesh_config, bounds_error_message_states_the_bounds) {
  EXPECT_EQ(message_of(parse_error("http:\n  threads: 0\n")),
            "http.threads: expected an integer in 1..65536, got 0");
  EXPECT_EQ(message_of(parse_error("agents:\n  offline_after: 0\n")),
            "agents.offline_after: expected a duration in 1ms..1d, got 0");
  EXPECT_EQ(message_of(parse_error("http:\n  keep_alive_timeout: 1500ms\n")),
            "http.keep_alive_timeout: expected whole seconds in 1s..1h, got 1500ms");
}

// This test ensures enum keys accept only their listed values, case-sensitively.
TEST(mesh_config, bad_enums_are_errors) {
  struct {
    const char* key;
    const char* value;
  } cases[] = {{"store.synchronous", "off"},   {"store.synchronous", "FULL"},
               {"store.synchronous", "extra"}, {"store.synchronous", "\"\""},
               {"log.level", "trace"},         {"log.level", "Info"},
               {"log.level", "warning"},       {"log.level", "1"}};
  for (const auto& c : cases) {
    SCOPED_TRACE(std::string{c.key} + ": " + c.value);
    auto err = parse_error(yaml_for(c.key, c.value));
    EXPECT_EQ(field_of(err), c.key);
  }
  EXPECT_EQ(message_of(parse_error("log:\n  level: trace\n")),
            "log.level: expected one of error, warn, info, debug, got 'trace'");
}

// This test ensures listen takes HOST:PORT with a port in 0..65535.
TEST(mesh_config, listen_address_forms) {
  for (const char* ok : {"127.0.0.1:0", "0.0.0.0:65535", "localhost:7700", "[::1]:7700",
                         "[::]:0", "mesh.example.com:443"}) {
    SCOPED_TRACE(ok);
    EXPECT_EQ(parse_ok(std::string{"listen: \""} + ok + "\"\n").listen, ok);
  }
  for (const char* bad : {"7700", "127.0.0.1", "127.0.0.1:", ":7700", "127.0.0.1:65536",
                          "127.0.0.1:-1", "127.0.0.1:http", "::1:7700", "[::1]7700:",
                          "[]:7700", "host name:80", "127.0.0.1:99999999999", ""}) {
    SCOPED_TRACE(bad);
    auto err = parse_error(std::string{"listen: '"} + bad + "'\n");
    EXPECT_EQ(field_of(err), "listen");
    EXPECT_EQ(message_of(err).rfind("listen: expected HOST:PORT", 0), 0u)
        << message_of(err);
  }
  // Unquoted, YAML reads a bracketed host as a list: the error says to quote
  // it, whether the rest of the line parses or not.
  for (const char* unquoted :
       {"listen: [::1]:7700\n", "http:\n  threads: 4\nlisten: [::]:0\n",
        "listen: [::1]\n"}) {
    SCOPED_TRACE(unquoted);
    EXPECT_NE(message_of(parse_error(unquoted))
                  .find("an IPv6 host in brackets must be quoted, as YAML reads [ as a "
                        "list: listen: \"[::1]:7700\""),
              std::string::npos)
        << message_of(parse_error(unquoted));
  }
  EXPECT_EQ(message_of(parse_error("http:\n  threads: [8\n")).find("IPv6"),
            std::string::npos);
}

// This test ensures data_dir must not be empty while store.path may be.
TEST(mesh_config, empty_paths) {
  EXPECT_EQ(field_of(parse_error("data_dir: \"\"\n")), "data_dir");
  EXPECT_EQ(parse_ok("store:\n  path: ''\n").database_path(), "./polymesh-data/mesh.db");
}

// This test ensures store.path ':memory:' is refused (meshd failed at start
// with "database schema version 0 is not this build's": SQLite opened a new
// database in memory each time, and it would keep nothing acknowledged),
// while a file of that name can still be given.
TEST(mesh_config, store_path_in_memory_is_refused) {
  auto err = parse_error("store:\n  path: ':memory:'\n");
  EXPECT_EQ(field_of(err), "store.path");
  EXPECT_NE(message_of(err).find("SQLite's database in memory"), std::string::npos)
      << message_of(err);
  EXPECT_EQ(parse_ok("store:\n  path: './:memory:'\n").database_path(), "./:memory:");
}

// This test ensures a store.path that names a directory (ending in '/', '/.'
// or '/..') is refused naming the key: `--check` passed it, and the start
// failed and left a directory holding a lock file.
TEST(mesh_config, a_store_path_naming_a_directory_is_refused) {
  for (const char* path : {"/var/lib/polymesh/db/", "db/.", "db/..", "/"}) {
    SCOPED_TRACE(path);
    auto err = parse_error(std::string{"store:\n  path: '"} + path + "'\n");
    EXPECT_EQ(field_of(err), "store.path");
    EXPECT_NE(message_of(err).find("names a directory; give the database file's path"),
              std::string::npos)
        << message_of(err);
  }
  EXPECT_EQ(message_of(parse_error("store:\n  path: /srv/db/\n")),
            "store.path: '/srv/db/' names a directory; give the database file's path "
            "(e.g. /srv/db/mesh.db)");
  EXPECT_EQ(parse_ok("store:\n  path: /srv/db/mesh.db\n").database_path(),
            "/srv/db/mesh.db");
}

// -- durations ------------------------------------------------------------------------

// This test ensures parse_duration reads every unit and plain 0.
TEST(mesh_config, parse_duration_accepts_units) {
  struct {
    const char* text;
    duration expected;
  } cases[] = {
      {"0", 0ms},
      {"0ms", 0ms},
      {"0s", 0ms},
      {"0d", 0ms},
      {"1ms", 1ms},
      {"250ms", 250ms},
      {"1s", 1s},
      {"90s", 90s},
      {"10m", 10min},
      {"2h", 2h},
      {"7d", 7 * 24h},
      {"1500ms", 1500ms},
      {"3650d", 3650 * 24h},
      {"9223372036854775807ms", duration{std::numeric_limits<int64_t>::max()}},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.text);
    auto d = parse_duration(c.text, "k");
    ASSERT_TRUE(d) << message_of(d.error());
    EXPECT_EQ(*d, c.expected);
  }
}

// This test ensures parse_duration rejects negatives, no unit, garbage and overflow.
TEST(mesh_config, parse_duration_rejects_bad_text) {
  for (const char* text : {"",
                           "-1s",
                           "-0",
                           "10",
                           "1",
                           "s",
                           "ms",
                           "1.5s",
                           "1 s",
                           " 1s",
                           "1s ",
                           "1S",
                           "1sec",
                           "1min",
                           "1h30m",
                           "1w",
                           "1us",
                           "0x10s",
                           "+1s",
                           "01s",
                           "1e3ms",
                           "abc",
                           "9223372036854775808ms",
                           "9223372036854775807s",
                           "106751991167301d",
                           "99999999999999999999999d"}) {
    SCOPED_TRACE(text);
    auto d = parse_duration(text, "agents.offline_after");
    ASSERT_FALSE(d);
    EXPECT_EQ(code_of(d.error()), errc::invalid_argument);
    EXPECT_EQ(field_of(d.error()), "agents.offline_after");
    EXPECT_EQ(message_of(d.error()).rfind(
                  "agents.offline_after: expected a duration like 90s, 10m or 2h", 0),
              0u)
        << message_of(d.error());
  }
}

// This test ensures parse_duration without a field name still explains itself.
TEST(mesh_config, parse_duration_without_field) {
  auto d = parse_duration("soon", "");
  ASSERT_FALSE(d);
  EXPECT_EQ(field_of(d.error()), "");
  EXPECT_EQ(message_of(d.error()).rfind("expected a duration like", 0), 0u);
}

// This test ensures format_duration renders the largest exact unit.
TEST(mesh_config, format_duration_uses_largest_exact_unit) {
  struct {
    duration d;
    const char* expected;
  } cases[] = {
      {0ms, "0"},      {1ms, "1ms"}, {100ms, "100ms"},   {1500ms, "1500ms"},
      {1s, "1s"},      {30s, "30s"}, {90s, "90s"},       {3min, "3m"},
      {61min, "61m"},  {1h, "1h"},   {25h, "25h"},       {24h, "1d"},
      {7 * 24h, "7d"}, {-5s, "-5s"}, {-250ms, "-250ms"},
  };
  for (const auto& c : cases)
    EXPECT_EQ(format_duration(c.d), c.expected);
}

// This test ensures format_duration and parse_duration round-trip.
TEST(mesh_config, durations_round_trip) {
  for (auto d :
       {0ms, 1ms, 999ms, 1001ms, 60000ms, 3600001ms, duration{86400000LL * 365}}) {
    auto back = parse_duration(format_duration(d), "k");
    ASSERT_TRUE(back) << format_duration(d);
    EXPECT_EQ(*back, d);
  }
}

// This test ensures duration keys in YAML reject text parse_duration rejects.
TEST(mesh_config, bad_durations_in_yaml_are_errors) {
  for (const char* value : {"90", "-1s", "1.5m", "soon", "10 m", "1h30m"}) {
    SCOPED_TRACE(value);
    auto err = parse_error(yaml_for("agents.offline_after", value));
    EXPECT_EQ(field_of(err), "agents.offline_after");
    EXPECT_EQ(message_of(err).rfind(
                  "agents.offline_after: expected a duration like 90s, 10m or 2h", 0),
              0u)
        << message_of(err);
  }
}

// -- validate ---------------------------------------------------------------------

// This test ensures each cross-field rule is enforced and names its key.
TEST(mesh_config, validate_cross_field_rules) {
  struct {
    const char* key;
    void (*change)(mesh_config&);
  } cases[] = {
      {"runs.delivery_lease", [](mesh_config& c) { c.delivery_lease = c.result_expiry; }},
      {"runs.delivery_lease", [](mesh_config& c) { c.result_expiry = 10s; }},
      {"routines.timer_resolution",
       [](mesh_config& c) {
         c.delivery_lease = 500ms;
         c.timer_resolution = 500ms;
       }},
      {"agents.poll_wait_max", [](mesh_config& c) { c.poll_wait_max = c.offline_after; }},
      {"agents.heartbeat_interval", [](mesh_config& c) { c.heartbeat_interval = 5min; }},
      {"agents.heartbeat_interval",
       [](mesh_config& c) {
         c.offline_after = 1h;
         c.heartbeat_interval = c.result_expiry;
       }},
      {"runs.max_result_bytes",
       [](mesh_config& c) { c.max_result_bytes = c.max_body_bytes; }},
      {"runs.max_payload_bytes", [](mesh_config& c) { c.max_body_bytes = 128 * 1024; }},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.key);
    mesh_config cfg;
    c.change(cfg);
    auto err = validate(cfg);
    ASSERT_TRUE(err);
    EXPECT_EQ(code_of(err), errc::invalid_argument);
    EXPECT_EQ(field_of(err), c.key);
    EXPECT_EQ(message_of(err).rfind(c.key, 0), 0u) << message_of(err);
  }
}

// This test ensures validate also checks each key's bounds, for values set in code.
TEST(mesh_config, validate_checks_bounds_of_overrides) {
  mesh_config cfg;
  cfg.listen = "nowhere";
  EXPECT_EQ(field_of(validate(cfg)), "listen");
  cfg = mesh_config{};
  cfg.data_dir = "";
  EXPECT_EQ(field_of(validate(cfg)), "data_dir");
  cfg = mesh_config{};
  cfg.timer_resolution = 2s;
  EXPECT_EQ(field_of(validate(cfg)), "routines.timer_resolution");
  cfg = mesh_config{};
  cfg.log_level = "loud";
  EXPECT_EQ(field_of(validate(cfg)), "log.level");
  cfg = mesh_config{};
  cfg.listen = "127.0.0.1:0";
  EXPECT_FALSE(validate(cfg));
}

// This test ensures parsing applies the cross-field rules and points at the key.
TEST(mesh_config, parse_applies_cross_field_rules) {
  std::string yaml = "runs:\n  delivery_lease: 20m\n";
  auto err = parse_error(yaml);
  EXPECT_EQ(field_of(err), "runs.delivery_lease");
  EXPECT_EQ(message_of(err),
            "runs.delivery_lease (20m) must be shorter than runs.result_expiry (10m)");
  EXPECT_EQ(position_of(err), static_cast<int64_t>(yaml.find("delivery_lease")));
  parse_ok("runs:\n  delivery_lease: 20m\n  result_expiry: 1h\n");
  // An agent must be offline before it can be forgotten; 0 forgets none.
  EXPECT_EQ(message_of(parse_error("agents:\n  offline_after: 2h\n  forget_after: 1h\n")),
            "agents.offline_after (2h) must be shorter than agents.forget_after (1h)");
  parse_ok("agents:\n  offline_after: 2h\n  forget_after: 0\n");
  // mesh-agent's progress heartbeat is what keeps a quiet run from expiring.
  EXPECT_EQ(message_of(parse_error("agents:\n  heartbeat_interval: 6m\n"
                                   "  offline_after: 1h\n")),
            "agents.heartbeat_interval (6m) must be at most half of runs.result_expiry "
            "(10m): mesh-agent reports a running run's progress at this interval, and "
            "one late report must not end the run");
  parse_ok("agents:\n  heartbeat_interval: 5m\n  offline_after: 1h\n");
  parse_ok("agents:\n  heartbeat_interval: 15m\n  offline_after: 1h\n"
           "runs:\n  result_expiry: 30m\n");
}

// -- files ------------------------------------------------------------------------

// This test ensures load_mesh_config reads a file and reports a missing one.
TEST(mesh_config, load_reads_files_and_reports_failures) {
  auto missing = load_mesh_config("/nonexistent/polymesh/mesh.yaml");
  ASSERT_FALSE(missing);
  EXPECT_EQ(code_of(missing.error()), errc::invalid_argument);
  EXPECT_NE(message_of(missing.error()).find("/nonexistent/polymesh/mesh.yaml"),
            std::string::npos);
  auto dir = load_mesh_config(source_dir);
  ASSERT_FALSE(dir);
  EXPECT_NE(message_of(dir.error()).find("directory"), std::string::npos);

  char path[] = "/tmp/mesh_config_test_XXXXXX";
  int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  close(fd);
  write_text(path, "http:\n  threads: 3\n");
  auto cfg = load_mesh_config(path);
  ASSERT_TRUE(cfg) << message_of(cfg.error());
  EXPECT_EQ(cfg->http_threads, 3);
  write_text(path, "http:\n  thread: 3\n");
  auto bad = load_mesh_config(path);
  ASSERT_FALSE(bad);
  EXPECT_EQ(field_of(bad.error()), "http.thread");
  EXPECT_EQ(message_of(bad.error()), std::string{path} + ":2: unknown key 'http.thread'");
  write_text(path, "# limits\nhttp:\n  threads: 3\n  max_body_bytes: lots\n");
  auto value = load_mesh_config(path);
  ASSERT_FALSE(value);
  EXPECT_EQ(
      message_of(value.error()).rfind(std::string{path} + ":4: http.max_body_bytes: ", 0),
      0u)
      << message_of(value.error());
  // A value left empty is on its key's line (it was the next line's).
  write_text(path, "http:\n  threads:\n  run_waits: 4\n");
  auto empty = load_mesh_config(path);
  ASSERT_FALSE(empty);
  EXPECT_EQ(message_of(empty.error()).rfind(std::string{path} + ":2: http.threads: ", 0),
            0u)
      << message_of(empty.error());
  // A rule between two keys points at the one the file sets, and says the
  // other is at its default.
  write_text(path, "agents:\n  forget_after: 1m\n");
  auto rule = load_mesh_config(path);
  ASSERT_FALSE(rule);
  EXPECT_EQ(message_of(rule.error()),
            std::string{path} +
                ":2: agents.offline_after (3m) must be shorter than agents.forget_after "
                "(1m) (agents.offline_after is at its default)");
  std::remove(path);
}

// -- the table, the example file and the docs ---------------------------------------

// This test ensures the table has unique, documented keys grouped by section.
TEST(mesh_config, key_table_is_well_formed) {
  auto keys = mesh_config_keys();
  EXPECT_EQ(keys.size(), 35u);
  std::set<std::string> seen;
  std::set<std::string> closed_sections;
  std::string section;
  for (const auto& key : keys) {
    SCOPED_TRACE(key.key);
    EXPECT_TRUE(seen.insert(key.key).second) << "duplicate";
    EXPECT_FALSE(key.type.empty());
    EXPECT_FALSE(key.doc.empty());
    EXPECT_FALSE(key.bounds.empty());
    EXPECT_EQ(std::count(key.key.begin(), key.key.end(), '.') <= 1, true);
    auto next = split_key(key.key).first;
    if (next != section) {
      EXPECT_EQ(closed_sections.count(next), 0u) << "section split in two";
      closed_sections.insert(section);
      section = next;
    }
  }
}

// This test ensures config/mesh.example.yaml sets exactly the keys of the table.
TEST(mesh_config, example_file_lists_every_key) {
  auto text = read_text(example_path);
  ASSERT_FALSE(text.empty()) << example_path;
  auto in_file = keys_in_example(text);
  std::set<std::string> in_table;
  for (const auto& key : mesh_config_keys()) {
    in_table.insert(key.key);
    EXPECT_EQ(in_file.count(key.key), 1u) << key.key << " missing from " << example_path;
  }
  for (const auto& key : in_file)
    EXPECT_EQ(in_table.count(key), 1u) << key << " is not in the key table";
}

// This test ensures parsing the example file yields exactly the defaults.
TEST(mesh_config, example_file_parses_to_defaults) {
  auto cfg = load_mesh_config(example_path);
  ASSERT_TRUE(cfg) << message_of(cfg.error());
  expect_same_config(*cfg, mesh_config{});
}

// This test ensures the example file is the current rendering of the key table.
TEST(mesh_config, example_file_matches_the_table) {
  auto expected = render_example();
  if (update_golden()) write_text(example_path, expected);
  EXPECT_EQ(read_text(example_path), expected)
      << "regenerate with POLYMESH_UPDATE_GOLDEN=1 config_tests";
}

// This test ensures docs/config.md carries the current key table.
TEST(mesh_config, docs_table_matches_the_table) {
  auto text = read_text(docs_path);
  auto begin = text.find(docs_begin);
  auto end = text.find(docs_end);
  ASSERT_NE(begin, std::string::npos) << docs_path << " lacks " << docs_begin;
  ASSERT_NE(end, std::string::npos) << docs_path << " lacks " << docs_end;
  ASSERT_LT(begin, end);
  begin += docs_begin.size();
  auto expected = render_docs_table();
  if (update_golden()) {
    text.replace(begin, end - begin, expected);
    write_text(docs_path, text);
  }
  EXPECT_EQ(text.substr(begin, text.find(docs_end) - begin), expected)
      << "regenerate with POLYMESH_UPDATE_GOLDEN=1 config_tests";
  for (const auto& key : mesh_config_keys())
    EXPECT_NE(text.find("`" + key.key + "`"), std::string::npos) << key.key;
}
