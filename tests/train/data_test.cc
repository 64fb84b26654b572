// Token shards: round trips, bad shards (corrupt, truncated, foreign), window sampling.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>

#include "huginn/data.h"
#include "huginn/error.h"
#include "test_util.h"

namespace huginn {
namespace {

std::vector<uint32_t> ramp(uint32_t n, uint32_t mod, uint32_t offset = 0) {
  std::vector<uint32_t> v(n);
  for (uint32_t i = 0; i < n; ++i) v[i] = offset + i % mod;
  return v;
}

std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

void flip_byte(const std::string& path, long offset) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(offset);
  char c;
  f.read(&c, 1);
  c ^= 0x5a;
  f.seekp(offset);
  f.write(&c, 1);
}

TEST(Shard, RoundTripUint16) {
  const std::string dir = test::make_temp_dir("shard16");
  const auto toks = ramp(1000, 300);
  write_shard(dir + "/train-00000.bin", toks, 300, 299, 42);
  Shard s = Shard::open(dir + "/train-00000.bin");
  EXPECT_EQ(s.info().token_bytes, 2u);
  EXPECT_EQ(s.size(), 1000u);
  EXPECT_EQ(s.info().vocab_size, 300u);
  EXPECT_EQ(s.info().eot_id, 299);
  EXPECT_EQ(s.info().tokenizer_hash, 42u);
  EXPECT_EQ(std::filesystem::file_size(dir + "/train-00000.bin"), kShardHeaderBytes + 2000);
  std::vector<int32_t> got(1000);
  s.read(0, got);
  for (int i = 0; i < 1000; ++i) ASSERT_EQ(got[i], static_cast<int32_t>(toks[i]));
  std::filesystem::remove_all(dir);
}

TEST(Shard, RoundTripUint32ForLargeVocabularies) {
  const std::string dir = test::make_temp_dir("shard32");
  auto toks = ramp(500, 7, 70000);
  write_shard(dir + "/x.bin", toks, 100000);
  Shard s = Shard::open(dir + "/x.bin");
  EXPECT_EQ(s.info().token_bytes, 4u);
  std::vector<int32_t> got(10);
  s.read(490, got);
  for (int i = 0; i < 10; ++i) EXPECT_EQ(got[i], static_cast<int32_t>(toks[490 + i]));
  std::filesystem::remove_all(dir);
}

TEST(Shard, WriteRejectsTokensOutsideTheVocabulary) {
  const std::string dir = test::make_temp_dir("shardbad");
  const std::vector<uint32_t> toks{1, 2, 300};
  const std::string e = error_of([&] { write_shard(dir + "/x.bin", toks, 300); });
  EXPECT_NE(e.find("token 300 at position 2"), std::string::npos) << e;
  EXPECT_FALSE(std::filesystem::exists(dir + "/x.bin"));
  std::filesystem::remove_all(dir);
}

TEST(Shard, CorruptTruncatedAndForeignFilesAreClearErrors) {
  const std::string dir = test::make_temp_dir("shardcorrupt");
  const std::string p = dir + "/train-00000.bin";
  write_shard(p, ramp(100, 50), 50);

  flip_byte(p, kShardHeaderBytes + 37);
  std::string e = error_of([&] { Shard::open(p); });
  EXPECT_NE(e.find("corrupt"), std::string::npos) << e;
  EXPECT_NE(e.find(p), std::string::npos) << e;

  write_shard(p, ramp(100, 50), 50);
  std::filesystem::resize_file(p, kShardHeaderBytes + 150);
  e = error_of([&] { Shard::open(p); });
  EXPECT_NE(e.find("truncated"), std::string::npos) << e;
  EXPECT_NE(e.find("100 tokens"), std::string::npos) << e;

  std::filesystem::resize_file(p, 20);
  e = error_of([&] { Shard::open(p); });
  EXPECT_NE(e.find("shorter than the 64-byte header"), std::string::npos) << e;

  std::ofstream(p, std::ios::binary) << std::string(100, 'x');
  e = error_of([&] { Shard::open(p); });
  EXPECT_NE(e.find("bad magic"), std::string::npos) << e;

  write_shard(p, ramp(100, 50), 50);
  flip_byte(p, 12);  // token width
  e = error_of([&] { Shard::open(p); });
  EXPECT_NE(e.find("token width"), std::string::npos) << e;
  std::filesystem::remove_all(dir);
}

void put_u32(const std::string& path, long offset, uint32_t v) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekp(offset);
  f.write(reinterpret_cast<const char*>(&v), 4);
}

