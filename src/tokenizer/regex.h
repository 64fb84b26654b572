// Regexes of tokenizer.json files (written for Oniguruma, the Rust library's engine), run by
// PCRE2 with UTF + UCP and JIT. The pattern is translated so that PCRE2 matches what Oniguruma
// matches: \s is exactly Unicode White_Space, \w and \b use Oniguruma's word class, \h a hex digit, and
// \p{..} general categories follow Unicode 16.0 (the oracle's version) even when the linked PCRE2
// carries older tables (the difference is patched in from unicode_delta.inc).
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace huginn::tok {

class Scanner;

class Regex {
 public:
  // `where` names the pattern's place (file and field) in error messages. A pattern that a
  // hand-written scanner knows (scanner.h) is matched by it unless `allow_scanner` is false; the
  // results are the same.
  Regex(const std::string& oniguruma_pattern, const std::string& where, bool allow_scanner = true);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // Finds the leftmost match at or after `from` in `text` (valid UTF-8); returns false when
  // there is none. Empty matches are reported like any other.
  bool find(std::string_view text, size_t from, size_t* start, size_t* end) const;

  // The non-overlapping matches, left to right, as [start, end) pairs; after an empty match the
  // search resumes one character later.
  void find_all(std::string_view text, std::vector<std::pair<size_t, size_t>>& out) const;

  const std::string& pcre_pattern() const { return translated_; }
  // The scanner in use, or nullptr (PCRE2 matches).
  const Scanner* scanner() const { return scanner_.get(); }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::unique_ptr<Scanner> scanner_;
  std::string translated_;
};

// Exposed for tests: the PCRE2 pattern for an Oniguruma pattern, and the Unicode version of the
// linked PCRE2's tables.
std::string translate_oniguruma(const std::string& pattern, const std::string& where);
std::string pcre2_unicode_version();
// The short name of a general category (\p{Letter} -> L, \p{L&} -> LC).
std::string canonical_category(std::string name);

}  // namespace huginn::tok
