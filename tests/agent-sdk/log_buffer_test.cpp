#include "log_buffer.hpp"
#include "polymesh/sdk/cancel_source.hpp"

#include <gtest/gtest.h>
#include <thread>

using namespace polymesh::sdk;
using namespace std::chrono_literals;

// This test ensures output is cut into numbered chunks by size and stream.
TEST(log_buffer, chunks_by_size_and_stream) {
  log_buffer b{4, 1024};
  b.write(log_stream::out, "abcdef");
  b.write(log_stream::err, "xy");
  b.write(log_stream::out, "z");
  auto chunks = b.take(100, true);
  ASSERT_EQ(chunks.size(), 4u);
  EXPECT_EQ(chunks[0].data, "abcd");
  EXPECT_EQ(chunks[1].data, "ef");
  EXPECT_EQ(chunks[2].data, "xy");
  EXPECT_EQ(chunks[2].stream, log_stream::err);
  EXPECT_EQ(chunks[3].data, "z");
  for (int64_t i = 0; i < 4; ++i)
    EXPECT_EQ(chunks[static_cast<size_t>(i)].seq, i);
}

// This test ensures an unflushed take holds back the chunk still filling.
TEST(log_buffer, partial_chunk_waits_for_flush) {
  log_buffer b{4, 1024};
  b.write(log_stream::out, "ab");
  EXPECT_TRUE(b.take(10, false).empty());
  auto c = b.take(10, true);
  ASSERT_EQ(c.size(), 1u);
  EXPECT_EQ(c[0].data, "ab");
}

// This test ensures a taken chunk never changes, so a resend carries the same bytes.
TEST(log_buffer, taken_chunks_are_sealed_and_resent) {
  log_buffer b{100, 1024};
  b.write(log_stream::out, "one");
  auto first = b.take(10, true);
  b.write(log_stream::out, "two");
  auto again = b.take(10, true); // the send of `first` failed: resend
  ASSERT_EQ(again.size(), 2u);
  EXPECT_EQ(again[0].seq, first[0].seq);
  EXPECT_EQ(again[0].data, "one");
  EXPECT_EQ(again[1].data, "two");
  b.ack(again[1].seq);
  EXPECT_TRUE(b.empty());
  EXPECT_EQ(b.next_seq(), 2);
}

// This test ensures writers block at the memory bound until the shipper acknowledges.
TEST(log_buffer, backpressure_until_ack) {
  log_buffer b{4, 8};
  b.write(log_stream::out, "12345678"); // exactly full
  std::atomic<bool> written{false};
  std::thread writer{[&] {
    b.write(log_stream::out, "more");
    written = true;
  }};
  // The writer cannot finish before the ack below; the bound holds meanwhile.
  EXPECT_LE(b.buffered_bytes(), 8u);
  auto chunks = b.take(10, false);
  ASSERT_EQ(chunks.size(), 2u);
  b.ack(chunks.back().seq);
  writer.join();
  EXPECT_TRUE(written);
  auto rest = b.take(10, true);
  ASSERT_EQ(rest.size(), 1u);
  EXPECT_EQ(rest[0].data, "more");
  EXPECT_EQ(rest[0].seq, 2);
}

// This test ensures a canceled run's writes never block on a full buffer.
TEST(log_buffer, cancel_releases_blocked_writer) {
  cancel_source cancel;
  log_buffer b{4, 4, &cancel};
  b.write(log_stream::out, "full");
  std::thread writer{[&] { b.write(log_stream::out, "late"); }};
  cancel.cancel(cancel_reason::canceled_by_user);
  writer.join();
  EXPECT_EQ(b.buffered_bytes(), 4u) << "dropped, not added past the limit";
}

