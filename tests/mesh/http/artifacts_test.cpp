// Artifact endpoints over real HTTP: upload by the assigned agent only,
// byte-identical download, idempotent repeats, names, limits, and what
// survives a restart.
#include "mesh/domain/error.hpp"
#include "mesh/domain/ids.hpp"
#include "mesh/domain/log.hpp"
#include "tests/support/mesh_fixture.hpp"
#include "tests/support/varied_bytes.hpp"

#include <future>
#include <httplib.h>
#include <mutex>
#include <string>
#include <sys/socket.h>
#include <thread>
#include <unistd.h>

namespace polymesh::test {
namespace {

using namespace std::string_literals;
using namespace std::chrono_literals;

class slow_download;

class artifacts : public mesh_fixture {
protected:
  /// A new agent's run with a 16 MiB artifact `big.bin`, whose bytes go to
  /// `bytes`, and a slow download of it begun (its first bytes read).
  std::unique_ptr<slow_download> begin_big_download(std::string& bytes);

  /// A run of plan noop held (started) by `agent`; returns its id.
  std::string running_run(const scripted_agent& agent) {
    auto sub = submit(json{{"plan", "noop"}});
    EXPECT_EQ(sub.status, 201) << sub.raw;
    auto id = sub.body.value("id", "");
    EXPECT_EQ(agent.take(1).size(), 1u);
    EXPECT_EQ(agent.start(id).status, 200);
    return id;
  }

  response list(const std::string& run_id, const std::string& token = {}) {
    return call("GET", "/v1/runs/" + run_id + "/artifacts",
                token.empty() ? admin : token);
  }

  response download(const std::string& run_id, const std::string& name) {
    return call("GET", "/v1/runs/" + run_id + "/artifacts/" + name, admin);
  }

  /// Collects the lines logged at `level` from now until the test ends.
  void collect_warnings(log_level wanted = log_level::warn) {
    set_log_handler([this, wanted](log_level level, const std::string& text) {
      std::lock_guard<std::mutex> guard{mtx_};
      if (level == wanted) warnings_.push_back(text);
    });
  }
  std::vector<std::string> warnings() {
    std::lock_guard<std::mutex> guard{mtx_};
    return warnings_;
  }
  void TearDown() override {
    mesh_fixture::TearDown();
    set_log_handler(nullptr);
  }

private:
  std::mutex mtx_;
  std::vector<std::string> warnings_;
};

/// Every byte value, NULs included, twice over.
std::string binary_bytes() {
  std::string out;
  for (int round = 0; round < 2; ++round)
    for (int b = 0; b < 256; ++b)
      out.push_back(static_cast<char>(b));
  return out;
}

// This test ensures an uploaded artifact is listed with its size and sha256
// and downloads byte for byte, NUL bytes included, with the sha256 as ETag.
TEST_F(artifacts, upload_then_download_is_byte_identical) {
  auto agent = register_agent("worker", json::object());
  auto id = running_run(agent);
  auto bytes = binary_bytes();

  auto put = agent.put_artifact(id, "out.bin", bytes);
  ASSERT_EQ(put.status, 201) << put.raw;
  EXPECT_EQ(put.body["run_id"], id);
  EXPECT_EQ(put.body["name"], "out.bin");
  EXPECT_EQ(put.body["size"], bytes.size());
  EXPECT_EQ(put.body["sha256"], sha256_hex(bytes));
  EXPECT_TRUE(put.body["created_at"].is_string());

  auto listed = list(id, make_token("reader"));
  ASSERT_EQ(listed.status, 200) << listed.raw;
  ASSERT_EQ(listed.body["artifacts"].size(), 1u);
  EXPECT_EQ(listed.body["artifacts"][0], put.body);

  auto got = download(id, "out.bin");
  ASSERT_EQ(got.status, 200);
  EXPECT_EQ(got.raw, bytes);
  EXPECT_EQ(got.headers["Content-Type"], "application/octet-stream");
  EXPECT_EQ(got.headers["ETag"], "\"" + sha256_hex(bytes) + "\"");
  EXPECT_EQ(got.headers["X-Polymesh-Sha256"], sha256_hex(bytes));

  auto empty = agent.put_artifact(id, "empty.txt", "");
  ASSERT_EQ(empty.status, 201) << empty.raw;
  EXPECT_EQ(empty.body["size"], 0);
  auto got_empty = download(id, "empty.txt");
  EXPECT_EQ(got_empty.status, 200);
  EXPECT_EQ(got_empty.raw, "");
}

// This test ensures an upload sent in chunks, without a Content-Length, is
// stored byte for byte across the store's 1 MiB parts with its size and
// sha256 (meshd receives an upload into a file and stores it a part at a
// time; it never holds the whole of it).
TEST_F(artifacts, a_chunked_upload_is_stored_byte_for_byte) {
  auto agent = register_agent("worker", json::object());
  auto id = running_run(agent);
  auto bytes = varied_bytes((1 << 20) * 3 + 5);
  httplib::Client cli{"127.0.0.1", port};
  size_t piece = 64 * 1024 + 1;
  auto put = cli.Put(
      "/v1/runs/" + id + "/artifacts/chunked.bin",
      {{"Authorization", "Bearer " + agent.token}},
      [&](size_t offset, httplib::DataSink& sink) {
        if (offset < bytes.size())
          sink.write(bytes.data() + offset, std::min(piece, bytes.size() - offset));
        else
          sink.done();
        return true;
      },
      "application/octet-stream");
  ASSERT_TRUE(put);
  ASSERT_EQ(put->status, 201) << put->body;
  auto stored = json::parse(put->body);
  EXPECT_EQ(stored["size"], bytes.size());
  EXPECT_EQ(stored["sha256"], sha256_hex(bytes));
  auto got = download(id, "chunked.bin");
  ASSERT_EQ(got.status, 200);
  EXPECT_TRUE(got.raw == bytes) << "the download differs from the upload";
}

/// A GET of `path` on a connection that reads only as fast as asked: the
/// server's writes block once the small receive buffer is full.
class slow_download {
public:
  slow_download(int port, const std::string& path, const std::string& token)
      : fd_(connect_local(port, 16 * 1024)) {
    if (fd_ < 0) return;
    auto request = "GET " + path + " HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer " +
                   token + "\r\nConnection: close\r\n\r\n";
    ::send(fd_, request.data(), request.size(), MSG_NOSIGNAL);
  }
  ~slow_download() {
    if (fd_ >= 0) ::close(fd_);
  }

