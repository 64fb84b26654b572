// Normalizers, pre-tokenizers, decoders and post-processors of tokenizer.json, each following
// the Hugging Face `tokenizers` component of the same name.
#include "tokenizer/components.h"

#include <utf8proc.h>

#include <nlohmann/json.hpp>

#include "huginn/error.h"
#include "tokenizer/limits.h"
#include "tokenizer/pipeline.h"
#include "tokenizer/regex.h"
#include "tokenizer/scanner.h"
#include "tokenizer/unicode.h"

namespace huginn::tok {

using json = nlohmann::json;

namespace {

// ---------------------------------------------------------------------------------------------
// JSON helpers

const json& field(const json& j, const char* name, const std::string& where) {
  if (!j.is_object() || !j.contains(name))
    throw Error(where + ": missing field '" + name + "'");
  return j.at(name);
}

std::string get_string(const json& j, const char* name, const std::string& where) {
  const json& v = field(j, name, where);
  if (!v.is_string()) throw Error(where + "." + name + ": expected a string");
  return v.get<std::string>();
}

// A string the pipeline inserts or matches: at most kMaxPatternBytes.
std::string get_short_string(const json& j, const char* name, const std::string& where) {
  std::string s = get_string(j, name, where);
  if (s.size() > kMaxPatternBytes)
    throw Error(where + "." + name + ": " + std::to_string(s.size()) + " bytes, more than the bound of " +
                std::to_string(kMaxPatternBytes));
  return s;
}

bool get_bool(const json& j, const char* name, bool dflt, const std::string& where) {
  if (!j.contains(name) || j.at(name).is_null()) return dflt;
  if (!j.at(name).is_boolean()) throw Error(where + "." + name + ": expected true or false");
  return j.at(name).get<bool>();
}

std::string type_of(const json& j, const std::string& where) {
  if (!j.is_object()) throw Error(where + ": expected an object");
  return get_string(j, "type", where);
}

int32_t single_char(const std::string& s, const std::string& where) {
  int len = 0;
  int32_t cp = s.empty() ? -1 : utf8_decode(s, 0, &len);
  if (cp < 0 || static_cast<size_t>(len) != s.size())
    throw Error(where + ": expected a single character, found '" + quote(s) + "'");
  return cp;
}

// A Split / Replace pattern: {"String": s} (literal) or {"Regex": r}.
struct Pattern {
  std::string literal;
  std::unique_ptr<Regex> regex;

  Pattern(const json& j, const std::string& where) {
    if (j.is_object() && j.contains("String") && j.at("String").is_string()) {
      literal = get_short_string(j, "String", where);
    } else if (j.is_object() && j.contains("Regex") && j.at("Regex").is_string()) {
      regex = std::make_unique<Regex>(get_short_string(j, "Regex", where), where);
    } else {
      throw Error(where + ": expected {\"String\": ...} or {\"Regex\": ...}");
    }
  }

  // False when `s` certainly has no match (a literal not in it).
  bool may_match(std::string_view s) const {
    return regex || (!literal.empty() && s.find(literal) != std::string_view::npos);
  }

  // Non-overlapping matches of valid UTF-8 `s`, left to right.
  void find_all(std::string_view s, std::vector<std::pair<size_t, size_t>>& out) const {
    if (regex) return regex->find_all(s, out);
    if (literal.empty()) return;
    for (size_t pos = s.find(literal); pos != std::string_view::npos;
         pos = s.find(literal, pos + literal.size()))
      out.emplace_back(pos, pos + literal.size());
  }

