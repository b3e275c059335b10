#include "polymesh/sdk/output_tail.hpp"
#include "polymesh/sdk/testkit.hpp"

#include <gtest/gtest.h>

using namespace polymesh::sdk;

// This test ensures everything is forwarded and the tail is cut at a line start.
TEST(output_tail, forwards_and_keeps_tail) {
  testkit::memory_log log;
  output_tail tail{&log, 10};
  tail.write(log_stream::out, "first line\nsecond\n");
  tail.write(log_stream::err, "x\n");
  EXPECT_EQ(log.all(), "first line\nsecond\nx\n");
  EXPECT_EQ(tail.tail(), "second\nx\n");
}

// This test ensures short output is returned whole.
TEST(output_tail, short_output_is_whole) {
  output_tail tail{nullptr, 100};
  tail.write(log_stream::out, "abc");
  EXPECT_EQ(tail.tail(), "abc");
}