  /// Reads until the header and at least `bytes` of the body arrived, or the
  /// connection ended; the body read so far.
  const std::string& read_body(size_t bytes) {
    char buf[16 * 1024];
    while (header_.find("\r\n\r\n") == std::string::npos || body_.size() < bytes) {
      auto n = ::recv(fd_, buf, sizeof buf, 0);
      if (n <= 0) break;
      auto end = header_.find("\r\n\r\n");
      if (end != std::string::npos) {
        body_.append(buf, static_cast<size_t>(n));
        continue;
      }
      header_.append(buf, static_cast<size_t>(n));
      end = header_.find("\r\n\r\n");
      if (end != std::string::npos) {
        body_ = header_.substr(end + 4);
        header_.resize(end + 4);
      }
    }
    return body_;
  }
  /// Everything until the server closes the connection.
  const std::string& read_to_end() { return read_body(std::string::npos); }
  [[nodiscard]] const std::string& header() const { return header_; }

private:
  int fd_ = -1;
  std::string header_;
  std::string body_;
};

std::unique_ptr<slow_download> artifacts::begin_big_download(std::string& bytes) {
  auto agent = register_agent("worker", json::object());
  auto id = running_run(agent);
  bytes = varied_bytes(size_t{16} << 20);
  if (agent.put_artifact(id, "big.bin", bytes).status != 201) {
    ADD_FAILURE() << "the artifact was not stored";
    return nullptr;
  }
  auto download = std::make_unique<slow_download>(
      port, "/v1/runs/" + id + "/artifacts/big.bin", admin);
  if (download->read_body(1).empty()) {
    ADD_FAILURE() << "the download did not begin: " << download->header();
    return nullptr;
  }
  return download;
}

// This test ensures a download in progress when meshd begins to stop is
// sent whole: cpp-httplib calls a content provider no more once its server
// is stopping, and the answer ended short of its Content-Length.
TEST_F(artifacts, a_download_in_progress_when_meshd_stops_is_sent_whole) {
  std::string bytes;
  auto download = begin_big_download(bytes);
  ASSERT_TRUE(download);
  begin_stopping();
  auto& got = download->read_to_end();
  stop_mesh();
  EXPECT_EQ(got.size(), bytes.size());
  EXPECT_TRUE(got == bytes);
}

// This test ensures a download whose client pauses longer than cpp-httplib's
// own write timeout (5 s) but less than http.write_timeout (5 min) is sent
// whole: a client reading slowly, or paused by a rate limiter, was cut off
// without a word once half the socket's send buffer had not drained in 5 s.
TEST_F(artifacts, a_download_paused_for_six_seconds_is_sent_whole) {
  std::string bytes;
  auto download = begin_big_download(bytes);
  ASSERT_TRUE(download);
  // Not a wait for something to happen: the pause is what is tested (the
  // server's writes block meanwhile, the buffers between them full).
  std::this_thread::sleep_for(6s);
  auto& got = download->read_to_end();
  EXPECT_EQ(got.size(), bytes.size());
  EXPECT_TRUE(got == bytes);
}

/// meshd waiting 1 s at most for a client to take more of an answer.
class write_timeout : public artifacts {
protected:
  void configure(mesh_config& c) override { c.write_timeout = 1s; }
};

// This test ensures a download whose client takes nothing for
// http.write_timeout ends short of its length, and that meshd says so.
TEST_F(write_timeout, a_download_its_client_stops_reading_is_cut_and_logged) {
  collect_warnings(log_level::info);
  std::string bytes;
  auto download = begin_big_download(bytes);
  ASSERT_TRUE(download);
  auto stopped = [&] {
    for (auto& line : warnings())
      if (line.find("sending stopped") != std::string::npos) return line;
    return std::string{};
  };
  ASSERT_TRUE(eventually([&] { return !stopped().empty(); }, 30s));
  EXPECT_NE(stopped().find("' of run '"), std::string::npos) << stopped();
  EXPECT_NE(stopped().find(" of 16777216: the client closed the connection, or took "
                           "nothing for http.write_timeout (1s)"),
            std::string::npos)
      << stopped();
  auto& got = download->read_to_end();
  EXPECT_LT(got.size(), bytes.size());
  EXPECT_TRUE(got == bytes.substr(0, got.size()));
}

/// meshd stopping with a grace of 100 ms for requests in progress.
class stop_grace : public artifacts {
protected:
  void configure(mesh_config& c) override { c.stop_grace = 100ms; }
};

// This test ensures a download still in progress http.stop_grace after
// meshd began to stop has its connection cut: a client reading slowly but
// steadily held the stop for as long as it went on reading.
TEST_F(stop_grace, a_download_that_outlasts_the_grace_is_cut) {
  collect_warnings();
  std::string bytes;
  auto download = begin_big_download(bytes);
  ASSERT_TRUE(download);
  begin_stopping();
  auto stopped = std::async(std::launch::async, [this] { await_served(); });
  // 16 KiB per 20 ms: the whole artifact would take 20 s.
  for (size_t had = 0; stopped.wait_for(20ms) != std::future_status::ready;) {
    had = download->read_body(had + 16 * 1024).size();
    if (had == bytes.size()) break;
  }
  ASSERT_EQ(stopped.wait_for(30s), std::future_status::ready);
  stop_mesh();
  auto& got = download->read_to_end();
  EXPECT_LT(got.size(), bytes.size());
  EXPECT_TRUE(got == bytes.substr(0, got.size()));
  auto logged = warnings();
  ASSERT_FALSE(logged.empty());
  EXPECT_EQ(logged.back(),
            "stopping: cut 1 connection still open after http.stop_grace (100ms); an "
            "upload still being received on one is not stored, a download ends before "
            "its Content-Length");
}

// This test ensures a stop that comes before the server serves (a SIGTERM
// in meshd's start-up) still ends `serve` at once: cpp-httplib's stop does
// nothing until its accept loop runs, and meshd then served on forever.
TEST_F(stop_grace, a_stop_before_serving_ends_serve_at_once) {
  auto other = cfg;
  other.data_dir = make_temp_dir();
  auto node = mesh_node::start(other, clock);
  ASSERT_TRUE(node) << message_of(node.error());
  {
    http_server server{**node};
    ASSERT_TRUE(server.bind("127.0.0.1", 0));
    server.stop();
    auto served = std::async(std::launch::async, [&] { server.serve(); });
    EXPECT_EQ(served.wait_for(30s), std::future_status::ready);
  }
  (*node)->shutdown();
  remove_tree(other.data_dir);
}

// This test ensures an upload still being sent http.stop_grace after meshd
// began to stop has its connection cut and is not stored: a client sending
// slowly but steadily held the stop until its last byte, and its artifact
// was stored.
TEST_F(stop_grace, an_upload_that_outlasts_the_grace_is_cut_and_not_stored) {
  collect_warnings();
  auto agent = register_agent("worker", json::object());
  auto id = running_run(agent);
  int fd = connect_local(port);
  ASSERT_GE(fd, 0);
  auto closer = std::shared_ptr<void>{nullptr, [fd](void*) { ::close(fd); }};
  size_t length = size_t{1} << 20;
  auto head = "PUT /v1/runs/" + id +
              "/artifacts/slow.bin HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer " +
              agent.token + "\r\nContent-Length: " + std::to_string(length) +
              "\r\nExpect: 100-continue\r\n\r\n";
  ASSERT_EQ(::send(fd, head.data(), head.size(), MSG_NOSIGNAL),
            static_cast<ssize_t>(head.size()));
  // The 100 says that meshd is reading the body.
  std::string answer;
  char buf[256];
  while (answer.find("\r\n\r\n") == std::string::npos) {
    auto n = ::recv(fd, buf, sizeof buf, 0);
    ASSERT_GT(n, 0) << answer;
    answer.append(buf, static_cast<size_t>(n));
  }
  ASSERT_EQ(answer, "HTTP/1.1 100 Continue\r\n\r\n");
  begin_stopping();
  auto stopped = std::async(std::launch::async, [this] { await_served(); });
  // 1 KiB per 20 ms: the whole body would take 20 s.
  std::string piece(1024, 'x');
  for (size_t sent = 0;
       sent < length && stopped.wait_for(20ms) != std::future_status::ready;) {
    if (::send(fd, piece.data(), piece.size(), MSG_NOSIGNAL) <= 0) break;
    sent += piece.size();
  }
  ASSERT_EQ(stopped.wait_for(30s), std::future_status::ready);
  stop_mesh();
  auto logged = warnings();
  ASSERT_FALSE(logged.empty());
  EXPECT_EQ(logged.back().rfind("stopping: cut 1 connection still open", 0), 0u)
      << logged.back();
  start_mesh();
  auto listed = list(id);
  ASSERT_EQ(listed.status, 200) << listed.raw;
  EXPECT_TRUE(listed.body["artifacts"].empty()) << listed.raw;
}

// This test ensures a part that cannot be read mid-download ends the answer
// short of its Content-Length (a client sees a truncated body, not wrong
// bytes) and is logged with the byte where sending stopped.
TEST_F(artifacts, a_part_missing_mid_download_ends_the_answer_short_and_is_logged) {
  collect_warnings();
  auto agent = register_agent("worker", json::object());
  auto id = running_run(agent);
  auto bytes = varied_bytes((size_t{3} << 20) + 5);
  ASSERT_EQ(agent.put_artifact(id, "big.bin", bytes).status, 201);
  exec_sql(dir + "/mesh.db", "DELETE FROM run_artifact_parts WHERE start = 1048576");
  slow_download download{port, "/v1/runs/" + id + "/artifacts/big.bin", admin};
  auto& got = download.read_to_end();
  EXPECT_NE(download.header().find("Content-Length: " + std::to_string(bytes.size())),
            std::string::npos)
      << download.header();
  EXPECT_EQ(got.size(), size_t{1} << 20);
  EXPECT_TRUE(got == bytes.substr(0, got.size()));
  auto logged = warnings();
  ASSERT_EQ(logged.size(), 1u);
  EXPECT_EQ(logged[0].rfind("artifact 'big.bin' of run '" + id +
                                "': sending stopped at byte 1048576: ",
                            0),
            0u)
      << logged[0];
}

// This test ensures an artifact stored whole before schema version 9 (one
// value, no parts) still downloads byte for byte.
TEST_F(artifacts, an_artifact_stored_before_parts_downloads_whole) {
  auto agent = register_agent("worker", json::object());
  auto id = running_run(agent);
  // 7 * 450,000 bytes of "abcdefg", so that a part joined at a wrong offset
  // shows (1 MiB is not a multiple of 7).
  exec_sql(dir + "/mesh.db",
           "INSERT INTO run_artifacts (run_id, name, size, sha256, data, created_at) "
           "VALUES ('" +
               id +
               "', 'old.txt', 3150000, 'x', CAST(replace(printf('%.*c', 450000, 'x'), "
               "'x', 'abcdefg') AS BLOB), 0)");
  std::string bytes;
  for (int i = 0; i < 450000; ++i)
    bytes += "abcdefg";
  auto got = download(id, "old.txt");
  ASSERT_EQ(got.status, 200);
  EXPECT_EQ(got.raw.size(), bytes.size());
  EXPECT_TRUE(got.raw == bytes);
}

// This test ensures an artifact larger than the part a download reads at a
// time (1 MiB) comes back whole and byte for byte, parts joined at odd
// offsets, to GET with or without Range, and HEAD gives its length.
TEST_F(artifacts, a_large_artifact_is_sent_part_by_part_byte_for_byte) {
  auto agent = register_agent("worker", json::object());
  auto id = running_run(agent);
  auto bytes = varied_bytes((5u << 19) + 7); // 2.5 MiB and 7 bytes
  ASSERT_EQ(agent.put_artifact(id, "big.bin", bytes).status, 201);
  auto got = download(id, "big.bin");
  ASSERT_EQ(got.status, 200);
  EXPECT_EQ(got.raw.size(), bytes.size());
  EXPECT_TRUE(got.raw == bytes);
  EXPECT_EQ(got.headers["X-Polymesh-Sha256"], sha256_hex(bytes));
  httplib::Client cli{"127.0.0.1", port};
  httplib::Headers h{{"Authorization", "Bearer " + admin},
                     {"Range", "bytes=1048570-1048580"}};
  auto ranged = cli.Get("/v1/runs/" + id + "/artifacts/big.bin", h);
  ASSERT_TRUE(ranged);
  EXPECT_EQ(ranged->status, 200);
  EXPECT_TRUE(ranged->body == bytes);
  EXPECT_FALSE(ranged->has_header("Content-Range"));
  auto head = cli.Head("/v1/runs/" + id + "/artifacts/big.bin", h);
  ASSERT_TRUE(head);
  EXPECT_EQ(head->status, 200);
  EXPECT_EQ(head->get_header_value("Content-Length"), std::to_string(bytes.size()));
  EXPECT_FALSE(head->has_header("Accept-Ranges"));
  EXPECT_EQ(head->get_header_value("ETag"), "\"" + sha256_hex(bytes) + "\"");
}

// This test ensures a Range header is ignored: the whole artifact (and the
// whole JSON answer) comes back, matching its ETag, where cpp-httplib used to
// cut the range out and still answer 200 with the whole file's checksum.
TEST_F(artifacts, range_requests_get_the_whole_body) {
  auto agent = register_agent("worker", json::object());
  auto id = running_run(agent);
  ASSERT_EQ(agent.put_artifact(id, "a.txt", "abcdefgh").status, 201);
  httplib::Client cli{"127.0.0.1", port};
  httplib::Headers h{{"Authorization", "Bearer " + admin}, {"Range", "bytes=0-3"}};
  auto file = cli.Get("/v1/runs/" + id + "/artifacts/a.txt", h);
  ASSERT_TRUE(file);
  EXPECT_EQ(file->status, 200);
  EXPECT_EQ(file->body, "abcdefgh");
  EXPECT_FALSE(file->has_header("Content-Range"));
  EXPECT_EQ(file->get_header_value("ETag"), "\"" + sha256_hex("abcdefgh") + "\"");
  auto listing = cli.Get("/v1/runs/" + id, h);
  ASSERT_TRUE(listing);
  EXPECT_EQ(listing->status, 200);
  EXPECT_TRUE(json::parse(listing->body, nullptr, false).is_object()) << listing->body;
  // Nor does a HEAD advertise ranges (cpp-httplib adds `bytes` to a HEAD
  // answer); it carries the GET's header fields.
  auto head = cli.Head("/v1/runs/" + id + "/artifacts/a.txt", h);
  ASSERT_TRUE(head);
  EXPECT_EQ(head->status, 200);
  EXPECT_FALSE(head->has_header("Accept-Ranges"));
  EXPECT_EQ(head->get_header_value("ETag"), file->get_header_value("ETag"));
}

// This test ensures a download with the current ETag in If-None-Match is 304
// without the bytes, and a stale ETag gets them.
TEST_F(artifacts, if_none_match_with_the_etag_is_304) {
  auto agent = register_agent("worker", json::object());
  auto id = running_run(agent);
  ASSERT_EQ(agent.put_artifact(id, "a.txt", "aaa").status, 201);
  httplib::Client cli{"127.0.0.1", port};
  auto etag = "\"" + sha256_hex("aaa") + "\"";
  auto path = "/v1/runs/" + id + "/artifacts/a.txt";
  auto fresh =
      cli.Get(path, {{"Authorization", "Bearer " + admin}, {"If-None-Match", etag}});
  ASSERT_TRUE(fresh);
  EXPECT_EQ(fresh->status, 304);
  EXPECT_EQ(fresh->body, "");
  auto stale =
      cli.Get(path, {{"Authorization", "Bearer " + admin}, {"If-None-Match", "\"old\""}});
  ASSERT_TRUE(stale);
  EXPECT_EQ(stale->status, 200);
  EXPECT_EQ(stale->body, "aaa");
  // RFC 9110 13.1.2: a list, compared weakly; `*` for any current bytes.
  for (const auto& header :
       {"\"old\", " + etag, "W/" + etag, "\"x,y\",W/\"old\" , " + etag, "*"s}) {
    auto r =
        cli.Get(path, {{"Authorization", "Bearer " + admin}, {"If-None-Match", header}});
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 304) << header;
  }
  for (const auto& header : {"\"old\", W/\"older\""s, sha256_hex("aaa"), etag.substr(1),
                             "\"old\" " + etag.substr(0, 10)}) {
    auto r =
        cli.Get(path, {{"Authorization", "Bearer " + admin}, {"If-None-Match", header}});
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200) << header;
    EXPECT_EQ(r->body, "aaa") << header;
  }
}

