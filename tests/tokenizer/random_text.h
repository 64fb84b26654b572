// Random texts for differential tests of the pre-tokenizer scanners against PCRE2: arbitrary
// Unicode (every plane, weighted towards the characters the patterns treat specially: letters of
// each case class, marks, digits of all kinds, White_Space, \r \n / and apostrophes before
// contraction letters, characters whose category changed in Unicode 15 and 16) and, optionally,
// invalid UTF-8 bytes.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "tokenizer/unicode.h"

namespace huginn::test {

// The number of random strings per differential check: HUGINN_DIFF_STRINGS, default 20,000.
inline int diff_strings() {
  const char* e = std::getenv("HUGINN_DIFF_STRINGS");
  return e ? std::max(1, std::atoi(e)) : 20000;
}

class RandomText {
 public:
  explicit RandomText(uint64_t seed) : rng_(seed) {}

  // A string of 0..max_chars characters; with `invalid`, some bytes that are not UTF-8.
  std::string next(int max_chars, bool invalid) {
    std::string s;
    const int n = static_cast<int>(pick(max_chars + 1));
    for (int k = 0; k < n; ++k) append_char(s, invalid);
    return s;
  }

  // One random character, or with `invalid` sometimes a byte that is not UTF-8.
  void append_char(std::string& s, bool invalid) {
    if (invalid && pick(40) == 0) {
      static const uint8_t bad[] = {0x80, 0xBF, 0xC0, 0xC1, 0xF5, 0xFF, 0xE0, 0xED, 0xF0, 0xF4, 0xC3};
      s.push_back(static_cast<char>(bad[pick(sizeof bad)]));
      return;
    }
    tok::utf8_append(s, next_char());
  }

  // Up to max_items items, each a random character or, half the time, one of `fragments`
  // (spellings a pattern treats specially); with `invalid`, some bytes that are not UTF-8.
  std::string next_mixed(int max_items, const std::vector<std::string>& fragments, bool invalid) {
    std::string s;
    const int n = static_cast<int>(pick(max_items + 1));
    for (int k = 0; k < n; ++k) {
      if (pick(2) == 0)
        s += fragments[pick(fragments.size())];
      else
        append_char(s, invalid);
    }
    return s;
  }

  int32_t next_char() {
    static const char kAscii[] = "aAsStTrReEvVmMlLdDxyzQ0123456789 '''\r\n\t/.,;:!?-_()[]{}\"#$%&*+<=>@\\^`|~";
    static const int32_t kSpecial[] = {
        0x00A0, 0x0085, 0x1680, 0x2000, 0x2009, 0x200A, 0x2028, 0x2029, 0x202F, 0x205F, 0x3000,  // \s
        0x000B, 0x000C, 0x001C, 0x001F, 0x200B, 0xFEFF, 0x180E,  // not \s (or not any more)
        0x017F, 0x212A, 0x0130, 0x0131, 0x00DF, 0x1E9E,          // case-folding oddities
        0x01C5, 0x01C8, 0x1F88, 0x02B0, 0x02B1, 0x3005, 0x01C2, 0x05D0, 0x4E2D, 0xAC00,  // Lt Lm Lo
        0x00E9, 0x00C9, 0x0391, 0x03B1, 0x0416, 0x0436, 0xFF21, 0xFF41,                // Lu Ll
        0x0301, 0x0302, 0x0903, 0x20DD, 0x093F, 0x0E31, 0xFE0F, 0x200D,                // M*, ZWJ
        0x0660, 0x0966, 0xFF10, 0x00BD, 0x00B2, 0x2167, 0x3007, 0x1D7CE,              // N*
        0x00B7, 0x2019, 0x2014, 0x00A7, 0x20AC, 0x1F600, 0x1F3FD, 0x1F1E9,            // P* S*
        0xA7CE, 0x1E4D0, 0x11F04, 0x1612A, 0x10D4A, 0x0897, 0x1C89, 0x31350, 0xE000, 0xFFFF, 0x10FFFF};
    switch (pick(8)) {
      case 0: case 1: case 2: case 3:
        return static_cast<unsigned char>(kAscii[pick(sizeof kAscii - 1)]);
      case 4: case 5:
        return kSpecial[pick(sizeof kSpecial / sizeof kSpecial[0])];
      case 6:
        return static_cast<int32_t>(pick(0x800));  // Latin, Greek, Cyrillic, Hebrew, Arabic...
      default: {
        for (;;) {  // anywhere, surrogates excluded
          int32_t cp = static_cast<int32_t>(pick(0x110000));
          if (cp < 0xD800 || cp > 0xDFFF) return cp;
        }
      }
    }
  }

  uint64_t pick(uint64_t n) { return std::uniform_int_distribution<uint64_t>(0, n - 1)(rng_); }

 private:
  std::mt19937_64 rng_;
};

}  // namespace huginn::test
