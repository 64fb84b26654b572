// The CLI contract of `huginn forward` / `huginn info`, end to end through the binary.
#include <gtest/gtest.h>

#include <filesystem>
#include <sstream>

#include "huginn/safetensors.h"
#include "test_util.h"

namespace huginn {
namespace {

namespace fs = std::filesystem;
using test::golden_dir;
using test::run_command;

std::string ids_arg(const std::vector<int32_t>& ids) {
  std::ostringstream s;
  for (size_t i = 0; i < ids.size(); ++i) s << (i ? "," : "") << ids[i];
  return s.str();
}

class CliForward : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = test::make_temp_dir("cli"); }
  void TearDown() override { fs::remove_all(dir_); }
  std::string dir_;
};

TEST_F(CliForward, ZeroStateMatchesGolden) {
  for (const char* set : {"tiny-a", "tiny-b"}) {
    const std::string g = golden_dir(set) + "/forward_zero_L7_s4.safetensors";
    const std::string out = dir_ + "/out.safetensors";
    std::string log;
    ASSERT_EQ(run_command(std::string(HUGINN_CLI) + " forward --model " + golden_dir(set) +
                              " --ids " + ids_arg(test::load_ids(g, "input_ids")) +
                              " --steps 4 --init-scale 0 --threads 2 --out " + out, &log), 0) << log;
    auto got = test::load_tensors(out), want = test::load_tensors(g);
    EXPECT_EQ(got["logits"].shape_str(), "[7, " + std::to_string(want["logits"].dim(2)) + "]");
    EXPECT_LE(test::rel_err(got["logits"], want["logits"]), 1e-4) << set;
    EXPECT_LE(test::rel_err(got["latent"], want["latent"]), 1e-4) << set;
  }
}

TEST_F(CliForward, GivenInitialStateMatchesGolden) {
  const std::string g = golden_dir("tiny-b") + "/forward_state_L33_s16.safetensors";
  const std::string out = dir_ + "/out.safetensors";
  std::string log;
  // The golden case file itself holds `input_state` [1, 33, 96].
  ASSERT_EQ(run_command(std::string(HUGINN_CLI) + " forward --model " + golden_dir("tiny-b") +
                            " --ids " + ids_arg(test::load_ids(g, "input_ids")) +
                            " --steps 16 --init-state " + g + " --out " + out, &log), 0) << log;
  auto got = test::load_tensors(out), want = test::load_tensors(g);
  EXPECT_LE(test::rel_err(got["logits"], want["logits"]), 1e-4);
  EXPECT_LE(test::rel_err(got["latent"], want["latent"]), 1e-4);
}

TEST_F(CliForward, RandomInitIsSeeded) {
  auto run = [&](int seed, const std::string& out) {
    std::string log;
    EXPECT_EQ(run_command(std::string(HUGINN_CLI) + " forward --model " + golden_dir("tiny-a") +
                              " --ids 1,2,3 --steps 2 --init-scale 1 --seed " + std::to_string(seed) +
                              " --out " + out, &log), 0) << log;
    return test::load_tensors(out)["logits"];
  };
  Tensor a = run(5, dir_ + "/a.safetensors"), b = run(5, dir_ + "/b.safetensors"),
         c = run(6, dir_ + "/c.safetensors");
  EXPECT_EQ(test::rel_err(a, b), 0.0);
  EXPECT_GT(test::rel_err(a, c), 1e-3);
}

struct BadCase {
  std::string args, expect;
};

TEST_F(CliForward, BadInputGivesAClearErrorAndNoOutput) {
  const std::string m = " --model " + golden_dir("tiny-a");
  const std::string out = dir_ + "/never.safetensors";
  const std::vector<BadCase> cases = {
      {m + " --ids 1,x,3 --steps 2", "--ids: 'x' is not an integer"},
      {m + " --ids 1,256 --steps 2", "outside the vocabulary [0, 256)"},
      {" --model " + dir_ + "/nope --ids 1 --steps 2", "config.json"},
      {m + " --ids 1,2 --steps 2 --init-state " + golden_dir("tiny-a") + "/forward_state_L7_s4.safetensors",
       "expected [2, 64] or [1, 2, 64]"},
      {m + " --ids 1,2 --steps 2 --init-state " + golden_dir("tiny-a") + "/forward_zero_L7_s4.safetensors",
       "no tensor named 'input_state'"},
  };
  for (const auto& c : cases) {
    std::string log;
    EXPECT_EQ(run_command(std::string(HUGINN_CLI) + " forward" + c.args + " --out " + out, &log), 1) << c.args;
    EXPECT_NE(log.find(c.expect), std::string::npos) << c.args << "\n" << log;
    EXPECT_FALSE(fs::exists(out)) << c.args;
  }
}

TEST(CliInfo, PrintsParameterCounts) {
  std::string log;
  ASSERT_EQ(run_command(std::string(HUGINN_CLI) + " info --model " + golden_dir("tiny-a") + " --steps 4", &log), 0) << log;
  // tiny-a: V*E = 256*64 embedding; 4 norms + Wqkv + qk_bias + proj + fc + mlp.proj per block.
  const long block = 4 * 64 + 3 * 64 * 64 + 2 * 64 + 64 * 64 + 2 * 128 * 64 + 64 * 128;
  EXPECT_NE(log.find(std::to_string(256 * 64)), std::string::npos) << log;
  EXPECT_NE(log.find(std::to_string(2 * block)), std::string::npos) << log;  // core: 2 layers
  const long total = 256 * 64 + 4 * block + 2 * 64 * 64 + 64;
  EXPECT_NE(log.find(std::to_string(total)), std::string::npos) << log;
  EXPECT_NE(log.find("layers per token: 10"), std::string::npos) << log;  // 1 + 4*2 + 1
}

TEST(CliHelp, EveryCommandHasHelp) {
  std::string log;
  ASSERT_EQ(run_command(std::string(HUGINN_CLI) + " --help", &log), 0);
  // Every subcommand listed in the top-level help answers --help.
  std::istringstream in(log);
  std::string line;
  bool in_subs = false;
  int n = 0;
  while (std::getline(in, line)) {
    if (line.rfind("Subcommands:", 0) == 0) { in_subs = true; continue; }
    if (!in_subs || line.size() < 3 || line[0] != ' ') continue;
    std::istringstream ls(line);
    std::string cmd;
    ls >> cmd;
    std::string sub_log;
    EXPECT_EQ(run_command(std::string(HUGINN_CLI) + " " + cmd + " --help", &sub_log), 0) << cmd;
    EXPECT_NE(sub_log.find("Usage"), std::string::npos) << cmd << sub_log;
    ++n;
  }
  EXPECT_GE(n, 2) << log;
}

}  // namespace
}  // namespace huginn
