// The `huginn tokenize` and `huginn tokenizer train` commands, run as a user would.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "huginn/tokenizer.h"

namespace huginn {
namespace {

using json = nlohmann::json;

struct Result {
  int code;
  std::string out;
};

// Runs the CLI with `args`, stdin from `input`; returns exit code and stdout (+ stderr).
Result run(const std::string& args, const std::string& input, bool with_stderr = false) {
  auto dir = std::filesystem::temp_directory_path() / ("huginn_tok_cli_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  std::string in = (dir / "stdin.txt").string();
  std::ofstream(in, std::ios::binary) << input;
  std::string cmd = std::string(HUGINN_CLI) + " " + args + " < " + in + (with_stderr ? " 2>&1" : " 2>/dev/null");
  FILE* p = popen(cmd.c_str(), "r");
  EXPECT_NE(p, nullptr);
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  int status = pclose(p);
  return {WEXITSTATUS(status), out};
}

const std::string kTok = std::string(HUGINN_TEST_DATA) + "/tokenizers/mistral-7b/tokenizer.json";

TEST(TokenizeCli, EncodesLinesAndDecodesThemBack) {
  auto tok = Tokenizer::load(kTok);
  const std::vector<std::string> lines = {"Hello world", "", "<s> special </s>", "naïve café 123"};
  std::string input;
  for (const auto& l : lines) input += l + "\n";

  Result r = run("tokenize --tokenizer " + kTok + " --json --special", input);
  ASSERT_EQ(r.code, 0) << r.out;
  std::istringstream ss(r.out);
  std::string line, ids_text;
  for (const auto& l : lines) {
    ASSERT_TRUE(std::getline(ss, line));
    EXPECT_EQ(json::parse(line).get<std::vector<int32_t>>(), tok->encode(l, true)) << l;
    auto ids = tok->encode(l);
    for (size_t k = 0; k < ids.size(); ++k) ids_text += (k ? " " : "") + std::to_string(ids[k]);
    ids_text += "\n";
  }
  Result plain = run("tokenize --tokenizer " + kTok, input);
  ASSERT_EQ(plain.code, 0);
  EXPECT_EQ(plain.out, ids_text);

  Result dec = run("tokenize --tokenizer " + kTok + " --decode", ids_text);
  ASSERT_EQ(dec.code, 0);
  std::string want;
  for (const auto& l : lines) want += tok->decode(tok->encode(l)) + "\n";
  EXPECT_EQ(dec.out, want);
}

TEST(TokenizeCli, BadInputFailsWithAMessage) {
  Result r = run("tokenize --tokenizer /nonexistent/tokenizer.json", "x\n", true);
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.out.find("/nonexistent/tokenizer.json"), std::string::npos) << r.out;
  r = run("tokenize --tokenizer " + kTok + " --decode", "1 2 x3\n", true);
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.out.find("stdin line 1: 'x3' is not a token id"), std::string::npos) << r.out;
  r = run("tokenize --help", "", false);
  EXPECT_EQ(r.code, 0);
  EXPECT_NE(r.out.find("--tokenizer"), std::string::npos);
}

TEST(TokenizerTrainCli, WritesALoadableTokenizerOfTheRequestedSize) {
  auto dir = std::filesystem::temp_directory_path() / ("huginn_tok_train_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  std::string corpus = std::string(HUGINN_TEST_DATA) + "/tokenizers/cl100k/cases.jsonl";
  std::string out = (dir / "tokenizer.json").string();
  Result r = run("tokenizer train --vocab-size 600 --input " + corpus + " --out " + out +
                     " --special '<|endoftext|>' '<|pad|>' --threads 2",
                 "", true);
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("merges"), std::string::npos) << "progress output expected: " << r.out;
  auto tok = Tokenizer::load(out);
  EXPECT_EQ(tok->vocab_size(), 600);
  EXPECT_EQ(tok->token_to_id("<|pad|>"), 1);
  std::string text = "def f(x):\n    return x ** 2  # café ☕";
  EXPECT_EQ(tok->decode(tok->encode(text)), text);

  r = run("tokenizer train --vocab-size 600 --input /nonexistent.txt --out " + out, "", true);
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.out.find("/nonexistent.txt"), std::string::npos) << r.out;
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace huginn
