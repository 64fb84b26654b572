// huginn generate --prompt / --chat and huginn chat with a real tokenizer: a byte-level BPE with
// Huginn's chat markers, trained here so that every id fits tiny-b's 300-token vocabulary.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "huginn/generate.h"
#include "huginn/thread_pool.h"
#include "huginn/tokenizer.h"
#include "test_util.h"

namespace huginn {
namespace {

struct TextFixture {
  TextFixture() {
    dir = test::make_temp_dir("gen_text");
    BpeTrainOptions o;
    o.vocab_size = 280;  // 5 markers + 256 bytes + a few merges: all ids < 300
    o.special_tokens = {"<|begin_text|>", "<|end_text|>", "<|begin_header|>", "<|end_header|>",
                        "<|end_turn|>"};
    o.progress = false;
    ThreadPool pool(1);
    const std::string json =
        train_bpe({"hello world, hello there. the world says hello back", "hello hello world"}, o,
                  pool);
    path = dir + "/tokenizer.json";
    std::ofstream(path) << json;
    tok = Tokenizer::from_json(json, path);
  }
  ~TextFixture() { std::filesystem::remove_all(dir); }
  std::string dir, path;
  std::shared_ptr<const Tokenizer> tok;
};

std::string cli(const std::string& args, int* rc) {
  std::string out;
  *rc = test::run_command(std::string(HUGINN_CLI) + " " + args, &out);
  return out;
}

TEST(CliText, PromptEqualsItsIdsAndTextIsTheDecodedTokens) {
  TextFixture f;
  const std::string model = test::golden_dir("tiny-b");
  const std::string common = " --init-scale 0 --steps 4 --max-new 8 --json";
  int rc = 0;
  std::string out = cli("generate --model " + model + " --tokenizer " + f.path +
                            " --prompt 'hello world'" + common + " 2>/dev/null",
                        &rc);
  ASSERT_EQ(rc, 0) << out;
  const nlohmann::json a = nlohmann::json::parse(out);
  std::string ids;
  for (int32_t v : f.tok->encode("hello world")) ids += (ids.empty() ? "" : ",") + std::to_string(v);
  out = cli("generate --model " + model + " --ids " + ids + common + " 2>/dev/null", &rc);
  ASSERT_EQ(rc, 0) << out;
  const nlohmann::json b = nlohmann::json::parse(out);
  EXPECT_EQ(a["tokens"], b["tokens"]);
  std::vector<int32_t> toks = a["tokens"].get<std::vector<int32_t>>();
  if (a["finish_reason"] == "stop") toks.pop_back();
  ASSERT_TRUE(a["text"].is_string());
  EXPECT_EQ(a["text"].get<std::string>(), f.tok->decode(toks));
  EXPECT_TRUE(b["text"].is_null());  // no tokenizer named, none in the model directory
}

TEST(CliText, ChatTemplateAndRepl) {
  TextFixture f;
  const std::string model = test::golden_dir("tiny-b");
  int rc = 0;
  std::string out = cli("generate --model " + model + " --tokenizer " + f.path +
                            " --chat --prompt hi --init-scale 0 --steps 2 --max-new 4 2>&1",
                        &rc);
  EXPECT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("tok/s"), std::string::npos) << out;  // the summary
  rc = test::run_command("printf 'hello\\nworld\\n/reset\\nhi\\n' | " + std::string(HUGINN_CLI) +
                              " chat --model " + model + " --tokenizer " + f.path +
                              " --init-scale 0 --steps 2 --max-new 4 -q 2>&1",
                          &out);
  EXPECT_EQ(rc, 0) << out;
  size_t prompts = 0;
  for (size_t at = out.find("> "); at != std::string::npos; at = out.find("> ", at + 1)) ++prompts;
  EXPECT_GE(prompts, 4u) << out;  // one per line, and one at EOF
  // A prompt with ids past the model's vocabulary is refused clearly: tiny-a has 256 ids and
  // the tokenizer's merges (and so "hello") lie above the 5 markers + 256 bytes.
  int32_t top = 0;
  for (int32_t id : f.tok->encode("hello")) top = std::max(top, id);
  ASSERT_GE(top, 256) << "the fixture no longer encodes 'hello' past tiny-a's vocabulary";
  out = cli("generate --model " + test::golden_dir("tiny-a") + " --tokenizer " + f.path +
                " --prompt 'hello' --init-scale 0 --steps 2 --max-new 2 2>&1",
            &rc);
  EXPECT_NE(rc, 0) << out;
  EXPECT_NE(out.find("outside the vocabulary"), std::string::npos) << out;
}

}  // namespace
}  // namespace huginn
