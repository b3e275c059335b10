// A real meshd in the test process: `mesh_node` + `http_server` bound to
// 127.0.0.1:0, driven by a `manual_clock`, spoken to over real HTTP.
//
// Timers never need a sleep: a test advances `clock` and calls `tick()`,
// which fires every due timer and waits for the routines to have done so.
// Where a consequence is asynchronous (an actor persisting after a timer),
// `eventually` re-reads the API until the condition holds or 10 s pass.
#pragma once

#include "mesh/actors/node.hpp"
#include "mesh/domain/clock.hpp"
#include "mesh/http/server.hpp"

#include <functional>
#include <gtest/gtest.h>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>

namespace polymesh::test {

using nlohmann::json;

struct response {
  int status = 0;
  json body;
  std::string raw;
  /// Response headers, as the server spelled their names.
  std::map<std::string, std::string> headers;
};

/// Creates a fresh directory under $TMPDIR; removed by `remove_tree`.
std::string make_temp_dir();
void remove_tree(const std::string& dir);

/// Runs `sql` on the database file `db` from a connection of its own (to
/// shape a stopped mesh's store, or make a running one's writes fail).
void exec_sql(const std::string& db, const std::string& sql);
/// A socket connected to 127.0.0.1:`port` whose reads give up after 10 s,
/// with a receive buffer of `receive_buffer` bytes when not 0 (set before
/// connecting, so that the window stays small); -1 on failure.
int connect_local(int port, int receive_buffer = 0);
/// Sends `bytes` verbatim on a fresh connection and reads until the server
/// closes it (or 10 s pass): every response it wrote, as raw text.
std::string exchange_raw(int port, const std::string& bytes);
/// Sends `first`, reads its whole answer (only its headers for a HEAD, as a
/// client would), then sends `then` on the same connection (if it is still
/// open) and reads until the server closes it: what a client that sends a
/// body after the headers' answer sees.
std::string exchange_after_answer(int port, const std::string& first,
                                  const std::string& then);
/// The first column of the first row `sql` returns from `db` ("" for none
/// or NULL).
std::string query_text(const std::string& db, const std::string& sql);

/// One HTTP call with an optional bearer token. `body` is sent as JSON
/// when not null; `raw_body` wins when set (PUT sends it as octet-stream).
response call(int port, const std::string& method, const std::string& path,
              const std::string& token = {}, const json& body = nullptr,
              const std::string* raw_body = nullptr);

/// One HTTP call with a verbatim `Authorization` header value (empty: no
/// header) and a verbatim body, for malformed-header and malformed-body cases.
response call_raw(int port, const std::string& method, const std::string& path,
                  const std::string& authorization, const std::string& raw_body = {});

/// The value of the sample line of `/metrics` text starting with `head`
/// (`name{labels}`), or -1 if there is none.
double metric_value(const std::string& text, const std::string& head);

/// Re-evaluates `cond` until it holds or `limit` elapses; true if it held.
bool eventually(const std::function<bool()>& cond,
                std::chrono::milliseconds limit = std::chrono::seconds{10});

/// A scripted agent speaking the agent protocol.
struct scripted_agent {
  int port = 0;
  std::string id;
  std::string name;
  std::string token;

  response poll(int wait_s = 0) const;
  /// Long-polls until `n` distinct runs arrived (assignment is asynchronous
  /// to the submit's 201); returns them, fewer only if 10 s pass.
  json take(size_t n) const;
  response start(const std::string& run_id) const;
  response progress(const std::string& run_id, const std::string& msg = {}) const;
  response logs(const std::string& run_id, int64_t seq, const std::string& data) const;
  response finish(const std::string& run_id, const std::string& status, int exit_code = 0,
                  const std::string& result = {}) const;
  response deregister() const;
  /// POST /v1/agents/{id}/report?wait=S with `body`; without `?wait` when
  /// `wait_s` is negative.
  response report(const json& body, int wait_s = 0) const;
  /// PUT /v1/runs/{id}/artifacts/{name} with `bytes` as the raw body.
  response put_artifact(const std::string& run_id, const std::string& name,
                        const std::string& bytes) const;
};

class mesh_fixture : public ::testing::Test {
protected:
  void SetUp() override;
  void TearDown() override;

  /// Adjust before `start_mesh` (SetUp starts with the defaults).
  virtual void configure(mesh_config&) {}

  void start_mesh();
  void stop_mesh();
  void restart_mesh();
  /// The first half of `stop_mesh`, as SIGTERM does it: the mesh begins to
  /// shut down and the server stops accepting, without waiting for the
  /// requests in progress. `stop_mesh` finishes.
  void begin_stopping();
  /// Waits until the server, stopping, has ended every request (the node
  /// stays up: `stop_mesh` shuts it down, on the thread that started it, as
  /// CAF 0.17 needs).
  void await_served();
  /// Fires due timers and sweeps, synchronously.
  void tick() { node_->tick(); }
  void advance(duration d) {
    clock.advance(d);
    tick();
  }

  response call(const std::string& method, const std::string& path,
                const std::string& token, const json& body = nullptr) {
    return polymesh::test::call(port, method, path, token, body);
  }
  /// Sends `raw_body` verbatim (malformed JSON, empty or huge bodies).
  response call_body(const std::string& method, const std::string& path,
                     const std::string& token, const std::string& raw_body) {
    return polymesh::test::call(port, method, path, token, nullptr, &raw_body);
  }
  /// The run's `status` and `reason` as re-read through the API.
  std::pair<std::string, std::string> state_of(const std::string& run_id);
  /// Creates a token of `kind` with the admin token; returns the secret.
  std::string make_token(const std::string& kind, const std::string& scope = {},
                         int64_t ttl_s = 0);
  /// Registers an agent with a registration token.
  scripted_agent register_agent(const std::string& name, const json& labels,
                                const json& plans = json::array({"noop"}),
                                int capacity = 1);
  /// Submits a run with `submitter`; returns the response.
  response submit(const json& body, const std::string& token = {});
  json get_run(const std::string& id);
  /// Whether the run's stored `status` becomes `status` within 10 s. Use it
  /// after a poll carried a run before asserting it is `pending`: the poll
  /// may answer one group commit before that is durable (architecture.md,
  /// "Submit").
  bool becomes(const std::string& id, const std::string& status);

  manual_clock clock;
  mesh_config cfg;
  std::string dir;
  std::string admin;
  int port = 0;
  std::unique_ptr<mesh_node> node_;

private:
  std::unique_ptr<http_server> server_;
  /// `begin_stopping` ran since the last start.
  bool stopping_ = false;
  std::thread serving_;
  std::string submitter_;
  std::string registration_;
};

} // namespace polymesh::test
