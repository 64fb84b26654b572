// The scanner of the Huginn-0125 tokenizer's split pattern ("aeolian" in its authors' script, and
// "ascra", the same with [\p{P}\p{S}]+) against PCRE2: recognition, matches on random text weighted
// towards what the pattern treats specially (LaTeX \n-commands and word boundaries, backslashes,
// newlines, digits and ordinals, apostrophes, operators after a space or tab, <0x..> literals,
// symbols, characters that start no match), and a tokenizer.json laid out as the authors' script
// writes it (their bpeasy export: Split with the pattern, Removed + invert, then ByteLevel without
// its regex; no normalizer) encoding the golden corpora and random text (invalid UTF-8 included)
// identically with and without the scanner, and the library's own ids for 800 random texts
// (tests/data/aeolian). HUGINN_DIFF_STRINGS sets the count of random strings (random_text.h).
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "huginn/tokenizer.h"
#include "random_text.h"
#include "tokenizer/pipeline.h"
#include "tokenizer/regex.h"
#include "tokenizer/scanner.h"
#include "tokenizer/unicode.h"

namespace huginn {
namespace {

using test::diff_strings;
using tok::Regex;
using tok::ScanFamily;

std::string data(const std::string& rel) { return std::string(HUGINN_TEST_DATA) + "/tokenizers/" + rel; }

// get_regex_from_normalization_rule_name("aeolian") of scripts/tokenizer_generation.py in
// seal-rg/recurrent-pretraining, character for character (['' ʼ]: U+0027 twice, U+02BC), as
// tests/data/aeolian/aeolian.regex holds it (also read by the fuzz target and the case generator).
const std::string kAeolian = [] {
  std::ifstream f(std::string(HUGINN_TEST_DATA) + "/aeolian/aeolian.regex", std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}();

std::string replace(std::string s, const std::string& from, const std::string& to) {
  size_t at = s.find(from);
  EXPECT_NE(at, std::string::npos) << from;
  if (at != std::string::npos) s.replace(at, from.size(), to);
  return s;
}

std::string ascra() { return replace(kAeolian, "[\\p{P}\\p{S}])", "[\\p{P}\\p{S}]+)"); }

TEST(AeolianScanner, AeolianAndAscraAreRecognised) {
  Regex aeolian(kAeolian, "aeolian");
  ASSERT_NE(aeolian.scanner(), nullptr);
  EXPECT_EQ(aeolian.scanner()->family(), ScanFamily::kAeolian);
  EXPECT_FALSE(aeolian.scanner()->tiles());
  Regex asc(ascra(), "ascra");
  ASSERT_NE(asc.scanner(), nullptr);
  EXPECT_EQ(asc.scanner()->family(), ScanFamily::kAscra);
  // Other spellings of the same pattern.
  for (const std::string& same : {replace(kAeolian, "[\\p{L}]+", "\\p{Letter}+"),
                                  replace(kAeolian, "[''ʼ]", "['\\x{2BC}]"),
                                  replace(kAeolian, "\\#+", "#+")}) {
    Regex re(same, "same");
    ASSERT_NE(re.scanner(), nullptr) << same;
    EXPECT_EQ(re.scanner()->family(), ScanFamily::kAeolian);
  }
  // The script's neighbours that match differently stay on PCRE2: "cyme"'s class ['’ʼ], a
  // single \n, an optional space before the operators.
  for (const std::string& other : {replace(kAeolian, "[''ʼ]", "['’ʼ]"), replace(kAeolian, "\\n+|", "\\n|"),
                                   replace(kAeolian, "(?:[ \\t](?:", "(?:[ \\t]?(?:"),
                                   replace(kAeolian, "ot(?!(?:ag\\b|\\b))", "ot(?!ag\\b)")})
    EXPECT_EQ(Regex(other, "other").scanner(), nullptr) << other;
}

TEST(AeolianScanner, KnownMatches) {
  // Leftmost-first matches, as PCRE2 gives them; a gap (\x01 here) is no match.
  struct Case {
    const char* text;
    std::vector<std::string> matches;
  };
  const std::vector<Case> cases = {
      {"\\nabla x", {"\\nabla", " x"}},
      {"\\nablax", {"\\n", "ablax"}},        // no \b after "nabla": \\n(?!\b)
      {"\\not x", {"\\n", "ot", " x"}},      // "ot" never matches; \\n then a word character: C
      {"\\n x", {"\\n", " x"}},              // \\n then \b: E2, the backslash and a letter
      {" don't", {" don't"}},
      {" don't5", {" don", "'t", "5"}},      // \b fails after "t" before a digit
      {" x == y", {" x", " ==", " y"}},
      {" <0x1F>", {" <0x1F>"}},
      {" <0x123>", {" ", "<", "0", "x", "1", "2", "3", ">"}},
      {" 22nd", {" 22nd"}},
      {"22nd", {"2", "2", "nd"}},
      {"a\x01 b", {"a", " b"}},
      {"\n\n\t x", {"\n\n", "\t ", "x"}},
      // \b is Oniguruma's: a mark, ², Ⅷ or a circled letter is a word character (not for PCRE2's
      // own \b, which would end the command or the word before them).
      {"\\neq\u0323 ", {"\\n", "eq", " "}},
      {"\\nabla\u00B2", {"\\n", "abla", "\u00B2"}},
      {" don't\u0301-", {" don", "'t", "-"}},
      {" don't\u24B6", {" don", "'t", "\u24B6"}},
      {" a\u02BCb\u2167", {" a\u02BCb", "\u2167"}},
      {" a\u02BCb\u203F", {" a\u02BCb", "\u203F"}},
  };
  Regex re(kAeolian, "aeolian");
  Regex pcre(kAeolian, "aeolian", /*allow_scanner=*/false);
  for (const Case& c : cases) {
    std::vector<std::pair<size_t, size_t>> m, ref;
    re.find_all(c.text, m);
    pcre.find_all(c.text, ref);
    EXPECT_EQ(m, ref) << c.text;
    std::vector<std::string> got;
    for (auto [a, b] : m) got.push_back(std::string(c.text).substr(a, b - a));
    EXPECT_EQ(got, c.matches) << c.text;
  }
}

// \w and \b are Oniguruma's (regex.cc), and the scanner's word characters are \b's.
TEST(AeolianScanner, WordCharactersAreOnigurumas) {
  std::string all;
  std::vector<uint32_t> cps;
  for (uint32_t cp = 0; cp < 0x110000; ++cp)
    if (cp < 0xD800 || cp > 0xDFFF) cps.push_back(cp), tok::utf8_append(all, static_cast<int32_t>(cp));
  std::vector<std::pair<size_t, size_t>> m;
  Regex("\\w", "w", false).find_all(all, m);
  // The library (npm tokenizers 0.23.2) removes 144,671 code points with Split \w (Removed).
  EXPECT_EQ(m.size(), 144671u);
  std::vector<bool> word(0x110000, false);
  for (auto [a, b] : m) {
    int len;
    word[tok::utf8_decode(all, a, &len)] = true;
  }
  size_t differ = 0;
  for (uint32_t cp : cps) differ += word[cp] != ((tok::aeolian_flags(cp) & tok::kCharWord) != 0);
  EXPECT_EQ(differ, 0u);
  for (uint32_t cp : {0x0301u, 0x00B2u, 0x00BDu, 0x2167u, 0x24B6u, 0x1F130u, 0x203Fu, 0x5Fu, 0x10D4Au})
    EXPECT_TRUE(word[cp]) << std::hex << cp;
  for (uint32_t cp : {0x200Du, 0x2070u, 0x2460u, 0x2Du, 0x27u})
    EXPECT_FALSE(word[cp]) << std::hex << cp;
  // \b between a letter and a mark: none.
  size_t s = 0, e = 0;
  EXPECT_FALSE(Regex("a\\b", "b", false).find("a\u0301", 0, &s, &e));
  EXPECT_TRUE(Regex("a\\B", "B", false).find("a\u0301", 0, &s, &e));
}

// Spellings the pattern treats specially, mixed with random characters.
const std::vector<std::string>& fragments() {
  static const std::vector<std::string> f = {
      "\\n", "\\n", "\\ne", "\\newcommand", "\\newline", "\\nabla", "\\neq", "\\geq", "\\not",
      "\\notag", "\\nonumber", "\\ormalsize", "ag", "\\alpha", "\\", "\\{", "\\}", "\\[", "\\]",
      "\n", "\n\n", " ", " ", "\t", "\r", "  ", "0", "7", "12", "\u0663", "\u00B2", "st", "nd",
      "rd", "th", "'", "\u02BC", "\u2019", "don't", "x", "_", "__", "==", "!=", "<=", ">=", "<<",
      ">>", "**", "//", "+=", "-=", "*=", "/=", "%=", "&=", "|=", "^=", "<<=", ">>=", "**=", "//=",
      ":=", "++", "--", "|", "+", "-", "*", "\u2014", "=", "^", ".", ",", "!", "?", ";", "(", ")",
      "{", "}", "[", "]", "$", "$$", "`", "\"", "#", "<0x", "<0x1", "<0xAf>", ">", "\u00A9",
      "\u2211", "\U0001F600", "\u0301", "\u200B", "\x01", "\u00AD", "\U00010D4A", "\U0001E4D0", "\u1C89",
      // letters new in Unicode 15/16, and word characters of Oniguruma's \b that PCRE2's lacks
      "a\u02BCb\U00010D4A", "\u02BCn\U0001E4D0", "t\U00010D4A", "\u203F", "\u2167", "\u24B6",
      "\U0001F130", "\u00BD", "\u0903", "\u200D"};
  return f;
}

std::string random_string(test::RandomText& gen, int k, bool invalid) {
  return k % 3 == 0 ? gen.next(k % 4 == 0 ? 200 : 24, invalid)
                    : gen.next_mixed(k % 5 == 0 ? 120 : 16, fragments(), invalid);
}

TEST(AeolianScanner, MatchesPcre2OnRandomText) {
  const int n = diff_strings();
  test::RandomText gen(20261206);
  size_t compared = 0;
  std::vector<std::pair<size_t, size_t>> a, b;
  for (const std::string& pattern : {kAeolian, ascra()}) {
    Regex pcre(pattern, "pcre", /*allow_scanner=*/false), fast(pattern, "fast");
    ASSERT_NE(fast.scanner(), nullptr);
    for (int k = 0; k < n; ++k) {
      const std::string s = random_string(gen, k, /*invalid=*/false);
      a.clear();
      b.clear();
      pcre.find_all(s, a);
      fast.find_all(s, b);
      ASSERT_EQ(a, b) << fast.scanner()->name() << " on '" << s << "' (string " << k << ")";
      // find() from any offset (the lookbehind of \b sees the text before it).
      if (!s.empty()) {
        size_t from = gen.pick(s.size());
        while (from > 0 && (static_cast<uint8_t>(s[from]) & 0xC0) == 0x80) --from;
        size_t s1 = 0, e1 = 0, s2 = 0, e2 = 0;
        const bool f1 = pcre.find(s, from, &s1, &e1), f2 = fast.find(s, from, &s2, &e2);
        ASSERT_EQ(f1, f2) << "from " << from << " in '" << s << "'";
        if (f1) {
          ASSERT_EQ(std::make_pair(s1, e1), std::make_pair(s2, e2))
              << "from " << from << " in '" << s << "'";
        }
      }
      ++compared;
    }
  }
  std::printf("aeolian/ascra scanner vs PCRE2: %zu random strings, all identical\n", compared);
}

// cl100k's vocabulary and merges in the layout of the authors' export (the golden cl100k file
// has exactly that layout: their script converts a tiktoken-style vocabulary the same way), with
// the aeolian pattern, or with Split's `behavior` changed.
std::string aeolian_tokenizer_json(const std::string& behavior = "Removed") {
  std::ifstream f(data("cl100k/tokenizer.json"));
  nlohmann::json j = nlohmann::json::parse(f);
  nlohmann::json& split = j["pre_tokenizer"]["pretokenizers"][0];
  split["pattern"]["Regex"] = kAeolian;
  split["behavior"] = behavior;
  split["invert"] = behavior == "Removed";
  return j.dump();
}

std::vector<std::string> golden_texts() {
  std::vector<std::string> texts;
  for (const char* name : {"cl100k", "qwen3", "gpt-oss", "mistral-7b"}) {
    std::ifstream f(data(std::string(name) + "/cases.jsonl"));
    for (std::string line; std::getline(f, line);)
      texts.push_back(nlohmann::json::parse(line)["text"].get<std::string>());
  }
  return texts;
}

TEST(AeolianScanner, TokenizerEncodesAsWithPcre2) {
  const std::vector<std::string> golden = golden_texts();
  ASSERT_GT(golden.size(), 100u);
  const int n = std::max(1, diff_strings() / 4);
  test::RandomText gen(1206);
  size_t compared = 0;
  for (const char* behavior : {"Removed", "Isolated"}) {  // gaps dropped, gaps kept
    const std::string json = aeolian_tokenizer_json(behavior);
    auto fast = Tokenizer::from_json(json, "aeolian.json");
    tok::set_scanners_enabled(false);
    auto pcre = Tokenizer::from_json(json, "aeolian.json");
    tok::set_scanners_enabled(true);
    ASSERT_TRUE(fast->pipeline().uses_scanner()) << behavior;
    ASSERT_FALSE(pcre->pipeline().uses_scanner()) << behavior;
    for (const std::string& s : golden) {
      ASSERT_EQ(fast->encode(s), pcre->encode(s)) << behavior << " on golden '" << s << "'";
      ++compared;
    }
    for (int k = 0; k < n; ++k) {
      const std::string s = random_string(gen, k, /*invalid=*/true);
      ASSERT_EQ(fast->encode(s), pcre->encode(s)) << behavior << " on '" << s << "' (string " << k << ")";
      ++compared;
    }
  }
  // Removed + invert drops what no alternative matches: a lone control character encodes to
  // nothing, and Isolated keeps it.
  EXPECT_TRUE(Tokenizer::from_json(aeolian_tokenizer_json(), "a.json")->encode("\x01").empty());
  EXPECT_FALSE(Tokenizer::from_json(aeolian_tokenizer_json("Isolated"), "i.json")->encode("\x01").empty());
  std::printf("aeolian tokenizer with vs without the scanner: %zu texts (%zu golden), all identical\n",
              compared, 2 * golden.size());
}

std::string repeat(const std::string& s, size_t n) {
  std::string out;
  for (size_t k = 0; k < n; ++k) out += s;
  return out;
}

// Texts on which a backtracking matcher works hard (letters-apostrophe words whose \b fails after
// long runs, long gaps, long runs of one alternative): the scanner's work is linear, a 200 KB text
// takes milliseconds; short ones match PCRE2, and with Isolated (nothing dropped) every long one
// decodes back to itself.
TEST(AeolianScanner, PathologicalTextsAreLinear) {
  const size_t n = 100000;
  const std::vector<std::string> texts = {
      " " + repeat("a\u02BC", n) + "_",          // ʼ inside the word, no \b at its end
      " a'" + repeat("b", 2 * n) + "\u0301",      // no \b after the second run
      repeat("a", n) + "'" + repeat("b", n) + "\u0301x",
      repeat("\\n", n), repeat("\\ne", n), repeat(" <0x1", n), repeat(" 1", n),
      repeat("\x01", 2 * n), repeat("\u0301", n), repeat("\u200B ", n)};
  auto fast = Tokenizer::from_json(aeolian_tokenizer_json("Isolated"), "aeolian-isolated.json");
  tok::set_scanners_enabled(false);
  auto pcre = Tokenizer::from_json(aeolian_tokenizer_json("Isolated"), "aeolian-isolated.json");
  tok::set_scanners_enabled(true);
  for (const std::string& t : texts) {
    EXPECT_EQ(fast->decode(fast->encode(t)), t) << t.substr(0, 40);
    std::string head = t.substr(0, 3000);
    while (!head.empty() && (static_cast<uint8_t>(head.back()) & 0xC0) == 0x80) head.pop_back();
    if (!head.empty() && static_cast<uint8_t>(head.back()) >= 0xC0) head.pop_back();
    size_t tail = t.size() - 3;  // the end that makes \b fail, from a character's start
    while ((static_cast<uint8_t>(t[tail]) & 0xC0) == 0x80) --tail;
    head += t.substr(tail);
    EXPECT_EQ(fast->encode(head), pcre->encode(head)) << head.substr(0, 40);
  }
}

// The library's ids (npm tokenizers 0.23.2) for 800 random texts weighted like the ones above,
// with Removed + invert (the authors' export) and with Isolated: tests/data/aeolian/, written by
// its gen_library_cases.mjs. The library runs Oniguruma: this checks the translation of \b and \w
// and the gaps, not only the scanner against PCRE2.
TEST(AeolianScanner, EncodesAsTheLibrary) {
  std::ifstream f(std::string(HUGINN_TEST_DATA) + "/aeolian/library_cases.jsonl");
  ASSERT_TRUE(f.good());
  auto removed = Tokenizer::from_json(aeolian_tokenizer_json(), "aeolian.json");
  auto isolated = Tokenizer::from_json(aeolian_tokenizer_json("Isolated"), "aeolian-isolated.json");
  ASSERT_TRUE(removed->pipeline().uses_scanner());
  ASSERT_TRUE(isolated->pipeline().uses_scanner());
  size_t cases = 0;
  for (std::string line; std::getline(f, line); ++cases) {
    const nlohmann::json c = nlohmann::json::parse(line);
    const std::string text = c["text"].get<std::string>();
    EXPECT_EQ(removed->encode(text), c["removed"].get<std::vector<int32_t>>()) << "'" << text << "'";
    EXPECT_EQ(isolated->encode(text), c["isolated"].get<std::vector<int32_t>>()) << "'" << text << "'";
  }
  EXPECT_EQ(cases, 800u);
}

}  // namespace
}  // namespace huginn
