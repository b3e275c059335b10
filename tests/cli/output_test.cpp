// meshctl's output on a terminal: colour and the progress spinner appear only
// on a TTY and go away with --no-color / NO_COLOR; YAML keeps string types.
#include "tests/cli/meshctl_harness.hpp"

#include <map>
#include <yaml-cpp/yaml.h>

namespace polymesh::cli_test {
namespace {

using output_cmd = meshctl_test;

// This test ensures tables are coloured on a TTY, and not with --no-color,
// with NO_COLOR, or when stdout is a pipe.
TEST_F(output_cmd, colour_only_on_a_tty_unless_disabled) {
  register_agent("bright", json::object());
  auto tty = ctl_async({"agents", "list"}, true)->wait();
  ASSERT_EQ(tty.code, 0) << tty.out;
  EXPECT_NE(tty.out.find("\033[32monline\033[0m"), std::string::npos) << tty.out;

  auto flag = ctl_async({"--no-color", "agents", "list"}, true)->wait();
  EXPECT_EQ(flag.out.find("\033["), std::string::npos) << flag.out;
  auto env = ctl_async({"agents", "list"}, true, {"NO_COLOR=1"})->wait();
  EXPECT_EQ(env.out.find("\033["), std::string::npos) << env.out;
  EXPECT_NE(env.out.find("bright"), std::string::npos);
  auto pipe = ctl({"agents", "list"});
  EXPECT_EQ(pipe.out.find("\033["), std::string::npos) << pipe.out;
}

// This test ensures a wait on a TTY shows a spinner line naming the run and
// erases it when the run ends, while a wait on a pipe prints no progress.
TEST_F(output_cmd, spinner_only_on_a_tty) {
  auto id = submit(json{{"plan", "nobody-offers-this"}});
  auto waiting = ctl_async({"runs", "wait", id}, true);
  ASSERT_TRUE(waiting->wait_for_out("run " + id + " created")) << waiting->out();
  ASSERT_EQ(call(port, "POST", "/v1/runs/" + id + "/cancel", admin).status, 200);
  auto o = waiting->wait();
  EXPECT_EQ(o.code, 2) << o.out;
  EXPECT_NE(o.out.find("\r\033[2K"), std::string::npos) << "the spinner line is erased";

  auto piped = ctl({"runs", "wait", id});
  EXPECT_EQ(piped.code, 2);
  EXPECT_EQ(piped.err.find('\r'), std::string::npos) << piped.err;
}

// This test ensures -o yaml quotes strings that YAML would read as another
// type, so a parameter "1" stays a string.
TEST_F(output_cmd, yaml_keeps_strings_strings) {
  auto r = ctl({"runs", "submit", "noop", "--param", "n=1", "--param", "flag=yes",
                "--param", "count:=2", "-o", "yaml"});
  ASSERT_EQ(r.code, 0) << r.err;
  auto node = YAML::Load(r.out);
  EXPECT_EQ(node["params"]["n"].Tag(), "!") << r.out;
  EXPECT_EQ(node["params"]["n"].as<std::string>(), "1");
  EXPECT_EQ(node["params"]["flag"].Tag(), "!") << r.out;
  EXPECT_EQ(node["params"]["count"].as<int>(), 2);
  EXPECT_EQ(node["payload"].as<std::string>(), "");
}

// This test ensures -o yaml writes U+0085, U+2028, U+2029 and DEL in a
// string, key or value, as escapes in double quotes: written as they were,
// YAML reads the first three as line breaks and refuses DEL, so the text read
// back was another.
TEST_F(output_cmd, yaml_escapes_unicode_line_breaks_and_del) {
  const std::map<std::string, std::string> odd{{"nel", "a\u0085b"},
                                               {"ls", "a\u2028b"},
                                               {"ps", "a\u2029b"},
                                               {"del", "a\x7f"
                                                       "b"}};
  json params = json::object();
  for (auto& [name, text] : odd) {
    params[name] = text;
    params["key " + text] = "ok";
  }
  // After the escaped ones (keys are sorted): the next string is written as is.
  params["zz_accent"] = "caf\u00e9";
  auto id = submit(json{{"plan", "noop"}, {"params", params}, {"payload", "p\u2028q"}});
  auto r = ctl({"runs", "show", id, "-o", "yaml"});
  ASSERT_EQ(r.code, 0) << r.err;
  for (auto raw : {"\u0085", "\u2028", "\u2029", "\x7f"})
    EXPECT_EQ(r.out.find(raw), std::string::npos) << r.out;
  for (auto escaped :
       {R"(nel: "a\x85b")", R"(ls: "a\u2028b")", R"(ps: "a\u2029b")", R"(del: "a\x7fb")",
        R"("key a\u2028b": ok)", R"(payload: "p\u2028q")", "zz_accent: caf\u00e9"})
    EXPECT_NE(r.out.find(escaped), std::string::npos) << escaped << "\n" << r.out;
  auto node = YAML::Load(r.out);
  for (auto& [name, text] : odd) {
    EXPECT_EQ(node["params"][name].as<std::string>(), text) << name;
    EXPECT_EQ(node["params"]["key " + text].as<std::string>(), "ok") << name;
  }
  EXPECT_EQ(node["payload"].as<std::string>(), "p\u2028q");
}

// This test ensures `runs show` writes the Unicode line separators and the
// bidirectional controls of a payload as escapes: written as they were, a
// payload could show its words in another order ("Trojan Source") or break
// its line where none is.
TEST_F(output_cmd, show_escapes_bidirectional_controls_and_line_separators) {
  auto id = submit(json{{"plan", "noop"},
                        {"payload", "rm\u202e-rf\u2028x\u2066y\u200fz \u00e9\u2014"}});
  auto r = ctl({"runs", "show", id});
  ASSERT_EQ(r.code, 0) << r.err;
  for (auto raw : {"\u202e", "\u2028", "\u2066", "\u200f"})
    EXPECT_EQ(r.out.find(raw), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(R"(rm\u202e-rf\u2028x\u2066y\u200fz)"
                       " \u00e9\u2014"),
            std::string::npos)
      << r.out;
}

// This test ensures a value of several lines in a `key: value` block (a
// run's result) keeps to the value column instead of breaking the block.
TEST_F(output_cmd, a_value_of_several_lines_keeps_to_its_column) {
  auto agent = register_agent("worker", json::object(), json::array({"build"}));
  auto id = submit(json{{"plan", "build"}});
  ASSERT_TRUE(agent.take().is_object());
  ASSERT_EQ(agent.start(id).status, 200);
  ASSERT_EQ(agent.finish(id, "success", 0, "line one\nline two\n").status, 200);
  auto shown = ctl({"runs", "show", id});
  ASSERT_EQ(shown.code, 0) << shown.err;
  auto at = shown.out.find("result:");
  ASSERT_NE(at, std::string::npos) << shown.out;
  auto column = shown.out.find("line one", at) - shown.out.rfind('\n', at) - 1;
  EXPECT_NE(shown.out.find("line one\n" + std::string(column, ' ') + "line two\nerror:"),
            std::string::npos)
      << shown.out;
}

} // namespace
} // namespace polymesh::cli_test
