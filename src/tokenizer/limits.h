// Bounds on what a tokenizer.json may ask for, and on how far a text may grow on its way through
// the pipeline. A hostile file is then an Error naming the field and the bound, never gigabytes of
// memory, a deep recursion or a loop without end. Real tokenizers stay far inside every bound.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace huginn::tok {

// Token ids (vocabulary and added tokens) are below kMaxId and below the number of entries plus
// kIdSlack: an id is an index into arrays sized by the largest one, so an id far beyond the
// entries would cost memory that nothing in the file pays for.
constexpr int64_t kMaxId = int64_t{1} << 26;
constexpr int64_t kIdSlack = 65536;
// Merges (each becomes a hash-table slot and an int32 rank).
constexpr size_t kMaxMerges = size_t{1} << 24;
// Added tokens, and the bytes of one (normalized or not): matching them costs at most that many
// steps per byte of text.
constexpr size_t kMaxAddedTokens = size_t{1} << 20;
constexpr size_t kMaxAddedTokenBytes = 1024;
// Sequence components inside Sequence components (normalizer, pre_tokenizer, decoder,
// post_processor), and components in all in one such tree.
constexpr int kMaxNesting = 16;
constexpr size_t kMaxComponents = 256;
// Bytes of a Split / Replace pattern, a Replace content or a Prepend string.
constexpr size_t kMaxPatternBytes = 16384;
// JSON nesting of the whole file (a Sequence level is two: its object and its array), and the
// size of a tokenizer.json read from disk (the largest real ones are 30-40 MB).
constexpr int kMaxJsonDepth = 64;
constexpr size_t kMaxFileBytes = size_t{256} << 20;

// Text may grow to at most kGrowthFactor x its input size + kGrowthSlack bytes through the
// normalizer, the pre-tokenizer and the decoder (NFKD of U+FDFA, the largest expansion in
// Unicode, is 11x; ByteLevel 2x; Metaspace 3x).
constexpr size_t kGrowthFactor = 32;
constexpr size_t kGrowthSlack = 4096;
inline size_t sat_add(size_t a, size_t b) { return a > SIZE_MAX - b ? SIZE_MAX : a + b; }
inline size_t sat_mul(size_t a, size_t b) { return b != 0 && a > SIZE_MAX / b ? SIZE_MAX : a * b; }
inline size_t growth_bound(size_t input_bytes) {
  return sat_add(sat_mul(input_bytes, kGrowthFactor), kGrowthSlack);
}
// Throws huginn::Error: "<stage>: the text would grow from <input> to <would> bytes, more than
// the bound of 32 x input + 4096 = <bound> bytes".
[[noreturn]] void throw_growth(const std::string& stage, size_t input_bytes, size_t would_bytes);

// The growth bound of one stage (normalizer, pre-tokenizer, decoder) for one input.
struct GrowthBound {
  size_t input = 0;             // bytes the stage was given
  size_t max = SIZE_MAX;        // growth_bound(input)
  const std::string* origin = nullptr;  // the file, for the message
  const char* stage = "";       // "normalizer", ...
  static GrowthBound of(size_t input, const std::string* origin, const char* stage) {
    return GrowthBound{input, growth_bound(input), origin, stage};
  }
  void check(size_t would) const {
    if (would > max) throw_growth((origin ? *origin + ": " : std::string()) + stage, input, would);
  }
};

// A value quoted in an error message: at most 64 bytes of it (cut at a character boundary), with
// its full length when cut, so that a 10 MB token does not make a 10 MB message.
std::string quote(std::string_view s);

}  // namespace huginn::tok
