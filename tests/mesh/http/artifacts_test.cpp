// Artifact endpoints over real HTTP: upload by the assigned agent only,
// byte-identical download, idempotent repeats, names, limits, and what
// survives a restart.
#include "mesh/domain/ids.hpp"
#include "tests/support/mesh_fixture.hpp"

#include <httplib.h>

namespace polymesh::test {
namespace {

using namespace std::string_literals;

class artifacts : public mesh_fixture {
protected:
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

// This test ensures an artifact larger than the part a download reads at a
// time (1 MiB) comes back whole and byte for byte, parts joined at odd
// offsets, to GET with or without Range, and HEAD gives its length.
TEST_F(artifacts, a_large_artifact_is_sent_part_by_part_byte_for_byte) {
  auto agent = register_agent("worker", json::object());
  auto id = running_run(agent);
  std::string bytes;
  uint32_t x = 12345;
  for (size_t i = 0; i < (5u << 19) + 7; ++i) { // 2.5 MiB and 7 bytes
    x = x * 1103515245u + 12345u;
    bytes.push_back(static_cast<char>(x >> 23));
  }
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
    EXPECT_EQ(r.body["error"]["field"], "name") << bad;
    // A name no upload can have is 400 on download too, not 404.
    auto d = download(id, bad);
    EXPECT_EQ(d.status, 400) << bad << ": " << d.raw;
  }
  EXPECT_EQ(list(id).body["artifacts"].size(), 2u);
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

} // namespace
} // namespace polymesh::test
