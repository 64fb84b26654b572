// BPE training: the trained tokenizer has the requested size, loads, round-trips every golden
// corpus string, and training does not depend on the thread count.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "huginn/error.h"
#include "huginn/thread_pool.h"
#include "huginn/tokenizer.h"

namespace huginn {
namespace {

using json = nlohmann::json;

std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  EXPECT_TRUE(f.good()) << path;
  return std::string(std::istreambuf_iterator<char>(f), {});
}

// A few MB of mixed text: the golden corpora (prose, code, numbers, many scripts, emoji) as
// JSON lines, and the license texts.
const std::vector<std::string>& training_texts() {
  static std::vector<std::string> texts = [] {
    std::vector<std::string> t;
    std::string base = std::string(HUGINN_TEST_DATA) + "/tokenizers/";
    for (const char* name : {"qwen3", "gpt-oss", "cl100k", "mistral-7b"}) {
      for (const char* file : {"cases.jsonl", "decode_cases.jsonl", "LICENSE", "NOTICE"}) {
        std::string s = slurp(base + name + "/" + file);
        for (size_t i = 0; i < s.size(); i += 256 * 1024) t.push_back(s.substr(i, 256 * 1024));
      }
    }
    return t;
  }();
  return texts;
}

std::vector<std::string> corpus() {
  std::ifstream f(std::string(HUGINN_TEST_DATA) + "/tokenizers/qwen3/cases.jsonl");
  std::vector<std::string> out;
  std::string line;
  while (std::getline(f, line)) out.push_back(json::parse(line)["text"].get<std::string>());
  return out;
}

TEST(BpeTrain, RequestedSizeRoundTripAndDeterminism) {
  size_t bytes = 0;
  for (const auto& s : training_texts()) bytes += s.size();
  ASSERT_GT(bytes, 2'000'000u);
  BpeTrainOptions opt;
  opt.vocab_size = 2000;
  opt.special_tokens = {"<|begin_text|>", "<|end_text|>", "<|begin_header|>", "<|end_header|>", "<|end_turn|>"};
  opt.progress = false;
  ThreadPool pool2(2);
  std::string j2 = train_bpe(training_texts(), opt, pool2);
  auto tok = Tokenizer::from_json(j2, "trained");
  EXPECT_EQ(tok->vocab_size(true), 2000);
  EXPECT_EQ(tok->vocab_size(false), 2000);
  EXPECT_EQ(tok->token_to_id("<|end_turn|>"), 4);
  EXPECT_TRUE(tok->is_special(4));
  EXPECT_EQ(tok->chat_format(), ChatFormat::kHuginn);
  EXPECT_EQ(json::parse(j2)["model"]["merges"].size(), 2000u - 5 - 256);

  size_t total_tokens = 0, total_bytes = 0;
  for (const std::string& text : corpus()) {
    auto ids = tok->encode(text);
    total_tokens += ids.size();
    total_bytes += text.size();
    ASSERT_EQ(tok->decode(ids), text) << json(text).dump();
  }
  // Merges were learned: far fewer tokens than bytes.
  EXPECT_LT(total_tokens * 10, total_bytes * 6);

  ThreadPool pool1(1);
  EXPECT_EQ(train_bpe(training_texts(), opt, pool1), j2);
}

TEST(BpeTrain, BadOptions) {
  ThreadPool pool(1);
  BpeTrainOptions opt;
  opt.progress = false;
  opt.vocab_size = 100;
  EXPECT_THROW(train_bpe({"abc"}, opt, pool), Error);
  opt.vocab_size = 300;
  opt.special_tokens = {"<a>", "<a>"};
  EXPECT_THROW(train_bpe({"abc"}, opt, pool), Error);
  opt.special_tokens = {};
  opt.split_regex = "(unclosed";
  EXPECT_THROW(train_bpe({"abc"}, opt, pool), Error);
}

}  // namespace
}  // namespace huginn