// This test ensures an upload without a body (neither Content-Length nor
// chunks, as `curl -X PUT` without data sends) is a 400 naming
// Content-Length, not an empty artifact that takes the name for good, while
// `Content-Length: 0` stores an empty one.
TEST_F(artifacts, an_upload_without_a_body_is_refused) {
  auto agent = register_agent("worker", json::object());
  auto id = running_run(agent);
  auto head = "PUT /v1/runs/" + id + "/artifacts/empty.txt HTTP/1.1\r\nHost: t\r\n" +
              "Authorization: Bearer " + agent.token + "\r\nConnection: close\r\n";
  auto none = exchange_raw(port, head + "\r\n");
  EXPECT_EQ(none.rfind("HTTP/1.1 400", 0), 0u) << none;
  EXPECT_NE(none.find("\"field\":\"Content-Length\""), std::string::npos) << none;
  EXPECT_TRUE(list(id).body["artifacts"].empty());
  auto empty = exchange_raw(port, head + "Content-Length: 0\r\n\r\n");
  EXPECT_EQ(empty.rfind("HTTP/1.1 201", 0), 0u) << empty;
  EXPECT_EQ(list(id).body["artifacts"].size(), 1u);
}

// This test ensures a repeat with the same bytes is 200 (a retried upload)
// and different bytes under a taken name are 409, leaving the first intact.
TEST_F(artifacts, identical_repeat_is_200_and_different_bytes_are_409) {
  auto agent = register_agent("worker", json::object());
  auto id = running_run(agent);
  auto first = agent.put_artifact(id, "plan.txt", "v1");
  ASSERT_EQ(first.status, 201) << first.raw;

  auto again = agent.put_artifact(id, "plan.txt", "v1");
  EXPECT_EQ(again.status, 200) << again.raw;
  EXPECT_EQ(again.body, first.body);

  auto other = agent.put_artifact(id, "plan.txt", "v2");
  EXPECT_EQ(other.status, 409) << other.raw;
  EXPECT_EQ(other.body["error"]["code"], "conflict");
  EXPECT_EQ(other.body["error"]["field"], "name");
  EXPECT_EQ(download(id, "plan.txt").raw, "v1");
  EXPECT_EQ(list(id).body["artifacts"].size(), 1u);
}