  // `others` bytes of text are held elsewhere; the result and they together may not pass
  // `bound`, which is checked before the result is built.
  std::string replace_all(std::string_view s, const std::string& content, const GrowthBound& bound,
                          size_t others = 0) const {
    std::vector<std::pair<size_t, size_t>> m;
    find_all(s, m);
    if (m.empty()) return std::string(s);
    size_t removed = 0;
    for (auto [a, b] : m) removed += b - a;
    bound.check(sat_add(others, sat_add(s.size() - removed, sat_mul(m.size(), content.size()))));
    std::string out;
    out.reserve(s.size() - removed + m.size() * content.size());
    size_t prev = 0;
    for (auto [a, b] : m) {
      out.append(s.substr(prev, a - prev));
      out += content;
      prev = b;
    }
    out.append(s.substr(prev));
    return out;
  }
};

// ---------------------------------------------------------------------------------------------
// Normalizers

struct UnicodeNorm : Normalizer {
  NormForm form;
  explicit UnicodeNorm(NormForm f) : form(f) {}
  void normalize(std::string& s, const GrowthBound& bound) const override {
    s = tok::normalize(s, form);  // at most 18 characters per character (U+FDFA)
    bound.check(s.size());
  }
};

struct Prepend : Normalizer {
  std::string prefix;
  void normalize(std::string& s, const GrowthBound& bound) const override {
    if (s.empty()) return;
    bound.check(sat_add(s.size(), prefix.size()));
    s.insert(0, prefix);
  }
};

struct ReplaceNorm : Normalizer {
  Pattern pattern;
  std::string content;
  ReplaceNorm(const json& j, const std::string& where)
      : pattern(field(j, "pattern", where), where + ".pattern"),
        content(get_short_string(j, "content", where)) {}
  void normalize(std::string& s, const GrowthBound& bound) const override {
    s = pattern.replace_all(s, content, bound);
  }
};

struct StripNorm : Normalizer {
  bool left, right;
  void normalize(std::string& s, const GrowthBound&) const override {
    size_t b = 0, e = s.size();
    if (left)
      while (b < e) {
        int len;
        int32_t cp = utf8_decode(s, b, &len);
        if (!is_white_space(cp)) break;
        b += len;
      }
    if (right)
      while (e > b) {
        size_t k = e - 1;
        while (k > b && (static_cast<uint8_t>(s[k]) & 0xC0) == 0x80) --k;
        int len;
        int32_t cp = utf8_decode(s, k, &len);
        if (k + len != e || !is_white_space(cp)) break;
        e = k;
      }
    s = s.substr(b, e - b);
  }
};

// Rust char::to_lowercase per character: the simple mapping, except U+0130 which lowercases
// to two characters.
struct Lowercase : Normalizer {
  void normalize(std::string& s, const GrowthBound& bound) const override {
    std::string out;
    out.reserve(s.size());
    for (size_t i = 0; i < s.size();) {
      int len;
      int32_t cp = utf8_decode(s, i, &len);
      if (cp < 0) {
        out.push_back(s[i]);
      } else if (cp == 0x130) {
        out += "i\xCC\x87";
      } else {
        utf8_append(out, utf8proc_tolower(cp));
      }
      i += len;
    }
    bound.check(out.size());  // at most 3/2 of the input per step
    s = std::move(out);
  }
};

struct NormSequence : Normalizer {
  std::vector<std::unique_ptr<Normalizer>> steps;
  void normalize(std::string& s, const GrowthBound& bound) const override {
    for (const auto& n : steps) n->normalize(s, bound);
  }
};

// ---------------------------------------------------------------------------------------------
// Pre-tokenizers

enum class Behavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

Behavior parse_behavior(const json& j, const std::string& where) {
  std::string b = j.is_string() ? j.get<std::string>() : "";
  if (b == "Removed") return Behavior::kRemoved;
  if (b == "Isolated") return Behavior::kIsolated;
  if (b == "MergedWithPrevious") return Behavior::kMergedWithPrevious;
  if (b == "MergedWithNext") return Behavior::kMergedWithNext;
  if (b == "Contiguous") return Behavior::kContiguous;
  throw Error(where + ": unknown split behavior '" + quote(b) + "'");
}

struct Span {
  size_t start, end;
  bool flag;  // is a match (before the behavior), to remove (after)
};

// The library's NormalizedString::split: matches (start, end, is_match) covering the text, then
// the behavior decides what is kept and what is merged.
void apply_behavior(std::vector<Span>& m, Behavior behavior) {
  std::vector<Span> out;
  bool prev_match = false;
  switch (behavior) {
    case Behavior::kRemoved:
      return;  // flag already means "remove"
    case Behavior::kIsolated:
      for (Span& s : m) s.flag = false;
      return;
    case Behavior::kMergedWithPrevious:
      for (const Span& s : m) {
        if (s.flag && !prev_match && !out.empty())
          out.back().end = s.end;
        else
          out.push_back({s.start, s.end, false});
        prev_match = s.flag;
      }
      break;
    case Behavior::kMergedWithNext:
      for (size_t k = m.size(); k-- > 0;) {
        const Span& s = m[k];
        if (s.flag && !prev_match && !out.empty())
          out.back().start = s.start;
        else
          out.push_back({s.start, s.end, false});
        prev_match = s.flag;
      }
      std::reverse(out.begin(), out.end());
      break;
    case Behavior::kContiguous:
      for (size_t k = 0; k < m.size(); ++k) {
        const Span& s = m[k];
        if (k > 0 && s.flag == prev_match)
          out.back().end = s.end;
        else
          out.push_back({s.start, s.end, false});
        prev_match = s.flag;
      }
      break;
  }
  m = std::move(out);
}

// Splits each piece by `find` (which lists the matches of valid UTF-8 text) with `behavior`.
// Invalid UTF-8 bytes are cut out first and kept as pieces of their own (documented in
// tokenizer.h): the library cannot receive them, and a byte-level model encodes them as bytes.
template <class Find>
void split_pieces(const std::vector<Piece>& in, std::vector<Piece>& out, Behavior behavior,
                  bool invert, const Find& find) {
  thread_local std::vector<std::pair<size_t, size_t>> matches;
  thread_local std::vector<Span> spans;
  auto split_valid = [&](std::string_view text, bool at_start) {
    matches.clear();
    spans.clear();
    if (text.empty()) return;
    find(text, matches);
    size_t prev = 0;
    for (auto [a, b] : matches) {
      if (a != prev) spans.push_back({prev, a, invert});
      spans.push_back({a, b, !invert});
      prev = b;
    }
    if (prev != text.size()) spans.push_back({prev, text.size(), invert});
    apply_behavior(spans, behavior);
    for (const Span& s : spans)
      if (!s.flag && s.end > s.start)
        out.push_back({text.substr(s.start, s.end - s.start), at_start && s.start == 0});
  };
  for (const Piece& p : in) {
    std::string_view t = p.text;
    size_t i = 0;
    while (i < t.size()) {
      size_t ok = utf8_valid_prefix(t.substr(i));
      split_valid(t.substr(i, ok), p.at_start && i == 0);
      i += ok;
      if (i < t.size()) {
        out.push_back({t.substr(i, 1), p.at_start && i == 0});
        ++i;
      }
    }
  }
}

struct SplitPre : PreTokenizer {
  Pattern pattern;
  Behavior behavior;
  bool invert;
  SplitPre(const json& j, const std::string& where)
      : pattern(field(j, "pattern", where), where + ".pattern"),
        behavior(parse_behavior(field(j, "behavior", where), where + ".behavior")),
        invert(get_bool(j, "invert", false, where)) {}
  void split(const std::vector<Piece>& in, std::vector<Piece>& out, Arena&) const override {
    split_pieces(in, out, behavior, invert,
                 [&](std::string_view t, auto& m) { pattern.find_all(t, m); });
  }
  // Isolated keeps a scanner's matches and the runs between them (none when they tile the text);
  // Removed with invert keeps the matches only.
  FastSplit fast_split() const override {
    const Scanner* s = pattern.regex ? pattern.regex->scanner() : nullptr;
    if (!s || !(behavior == Behavior::kIsolated || (behavior == Behavior::kRemoved && invert))) return {};
    return {true, false, s, false, behavior == Behavior::kIsolated};
  }
};

// Splits where a per-character predicate holds, each such character a match of its own.
template <class Pred>
void split_chars(const std::vector<Piece>& in, std::vector<Piece>& out, Behavior behavior,
                 Pred pred) {
  split_pieces(in, out, behavior, false, [&](std::string_view t, auto& m) {
    for (size_t i = 0; i < t.size();) {
      int len;
      int32_t cp = utf8_decode(t, i, &len);
      if (pred(cp)) m.emplace_back(i, i + len);
      i += len;
    }
  });
}

const char* kGpt2Pattern =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

struct ByteLevelPre : PreTokenizer {
  bool add_prefix_space, use_regex, defer;
  std::unique_ptr<Regex> regex;
  ByteLevelPre(const json& j, const std::string& where, bool defer_mapping)
      : add_prefix_space(get_bool(j, "add_prefix_space", true, where)),
        use_regex(get_bool(j, "use_regex", true, where)),
        defer(defer_mapping) {
    if (use_regex) regex = std::make_unique<Regex>(kGpt2Pattern, where + " (GPT-2 pattern)");
  }
  void split(const std::vector<Piece>& in, std::vector<Piece>& out, Arena& arena) const override {
    std::vector<Piece> tmp;
    const std::vector<Piece>* cur = &in;
    if (add_prefix_space) {
      for (const Piece& p : in) {
        if (p.text.empty() || p.text[0] == ' ') {
          tmp.push_back(p);
          continue;
        }
        std::string s(1, ' ');
        s.append(p.text);
        tmp.push_back(Piece{arena.keep(std::move(s)), p.at_start});
      }
      cur = &tmp;
    }
    if (use_regex) {
      split_pieces(*cur, out, Behavior::kIsolated, false,
                   [&](std::string_view t, auto& m) { regex->find_all(t, m); });
    } else {
      out = *cur;
    }
    if (!defer)
      for (Piece& p : out) p.text = arena.keep(bytes_to_byte_level(p.text));
  }
  // Only with the mapping left to the model; without the regex an identity (or a prefix).
  FastSplit fast_split() const override {
    if (!defer) return {};
    if (!use_regex) return {true, !add_prefix_space, nullptr, add_prefix_space};
    if (!regex->scanner()) return {};
    return {true, false, regex->scanner(), add_prefix_space};
  }
};

struct DigitsPre : PreTokenizer {
  bool individual;
  void split(const std::vector<Piece>& in, std::vector<Piece>& out, Arena&) const override {
    split_chars(in, out, individual ? Behavior::kIsolated : Behavior::kContiguous, is_numeric);
  }
};

struct WhitespaceSplitPre : PreTokenizer {
  void split(const std::vector<Piece>& in, std::vector<Piece>& out, Arena&) const override {
    split_chars(in, out, Behavior::kRemoved, is_white_space);
  }
};

struct WhitespacePre : PreTokenizer {
  Regex regex{"\\w+|[^\\w\\s]+", "Whitespace pre-tokenizer"};
  void split(const std::vector<Piece>& in, std::vector<Piece>& out, Arena&) const override {
    split_pieces(in, out, Behavior::kRemoved, true,
                 [&](std::string_view t, auto& m) { regex.find_all(t, m); });
  }
};

struct PunctuationPre : PreTokenizer {
  Behavior behavior;
  void split(const std::vector<Piece>& in, std::vector<Piece>& out, Arena&) const override {
    split_chars(in, out, behavior, [](int32_t cp) {
      return (cp < 0x80 && cp >= 0 && std::ispunct(cp)) || is_punctuation(cp);
    });
  }
};

enum class PrependScheme { kAlways, kFirst, kNever };

PrependScheme parse_prepend_scheme(const json& j, const std::string& where) {
  if (j.contains("prepend_scheme") && j.at("prepend_scheme").is_string()) {
    std::string s = j.at("prepend_scheme").get<std::string>();
    if (s == "always") return PrependScheme::kAlways;
    if (s == "first") return PrependScheme::kFirst;
    if (s == "never") return PrependScheme::kNever;
    throw Error(where + ".prepend_scheme: unknown value '" + quote(s) + "'");
  }
  return get_bool(j, "add_prefix_space", true, where) ? PrependScheme::kAlways
                                                      : PrependScheme::kNever;
}

struct MetaspacePre : PreTokenizer {
  std::string rep;
  int32_t rep_cp;
  PrependScheme scheme;
  bool split_on_rep;
  void split(const std::vector<Piece>& in, std::vector<Piece>& out, Arena& arena) const override {
    std::vector<Piece> tmp;
    for (const Piece& p : in) {
      std::string s;
      for (char c : p.text) {
        if (c == ' ')
          s += rep;
        else
          s.push_back(c);
      }
      bool starts = s.compare(0, rep.size(), rep) == 0;
      if (!starts && (scheme == PrependScheme::kAlways ||
                      (scheme == PrependScheme::kFirst && p.at_start)))
        s.insert(0, rep);
      tmp.push_back({arena.keep(std::move(s)), p.at_start});
    }
    if (!split_on_rep) {
      out = std::move(tmp);
      return;
    }
    split_chars(tmp, out, Behavior::kMergedWithNext, [&](int32_t cp) { return cp == rep_cp; });
  }
};

struct PreSequence : PreTokenizer {
  std::vector<std::unique_ptr<PreTokenizer>> steps;
  // One scanner step among identities; a prefix space only in the first step (it applies to the
  // whole text there, to each piece later).
  FastSplit fast_split() const override {
    FastSplit all{true, true, nullptr, false};
    for (size_t k = 0; k < steps.size(); ++k) {
      FastSplit f = steps[k]->fast_split();
      if (!f.ok || (f.prefix_space && k > 0) || (f.scanner && all.scanner)) return {};
      if (f.scanner) all.scanner = f.scanner, all.identity = false, all.keep_gaps = f.keep_gaps;
      all.prefix_space = all.prefix_space || f.prefix_space;
      if (f.prefix_space) all.identity = false;
    }
    return all;
  }
  void split(const std::vector<Piece>& in, std::vector<Piece>& out, Arena& arena) const override {
    std::vector<Piece> a = in, b;
    for (const auto& step : steps) {
      b.clear();
      step->split(a, b, arena);
      std::swap(a, b);
    }
    out = std::move(a);
  }
};

// ---------------------------------------------------------------------------------------------
// Decoders

struct ByteLevelDec : Decoder {
  bool is_byte_level() const override { return true; }
  void decode_chain(std::vector<std::string>& tokens, const GrowthBound&) const override {
    std::string bytes;
    for (const std::string& t : tokens) byte_level_token_bytes(t, bytes);
    tokens.assign(1, utf8_lossy(bytes));
  }
};

struct ByteFallbackDec : Decoder {
  bool has_byte_fallback() const override { return true; }
  static int byte_token(const std::string& t) {
    if (t.size() != 6 || t.compare(0, 3, "<0x") != 0 || t[5] != '>') return -1;
    int v = 0;
    for (int k = 3; k < 5; ++k) {
      char c = t[k];
      int d = (c >= '0' && c <= '9') ? c - '0' : (c >= 'a' && c <= 'f') ? c - 'a' + 10
              : (c >= 'A' && c <= 'F') ? c - 'A' + 10 : -1;
      if (d < 0) return -1;
      v = v * 16 + d;
    }
    return v;
  }
  void decode_chain(std::vector<std::string>& tokens, const GrowthBound&) const override {
    std::vector<std::string> out;
    std::string run;
    size_t run_tokens = 0;
    auto flush = [&] {
      if (run_tokens == 0) return;
      if (utf8_valid(run)) {
        out.push_back(run);
      } else {
        for (size_t k = 0; k < run_tokens; ++k) out.push_back("\xEF\xBF\xBD");
      }
      run.clear();
      run_tokens = 0;
    };
    for (std::string& t : tokens) {
      int b = byte_token(t);
      if (b >= 0) {
        run.push_back(static_cast<char>(b));
        ++run_tokens;
      } else {
        flush();
        out.push_back(std::move(t));
      }
    }
    flush();
    tokens = std::move(out);
  }
};

struct FuseDec : Decoder {
  void decode_chain(std::vector<std::string>& tokens, const GrowthBound&) const override {
    std::string all;
    for (const std::string& t : tokens) all += t;
    tokens.assign(1, std::move(all));
  }
};

struct StripDec : Decoder {
  int32_t content;
  size_t start, stop;
  void decode_chain(std::vector<std::string>& tokens, const GrowthBound&) const override {
    for (std::string& t : tokens) {
      if (stop == 0) {  // only leading characters to cut: no need to split the whole token
        size_t b = 0;
        for (size_t k = 0; k < start && b < t.size(); ++k) {
          int len;
          if (utf8_decode(t, b, &len) != content) break;
          b += len;
        }
        if (b > 0) t.erase(0, b);
        continue;
      }
      std::vector<std::pair<size_t, int32_t>> chars;  // (byte offset, code point)
      for (size_t i = 0; i < t.size();) {
        int len;
        chars.emplace_back(i, utf8_decode(t, i, &len));
        i += len;
      }
      size_t start_cut = 0;
      for (size_t i = 0; i < start && i < chars.size() && chars[i].second == content; ++i)
        start_cut = i + 1;
      size_t stop_cut = chars.size();
      for (size_t i = 0; i < stop && i < chars.size(); ++i) {
        size_t index = chars.size() - i - 1;
        if (chars[index].second != content) break;
        stop_cut = index;
      }
      if (stop_cut < start_cut) stop_cut = start_cut;
      size_t b = start_cut < chars.size() ? chars[start_cut].first : t.size();
      size_t e = stop_cut < chars.size() ? chars[stop_cut].first : t.size();
      t = t.substr(b, e - b);
    }
  }
};

struct ReplaceDec : Decoder {
  Pattern pattern;
  std::string content;
  ReplaceDec(const json& j, const std::string& where)
      : pattern(field(j, "pattern", where), where + ".pattern"),
        content(get_short_string(j, "content", where)) {}
  void decode_chain(std::vector<std::string>& tokens, const GrowthBound& bound) const override {
    size_t total = 0;
    for (const std::string& t : tokens) total += t.size();
    for (std::string& t : tokens) {
      if (!pattern.may_match(t) || !utf8_valid(t)) continue;
      size_t before = t.size();
      t = pattern.replace_all(t, content, bound, total - before);
      total = total - before + t.size();
    }
  }
};

struct MetaspaceDec : Decoder {
  std::string rep;
  PrependScheme scheme;
  void decode_chain(std::vector<std::string>& tokens, const GrowthBound&) const override {
    for (size_t i = 0; i < tokens.size(); ++i) {
      std::string& t = tokens[i];
      std::string out;
      for (size_t k = 0; k < t.size();) {
        if (!rep.empty() && t.compare(k, rep.size(), rep) == 0) {
          if (!(i == 0 && scheme != PrependScheme::kNever)) out.push_back(' ');
          k += rep.size();
        } else {
          out.push_back(t[k++]);
        }
      }
      t = std::move(out);
    }
  }
};

// BPEDecoder: the end-of-word suffix becomes a space, except in the last token.
struct BpeSuffixDec : Decoder {
  std::string suffix;
  void decode_chain(std::vector<std::string>& tokens, const GrowthBound&) const override {
    for (size_t i = 0; i < tokens.size(); ++i) {
      std::string& t = tokens[i];
      std::string rep = i + 1 == tokens.size() ? "" : " ";
      std::string out;
      for (size_t k = 0; k < t.size();) {
        if (!suffix.empty() && t.compare(k, suffix.size(), suffix) == 0) {
          out += rep;
          k += suffix.size();
        } else {
          out.push_back(t[k++]);
        }
      }
      t = std::move(out);
    }
  }
};

struct DecSequence : Decoder {
  std::vector<std::unique_ptr<Decoder>> steps;
  bool has_byte_fallback() const override {
    for (const auto& s : steps)
      if (s->has_byte_fallback()) return true;
    return false;
  }
  void decode_chain(std::vector<std::string>& tokens, const GrowthBound& bound) const override {
    for (const auto& s : steps) s->decode_chain(tokens, bound);
  }
};

// ---------------------------------------------------------------------------------------------
// Post-processors

struct NoopPost : PostProcessor {
  void process(std::vector<int32_t>&, bool) const override {}
};

// TemplateProcessing (single sequence) and the Bert/Roberta processors: ids of special tokens
// around the sequence.
struct TemplatePost : PostProcessor {
  std::vector<int32_t> before, after;
  void process(std::vector<int32_t>& ids, bool add_special) const override {
    if (!add_special) return;
    ids.insert(ids.begin(), before.begin(), before.end());
    ids.insert(ids.end(), after.begin(), after.end());
  }
  void inserted_ids(std::vector<int32_t>& out) const override {
    out.insert(out.end(), before.begin(), before.end());
    out.insert(out.end(), after.begin(), after.end());
  }
};

struct PostSequence : PostProcessor {
  std::vector<std::unique_ptr<PostProcessor>> steps;
  void process(std::vector<int32_t>& ids, bool add_special) const override {
    for (const auto& s : steps) s->process(ids, add_special);
  }
  void inserted_ids(std::vector<int32_t>& out) const override {
    for (const auto& s : steps) s->inserted_ids(out);
  }
};

// An id the post-processor inserts: an integer in [0, kMaxId). Whether it names a token is
// checked once the vocabulary is loaded (Pipeline::check_post_processor_ids).
int32_t token_id(const json& v, const std::string& where) {
  if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() >= kMaxId)
    throw Error(where + ": expected a token id, an integer in [0, 2^26)");
  return static_cast<int32_t>(v.get<int64_t>());
}

std::vector<int32_t> special_ids(const json& specials, const std::string& name,
                                 const std::string& where) {
  if (!specials.is_object() || !specials.contains(name))
    throw Error(where + ": special token '" + quote(name) + "' is not in special_tokens");
  const json& s = specials.at(name);
  if (!s.contains("ids") || !s.at("ids").is_array())
    throw Error(where + ".special_tokens." + quote(name) + ": expected an 'ids' array");
  std::vector<int32_t> ids;
  const json& list = s.at("ids");
  for (size_t k = 0; k < list.size(); ++k)
    ids.push_back(token_id(list[k], where + ".special_tokens." + quote(name) + ".ids[" + std::to_string(k) + "]"));
  return ids;
}

std::unique_ptr<PostProcessor> make_template(const json& j, const std::string& where) {
  auto t = std::make_unique<TemplatePost>();
  const json& single = field(j, "single", where);
  if (!single.is_array()) throw Error(where + ".single: expected an array");
  const json specials = j.contains("special_tokens") ? j.at("special_tokens") : json::object();
  int sequences = 0;
  for (size_t k = 0; k < single.size(); ++k) {
    const json& item = single[k];
    std::string w = where + ".single[" + std::to_string(k) + "]";
    if (item.contains("Sequence")) {
      std::string id = get_string(item.at("Sequence"), "id", w + ".Sequence");
      if (id != "A") throw Error(w + ": a single-sequence template can only use sequence A");
      ++sequences;
    } else if (item.contains("SpecialToken")) {
      auto ids = special_ids(specials, get_string(item.at("SpecialToken"), "id", w + ".SpecialToken"), where);
      auto& dst = sequences == 0 ? t->before : t->after;
      dst.insert(dst.end(), ids.begin(), ids.end());
    } else {
      throw Error(w + ": expected Sequence or SpecialToken");
    }
  }
  if (sequences != 1) throw Error(where + ".single: expected exactly one Sequence item");
  return t;
}

}  // namespace

