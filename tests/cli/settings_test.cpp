// Where meshctl's settings come from: flags, MESH_* environment, config file.
#include "tests/cli/meshctl_harness.hpp"
#include "tests/support/tls_cert.hpp"

#include <fstream>
#include <httplib.h>
#include <memory>
#include <sys/stat.h>
#include <thread>

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
  EXPECT_EQ(flag_wins.code, 3);
  EXPECT_NE(flag_wins.err.find("not authenticated"), std::string::npos) << flag_wins.err;

  {
    std::ofstream f{dir + "/other.yaml"};
    f << "mesh: " << url << "\ncolour: true\n";
  }
  auto unknown = ctl_raw({"--config", dir + "/other.yaml", "status"});
  EXPECT_EQ(unknown.code, 64);
  EXPECT_NE(unknown.err.find("'colour' is unknown"), std::string::npos) << unknown.err;

  // An empty value was the text "null" (sent as the token), an empty text
  // meant no token, and a key given twice kept its last value.
  for (const auto* value : {"", " ~", " null", " \"\"", " ''"}) {
    SCOPED_TRACE(value);
    {
      std::ofstream f{dir + "/empty.yaml"};
      f << "mesh: " << url << "\ntoken:" << value << "\n";
    }
    auto empty = ctl_raw({"--config", dir + "/empty.yaml", "status"});
    EXPECT_EQ(empty.code, 64) << empty.err;
    EXPECT_NE(empty.err.find("key 'token' has no value"), std::string::npos) << empty.err;
  }
  {
    std::ofstream f{dir + "/twice.yaml"};
    f << "mesh: http://127.0.0.1:1\nmesh: " << url << "\ntoken: " << admin << "\n";
  }
  auto twice = ctl_raw({"--config", dir + "/twice.yaml", "status"});
  EXPECT_EQ(twice.code, 64) << twice.err;
  EXPECT_NE(twice.err.find("key 'mesh' is given twice"), std::string::npos) << twice.err;
  {
    std::ofstream f{dir + "/quoted.yaml"};
    f << "mesh: " << url << "\ntoken: \"" << admin << "\"\n";
  }
  EXPECT_EQ(ctl_raw({"--config", dir + "/quoted.yaml", "status"}).code, 0);
}

