// Tokenizer behaviour beyond the golden files: bad input, invalid UTF-8, empty input, components
// the golden tokenizers do not use, the regex translation, BPE against a plain reference, batch
// encoding, streaming and chat templates.
#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <unordered_map>

#include "huginn/error.h"
#include "huginn/thread_pool.h"
#include "huginn/tokenizer.h"
#include "test_util.h"
#include "tokenizer/regex.h"
#include "tokenizer/unicode.h"

namespace huginn {
namespace {

using json = nlohmann::json;

std::string data(const std::string& rel) { return std::string(HUGINN_TEST_DATA) + "/tokenizers/" + rel; }

std::shared_ptr<const Tokenizer> cl100k() {
  static auto t = Tokenizer::load(data("cl100k/tokenizer.json"));
  return t;
}
std::shared_ptr<const Tokenizer> mistral() {
  static auto t = Tokenizer::load(data("mistral-7b/tokenizer.json"));
  return t;
}

using test::error_of;
using test::tiny;

// ---------------------------------------------------------------------------------------------

TEST(TokenizerLoad, MalformedOrUnsupportedFilesGiveClearErrors) {
  EXPECT_NE(error_of("{not json").find("bad.json: not valid JSON"), std::string::npos);
  EXPECT_NE(error_of("[1,2]").find("expected a JSON object"), std::string::npos);
  EXPECT_NE(error_of("{}").find("missing field 'model'"), std::string::npos);
  json j = tiny({"a", "b", "ab"}, {"a b"});
  j["model"]["type"] = "Unigram";
  EXPECT_NE(error_of(j.dump()).find("unsupported model type 'Unigram'"), std::string::npos);
  j = tiny({"a", "b", "ab"}, {"a b"});
  j["normalizer"] = {{"type", "BertNormalizer"}};
  EXPECT_NE(error_of(j.dump()).find("normalizer: unsupported normalizer type 'BertNormalizer'"),
            std::string::npos);
  j = tiny({"a", "b", "ab"}, {"a b"});
  j["pre_tokenizer"] = {{"type", "Sequence"}, {"pretokenizers", {{{"type", "UnicodeScripts"}}}}};
  EXPECT_NE(error_of(j.dump()).find("pretokenizers[0]: unsupported pre_tokenizer type 'UnicodeScripts'"),
            std::string::npos);
  j = tiny({"a", "b", "ab"}, {"a b"});
  j["decoder"] = {{"type", "CTC"}};
  EXPECT_NE(error_of(j.dump()).find("unsupported decoder type 'CTC'"), std::string::npos);
  j = tiny({"a", "b", "ab"}, {"a c"});
  EXPECT_NE(error_of(j.dump()).find("merges[0]: token 'c' is not in the vocabulary"), std::string::npos);
  j = tiny({"a", "b"}, {"a b"});
  EXPECT_NE(error_of(j.dump()).find("merged token 'ab' is not in the vocabulary"), std::string::npos);
  j = tiny({"a", "b", "ab"}, {"ab"});
  EXPECT_NE(error_of(j.dump()).find("expected \"a b\""), std::string::npos);
  j = tiny({"a", "b", "ab"}, {"a b"});
  j["model"]["vocab"]["x"] = -3;
  EXPECT_NE(error_of(j.dump()).find("vocab['x']"), std::string::npos);
  j = tiny({"a", "b", "ab"}, {"a b"});
  j["truncation"] = {{"max_length", 5}};
  EXPECT_NE(error_of(j.dump()).find("truncation is not supported"), std::string::npos);
  j = tiny({"a", "b", "ab"}, {"a b"});
  j["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"Regex", "(a"}}}, {"behavior", "Isolated"}};
  EXPECT_NE(error_of(j.dump()).find("cannot compile regex '(a'"), std::string::npos);
  j = tiny({"a", "b", "ab"}, {"a b"});
  j["model"]["dropout"] = 0.1;
  EXPECT_NE(error_of(j.dump()).find("dropout"), std::string::npos);
  j = tiny({"a", "b", "ab"}, {"a b"});
  j["added_tokens"] = {{{"content", "<x>"}}};
  EXPECT_NE(error_of(j.dump()).find("added_tokens[0]"), std::string::npos);
  try {
    Tokenizer::load("/nonexistent/dir/tokenizer.json");
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/dir/tokenizer.json"), std::string::npos);
  }
}

TEST(TokenizerEncode, EmptyInput) {
  EXPECT_TRUE(cl100k()->encode("").empty());
  EXPECT_TRUE(mistral()->encode("").empty());
  EXPECT_EQ(mistral()->encode("", true), std::vector<int32_t>{1});
  EXPECT_EQ(cl100k()->decode(std::vector<int32_t>{}), "");
  EXPECT_EQ(mistral()->decode(std::vector<int32_t>{}), "");
}

// Raw bytes behind byte-level token strings.
std::string raw_bytes(const Tokenizer& t, const std::vector<int32_t>& ids) {
  std::string out;
  for (int32_t id : ids) {
    std::string s = t.id_to_token(id);
    for (size_t i = 0; i < s.size();) {
      int len;
      int b = tok::byte_of_char(tok::utf8_decode(s, i, &len));
      EXPECT_GE(b, 0) << "token " << id << " is not byte-level";
      out.push_back(static_cast<char>(b));
      i += len;
    }
  }
  return out;
}

TEST(TokenizerEncode, InvalidUtf8IsEncodedAsRawBytes) {
  const std::vector<std::string> texts = {"\xff", "a\xffz", "caf\xc3", "\xe4\xb8 x", "\xc0\xaf",
                                          "\xed\xa0\x80 s", "ok \xf4\x90\x80\x80!", "\x80\x80\x80"};
  for (const std::string& t : texts) {
    auto ids = cl100k()->encode(t);
    EXPECT_EQ(raw_bytes(*cl100k(), ids), t);
    EXPECT_EQ(cl100k()->decode(ids), tok::utf8_lossy(t));
  }
  // SentencePiece-style byte fallback: the invalid byte becomes <0xFF>.
  auto ids = mistral()->encode("a\xff");
  ASSERT_FALSE(ids.empty());
  EXPECT_EQ(mistral()->id_to_token(ids.back()), "<0xFF>");
  // One U+FFFD per byte token of an invalid run, as the library's ByteFallback decoder does.
  EXPECT_EQ(mistral()->decode(ids), "a\xEF\xBF\xBD");
}

TEST(Utf8, LossyMatchesRustFromUtf8Lossy) {
  const std::string r = "\xEF\xBF\xBD";
  EXPECT_EQ(tok::utf8_lossy("abc"), "abc");
  EXPECT_EQ(tok::utf8_lossy("\xf0\x9f"), r);               // truncated 4-byte: one maximal subpart
  EXPECT_EQ(tok::utf8_lossy("\xf0\x9f" "a"), r + "a");
  EXPECT_EQ(tok::utf8_lossy("\xc0\xaf"), r + r);           // overlong: two
  EXPECT_EQ(tok::utf8_lossy("\xed\xa0\x80"), r + r + r);   // surrogate: three
  EXPECT_EQ(tok::utf8_lossy("\xf4\x90\x80\x80"), r + r + r + r);
  EXPECT_EQ(tok::utf8_lossy("\xe4\xb8\xad\xe4"), "\xe4\xb8\xad" + r);
}

// The chunked normalizer against utf8proc over whole runs, on random mixes of characters that
// compose, decompose, reorder or are Hangul, with plain text and invalid bytes between them.
TEST(Utf8, ChunkedNormalizationMatchesReference) {
  const std::vector<std::string> parts = {
      "a", "e", " ", "A", "\xC3\xA9", "\xCC\x81", "\xCC\x80", "\xCC\xA3", "\xCD\x85",
      "\xE1\x84\x80", "\xE1\x85\xA1", "\xE1\x86\xA8", "\xEA\xB0\x80", "\xE2\x84\xAB",
      "\xEF\xAC\x81", "\xC2\xA0", "\xE4\xB8\xAD", "\xE0\xA4\x95", "\xE0\xA4\xBC",
      "\xE0\xA5\x8D", "\xCE\x90", "\xE1\xBE\xB3", "\xC2\xB9", "\xF0\x91\x84\xB1",
      "\xF0\x91\x84\xA7", "\xff", "\xe4\xb8", "\n", "1", "\xE2\x80\xAE"};
  std::mt19937 rng(3);
  for (int rep = 0; rep < 3000; ++rep) {
    std::string s;
    int n = 1 + rng() % 12;
    for (int k = 0; k < n; ++k) s += parts[rng() % parts.size()];
    for (auto form : {tok::NormForm::kNFC, tok::NormForm::kNFD, tok::NormForm::kNFKC, tok::NormForm::kNFKD})
      ASSERT_EQ(tok::normalize(s, form), tok::normalize_reference(s, form))
          << json(tok::utf8_lossy(s)).dump() << " form " << static_cast<int>(form);
  }
}

TEST(Regex, FollowsUnicode16AndOnigurumaWhitespace) {
  std::vector<std::pair<size_t, size_t>> m;
  tok::Regex letters("\\p{L}+", "test");
  m.clear();
  letters.find_all("a\xF0\x90\x97\x80" "b", m);  // U+105C0 TODHRI LETTER A (Unicode 16)
  ASSERT_EQ(m.size(), 1u);
  EXPECT_EQ(m[0], std::make_pair(size_t{0}, size_t{6}));
  m.clear();
  letters.find_all("a\xEA\x9F\x8E" "b", m);  // U+A7CE, a letter only from Unicode 17
  EXPECT_EQ(m.size(), 2u);
  tok::Regex ws("\\s+", "test");
  m.clear();
  ws.find_all("a\xC2\x85" "b\xEF\xBB\xBF" "c", m);  // U+0085 is White_Space, U+FEFF is not
  ASSERT_EQ(m.size(), 1u);
  EXPECT_EQ(m[0], std::make_pair(size_t{1}, size_t{3}));
  EXPECT_THROW(tok::Regex("[\\S]", "test"), Error);
}

TEST(TokenizerComponents, MetaspaceDigitsAndAddedTokenStripping) {
  json j = tiny({"<unk>", "\xE2\x96\x81", "a", "b", "1", "2", "\xE2\x96\x81" "a", "<sep>"},
                {"\xE2\x96\x81 a"});
  j["model"]["unk_token"] = "<unk>";
  j["model"]["fuse_unk"] = true;
  j["pre_tokenizer"] = {{"type", "Sequence"},
                        {"pretokenizers",
                         {{{"type", "Metaspace"}, {"replacement", "\xE2\x96\x81"}, {"prepend_scheme", "first"}, {"split", true}},
                          {{"type", "Digits"}, {"individual_digits", true}}}}};
  j["decoder"] = {{"type", "Metaspace"}, {"replacement", "\xE2\x96\x81"}, {"prepend_scheme", "first"}, {"split", true}};
  j["added_tokens"] = {{{"id", 7}, {"content", "<sep>"}, {"special", true}, {"lstrip", true},
                        {"rstrip", true}, {"normalized", false}, {"single_word", false}}};
  j["post_processor"] = {{"type", "TemplateProcessing"},
                         {"single", {{{"Sequence", {{"id", "A"}, {"type_id", 0}}}},
                                     {{"SpecialToken", {{"id", "<sep>"}, {"type_id", 0}}}}}},
                         {"special_tokens", {{"<sep>", {{"id", "<sep>"}, {"ids", {7}}, {"tokens", {"<sep>"}}}}}}};
  auto t = Tokenizer::from_json(j.dump());
  // "a a12" -> ▁a ▁a 1 2; "xyz" is unknown (fused into one <unk>); spaces around <sep> stripped.
  EXPECT_EQ(t->encode("a a12"), (std::vector<int32_t>{6, 6, 4, 5}));
  EXPECT_EQ(t->encode("a xyz"), (std::vector<int32_t>{6, 1, 0}));
  EXPECT_EQ(t->encode("a  <sep>  a"), (std::vector<int32_t>{6, 7, 2}));  // no prefix after <sep>
  EXPECT_EQ(t->encode("a", true), (std::vector<int32_t>{6, 7}));
  EXPECT_EQ(t->decode(std::vector<int32_t>{6, 6, 4}), "a a1");
  EXPECT_EQ(t->decode(std::vector<int32_t>{6, 7, 6}, true), "a a");
}

// GPT-2 style: ByteLevel pre-tokenizer with its own regex and a prefix space on every piece.
TEST(TokenizerComponents, ByteLevelWithRegexAndPrefixSpace) {
  std::vector<std::string> vocab;
  for (int b = 0; b < 256; ++b) {
    std::string ch;
    tok::utf8_append(ch, tok::byte_char(static_cast<uint8_t>(b)));
    vocab.push_back(ch);
  }
  const std::string G = "\xC4\xA0";  // the byte-level character of ' '
  vocab.push_back(G + "H");
  vocab.push_back(G + "He");
  json j = tiny(vocab, {G + " H", G + "H e"});
  j["pre_tokenizer"] = {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}};
  j["decoder"] = {{"type", "ByteLevel"}};
  auto t = Tokenizer::from_json(j.dump());
  EXPECT_EQ(t->encode("Hello"), (std::vector<int32_t>{257, 'l', 'l', 'o'}));
  // " a", " " (\s+(?!\S)), " b": the prefix space is added to the text once, the regex splits.
  EXPECT_EQ(t->encode("a  b"), (std::vector<int32_t>{t->token_to_id(G), 'a', t->token_to_id(G),
                                                       t->token_to_id(G), 'b'}));
  EXPECT_EQ(t->decode(t->encode("Hello")), " Hello");
}

TEST(TokenizerComponents, NormalizersAndReplace) {
  json j = tiny({"a", "b", "c", "1", "i", "\xCC\x87", " "}, {});
  j["normalizer"] = {{"type", "Sequence"},
                     {"normalizers",
                      {{{"type", "NFKC"}},
                       {{"type", "Lowercase"}},
                       {{"type", "Replace"}, {"pattern", {{"Regex", "\\s+"}}}, {"content", " "}},
                       {{"type", "Strip"}, {"strip_left", true}, {"strip_right", true}}}}};
  auto t = Tokenizer::from_json(j.dump());
  // NFKC folds the fullwidth A and superscript one; Lowercase maps U+0130 to i + U+0307.
  EXPECT_EQ(t->encode("\xEF\xBC\xA1\xC2\xB9 \t\n B\xC4\xB0  "),
            (std::vector<int32_t>{0, 3, 6, 1, 4, 5}));
}

// A plain BPE over token strings: repeatedly merge the lowest-ranked adjacent pair, leftmost first.
using Ranks = std::unordered_map<std::string, size_t>;  // "a b" -> rank

std::vector<std::string> reference_bpe(std::vector<std::string> syms, const Ranks& ranks) {
  while (syms.size() > 1) {
    size_t best = SIZE_MAX, at = 0;
    for (size_t i = 0; i + 1 < syms.size(); ++i) {
      auto it = ranks.find(syms[i] + " " + syms[i + 1]);
      if (it != ranks.end() && it->second < best) best = it->second, at = i;
    }
    if (best == SIZE_MAX) break;
    syms[at] += syms[at + 1];
    syms.erase(syms.begin() + at + 1);
  }
  return syms;
}

TEST(Bpe, MatchesPlainReferenceOnShortAndLongWords) {
  std::ifstream f(data("cl100k/tokenizer.json"));
  json j = json::parse(f);
  Ranks ranks;
  size_t r = 0;
  for (const auto& m : j["model"]["merges"]) ranks.emplace(m.get<std::string>(), r++);
  std::mt19937 rng(7);
  const std::string alphabet = "abcdefghijklmnopqrstuvwxyzeeeaaiioonnsstt";
  for (size_t len : {1, 2, 5, 13, 40, 255, 256, 257, 300, 1200}) {
    for (int rep = 0; rep < 2; ++rep) {
      std::string word;
      for (size_t k = 0; k < len; ++k) word.push_back(alphabet[rng() % alphabet.size()]);
      std::vector<std::string> syms;
      for (char c : word) syms.push_back(std::string(1, c));
      std::vector<std::string> want = reference_bpe(syms, ranks);
      std::vector<std::string> got;
      for (int32_t id : cl100k()->encode(word)) got.push_back(cl100k()->id_to_token(id));
      EXPECT_EQ(got, want) << "word of length " << len;
    }
  }
}

TEST(TokenizerEncode, BatchEqualsSingleWithAnyThreadCount) {
  std::vector<std::string> texts;
  for (int i = 0; i < 200; ++i)
    texts.push_back("line " + std::to_string(i) + ": the quick brown fox \xE4\xBD\xA0\xE5\xA5\xBD " +
                    std::string(i % 7, ' ') + "def f(x): return x*" + std::to_string(i * 37));
  for (int threads : {1, 2, 3}) {
    ThreadPool pool(threads);
    auto batch = cl100k()->encode_batch(texts, false, pool);
    ASSERT_EQ(batch.size(), texts.size());
    for (size_t i = 0; i < texts.size(); ++i) EXPECT_EQ(batch[i], cl100k()->encode(texts[i]));
  }
}

TEST(StreamDecoder, HoldsBackIncompleteCharacters) {
  auto t = cl100k();
  // "中" is three byte tokens here when split: feed its bytes one by one.
  std::vector<int32_t> ids;
  for (unsigned char c : std::string("\xE4\xB8\xAD!")) {
    std::string ch;
    tok::utf8_append(ch, tok::byte_char(c));
    ids.push_back(t->token_to_id(ch));
  }
  StreamDecoder sd(t);
  EXPECT_EQ(sd.push(ids[0]), "");
  EXPECT_EQ(sd.push(ids[1]), "");
  EXPECT_EQ(sd.push(ids[2]), "\xE4\xB8\xAD");
  EXPECT_EQ(sd.push(ids[3]), "!");
  EXPECT_EQ(sd.finish(), "");
  // An unfinished character at the end comes out as U+FFFD from finish().
  EXPECT_EQ(sd.push(ids[0]), "");
  EXPECT_EQ(sd.finish(), "\xEF\xBF\xBD");
}

TEST(ChatTemplate, HuginnAndChatML) {
  std::vector<ChatMessage> msgs = {{"system", "  Be brief. \n"}, {"user", "Hi!"}, {"assistant", "Hello."}};
  EXPECT_EQ(render_chat(ChatFormat::kHuginn, msgs, true),
            "<|begin_text|><|begin_header|>system<|end_header|>\n\nBe brief.<|end_turn|>"
            "<|begin_header|>user<|end_header|>\n\nHi!<|end_turn|>"
            "<|begin_header|>Huginn<|end_header|>\n\nHello.<|end_turn|>"
            "<|begin_header|>Huginn<|end_header|>\n\n");
  EXPECT_EQ(render_chat(ChatFormat::kHuginn, {}, false), "<|begin_text|>");
  EXPECT_EQ(render_chat(ChatFormat::kChatML, {{"user", "Hi!"}}, true),
            "<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_THROW(render_chat(ChatFormat::kNone, msgs, true), Error);
  EXPECT_EQ(cl100k()->chat_format(), ChatFormat::kNone);
  EXPECT_THROW(cl100k()->apply_chat_template(msgs, true), Error);
}

TEST(ChatTemplate, HuginnMarkersEncodeAsSingleTokens) {
  // A Huginn-style vocabulary: the markers are added special tokens.
  json j = tiny({"a", "b", "ab", "\n"}, {"a b"});
  std::vector<std::string> markers = {"<|begin_text|>", "<|begin_header|>", "<|end_header|>", "<|end_turn|>"};
  for (size_t k = 0; k < markers.size(); ++k) {
    j["added_tokens"].push_back({{"id", 4 + k}, {"content", markers[k]}, {"special", true}, {"normalized", false}});
  }
  auto t = Tokenizer::from_json(j.dump());
  EXPECT_EQ(t->chat_format(), ChatFormat::kHuginn);
  EXPECT_EQ(t->bos_id(), 4);
  std::string prompt = t->apply_chat_template({{"ab", "  ab "}}, false);
  EXPECT_EQ(t->encode(prompt), (std::vector<int32_t>{4, 5, 2, 6, 3, 3, 2, 7}));
}

}  // namespace
}  // namespace huginn
