// The scanner of the "aeolian" split pattern of the Huginn-0125 authors' tokenizer script (the rule
// their create_tokenizer builds Huginn-0125's tokenizer with) and of "ascra", the same pattern with
// [\p{P}\p{S}]+ for [\p{P}\p{S}]. The pattern, as PCRE2 runs it (UTF, UCP, MULTILINE):
//
//   ( A  \\n(?:e(?:wcommand|wenvironment|wline|wpage|wtheorem)|abla|e|eq|geq|gtr|leq|exists|ocite|
//          oindent|olinebreak|onumber|opagebreak|ormalsize|ot(?!(?:ag\b|\b)))\b
//   | B  \n+
//   | C  \\n(?!\b)
//   | D  \p{N}{1,1}
//   | E  (?: E1 [ \t](?:==|!=|<=|>=|<<|>>|\*\*|//|\+=|-=|\*=|/=|%=|&=|\|=|\^=|<<=|>>=|\*\*=|//=|:=|
//                     \+\+|--|[\p{L}]+['ʼ](?:\p{L}+)\b|\\[a-zA-Z]+|\\{|\\}|{|}|\\\[|\\\]|\[|\]|
//                     \(|\)|_+|\||\+|-|\*|—|-|=|\*\*|^|[.,!?;()]|\$\$?|`+|\"+|\#+|
//                     \p{N}+(?:st|nd|rd|th)|<0x[0-9A-Fa-f]{1,2}>)
//          | E2 [^\r\n\p{L}\p{N}]?\p{L}+
//          | E3 [\p{P}\p{S}]                                  (ascra: [\p{P}\p{S}]+)
//   | F  \s+
//   | G  \p{So} )
//
// No alternative can match empty, and nothing follows any of them, so at a position the first
// alternative that matches gives the match (leftmost-first); backtracking happens only inside E1's
// letters-apostrophe-letters word, whose \b may need shorter runs (below). Facts the code uses:
// - \b is Oniguruma's (regex.cc translates it into lookarounds over Oniguruma's word class, which
//   differs from PCRE2's own): the scanner's word characters are computed from that translated \b
//   on all code points. Every letter is a word character, but so are marks, ², Ⅷ, ‿ and circled
//   letters, so \b after letters can fail; the code does not assume which characters are words.
// - In A, each literal ends in a letter, so at most one can be followed by \b. "ot" cannot match
//   at all: (?!(?:ag\b|\b)) forbids the \b that must follow it.
// - In E1, `^` is an anchor (MULTILINE: start of subject or after \n) and comes right after a
//   space or tab: it never matches. `<<=`, `>>=`, `**=`, `//=` and the second `\*\*` and `-` come
//   after alternatives that match their prefixes: they never win. `{` and `}` are literal.
// - ['ʼ] is the class written ['' ʼ] in the script (U+0027 twice and U+02BC MODIFIER LETTER
//   APOSTROPHE, which is itself \p{Lm}).
// - A character none of these match (a lone mark, a control that is not \s, a format character,
//   private use, unassigned) starts no match: the matches do not tile the text (Scanner::tiles).
#include <cstring>
#include <string_view>

#include "tokenizer/regex.h"
#include "tokenizer/scanner.h"
#include "tokenizer/scanner_chars.h"

namespace huginn::tok {

using namespace scan;

namespace {

// kCharWord from the regex path's \b itself: its matches in the text of all code points, in order,
// flip the word-ness of the character after them (the subject's start counts as non-word).
const CharTable& aeolian_table() {
  static const CharTable t = [] {
    std::vector<uint8_t> flags =
        flags_from_pcre2({{"[\\p{P}\\p{S}]+", kCharPunctSym}, {"\\p{So}+", kCharOtherSym}});
    const AllCodePoints all = all_code_points();
    Regex boundary("\\b", "scanner character table", /*allow_scanner=*/false);
    std::vector<std::pair<size_t, size_t>> m;
    boundary.find_all(all.text, m);
    bool word = false;
    for (size_t k = 0, j = 0; k < all.starts.size(); ++k) {
      while (j < m.size() && m[j].first < all.starts[k]) ++j;
      if (j < m.size() && m[j].first == all.starts[k]) word = !word;
      if (word) flags[nth_code_point(k)] |= kCharWord;
    }
    return table_from_flags(flags);
  }();
  return t;
}

inline bool is_apostrophe(uint32_t cp) { return cp == 0x27 || cp == 0x2BC; }
inline bool is_ascii_letter(uint8_t b) { return (b | 0x20) >= 'a' && (b | 0x20) <= 'z'; }
inline bool is_hex(uint8_t b) { return (b >= '0' && b <= '9') || ((b | 0x20) >= 'a' && (b | 0x20) <= 'f'); }

// The subject p[0, n) with both tables.
struct Subject {
  const CharTable& t;  // CharFlag
  const CharTable& x;  // AeolianFlag
  const uint8_t* p;
  size_t n;