// This test ensures names may be relative paths and are listed by name,
// while hidden segments, empty segments and odd characters are 400.
TEST_F(artifacts, names_are_relative_paths_and_bad_names_are_400) {
  auto agent = register_agent("worker", json::object());
  auto id = running_run(agent);
  ASSERT_EQ(agent.put_artifact(id, "reports/junit.xml", "<x/>").status, 201);
  ASSERT_EQ(agent.put_artifact(id, "a.txt", "a").status, 201);
  auto listed = list(id).body["artifacts"];
  ASSERT_EQ(listed.size(), 2u);
  EXPECT_EQ(listed[0]["name"], "a.txt");
  EXPECT_EQ(listed[1]["name"], "reports/junit.xml");
  EXPECT_EQ(download(id, "reports/junit.xml").raw, "<x/>");

  const std::vector<std::string> bad_names{
      ".hidden", "a//b", "dir/../x", "sp%20ace", "semi;colon", std::string(201, 'x')};
  for (auto& bad : bad_names) {
    auto r = agent.put_artifact(id, bad, "x");
    EXPECT_EQ(r.status, 400) << bad << ": " << r.raw;
    // A '..' segment is refused before routing, as in any path.
    EXPECT_EQ(r.body["error"]["field"], bad == "dir/../x" ? "path" : "name") << bad;
    // A name no upload can have is 400 on download too, not 404.
    auto d = download(id, bad);
    EXPECT_EQ(d.status, 400) << bad << ": " << d.raw;
  }
  EXPECT_EQ(list(id).body["artifacts"].size(), 2u);
  // A refused name is quoted as printable ASCII, cut at 64 bytes: it may hold
  // anything, a U+202E that turns the text around included.
  auto message = [](const response& r) {
    return r.body["error"].value("message", std::string{});
  };
  auto flipped = agent.put_artifact(id, "a%E2%80%AEtxt.exe", "x");
  EXPECT_EQ(flipped.status, 400) << flipped.raw;
  EXPECT_EQ(message(flipped).rfind("artifact name 'a???txt.exe' may contain only", 0), 0u)
      << flipped.raw;
  auto long_name = agent.put_artifact(id, std::string(300, 'x'), "x");
  EXPECT_EQ(message(long_name), "artifact name '" + std::string(64, 'x') +
                                    "...' must be 1 to 200 characters");
}

