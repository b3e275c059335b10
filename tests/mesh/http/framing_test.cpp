// The framing rules a request must keep before meshd reads its body, as a
// plain function of the parsed request (errors_test checks the same refusals
// over real connections, and that each closes its connection).
#include "mesh/http/framing.hpp"

#include <gtest/gtest.h>
#include <httplib.h>
#include <initializer_list>
#include <string>
#include <utility>

namespace polymesh {
namespace {

httplib::Request
request(std::string method,
        std::initializer_list<std::pair<std::string, std::string>> headers) {
  httplib::Request req;
  req.method = std::move(method);
  for (auto& [name, value] : headers)
    req.headers.emplace(name, value);
  return req;
}

/// The field of the refusal of `req`, or "" when it is accepted.
std::string refused_field(const httplib::Request& req) {
  auto refused = framing_refusal_of(req);
  return refused ? refused->field : "";
}

// This test ensures well-framed requests (a body by length, by chunks, or
// none) pass.
TEST(framing, well_framed_requests_pass) {
  EXPECT_EQ(refused_field(request("GET", {})), "");
  EXPECT_EQ(refused_field(request("GET", {{"Content-Length", "0"}})), "");
  EXPECT_EQ(refused_field(request("HEAD", {{"Authorization", "Bearer x"}})), "");
  EXPECT_EQ(refused_field(request("POST", {{"Content-Length", "0017"}})), "");
  EXPECT_EQ(refused_field(request("PUT", {{"Transfer-Encoding", "Chunked"}})), "");
  EXPECT_EQ(refused_field(request("DELETE", {{"Content-Length", "2"}})), "");
}

// This test ensures each way a proxy could frame a request otherwise than
// cpp-httplib is refused, naming the header at fault.
TEST(framing, ambiguous_lengths_and_codings_are_refused_naming_the_header) {
  EXPECT_EQ(
      refused_field(request("POST", {{"Content-Length", "5"}, {"Content-Length", "5"}})),
      "Content-Length");
  EXPECT_EQ(refused_field(request(
                "POST", {{"Content-Length", "5"}, {"Transfer-Encoding", "chunked"}})),
            "Content-Length");
  for (auto* length : {"37x", "+37", "37, 9999", "abc", ""})
    EXPECT_EQ(refused_field(request("POST", {{"Content-Length", length}})),
              "Content-Length")
        << length;
  EXPECT_EQ(refused_field(request("POST", {{"Transfer-Encoding", "chunked"},
                                           {"Transfer-Encoding", "chunked"}})),
            "Transfer-Encoding");
  EXPECT_EQ(refused_field(request("POST", {{"Transfer-Encoding", "gzip, chunked"}})),
            "Transfer-Encoding");
  EXPECT_EQ(refused_field(request("POST", {{"Content-Encoding", "gzip"}})),
            "Content-Encoding");
  EXPECT_EQ(
      refused_field(request("GET", {{"Authorization", "a"}, {"Authorization", "b"}})),
      "Authorization");
  EXPECT_EQ(refused_field(request("POST", {{"Content-Type", "application/json"},
                                           {"Content-Type", "multipart/form-data"}})),
            "Content-Type");
}

// This test ensures header names that are not tokens, and values with a NUL
// or a bare CR, are refused.
TEST(framing, bad_header_names_and_values_are_refused) {
  EXPECT_EQ(refused_field(request("GET", {{"Bad Header", "x"}})), "headers");
  EXPECT_EQ(refused_field(request("GET", {{"", "x"}})), "headers");
  EXPECT_EQ(refused_field(request("GET", {{"X-Note", std::string{"a\0b", 3}}})),
            "headers");
  EXPECT_EQ(refused_field(request("GET", {{"X-Note", "a\rb"}})), "headers");
  auto refused = framing_refusal_of(request("GET", {{"Bad Header", "x"}}));
  ASSERT_TRUE(refused);
  EXPECT_NE(refused->message.find("'Bad Header' is not a token"), std::string::npos)
      << refused->message;
}

// This test ensures a body announced on a method cpp-httplib reads none of
// (and a chunked DELETE, whose chunks it would not read) is refused, while
// a zero length is not a body.
TEST(framing, a_body_on_a_method_that_takes_none_is_refused) {
  EXPECT_EQ(refused_field(request("GET", {{"Content-Length", "3"}})), "body");
  EXPECT_EQ(refused_field(request("HEAD", {{"Transfer-Encoding", "chunked"}})), "body");
  EXPECT_EQ(refused_field(request("OPTIONS", {{"Content-Length", "1"}})), "body");
  EXPECT_EQ(refused_field(request("DELETE", {{"Transfer-Encoding", "chunked"}})), "body");
  EXPECT_EQ(refused_field(request("GET", {{"Content-Length", "000"}})), "");
}

} // namespace
} // namespace polymesh