// The fuzzer's finding F2: a header vocabulary above INT32_MAX was accepted and read() handed its
// tokens >= 2^31 out as negative ids. The vocabulary and the end-of-text id are bounded, on write
// and on read, and the error names the file, the value and the range.
TEST(Shard, HeaderVocabularyAndEndOfTextAreBounded) {
  const std::string dir = test::make_temp_dir("shardvocab");
  const std::string p = dir + "/train-00000.bin";
  std::string e = error_of([&] { write_shard(p, ramp(4, 4), 0x80000000u); });
  EXPECT_NE(e.find("vocabulary size 2147483648"), std::string::npos) << e;
  EXPECT_NE(e.find("1 to 2147483647"), std::string::npos) << e;
  e = error_of([&] { write_shard(p, ramp(4, 4), 8, 8); });
  EXPECT_NE(e.find("end-of-text id 8"), std::string::npos) << e;

  write_shard(p, ramp(100, 50), 0x7fffffffu, 3);
  EXPECT_EQ(Shard::open(p).info().vocab_size, 0x7fffffffu);  // the largest is still fine
  put_u32(p, 24, 0x80000000u);  // vocab_size; the token checksum does not cover the header
  e = error_of([&] { Shard::open(p); });
  EXPECT_NE(e.find(p), std::string::npos) << e;
  EXPECT_NE(e.find("vocabulary size 2147483648 in the header"), std::string::npos) << e;

  write_shard(p, ramp(100, 50), 50, 7);
  put_u32(p, 28, 50);  // eot_id == vocab_size
  e = error_of([&] { Shard::open(p); });
  EXPECT_NE(e.find("end-of-text id 50 in the header"), std::string::npos) << e;
  put_u32(p, 28, static_cast<uint32_t>(-2));
  e = error_of([&] { Shard::open(p); });
  EXPECT_NE(e.find("end-of-text id -2"), std::string::npos) << e;
  std::filesystem::remove_all(dir);
}

