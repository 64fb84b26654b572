// Hostile tokenizer files and texts (issue 19): each case is a defect found by an attacker's
// tests or a fuzzer, and is answered by bounded work or by an Error that names the field and the
// bound. ctest gives these cases 120 s each (hostile_timeout.cmake): every one takes well under a
// second when the work is bounded, and minutes or forever when it is not.
#include <gtest/gtest.h>

#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "huginn/error.h"
#include "huginn/tokenizer.h"
#include "test_util.h"
#include "tokenizer/unicode.h"

namespace huginn {
namespace {

using json = nlohmann::json;
using tok::NormForm;

std::string repeat(const std::string& s, size_t n) {
  std::string out;
  out.reserve(s.size() * n);
  for (size_t k = 0; k < n; ++k) out += s;
  return out;
}

const std::string kAcute = "\xCC\x81";      // U+0301, combining class 230
const std::string kDotBelow = "\xCC\xA3";   // U+0323, combining class 220
const std::string kADotBelow = "\xE1\xBA\xA1";  // U+1EA1 = a + U+0323

// Alternating marks of two classes are the worst case of a reordering by neighbour swaps
// (n^2 / 8 swaps): 400,000 marks took minutes; a sort takes milliseconds.
TEST(HostileText, LongRunOfOutOfOrderCombiningMarks) {
  const size_t n = 200000;
  std::string text = "a" + repeat(kAcute + kDotBelow, n) + "b";
  // Canonical order puts every U+0323 before every U+0301; NFC then composes a + U+0323.
  EXPECT_EQ(tok::normalize(text, NormForm::kNFD),
            "a" + repeat(kDotBelow, n) + repeat(kAcute, n) + "b");
  EXPECT_EQ(tok::normalize(text, NormForm::kNFC),
            kADotBelow + repeat(kDotBelow, n - 1) + repeat(kAcute, n) + "b");
  EXPECT_EQ(tok::normalize(text, NormForm::kNFKC),
            kADotBelow + repeat(kDotBelow, n - 1) + repeat(kAcute, n) + "b");
}

// The sorted reordering against utf8proc's own (the reference) on random runs of marks of many
// classes, starters that compose with them, Hangul jamo, compatibility characters and invalid
// bytes: the same text in every form.
TEST(HostileText, SortedReorderingMatchesUtf8proc) {
  const std::vector<std::string> parts = {
      "a", "e", "o", "A", "\xC3\xA9", kAcute, kDotBelow, "\xCC\x80", "\xCD\x85" /*240*/,
      "\xCC\x95" /*232*/, "\xCC\xA8" /*202*/, "\xD6\xB0" /*10*/, "\xD6\xB1" /*11*/,
      "\xE0\xA4\xBC" /*7*/, "\xE0\xA5\x8D" /*9*/, "\xE3\x82\x99" /*8*/, "\xCC\xB4" /*1*/,
      "\xE1\x84\x80", "\xE1\x85\xA1", "\xE1\x86\xA8", "\xEA\xB0\x80", "\xEF\xB7\xBA" /*U+FDFA*/,
      "\xE1\xBE\xB3", "\xCE\x90", "\xF0\x91\x84\xA7", "\xff", "\xe4\xb8", " "};
  std::mt19937 rng(19);
  for (int rep = 0; rep < 2000; ++rep) {
    std::string s;
    int n = 1 + static_cast<int>(rng() % 40);
    for (int k = 0; k < n; ++k) {
      // Mostly marks, so that runs of them are long.
      size_t pick = rng() % 3 ? 5 + rng() % 12 : rng() % parts.size();
      s += parts[pick];
    }
    for (auto form : {NormForm::kNFC, NormForm::kNFD, NormForm::kNFKC, NormForm::kNFKD})
      ASSERT_EQ(tok::normalize(s, form), tok::normalize_reference(s, form))
          << json(tok::utf8_lossy(s)).dump() << " form " << static_cast<int>(form);
  }
}

// ---------------------------------------------------------------------------------------------
// Hostile tokenizer.json files

using test::tiny;
using test::error_of;

#define EXPECT_HAS(haystack, needle) \
  EXPECT_NE(std::string(haystack).find(needle), std::string::npos) << (haystack)

// One id of 2^26 - 1 in a 3 KB file sized every id-indexed array to 2^26 entries (8.4 GB).
TEST(HostileFile, VocabularyIdFarBeyondTheEntries) {
  json j = tiny({"a", "b"});
  j["model"]["vocab"]["x"] = (1 << 26) - 1;
  std::string e = error_of(j.dump());
  EXPECT_HAS(e, "bad.json: model.vocab['x']: expected an id in [0, 65539)");
  EXPECT_HAS(e, "min(2^26, 3 entries + 65536)");
  EXPECT_HAS(e, "found 67108863");
  j["model"]["vocab"]["x"] = 1e30;  // not an integer at all
  EXPECT_HAS(error_of(j.dump()), "model.vocab['x']: expected an id");
  // Holes within the bound are allowed (some vocabularies skip ids).
  j["model"]["vocab"]["x"] = 1000;
  auto t = Tokenizer::from_json(j.dump());
  EXPECT_EQ(t->id_limit(), 1001);
  EXPECT_EQ(t->token_to_id("x"), 1000);
  EXPECT_EQ(t->decode(std::vector<int32_t>{999, 1000, 1001}), "x");
}

TEST(HostileFile, AddedTokenIdFarBeyondTheEntries) {
  json j = tiny({"a", "b"});
  j["added_tokens"] = {{{"id", (1 << 26) - 1}, {"content", "<x>"}, {"special", true}}};
  std::string e = error_of(j.dump());
  EXPECT_HAS(e, "bad.json: added_tokens[0].id: expected an id in [0, 65539)");
  EXPECT_HAS(e, "found 67108863");
  j["added_tokens"][0]["id"] = -1;
  EXPECT_HAS(error_of(j.dump()), "added_tokens[0].id: expected an id in [0, 65539)");
  j["added_tokens"][0]["id"] = 70000;  // 2 + 1 entries + 65536 = 65539 is the first id refused
  EXPECT_HAS(error_of(j.dump()), "found 70000");
  j["added_tokens"][0]["id"] = 65538;
  EXPECT_EQ(Tokenizer::from_json(j.dump())->id_limit(), 65539);
}

std::string nested_text(const std::string& open, const std::string& close, size_t depth,
                        const std::string& inner) {
  std::string s;
  s.reserve((open.size() + close.size()) * depth + inner.size());
  for (size_t k = 0; k < depth; ++k) s += open;
  s += inner;
  for (size_t k = 0; k < depth; ++k) s += close;
  return s;
}

// A normalizer Sequence 50,000 deep took over 5 GB (each level's path in the messages), and
// deep JSON crashed whatever printed it: the nesting is refused at parse, naming the bound.
TEST(HostileFile, DeeplyNestedSequencesAndJson) {
  const std::string open = "{\"type\": \"Sequence\", \"normalizers\": [";
  json j = tiny({"a"});
  j["normalizer"] = "@";
  std::string text = j.dump();
  std::string deep = text;
  deep.replace(deep.find("\"@\""), 3, nested_text(open, "]}", 50000, "{\"type\": \"NFC\"}"));
  std::string e = error_of(deep);
  EXPECT_HAS(e, "bad.json: JSON nested deeper than 64 levels");
  // 100,000 levels of plain arrays, where an added token should be.
  std::string arrays = text;
  arrays.replace(arrays.find("\"added_tokens\":[]"), 17,
                 "\"added_tokens\":" + nested_text("[", "]", 100000, ""));
  EXPECT_HAS(error_of(arrays), "bad.json: JSON nested deeper than 64 levels (at /added_tokens/0/0");
  // Brackets inside strings do not count.
  json s = tiny({std::string(1000, '['), "\\\"" + std::string(100, '{'), "a"});
  EXPECT_EQ(error_of(s.dump()), "");
  // Within the JSON bound, Sequences may nest 16 deep and no deeper.
  std::string ok = text, over = text;
  ok.replace(ok.find("\"@\""), 3, nested_text(open, "]}", 16, "{\"type\": \"NFC\"}"));
  over.replace(over.find("\"@\""), 3, nested_text(open, "]}", 17, "{\"type\": \"NFC\"}"));
  EXPECT_EQ(error_of(ok), "");
  EXPECT_HAS(error_of(over), "normalizer Sequence nested more than 16 deep (the bound)");
  for (auto [field, list] : {std::pair{"pre_tokenizer", "pretokenizers"},
                             std::pair{"decoder", "decoders"},
                             std::pair{"post_processor", "processors"}}) {
    std::string o = "{\"type\": \"Sequence\", \"" + std::string(list) + "\": [";
    std::string leaf = std::string(field) == "pre_tokenizer" ? "{\"type\": \"Digits\"}"
                       : std::string(field) == "decoder"     ? "{\"type\": \"Fuse\"}"
                                                             : "{\"type\": \"ByteLevel\"}";
    json k = tiny({"a"});
    k[field] = "@";
    std::string t = k.dump();
    t.replace(t.find("\"@\""), 3, nested_text(o, "]}", 17, leaf));
    EXPECT_HAS(error_of(t), std::string(field) + " Sequence nested more than 16 deep");
  }
  // A file too large to be a tokenizer is refused before it is read (a sparse file: no disk used).
  std::string big = testing::TempDir() + "/huginn_hostile_big_tokenizer.json";
  { std::ofstream(big) << " "; }
  ASSERT_EQ(truncate(big.c_str(), off_t{300} << 20), 0);
  try {
    Tokenizer::load(big);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_HAS(e.what(), "the file is 314572800 bytes, more than the bound of 268435456 bytes");
  }
  std::remove(big.c_str());
  // Many components side by side.
  json wide = tiny({"a"});
  wide["normalizer"] = {{"type", "Sequence"}, {"normalizers", json::array()}};
  for (int k = 0; k < 300; ++k) wide["normalizer"]["normalizers"].push_back({{"type", "Lowercase"}});
  EXPECT_HAS(error_of(wide.dump()), "more than 256 normalizer components in one file (the bound)");
}

// A Replace that doubles the text, 40 times in a row, never ended: the normalized text is bounded
// by 32 x the input + 4 KiB, and the error says so before the text is built.
TEST(HostileFile, ReplaceThatDoublesTheText) {
  json j = tiny({"a"});
  json steps = json::array();
  for (int k = 0; k < 40; ++k)
    steps.push_back({{"type", "Replace"}, {"pattern", {{"String", "a"}}}, {"content", "aa"}});
  j["normalizer"] = {{"type", "Sequence"}, {"normalizers", steps}};
  auto t = Tokenizer::from_json(j.dump(), "doubling.json");
  try {
    t->encode(std::string(100, 'a'));
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_HAS(e.what(), "doubling.json: normalizer: the text would grow from 100 to 12800 bytes");
    EXPECT_HAS(e.what(), "more than the bound of 32 x input + 4096 = 7296 bytes");
  }
  // An empty regex matches between every two characters.
  j["normalizer"] = {{"type", "Sequence"},
                     {"normalizers", json::array({{{"type", "Replace"},
                                                   {"pattern", {{"Regex", ""}}},
                                                   {"content", std::string(100, 'a')}}})}};
  EXPECT_THROW(Tokenizer::from_json(j.dump())->encode(std::string(1000, 'a')), Error);
  // Growth within the bound is fine: 5 doublings are 32x.
  steps.erase(steps.begin() + 5, steps.end());
  j["normalizer"] = {{"type", "Sequence"}, {"normalizers", steps}};
  EXPECT_EQ(Tokenizer::from_json(j.dump())->encode(std::string(1000, 'a')).size(), 32000u);
  // Prepend grows the text too.
  j["normalizer"] = {{"type", "Prepend"}, {"prepend", std::string(5000, 'a')}};
  EXPECT_THROW(Tokenizer::from_json(j.dump())->encode("a"), Error);
}

// Pre-tokenizers that map bytes to two-byte characters, one after another.
TEST(HostileFile, PreTokenizerStepsThatDoubleTheText) {
  json j = tiny({"a"});
  json steps = json::array();
  for (int k = 0; k < 40; ++k)
    steps.push_back({{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}});
  j["pre_tokenizer"] = {{"type", "Sequence"}, {"pretokenizers", steps}};
  auto t = Tokenizer::from_json(j.dump(), "bytes.json");
  try {
    t->encode(repeat("\xC3\xA9", 500));
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_HAS(e.what(), "bytes.json: pre_tokenizer: the text would grow from 1000 to");
    EXPECT_HAS(e.what(), "32 x input + 4096 = 36096 bytes");
  }
}

TEST(HostileFile, DecoderReplaceThatDoublesTheText) {
  json j = tiny({"a"});
  json steps = json::array();
  for (int k = 0; k < 40; ++k)
    steps.push_back({{"type", "Replace"}, {"pattern", {{"String", "a"}}}, {"content", "aa"}});
  j["decoder"] = {{"type", "Sequence"}, {"decoders", steps}};
  auto t = Tokenizer::from_json(j.dump(), "dec.json");
  try {
    t->decode(std::vector<int32_t>(10, 0));
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_HAS(e.what(), "dec.json: decoder: the text would grow from 10 to");
    EXPECT_HAS(e.what(), "32 x input + 4096 = 4416 bytes");
  }
}

TEST(HostileFile, OtherSizesAndIdsAreBounded) {
  json j = tiny({"a"});
  j["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"Regex", std::string(20000, 'a')}}},
                        {"behavior", "Isolated"}};
  EXPECT_HAS(error_of(j.dump()), "pre_tokenizer.pattern.Regex: 20000 bytes, more than the bound of 16384");
  j = tiny({"a"});
  j["normalizer"] = {{"type", "Replace"}, {"pattern", {{"String", "a"}}}, {"content", std::string(20000, 'b')}};
  EXPECT_HAS(error_of(j.dump()), "normalizer.content: 20000 bytes, more than the bound of 16384");
  // Post-processor ids: integers that name a token.
  j = tiny({"a", "<s>"});
  j["post_processor"] = {{"type", "BertProcessing"}, {"cls", {"<s>", 1}}, {"sep", {"<s>", int64_t{1} << 40}}};
  EXPECT_HAS(error_of(j.dump()), "post_processor.sep[1]: expected a token id, an integer in [0, 2^26)");
  j["post_processor"]["sep"] = {"<s>", 7};
  EXPECT_HAS(error_of(j.dump()), "post_processor: id 7 is neither in the vocabulary nor an added token");
  j["post_processor"]["sep"] = {"<s>", 1};
  EXPECT_EQ(Tokenizer::from_json(j.dump())->encode("a", true), (std::vector<int32_t>{1, 0, 1}));
  j["post_processor"] = {{"type", "TemplateProcessing"},
                         {"single", {{{"SpecialToken", {{"id", "<s>"}}}}, {{"Sequence", {{"id", "A"}}}}}},
                         {"special_tokens", {{"<s>", {{"ids", {-5}}}}}}};
  EXPECT_HAS(error_of(j.dump()), "special_tokens.<s>.ids[0]: expected a token id");
  // A value quoted in an error is cut, not copied whole.
  j = tiny({"a"});
  j["model"]["vocab"][std::string(1 << 20, 'x')] = -1;
  std::string e = error_of(j.dump());
  EXPECT_HAS(e, "xxx... (1048576 bytes)");
  EXPECT_LT(e.size(), 400u);
}

// `j` as text with the string value "@LIST@" replaced by a JSON array of `n` zeros: arrays far
// too long to build as nlohmann values in the test (2^24 entries) cost 2 bytes each as text.
std::string with_zeros(const json& j, size_t n) {
  const std::string text = j.dump();
  const std::string mark = "\"@LIST@\"";
  const size_t at = text.find(mark);
  if (at == std::string::npos) {
    ADD_FAILURE() << "no " << mark << " in " << text;
    return text;
  }
  std::string list(2 * n + 1, ',');
  list.front() = '[';
  for (size_t k = 0; k < n; ++k) list[2 * k + 1] = '0';
  list.back() = ']';
  return text.substr(0, at) + list + text.substr(at + mark.size());
}

// The count bounds of limits.h: 2^24 merges and 2^20 added tokens. Just past each, the count is
// refused before any entry is read; at the added-token bound the count passes and the first entry
// (a 0) is what is refused. (Merges at their bound are left out: 2^24 entries parse in about
// 35 s under ASan.)
TEST(HostileFile, MergeAndAddedTokenCountsAreBounded) {
  json j = tiny({"a", "b"});
  j["model"]["merges"] = "@LIST@";
  EXPECT_HAS(error_of(with_zeros(j, (size_t{1} << 24) + 1)),
             "bad.json: model.merges: 16777217 merges, more than the bound of 16777216");
  j = tiny({"a", "b"});
  j["added_tokens"] = "@LIST@";
  const size_t added = size_t{1} << 20;
  EXPECT_HAS(error_of(with_zeros(j, added + 1)),
             "bad.json: added_tokens: 1048577 added tokens, more than the bound of 1048576");
  EXPECT_HAS(error_of(with_zeros(j, added)), "bad.json: added_tokens[0]: expected {\"id\": integer");
}

// Added tokens were tried one by one at each position of the text that starts like them: 100,000
// tokens sharing a first byte made every such byte cost 100,000 comparisons.
TEST(HostileFile, ManyAddedTokensSharingAPrefix) {
  json j = tiny({"<", "a"});
  for (int k = 0; k < 100000; ++k)
    j["added_tokens"].push_back({{"id", 2 + k}, {"content", "<t" + std::to_string(k) + ">"}});
  auto t = Tokenizer::from_json(j.dump());
  const size_t n = 500000;  // 5 * 10^10 comparisons before
  std::string text = std::string(n, '<') + "<t99999><t5>a";
  std::vector<int32_t> ids = t->encode(text);
  ASSERT_EQ(ids.size(), n + 3);
  EXPECT_EQ(ids[n - 1], 0);
  EXPECT_EQ(ids[n], 2 + 99999);
  EXPECT_EQ(ids[n + 1], 2 + 5);
  EXPECT_EQ(ids[n + 2], 1);
  j["added_tokens"] = {{{"id", 2}, {"content", std::string(2000, '<')}}};
  EXPECT_HAS(error_of(j.dump()), "added_tokens[0].content: 2000 bytes, more than the bound of 1024");
}

// Leftmost, then longest, then the first listed, against a plain scan of every pattern.
TEST(HostileFile, AddedTokenMatchingIsLeftmostLongest) {
  const std::vector<std::string> patterns = {"<a>", "<a", "<ab>", "ab", "b>", "<<", "ab", "a>b"};
  json j = tiny({"<", "a", "b", ">"});
  for (size_t k = 0; k < patterns.size(); ++k)
    j["added_tokens"].push_back({{"id", 4 + k}, {"content", patterns[k]}});
  auto t = Tokenizer::from_json(j.dump());
  std::mt19937 rng(5);
  for (int rep = 0; rep < 2000; ++rep) {
    std::string text;
    for (int k = 0, n = static_cast<int>(rng() % 16); k < n; ++k) text.push_back("<ab>"[rng() % 4]);
    std::vector<int32_t> want;
    for (size_t pos = 0; pos < text.size();) {
      size_t best_at = text.size(), best_len = 0;
      int best = -1;
      for (size_t at = pos; at < text.size() && best < 0; ++at)
        for (size_t k = 0; k < patterns.size(); ++k)
          if (text.compare(at, patterns[k].size(), patterns[k]) == 0 && patterns[k].size() > best_len)
            best = static_cast<int>(k), best_at = at, best_len = patterns[k].size();
      for (size_t i = pos; i < best_at; ++i)
        want.push_back(static_cast<int32_t>(std::string("<ab>").find(text[i])));
      if (best < 0) break;
      want.push_back(4 + best);
      pos = best_at + best_len;
    }
    EXPECT_EQ(t->encode(text), want) << text;
  }
}

// ---------------------------------------------------------------------------------------------
// Arbitrary bytes through the real tokenizers

std::shared_ptr<const Tokenizer> golden(const std::string& name) {
  return Tokenizer::load(std::string(HUGINN_TEST_DATA) + "/tokenizers/" + name + "/tokenizer.json");
}

std::string streamed(std::shared_ptr<const Tokenizer> t, const std::vector<int32_t>& ids, bool skip) {
  StreamDecoder stream(std::move(t), skip);
  std::string out;
  for (int32_t id : ids) out += stream.push(id);
  return out + stream.finish();
}

// Random bytes, random code points (marks, Hangul, astral), long runs of one character and of
// whitespace: encoding never fails, decoding any ids (unknown, negative, huge) returns valid
// UTF-8, and streaming decoding agrees with it.
TEST(HostileText, ArbitraryBytesAndIdsThroughEveryGoldenTokenizer) {
  std::mt19937 rng(1919);
  std::vector<std::string> texts;
  for (int k = 0; k < 4; ++k) {
    std::string s(16384, '\0');
    for (char& c : s) c = static_cast<char>(rng());
    texts.push_back(s);
  }
  std::string cps;
  for (int k = 0; k < 8000; ++k) {
    int32_t cp = static_cast<int32_t>(rng() % 4 == 0 ? 0x300 + rng() % 0x70 : rng() % 0x30000);
    if (cp >= 0xD800 && cp < 0xE000) cp = 'x';
    tok::utf8_append(cps, cp);
  }
  texts.push_back(cps);
  texts.push_back(std::string(100000, 'a'));
  texts.push_back(std::string(100000, ' '));
  texts.push_back(repeat("\xE2\x96\x81", 30000));
  texts.push_back(repeat("<|", 30000));
  texts.push_back(std::string("\0\0\0", 3));
  for (const char* name : {"cl100k", "gpt-oss", "mistral-7b", "qwen3"}) {
    auto t = golden(name);
    for (const std::string& text : texts) {
      std::vector<int32_t> ids;
      ASSERT_NO_THROW(ids = t->encode(text, true)) << name;
      for (int32_t id : ids) ASSERT_TRUE(id >= 0 && id < t->id_limit()) << name << " id " << id;
      EXPECT_TRUE(tok::utf8_valid(t->decode(ids))) << name;
    }
    std::vector<int32_t> ids;
    for (int k = 0; k < 3000; ++k) {
      uint32_t r = rng();
      ids.push_back(r % 8 == 0 ? static_cast<int32_t>(r) : static_cast<int32_t>(r % (t->id_limit() + 10)));
    }
    ids.push_back(-1);
    ids.push_back(INT32_MAX);
    ids.push_back(INT32_MIN);
    // Single-byte tokens (byte-level or <0xXX>, all below id 300 in these files) mixed with
    // special and unknown ids, which decode() drops.
    std::vector<int32_t> bytes;
    std::vector<int32_t> specials = t->special_ids();
    for (int k = 0; k < 3000; ++k) {
      uint32_t r = rng();
      bytes.push_back(r % 5 == 0 ? specials[r % specials.size()] : r % 5 == 1 ? -7 : static_cast<int32_t>(r % 300));
    }
    for (const auto& list : {ids, bytes})
      for (bool skip : {false, true}) {
        std::string whole = t->decode(list, skip);
        EXPECT_TRUE(tok::utf8_valid(whole)) << name;
        EXPECT_EQ(streamed(t, list, skip), whole) << name;
      }
  }
}

// Found by the tokenizer_text fuzzer (fuzz.md F3): decode() groups ByteFallback byte tokens
// across an id it drops (a skipped special token, an unknown id); the stream ended the run there.
TEST(HostileText, StreamingGroupsByteTokensAcrossDroppedIds) {
  auto t = golden("mistral-7b");
  ASSERT_EQ(t->id_to_token(12), "<0x09>");
  ASSERT_EQ(t->id_to_token(180), "<0xB1>");
  ASSERT_TRUE(t->is_special(0));
  const std::string two_fffd = "\xEF\xBF\xBD\xEF\xBF\xBD";  // "\t\xB1" is invalid: one per byte
  std::vector<int32_t> special = {12, 0, 180}, unknown = {12, 99999, 180};
  EXPECT_EQ(t->decode(special, true), two_fffd);
  EXPECT_EQ(streamed(t, special, true), two_fffd);
  EXPECT_EQ(t->decode(unknown, false), two_fffd);
  EXPECT_EQ(streamed(t, unknown, false), two_fffd);
  EXPECT_EQ(streamed(t, special, false), t->decode(special, false));
}

}  // namespace
}  // namespace huginn