// This test ensures a discarded log (the mesh refuses the run's reports)
// lets a writer blocked on a full buffer go on, drops what it held and every
// later write, and has nothing to send even after `close`'s notes.
TEST(log_buffer, a_discarded_log_drops_everything_and_never_blocks) {
  log_buffer b{4, 4};
  b.write(log_stream::out, "full");
  std::thread writer{[&] { b.write(log_stream::out, "blocked"); }};
  b.discard();
  writer.join();
  b.write(log_stream::err, "late\xE2\x82");
  b.close();
  EXPECT_TRUE(b.empty());
  EXPECT_EQ(b.buffered_bytes(), 0u);
  EXPECT_TRUE(b.take(10, true).empty());
}

// This test ensures output written after a cancel into a full buffer is
// dropped rather than kept (a plan ignoring SIGTERM grew the agent to
// 770 MB in its grace), and that the log says how much was dropped.
TEST(log_buffer, output_after_a_cancel_does_not_grow_a_full_buffer) {
  cancel_source cancel;
  log_buffer b{4, 16, &cancel};
  b.write(log_stream::out, std::string(16, 'x'));
  cancel.cancel(cancel_reason::canceled_by_user);
  for (int i = 0; i < 1000; ++i)
    b.write(log_stream::out, std::string(1000, 'Q'));
  EXPECT_EQ(b.buffered_bytes(), 16u);
  b.close();
  auto chunks = b.take(100, true);
  ASSERT_FALSE(chunks.empty());
  EXPECT_EQ(chunks.back().stream, log_stream::err);
  EXPECT_NE(
      chunks.back().data.find("1000000 bytes of output after the cancel were dropped"),
      std::string::npos)
      << chunks.back().data;
  for (auto& c : chunks)
    EXPECT_EQ(c.data.find('Q'), std::string::npos);
}

// This test ensures a chunk never ends inside a UTF-8 character when it fills up.
TEST(log_buffer, full_chunks_end_on_character_boundaries) {
  log_buffer b{4, 1024};
  b.write(log_stream::out, "ab\xC3\xA9\xE2\x82\xAC!"); // "abé€!"
  auto chunks = b.take(10, true);
  std::string joined;
  for (auto& c : chunks) {
    EXPECT_EQ(log_buffer::incomplete_utf8_tail(c.data), 0u) << c.data;
    joined += c.data;
  }
  EXPECT_EQ(joined, "ab\xC3\xA9\xE2\x82\xAC!");
  EXPECT_EQ(chunks[0].data, "ab\xC3\xA9");
}

// This test ensures a flush keeps a character split across two writes together.
TEST(log_buffer, flush_keeps_split_character_for_the_next_chunk) {
  log_buffer b{100, 1024};
  b.write(log_stream::out, "x\xE2\x82");
  auto first = b.take(10, true);
  ASSERT_EQ(first.size(), 1u);
  EXPECT_EQ(first[0].data, "x");
  b.ack(first[0].seq);
  b.write(log_stream::out, "\xAC");
  auto second = b.take(10, true);
  ASSERT_EQ(second.size(), 1u);
  EXPECT_EQ(second[0].data, "\xE2\x82\xAC");
  EXPECT_EQ(second[0].seq, first[0].seq + 1);
}

// This test ensures bytes that are not UTF-8 become U+FFFD (as the mesh
// stores them), a character split across two writes stays whole, and a
// closed buffer sends an unfinished character as U+FFFD.
TEST(log_buffer, invalid_utf8_and_close) {
  EXPECT_EQ(log_buffer::incomplete_utf8_tail("abc"), 0u);
  EXPECT_EQ(log_buffer::incomplete_utf8_tail("a\xE2\x82"), 2u);
  EXPECT_EQ(log_buffer::incomplete_utf8_tail("a\xF0"), 1u);
  EXPECT_EQ(log_buffer::incomplete_utf8_tail("\x80\x80\x80\x80"), 0u);
  const std::string fffd = "\xEF\xBF\xBD";
  EXPECT_EQ(log_buffer::replace_invalid_utf8("a\xFF\xC3\xA9\x80z"),
            "a" + fffd + "\xC3\xA9" + fffd + "z");
  // Overlong, surrogate and past-U+10FFFF forms are not UTF-8 either.
  EXPECT_EQ(log_buffer::replace_invalid_utf8("\xC0\xAF\xED\xA0\x80\xF4\x90\x80\x80"),
            fffd + fffd + fffd + fffd + fffd + fffd + fffd + fffd + fffd);
  EXPECT_EQ(log_buffer::replace_invalid_utf8("\xF0\x9F\x98"), "\xF0\x9F\x98");
  log_buffer b{100, 1024};
  b.write(log_stream::out, "\xFF\xE2\x82");
  b.write(log_stream::out, "\xAC!");
  b.write(log_stream::out, "\xE2\x82");
  b.close();
  auto chunks = b.take(10, true);
  ASSERT_EQ(chunks.size(), 2u);
  // The last character never ends: close sends its bytes as U+FFFD.
  EXPECT_EQ(chunks[0].data + chunks[1].data, fffd + "\xE2\x82\xAC!" + fffd + fffd);
}

