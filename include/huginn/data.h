// Token shards for training: the on-disk format, validated reading, and seeded window sampling.
//
// A shard file (`train-NNNNN.bin` or `val-NNNNN.bin` in a data directory) is a 64-byte header
// followed by the tokens, little-endian:
//   bytes  0..7   magic "HGNTOKS\0"
//          8..11  u32 format version: 2 (1: the same layout with an FNV-1a checksum, still read)
//         12..15  u32 bytes per token: 2 (uint16) or 4 (uint32)
//         16..23  u64 token count N
//         24..27  u32 vocabulary size of the tokenizer that made it (every token < this)
//         28..31  i32 end-of-text id placed between documents (-1: none)
//         32..39  u64 checksum of the N·bytes token bytes: XXH3-64 (seed 0) in version 2,
//                 FNV-1a 64 in version 1
//         40..47  u64 fingerprint of the tokenizer (0: unknown)
//         48..63  zero
// The header makes a truncated, corrupt or foreign shard detectable before training reads it.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

struct XXH3_state_s;  // libxxhash's streaming state (xxhash.h)

namespace huginn {

class MappedFile;

inline constexpr size_t kShardHeaderBytes = 64;
inline constexpr uint32_t kShardVersion = 2;
// The first format's number: read (its checksum is FNV-1a 64), never written.
inline constexpr uint32_t kShardVersionFnv = 1;

struct ShardInfo {
  uint32_t token_bytes = 2;  // 2 or 4
  uint64_t count = 0;
  uint32_t vocab_size = 0;
  int32_t eot_id = -1;
  uint64_t tokenizer_hash = 0;
};

// FNV-1a 64 over bytes (the tokenizer fingerprint; version 1's shard checksum).
uint64_t fnv1a64(const void* data, size_t n, uint64_t h = 0xcbf29ce484222325ULL);

// The checksum of a version-2 shard's token bytes: XXH3-64 with seed 0 (libxxhash), ~12x
// FNV-1a's speed, which took a byte at a time and was 5 % of data prepare's CPU.
uint64_t shard_checksum(const void* data, size_t n);
// The same over bytes given in pieces: update(a); update(b) gives shard_checksum(a + b).
class ShardChecksum {
 public:
  ShardChecksum();
  ~ShardChecksum();
  ShardChecksum(const ShardChecksum&) = delete;
  ShardChecksum& operator=(const ShardChecksum&) = delete;
  void reset();
  void update(const void* data, size_t n);
  uint64_t digest() const;

 private:
  ::XXH3_state_s* state_;
};

// Largest vocabulary a shard may declare: tokens are read out as int32 ids.
inline constexpr uint32_t kMaxShardVocab = 0x7fffffffu;

// The 64-byte header (current version) of a shard whose token bytes have `checksum`
// (shard_checksum, the format above).
std::array<uint8_t, kShardHeaderBytes> shard_header(const ShardInfo& info, uint64_t checksum);

// Writes a shard atomically. Tokens are stored as uint16 when vocab_size <= 65536, else uint32.
// Throws huginn::Error when a token is >= vocab_size or the file cannot be written.
void write_shard(const std::string& path, std::span<const uint32_t> tokens, uint32_t vocab_size,
                 int32_t eot_id = -1, uint64_t tokenizer_hash = 0);

// One memory-mapped shard, validated on open: magic, version, token width, the file size the
// count implies, the checksum, and every token below the vocabulary size. Every failure is a
// huginn::Error naming the file and what was expected.
class Shard {
 public:
  static Shard open(const std::string& path);
  const std::string& path() const { return path_; }
  const ShardInfo& info() const { return info_; }
  uint64_t size() const { return info_.count; }
  // Copies tokens [begin, begin + out.size()) as int32.
  void read(uint64_t begin, std::span<int32_t> out) const;