// Version 2 checksums the token bytes with XXH3-64 (seed 0), as the header comment and README
// specify; a version-1 shard (FNV-1a 64) is still read and still checked; other versions are
// refused by number.
TEST(Shard, ChecksumIsXxh3AndVersionOneShardsAreStillRead) {
  EXPECT_EQ(shard_checksum("", 0), 0x2D06800538D394C2ULL);  // XXH3-64 of nothing (xxhash's test)
  ShardChecksum pieces;
  pieces.update("token ", 6);
  pieces.update("bytes", 5);
  EXPECT_EQ(pieces.digest(), shard_checksum("token bytes", 11));

  const std::string dir = test::make_temp_dir("shardv1");
  const std::string p = dir + "/train-00000.bin";
  const auto toks = ramp(1000, 300);
  write_shard(p, toks, 300, 299, 42);
  std::string file;
  {
    std::ifstream f(p, std::ios::binary);
    file.assign(std::istreambuf_iterator<char>(f), {});
  }
  const char* body = file.data() + kShardHeaderBytes;
  const size_t n = file.size() - kShardHeaderBytes;
  uint64_t sum;
  std::memcpy(&sum, file.data() + 32, 8);
  EXPECT_EQ(sum, shard_checksum(body, n));
  uint32_t version;
  std::memcpy(&version, file.data() + 8, 4);
  EXPECT_EQ(version, 2u);

  // The same tokens as a version-1 file.
  put_u32(p, 8, 1);
  const uint64_t fnv = fnv1a64(body, n);
  {
    std::fstream f(p, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(32);
    f.write(reinterpret_cast<const char*>(&fnv), 8);
  }
  Shard s = Shard::open(p);
  std::vector<int32_t> got(1000);
  s.read(0, got);
  for (int i = 0; i < 1000; ++i) ASSERT_EQ(got[i], static_cast<int32_t>(toks[i]));
  flip_byte(p, kShardHeaderBytes + 11);
  std::string e = error_of([&] { Shard::open(p); });
  EXPECT_NE(e.find("corrupt shard"), std::string::npos) << e;  // FNV-1a still checked
  flip_byte(p, kShardHeaderBytes + 11);
  put_u32(p, 8, 2);  // an FNV checksum under version 2: wrong
  e = error_of([&] { Shard::open(p); });
  EXPECT_NE(e.find("corrupt shard"), std::string::npos) << e;
  put_u32(p, 8, 3);
  e = error_of([&] { Shard::open(p); });
  EXPECT_NE(e.find("shard format version 3, expected 2 (or 1, the older format)"), std::string::npos) << e;
  std::filesystem::remove_all(dir);
}

TEST(ShardSet, VocabularyMismatchAndMixedTokenizers) {
  const std::string dir = test::make_temp_dir("shardset");
  write_shard(dir + "/train-00000.bin", ramp(100, 50), 256, -1, 7);
  ShardSet set = ShardSet::open(dir, "train");
  EXPECT_NO_THROW(set.check_vocab(256, "config.json"));
  EXPECT_NO_THROW(ShardSet::open(dir, "val", false));
  std::string e = error_of([&] { set.check_vocab(300, "model/config.json"); });
  EXPECT_NE(e.find("vocabulary mismatch"), std::string::npos) << e;
  EXPECT_NE(e.find("model/config.json has vocab_size 300"), std::string::npos) << e;

  write_shard(dir + "/train-00001.bin", ramp(100, 50), 256, -1, 8);  // another tokenizer
  e = error_of([&] { ShardSet::open(dir, "train"); });
  EXPECT_NE(e.find("different tokenizer"), std::string::npos) << e;

  e = error_of([&] { ShardSet::open(dir, "val"); });
  EXPECT_NE(e.find("no val shards"), std::string::npos) << e;
  e = error_of([&] { ShardSet::open(dir + "/nope", "train"); });
  EXPECT_NE(e.find("not found"), std::string::npos) << e;
  std::filesystem::remove_all(dir);
}

TEST(ShardSet, PaddedModelVocabularyIsAccepted) {
  const std::string dir = test::make_temp_dir("shardpad");
  write_shard(dir + "/train-00000.bin", ramp(100, 50), 250);
  ShardSet set = ShardSet::open(dir, "train");
  EXPECT_NO_THROW(set.check_vocab(256, "c"));
  EXPECT_THROW(set.check_vocab(384, "c"), Error);
  EXPECT_THROW(set.check_vocab(200, "c"), Error);
  std::filesystem::remove_all(dir);
}

TEST(WindowSampler, DeterministicUniformAndWithinShards) {
  const std::string dir = test::make_temp_dir("windows");
  // Shard k holds tokens 100k .. 100k+99 in order, so a window's tokens tell where it came from.
  write_shard(dir + "/train-00000.bin", ramp(100, 100, 0), 1000);
  write_shard(dir + "/train-00001.bin", ramp(5, 100, 100), 1000);  // too short for a window
  write_shard(dir + "/train-00002.bin", ramp(100, 100, 200), 1000);
  ShardSet set = ShardSet::open(dir, "train");
  WindowSampler a(set, 9, 123), b(set, 9, 123), c(set, 9, 124);
  EXPECT_EQ(a.positions(), 2u * 92u);
  std::vector<int32_t> wa(9), wb(9), wc(9);
  std::vector<int> per_shard(3, 0);
  int differ = 0;
  for (uint64_t i = 0; i < 4000; ++i) {
    a.sample(i, wa);
    b.sample(i, wb);
    c.sample(i, wc);
    ASSERT_EQ(wa, wb);
    differ += wa != wc;
    for (int j = 1; j < 9; ++j) ASSERT_EQ(wa[j], wa[0] + j);  // contiguous, one shard
    per_shard[wa[0] / 100]++;
  }
  EXPECT_GT(differ, 3900);
  EXPECT_EQ(per_shard[1], 0);
  // Equal eligible positions in shards 0 and 2: a fair coin over 4000 draws (5 sigma = 158).
  EXPECT_NEAR(per_shard[0], 2000, 158);
  // Fixed positions cover both ends.
  a.at(0, wa);
  EXPECT_EQ(wa[0], 0);
  a.at(a.positions() - 1, wa);
  EXPECT_EQ(wa[8], 299);
  EXPECT_THROW(WindowSampler(set, 101, 1), Error);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace huginn
