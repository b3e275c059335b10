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

// This test ensures a tail cut inside a line without a newline after the cut
// starts at a whole UTF-8 character: `printf '€€€€€'` with 10 bytes gave a
// result starting with a stray byte (shown as U+FFFD).
TEST(output_tail, a_cut_without_a_newline_starts_at_a_whole_character) {
  output_tail tail{nullptr, 10};
  tail.write(log_stream::out, "€€€€€"); // 15 bytes; the last 10 start mid-character
  EXPECT_EQ(tail.tail(), "€€€");
  output_tail emoji{nullptr, 6};
  emoji.write(log_stream::out, "a😀😀😀"); // a cut 2 bytes into a 4-byte character
  EXPECT_EQ(emoji.tail(), "😀");
}