// This test ensures output that is not UTF-8 counts against the run's
// ceiling as the mesh will store it (3 bytes per invalid byte), so the mesh
// never holds more than the ceiling the agent keeps to.
TEST(log_buffer, invalid_bytes_count_as_the_mesh_stores_them) {
  log_buffer b{100, 1024, nullptr, 30};
  b.write(log_stream::out, std::string(20, '\xFF')); // 60 bytes once replaced
  b.close();
  size_t stored = 0;
  std::string text;
  for (auto& c : b.take(100, true)) {
    stored += c.data.size();
    text += c.data;
  }
  EXPECT_EQ(text.substr(0, 30),
            std::string{"\xEF\xBF\xBD"} +
                "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD"
                "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");
  EXPECT_NE(text.find("log reached 30 bytes"), std::string::npos) << text;
  EXPECT_NE(text.find("30 bytes of output past the limit set by logs.max_run_bytes"),
            std::string::npos)
      << text;
}

// This test ensures one request carries at most the byte budget, and always at least one
// chunk.
TEST(log_buffer, take_respects_byte_budget) {
  log_buffer b{4, 1024};
  b.write(log_stream::out, "aaaabbbbcccc");
  EXPECT_EQ(b.take(10, true, 8).size(), 2u);
  EXPECT_EQ(b.take(10, true, 1).size(), 1u);
}

// This test ensures the first-write hook runs once, before the data is in,
// and not for empty writes.
TEST(log_buffer, first_write_hook_runs_once) {
  log_buffer b{4, 1024};
  int calls = 0;
  size_t buffered_then = 99;
  b.on_first_write([&] {
    ++calls;
    buffered_then = b.buffered_bytes();
  });
  b.write(log_stream::out, "");
  EXPECT_EQ(calls, 0);
  b.write(log_stream::out, "abc");
  b.write(log_stream::err, "def");
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(buffered_then, 0u);
  EXPECT_EQ(b.buffered_bytes(), 6u);
}

// This test ensures a run's log stops at its ceiling: what fits is kept (cut
// on a character boundary), a note marks where output was dropped, writes
// past it neither block nor grow the buffer, and closing says how much went.
TEST(log_buffer, output_past_the_ceiling_is_dropped_with_notes) {
  log_buffer b{4, 1024, nullptr, 10};
  b.write(log_stream::out, "12345678");
  b.write(log_stream::out, "9\xC3\xA9"
                           "abc"); // "é" would end past byte 10
  for (int i = 0; i < 1000; ++i)
    b.write(log_stream::out, "more output that goes nowhere\n");
  EXPECT_LT(b.buffered_bytes(), 200u) << "writes past the ceiling must not grow it";
  b.close();
  std::string out;
  std::string notes;
  for (auto& c : b.take(100, true))
    (c.stream == log_stream::out ? out : notes) += c.data;
  EXPECT_EQ(out, "123456789");
  EXPECT_EQ(notes, "\n[polymesh: this run's log reached 10 bytes, the limit set by "
                   "logs.max_run_bytes; further output is dropped]\n"
                   "[polymesh: " +
                       std::to_string(2 + 3 + 1000 * 30) +
                       " bytes of output past the limit set by logs.max_run_bytes were "
                       "dropped]\n");
}