 private:
  std::string path_;
  ShardInfo info_;
  std::shared_ptr<MappedFile> file_;
};

// The shards of one split ("train" or "val") of a data directory, in file-name order. All must
// agree on vocabulary size and tokenizer fingerprint.
class ShardSet {
 public:
  // Throws huginn::Error when `dir` is not a directory or (if required) holds no shard of `split`.
  static ShardSet open(const std::string& dir, const std::string& split, bool required = true);
  bool empty() const { return shards_.empty(); }
  uint64_t total_tokens() const;
  uint32_t vocab_size() const;        // 0 when empty
  uint64_t tokenizer_hash() const;    // 0 when empty
  const std::vector<Shard>& shards() const { return shards_; }
  const std::string& dir() const { return dir_; }
  // The shards were made for a model with `model_vocab` embedding rows: equal vocabularies, or
  // the model's rounded up to a multiple of 128 (padding). Throws naming the shard otherwise.
  void check_vocab(int64_t model_vocab, const std::string& model_source) const;

 private:
  std::string dir_, split_;
  std::vector<Shard> shards_;
};

// Windows of `window` consecutive tokens (block_size + 1: inputs and shifted labels), never
// crossing a shard boundary. Window `index` is a pure function of (seed, index), so the data
// position to resume from is just the next index.
class WindowSampler {
 public:
  // Throws huginn::Error when no shard holds `window` tokens.
  WindowSampler(const ShardSet& set, int64_t window, uint64_t seed);
  int64_t window() const { return window_; }
  // Number of distinct window start positions.
  uint64_t positions() const { return total_; }
  // A uniformly random window for `index` (seeded).
  void sample(uint64_t index, std::span<int32_t> out) const;
  // The window at start position `pos` in [0, positions()) (fixed validation windows).
  void at(uint64_t pos, std::span<int32_t> out) const;

 private:
  const ShardSet& set_;
  int64_t window_;
  uint64_t seed_, total_ = 0;
  std::vector<uint64_t> starts_;  // prefix sums of start positions per shard
};

// Mixes integers into one 64-bit hash (splitmix64 finaliser); the seeding of every counter-based
// random draw in training.
uint64_t mix_seed(uint64_t a, uint64_t b, uint64_t c = 0, uint64_t d = 0);

// `huginn data prepare`: text files (each one document) and JSONL files (one document per line,
// in its "text" field), plain or compressed with zstd or gzip (known by their magic bytes; the
// name without .zst/.gz says JSONL or text), tokenized on a thread pool into train/val shards of
// a new data directory, with the end-of-text token after every document. The last val_fraction
// of each batch of documents' tokens goes to val, so the split does not depend on the thread
// count. A text file larger than max_doc_mb is encoded in pieces cut after a line end (tokens at
// a cut may differ from one encode of the whole file); a longer JSONL line is an error.
// Resumable: after every batch the state is saved (prepare-state.json in `out`); a run stopped at
// any point continues with resume = true and ends with the same shards as an uninterrupted one.
struct PrepareOptions {
  std::string tokenizer;            // tokenizer.json
  std::vector<std::string> inputs;  // .jsonl files are JSONL; anything else is plain text
  std::string out;                  // must not hold shards already (unless resume)
  double val_fraction = 0.01;
  std::string eot_token;            // default: the tokenizer's eos, else <|endoftext|>
  uint64_t shard_tokens = 1ull << 26;
  uint64_t max_doc_mb = 32;         // bound on one document (or piece) in memory
  uint64_t batch_mb = 16;           // text per batch (and per val split, and per checkpoint)
  int threads = 0;
  bool quiet = false;
  bool resume = false;
};
struct PrepareResult {
  uint64_t documents = 0, train_tokens = 0, val_tokens = 0;
  int train_shards = 0, val_shards = 0;
  int32_t eot_id = -1;
  uint32_t vocab_size = 0;
};
PrepareResult prepare_data(const PrepareOptions& options);

}  // namespace huginn
