// The checks of a request's head as it came off the wire, before
// cpp-httplib parses it, as plain functions of the bytes (errors_test
// checks the refusals over real connections, and that each closes it).
#include "mesh/http/request_head.hpp"

#include <gtest/gtest.h>
#include <string>

namespace polymesh {
namespace {

/// The head of a request to `target` with `headers` (each line without its
/// CR LF, which is added).
std::string head(const std::string& target, std::initializer_list<std::string> headers,
                 const std::string& version = "HTTP/1.1") {
  std::string out = "POST " + target + " " + version + "\r\n";
  for (auto& h : headers)
    out += h + "\r\n";
  return out + "\r\n";
}

/// "" when `text` is taken, else the refusal's code and message.
std::string refusal(const std::string& text) {
  auto why = head_refusal_of(text);
  return why ? std::string{to_string(why->code)} + ": " + why->message : "";
}

// This test ensures a head ends at its first empty line, whether that ends
// with CR LF or a line feed alone, and not before it is all there.
TEST(request_head, a_head_ends_at_its_first_empty_line) {
  std::string text = "GET / HTTP/1.1\r\nHost: x\r\n\r\nbody";
  EXPECT_EQ(head_end(text), text.size() - 4);
  EXPECT_EQ(head_end("GET / HTTP/1.1\nHost: x\n\nbody"), 24u);
  EXPECT_EQ(head_end("GET / HTTP/1.1\r\nHost: x\r\n"), std::string::npos);
  EXPECT_EQ(head_end("\r\n"), 2u);
}

// This test ensures plain heads pass: a length, a chunked body, a query,
// escapes where they mean what a proxy reads, an empty value of a header
// that frames nothing, and escapes in headers meshd never reads.
TEST(request_head, plain_heads_pass) {
  EXPECT_EQ(refusal(head("/v1/runs", {"Host: x", "Content-Length: 17"})), "");
  EXPECT_EQ(refusal(head("/v1/runs", {"Transfer-Encoding: chunked"}, "HTTP/1.0")), "");
  EXPECT_EQ(refusal(head("/v1/agents?selector=env%20in%20(a%2Cb)&x=%2F", {})), "");
  EXPECT_EQ(refusal(head("/v1/runs/run_1/artifacts/a%20b.txt", {"X-Empty:"})), "");
  EXPECT_EQ(refusal(head("/v1/runs", {"User-Agent: tool%20x", "Cookie: a=%41"})), "");
  std::string many;
  for (size_t i = 0; i < max_header_lines; ++i)
    many += "X-" + std::to_string(i) + ": v\r\n";
  EXPECT_EQ(refusal("GET / HTTP/1.1\r\n" + many + "\r\n"), "");
}

// This test ensures each head a proxy could read otherwise than cpp-httplib
// (which skips lines it cannot parse, drops empty values and decodes
// escapes) is refused, naming what is wrong.
TEST(request_head, heads_a_proxy_could_read_otherwise_are_refused) {
  auto refused_with = [](const std::string& text, const std::string& part) {
    auto got = refusal(text);
    EXPECT_NE(got.find(part), std::string::npos) << "'" << got << "' for " << text;
  };
  refused_with("POST / HTTP/1.1\r\nContent-Length: 5\nX: y\r\n\r\n",
               "header line 1 ends with a line feed alone");
  refused_with("POST / HTTP/1.1\nHost: x\r\n\r\n",
               "the request line ends with a line feed alone");
  refused_with("POST / HTTP/1.1\r\nHost: x\r\n\n", "ends with a line feed alone");
  refused_with(head("/", {"Content-Length: 5", " 97"}), "header line 2 is folded");
  refused_with(head("/", {"Content-Length:"}), "header 'Content-Length' has no value");
  refused_with(head("/", {"Transfer-Encoding:  "}),
               "header 'Transfer-Encoding' has no value");
  refused_with(head("/", {"Content-Length: 1%30"}), "has a percent escape");
  refused_with(head("/", {"Authorization: Bearer%20x"}), "has a percent escape");
  refused_with(head("/", {"X-Note: a\rb"}), "has a NUL or a bare CR in its value");
  refused_with(head("/", {"X-Note: a\x1b[2Jb"}), "has a control character");
  refused_with(head("/", {"Bad Header: x"}), "'Bad Header' is not a token");
  refused_with(head("/", {"no colon here"}), "has no ':'");
  refused_with(head("/", {"Host: a", "Host: b"}), "more than one Host header");
  refused_with(head("/", {}, "HTTP/9.9"), "meshd speaks HTTP/1.0 and HTTP/1.1");
  refused_with("POST  / HTTP/1.1\r\n\r\n", "each separated by one space");
  refused_with("\r\n", "the request line is empty");
}

// This test ensures a path the router would read otherwise than a proxy (an
// encoded '/', '.' segments, a malformed escape, no leading '/') is
// refused.
// This test ensures a precondition header without a value is refused: the
// HTTP library drops it, so `If-Match: $ETAG` with the variable unset made
// a conditional change of an agent's labels an unconditional one.
TEST(request_head, an_empty_precondition_is_refused) {
  for (auto [line, part] : {std::pair{"If-Match:", "header 'If-Match' has no value"},
                            {"if-match:   ", "header 'if-match' has no value"},
                            {"If-None-Match:", "header 'If-None-Match' has no value"}}) {
    auto got = refusal(head("/", {line}));
    EXPECT_NE(got.find(part), std::string::npos) << "'" << got << "' for " << line;
  }
  EXPECT_EQ(refusal(head("/", {"If-Match: *"})), "");
}

TEST(request_head, paths_a_proxy_could_read_otherwise_are_refused) {
  for (auto* target : {"/v1%2Ftokens", "/v1/runs/run_1%2fcancel", "/v1/runs/%zz",
                       "/v1/runs/%4", "%2Fv1%2Fruns", "http://mesh/v1/runs", "*",
                       "/v1/runs/../tokens", "/v1/runs/%2e%2e/tokens", "/v1/runs/./x",
                       "/v1/runs/a%00b", "/v1/runs#x", "/v1/runs/\xc3\xa9"}) {
    auto why = head_refusal_of(head(target, {}));
    ASSERT_TRUE(why) << target;
    EXPECT_EQ(why->code, errc::invalid_argument) << target;
    EXPECT_EQ(why->field, "path") << target;
  }
}

// This test ensures the limits: a request line over 8192 bytes is a 414, a
// head over 64 KiB or with over 100 header lines a 431, already while it
// is still coming.
TEST(request_head, limits_are_kept_while_a_head_comes) {
  auto long_line = "GET /" + std::string(max_request_line_bytes, 'a');
  auto partial = partial_head_refusal_of(long_line);
  ASSERT_TRUE(partial);
  EXPECT_EQ(partial->code, errc::uri_too_long);
  EXPECT_FALSE(partial_head_refusal_of("GET /" + std::string(100, 'a')));
  auto big = "GET / HTTP/1.1\r\n" + std::string(max_head_bytes, 'a');
  auto too_big = partial_head_refusal_of(big);
  ASSERT_TRUE(too_big);
  EXPECT_EQ(too_big->code, errc::header_too_large);
  std::string many;
  for (size_t i = 0; i <= max_header_lines; ++i)
    many += "X-" + std::to_string(i) + ": v\r\n";
  auto too_many = head_refusal_of("GET / HTTP/1.1\r\n" + many + "\r\n");
  ASSERT_TRUE(too_many);
  EXPECT_EQ(too_many->code, errc::header_too_large);
  EXPECT_EQ(http_status(too_many->code), 431);
}

} // namespace
} // namespace polymesh
