// Hand-written pre-tokenizer scanners for the split regexes of real tokenizers: GPT-2/RoBERTa,
// cl100k (GPT-4, Llama-3, and with \p{N} for single digits Qwen2/Qwen3), o200k (GPT-4o, gpt-oss),
// and the "aeolian" and "ascra" rules of the Huginn-0125 authors' tokenizer script (aeolian is the
// rule Huginn-0125's tokenizer is built with).
// Each does what PCRE2 does with the translated pattern (regex.h) — leftmost-first alternation,
// greedy quantifiers with backtracking, the lookahead of \s+(?!\S) — without the regex engine, and
// classifies characters with a table built from PCRE2 itself with the same translated classes
// (Unicode 16.0 through unicode_delta.inc), so the two paths cannot disagree on a category.
//
// A pattern is recognised by its canonical form (canonical_pattern): property names, escapes of
// control characters, the order of character-class items and one-item classes are normalised, so
// `[\p{L}]`, `\pL` and `\p{Letter}` are the same pattern. Recognition is then confirmed on a probe
// text against PCRE2 before the scanner is used; any other pattern stays on PCRE2.
//
// Text must be valid UTF-8 (the pre-tokenizers cut invalid bytes out first).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace huginn::tok {

enum class ScanFamily {
  kGpt2,    // 's|'t|... | ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
  kCl100k,  // (?i:'s|...)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,K}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|...
  kPunct,   //  ?\p{L}+|\p{N}{1,K}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|... (Huginn's "punct" rules)
  kO200k,   // case-split letters with trailing contractions, \p{N}{1,3}, [\r\n/]* after punctuation
  kAeolian, // LaTeX \n-commands with \b, \n+, one \p{N}, operators after [ \t], ..., [\p{P}\p{S}], \s+, \p{So}
  kAscra,   // aeolian with [\p{P}\p{S}]+
};

class Scanner {
 public:
  // The scanner for `pattern` (Oniguruma syntax, as in tokenizer.json), or nullptr.
  static std::unique_ptr<Scanner> recognize(const std::string& pattern);
  // A scanner of one family without recognition or probe (tests).
  Scanner(ScanFamily family, int max_digits);

  // End of the match that starts at `at` < n, or `at` when none starts there. With every
  // pattern but aeolian's and ascra's each character starts a match (tiles()), so matches tile
  // the text and the end is > at; those two match no character that is not \s, \p{L}, \p{N},
  // \p{P} or \p{S} (a lone mark, a control, a format character...) unless it precedes a letter.
  // None of the patterns has an empty match.
  size_t match_at(const uint8_t* p, size_t n, size_t at) const;
  // The end of the piece that starts at `at` < n: the match there, or else the run of characters
  // up to the next match start (a gap, which with !tiles() Split's Isolated keeps and Removed with
  // invert drops). Sets *gap accordingly.
  size_t piece_at(const uint8_t* p, size_t n, size_t at, bool* gap) const;
  // The matches of `text`, left to right.
  void find_all(std::string_view text, std::vector<std::pair<size_t, size_t>>& out) const;
  bool tiles() const { return family_ != ScanFamily::kAeolian && family_ != ScanFamily::kAscra; }

  ScanFamily family() const { return family_; }
  int max_digits() const { return max_digits_; }  // 0: unbounded
  std::string name() const;

 private:
  size_t gpt2(const uint8_t* p, size_t n, size_t i) const;
  size_t cl100k(const uint8_t* p, size_t n, size_t i) const;
  size_t o200k(const uint8_t* p, size_t n, size_t i) const;
  size_t aeolian(const uint8_t* p, size_t n, size_t i) const;  // scanner_aeolian.cc

  ScanFamily family_;
  int max_digits_;
};

// The canonical spelling of an Oniguruma pattern, for recognising known patterns however they are
// written (exposed for tests).
std::string canonical_pattern(const std::string& pattern);

// Character classes as PCRE2 sees them with the translated pattern (exposed for tests).
enum CharFlag : uint8_t {
  kCharL = 1,      // \p{L}
  kCharN = 2,      // \p{N}
  kCharSpace = 4,  // \s: White_Space
  kCharUpper = 8,  // [\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]
  kCharLower = 16, // [\p{Ll}\p{Lm}\p{Lo}\p{M}]
};
uint8_t char_flags(uint32_t cp);
// The classes only aeolian and ascra use, in a table of their own (built when one is first made).
enum AeolianFlag : uint8_t {
  kCharWord = 1,       // a word character of \b as translated (Oniguruma's, regex.cc)
  kCharPunctSym = 2,   // [\p{P}\p{S}]
  kCharOtherSym = 4,   // \p{So}
};
uint8_t aeolian_flags(uint32_t cp);

// Whether Regex may use scanners (default true): false makes every tokenizer loaded afterwards
// match with PCRE2 only, for differential tests and benchmarks of the general path.
void set_scanners_enabled(bool enabled);
bool scanners_enabled();

// The pattern of a family as tokenizer.json files spell it (\p{N}{1,max_digits} where it has a
// digit quantifier), e.g. for benchmarks that build a tokenizer around it.
std::string known_pattern(ScanFamily family, int max_digits = 3);

// A text that exercises every branch of the scanners (probe for recognition, seeds for tests).
const std::string& scanner_probe_text();

}  // namespace huginn::tok
