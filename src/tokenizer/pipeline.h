// The components of a tokenizer.json, as loaded: normalizer -> pre-tokenizer -> BPE model ->
// post-processor on the way in, decoder on the way out, with added tokens cut out of the raw
// text first. Each mirrors the Hugging Face `tokenizers` component of the same name.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "tokenizer/bpe.h"
#include "tokenizer/limits.h"

namespace huginn::tok {

// A pre-token: its text, and whether it starts at offset 0 of the input (Metaspace "first").
struct Piece {
  std::string_view text;
  bool at_start = false;
};

// Owns the strings that pieces made by transformations point into. Every string a pre-tokenizer
// makes is kept here, so the bytes kept are bounded in one place (limits.h): a Sequence of steps
// that each double the text ends with an Error, not with all the memory.
class Arena {
 public:
  std::string_view keep(std::string s) {
    kept_ += s.size();
    bound_.check(kept_);
    store_.push_back(std::move(s));
    return store_.back();
  }
  void clear() {
    store_.clear();
    kept_ = 0;
  }
  // The bound for the strings kept until the next clear().
  void set_bound(const GrowthBound& b) { bound_ = b; }

 private:
  std::deque<std::string> store_;
  size_t kept_ = 0;
  GrowthBound bound_;
};

struct Normalizer {
  virtual ~Normalizer() = default;
  // Normalizes `s` in place; throws huginn::Error when it would grow past `bound`.
  virtual void normalize(std::string& s, const GrowthBound& bound) const = 0;
};

class Scanner;

// What a pre-tokenizer does when it is the split of one hand-written scanner (scanner.h): the
// text, with a space put before it when prefix_space and it does not start with one, is cut at
// invalid UTF-8 bytes (each its own piece) and each valid run into the scanner's matches, which
// tile it, or with a scanner whose matches do not tile (Scanner::tiles), into its matches and, when
// keep_gaps (Split's Isolated), the runs between them (Removed with invert drops those).
// `identity`: the pre-tokenizer leaves the text as it is.
struct FastSplit {
  bool ok = false;
  bool identity = false;
  const Scanner* scanner = nullptr;
  bool prefix_space = false;
  bool keep_gaps = true;
};

struct PreTokenizer {
  virtual ~PreTokenizer() = default;
  // Splits every piece of `in` into `out` (out is empty on entry).
  virtual void split(const std::vector<Piece>& in, std::vector<Piece>& out, Arena& arena) const = 0;
  // The same split as a FastSplit, when it is one (ok false otherwise).
  virtual FastSplit fast_split() const { return {}; }
};

struct PostProcessor {
  virtual ~PostProcessor() = default;
  virtual void process(std::vector<int32_t>& ids, bool add_special) const = 0;
  // The ids process() may insert (checked against the vocabulary when loading).
  virtual void inserted_ids(std::vector<int32_t>&) const {}
};

struct Decoder {
  virtual ~Decoder() = default;
  // Hugging Face decode_chain: tokens in, tokens out; the decoded text is their concatenation,
  // which may not grow past `bound` (bound.input is the bytes of the tokens given).
  virtual void decode_chain(std::vector<std::string>& tokens, const GrowthBound& bound) const = 0;
  // True for ByteFallback, whose output for a run of byte tokens depends on the whole run.
  virtual bool has_byte_fallback() const { return false; }
  // True for the ByteLevel decoder alone: each token then decodes to fixed bytes, and the text
  // is their concatenation made valid UTF-8.
  virtual bool is_byte_level() const { return false; }
};

struct AddedToken {
  std::string content;
  int32_t id = -1;
  bool special = false, lstrip = false, rstrip = false, single_word = false, normalized = false;
};

// Finds added tokens in text, leftmost-longest and non-overlapping (the library's Aho-Corasick
// MatchKind::LeftmostLongest), then applies lstrip / rstrip / single_word. The patterns are a
// byte trie, walked from each position: the work per position is the longest pattern prefix
// found there (at most kMaxAddedTokenBytes), whatever the number of patterns.
class AddedMatcher {
 public:
  AddedMatcher() { build({}, {}); }
  // patterns[k] is matched for tokens[k] (the normalized content for normalized tokens).
  void build(std::vector<std::string> patterns, std::vector<const AddedToken*> tokens);
  bool empty() const { return patterns_.empty(); }
  struct Split {
    size_t start, end;
    int32_t id;  // -1: plain text
  };
  // Splits `text` into text and token parts (the library's AddedVocabulary::find_matches).
  void split(std::string_view text, std::vector<Split>& out) const;