  bool has(size_t k, std::string_view s) const {
    return k + s.size() <= n && std::memcmp(p + k, s.data(), s.size()) == 0;
  }
  size_t run(size_t k, uint8_t byte) const {
    while (k < n && p[k] == byte) ++k;
    return k;
  }
  bool word_at(size_t k) const { return k < n && (char_at(x, p, k).flags & kCharWord); }
  bool word_before(size_t k) const {
    if (k == 0) return false;
    size_t j = k - 1;
    while ((p[j] & 0xC0) == 0x80) --j;
    return char_at(x, p, j).flags & kCharWord;
  }
  bool boundary(size_t k) const { return word_before(k) != word_at(k); }
  // The largest character position e in (lo, hi] with \b at e, or 0.
  size_t last_boundary(size_t lo, size_t hi) const {
    for (size_t e = hi; e > lo;) {
      if (boundary(e)) return e;
      do --e;
      while (e > lo && (p[e] & 0xC0) == 0x80);
    }
    return 0;
  }
  size_t letters(size_t k) const { return letters_end(t, p, n, k); }
};

// A: the end of \\n + one of the LaTeX names + \b, with j just after "\\n"; or 0.
size_t latex_end(const Subject& s, size_t j) {
  static constexpr std::string_view kNames[] = {
      "ewcommand", "ewenvironment", "ewline", "ewpage", "ewtheorem", "abla",      "e",
      "eq",        "geq",           "gtr",    "leq",    "exists",    "ocite",     "oindent",
      "olinebreak", "onumber",      "opagebreak", "ormalsize"};  // "ot" never matches (above)
  for (std::string_view name : kNames)
    if (s.has(j, name) && s.boundary(j + name.size())) return j + name.size();
  return 0;
}

// [\p{L}]+['ʼ](?:\p{L}+)\b from k, a letter whose run ends at r; the end, or 0. The first run
// gives characters back from r until an apostrophe follows it; the second run, greedy, ends where
// the letters end, then gives characters back until \b holds after it.
size_t apostrophe_word_end(const Subject& s, size_t k, size_t r) {
  if (r < s.n) {  // an apostrophe right after the letters (U+0027: never a letter)
    Ch q = char_at(s.t, s.p, r);
    if (is_apostrophe(q.cp)) {
      const size_t b = r + q.len, r2 = s.letters(b);
      if (r2 > b)
        if (size_t e = s.last_boundary(b, r2)) return e;
    }
  }
  // An apostrophe that is a letter (ʼ, U+02BC) inside the run, the rightmost first: the second
  // run then ends at r, backing off to the last \b in it, which is the same for every such
  // apostrophe. (U+0027 is never a letter, so it is never inside the run.)
  const uint8_t* a = static_cast<const uint8_t*>(memmem(s.p + k + 1, r - k - 1, "\xCA\xBC", 2));
  if (!a) return 0;  // the usual case: one search of the word's bytes
  const size_t e = s.last_boundary(k, r);
  return e != 0 && static_cast<size_t>(a - s.p) + 2 < e ? e : 0;
}

// E1 after the space or tab, from k < n: the end, or 0. With a letter at k, where E1 fails E2
// takes the space and the letters: that end is returned (the caller would find it next).
size_t spaced_end(const Subject& s, size_t k) {
  const uint8_t* p = s.p;
  auto two = [&](const char* a, const char* b) { return s.has(k, a) || (b && s.has(k, b)); };
  switch (p[k]) {
    case '=': return k + (two("==", nullptr) ? 2 : 1);
    case '!': return k + (two("!=", nullptr) ? 2 : 1);  // then [.,!?;()]
    case '<':
      if (two("<=", "<<")) return k + 2;
      if (s.has(k, "<0x")) {  // <0x[0-9A-Fa-f]{1,2}>: a third hex digit is never '>'
        size_t h = k + 3;
        while (h < s.n && h < k + 5 && is_hex(p[h])) ++h;
        if (h > k + 3 && h < s.n && p[h] == '>') return h + 1;
      }
      return 0;
    case '>': return two(">=", ">>") ? k + 2 : 0;
    case '*': return k + (two("**", "*=") ? 2 : 1);
    case '/': return two("//", "/=") ? k + 2 : 0;
    case '+': return k + (two("+=", "++") ? 2 : 1);
    case '-': return k + (two("-=", "--") ? 2 : 1);
    case '%': return two("%=", nullptr) ? k + 2 : 0;
    case '&': return two("&=", nullptr) ? k + 2 : 0;
    case '|': return k + (two("|=", nullptr) ? 2 : 1);
    case '^':
      if (two("^=", nullptr)) return k + 2;
      return p[k - 1] == '\n' ? k : 0;  // the anchor `^` after [ \t]: never (see the top)
    case ':': return two(":=", nullptr) ? k + 2 : 0;
    case '\\':
      if (k + 1 < s.n && is_ascii_letter(p[k + 1])) {
        size_t e = k + 1;
        while (e < s.n && is_ascii_letter(p[e])) ++e;
        return e;
      }
      if (k + 1 < s.n && (p[k + 1] == '{' || p[k + 1] == '}' || p[k + 1] == '[' || p[k + 1] == ']'))
        return k + 2;
      return 0;
    case '{': case '}': case '[': case ']': case '(': case ')':
    case '.': case ',': case '?': case ';':
      return k + 1;
    case '_': case '`': case '"': case '#': return s.run(k, p[k]);
    case '$': return k + (two("$$", nullptr) ? 2 : 1);
    default: break;
  }
  if (s.has(k, "\u2014")) return k + 3;  // em dash
  Ch c = char_at(s.t, p, k);
  if (c.flags & kCharL) {
    const size_t r = s.letters(k);
    const size_t e = apostrophe_word_end(s, k, r);
    return e ? e : r;  // else E2: the space or tab and the letters
  }
  if (c.flags & kCharN) {  // \p{N}+(?:st|nd|rd|th): no suffix letter is \p{N}
    const size_t d = digits_end(s.t, p, s.n, k, 0);
    if (s.has(d, "st") || s.has(d, "nd") || s.has(d, "rd") || s.has(d, "th")) return d + 2;
  }
  return 0;
}

}  // namespace

uint8_t aeolian_flags(uint32_t cp) { return cp < kMaxCp ? aeolian_table()[cp] : 0; }

size_t Scanner::aeolian(const uint8_t* p, size_t n, size_t i) const {
  const Subject s{char_table(), aeolian_table(), p, n};
  const uint8_t b = p[i];
  const bool backslash_n = s.has(i, "\\n");
  if (backslash_n)
    if (size_t e = latex_end(s, i + 2)) return e;      // A
  if (b == '\n') return s.run(i, '\n');                // B
  if (backslash_n && !s.boundary(i + 2)) return i + 2; // C
  const Ch c = char_at(s.t, p, i);
  if (c.flags & kCharN) return i + c.len;              // D
  if ((b == ' ' || b == '\t') && i + 1 < n)            // E1
    if (size_t e = spaced_end(s, i + 1)) return e;
  if (c.flags & kCharL) return s.letters(i);           // E2, without the optional character
  if (is_prefix(c) && i + c.len < n && (char_at(s.t, p, i + c.len).flags & kCharL))
    return s.letters(i + c.len);                       // E2, with it
  const uint8_t x = char_at(s.x, p, i).flags;
  if (x & kCharPunctSym) {                             // E3
    if (family_ != ScanFamily::kAscra) return i + c.len;
    return run_end(s.x, p, n, i, [](uint8_t f, uint32_t) { return (f & kCharPunctSym) != 0; });
  }
  if (c.flags & kCharSpace)                            // F
    return run_end(s.t, p, n, i, [](uint8_t f, uint32_t) { return (f & kCharSpace) != 0; });
  if (x & kCharOtherSym) return i + c.len;             // G
  return i;
}

}  // namespace huginn::tok
