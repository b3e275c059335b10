#include "cli/mesh_client.hpp"

#include "mesh/wire/json.hpp"
#include "mesh/wire/transport_error.hpp"

#include <httplib.h>
#include <netdb.h>

namespace polymesh::cli {

namespace {

/// Long enough for the slowest API call; meshctl waits in the mesh for at
/// most 1 s (`GET /v1/runs/{id}?wait=1`).
constexpr time_t read_timeout_s = 60;
constexpr time_t connect_timeout_s = 10;

/// Why no answer came, and what that means for a change.
const std::string no_answer_why = "the connection broke, or the answer took over " +
                                  std::to_string(read_timeout_s) + " s";
constexpr const char* maybe_done_hint =
    "the request may have been carried out: look (list or show) before repeating it";

} // namespace

std::string url_encode(const std::string& text) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : text) {
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
        c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  return out;
}

mesh_client::mesh_client(std::string base_url, std::string token, std::string ca_file)
    : base_url_(std::move(base_url))
    , token_(std::move(token))
    , ca_file_(std::move(ca_file)) {
  auto host = base_url_.find("://");
  auto slash = base_url_.find('/', host == std::string::npos ? 0 : host + 3);
  origin_ = base_url_.substr(0, slash);
  if (slash != std::string::npos) prefix_ = base_url_.substr(slash);
}

json mesh_client::get(const std::string& path, const query& q) {
  auto full = path;
  char sep = '?';
  for (auto& [k, v] : q) {
    if (v.empty()) continue;
    full += sep + url_encode(k) + "=" + url_encode(v);
    sep = '&';
  }
  return call("GET", full, nullptr, false);
}

json mesh_client::post(const std::string& path, const json& body) {
  return call("POST", path, &body, false);
}

json mesh_client::patch(const std::string& path, const json& body,
                        const std::string& if_match) {
  return call("PATCH", path, &body, false, if_match);
}

json mesh_client::del(const std::string& path) {
  return call("DELETE", path, nullptr, false);
}

json answer_with(json j, std::initializer_list<answer_field> fields,
                 const std::string& call) {
  for (auto& f : fields) {
    auto it = j.is_object() ? j.find(f.key) : j.end();
    bool ok = false;
    const char* what = "";
    if (it != j.end()) switch (f.what) {
      case holds::id:
        ok = it->is_string() && !it->get_ref<const std::string&>().empty();
        break;
      case holds::text: ok = it->is_string(); break;
      case holds::list: ok = it->is_array(); break;
      case holds::object: ok = it->is_object(); break;
      case holds::flag: ok = it->is_boolean(); break;
      case holds::number: ok = it->is_number(); break;
      }
    switch (f.what) {
    case holds::id: what = "an id"; break;
    case holds::text: what = "a text"; break;
    case holds::list: what = "a list"; break;
    case holds::object: what = "an object"; break;
    case holds::flag: what = "true or false"; break;
    case holds::number: what = "a number"; break;
    }
    if (!ok)
      throw failure{exit_refused,
                    call + ": the answer has no '" + std::string{f.key} + "' (" + what +
                        "), as meshd's always does",
                    {"is the mesh URL a meshd's? (a proxy or another server may have "
                     "answered; nothing shows that it was done)"}};
  }
  return j;
}

json mesh_client::get_or_null(const std::string& path) {
  return call("GET", path, nullptr, true);
}