// This test ensures only the agent the run is assigned to may upload, and
// unknown runs and artifacts are 404 naming what is missing.
TEST_F(artifacts, only_the_assigned_agent_uploads_and_missing_things_are_404) {
  auto worker = register_agent("worker", json{{"env", "prod"}});
  auto id = running_run(worker);
  auto other = register_agent("other", json{{"env", "dev"}});

  auto foreign = other.put_artifact(id, "x.txt", "x");
  EXPECT_EQ(foreign.status, 403) << foreign.raw;
  auto as_reader =
      call_body("PUT", "/v1/runs/" + id + "/artifacts/x.txt", make_token("reader"), "x");
  EXPECT_EQ(as_reader.status, 403) << as_reader.raw;
  auto anonymous = call_body("PUT", "/v1/runs/" + id + "/artifacts/x.txt", "", "x");
  EXPECT_EQ(anonymous.status, 401) << anonymous.raw;

  // A run still waiting for an agent is assigned to nobody.
  auto waiting = submit(json{{"plan", "noop"}, {"selector", "env=none"}});
  ASSERT_EQ(waiting.status, 201);
  auto unassigned = worker.put_artifact(waiting.body["id"], "x.txt", "x");
  EXPECT_EQ(unassigned.status, 403) << unassigned.raw;

  auto no_run = worker.put_artifact("run_missing", "x.txt", "x");
  EXPECT_EQ(no_run.status, 404) << no_run.raw;
  EXPECT_EQ(list("run_missing").status, 404);
  EXPECT_EQ(download("run_missing", "x.txt").status, 404);
  auto no_artifact = download(id, "x.txt");
  EXPECT_EQ(no_artifact.status, 404) << no_artifact.raw;
  EXPECT_EQ(no_artifact.body["error"]["field"], "name");
  EXPECT_NE(no_artifact.body["error"]["message"].get<std::string>().find("x.txt"),
            std::string::npos);
  EXPECT_EQ(list(id).body["artifacts"], json::array());
}

