// Training data shards (huginn/data.h): Shard::open on the input as train-00000.bin, the tokens of
// an accepted shard read back, then ShardSet::open on its directory, check_vocab and a few windows
// of a WindowSampler. Byte 0 is the mode: odd = first rewrite the header's checksum to match the
// token bytes (so mutations get past the checksum to the checks behind it: FNV-1a 64 when the header
// says version 1, else XXH3-64); the rest is the file.
// Property: every token of an accepted shard is below its vocabulary size.
#include <algorithm>
#include <cstring>

#include "fuzz_util.h"
#include "huginn/data.h"

using namespace huginn;

HUGINN_FUZZ_TARGET(data_shard) {
  if (size == 0) return;
  const bool fix_checksum = data[0] & 1;
  std::string file(reinterpret_cast<const char*>(data + 1), size - 1);
  if (fix_checksum && file.size() >= kShardHeaderBytes) {
    uint32_t version;
    std::memcpy(&version, file.data() + 8, 4);
    const char* body = file.data() + kShardHeaderBytes;
    const size_t n = file.size() - kShardHeaderBytes;
    const uint64_t h = version == kShardVersionFnv ? fnv1a64(body, n) : shard_checksum(body, n);
    std::memcpy(file.data() + 32, &h, 8);
  }
  const std::string dir = fuzz::fresh_dir("data_shard");
  fuzz::write_file(dir + "/train-00000.bin", file);
  uint64_t sink = 0;
  if (!fuzz::accepts([&] {
        const Shard s = Shard::open(dir + "/train-00000.bin");
        std::vector<int32_t> buf(64);
        for (uint64_t at = 0; at < s.size(); at += buf.size()) {
          const size_t n = static_cast<size_t>(std::min<uint64_t>(buf.size(), s.size() - at));
          s.read(at, std::span<int32_t>(buf.data(), n));
          for (size_t i = 0; i < n; ++i) {
            fuzz::check(buf[i] >= 0 && static_cast<uint32_t>(buf[i]) < s.info().vocab_size,
                        "an accepted shard holds token " + std::to_string(buf[i]) +
                            " >= its vocabulary size " + std::to_string(s.info().vocab_size));
            sink += buf[i];
          }
        }
      }))
    return;
  fuzz::accepts([&] {
    const ShardSet set = ShardSet::open(dir, "train");
    set.check_vocab(set.vocab_size(), "fuzz");
    // Training windows are block_size + 1 >= 2 tokens; a shard shorter than that is refused.
    const int64_t window = std::clamp<int64_t>(static_cast<int64_t>(set.total_tokens()), 2, 9);
    const WindowSampler ws(set, window, 7);
    std::vector<int32_t> out(static_cast<size_t>(window));
    for (uint64_t i = 0; i < 4; ++i) {
      ws.sample(i, out);
      if (ws.positions() > 0) ws.at(i % ws.positions(), out);
      for (int32_t t : out) sink += t;
    }
  });
  asm volatile("" : : "r"(sink));
}