namespace {

/// One request on a fresh connection; throws `exit_unreachable` when the
/// mesh was not reached (or a read found no answer: a read repeats safely),
/// `exit_no_answer` when a change was sent and no answer came, and
/// `exit_usage` when the CA file is not one.
httplib::Result send(const std::string& base_url, const std::string& origin,
                     const std::string& ca_file, const std::string& token,
                     const std::string& method, const std::string& path,
                     const std::string* payload, const std::string& if_match = {}) {
  httplib::Client http{origin};
  if (!ca_file.empty()) http.set_ca_cert_path(ca_file);
  http.set_tcp_nodelay(true);
  http.set_keep_alive(false);
  http.set_connection_timeout(connect_timeout_s, 0);
  http.set_read_timeout(read_timeout_s, 0);
  http.set_write_timeout(read_timeout_s, 0);
  httplib::Headers headers;
  if (!token.empty()) headers.emplace("Authorization", "Bearer " + token);
  if (!if_match.empty()) headers.emplace("If-Match", if_match);
  httplib::Result res{nullptr, httplib::Error::Unknown};
  if (method == "GET")
    res = http.Get(path, headers);
  else if (method == "POST")
    res = http.Post(path, headers, *payload, "application/json");
  else if (method == "PATCH")
    res = http.Patch(path, headers, *payload, "application/json");
  else
    res = http.Delete(path, headers);
  if (!res && res.error() == httplib::Error::SSLServerVerification)
    throw failure{
        exit_unreachable,
        "cannot reach the mesh at " + base_url + ": " +
            describe_transport_error(res.error()),
        {"give the CA that signed it with --ca-file (or MESH_CA_FILE, or "
         "ca_file in the config file), or add that CA to the system's trusted "
         "ones (/usr/local/share/ca-certificates, then update-ca-certificates)"}}
        .lasting();
  if (!res && res.error() == httplib::Error::SSLLoadingCerts)
    throw failure{exit_usage,
                  "the CA file '" + ca_file +
                      "' holds no certificate that could be loaded",
                  {"--ca-file, MESH_CA_FILE or ca_file in the config file names it; it "
                   "must hold the PEM certificate of the CA that signed the mesh's; "
                   "nothing was sent"}};
  if (!res && res.error() == httplib::Error::Read && method != "GET")
    throw failure{exit_no_answer,
                  "no answer from the mesh at " + base_url + " to " + method + " " +
                      path + ": " + no_answer_why,
                  {maybe_done_hint}};
  if (!res) {
    auto why = describe_transport_error(res.error());
    bool lasting = res.error() == httplib::Error::SSLConnection;
    if (res.error() == httplib::Error::Read) why = "no answer: " + no_answer_why;
    if (res.error() == httplib::Error::Connection)
      if (auto unresolved = unresolved_host(origin); !unresolved.empty()) {
        why = unresolved;
        lasting = true;
      }
    failure f{exit_unreachable,
              "cannot reach the mesh at " + base_url + ": " + why,
              {"check --mesh, MESH_URL or the config file, and that meshd is running"}};
    if (lasting) f.lasting();
    throw f;
  }
  return res;
}

} // namespace

/// Where in `j` the first text that is not UTF-8 is (`concurrency_key`,
/// `params.name`, `runs[2]`), or "" when there is none.
std::string not_utf8_at(const json& j, const std::string& path) {
  if (j.is_string()) return wire::is_utf8(j.get_ref<const std::string&>()) ? "" : path;
  if (j.is_object()) {
    for (auto& [k, v] : j.items()) {
      auto at = path.empty() ? k : path + "." + k;
      if (!wire::is_utf8(k)) return at;
      if (auto found = not_utf8_at(v, at); !found.empty()) return found;
    }
  } else if (j.is_array()) {
    for (size_t i = 0; i < j.size(); ++i)
      if (auto found = not_utf8_at(j[i], path + "[" + std::to_string(i) + "]");
          !found.empty())
        return found;
  }
  return {};
}

json mesh_client::call(const std::string& method, const std::string& path,
                       const json* body, bool null_on_404, const std::string& if_match) {
  std::string payload;
  try {
    // Strict: text that is not UTF-8 is refused here, not sent changed (two
    // keys that differ only in bytes that are not UTF-8 would become one).
    if (body) payload = body->dump();
  } catch (const json::type_error&) {
    auto at = not_utf8_at(*body, "");
    throw failure{exit_usage,
                  (at.empty() ? std::string{"a value"} : "'" + at + "'") +
                      " of this request is not UTF-8 text",
                  {"the mesh takes UTF-8 text only; nothing was sent"}};
  }
  last_call_ = method + " " + path;
  auto res = send(base_url_, origin_, ca_file_, token_, method, prefix_ + path, &payload,
                  if_match);
  last_status_ = res->status;
  last_etag_ = res->get_header_value("ETag");
  if (res->status == 404 && null_on_404) return nullptr;
  if (res->status < 200 || res->status >= 300) fail(*res, method, path);
  // meshd answers every call with a JSON object, never an empty body.
  auto j = json::parse(res->body, nullptr, false);
  if (j.is_discarded())
    throw failure{exit_refused,
                  method + " " + path + ": the mesh answered " +
                      (res->body.empty() ? std::string{"with nothing"}
                                         : "with something that is not JSON") +
                      " (is " + base_url_ + " a meshd?)"};
  // Every answer of meshd's is an object.
  if (!j.is_object())
    throw failure{exit_refused, method + " " + path +
                                    ": the mesh answered JSON that is not an object "
                                    "(is " +
                                    base_url_ + " a meshd?)"};
  return j;
}

