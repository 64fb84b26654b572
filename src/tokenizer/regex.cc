#include "tokenizer/regex.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <cstdio>
#include <map>
#include <mutex>

#include "huginn/error.h"
#include "huginn/log.h"
#include "tokenizer/limits.h"
#include "tokenizer/scanner.h"

namespace huginn::tok {

namespace {

struct Range {
  int lo, hi;
};
struct DeltaEntry {
  const char* base;
  const char* category;
  std::vector<Range> added, removed;
};

const std::vector<DeltaEntry>& delta_table() {
  static const std::vector<DeltaEntry> t = {
#include "tokenizer/unicode_delta.inc"
  };
  return t;
}

std::string hex_ranges(const std::vector<Range>& rs) {
  std::string s;
  char buf[40];
  for (const Range& r : rs) {
    if (r.lo == r.hi)
      std::snprintf(buf, sizeof buf, "\\x{%X}", r.lo);
    else
      std::snprintf(buf, sizeof buf, "\\x{%X}-\\x{%X}", r.lo, r.hi);
    s += buf;
  }
  return s;
}

// Ranges to add to / remove from PCRE2's \p{cat} to get Unicode 16.0's.
const DeltaEntry* find_delta(const std::string& category) {
  static const std::string version = pcre2_unicode_version();
  if (version.rfind("16.", 0) == 0) return nullptr;
  static std::once_flag warned;
  if (version != "14.0.0" && version != "15.0.0")
    std::call_once(warned, [] {
      HUGINN_LOG_WARN("PCRE2 has Unicode %s tables; tokenizer regexes follow them, not 16.0",
                      version.c_str());
    });
  for (const DeltaEntry& d : delta_table())
    if (version == d.base && category == d.category) return &d;
  return nullptr;
}

const char* kWhiteSpace =
    "\\x{9}-\\x{D}\\x{20}\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}"
    "\\x{205F}\\x{3000}";

// One \p / \P item, in or outside a character class.
std::string property_item(const std::string& raw_name, bool negated, bool in_class,
                          const std::string& where) {
  std::string name = raw_name;
  if (!name.empty() && name[0] == '^') {
    negated = !negated;
    name = name.substr(1);
  }
  name = canonical_category(name);
  std::string base = "\\p{" + name + "}";
  const DeltaEntry* d = find_delta(name);
  std::string add = d ? hex_ranges(d->added) : "";
  std::string rem = d ? hex_ranges(d->removed) : "";
  if (in_class) {
    if (!negated) return base + add;  // a removal inside a class is not expressible; see header
    if (add.empty()) return "\\P{" + name + "}";
    throw Error(where + ": \\P{" + name + "} inside a character class is not supported with "
                "PCRE2's Unicode " + pcre2_unicode_version() + " tables");
  }
  if (!negated) {
    std::string cls = add.empty() ? base : "[" + base + add + "]";
    return rem.empty() ? cls : "(?:(?![" + rem + "])" + cls + ")";
  }
  std::string cls = "[^" + base.substr(0) + add + "]";
  return rem.empty() ? cls : "(?:[" + rem + "]|" + cls + ")";
}

// The items of Oniguruma's word class (\w, and the word characters of \b), for a character class:
// Alphabetic (letters, letter numbers, and the circled and squared Latin letters, which are
// symbols), marks, decimal digits and connector punctuation, and from its Latin-1 table ² ³ ¹ ¼ ½ ¾.
// Checked code point by code point against the library (npm tokenizers 0.23.2): PCRE2's own \w
// and \b (UCP: letters, all numbers and _) differ from it on marks, connector punctuation other
// than _, other numbers and those symbols.
std::string word_items(const std::string& where) {
  std::string items;
  for (const char* cat : {"L", "M", "Nd", "Pc", "Nl"}) items += property_item(cat, false, true, where);
  return items +
         "\\x{B2}\\x{B3}\\x{B9}\\x{BC}-\\x{BE}\\x{24B6}-\\x{24E9}\\x{1F130}-\\x{1F149}"
         "\\x{1F150}-\\x{1F169}\\x{1F170}-\\x{1F189}";
}

}  // namespace

std::string canonical_category(std::string name) {
  static const std::map<std::string, std::string> long_names = {
      {"Letter", "L"}, {"Uppercase_Letter", "Lu"}, {"Lowercase_Letter", "Ll"},
      {"Titlecase_Letter", "Lt"}, {"Modifier_Letter", "Lm"}, {"Other_Letter", "Lo"},
      {"Cased_Letter", "LC"}, {"L&", "LC"}, {"Mark", "M"}, {"Combining_Mark", "M"},
      {"Nonspacing_Mark", "Mn"}, {"Spacing_Mark", "Mc"}, {"Enclosing_Mark", "Me"},
      {"Number", "N"}, {"Decimal_Number", "Nd"}, {"Digit", "Nd"}, {"Letter_Number", "Nl"},
      {"Other_Number", "No"}, {"Punctuation", "P"}, {"Connector_Punctuation", "Pc"},
      {"Dash_Punctuation", "Pd"}, {"Open_Punctuation", "Ps"}, {"Close_Punctuation", "Pe"},
      {"Initial_Punctuation", "Pi"}, {"Final_Punctuation", "Pf"}, {"Other_Punctuation", "Po"},
      {"Symbol", "S"}, {"Math_Symbol", "Sm"}, {"Currency_Symbol", "Sc"},
      {"Modifier_Symbol", "Sk"}, {"Other_Symbol", "So"}, {"Separator", "Z"},
      {"Space_Separator", "Zs"}, {"Line_Separator", "Zl"}, {"Paragraph_Separator", "Zp"},
      {"Other", "C"}, {"Control", "Cc"}, {"Format", "Cf"}, {"Private_Use", "Co"},
      {"Unassigned", "Cn"}, {"Surrogate", "Cs"}};
  auto it = long_names.find(name);
  return it == long_names.end() ? name : it->second;
}

std::string pcre2_unicode_version() {
  char buf[64] = {0};
  pcre2_config(PCRE2_CONFIG_UNICODE_VERSION, buf);
  return buf;
}

std::string translate_oniguruma(const std::string& p, const std::string& where) {
  std::string out;
  bool in_class = false;
  for (size_t i = 0; i < p.size(); ++i) {
    char c = p[i];
    if (c == '\\' && i + 1 < p.size()) {
      char e = p[++i];
      switch (e) {
        case 's':
        case 'S':
          if (in_class && e == 'S')
            throw Error(where + ": \\S inside a character class is not supported");
          out += in_class ? std::string(kWhiteSpace)
                          : std::string(e == 's' ? "[" : "[^") + kWhiteSpace + "]";
          break;
        case 'w':
        case 'W': {
          if (in_class && e == 'W')
            throw Error(where + ": \\W inside a character class is not supported");
          const std::string items = word_items(where);
          out += in_class ? items : std::string(e == 'w' ? "[" : "[^") + items + "]";
          break;
        }
        case 'b':
        case 'B': {  // word boundaries over the same word class (in a class: backspace)
          if (in_class) {
            out += std::string("\\") + e;
            break;
          }
          const std::string w = "[" + word_items(where) + "]";
          out += e == 'b' ? "(?:(?<=" + w + ")(?!" + w + ")|(?<!" + w + ")(?=" + w + "))"
                          : "(?:(?<=" + w + ")(?=" + w + ")|(?<!" + w + ")(?!" + w + "))";
          break;
        }
        case 'd':
        case 'D':
          out += property_item("Nd", e == 'D', in_class, where);
          break;
        case 'h':
        case 'H':
          if (in_class && e == 'H')
            throw Error(where + ": \\H inside a character class is not supported");
          out += in_class ? "0-9a-fA-F" : (e == 'h' ? "[0-9a-fA-F]" : "[^0-9a-fA-F]");
          break;
        case 'p':
        case 'P': {
          std::string name;
          if (i + 1 < p.size() && p[i + 1] == '{') {
            size_t close = p.find('}', i + 2);
            if (close == std::string::npos) throw Error(where + ": unterminated \\p{ in regex");
            name = p.substr(i + 2, close - i - 2);
            i = close;
          } else if (i + 1 < p.size()) {
            name = p.substr(++i, 1);
          }
          out += property_item(name, e == 'P', in_class, where);
          break;
        }
        case 'u': {  // \uHHHH
          if (i + 4 < p.size()) {
            out += "\\x{" + p.substr(i + 1, 4) + "}";
            i += 4;
          } else {
            throw Error(where + ": malformed \\u escape in regex");
          }
          break;
        }
        default:
          out += '\\';
          out += e;
      }
      continue;
    }
    if (c == '[') {
      if (in_class) {
        if (i + 1 < p.size() && p[i + 1] == ':') {  // POSIX class: copy through ":]"
          size_t close = p.find(":]", i + 2);
          if (close == std::string::npos) throw Error(where + ": unterminated [: in regex");
          out += p.substr(i, close + 2 - i);
          i = close + 1;
          continue;
        }
        throw Error(where + ": nested character classes are not supported");
      }
      in_class = true;
      out += c;
      if (i + 1 < p.size() && p[i + 1] == '^') out += p[++i];
      if (i + 1 < p.size() && p[i + 1] == ']') out += p[++i];  // a leading ] is literal
      continue;
    }
    if (c == ']' && in_class) in_class = false;
    out += c;
  }
  if (in_class) throw Error(where + ": unterminated character class in regex");
  return out;
}

namespace {

// Per-thread match state: PCRE2 match data and a JIT stack big enough for long runs.
struct MatchState {
  pcre2_match_data* md = nullptr;
  pcre2_match_context* mc = nullptr;
  pcre2_jit_stack* js = nullptr;
  MatchState() {
    md = pcre2_match_data_create(1, nullptr);
    mc = pcre2_match_context_create(nullptr);
    js = pcre2_jit_stack_create(64 * 1024, 16 * 1024 * 1024, nullptr);
    pcre2_jit_stack_assign(mc, nullptr, js);
  }
  ~MatchState() {
    pcre2_match_data_free(md);
    pcre2_match_context_free(mc);
    pcre2_jit_stack_free(js);
  }
};

MatchState& match_state() {
  thread_local MatchState s;
  return s;
}

}  // namespace

struct Regex::Impl {
  pcre2_code* code = nullptr;
  bool jit = false;
  std::string where;
  ~Impl() { pcre2_code_free(code); }
};

Regex::Regex(const std::string& pattern, const std::string& where, bool allow_scanner)
    : impl_(new Impl) {
  impl_->where = where;
  translated_ = translate_oniguruma(pattern, where);
  int err = 0;
  PCRE2_SIZE off = 0;
  pcre2_compile_context* cc = pcre2_compile_context_create(nullptr);
  pcre2_set_newline(cc, PCRE2_NEWLINE_LF);
  // Ruby syntax (Oniguruma's default): ^ and $ match at line boundaries.
  impl_->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(translated_.data()), translated_.size(),
                              PCRE2_UTF | PCRE2_UCP | PCRE2_MULTILINE, &err, &off, cc);
  pcre2_compile_context_free(cc);
  if (!impl_->code) {
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(err, msg, sizeof msg);
    throw Error(where + ": cannot compile regex '" + quote(pattern) + "': " +
                reinterpret_cast<const char*>(msg) + " at offset " + std::to_string(off));
  }
  impl_->jit = pcre2_jit_compile(impl_->code, PCRE2_JIT_COMPLETE) == 0;
  if (allow_scanner) scanner_ = Scanner::recognize(pattern);
}

