// The BPE model of tokenizer.json: vocabulary, ranked merges, and the merge loop (lowest rank
// first, leftmost first among equal ranks, as the library's Word::merge_all), with a per-thread
// cache of encoded words.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace huginn::tok {

// Open-addressing hash map from strings to int32 (the vocabulary; keys live in one arena).
class StringMap {
 public:
  void reserve(size_t n);
  // Inserts or overwrites.
  void set(std::string_view key, int32_t value);
  int32_t get(std::string_view key) const;  // -1 when absent
  size_t size() const { return count_; }

 private:
  struct Slot {
    uint64_t hash = 0;
    uint32_t offset = 0, len = 0;
    int32_t value = -1;  // -1: empty
  };
  void grow();
  std::vector<Slot> slots_;
  std::string keys_;
  size_t count_ = 0;
};

uint64_t hash_bytes(std::string_view s);

// (left id, right id) -> (rank, merged id).
class PairMap {
 public:
  void reserve(size_t n);
  void set(int32_t a, int32_t b, int32_t rank, int32_t merged);
  // Returns false when the pair is not a merge.
  bool get(int32_t a, int32_t b, int32_t* rank, int32_t* merged) const {
    if (slots_.empty()) return false;
    uint64_t key = (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
    size_t mask = slots_.size() - 1;
    for (size_t i = mix(key) & mask;; i = (i + 1) & mask) {
      const Slot& s = slots_[i];
      if (s.rank < 0) return false;
      if (s.key == key) {
        *rank = s.rank;
        *merged = s.merged;
        return true;
      }
    }
  }
  size_t size() const { return count_; }

 private:
  static uint64_t mix(uint64_t k) {
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdULL;
    k ^= k >> 33;
    return k;
  }
  struct Slot {
    uint64_t key = 0;
    int32_t rank = -1, merged = -1;
  };
  std::vector<Slot> slots_;
  size_t count_ = 0;
};

struct BpeOptions {
  std::string unk_token;  // empty: none
  bool has_unk = false;
  bool fuse_unk = false;
  bool byte_fallback = false;
  bool ignore_merges = false;
  std::string continuing_subword_prefix, end_of_word_suffix;
};

struct WordCache;  // per thread and model (bpe.cc)

class BpeModel {
 public:
  // Words of at most this many symbols merge by a linear scan, longer ones through a heap.
  static constexpr size_t kSmallWord = 32;

  // vocab[id] is the token string of id (ids are dense 0..n-1; holes are empty strings).
  BpeModel(std::vector<std::string> vocab, const std::vector<std::pair<std::string, std::string>>& merges,
           BpeOptions options, const std::string& where);

  // Appends the ids of one pre-token. raw_bytes: `word` is raw bytes whose byte-level mapping
  // is implied (see Pipeline::byte_level_deferred).
  // `cache`: this thread's word cache for this model (thread_cache()), or nullptr to look it up.
  void encode_word(std::string_view word, bool raw_bytes, std::vector<int32_t>& out,
                   WordCache* cache = nullptr) const;
  // The calling thread's word cache for this model, valid until the thread uses four other
  // models: fetch it once per text, not once per word.
  WordCache* thread_cache() const;

  int32_t token_to_id(std::string_view token) const { return vocab_.get(token); }
  const std::string* id_to_token(int32_t id) const {
    if (id < 0 || id >= static_cast<int32_t>(tokens_.size()) || !present_[id]) return nullptr;
    return &tokens_[id];
  }
  int32_t size() const { return static_cast<int32_t>(vocab_.size()); }
  int32_t id_limit() const { return static_cast<int32_t>(tokens_.size()); }
  const BpeOptions& options() const { return opt_; }
  int32_t unk_id() const { return unk_id_; }

 private:
  void merge_word(std::string_view word, bool raw_bytes, std::vector<int32_t>& out) const;
  void initial_symbols(std::string_view word, bool raw_bytes, std::vector<int32_t>& ids,
                       std::vector<uint32_t>& lens) const;
  void merge_small(std::vector<int32_t>& ids) const;
  void merge_large(std::vector<int32_t>& ids) const;

  StringMap vocab_;      // token string -> id
  StringMap raw_vocab_;  // raw bytes -> id, for tokens made only of byte-level characters
  std::vector<std::string> tokens_;
  std::vector<bool> present_;
  PairMap merges_;
  BpeOptions opt_;
  int32_t unk_id_ = -1;
  int32_t byte_ids_[256];      // id of the byte-level character of each byte, or -1
  int32_t fallback_ids_[256];  // id of <0xXX>, or -1
  uint64_t uid_;               // identifies this model in the per-thread caches
};

}  // namespace huginn::tok