mesh_client::bytes_answer mesh_client::get_bytes(const std::string& path) {
  last_call_ = "GET " + path;
  auto res = send(base_url_, origin_, ca_file_, token_, "GET", prefix_ + path, nullptr);
  last_status_ = res->status;
  if (res->status < 200 || res->status >= 300) fail(*res, "GET", path);
  return {std::move(res->body), res->get_header_value("X-Polymesh-Sha256")};
}

void mesh_client::fail(const httplib::Response& res, const std::string& method,
                       const std::string& path) {
  auto status = res.status;
  if (status < 400) {
    // meshd answers neither redirects nor 1xx: a proxy or a sign-in page
    // that was asked in its place, whose answer must not pass for done.
    auto to = res.get_header_value("Location");
    throw failure{
        exit_refused,
        method + " " + path + ": the mesh answered HTTP " + std::to_string(status) +
            (to.empty() ? std::string{} : ", a redirect to " + to),
        {"meshd never answers so, and meshctl follows no redirect: is " + base_url_ +
         " the mesh's URL? (https where http was given, or a proxy's sign-in "
         "page; nothing was done)"}};
  }
  auto j = json::parse(res.body, nullptr, false);
  std::string code, message, field;
  int64_t position = -1;
  if (!j.is_discarded() && j.is_object() && j.contains("error") &&
      j["error"].is_object()) {
    auto& e = j["error"];
    code = e.value("code", "");
    message = e.value("message", "");
    field = e.value("field", "");
    if (e.contains("position") && e["position"].is_number_integer())
      position = e["position"].get<int64_t>();
  } else {
    message = method + " " + path + " failed with HTTP " + std::to_string(status);
  }
  std::vector<std::string> details;
  std::string headline;
  switch (status) {
  case 401:
    headline = "not authenticated: " + message;
    details.push_back(
        token_.empty() ? "no token was given: pass --token-file or --token, set "
                         "MESH_TOKEN_FILE or MESH_TOKEN, or put `token:` in the "
                         "config file"
                       : "the token is unknown, expired or revoked; ask an admin for a "
                         "new one (meshctl tokens create)");
    break;
  case 403: headline = "permission denied: " + message; break;
  case 404:
    headline = "not found: " + message;
    // The path itself is unknown there: a wrong prefix, or not a meshd.
    if (code.empty() || message.rfind("no such endpoint", 0) == 0)
      details.push_back("is " + base_url_ +
                        " the mesh's URL? check --mesh, MESH_URL or the config file "
                        "(a path in it is a reverse proxy's prefix)");
    break;
  default:
    headline = message;
    if (!field.empty() && message.find(field) == std::string::npos)
      headline = field + ": " + message;
  }
  if (!code.empty()) headline += " (HTTP " + std::to_string(status) + " " + code + ")";
  if (position >= 0) {
    if (auto it = inputs_.find(field); it != inputs_.end()) {
      auto lines = caret_lines(it->second, position);
      details.insert(details.begin(), lines.begin(), lines.end());
    }
  }
  // 503: shutting down or out of long-poll room, like no answer at all a
  // state to retry later (EX_UNAVAILABLE), not a refusal. 502 and 504 come
  // from a proxy in front of meshd that lost it or waited too long: a read
  // repeats safely, a change may have been carried out.
  int exit = exit_refused;
  if (status == 503) exit = exit_unreachable;
  if (status == 502 || status == 504) {
    exit = method == "GET" ? exit_unreachable : exit_no_answer;
    if (exit == exit_no_answer) details.push_back(maybe_done_hint);
  }
  throw failure{exit, headline, std::move(details)};
}

} // namespace polymesh::cli