// This test ensures a retried upload after the run finished is still kept,
// and artifacts survive a restart of meshd.
TEST_F(artifacts, upload_after_finish_is_kept_and_survives_restart) {
  auto agent = register_agent("worker", json::object());
  auto id = running_run(agent);
  ASSERT_EQ(agent.put_artifact(id, "early.txt", "early").status, 201);
  ASSERT_EQ(agent.finish(id, "success").status, 200);
  auto before = get_run(id);
  auto late = agent.put_artifact(id, "late.txt", "late");
  EXPECT_EQ(late.status, 201) << late.raw;
  EXPECT_EQ(get_run(id), before);

  restart_mesh();
  auto listed = list(id);
  ASSERT_EQ(listed.status, 200) << listed.raw;
  EXPECT_EQ(listed.body["artifacts"].size(), 2u);
  EXPECT_EQ(download(id, "early.txt").raw, "early");
  EXPECT_EQ(download(id, "late.txt").raw, "late");
}

class artifact_limits : public artifacts {
protected:
  void configure(mesh_config& c) override {
    c.max_body_bytes = 4 * 1024;
    c.max_result_bytes = 1024;
    c.max_payload_bytes = 1024;
    c.max_artifact_bytes = 64 * 1024;
    c.max_artifacts = 2;
  }
};

