// The hand-written pre-tokenizer scanners (src/tokenizer/scanner.h) against the general PCRE2
// path: recognition of the patterns however they are spelled, identical matches on random
// Unicode text, and identical encodings of the golden tokenizers on random text with invalid
// UTF-8. The number of random strings per check is HUGINN_DIFF_STRINGS (default 20,000: a few
// seconds); a big run is the same binary with a larger number, e.g.
//   HUGINN_DIFF_STRINGS=1000000 build/tests/tokenizer/tokenizer_scanner_test
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>

#include "huginn/tokenizer.h"
#include "random_text.h"
#include "tokenizer/pipeline.h"
#include "tokenizer/regex.h"
#include "tokenizer/scanner.h"

namespace huginn {
namespace {

using tok::Regex;
using tok::ScanFamily;
using tok::Scanner;
using test::diff_strings;

std::string data(const std::string& rel) { return std::string(HUGINN_TEST_DATA) + "/tokenizers/" + rel; }

// The Split regex of a golden tokenizer.json.
std::string split_regex(const std::string& name) {
  std::ifstream f(data(name + "/tokenizer.json"));
  nlohmann::json j = nlohmann::json::parse(f);
  return j["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"].get<std::string>();
}

const char* kGpt2 = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
const char* kTiktokenCl100k =
    "'(?i:[sdmt]|ll|ve|re)|[^\\r\\n\\p{L}\\p{N}]?+\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]++[\\r\\n]*|"
    "\\s*[\\r\\n]|\\s+(?!\\S)|\\s+";
const char* kPunct = " ?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

std::string replace(std::string s, const std::string& from, const std::string& to) {
  size_t at = s.find(from);
  EXPECT_NE(at, std::string::npos) << from;
  if (at != std::string::npos) s.replace(at, from.size(), to);
  return s;
}

TEST(Scanner, GoldenTokenizersPatternsAreRecognised) {
  struct Case {
    const char* name;
    ScanFamily family;
    int digits;
  };
  for (const Case& c : {Case{"cl100k", ScanFamily::kCl100k, 3}, Case{"qwen3", ScanFamily::kCl100k, 1},
                        Case{"gpt-oss", ScanFamily::kO200k, 3}}) {
    Regex re(split_regex(c.name), c.name);
    ASSERT_NE(re.scanner(), nullptr) << c.name;
    EXPECT_EQ(re.scanner()->family(), c.family) << c.name;
    EXPECT_EQ(re.scanner()->max_digits(), c.digits) << c.name;
  }
  Regex gpt2(kGpt2, "gpt2");
  ASSERT_NE(gpt2.scanner(), nullptr);
  EXPECT_EQ(gpt2.scanner()->family(), ScanFamily::kGpt2);
}

TEST(Scanner, OtherSpellingsOfTheSamePatternsAreRecognised) {
  const std::string cl = split_regex("cl100k");
  const std::vector<std::pair<std::string, ScanFamily>> same = {
      {kTiktokenCl100k, ScanFamily::kCl100k},
      {replace(cl, "\\p{L}+", "\\p{Letter}+"), ScanFamily::kCl100k},
      {replace(cl, "[^\\r\\n\\p{L}\\p{N}]", "[^\\p{N}\\n\\r\\pL]"), ScanFamily::kCl100k},
      {replace(cl, "\\r\\n]*", "\\x0D\\u000A]*"), ScanFamily::kCl100k},
      // Huginn-0125's generation script: "gpt" (= cl100k), "gpt-num2", "gpt-num1", "punct", "gpt-2".
      {replace(cl, "{1,3}", "{1,2}"), ScanFamily::kCl100k},
      {replace(cl, "{1,3}", "{1,1}"), ScanFamily::kCl100k},
      {kPunct, ScanFamily::kPunct},
      {"'s|'t|'re|'ve|'m|'ll|'d| ?[\\p{L}]+| ?[\\p{N}]+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+", ScanFamily::kGpt2},
  };
  for (const auto& [pattern, family] : same) {
    Regex re(pattern, "test");
    ASSERT_NE(re.scanner(), nullptr) << pattern;
    EXPECT_EQ(re.scanner()->family(), family) << pattern;
  }
  EXPECT_EQ(Regex(replace(cl, "{1,3}", "{1,2}"), "t").scanner()->max_digits(), 2);
  // Patterns that differ in what they match stay on PCRE2.
  const std::vector<std::string> other = {
      replace(cl, "(?i:", "(?:"),          // case-sensitive contractions
      replace(cl, "\\s+(?!\\S)|", ""),     // no lookahead alternative
      replace(cl, "{1,3}", "{2,3}"),
      replace(cl, "[\\r\\n]*|", "|"),
      replace(split_regex("gpt-oss"), "[\\r\\n/]*", "[\\r\\n]*"),
      std::string(kGpt2) + "|x",
      "\\w+|[^\\w\\s]+",
  };
  for (const std::string& pattern : other) EXPECT_EQ(Regex(pattern, "test").scanner(), nullptr) << pattern;
}

TEST(Scanner, CanonicalPatternNormalisesSpelling) {
  using tok::canonical_pattern;
  EXPECT_EQ(canonical_pattern("\\pL"), canonical_pattern("\\p{Letter}"));
  EXPECT_EQ(canonical_pattern("[\\p{L}]+"), canonical_pattern("\\p{L}+"));
  EXPECT_EQ(canonical_pattern("[\\p{N}\\p{L}]"), canonical_pattern("[\\p{L}\\p{Number}]"));
  EXPECT_EQ(canonical_pattern("\\p{^L}"), canonical_pattern("\\P{L}"));
  EXPECT_EQ(canonical_pattern("[\\r\\n]"), canonical_pattern("[\\n\\x{d}]"));
  EXPECT_EQ(canonical_pattern("\\p{N}{1,1}"), canonical_pattern("\\p{N}"));
  EXPECT_NE(canonical_pattern("[^\\p{L}]"), canonical_pattern("\\p{L}"));
  EXPECT_NE(canonical_pattern("\\p{Lu}"), canonical_pattern("\\p{Ll}"));
}

TEST(Scanner, CharacterClassesAreUnicode16AsInTheRegexPath) {
  using tok::char_flags;
  EXPECT_TRUE(char_flags('a') & tok::kCharL);
  EXPECT_TRUE(char_flags('a') & tok::kCharLower);
  EXPECT_FALSE(char_flags('A') & tok::kCharLower);
  EXPECT_TRUE(char_flags(0x01C5) & tok::kCharUpper);    // Lt
  EXPECT_TRUE(char_flags(0x0301) & tok::kCharUpper);    // Mn is in both case classes
  EXPECT_TRUE(char_flags(0x0301) & tok::kCharLower);
  EXPECT_FALSE(char_flags(0x0301) & tok::kCharL);
  EXPECT_TRUE(char_flags(0x00BD) & tok::kCharN);        // No
  EXPECT_TRUE(char_flags(0x0085) & tok::kCharSpace);
  EXPECT_FALSE(char_flags(0xFEFF) & tok::kCharSpace);
  EXPECT_FALSE(char_flags(0x200B) & tok::kCharSpace);
  EXPECT_TRUE(char_flags(0x1E4D0) & tok::kCharL);       // new in Unicode 15
  EXPECT_TRUE(char_flags(0x11F04) & tok::kCharL);       // new in Unicode 15
  EXPECT_TRUE(char_flags(0x10D4A) & tok::kCharL);       // new in Unicode 16
  EXPECT_FALSE(char_flags(0xA7CE) & tok::kCharL);       // new in Unicode 17: not for the oracle
}

// Every pattern the scanners know, matched by both paths on random Unicode strings.
TEST(Scanner, MatchesPcre2OnRandomUnicode) {
  std::vector<std::string> patterns = {kGpt2, kTiktokenCl100k, kPunct, split_regex("cl100k"),
                                       split_regex("qwen3"), split_regex("gpt-oss"),
                                       replace(split_regex("cl100k"), "{1,3}", "{1,2}")};
  const int n = diff_strings();
  test::RandomText gen(20260601);
  size_t compared = 0;
  std::vector<std::pair<size_t, size_t>> a, b;
  for (const std::string& pattern : patterns) {
    Regex pcre(pattern, "pcre", /*allow_scanner=*/false), fast(pattern, "fast");
    ASSERT_NE(fast.scanner(), nullptr) << pattern;
    for (int k = 0; k < n; ++k) {
      std::string s = gen.next(k % 4 == 0 ? 200 : 24, /*invalid=*/false);
      a.clear();
      b.clear();
      pcre.find_all(s, a);
      fast.find_all(s, b);
      ASSERT_EQ(a, b) << fast.scanner()->name() << " on '" << s << "' (string " << k << ")";
      ++compared;
    }
  }
  std::printf("scanner vs PCRE2: %zu random strings, %zu patterns, all identical\n", compared,
              patterns.size());
}

// The golden tokenizers loaded with and without scanners encode random text (invalid UTF-8
// included) to the same ids.
TEST(Scanner, TokenizersEncodeAsWithPcre2) {
  const int n = std::max(1, diff_strings() / 4);
  test::RandomText gen(77);
  size_t compared = 0;
  for (const char* name : {"cl100k", "qwen3", "gpt-oss"}) {
    auto fast = Tokenizer::load(data(std::string(name) + "/tokenizer.json"));
    tok::set_scanners_enabled(false);
    auto pcre = Tokenizer::load(data(std::string(name) + "/tokenizer.json"));
    tok::set_scanners_enabled(true);
    ASSERT_TRUE(fast->pipeline().uses_scanner()) << name;
    ASSERT_FALSE(pcre->pipeline().uses_scanner()) << name;
    for (int k = 0; k < n; ++k) {
      std::string s = gen.next(k % 8 == 0 ? 400 : 40, /*invalid=*/true);
      ASSERT_EQ(fast->encode(s), pcre->encode(s)) << name << " on '" << s << "' (string " << k << ")";
      ++compared;
    }
  }
  std::printf("tokenizers with vs without scanners: %zu random strings, all identical\n", compared);
}

}  // namespace
}  // namespace huginn

