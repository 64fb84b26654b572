// Internals shared by the pre-tokenizer scanners (scanner.cc, scanner_aeolian.cc): the character
// table built from PCRE2 and reading valid UTF-8 with it. Not part of the tokenizer's interface.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "tokenizer/scanner.h"

namespace huginn::tok::scan {

constexpr uint32_t kMaxCp = 0x110000;

// Flags of every code point, two-stage (256-code-point blocks, shared when equal).
struct CharTable {
  std::array<uint8_t, 128> ascii{};
  std::vector<uint16_t> stage1;  // cp >> 8 -> block
  std::vector<uint8_t> stage2;   // block * 256 + (cp & 255) -> flags
  uint8_t operator[](uint32_t cp) const {
    return cp < 128 ? ascii[cp] : stage2[(static_cast<size_t>(stage1[cp >> 8]) << 8) | (cp & 0xFF)];
  }
};

// Flags of every code point (kMaxCp of them) whose bit b is set for the code points that PCRE2
// matches with pattern p, for each (p, b) of `classes` (each p one class with `+`, spelled as in
// tokenizer.json: Regex translates it as it translates the split patterns).
std::vector<uint8_t> flags_from_pcre2(const std::vector<std::pair<std::string, uint8_t>>& classes);
CharTable table_from_flags(const std::vector<uint8_t>& flags);
// The text of all code points in order (surrogates skipped) that flags are computed on, and the
// byte offset of each one's character in it.
struct AllCodePoints {
  std::string text;
  std::vector<uint32_t> starts;
};
AllCodePoints all_code_points();
// The k-th code point of that text.
inline uint32_t nth_code_point(size_t k) {
  return static_cast<uint32_t>(k >= 0xD800 ? k + 0x800 : k);  // the surrogates were skipped
}

// The table of CharFlag (scanner.h).
const CharTable& char_table();

// ---------------------------------------------------------------------------------------------
// Reading valid UTF-8.

struct Ch {
  uint32_t cp;
  uint8_t len, flags;
};

inline Ch char_at(const CharTable& t, const uint8_t* p, size_t i) {
  uint8_t c = p[i];
  if (c < 0x80) return {c, 1, t.ascii[c]};
  uint32_t cp;
  uint8_t len;
  if (c < 0xE0) {
    cp = ((c & 0x1Fu) << 6) | (p[i + 1] & 0x3Fu), len = 2;
  } else if (c < 0xF0) {
    cp = ((c & 0x0Fu) << 12) | ((p[i + 1] & 0x3Fu) << 6) | (p[i + 2] & 0x3Fu), len = 3;
  } else {
    cp = ((c & 0x07u) << 18) | ((p[i + 1] & 0x3Fu) << 12) | ((p[i + 2] & 0x3Fu) << 6) |
         (p[i + 3] & 0x3Fu);
    len = 4;
  }
  return {cp, len, t.stage2[(static_cast<size_t>(t.stage1[cp >> 8]) << 8) | (cp & 0xFF)]};
}

inline bool is_crlf(uint32_t cp) { return cp == '\r' || cp == '\n'; }
// [^\s\p{L}\p{N}]: punctuation, symbols, marks, controls that are not White_Space...
inline bool is_other(uint8_t f) { return (f & (kCharL | kCharN | kCharSpace)) == 0; }
// [^\r\n\p{L}\p{N}]: the optional character before a word.
inline bool is_prefix(const Ch& c) { return (c.flags & (kCharL | kCharN)) == 0 && !is_crlf(c.cp); }

// End of the run of characters from i whose flags satisfy `pred`.
template <class Pred>
inline size_t run_end(const CharTable& t, const uint8_t* p, size_t n, size_t i, Pred pred) {
  while (i < n) {
    if (p[i] < 0x80) {  // ASCII: one table load per byte
      if (!pred(t.ascii[p[i]], static_cast<uint32_t>(p[i]))) return i;
      ++i;
      continue;
    }
    Ch c = char_at(t, p, i);
    if (!pred(c.flags, c.cp)) return i;
    i += c.len;
  }
  return i;
}

inline size_t letters_end(const CharTable& t, const uint8_t* p, size_t n, size_t i) {
  return run_end(t, p, n, i, [](uint8_t f, uint32_t) { return (f & kCharL) != 0; });
}
inline size_t others_end(const CharTable& t, const uint8_t* p, size_t n, size_t i) {
  return run_end(t, p, n, i, [](uint8_t f, uint32_t) { return is_other(f); });
}
inline size_t crlf_end(const uint8_t* p, size_t n, size_t i) {
  while (i < n && (p[i] == '\r' || p[i] == '\n')) ++i;
  return i;
}

// Up to `max` (0: any number of) characters of \p{N} from i.
inline size_t digits_end(const CharTable& t, const uint8_t* p, size_t n, size_t i, int max) {
  int count = 0;
  while (i < n && (max == 0 || count < max)) {
    Ch c = char_at(t, p, i);
    if (!(c.flags & kCharN)) break;
    i += c.len;
    ++count;
  }
  return i;
}


}  // namespace huginn::tok::scan
