// meshctl agents list / show / label / drain / undrain / remove against a real meshd.
#include "tests/cli/meshctl_harness.hpp"

#include <httplib.h>
#include <sstream>
#include <thread>
#include <yaml-cpp/yaml.h>

namespace polymesh::cli_test {
namespace {

using agents_cmd = meshctl_test;

std::vector<std::string> names_of(const json& body) {
  std::vector<std::string> out;
  for (auto& a : body["agents"])
    out.push_back(a["name"].get<std::string>());
  std::sort(out.begin(), out.end());
  return out;
}

/// The value of `name` in `agents show`'s fields; "" if it has none.
std::string field(const std::string& out, const std::string& name) {
  std::istringstream lines{out};
  for (std::string line; std::getline(lines, line);)
    if (line.rfind(name + ":", 0) == 0) {
      auto at = line.find_first_not_of(' ', name.size() + 1);
      return at == std::string::npos ? std::string{} : line.substr(at);
    }
  return {};
}

// This test ensures `agents list` prints the API's agents as JSON and
// filters them by selector, status and plan.
TEST_F(agents_cmd, list_filters_by_selector_status_and_plan) {
  register_agent("web-1", json{{"env", "prod"}, {"zone", "a"}}, json::array({"deploy"}));
  register_agent("web-2", json{{"env", "dev"}}, json::array({"deploy", "backup"}));

  auto all = ctl({"agents", "list", "-o", "json"});
  ASSERT_EQ(all.code, 0) << all.err;
  EXPECT_EQ(names_of(all.json_out()), (std::vector<std::string>{"web-1", "web-2"}));

  auto prod = ctl({"agents", "list", "-l", "env=prod", "-o", "json"});
  ASSERT_EQ(prod.code, 0) << prod.err;
  auto body = prod.json_out();
  ASSERT_EQ(names_of(body), (std::vector<std::string>{"web-1"}));
  EXPECT_EQ(body["agents"][0]["labels"]["zone"], "a");

  auto backup = ctl({"agents", "list", "--plan", "backup", "-o", "json"});
  EXPECT_EQ(names_of(backup.json_out()), (std::vector<std::string>{"web-2"}));

  auto draining = ctl({"agents", "list", "--status", "draining", "-o", "json"});
  EXPECT_TRUE(draining.json_out()["agents"].empty());

  auto table = ctl({"agents", "list"});
  ASSERT_EQ(table.code, 0) << table.err;
  EXPECT_NE(table.out.find("NAME"), std::string::npos);
  EXPECT_NE(table.out.find("web-1"), std::string::npos);
  EXPECT_NE(table.out.find("env=prod,zone=a"), std::string::npos);
  EXPECT_EQ(table.out.find("\033["), std::string::npos) << "no colour when not a TTY";
}

// This test ensures `agents show` finds an agent by name and prints the API
// object as JSON and as YAML.
TEST_F(agents_cmd, show_by_name_as_json_and_yaml) {
  auto a = register_agent("builder", json{{"arch", "arm64"}}, json::array({"build"}), 3);
  auto j = ctl({"agents", "show", "builder", "-o", "json"});
  ASSERT_EQ(j.code, 0) << j.err;
  auto body = j.json_out();
  EXPECT_EQ(body["id"], a.id);
  EXPECT_EQ(body["capacity"], 3);
  EXPECT_EQ(body["labels"]["arch"], "arm64");

  auto y = ctl({"agents", "show", a.id, "-o", "yaml"});
  ASSERT_EQ(y.code, 0) << y.err;
  auto node = YAML::Load(y.out);
  EXPECT_EQ(node["name"].as<std::string>(), "builder");
  EXPECT_EQ(node["plans"][0].as<std::string>(), "build");

  auto t = ctl({"agents", "show", "builder"});
  ASSERT_EQ(t.code, 0) << t.err;
  EXPECT_NE(t.out.find("arch=arm64"), std::string::npos);

  // A name no agent can have fails before anything is sent.
  for (auto verb : {"show", "drain", "remove"}) {
    auto bad = ctl({"agents", verb, "bad/name"});
    EXPECT_EQ(bad.code, 64) << verb << ": " << bad.err;
    EXPECT_NE(bad.err.find("agent name may contain only"), std::string::npos) << bad.err;
  }
  EXPECT_EQ(call(port, "GET", "/v1/agents/builder", admin).body["status"], "online");
}

// This test ensures `agents label` sets and removes labels while keeping the
// others, and refuses bad keys and unknown removals without changing anything.
TEST_F(agents_cmd, label_sets_and_removes_keeping_the_rest) {
  register_agent("db-1", json{{"env", "prod"}, {"disk", "ssd"}, {"old", "x"}});
  auto r =
      ctl({"agents", "label", "db-1", "tier=gold", "env=staging", "old-", "-o", "json"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.json_out()["labels"],
            (json{{"env", "staging"}, {"disk", "ssd"}, {"tier", "gold"}}));
  auto now = call(port, "GET", "/v1/agents/db-1", admin).body;
  EXPECT_EQ(now["labels"], (json{{"env", "staging"}, {"disk", "ssd"}, {"tier", "gold"}}));

  // Removing a label the agent lacks depends on the agent: a refusal (3),
  // not a usage error (64 means nothing was sent).
  auto missing = ctl({"agents", "label", "db-1", "nope-"});
  EXPECT_EQ(missing.code, 3);
  EXPECT_NE(missing.err.find("'nope' is not set"), std::string::npos) << missing.err;
  auto bad_removal = ctl({"agents", "label", "no-such-agent", "Bad Key-"});
  EXPECT_EQ(bad_removal.code, 64) << "checked before the agent is looked up";
  EXPECT_NE(bad_removal.err.find("labels.Bad Key"), std::string::npos) << bad_removal.err;

  auto bad = ctl({"agents", "label", "db-1", "--", "-bad=1"});
  EXPECT_EQ(bad.code, 64);
  EXPECT_NE(bad.err.find("labels.-bad"), std::string::npos) << bad.err;
  auto bad_value = ctl({"agents", "label", "db-1", "ok=not valid"});
  EXPECT_EQ(bad_value.code, 64);
  EXPECT_NE(bad_value.err.find("labels.ok"), std::string::npos) << bad_value.err;
  EXPECT_EQ(call(port, "GET", "/v1/agents/db-1", admin).body["labels"], now["labels"]);
}

// This test ensures edits of one agent's labels made at once each keep the
// others': `agents label` reads, edits and writes back all the labels, and
// two at once wrote over each other (2 of 15 edits lost in an audit). Now
// each writes on the condition that the labels are what it read, and reads
// again when they are not; of 8 at once, each fails at most 7 times.
TEST_F(agents_cmd, label_edits_at_once_are_each_kept) {
  register_agent("busy", json{{"env", "prod"}});
  std::vector<std::unique_ptr<meshctl_process>> edits;
  for (int i = 0; i < 8; ++i)
    edits.push_back(
        ctl_async({"agents", "label", "busy", "k" + std::to_string(i) + "=v"}));
  for (auto& e : edits) {
    auto done = e->wait();
    EXPECT_EQ(done.code, 0) << done.err;
  }
  json want{{"env", "prod"}};
  for (int i = 0; i < 8; ++i)
    want["k" + std::to_string(i)] = "v";
  EXPECT_EQ(call(port, "GET", "/v1/agents/busy", admin).body["labels"], want);
}

// This test ensures `agents drain` stops new assignments, `agents undrain`
// lifts that, and `agents remove` deregisters the agent, all addressed by name.
TEST_F(agents_cmd, drain_then_remove) {
  register_agent("old-box", json::object());
  auto d = ctl({"agents", "drain", "old-box", "-o", "json"});
  ASSERT_EQ(d.code, 0) << d.err;
  EXPECT_EQ(d.json_out()["status"], "draining");
  auto dt = ctl({"agents", "drain", "old-box"});
  EXPECT_NE(dt.out.find("draining"), std::string::npos);
  auto shown = ctl({"agents", "show", "old-box"});
  ASSERT_EQ(shown.code, 0) << shown.err;
  EXPECT_NE(shown.out.find("drained"), std::string::npos) << shown.out;
  EXPECT_NE(shown.out.find("yes"), std::string::npos) << shown.out;
  EXPECT_EQ(ctl({"agents", "show", "old-box", "-o", "json"}).json_out()["drained"], true);
  auto u = ctl({"agents", "undrain", "old-box"});
  ASSERT_EQ(u.code, 0) << u.err;
  EXPECT_EQ(u.out, "agent old-box is online\n");
  EXPECT_EQ(call(port, "GET", "/v1/agents/old-box", admin).body["status"], "online");
  EXPECT_EQ(call(port, "GET", "/v1/agents/old-box", admin).body["drained"], false);

  auto rm = ctl({"agents", "remove", "old-box"});
  ASSERT_EQ(rm.code, 0) << rm.err;
  EXPECT_NE(rm.out.find("removed"), std::string::npos);
  EXPECT_EQ(call(port, "GET", "/v1/agents/old-box", admin).body["status"],
            "deregistered");
}

// This test ensures `agents list` and `agents show` say when the mesh holds
// an agent back (runs placed with it were not started) and how many lapsed
// in a row. The hold is timed by meshd (tests/mesh/http/timers_test.cpp); here
// a proxy puts it into meshd's answers for one agent.
TEST_F(agents_cmd, list_and_show_say_an_agent_is_held_back) {
  register_agent("stuck", json::object());
  register_agent("fine", json::object());
  register_agent("late", json::object());
  httplib::Server proxy;
  proxy.Get(R"(/.*)", [&](const httplib::Request& req, httplib::Response& res) {
    httplib::Client mesh{"127.0.0.1", port};
    auto r = mesh.Get(
        req.target,
        httplib::Headers{{"Authorization", req.get_header_value("Authorization")}});
    if (!r) {
      res.status = 502;
      return;
    }
    auto body = json::parse(r->body);
    auto edit = [](json& a) {
      if (a["name"] == "stuck") {
        a["lapsed_leases"] = 3;
        a["held_until"] = "2026-12-07T18:30:00.000Z";
      } else if (a["name"] == "late") {
        a["lapsed_leases"] = 1;
      }
    };
    if (body.contains("agents"))
      for (auto& a : body["agents"])
        edit(a);
    else
      edit(body);
    res.status = r->status;
    res.set_content(body.dump(), "application/json");
  });
  auto proxy_port = proxy.bind_to_any_port("127.0.0.1");
  std::thread serving{[&] { proxy.listen_after_bind(); }};
  auto via = [&](std::vector<std::string> args) {
    std::vector<std::string> all{
        "--mesh", "http://127.0.0.1:" + std::to_string(proxy_port), "--token", admin};
    all.insert(all.end(), args.begin(), args.end());
    return ctl_raw(all);
  };
  auto list = via({"agents", "list"});
  auto stuck = via({"agents", "show", "stuck"});
  auto fine = via({"agents", "show", "fine"});
  auto late = via({"agents", "show", "late"});
  proxy.stop();
  serving.join();
  ASSERT_EQ(list.code, 0) << list.err;
  std::istringstream lines{list.out};
  int seen = 0;
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind("stuck", 0) == 0) {
      EXPECT_NE(line.find("online (held back)"), std::string::npos) << line;
      ++seen;
    }
    if (line.rfind("fine", 0) == 0 || line.rfind("late", 0) == 0) {
      EXPECT_EQ(line.find("held"), std::string::npos) << line;
      ++seen;
    }
  }
  EXPECT_EQ(seen, 3) << list.out;
  ASSERT_EQ(stuck.code, 0) << stuck.err;
  EXPECT_EQ(field(stuck.out, "held back"),
            "until 2026-12-07T18:30:00.000Z  (3 runs in a row not started within the "
            "delivery lease)")
      << stuck.out;
  EXPECT_EQ(field(fine.out, "held back"), "no") << fine.out;
  EXPECT_EQ(field(late.out, "held back"),
            "no (1 run in a row not started within the delivery lease)")
      << late.out;
}

/// A mesh that takes an agent for offline after 1.5 s of silence.
class agents_offline_cmd : public meshctl_test {
protected:
  [[nodiscard]] std::string meshd_config_yaml() const override {
    return "agents: {offline_after: 1500ms, poll_wait_max: 1s, heartbeat_interval: 1s}\n";
  }
};

// This test ensures `agents list` marks an offline agent that was drained,
// which comes back draining, apart from one that comes back online.
TEST_F(agents_offline_cmd, list_marks_an_offline_agent_that_was_drained) {
  register_agent("gone-1", json::object());
  register_agent("gone-2", json::object());
  ASSERT_TRUE(eventually([&] {
    auto all = call(port, "GET", "/v1/agents?status=offline", admin).body["agents"];
    return all.size() == 2;
  }));
  ASSERT_EQ(ctl({"agents", "drain", "gone-1"}).code, 0);
  auto list = ctl({"agents", "list"});
  ASSERT_EQ(list.code, 0) << list.err;
  std::istringstream lines{list.out};
  std::string line;
  int seen = 0;
  while (std::getline(lines, line)) {
    if (line.rfind("gone-1", 0) == 0) {
      EXPECT_NE(line.find("offline (drained)"), std::string::npos) << line;
      ++seen;
    }
    if (line.rfind("gone-2", 0) == 0) {
      EXPECT_NE(line.find("offline"), std::string::npos) << line;
      EXPECT_EQ(line.find("drained"), std::string::npos) << line;
      ++seen;
    }
  }
  EXPECT_EQ(seen, 2) << list.out;
}

} // namespace
} // namespace polymesh::cli_test
