// `huginn grad` end to end through the binary, against a golden grad file; bad flags.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <sstream>

#include "test_util.h"

namespace huginn {
namespace {

namespace fs = std::filesystem;

std::string join(const std::vector<int32_t>& v) {
  std::ostringstream s;
  for (size_t i = 0; i < v.size(); ++i) s << (i ? "," : "") << v[i];
  return s.str();
}

TEST(CliGrad, MatchesGoldenTinyB) {
  const std::string dir = test::make_temp_dir("cli-grad");
  const std::string g = test::golden_dir("tiny-b") + "/grad_ng3_g2.safetensors";
  const std::string out = dir + "/grad.safetensors";
  std::string log;
  ASSERT_EQ(test::run_command(std::string(HUGINN_CLI) + " grad --model " +
                                  test::golden_dir("tiny-b") + " --ids " +
                                  join(test::load_ids(g, "input_ids")) + " --labels " +
                                  join(test::load_ids(g, "labels")) +
                                  " --steps-no-grad 3 --steps-with-grad 2 --init-scale 0"
                                  " --threads 2 --out " + out,
                              &log),
            0)
      << log;
  auto got = test::load_tensors(out), want = test::load_tensors(g);
  EXPECT_EQ(got.at("loss").ndim(), 0);
  EXPECT_LE(std::fabs(got.at("loss").f32()[0] - want.at("loss").f32()[0]),
            1e-5 * std::fabs(want.at("loss").f32()[0]));
  int n = 0;
  for (const auto& [name, t] : want) {
    if (name.rfind("grad.", 0) != 0) continue;
    ++n;
    ASSERT_TRUE(got.count(name)) << name;
    EXPECT_EQ(got.at(name).shape_str(), t.shape_str()) << name;
    EXPECT_LE(test::rel_err(got.at(name), t), 1e-3) << name;
  }
  size_t got_grads = 0;
  for (const auto& [name, t] : got) got_grads += name.rfind("grad.", 0) == 0;
  EXPECT_EQ(got_grads, static_cast<size_t>(n));
  EXPECT_GT(n, 30);
  fs::remove_all(dir);
}

TEST(CliGrad, BadInputIsAClearError) {
  const std::string dir = test::make_temp_dir("cli-grad-bad");
  const std::string base = std::string(HUGINN_CLI) + " grad --model " +
                           test::golden_dir("tiny-a") + " --out " + dir + "/g.safetensors ";
  std::string log;
  EXPECT_NE(test::run_command(base + "--ids 1,2,3 --labels 2,3", &log), 0);
  EXPECT_NE(log.find("2 labels for 3 ids"), std::string::npos) << log;
  log.clear();
  EXPECT_NE(test::run_command(base + "--ids 1,2,3 --labels 2,3,999", &log), 0);
  EXPECT_NE(log.find("label 999 at index 2"), std::string::npos) << log;
  log.clear();
  EXPECT_NE(test::run_command(base + "--ids 1,x,3 --labels 2,3,4", &log), 0);
  EXPECT_NE(log.find("--ids"), std::string::npos) << log;
  EXPECT_FALSE(fs::exists(dir + "/g.safetensors"));
  fs::remove_all(dir);
}

}  // namespace
}  // namespace huginn