Regex::~Regex() = default;

bool Regex::find(std::string_view text, size_t from, size_t* start, size_t* end) const {
  if (scanner_) {  // the first character from `from` that starts a match (no match is empty)
    const auto* p = reinterpret_cast<const uint8_t*>(text.data());
    for (size_t i = from; i < text.size();) {
      bool gap;
      const size_t e = scanner_->piece_at(p, text.size(), i, &gap);
      if (!gap) {
        *start = i;
        *end = e;
        return true;
      }
      i = e;
    }
    return false;
  }
  MatchState& st = match_state();
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  int rc = impl_->jit ? pcre2_jit_match(impl_->code, subject, text.size(), from, 0, st.md, st.mc)
                      : pcre2_match(impl_->code, subject, text.size(), from, PCRE2_NO_UTF_CHECK,
                                    st.md, st.mc);
  if (rc == PCRE2_ERROR_NOMATCH) return false;
  if (rc < 0) {
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(rc, msg, sizeof msg);
    throw Error(impl_->where + ": regex match failed: " + reinterpret_cast<const char*>(msg));
  }
  const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(st.md);
  *start = ov[0];
  *end = ov[1];
  return true;
}

void Regex::find_all(std::string_view text, std::vector<std::pair<size_t, size_t>>& out) const {
  if (scanner_) return scanner_->find_all(text, out);
  size_t pos = 0;
  size_t s, e;
  while (pos <= text.size() && find(text, pos, &s, &e)) {
    out.emplace_back(s, e);
    if (e > s) {
      pos = e;
    } else {  // empty match: step over one character
      if (e >= text.size()) break;
      pos = e + 1;
      while (pos < text.size() && (static_cast<uint8_t>(text[pos]) & 0xC0) == 0x80) ++pos;
    }
  }
}

}  // namespace huginn::tok