void byte_level_token_bytes(std::string_view t, std::string& bytes) {
  const size_t mark = bytes.size();
  for (size_t i = 0; i < t.size();) {
    int len;
    int b = byte_of_char(utf8_decode(t, i, &len));
    if (b < 0) {  // not all byte-level characters: the token as it is
      bytes.resize(mark);
      bytes += t;
      return;
    }
    bytes.push_back(static_cast<char>(b));
    i += len;
  }
}

// ---------------------------------------------------------------------------------------------
// Factories

namespace {

// The nesting and size of one component tree, bounded while it is built (limits.h).
struct TreeBudget {
  const char* kind;  // "normalizer", ...
  int sequences = 0;  // Sequence levels above the node being built
  size_t components = 0;
  void enter(const std::string& where) {
    if (++components > kMaxComponents)
      throw Error(where + ": more than " + std::to_string(kMaxComponents) + " " + kind +
                  " components in one file (the bound)");
  }
  // The items of a Sequence at `where`: an array, within the nesting bound.
  const json& sequence(const json& j, const char* list, const std::string& where) {
    if (sequences >= kMaxNesting)
      throw Error(where + ": " + kind + " Sequence nested more than " + std::to_string(kMaxNesting) +
                  " deep (the bound)");
    const json& items = field(j, list, where);
    if (!items.is_array()) throw Error(where + "." + list + ": expected an array");
    return items;
  }
};

// Runs `f` one Sequence level deeper.
template <class F>
auto nested(TreeBudget& b, F f) {
  ++b.sequences;
  auto r = f();
  --b.sequences;
  return r;
}

std::string item_where(const std::string& where, const char* list, size_t k) {
  return where + "." + list + "[" + std::to_string(k) + "]";
}

std::unique_ptr<Normalizer> build_normalizer(const json& j, const std::string& where, TreeBudget& b) {
  b.enter(where);
  std::string type = type_of(j, where);
  if (type == "NFC") return std::make_unique<UnicodeNorm>(NormForm::kNFC);
  if (type == "NFD") return std::make_unique<UnicodeNorm>(NormForm::kNFD);
  if (type == "NFKC") return std::make_unique<UnicodeNorm>(NormForm::kNFKC);
  if (type == "NFKD") return std::make_unique<UnicodeNorm>(NormForm::kNFKD);
  if (type == "Lowercase") return std::make_unique<Lowercase>();
  if (type == "Prepend") {
    auto n = std::make_unique<Prepend>();
    n->prefix = get_short_string(j, "prepend", where);
    return n;
  }
  if (type == "Replace") return std::make_unique<ReplaceNorm>(j, where);
  if (type == "Strip") {
    auto n = std::make_unique<StripNorm>();
    n->left = get_bool(j, "strip_left", true, where);
    n->right = get_bool(j, "strip_right", true, where);
    return n;
  }
  if (type == "Sequence") {
    auto s = std::make_unique<NormSequence>();
    const json& list = b.sequence(j, "normalizers", where);
    for (size_t k = 0; k < list.size(); ++k)
      s->steps.push_back(nested(b, [&] { return build_normalizer(list[k], item_where(where, "normalizers", k), b); }));
    return s;
  }
  throw Error(where + ": unsupported normalizer type '" + quote(type) + "'");
}

std::unique_ptr<PreTokenizer> build_pre_tokenizer(const json& j, const std::string& where,
                                                  bool* deferred, TreeBudget& b) {
  b.enter(where);
  std::string type = type_of(j, where);
  *deferred = false;
  if (type == "Split") return std::make_unique<SplitPre>(j, where);
  if (type == "ByteLevel") {
    *deferred = true;
    return std::make_unique<ByteLevelPre>(j, where, true);
  }
  if (type == "Digits") {
    auto d = std::make_unique<DigitsPre>();
    d->individual = get_bool(j, "individual_digits", false, where);
    return d;
  }
  if (type == "Whitespace") return std::make_unique<WhitespacePre>();
  if (type == "WhitespaceSplit") return std::make_unique<WhitespaceSplitPre>();
  if (type == "Punctuation") {
    auto p = std::make_unique<PunctuationPre>();
    p->behavior = j.contains("behavior") ? parse_behavior(j.at("behavior"), where + ".behavior")
                                         : Behavior::kIsolated;
    return p;
  }
  if (type == "Metaspace") {
    auto m = std::make_unique<MetaspacePre>();
    m->rep = get_short_string(j, "replacement", where);
    m->rep_cp = single_char(m->rep, where + ".replacement");
    m->scheme = parse_prepend_scheme(j, where);
    m->split_on_rep = get_bool(j, "split", true, where);
    return m;
  }
  if (type == "Sequence") {
    auto s = std::make_unique<PreSequence>();
    const json& list = b.sequence(j, "pretokenizers", where);
    for (size_t k = 0; k < list.size(); ++k) {
      std::string w = item_where(where, "pretokenizers", k);
      bool last = k + 1 == list.size();
      if (type_of(list[k], w) == "ByteLevel") {  // mapping deferred only when nothing follows
        b.enter(w);
        s->steps.push_back(std::make_unique<ByteLevelPre>(list[k], w, last));
        *deferred = last;
      } else {
        bool d;
        s->steps.push_back(nested(b, [&] { return build_pre_tokenizer(list[k], w, &d, b); }));
        if (d) throw Error(w + ": nested ByteLevel sequences are not supported");
        *deferred = false;
      }
    }
    return s;
  }
  throw Error(where + ": unsupported pre_tokenizer type '" + quote(type) + "'");
}

std::unique_ptr<Decoder> build_decoder(const json& j, const std::string& where, TreeBudget& b) {
  b.enter(where);
  std::string type = type_of(j, where);
  if (type == "ByteLevel") return std::make_unique<ByteLevelDec>();
  if (type == "ByteFallback") return std::make_unique<ByteFallbackDec>();
  if (type == "Fuse") return std::make_unique<FuseDec>();
  if (type == "Replace") return std::make_unique<ReplaceDec>(j, where);
  if (type == "Strip") {
    auto s = std::make_unique<StripDec>();
    s->content = single_char(get_string(j, "content", where), where + ".content");
    const json& a = field(j, "start", where);
    const json& z = field(j, "stop", where);
    if (!a.is_number_unsigned() || !z.is_number_unsigned())
      throw Error(where + ": start and stop must be non-negative integers");
    s->start = a.get<size_t>();
    s->stop = z.get<size_t>();
    return s;
  }
  if (type == "Metaspace") {
    auto m = std::make_unique<MetaspaceDec>();
    m->rep = get_short_string(j, "replacement", where);
    single_char(m->rep, where + ".replacement");
    m->scheme = parse_prepend_scheme(j, where);
    return m;
  }
  if (type == "BPEDecoder") {
    auto d = std::make_unique<BpeSuffixDec>();
    d->suffix = j.contains("suffix") ? get_short_string(j, "suffix", where) : "</w>";
    return d;
  }
  if (type == "Sequence") {
    auto s = std::make_unique<DecSequence>();
    const json& list = b.sequence(j, "decoders", where);
    for (size_t k = 0; k < list.size(); ++k)
      s->steps.push_back(nested(b, [&] { return build_decoder(list[k], item_where(where, "decoders", k), b); }));
    return s;
  }
  throw Error(where + ": unsupported decoder type '" + quote(type) + "'");
}

std::unique_ptr<PostProcessor> build_post_processor(const json& j, const std::string& where,
                                                    TreeBudget& b) {
  b.enter(where);
  std::string type = type_of(j, where);
  if (type == "ByteLevel") return std::make_unique<NoopPost>();  // changes offsets only
  if (type == "TemplateProcessing") return make_template(j, where);
  if (type == "BertProcessing" || type == "RobertaProcessing") {
    auto t = std::make_unique<TemplatePost>();
    for (const char* name : {"cls", "sep"}) {
      const json& v = field(j, name, where);
      if (!v.is_array() || v.size() != 2)
        throw Error(where + "." + name + ": expected [token, id]");
      (std::string(name) == "cls" ? t->before : t->after).push_back(token_id(v[1], where + "." + name + "[1]"));
    }
    return t;
  }
  if (type == "Sequence") {
    auto s = std::make_unique<PostSequence>();
    const json& list = b.sequence(j, "processors", where);
    for (size_t k = 0; k < list.size(); ++k)
      s->steps.push_back(nested(b, [&] { return build_post_processor(list[k], item_where(where, "processors", k), b); }));
    return s;
  }
  throw Error(where + ": unsupported post_processor type '" + quote(type) + "'");
}

}  // namespace

std::unique_ptr<Normalizer> make_normalizer(const json& j, const std::string& where) {
  TreeBudget b{"normalizer"};
  return build_normalizer(j, where, b);
}

std::unique_ptr<PreTokenizer> make_pre_tokenizer(const json& j, const std::string& where,
                                                 bool* deferred) {
  TreeBudget b{"pre_tokenizer"};
  return build_pre_tokenizer(j, where, deferred, b);
}

std::unique_ptr<Decoder> make_decoder(const json& j, const std::string& where) {
  TreeBudget b{"decoder"};
  return build_decoder(j, where, b);
}

std::unique_ptr<PostProcessor> make_post_processor(const json& j, const std::string& where) {
  TreeBudget b{"post_processor"};
  return build_post_processor(j, where, b);
}

}  // namespace huginn::tok
