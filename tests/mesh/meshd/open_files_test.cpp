// meshd under a limit on open files: it raises its soft limit to the hard
// one, warns when that is short of its threads, and answers a connection it
// has no file for 503 instead of hanging every new client.
#include "mesh/http/open_files.hpp"
#include "tests/support/mesh_fixture.hpp"
#include "tests/support/meshd_process.hpp"

#include <climits>
#include <fstream>
#include <sys/socket.h>
#include <unistd.h>

namespace polymesh::test {
namespace {

constexpr const char* admin = "open-files-test-admin-token-0123456789";

std::string file_text(const std::string& path) {
  std::ifstream in{path};
  return {std::istreambuf_iterator<char>{in}, std::istreambuf_iterator<char>{}};
}

/// Sends a GET of /healthz on `fd` and reads one whole answer (its head and
/// Content-Length bytes); what arrived before the server closed or 10 s
/// passed otherwise.
std::string healthz_on(int fd) {
  const std::string request = "GET /healthz HTTP/1.1\r\nHost: mesh\r\n\r\n";
  if (::send(fd, request.data(), request.size(), MSG_NOSIGNAL) !=
      static_cast<ssize_t>(request.size()))
    return "send failed";
  std::string out;
  char buf[4096];
  for (;;) {
    auto end = out.find("\r\n\r\n");
    if (end != std::string::npos) {
      auto at = out.find("Content-Length: ");
      if (at != std::string::npos && at < end &&
          out.size() >= end + 4 + std::stoul(out.substr(at + 16)))
        return out;
    }
    auto n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) return out;
    out.append(buf, static_cast<size_t>(n));
  }
}

// This test ensures the descriptor from which connections are refused keeps
// meshd's reserve below the limit, and refuses none without a limit.
TEST(open_files, connections_are_refused_short_of_the_limit_by_the_reserve) {
  EXPECT_EQ(refuse_connections_from(0), INT_MAX);
  EXPECT_EQ(refuse_connections_from(UINT64_MAX), INT_MAX);
  EXPECT_EQ(refuse_connections_from(1024), 1024 - int{open_files_reserve});
  EXPECT_EQ(refuse_connections_from(100), 50);
  EXPECT_EQ(open_files_shortfall(1024, 80), "");
  EXPECT_EQ(open_files_shortfall(80 + open_files_reserve, 80), "");
  auto why = open_files_shortfall(128, 216);
  EXPECT_NE(why.find("the limit is 128 (ulimit -n; LimitNOFILE= under systemd), below "
                     "the 280 that 216 connections"),
            std::string::npos)
      << why;
  EXPECT_NE(why.find("fewer than 64 connections are served at once, the others "
                     "answered 503"),
            std::string::npos)
      << why;
}

// This test ensures a meshd at its limit on open files answers a new
// connection 503 with Retry-After, naming the limit, says so in its log, and
// serves again once connections close. cpp-httplib's accept loop retried
// every millisecond at EMFILE without a word: every new client, /healthz
// too, waited unanswered while meshd logged nothing.
TEST(open_files, a_mesh_at_its_limit_answers_503_and_serves_again) {
  auto dir = make_temp_dir();
  // Threads enough for every connection: files run out first.
  std::ofstream{dir + "/mesh.yaml"}
      << "http:\n  threads: 200\n  keep_alive_timeout: 1h\n";
  auto log = dir + "/meshd.log";
  meshd_process mesh{MESHD_PATH, dir + "/data",
                     admin,      {"--config", dir + "/mesh.yaml"},
                     log,        nofile_limit{128, 128}};
  EXPECT_NE(file_text(log).find("warn open files: the limit is 128 "), std::string::npos)
      << file_text(log);

  std::vector<int> held;
  std::string refused;
  for (int i = 0; i < 200 && refused.empty(); ++i) {
    int fd = connect_local(mesh.port());
    ASSERT_GE(fd, 0);
    auto answer = healthz_on(fd);
    if (answer.rfind("HTTP/1.1 200", 0) == 0) {
      held.push_back(fd); // kept open: meshd keeps its end, a file
      continue;
    }
    ::close(fd);
    ASSERT_EQ(answer.rfind("HTTP/1.1 503 Service Unavailable\r\n", 0), 0u)
        << "connection " << i << " was answered neither 200 nor 503: '" << answer << "'";
    refused = answer;
  }
  EXPECT_LT(held.size(), 128u);
  EXPECT_NE(refused.find("Retry-After: 1\r\n"), std::string::npos) << refused;
  EXPECT_NE(refused.find("\"code\":\"unavailable\""), std::string::npos) << refused;
  EXPECT_NE(refused.find("out of open files for connections"), std::string::npos)
      << refused;
  EXPECT_NE(refused.find("of its limit of 128, 64 kept for its store"), std::string::npos)
      << refused;
  EXPECT_NE(file_text(log).find("warn http: a connection was refused (503): meshd holds "
                                "at least "),
            std::string::npos)
      << file_text(log);

  for (int fd : held)
    ::close(fd);
  EXPECT_TRUE(eventually([&] {
    return call(mesh.port(), "GET", "/healthz").status == 200;
  })) << "meshd did not serve again once the connections closed";
  EXPECT_NE(file_text(log).find("info http: connections are served again, after "),
            std::string::npos)
      << file_text(log);
  remove_tree(dir);
}

// This test ensures meshd raises its soft limit on open files to the hard
// one (a shell's 1,024 held it to about a thousand agents) and, with enough
// for its threads, warns of nothing.
TEST(open_files, a_start_raises_the_soft_limit_to_the_hard_one) {
  auto dir = make_temp_dir();
  auto log = dir + "/meshd.log";
  meshd_process mesh{MESHD_PATH, dir + "/data", admin, {}, log, nofile_limit{128, 4096}};
  auto limits = file_text("/proc/" + std::to_string(mesh.pid()) + "/limits");
  auto line = limits.substr(limits.find("Max open files"));
  line = line.substr(0, line.find('\n'));
  EXPECT_NE(line.find(" 4096                 4096 "), std::string::npos) << line;
  EXPECT_EQ(file_text(log).find("open files"), std::string::npos) << file_text(log);
  remove_tree(dir);
}

} // namespace
} // namespace polymesh::test