namespace huginn {
namespace {

// Streaming decode of random id sequences (byte tokens spelling invalid UTF-8, specials, unknown
// ids) concatenates to the full decode, for the ByteLevel fast path and the general one.
TEST(StreamDecode, RandomIdsConcatenateToTheFullDecode) {
  test::RandomText gen(5);
  size_t sequences = 0;
  for (const char* name : {"cl100k", "mistral-7b"}) {
    auto tok = Tokenizer::load(data(std::string(name) + "/tokenizer.json"));
    const int32_t limit = tok->id_limit();
    for (int k = 0; k < std::max(1, diff_strings() / 20); ++k) {
      std::vector<int32_t> ids;
      const int n = static_cast<int>(gen.pick(40));
      for (int t = 0; t < n; ++t) {
        switch (gen.pick(6)) {
          case 0: ids.push_back(static_cast<int32_t>(gen.pick(300))); break;  // bytes, short tokens
          case 1: ids.push_back(limit - 1 - static_cast<int32_t>(gen.pick(30))); break;  // specials
          case 2: ids.push_back(gen.pick(2) ? -1 : limit + 5); break;  // unknown
          default: ids.push_back(static_cast<int32_t>(gen.pick(limit))); break;
        }
      }
      for (bool skip : {false, true}) {
        StreamDecoder sd(tok, skip);
        std::string streamed;
        for (int32_t id : ids) streamed += sd.push(id);
        streamed += sd.finish();
        ASSERT_EQ(streamed, tok->decode(ids, skip)) << name << " sequence " << k;
      }
      ++sequences;
    }
  }
  std::printf("streaming decode: %zu random id sequences, all equal to the full decode\n", sequences);
}

}  // namespace
}  // namespace huginn