 private:
  // The longest pattern that matches `text` at `at`, or -1.
  int longest_at(std::string_view text, size_t at) const;

  std::vector<std::string> patterns_;
  std::vector<const AddedToken*> tokens_;
  // Trie node 0 is the root; ends_[node] is the first pattern spelled by the path to it, or -1.
  std::vector<int32_t> ends_;
  std::unordered_map<uint64_t, int32_t> edges_;  // node << 8 | byte -> child
  int32_t root_child_[256];
};

class Pipeline {
 public:
  std::unique_ptr<Normalizer> normalizer;
  std::unique_ptr<PreTokenizer> pre_tokenizer;
  std::unique_ptr<BpeModel> model;
  std::unique_ptr<PostProcessor> post_processor;
  std::unique_ptr<Decoder> decoder;
  std::string origin;  // the file, for errors while encoding and decoding
  std::vector<AddedToken> added;
  std::unordered_map<std::string, int32_t> added_by_content;
  std::unordered_map<int32_t, size_t> added_by_id;  // index into `added`
  AddedMatcher raw_matcher, normalized_matcher;
  // The pre-tokenizer ends with a ByteLevel step whose mapping is left to the model, which then
  // reads raw bytes (same result, no mapped copy of the text).
  bool byte_level_deferred = false;

  void encode(std::string_view text, bool add_special, std::vector<int32_t>& ids) const;
  std::string decode(const int32_t* ids, size_t n, bool skip_special) const;
  // With a ByteLevel decoder, decode(ids) is utf8_lossy of the ids' bytes concatenated. Sets
  // *bytes to the bytes of `id` and returns true, or returns false when decode() drops the id
  // (unknown, or special and skipped). Only when byte_level_decoding().
  bool byte_level_decoding() const { return !id_kind_.empty(); }
  bool token_bytes(int32_t id, bool skip_special, std::string_view* bytes) const {
    if (id < 0 || static_cast<size_t>(id) >= id_kind_.size()) return false;
    const uint8_t kind = id_kind_[id];
    if (kind == 0 || (skip_special && kind == 2)) return false;
    *bytes = std::string_view(byte_text_).substr(byte_off_[id], byte_off_[id + 1] - byte_off_[id]);
    return true;
  }
  // decode() into `out`, reusing its buffer (streaming decoding calls it for every token).
  void decode_to(const int32_t* ids, size_t n, bool skip_special, std::string& out) const;
  int32_t token_to_id(std::string_view token) const;
  const std::string* id_to_token(int32_t id) const;
  bool is_special(int32_t id) const;
  // Built after loading: matchers and lookups of `added`.
  void finish_added();
  // After loading: whether the pre-tokenizer takes the direct path of one scanner.
  void finish_pre_tokenizer();
  // After loading (added tokens included): the bytes of every id for a ByteLevel decoder.
  void finish_decoder();
  bool uses_scanner() const { return fast_.ok && fast_.scanner; }

 private:
  void encode_text(std::string_view text, bool at_start, std::vector<int32_t>& ids) const;
  void encode_scanned(std::string_view text, std::vector<int32_t>& ids) const;
  void decode_bytes(const int32_t* ids, size_t n, bool skip_special, std::string& out) const;
  FastSplit fast_;
  // For a ByteLevel decoder: id -> its bytes, [byte_off_[id], byte_off_[id + 1]) of byte_text_;
  // id_kind_[id]: 0 unknown, 1 token, 2 special token.
  std::string byte_text_;
  std::vector<uint32_t> byte_off_;
  std::vector<uint8_t> id_kind_;
};

// Component factories from tokenizer.json nodes (load.cc); `where` names the JSON path.
}  // namespace huginn::tok
