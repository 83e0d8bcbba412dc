#include "gateway/frame_decoder.h"

#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

namespace gateway {
namespace {

std::string Frame(const std::string& payload) {
  char header[kFrameHeaderBytes];
  EncodeFrameHeader(static_cast<uint32_t>(payload.size()), header);
  return std::string(header, kFrameHeaderBytes) + payload;
}

// Feeds `stream` through the decoder in pieces of `chunk` bytes, the way a connection would:
// append what arrived, take every whole frame out. Returns the payloads, or stops at an error.
std::vector<std::string> FeedInChunks(const FrameDecoder& d, const std::string& stream,
                                      size_t chunk, bool* error) {
  std::vector<std::string> frames;
  std::string buffered;
  *error = false;
  for (size_t pos = 0; pos < stream.size(); pos += chunk) {
    buffered += stream.substr(pos, chunk);
    for (;;) {
      FrameDecoder::Outcome o = d.Decode(buffered);
      if (o.kind == FrameDecoder::Kind::kError) {
        *error = true;
        return frames;
      }
      if (o.kind == FrameDecoder::Kind::kNeedMore) {
        // Never asks for more than the limit allows.
        EXPECT_LE(o.frame_bytes, kFrameHeaderBytes + d.max_payload_bytes());
        break;
      }
      frames.emplace_back(o.payload);
      buffered.erase(0, o.consumed);
    }
  }
  return frames;
}

TEST(FrameDecoderTest, WholeFramesAtOnce) {
  FrameDecoder d(1024);
  const std::string stream = Frame("abc") + Frame(std::string(1024, 'x')) + Frame("z");
  bool error = false;
  auto frames = FeedInChunks(d, stream, stream.size(), &error);
  EXPECT_FALSE(error);
  ASSERT_EQ(frames.size(), 3u);
  EXPECT_EQ(frames[0], "abc");
  EXPECT_EQ(frames[1], std::string(1024, 'x'));
  EXPECT_EQ(frames[2], "z");
}

TEST(FrameDecoderTest, OneByteAtATimeGivesTheSameFrames) {
  FrameDecoder d(1 << 16);
  std::string stream;
  std::vector<std::string> want;
  for (int i = 0; i < 200; ++i) {
    want.push_back(std::string(static_cast<size_t>(i * 7 + 1), static_cast<char>('a' + i % 26)));
    stream += Frame(want.back());
  }
  for (size_t chunk : {1u, 2u, 3u, 5u, 4096u}) {
    bool error = false;
    EXPECT_EQ(FeedInChunks(d, stream, chunk, &error), want) << "chunk " << chunk;
    EXPECT_FALSE(error);
  }
}

TEST(FrameDecoderTest, NeedMoreReportsTheFrameSizeOnceTheHeaderIsIn) {
  FrameDecoder d(100);
  std::string partial = Frame(std::string(50, 'p')).substr(0, 10);
  EXPECT_EQ(d.Decode(partial.substr(0, 3)).frame_bytes, 0u);
  FrameDecoder::Outcome o = d.Decode(partial);
  EXPECT_EQ(o.kind, FrameDecoder::Kind::kNeedMore);
  EXPECT_EQ(o.frame_bytes, 54u);
}

TEST(FrameDecoderTest, RejectsOversizedAndEmptyFramesFromTheHeaderAlone) {
  FrameDecoder d(1000);
  const char too_big[] = {'\x80', 0, 0, 0};  // 2^31
  FrameDecoder::Outcome o = d.Decode(std::string_view(too_big, 4));
  EXPECT_EQ(o.kind, FrameDecoder::Kind::kError);
  EXPECT_EQ(o.error, FrameDecoder::ErrorKind::kTooLarge);
  EXPECT_EQ(o.declared_length, 1ull << 31);
  const char just_over[] = {0, 0, '\x03', '\xe9'};  // 1001
  EXPECT_EQ(d.Decode(std::string_view(just_over, 4)).error, FrameDecoder::ErrorKind::kTooLarge);
  const char empty[] = {0, 0, 0, 0};
  EXPECT_EQ(d.Decode(std::string_view(empty, 4)).error, FrameDecoder::ErrorKind::kEmptyFrame);
  const char at_limit[] = {0, 0, '\x03', '\xe8'};  // 1000
  EXPECT_EQ(d.Decode(std::string_view(at_limit, 4)).kind, FrameDecoder::Kind::kNeedMore);
}

TEST(FrameDecoderTest, RandomInputsNeverOverreadOrAskPastTheLimit) {
  std::mt19937_64 rng(12345);
  const FrameDecoder d(4096);
  for (int i = 0; i < 100'000; ++i) {
    std::string input(rng() % 64, '\0');
    for (char& c : input) c = static_cast<char>(rng());
    if (i % 3 == 0 && input.size() >= 4) input[0] = input[1] = 0;  // plausible lengths, too
    FrameDecoder::Outcome o = d.Decode(input);
    switch (o.kind) {
      case FrameDecoder::Kind::kOk:
        ASSERT_LE(o.consumed, input.size());
        ASSERT_EQ(o.payload.data(), input.data() + kFrameHeaderBytes);
        ASSERT_EQ(o.payload.size() + kFrameHeaderBytes, o.consumed);
        break;
      case FrameDecoder::Kind::kNeedMore:
        ASSERT_LE(o.frame_bytes, kFrameHeaderBytes + 4096);
        ASSERT_TRUE(o.frame_bytes == 0 || o.frame_bytes > input.size());
        break;
      case FrameDecoder::Kind::kError:
        ASSERT_GE(input.size(), kFrameHeaderBytes);
        break;
    }
  }
}

}  // namespace
}  // namespace gateway
