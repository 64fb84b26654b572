// Token shards: writing, validated reading, seeded windows. Format in include/huginn/data.h.
#include "huginn/data.h"

#include <algorithm>
#include <cstring>
#include <filesystem>

#include <xxhash.h>

#include "huginn/error.h"
#include "util/mapped_file.h"

namespace huginn {
namespace {

constexpr char kMagic[8] = {'H', 'G', 'N', 'T', 'O', 'K', 'S', '\0'};

template <class T>
void put(uint8_t* p, T v) {
  std::memcpy(p, &v, sizeof(T));  // the format is little-endian, as is every supported host
}
template <class T>
T get(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

uint64_t splitmix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// Uniform in [0, n) from a 64-bit hash (multiply-shift; the bias is below 2^-40 for n < 2^24).
uint64_t below(uint64_t h, uint64_t n) {
  return static_cast<uint64_t>((static_cast<unsigned __int128>(h) * n) >> 64);
}

}  // namespace

uint64_t fnv1a64(const void* data, size_t n, uint64_t h) {
  const uint8_t* p = static_cast<const uint8_t*>(data);
  for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 0x100000001b3ULL;
  return h;
}

uint64_t shard_checksum(const void* data, size_t n) { return XXH3_64bits(data, n); }

ShardChecksum::ShardChecksum() : state_(XXH3_createState()) {
  if (!state_) throw Error("out of memory for a checksum state");
  reset();
}
ShardChecksum::~ShardChecksum() { XXH3_freeState(state_); }
void ShardChecksum::reset() { XXH3_64bits_reset(state_); }
void ShardChecksum::update(const void* data, size_t n) { XXH3_64bits_update(state_, data, n); }
uint64_t ShardChecksum::digest() const { return XXH3_64bits_digest(state_); }

uint64_t mix_seed(uint64_t a, uint64_t b, uint64_t c, uint64_t d) {
  uint64_t h = splitmix(a);
  h = splitmix(h ^ b);
  h = splitmix(h ^ c);
  return splitmix(h ^ d);
}

void write_shard(const std::string& path, std::span<const uint32_t> tokens, uint32_t vocab_size,
                 int32_t eot_id, uint64_t tokenizer_hash) {
  if (vocab_size == 0 || vocab_size > kMaxShardVocab)
    throw Error(path + ": cannot write a shard with vocabulary size " + std::to_string(vocab_size) +
                " (expected 1 to " + std::to_string(kMaxShardVocab) + ")");
  if (eot_id < -1 || (eot_id >= 0 && static_cast<uint32_t>(eot_id) >= vocab_size))
    throw Error(path + ": end-of-text id " + std::to_string(eot_id) +
                " is outside the vocabulary (expected -1 for none, or 0 to " +
                std::to_string(vocab_size - 1) + ")");
  const uint32_t width = vocab_size <= 65536 ? 2 : 4;
  std::vector<uint8_t> buf(kShardHeaderBytes + tokens.size() * width, 0);
  uint8_t* body = buf.data() + kShardHeaderBytes;
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (tokens[i] >= vocab_size)
      throw Error(path + ": token " + std::to_string(tokens[i]) + " at position " +
                  std::to_string(i) + " is outside the vocabulary (size " +
                  std::to_string(vocab_size) + ")");
    if (width == 2)
      put<uint16_t>(body + 2 * i, static_cast<uint16_t>(tokens[i]));
    else
      put<uint32_t>(body + 4 * i, tokens[i]);
  }
  ShardInfo info;
  info.token_bytes = width;
  info.count = tokens.size();
  info.vocab_size = vocab_size;
  info.eot_id = eot_id;
  info.tokenizer_hash = tokenizer_hash;
  const auto header = shard_header(info, shard_checksum(body, tokens.size() * width));
  std::memcpy(buf.data(), header.data(), header.size());
  write_file_atomic(path, buf.data(), buf.size());
}

std::array<uint8_t, kShardHeaderBytes> shard_header(const ShardInfo& info, uint64_t checksum) {
  std::array<uint8_t, kShardHeaderBytes> h{};
  std::memcpy(h.data(), kMagic, 8);
  put<uint32_t>(h.data() + 8, kShardVersion);
  put<uint32_t>(h.data() + 12, info.token_bytes);
  put<uint64_t>(h.data() + 16, info.count);
  put<uint32_t>(h.data() + 24, info.vocab_size);
  put<int32_t>(h.data() + 28, info.eot_id);
  put<uint64_t>(h.data() + 32, checksum);
  put<uint64_t>(h.data() + 40, info.tokenizer_hash);
  return h;
}

Shard Shard::open(const std::string& path) {
  Shard s;
  s.path_ = path;
  s.file_ = MappedFile::open(path);
  const uint8_t* p = s.file_->data();
  const size_t size = s.file_->size();
  if (size < kShardHeaderBytes)
    throw Error(path + ": not a token shard: " + std::to_string(size) +
                " bytes, shorter than the 64-byte header");
  if (std::memcmp(p, kMagic, 8) != 0)
    throw Error(path + ": not a token shard: bad magic (expected \"HGNTOKS\")");
  const uint32_t version = get<uint32_t>(p + 8);
  if (version != kShardVersion && version != kShardVersionFnv)
    throw Error(path + ": shard format version " + std::to_string(version) + ", expected " +
                std::to_string(kShardVersion) + " (or " + std::to_string(kShardVersionFnv) +
                ", the older format)");
  ShardInfo& in = s.info_;
  in.token_bytes = get<uint32_t>(p + 12);
  if (in.token_bytes != 2 && in.token_bytes != 4)
    throw Error(path + ": token width " + std::to_string(in.token_bytes) +
                " bytes in the header, expected 2 (uint16) or 4 (uint32)");
  in.count = get<uint64_t>(p + 16);
  in.vocab_size = get<uint32_t>(p + 24);
  in.eot_id = get<int32_t>(p + 28);
  in.tokenizer_hash = get<uint64_t>(p + 40);
  const uint64_t body = size - kShardHeaderBytes;
  if (in.count > body / in.token_bytes || body != in.count * in.token_bytes)
    throw Error(path + ": truncated or padded shard: the header says " + std::to_string(in.count) +
                " tokens (" + std::to_string(in.count * in.token_bytes) +
                " bytes) but the file holds " + std::to_string(body) + " bytes of tokens");
  // Tokens are handed out as int32 ids: a vocabulary above 2^31 - 1 would turn them negative.
  if (in.vocab_size == 0 || in.vocab_size > kMaxShardVocab)
    throw Error(path + ": vocabulary size " + std::to_string(in.vocab_size) +
                " in the header, expected 1 to " + std::to_string(kMaxShardVocab));
  if (in.eot_id < -1 || (in.eot_id >= 0 && static_cast<uint32_t>(in.eot_id) >= in.vocab_size))
    throw Error(path + ": end-of-text id " + std::to_string(in.eot_id) +
                " in the header is outside its vocabulary (expected -1 for none, or 0 to " +
                std::to_string(in.vocab_size - 1) + ")");
  const uint8_t* t = p + kShardHeaderBytes;
  const uint64_t sum = version == kShardVersionFnv ? fnv1a64(t, body) : shard_checksum(t, body);
  if (sum != get<uint64_t>(p + 32))
    throw Error(path + ": corrupt shard: the token bytes do not match the header checksum");
  for (uint64_t i = 0; i < in.count; ++i) {
    const uint32_t v = in.token_bytes == 2 ? get<uint16_t>(t + 2 * i) : get<uint32_t>(t + 4 * i);
    if (v >= in.vocab_size)
      throw Error(path + ": token " + std::to_string(v) + " at position " + std::to_string(i) +
                  " is outside the shard's vocabulary (size " + std::to_string(in.vocab_size) + ")");
  }
  return s;
}

void Shard::read(uint64_t begin, std::span<int32_t> out) const {
  HUGINN_ASSERT(begin + out.size() <= info_.count, "shard read out of range");
  const uint8_t* t = file_->data() + kShardHeaderBytes;
  if (info_.token_bytes == 2) {
    for (size_t i = 0; i < out.size(); ++i) out[i] = get<uint16_t>(t + 2 * (begin + i));
  } else {
    for (size_t i = 0; i < out.size(); ++i)
      out[i] = static_cast<int32_t>(get<uint32_t>(t + 4 * (begin + i)));
  }
}

ShardSet ShardSet::open(const std::string& dir, const std::string& split, bool required) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::is_directory(dir, ec))
    throw Error(dir + ": data directory not found (expected a folder of " + split +
                "-NNNNN.bin token shards)");
  std::vector<std::string> files;
  for (const auto& ent : fs::directory_iterator(dir, ec)) {
    const std::string name = ent.path().filename().string();
    if (name.rfind(split + "-", 0) == 0 && name.size() > 4 &&
        name.compare(name.size() - 4, 4, ".bin") == 0)
      files.push_back(ent.path().string());
  }
  if (ec) throw Error(dir + ": cannot list the data directory: " + ec.message());
  std::sort(files.begin(), files.end());
  if (files.empty() && required)
    throw Error(dir + ": no " + split + " shards (expected files named " + split +
                "-00000.bin, ...; make them with `huginn data prepare`)");
  ShardSet set;
  set.dir_ = dir;
  set.split_ = split;
  for (const auto& f : files) {
    Shard s = Shard::open(f);
    if (!set.shards_.empty()) {
      const ShardInfo& a = set.shards_.front().info();
      if (s.info().vocab_size != a.vocab_size || s.info().tokenizer_hash != a.tokenizer_hash)
        throw Error(f + ": made by a different tokenizer than " + set.shards_.front().path() +
                    " (vocabulary " + std::to_string(s.info().vocab_size) + " vs " +
                    std::to_string(a.vocab_size) + ")");
    }
    set.shards_.push_back(std::move(s));
  }
  return set;
}

