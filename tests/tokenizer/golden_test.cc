// Every case of tests/data/tokenizers (Hugging Face tokenizers' own output for four real
// tokenizers) must match exactly: ids with and without special tokens, decodes with and without
// skipping specials, the decode-only cases, and streaming decode token by token.
#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "huginn/tokenizer.h"

namespace huginn {
namespace {

using json = nlohmann::json;

std::string dir(const std::string& name) { return std::string(HUGINN_TEST_DATA) + "/tokenizers/" + name; }

std::vector<json> read_jsonl(const std::string& path) {
  std::ifstream f(path);
  EXPECT_TRUE(f.good()) << path;
  std::vector<json> out;
  std::string line;
  while (std::getline(f, line))
    if (!line.empty()) out.push_back(json::parse(line));
  return out;
}

std::vector<int32_t> ids_of(const json& j) { return j.get<std::vector<int32_t>>(); }

std::string show_ids(const std::vector<int32_t>& v, size_t at) {
  std::string s = "[";
  size_t b = at > 4 ? at - 4 : 0, e = std::min(v.size(), at + 5);
  if (b > 0) s += "... ";
  for (size_t k = b; k < e; ++k) s += std::to_string(v[k]) + (k + 1 < e ? "," : "");
  return s + (e < v.size() ? " ...]" : "]");
}

// Describes the first difference between expected and actual ids, with the expected tokens.
std::string id_diff(const json& c, const std::vector<int32_t>& want, const std::vector<int32_t>& got) {
  size_t k = 0;
  while (k < want.size() && k < got.size() && want[k] == got[k]) ++k;
  std::string toks;
  if (c.contains("tokens"))
    for (size_t t = (k > 2 ? k - 2 : 0); t < c["tokens"].size() && t < k + 3; ++t)
      toks += json(c["tokens"][t]).dump() + " ";
  return "case " + std::to_string(c["i"].get<int>()) + " [" + c["cat"].get<std::string>() +
         "] " + json(c["text"]).dump().substr(0, 120) + ": first difference at index " +
         std::to_string(k) + ", want " + show_ids(want, k) + " got " + show_ids(got, k) +
         " (lengths " + std::to_string(want.size()) + " vs " + std::to_string(got.size()) +
         "), tokens near it: " + toks;
}

struct Golden {
  std::shared_ptr<const Tokenizer> tok;
  std::vector<json> cases, decode_cases;
  json meta;
};

const Golden& golden(const std::string& name) {
  static std::map<std::string, Golden> cache;
  auto it = cache.find(name);
  if (it != cache.end()) return it->second;
  Golden g;
  g.tok = Tokenizer::load(dir(name) + "/tokenizer.json");
  g.cases = read_jsonl(dir(name) + "/cases.jsonl");
  g.decode_cases = read_jsonl(dir(name) + "/decode_cases.jsonl");
  std::ifstream mf(dir(name) + "/meta.json");
  g.meta = json::parse(mf);
  return cache.emplace(name, std::move(g)).first->second;
}

class GoldenTest : public ::testing::TestWithParam<std::string> {};

TEST_P(GoldenTest, EncodeAndDecodeEveryCase) {
  const Golden& g = golden(GetParam());
  ASSERT_EQ(g.cases.size(), 799u);
  int failures = 0;
  for (const json& c : g.cases) {
    if (failures >= 10) break;
    const std::string text = c["text"].get<std::string>();
    auto want = ids_of(c["ids"]);
    auto got = g.tok->encode(text, false);
    if (got != want) ++failures, ADD_FAILURE() << "ids: " << id_diff(c, want, got);
    auto want_sp = ids_of(c["ids_with_special"]);
    auto got_sp = g.tok->encode(text, true);
    if (got_sp != want_sp) ++failures, ADD_FAILURE() << "ids_with_special: " << id_diff(c, want_sp, got_sp);
    std::string dec = g.tok->decode(want, false);
    if (dec != c["decoded"].get<std::string>())
      ++failures, ADD_FAILURE() << "decoded: case " << c["i"] << ": want " << c["decoded"] << " got " << json(dec);
    std::string dec_skip = g.tok->decode(want_sp, true);
    if (dec_skip != c["decoded_skip_special"].get<std::string>())
      ++failures, ADD_FAILURE() << "decoded_skip_special: case " << c["i"] << ": want "
                                << c["decoded_skip_special"] << " got " << json(dec_skip);
  }
}

TEST_P(GoldenTest, DecodeCases) {
  const Golden& g = golden(GetParam());
  ASSERT_GT(g.decode_cases.size(), 1000u);
  int failures = 0;
  for (const json& c : g.decode_cases) {
    if (failures >= 10) break;
    auto ids = ids_of(c["ids"]);
    std::string got = g.tok->decode(ids, c["skip_special_tokens"].get<bool>());
    if (got != c["decoded"].get<std::string>())
      ++failures, ADD_FAILURE() << c["kind"] << " " << c["ids"].dump().substr(0, 100) << " skip="
                                << c["skip_special_tokens"] << ": want " << c["decoded"] << " got "
                                << json(got);
  }
}

// Streaming decode, token by token, concatenates to the full decode.
TEST_P(GoldenTest, StreamingDecodeMatchesFullDecode) {
  const Golden& g = golden(GetParam());
  int failures = 0;
  auto check = [&](const std::vector<int32_t>& ids, bool skip, const std::string& what) {
    StreamDecoder sd(g.tok, skip);
    std::string streamed;
    for (int32_t id : ids) streamed += sd.push(id);
    streamed += sd.finish();
    std::string full = g.tok->decode(ids, skip);
    if (streamed != full)
      ++failures, ADD_FAILURE() << what << " skip=" << skip << ": streamed " << json(streamed)
                                << " full " << json(full);
  };
  for (const json& c : g.cases) {
    if (failures >= 10) break;
    auto ids = ids_of(c["ids_with_special"]);
    check(ids, false, "case " + std::to_string(c["i"].get<int>()));
    check(ids, true, "case " + std::to_string(c["i"].get<int>()));
  }
  for (const json& c : g.decode_cases) {
    if (failures >= 10) break;
    check(ids_of(c["ids"]), c["skip_special_tokens"].get<bool>(), "decode case " + c["ids"].dump().substr(0, 80));
  }
}

TEST_P(GoldenTest, VocabularyAndAddedTokens) {
  const Golden& g = golden(GetParam());
  EXPECT_EQ(g.tok->vocab_size(true), g.meta["vocab_size_with_added"].get<int32_t>());
  EXPECT_EQ(g.tok->vocab_size(false), g.meta["vocab_size_without_added"].get<int32_t>());
  std::vector<int32_t> specials;
  for (const json& a : g.meta["special_added_tokens"]) {
    std::string content = a[0].get<std::string>();
    int32_t id = a[1].get<int32_t>();
    EXPECT_EQ(g.tok->token_to_id(content), id) << content;
    EXPECT_EQ(g.tok->id_to_token(id), content);
    EXPECT_TRUE(g.tok->is_special(id)) << content;
    specials.push_back(id);
  }
  if (g.meta.contains("non_special_added_tokens"))
    for (const json& a : g.meta["non_special_added_tokens"]) {
      int32_t id = a[1].get<int32_t>();
      EXPECT_EQ(g.tok->token_to_id(a[0].get<std::string>()), id);
      EXPECT_FALSE(g.tok->is_special(id));
    }
  auto got = g.tok->special_ids();
  std::sort(got.begin(), got.end());
  std::sort(specials.begin(), specials.end());
  EXPECT_EQ(got, specials);
  EXPECT_EQ(g.tok->token_to_id("this token is surely not in any vocabulary"), -1);
  EXPECT_EQ(g.tok->id_to_token(-1), "");
  EXPECT_EQ(g.tok->id_to_token(g.tok->id_limit()), "");
}

INSTANTIATE_TEST_SUITE_P(Tokenizers, GoldenTest,
                         ::testing::Values("qwen3", "gpt-oss", "cl100k", "mistral-7b"),
                         [](const auto& info) {
                           std::string n = info.param;
                           for (char& ch : n)
                             if (ch == '-') ch = '_';
                           return n;
                         });

}  // namespace
}  // namespace huginn
