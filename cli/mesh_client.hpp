// meshctl's side of the REST API v1: one blocking call per method, errors
// turned into `failure`s a person can act on.
//
// Every call opens its own connection with TCP_NODELAY and closes it after
// the answer: meshctl never leaves an idle keep-alive connection open (an
// idle connection costs the server a poll loop, see DEPENDENCIES.md).
//
// Error mapping (the body is the contract's `{"error":{...}}`):
//   - no connection            -> exit_unreachable, naming the URL (and the host
//                                  name when it does not resolve)
//   - a change sent, no answer -> exit_no_answer: it may have been carried out
//   - a read sent, no answer   -> exit_unreachable (repeating it is safe)
//   - a CA file with no cert    -> exit_usage
//   - 401                       -> the server's message plus where tokens come from
//   - 403                       -> the server's message (it names the kinds needed)
//   - 404                       -> "not found: ..."
//   - 400 with `position`       -> the message plus the input with a caret, when
//                                  the field is one `remember_input` was told about
//
// Thread-safety: one client per thread.
#pragma once

#include "cli/failure.hpp"

#include <chrono>
#include <initializer_list>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

namespace httplib {
struct Response;
}

namespace polymesh::cli {

using json = nlohmann::json;

/// Query parameters, in order; empty values are left out.
using query = std::vector<std::pair<std::string, std::string>>;

/// Where in `j` the first text that is not UTF-8 is (`concurrency_key`,
/// `params.name`, `runs[2]`), under `path`; "" when there is none.
[[nodiscard]] std::string not_utf8_at(const json& j, const std::string& path);

class mesh_client {
public:
  /// `base_url` is scheme://host[:port][/prefix], checked by `check_url`;
  /// `ca_file` holds the CAs trusted for https ("" = the system's).
  mesh_client(std::string base_url, std::string token, std::string ca_file = {});

  [[nodiscard]] json get(const std::string& path, const query& q = {});
  [[nodiscard]] json post(const std::string& path, const json& body = json::object());
  /// With `if_match` (an entity tag the mesh gave, `last_etag`), the mesh
  /// refuses the change with 412 when the entity changed since.
  [[nodiscard]] json patch(const std::string& path, const json& body,
                           const std::string& if_match = {});
  [[nodiscard]] json del(const std::string& path);

  /// The HTTP status of the last answered call (201 or 200 tells a new run
  /// from an idempotent repeat).
  [[nodiscard]] int last_status() const { return last_status_; }
  /// The `ETag` of the last answered call ("" without one).
  [[nodiscard]] const std::string& last_etag() const { return last_etag_; }

  /// Like `get`, but a 404 returns null instead of failing.
  [[nodiscard]] json get_or_null(const std::string& path);

  /// A GET whose answer is raw bytes (an artifact), with the mesh's
  /// `X-Polymesh-Sha256` header.
  struct bytes_answer {
    std::string bytes;
    std::string sha256;
  };
  [[nodiscard]] bytes_answer get_bytes(const std::string& path);

  /// The text the user gave for a request field (`selector`, `scope`), shown
  /// with a caret when the server rejects it at a position.
  void remember_input(const std::string& field, const std::string& text) {
    inputs_[field] = text;
  }

  [[nodiscard]] const std::string& base_url() const { return base_url_; }

  /// The last call made, as `GET /v1/runs` (for messages).
  [[nodiscard]] const std::string& last_call() const { return last_call_; }

private:
  json call(const std::string& method, const std::string& path, const json* body,
            bool null_on_404, const std::string& if_match = {});
  [[noreturn]] void fail(const httplib::Response& res, const std::string& method,
                         const std::string& path);

  std::string base_url_;
  /// `base_url_` split: scheme://host[:port], and the path prefix ("" or
  /// "/a/b") that every request path is put under (a reverse proxy's).
  std::string origin_;
  std::string prefix_;
  std::string token_;
  std::string ca_file_;
  std::map<std::string, std::string> inputs_;
  int last_status_ = 0;
  std::string last_etag_;
  std::string last_call_;
};

/// What a field of one of meshd's answers holds.
enum class holds { id, text, list, object, flag, number };

/// A field that every answer of meshd's to a call has.
struct answer_field {
  const char* key;
  holds what;
};

/// `j`, when it has each of `fields` as meshd's answers to `call` always do;
/// otherwise exit 3 naming the first one missing. A proxy, a sign-in page or
/// another server answering JSON must not pass for an answer with every
/// field blank: a revoke that never happened would read as done.
[[nodiscard]] json answer_with(json j, std::initializer_list<answer_field> fields,
                               const std::string& call);

/// Percent-encodes `text` for a path segment or query value.
[[nodiscard]] std::string url_encode(const std::string& text);

} // namespace polymesh::cli
