// Pre-tokenizer scanners (scanner.h). Each scanner follows its regex's alternatives in order; the
// comment above each one spells out how PCRE2's backtracking resolves them.
#include "tokenizer/scanner.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <cctype>
#include <cstdio>
#include <cstring>
#include <mutex>

#include "huginn/log.h"
#include "tokenizer/regex.h"
#include "tokenizer/scanner_chars.h"
#include "tokenizer/unicode.h"

namespace huginn::tok {

// ---------------------------------------------------------------------------------------------
// Character tables: built once per process by matching each class, as translated for PCRE2, over
// a text of all code points: the scanners then see exactly the categories the regex path sees.

namespace scan {

AllCodePoints all_code_points() {
  AllCodePoints a;
  a.text.reserve(4500000);
  a.starts.reserve(kMaxCp);
  for (uint32_t cp = 0; cp < kMaxCp; ++cp) {
    if (cp >= 0xD800 && cp <= 0xDFFF) continue;
    a.starts.push_back(static_cast<uint32_t>(a.text.size()));
    utf8_append(a.text, static_cast<int32_t>(cp));
  }
  return a;
}

std::vector<uint8_t> flags_from_pcre2(const std::vector<std::pair<std::string, uint8_t>>& classes) {
  const AllCodePoints all = all_code_points();
  const std::vector<uint32_t>& starts = all.starts;
  std::vector<uint8_t> flags(kMaxCp, 0);
  std::vector<std::pair<size_t, size_t>> m;
  for (const auto& [pattern, bit] : classes) {
    Regex re(pattern, "scanner character table", /*allow_scanner=*/false);
    m.clear();
    re.find_all(all.text, m);
    for (auto [a, b] : m) {
      // Byte offsets back to code points: starts is sorted.
      size_t k = std::lower_bound(starts.begin(), starts.end(), a) - starts.begin();
      for (; k < starts.size() && starts[k] < b; ++k) flags[nth_code_point(k)] |= bit;
    }
  }
  return flags;
}

CharTable table_from_flags(const std::vector<uint8_t>& flags) {
  CharTable t;
  t.stage1.resize(kMaxCp >> 8);
  for (uint32_t b = 0; b < (kMaxCp >> 8); ++b) {
    const uint8_t* block = flags.data() + (b << 8);
    uint16_t found = 0xFFFF;
    for (size_t k = 0; k * 256 < t.stage2.size(); ++k)
      if (std::memcmp(t.stage2.data() + k * 256, block, 256) == 0) {
        found = static_cast<uint16_t>(k);
        break;
      }
    if (found == 0xFFFF) {
      found = static_cast<uint16_t>(t.stage2.size() / 256);
      t.stage2.insert(t.stage2.end(), block, block + 256);
    }
    t.stage1[b] = found;
  }
  for (int c = 0; c < 128; ++c) t.ascii[c] = flags[c];
  return t;
}

const CharTable& char_table() {
  static const CharTable t = table_from_flags(flags_from_pcre2({{"\\p{L}+", kCharL},
                                               {"\\p{N}+", kCharN},
                                               {"\\s+", kCharSpace},
                                               {"[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+", kCharUpper},
                                               {"[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+", kCharLower}}));
  return t;
}

}  // namespace scan

using namespace scan;

namespace {

// 's|'t|'re|'ve|'m|'ll|'d at i (an apostrophe), case-sensitive or (?i:...); the end, or i.
// Caseless, PCRE2 also matches U+017F LATIN SMALL LETTER LONG S for 's'.
inline size_t contraction_end(const uint8_t* p, size_t n, size_t i, bool caseless) {
  if (i + 1 >= n || p[i] != '\'') return i;
  auto lower = [&](size_t k) -> int {
    if (k >= n) return 0;
    int c = p[k];
    return caseless && c >= 'A' && c <= 'Z' ? c + 32 : c;
  };
  int a = lower(i + 1);
  if (a == 's' || a == 't' || a == 'm' || a == 'd') return i + 2;
  if ((a == 'r' || a == 'v') && lower(i + 2) == 'e') return i + 3;
  if (a == 'l' && lower(i + 2) == 'l') return i + 3;
  if (caseless && p[i + 1] == 0xC5 && i + 2 < n && p[i + 2] == 0xBF) return i + 3;  // U+017F
  return i;
}

// A run of White_Space from i, through the alternatives
//   \s*[\r\n]+    (newlines: when the run holds \r or \n, up to and including the last one)
//   \s+(?!\S)     (at the end of the text all of it, else all but its last character)
//   \s+
// `newline_rule` is false for GPT-2, whose pattern has only the last two.
inline size_t space_end(const CharTable& t, const uint8_t* p, size_t n, size_t i, bool newline_rule) {
  size_t j = i, last_start = i, after_crlf = 0;
  int chars = 0;
  while (j < n) {
    uint8_t b = p[j];
    if (b < 0x80) {
      if (!(t.ascii[b] & kCharSpace)) break;
      if (b == '\r' || b == '\n') after_crlf = j + 1;
      last_start = j++;
    } else {
      Ch c = char_at(t, p, j);
      if (!(c.flags & kCharSpace)) break;
      last_start = j;
      j += c.len;
    }
    ++chars;
  }
  if (newline_rule && after_crlf) return after_crlf;
  if (j == n || chars < 2) return j;
  return last_start;
}

}  // namespace
uint8_t char_flags(uint32_t cp) { return cp < kMaxCp ? char_table()[cp] : 0; }

// ---------------------------------------------------------------------------------------------
// The scanners

Scanner::Scanner(ScanFamily family, int max_digits) : family_(family), max_digits_(max_digits) {
  char_table();  // built now, not in the first encode
}

std::string Scanner::name() const {
  std::string d = max_digits_ == 0 ? "+" : "{1," + std::to_string(max_digits_) + "}";
  switch (family_) {
    case ScanFamily::kGpt2: return "gpt2";
    case ScanFamily::kCl100k: return "cl100k (\\p{N}" + d + ")";
    case ScanFamily::kPunct: return "punct (\\p{N}" + d + ")";
    case ScanFamily::kO200k: return "o200k";
    case ScanFamily::kAeolian: return "aeolian";
    case ScanFamily::kAscra: return "ascra";
  }
  return "?";
}

// 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
size_t Scanner::gpt2(const uint8_t* p, size_t n, size_t i) const {
  const CharTable& t = char_table();
  if (size_t e = contraction_end(p, n, i, false); e > i) return e;
  Ch c = char_at(t, p, i);
  size_t s = i;
  uint8_t f = c.flags;
  if (c.cp == ' ' && i + 1 < n) {  // the optional space: taken when a run follows it
    Ch d = char_at(t, p, i + 1);
    if (d.flags & (kCharL | kCharN) || is_other(d.flags)) s = i + 1, f = d.flags;
  }
  if (f & kCharL) return letters_end(t, p, n, s);
  if (f & kCharN) return digits_end(t, p, n, s, 0);
  if (is_other(f)) return others_end(t, p, n, s);
  return space_end(t, p, n, i, false);
}

// cl100k, and with contractions and the prefix class replaced by ` ?` the "punct" rules:
//   (?i:'s|'t|'re|'ve|'m|'ll|'d)            contractions first
//   [^\r\n\p{L}\p{N}]?\p{L}+                one non-letter, non-digit, non-newline, then letters
//   \p{N}{1,K}
//    ?[^\s\p{L}\p{N}]+[\r\n]*
//   then the run of white space.
size_t Scanner::cl100k(const uint8_t* p, size_t n, size_t i) const {
  const CharTable& t = char_table();
  const bool punct = family_ == ScanFamily::kPunct;
  if (!punct)
    if (size_t e = contraction_end(p, n, i, true); e > i) return e;
  Ch c = char_at(t, p, i);
  if (c.flags & kCharL) return letters_end(t, p, n, i);
  const bool prefix = punct ? c.cp == ' ' : is_prefix(c);
  if (prefix && i + c.len < n && (char_at(t, p, i + c.len).flags & kCharL))
    return letters_end(t, p, n, i + c.len);
  if (c.flags & kCharN) return digits_end(t, p, n, i, max_digits_);
  size_t s = i;
  if (c.cp == ' ' && i + 1 < n && is_other(char_at(t, p, i + 1).flags)) s = i + 1;
  if (s > i || is_other(c.flags)) return crlf_end(p, n, others_end(t, p, n, s));
  return space_end(t, p, n, i, true);
}

// o200k:
//   B1 [^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|...)?
//   B2 [^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|...)?
//   \p{N}{1,3} |  ?[^\s\p{L}\p{N}]+[\r\n/]* | the run of white space.
// With U the first class and W the second (they share Lm, Lo and M): for B1 from s, U* takes the
// whole U-run [s, u); W+ then matches at u when that character is in W (to the end of the W-run),
// else backtracking gives back U characters until one in W is found (the last one of the run in
// W: the match ends after it), else B1 fails from s. B2 needs a U character at s; U+ takes the
// run and W* the W-run after it. Each is tried with the optional prefix character taken, then
// without it (a mark is both a prefix and in U and W).
size_t Scanner::o200k(const uint8_t* p, size_t n, size_t i) const {
  const CharTable& t = char_table();
  Ch c = char_at(t, p, i);
  const bool can_prefix = is_prefix(c);
  auto b1 = [&](size_t s) -> size_t {  // end, or 0 for no match
    size_t last_w = 0;  // end of the last U character that is also in W
    size_t u = s;
    while (u < n) {
      Ch d = char_at(t, p, u);
      if (!(d.flags & kCharUpper)) break;
      u += d.len;
      if (d.flags & kCharLower) last_w = u;
    }
    if (u < n && (char_at(t, p, u).flags & kCharLower))
      return run_end(t, p, n, u, [](uint8_t f, uint32_t) { return (f & kCharLower) != 0; });
    return last_w;
  };
  auto b2 = [&](size_t s) -> size_t {
    if (s >= n || !(char_at(t, p, s).flags & kCharUpper)) return 0;
    size_t u = run_end(t, p, n, s, [](uint8_t f, uint32_t) { return (f & kCharUpper) != 0; });
    return run_end(t, p, n, u, [](uint8_t f, uint32_t) { return (f & kCharLower) != 0; });
  };
  for (int branch = 1; branch <= 2; ++branch)
    for (int take = can_prefix ? 1 : 0; take >= 0; --take) {
      const size_t s = i + (take ? c.len : 0);
      const size_t e = branch == 1 ? b1(s) : b2(s);
      if (e > 0) return contraction_end(p, n, e, true);
    }
  if (c.flags & kCharN) return digits_end(t, p, n, i, 3);
  size_t s = i;
  if (c.cp == ' ' && i + 1 < n && is_other(char_at(t, p, i + 1).flags)) s = i + 1;
  if (s > i || is_other(c.flags)) {
    size_t e = others_end(t, p, n, s);
    while (e < n && (p[e] == '\r' || p[e] == '\n' || p[e] == '/')) ++e;
    return e;
  }
  return space_end(t, p, n, i, true);
}

size_t Scanner::match_at(const uint8_t* p, size_t n, size_t at) const {
  switch (family_) {
    case ScanFamily::kGpt2: return gpt2(p, n, at);
    case ScanFamily::kCl100k:
    case ScanFamily::kPunct: return cl100k(p, n, at);
    case ScanFamily::kO200k: return o200k(p, n, at);
    case ScanFamily::kAeolian:
    case ScanFamily::kAscra: return aeolian(p, n, at);
  }
  return n;
}

namespace {
inline size_t utf8_length(uint8_t lead) { return lead < 0xE0 ? (lead < 0x80 ? 1 : 2) : (lead < 0xF0 ? 3 : 4); }
}  // namespace

size_t Scanner::piece_at(const uint8_t* p, size_t n, size_t at, bool* gap) const {
  size_t e = match_at(p, n, at);
  *gap = e == at;
  if (!*gap) return e;
  do e += utf8_length(p[e]);
  while (e < n && match_at(p, n, e) == e);
  return e;
}

void Scanner::find_all(std::string_view text, std::vector<std::pair<size_t, size_t>>& out) const {
  const auto* p = reinterpret_cast<const uint8_t*>(text.data());
  for (size_t i = 0, n = text.size(); i < n;) {
    bool gap;
    const size_t e = piece_at(p, n, i, &gap);
    if (!gap) out.emplace_back(i, e);
    i = e;
  }
}

// ---------------------------------------------------------------------------------------------
// Recognition

namespace {

// An escaped code point: non-ASCII ones (never syntax) as their character, so that `\x{2BC}`
// and `ʼ` are the same; ASCII ones as \x{..}, the spelling literal control characters get too.
std::string hex_escape(uint32_t cp) {
  if (cp >= 0x80 && cp < 0x110000 && (cp < 0xD800 || cp > 0xDFFF)) {
    std::string s;
    utf8_append(s, static_cast<int32_t>(cp));
    return s;
  }
  char buf[16];
  std::snprintf(buf, sizeof buf, "\\x{%X}", cp);
  return buf;
}

// One escape sequence at p[i] == '\\'; advances i past it.
std::string canonical_escape(const std::string& p, size_t& i) {
  char e = i + 1 < p.size() ? p[i + 1] : '\\';
  i += 2;
  auto hex = [&](size_t from, size_t len) -> uint32_t {
    return static_cast<uint32_t>(std::stoul(p.substr(from, len), nullptr, 16));
  };
  switch (e) {
    case 'r': return hex_escape('\r');
    case 'n': return hex_escape('\n');
    case 't': return hex_escape('\t');
    case 'f': return hex_escape('\f');
    case 'v': return hex_escape('\v');
    case 'x':
      if (i < p.size() && p[i] == '{') {
        size_t close = p.find('}', i);
        if (close == std::string::npos) return "\\x";
        uint32_t v = hex(i + 1, close - i - 1);
        i = close + 1;
        return hex_escape(v);
      }
      if (i + 2 <= p.size()) {
        uint32_t v = hex(i, 2);
        i += 2;
        return hex_escape(v);
      }
      return "\\x";
    case 'u':
      if (i + 4 <= p.size()) {
        uint32_t v = hex(i, 4);
        i += 4;
        return hex_escape(v);
      }
      return "\\u";
    case 'p':
    case 'P': {
      std::string name;
      if (i < p.size() && p[i] == '{') {
        size_t close = p.find('}', i);
        if (close == std::string::npos) return std::string("\\") + e;
        name = p.substr(i + 1, close - i - 1);
        i = close + 1;
      } else if (i < p.size()) {
        name = p.substr(i++, 1);
      }
      bool neg = e == 'P';
      if (!name.empty() && name[0] == '^') neg = !neg, name = name.substr(1);
      return std::string(neg ? "\\P{" : "\\p{") + canonical_category(name) + "}";
    }
    default:
      if (std::isalnum(static_cast<unsigned char>(e))) return std::string("\\") + e;
      if (std::strchr(".^$|?*+()[]{}\\/-", e)) return std::string("\\") + e;
      return std::string(1, e);  // a needless escape
  }
}

// A literal character at p[i] (one UTF-8 character); control characters as escapes.
std::string canonical_literal(const std::string& p, size_t& i) {
  uint8_t c = static_cast<uint8_t>(p[i]);
  if (c < 0x20 || c == 0x7F) {
    ++i;
    return hex_escape(c);
  }
  int len = 1;
  utf8_decode(p, i, &len);
  std::string s = p.substr(i, len);
  i += len;
  return s;
}

// A character class at p[i] == '['; advances past its ']'.
std::string canonical_class(const std::string& p, size_t& i) {
  ++i;
  bool neg = false;
  if (i < p.size() && p[i] == '^') neg = true, ++i;
  std::vector<std::string> items;
  bool first = true;
  while (i < p.size() && (p[i] != ']' || first)) {
    first = false;
    std::string item = p[i] == '\\' ? canonical_escape(p, i) : canonical_literal(p, i);
    if (i + 1 < p.size() && p[i] == '-' && p[i + 1] != ']') {  // a range
      ++i;
      item += "-" + (p[i] == '\\' ? canonical_escape(p, i) : canonical_literal(p, i));
    } else if (item == "-") {
      item = "\\-";
    }
    items.push_back(item);
  }
  ++i;  // ']'
  std::sort(items.begin(), items.end());
  items.erase(std::unique(items.begin(), items.end()), items.end());
  if (!neg && items.size() == 1 && (items[0].size() <= 4 || items[0].rfind("\\p{", 0) == 0 ||
                                    items[0].rfind("\\P{", 0) == 0))
    return items[0];
  std::string out = neg ? "[^" : "[";
  for (const std::string& s : items) out += s;
  return out + "]";
}

}  // namespace

std::string canonical_pattern(const std::string& p) {
  std::string out;
  for (size_t i = 0; i < p.size();) {
    if (p[i] == '\\') {
      out += canonical_escape(p, i);
    } else if (p[i] == '[') {
      out += canonical_class(p, i);
    } else if (p.compare(i, 5, "{1,1}") == 0) {
      i += 5;
    } else if (p.compare(i, 3, "{1}") == 0) {
      i += 3;
    } else {
      out += canonical_literal(p, i);
    }
  }
  return out;
}

namespace {

struct Known {
  ScanFamily family;
  std::string spelling;  // "%K%" stands for the digit quantifier
};

const char* const kAeolianHead =
    R"((\\n(?:e(?:wcommand|wenvironment|wline|wpage|wtheorem)|abla|e|eq|geq|gtr|leq|exists|ocite|)"
    R"(oindent|olinebreak|onumber|opagebreak|ormalsize|ot(?!(?:ag\b|\b)))\b|\n+|\\n(?!\b)|)"
    R"(\p{N}{1,1}|(?:[ \t](?:==|!=|<=|>=|<<|>>|\*\*|//|\+=|-=|\*=|/=|%=|&=|\|=|\^=|<<=|>>=|)"
    R"(\*\*=|//=|:=|\+\+|--|[\p{L}]+['')" "\u02BC" R"(](?:\p{L}+)\b|\\[a-zA-Z]+|\\{|\\}|{|}|)"
    R"(\\\[|\\\]|\[|\]|\(|\)|_+|\||\+|-|\*|)" "\u2014" R"(|-|=|\*\*|^|[.,!?;()]|\$\$?|`+|)"
    R"(\"+|\#+|\p{N}+(?:st|nd|rd|th)|<0x[0-9A-Fa-f]{1,2}>)|[^\r\n\p{L}\p{N}]?\p{L}+|)";

// The spellings in tokenizer.json files (Hugging Face) and in tiktoken, whose possessive forms
// match the same texts here: no alternative after them needs what they would give back.
const std::vector<Known>& known_patterns() {
  static const std::vector<Known> k = {
      {ScanFamily::kGpt2, "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+"},
      {ScanFamily::kCl100k,
       "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}%K%| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
       "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},
      {ScanFamily::kCl100k,
       "'(?i:[sdmt]|ll|ve|re)|[^\\r\\n\\p{L}\\p{N}]?+\\p{L}+|\\p{N}%K%| ?[^\\s\\p{L}\\p{N}]++[\\r\\n]*|"
       "\\s*[\\r\\n]|\\s+(?!\\S)|\\s+"},
      {ScanFamily::kPunct,
       " ?\\p{L}+|\\p{N}%K%| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},
      {ScanFamily::kO200k,
       "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+"
       "(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+"
       "[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+"
       "[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},
      // The Huginn-0125 authors' script, rules "aeolian" and "ascra" (its class ['' ʼ] twice
      // U+0027; `{`, `}` and the anchor `^` unescaped) as data: scanner_aeolian.cc.
      {ScanFamily::kAeolian, std::string(kAeolianHead) + "[\\p{P}\\p{S}])|\\s+|\\p{So})"},
      {ScanFamily::kAscra, std::string(kAeolianHead) + "[\\p{P}\\p{S}]+)|\\s+|\\p{So})"},
  };
  return k;
}

bool same_as_pcre2(const Scanner& s, const std::string& pattern) {
  Regex re(pattern, "scanner probe", /*allow_scanner=*/false);
  std::vector<std::pair<size_t, size_t>> a, b;
  const std::string& text = scanner_probe_text();
  // The probe text, and each of its lines alone (ends of text reach the lookahead).
  for (size_t start = 0; start < text.size();) {
    size_t end = text.find('\n', start + 1);
    end = end == std::string::npos ? text.size() : end;
    for (std::string_view v : {std::string_view(text).substr(start, end - start),
                               std::string_view(text).substr(start)}) {
      a.clear();
      b.clear();
      re.find_all(v, a);
      s.find_all(v, b);
      if (a != b) return false;
    }
    start = end;
  }
  return true;
}

}  // namespace

namespace {
std::atomic<bool> g_scanners_enabled{true};
}

void set_scanners_enabled(bool enabled) { g_scanners_enabled = enabled; }
bool scanners_enabled() { return g_scanners_enabled; }

std::unique_ptr<Scanner> Scanner::recognize(const std::string& pattern) {
  if (!g_scanners_enabled) return nullptr;
  const std::string canon = canonical_pattern(pattern);
  for (const Known& k : known_patterns()) {
    const std::string& sp = k.spelling;
    size_t at = sp.find("%K%");
    std::vector<std::pair<int, std::string>> forms;  // (max digits, spelling)
    if (at == std::string::npos) {
      forms.push_back({k.family == ScanFamily::kGpt2 ? 0 : 3, sp});
    } else {
      forms.push_back({0, sp.substr(0, at) + "+" + sp.substr(at + 3)});
      for (int d = 1; d <= 9; ++d)
        forms.push_back({d, sp.substr(0, at) + "{1," + std::to_string(d) + "}" + sp.substr(at + 3)});
    }
    for (const auto& [digits, spelling] : forms) {
      if (canonical_pattern(spelling) != canon) continue;
      auto s = std::make_unique<Scanner>(k.family, digits);
      if (same_as_pcre2(*s, pattern)) return s;
      HUGINN_LOG_WARN("tokenizer regex looks like the %s pattern but differs from PCRE2 on the probe "
                      "text; using PCRE2", s->name().c_str());
      return nullptr;
    }
  }
  return nullptr;
}

std::string known_pattern(ScanFamily family, int max_digits) {
  for (const Known& k : known_patterns()) {
    if (k.family != family) continue;
    std::string s = k.spelling;
    if (size_t at = s.find("%K%"); at != std::string::npos)
      s.replace(at, 3, "{1," + std::to_string(max_digits) + "}");
    return s;
  }
  return "";
}

const std::string& scanner_probe_text() {
  static const std::string text =
      "Hello world! It's a test: I'LL, we'Re, they've, 'd 'M 'S 'ſ ſ 'x 'll'\n"
      "  indented\tcode(x) {\r\n\treturn a+b; // comment\n}\n\n\n   \n"
      "numbers 1 12 123 1234 12345 ١٢٣٤ ½ ² 3.14 1,000,000 ⅧⅨ\n"
      "CamelCase HTTPServer iPhone ABC abc Ǆǅǆ ʰʱ ǂ x\u0301y \u0301\u0302A \u0301a a\u0301 "
      "ＡＢＣ ǅa DŽ\n"
      "ün naïve façade Ελληνικά Русский עברית العربية 中文字符 日本語のテキスト 한국어 "
      "हिन्दी தமிழ் ไทย\n"
      "emoji 😀👍🏽 👨‍👩‍👧 🇩🇪 #️⃣ ... !!! ??? --- /// a/b/c //\n/\n.\r\n/x\n"
      "  \u00A0\u3000\u2028\u0085\u200B\uFEFF x \u00A0y \u3000\n"
      "\r\r\n\n \n \t \r  end.   \n\t\n a\n  b \t c  \n"
      "'\n' '' ' 's\n\"quote\" (paren) [bracket] {brace} <tag> @user #hash $5 %d ^ & * _ = + ~ `\n"
      "U+A7CE:\uA7CE U+1E4D0:\U0001E4D0 U+11F04:\U00011F04 \U0001612A \U00010D4A\u0897x\n"
      " a  b   c    .    ,\n\n"
      // LaTeX and operators (aeolian, ascra)
      "\\newcommand \\nabla\\neq \\not \\notag \\nota \\ne5 \\ne_ \\n \\nx \\n\u0301 \\n\u00B2 \\n\n"
      "a == b != c <= d >= e << f >> g ** h // i += j -= k *= l /= m %= n &= o |= p ^= q <<= r "
      ">>= s **= t //= u := v ++ w -- x\t==\t^ ^ ^^ % & : / > \t/x\n"
      " don't we'll rock\u02BCn'roll O\u02BCneil can't5 it's_ x'y\u00B2 a'\U00010D4A b\u02BC "
      "\u02BC\u02BCx don't\U00010D4A- a\u02BCb\U00010D4A- a\u02BCb_\n"
      " \\alpha \\{ \\} { } \\[ \\] [ ] ( ) ___ | + - * \u2014 = . , ! ? ; $$ $ ``` \"\" ### "
      "1st 22nd 3rd 44th 5x \u0662nd <0x1F> <0xA> <0xZZ> <0x123> <0x>\n"
      "\u0301 \u200B\x01\x7F \uE000 ©®™ ⅧⅨ $+<=>^`|~ ...!!! \u0301a \u200Bb\n\n\n";
  return text;
}

}  // namespace huginn::tok