// This test ensures a token can come from a file (--token-file or
// MESH_TOKEN_FILE), so it shows neither in `ps` nor in shell history, with
// whitespace around it ignored; a file other users can read is warned of;
// both flags at once, an empty file and a missing file are usage errors
// that name the flag, the file and why.
TEST_F(settings_cmd, token_from_a_file) {
  auto token_file = dir + "/admin.token";
  {
    std::ofstream f{token_file};
    f << "  " << admin << "\n";
  }
  ASSERT_EQ(::chmod(token_file.c_str(), 0644), 0);
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
  EXPECT_NE(flag.err.find("meshctl: warning: token file " + token_file +
                          " is readable by every user (mode 0644); chmod 600 it"),
            std::string::npos)
      << flag.err;
  ASSERT_EQ(::chmod(token_file.c_str(), 0600), 0);
  auto private_file =
      ctl_raw({"--mesh", url, "--token-file", token_file, "status", "-o", "json"});
  ASSERT_EQ(private_file.code, 0) << private_file.err;
  EXPECT_EQ(private_file.err, "");
  auto missing = ctl_raw({"--mesh", url, "--token-file", dir + "/nope", "status"});
  EXPECT_EQ(missing.code, 64);
  EXPECT_NE(missing.err.find("--token-file: cannot read token file " + dir +
                             "/nope: No such file or directory"),
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

// This test ensures a token with a line break or a control character
// inside (a token file with a second line or a comment) is refused naming where it came
// from, and nothing is sent: sent as it is, `\nX-Evil: 1` started a header of its own. A
// file's trailing newline and blanks around its token stay fine.
TEST_F(settings_cmd, a_token_with_whitespace_or_control_characters_is_refused) {
  auto write = [&](const std::string& name, const std::string& text) {
    auto path = dir + "/" + name;
    std::ofstream{path} << text;
    EXPECT_EQ(::chmod(path.c_str(), 0600), 0);
    return path;
  };
  auto injected = write("injected.token", admin + "\nX-Evil: 1\n");
  auto commented = write("commented.token", "# the admin token\n" + admin + "\n");
  auto config = write("token.yaml", "token: \"" + admin + "\\nx\"\n");
  struct refused {
    std::vector<std::string> args;
    std::vector<std::string> env;
    std::string names;
  };
  for (const auto& r : std::vector<refused>{
           {{"--token-file", injected}, {}, "--token-file " + injected + ": "},
           {{}, {"MESH_TOKEN_FILE=" + commented}, "MESH_TOKEN_FILE " + commented + ": "},
           {{"--token", admin + "\r"}, {}, "--token: the token holds a line break"},
           {{},
            {"MESH_TOKEN=" + admin + "\x1b[2J"},
            "MESH_TOKEN: the token holds a "
            "control character"},
           {{"--config", config}, {}, "config file " + config + ": key 'token': "}}) {
    SCOPED_TRACE(r.names);
    auto args = r.args;
    for (const auto* word : {"--mesh", url.c_str(), "runs", "submit", "noop"})
      args.emplace_back(word);
    auto o = ctl_raw(args, r.env);
    EXPECT_EQ(o.code, 64) << o.err;
    EXPECT_NE(o.err.find(r.names), std::string::npos) << o.err;
    EXPECT_NE(o.err.find("nothing was sent"), std::string::npos) << o.err;
    EXPECT_EQ(o.err.find(admin), std::string::npos) << "the token is shown: " << o.err;
  }
  EXPECT_NE(ctl_raw({"--token-file", commented, "--mesh", url, "status"})
                .err.find("the token holds a line break (a comment, or a second line?)"),
            std::string::npos);
  EXPECT_EQ(call(port, "GET", "/v1/runs", admin).body["runs"].size(), 0u);

  auto padded = write("padded.token", " \t" + admin + " \r\n");
  auto ok = ctl_raw({"--token-file", padded, "--mesh", url, "status", "-o", "json"});
  ASSERT_EQ(ok.code, 0) << ok.err;
  EXPECT_EQ(ok.json_out()["status"], "ready");
}

/// A reverse proxy on 127.0.0.1:0 that serves meshd under `/polymesh` and
/// answers 404 for every other path, as a proxy in front of a mesh would;
/// over TLS with `tls`'s certificate when given.
class prefix_proxy {
public:
  explicit prefix_proxy(int mesh_port, const test::tls_files* tls = nullptr)
      : mesh_port_(mesh_port) {
    if (tls)
      svr_ = std::make_unique<httplib::SSLServer>(tls->cert.c_str(), tls->key.c_str());
    else
      svr_ = std::make_unique<httplib::Server>();
    auto forward = [this](const httplib::Request& req, httplib::Response& res) {
      httplib::Client mesh{"127.0.0.1", mesh_port_};
      httplib::Headers headers;
      if (req.has_header("Authorization"))
        headers.emplace("Authorization", req.get_header_value("Authorization"));
      auto path = req.target.substr(std::string{"/polymesh"}.size());
      httplib::Result r{nullptr, httplib::Error::Unknown};
      if (req.method == "GET")
        r = mesh.Get(path, headers);
      else if (req.method == "POST")
        r = mesh.Post(path, headers, req.body, "application/json");
      else if (req.method == "PATCH")
        r = mesh.Patch(path, headers, req.body, "application/json");
      else
        r = mesh.Delete(path, headers);
      if (!r) {
        res.status = 502;
        return;
      }
      res.status = r->status;
      res.set_content(r->body, "application/json");
    };
    const char* route = R"(/polymesh/.*)";
    svr_->Get(route, forward);
    svr_->Post(route, forward);
    svr_->Patch(route, forward);
    svr_->Delete(route, forward);
    port_ = svr_->bind_to_any_port("127.0.0.1");
    // Bound and listening already: connections wait in the backlog until
    // the thread accepts them.
    thread_ = std::thread{[this] { svr_->listen_after_bind(); }};
  }
  ~prefix_proxy() {
    svr_->stop();
    thread_.join();
  }
  [[nodiscard]] int port() const { return port_; }

private:
  int mesh_port_;
  int port_ = 0;
  std::unique_ptr<httplib::Server> svr_;
  std::thread thread_;
};

// This test ensures a mesh URL may carry a path (a reverse proxy's prefix)
// that every request goes under, while a query or fragment in it, or no
// host, is a usage error.
TEST_F(settings_cmd, a_mesh_url_with_a_path_prefix_reaches_the_mesh_behind_a_proxy) {
  prefix_proxy proxy{port};
  auto base = "http://127.0.0.1:" + std::to_string(proxy.port());
  for (const auto& mesh : {base + "/polymesh", base + "/polymesh/"}) {
    auto status = ctl_raw({"--mesh", mesh, "--token", admin, "status", "-o", "json"});
    ASSERT_EQ(status.code, 0) << mesh << ": " << status.err;
    EXPECT_EQ(status.json_out()["status"], "ready");
  }
  auto sub = ctl_raw({"--mesh", base + "/polymesh", "--token", admin, "runs", "submit",
                      "noop", "-o", "json"});
  ASSERT_EQ(sub.code, 0) << sub.err;
  EXPECT_EQ(get_run(sub.json_out()["id"].get<std::string>())["status"], "created");
  // Without the prefix the proxy has nothing there.
  auto bare = ctl_raw({"--mesh", base, "--token", admin, "status"});
  EXPECT_EQ(bare.code, 3);
  EXPECT_NE(bare.err.find("is " + base + " the mesh's URL? check --mesh"),
            std::string::npos)
      << bare.err;

  for (const auto& bad : {base + "/polymesh?x=1", base + "/polymesh#top"}) {
    auto r = ctl_raw({"--mesh", bad, "--token", admin, "status"});
    EXPECT_EQ(r.code, 64) << bad;
    EXPECT_NE(r.err.find("without a query or fragment"), std::string::npos) << r.err;
  }
  auto no_host = ctl_raw({"--mesh", "http:///polymesh", "--token", admin, "status"});
  EXPECT_EQ(no_host.code, 64);
  EXPECT_NE(no_host.err.find("has no host"), std::string::npos) << no_host.err;
  // Each refused before any request, naming what is wrong with the URL as
  // given (not as trimmed).
  for (const auto& [bad, says] : std::vector<std::pair<std::string, std::string>>{
           {"http://", "has no host, got 'http://'"},
           {"http://:" + std::to_string(port), "has no host"},
           {"http://127.0.0.1 x", "host has a space in it, got 'http://127.0.0.1 x'"},
           {"http://user:pw@127.0.0.1:" + std::to_string(port), "never in the URL"},
           {"http://::1:" + std::to_string(port), "an IPv6 address goes in brackets"},
           {"http://127.0.0.1:0", "port must be 1 to 65535, got '0'"},
           {"http://127.0.0.1:65536", "port must be 1 to 65535, got '65536'"},
           {"http://127.0.0.1:http", "port must be 1 to 65535, got 'http'"}}) {
    auto r = ctl_raw({"--mesh", bad, "--token", admin, "status"});
    EXPECT_EQ(r.code, 64) << bad << ": " << r.err;
    EXPECT_NE(r.err.find(says), std::string::npos) << bad << ": " << r.err;
    EXPECT_EQ(r.err.find("pw@"), std::string::npos) << "a password quoted: " << r.err;
  }
  auto v6 = ctl_raw(
      {"--mesh", "http://[::1]:" + std::to_string(port), "--token", admin, "status"});
  EXPECT_NE(v6.code, 64) << v6.err; // a bracketed IPv6 host is a host
}

// This test ensures an https mesh signed by a private CA is reached with
// that CA from --ca-file, MESH_CA_FILE or the config file's ca_file, and
// that without it meshctl says the certificate is not trusted and how to
// trust it; an unreadable CA file is a usage error.
TEST_F(settings_cmd, an_https_mesh_is_trusted_through_a_ca_file) {
  auto tls = test::write_self_signed_cert(dir);
  prefix_proxy proxy{port, &tls};
  auto mesh = "https://127.0.0.1:" + std::to_string(proxy.port()) + "/polymesh";
  auto untrusted = ctl_raw({"--mesh", mesh, "--token", admin, "status"});
  EXPECT_EQ(untrusted.code, 69) << untrusted.err;
  EXPECT_NE(untrusted.err.find("certificate is not trusted"), std::string::npos)
      << untrusted.err;
  EXPECT_NE(untrusted.err.find("--ca-file"), std::string::npos) << untrusted.err;
  EXPECT_NE(untrusted.err.find("then update-ca-certificates)"), std::string::npos)
      << untrusted.err;

  auto flag = ctl_raw(
      {"--mesh", mesh, "--token", admin, "--ca-file", tls.cert, "status", "-o", "json"});
  ASSERT_EQ(flag.code, 0) << flag.err;
  EXPECT_EQ(flag.json_out()["status"], "ready");
  auto env = ctl_raw({"status", "-o", "json"}, {"MESH_URL=" + mesh, "MESH_TOKEN=" + admin,
                                                "MESH_CA_FILE=" + tls.cert});
  ASSERT_EQ(env.code, 0) << env.err;
  {
    std::ofstream f{dir + "/tls.yaml"};
    f << "mesh: " << mesh << "\ntoken: " << admin << "\nca_file: " << tls.cert << "\n";
  }
  auto file = ctl_raw({"--config", dir + "/tls.yaml", "status"});
  ASSERT_EQ(file.code, 0) << file.err;

  auto missing = ctl_raw({"--mesh", mesh, "--ca-file", dir + "/nope.pem", "status"});
  EXPECT_EQ(missing.code, 64);
  EXPECT_NE(missing.err.find("--ca-file: cannot read CA file " + dir + "/nope.pem"),
            std::string::npos)
      << missing.err;
}

} // namespace
} // namespace polymesh::cli_test