uint64_t ShardSet::total_tokens() const {
  uint64_t n = 0;
  for (const auto& s : shards_) n += s.size();
  return n;
}
uint32_t ShardSet::vocab_size() const { return shards_.empty() ? 0 : shards_[0].info().vocab_size; }
uint64_t ShardSet::tokenizer_hash() const {
  return shards_.empty() ? 0 : shards_[0].info().tokenizer_hash;
}

void ShardSet::check_vocab(int64_t model_vocab, const std::string& model_source) const {
  if (shards_.empty()) return;
  const int64_t v = vocab_size();
  const int64_t padded = (v + 127) / 128 * 128;
  if (model_vocab == v || model_vocab == padded) return;
  throw Error(shards_[0].path() + ": vocabulary mismatch: the shards were made by a tokenizer of " +
              std::to_string(v) + " tokens but " + model_source + " has vocab_size " +
              std::to_string(model_vocab) + " (expected " + std::to_string(v) +
              (padded != v ? " or " + std::to_string(padded) : std::string()) +
              "); prepare the data with the model's tokenizer");
}

WindowSampler::WindowSampler(const ShardSet& set, int64_t window, uint64_t seed)
    : set_(set), window_(window), seed_(seed) {
  HUGINN_ASSERT(window > 0, "window must be positive");
  for (const auto& s : set.shards()) {
    starts_.push_back(total_);
    if (s.size() >= static_cast<uint64_t>(window)) total_ += s.size() - window + 1;
  }
  if (total_ == 0)
    throw Error(set.dir() + ": no shard holds a window of " + std::to_string(window) +
                " tokens (sequence length + 1); " + std::to_string(set.total_tokens()) +
                " tokens in " + std::to_string(set.shards().size()) + " shard(s)");
}

void WindowSampler::sample(uint64_t index, std::span<int32_t> out) const {
  at(below(mix_seed(seed_, index, 0x77696e646f77ULL), total_), out);
}

void WindowSampler::at(uint64_t pos, std::span<int32_t> out) const {
  HUGINN_ASSERT(pos < total_ && out.size() == static_cast<size_t>(window_), "bad window request");
  // The last shard whose first start position is <= pos (empty shards share a start).
  size_t i = static_cast<size_t>(std::upper_bound(starts_.begin(), starts_.end(), pos) -
                                 starts_.begin()) - 1;
  while (set_.shards()[i].size() < static_cast<uint64_t>(window_)) ++i;
  set_.shards()[i].read(pos - starts_[i], out);
}

}  // namespace huginn