// This test ensures an artifact above runs.max_artifact_bytes is 413 naming
// that key, while JSON bodies keep http.max_body_bytes even though artifacts
// may be larger.
TEST_F(artifact_limits, size_limits_name_their_key) {
  auto agent = register_agent("worker", json::object());
  auto id = running_run(agent);
  auto big = agent.put_artifact(id, "big.bin", std::string(64 * 1024 + 1, 'x'));
  EXPECT_EQ(big.status, 413) << big.raw;
  EXPECT_NE(big.raw.find("runs.max_artifact_bytes"), std::string::npos) << big.raw;
  EXPECT_EQ(agent.put_artifact(id, "fits.bin", std::string(64 * 1024, 'x')).status, 201);

  std::string json_body =
      R"({"plan":"noop","payload":")" + std::string(8 * 1024, 'p') + R"("})";
  auto sub = call_body("POST", "/v1/runs", admin, json_body);
  EXPECT_EQ(sub.status, 413) << sub.raw;
  EXPECT_NE(sub.raw.find("http.max_body_bytes"), std::string::npos) << sub.raw;
  EXPECT_EQ(list(id).body["artifacts"].size(), 1u);
}

// This test ensures an upload sent in chunks is refused with a 413 naming
// runs.max_artifact_bytes once it passes the limit, without waiting for its
// end, with the connection closed and nothing stored; and that a run that
// is not the caller's is refused before a byte of the body is read.
TEST_F(artifact_limits, a_chunked_upload_over_the_limit_is_refused_once_it_passes_it) {
  auto agent = register_agent("worker", json::object());
  auto id = running_run(agent);
  char size[20];
  std::snprintf(size, sizeof size, "%x", 64 * 1024 + 1);
  auto head = [&](const std::string& run, const std::string& token) {
    return "PUT /v1/runs/" + run +
           "/artifacts/big.bin HTTP/1.1\r\nHost: t\r\n"
           "Authorization: Bearer " +
           token + "\r\nTransfer-Encoding: chunked\r\n\r\n";
  };
  // No last chunk: the client would go on sending.
  auto chunk = std::string{size} + "\r\n" + std::string(64 * 1024 + 1, 'x') + "\r\n";
  auto r = exchange_raw(port, head(id, agent.token) + chunk);
  EXPECT_EQ(r.rfind("HTTP/1.1 413", 0), 0u) << r.substr(0, 300);
  EXPECT_NE(r.find("runs.max_artifact_bytes"), std::string::npos) << r;
  EXPECT_NE(r.find("Connection: close"), std::string::npos) << r.substr(0, 300);
  EXPECT_TRUE(list(id).body["artifacts"].empty());

  auto other = register_agent("other", json::object());
  auto foreign = exchange_raw(port, head(id, other.token) + chunk);
  EXPECT_EQ(foreign.rfind("HTTP/1.1 403", 0), 0u) << foreign.substr(0, 300);
  EXPECT_NE(foreign.find("not assigned to this agent"), std::string::npos) << foreign;
  EXPECT_TRUE(list(id).body["artifacts"].empty());
}

// This test ensures a client that asks before sending its body (`Expect:
// 100-continue`, as curl does above 1 MiB) learns of a wrong token, a path
// no endpoint takes, a body over the limit, a bad artifact name, another
// agent's run and an unknown run before it sends a byte of it,
// with the connection closed; and gets its 100 and then its 201 otherwise.
// cpp-httplib answered 100 to every such request before meshd looked at it.
TEST_F(artifact_limits, a_client_that_expects_100_continue_is_refused_before_its_body) {
  auto agent = register_agent("worker", json::object());
  auto id = running_run(agent);
  auto ask = [&](const std::string& path, const std::string& token, size_t length) {
    return exchange_raw(port,
                        "PUT " + path + " HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer " +
                            token + "\r\nContent-Length: " + std::to_string(length) +
                            "\r\nExpect: 100-continue\r\n\r\n");
  };
  auto path = "/v1/runs/" + id + "/artifacts/big.bin";
  auto wrong_token = ask(path, "pm_nobody.secret", 1000);
  EXPECT_EQ(wrong_token.rfind("HTTP/1.1 401", 0), 0u) << wrong_token.substr(0, 300);
  EXPECT_NE(wrong_token.find("Connection: close"), std::string::npos) << wrong_token;
  auto reader = call_body("POST", "/v1/tokens", admin, R"({"kind":"reader","name":"r"})");
  ASSERT_EQ(reader.status, 201) << reader.raw;
  auto wrong_kind = ask(path, reader.body["token"].get<std::string>(), 1000);
  EXPECT_EQ(wrong_kind.rfind("HTTP/1.1 403", 0), 0u) << wrong_kind.substr(0, 300);
  auto nowhere = ask("/v1/nowhere", agent.token, 1000);
  EXPECT_EQ(nowhere.rfind("HTTP/1.1 404", 0), 0u) << nowhere.substr(0, 300);
  auto over = ask(path, agent.token, 64 * 1024 + 1);
  EXPECT_EQ(over.rfind("HTTP/1.1 413", 0), 0u) << over.substr(0, 300);
  EXPECT_NE(over.find("runs.max_artifact_bytes"), std::string::npos) << over;
  // What needs no body but the run: the name, the run's holder, the run.
  auto bad_name = ask("/v1/runs/" + id + "/artifacts/.hidden", agent.token, 1000);
  EXPECT_EQ(bad_name.rfind("HTTP/1.1 400", 0), 0u) << bad_name.substr(0, 300);
  EXPECT_NE(bad_name.find("starting with '.'"), std::string::npos) << bad_name;
  auto other = register_agent("other", json::object());
  auto foreign = ask(path, other.token, 1000);
  EXPECT_EQ(foreign.rfind("HTTP/1.1 403", 0), 0u) << foreign.substr(0, 300);
  EXPECT_NE(foreign.find("not assigned to this agent"), std::string::npos) << foreign;
  auto unknown = ask("/v1/runs/run_nosuchrun/artifacts/a.bin", agent.token, 1000);
  EXPECT_EQ(unknown.rfind("HTTP/1.1 404", 0), 0u) << unknown.substr(0, 300);
  EXPECT_TRUE(list(id).body["artifacts"].empty());

  auto ok = exchange_after_answer(
      port,
      "PUT " + path + " HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer " + agent.token +
          "\r\nContent-Length: 5\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n",
      "hello");
  EXPECT_EQ(ok.rfind("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201", 0), 0u) << ok;
  EXPECT_EQ(list(id).body["artifacts"].size(), 1u);
}

// This test ensures a run holds at most runs.max_artifacts artifacts, while
// repeats of the ones it holds still succeed.
TEST_F(artifact_limits, count_limit_refuses_more_but_allows_repeats) {
  auto agent = register_agent("worker", json::object());
  auto id = running_run(agent);
  ASSERT_EQ(agent.put_artifact(id, "a", "a").status, 201);
  ASSERT_EQ(agent.put_artifact(id, "b", "b").status, 201);
  auto third = agent.put_artifact(id, "c", "c");
  EXPECT_EQ(third.status, 409) << third.raw;
  EXPECT_NE(third.raw.find("runs.max_artifacts"), std::string::npos) << third.raw;
  EXPECT_EQ(agent.put_artifact(id, "a", "a").status, 200);
  EXPECT_EQ(list(id).body["artifacts"].size(), 2u);
}

// This test ensures uploads at once keep to runs.max_artifacts: each was
// checked against what the run held, not what the others were storing (a
// run of max 2 took all 12).
TEST_F(artifact_limits, uploads_at_once_keep_to_the_count_limit) {
  auto agent = register_agent("worker", json::object());
  auto id = running_run(agent);
  std::vector<int> status(12);
  std::vector<std::thread> uploads;
  for (size_t i = 0; i < status.size(); ++i)
    uploads.emplace_back([&, i] {
      status[i] =
          agent.put_artifact(id, "n" + std::to_string(i), std::string(32 * 1024, 'x'))
              .status;
    });
  for (auto& t : uploads)
    t.join();
  EXPECT_EQ(std::count(status.begin(), status.end(), 201), 2);
  EXPECT_EQ(std::count(status.begin(), status.end(), 409), 10);
  EXPECT_EQ(list(id).body["artifacts"].size(), 2u);
}

class no_artifacts : public artifacts {
protected:
  void configure(mesh_config& c) override { c.max_artifacts = 0; }
};

// This test ensures a mesh with runs.max_artifacts 0 says that it takes no
// artifacts, not that a run holds its most.
TEST_F(no_artifacts, an_upload_is_refused_saying_that_none_are_accepted) {
  auto agent = register_agent("worker", json::object());
  auto id = running_run(agent);
  auto r = agent.put_artifact(id, "a.txt", "a");
  EXPECT_EQ(r.status, 409) << r.raw;
  EXPECT_EQ(r.body["error"]["message"],
            "this mesh accepts no artifacts (runs.max_artifacts = 0)");
  EXPECT_TRUE(list(id).body["artifacts"].empty());
}

} // namespace
} // namespace polymesh::test
