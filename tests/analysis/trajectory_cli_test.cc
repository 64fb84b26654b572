// `huginn trace` end to end on a model trained in the test: the recorded final states equal
// `huginn forward`'s latent, the saved metrics match a direct computation on the saved states,
// the summary and the plots are written; bad input gives a clear error and writes nothing.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>

#include "huginn/data.h"
#include "huginn/plot.h"
#include "huginn/safetensors.h"
#include "huginn/train.h"
#include "test_util.h"

namespace huginn {
namespace {

namespace fs = std::filesystem;
using test::golden_dir;
using test::run_command;

constexpr uint32_t kVocab = 32;

// Documents of a learnable pattern: a random first token, then a fixed permutation cycle.
std::vector<uint32_t> pattern_stream(size_t n, uint64_t seed) {
  std::mt19937_64 rng(7);
  std::vector<uint32_t> perm(kVocab - 1);
  for (uint32_t i = 0; i < perm.size(); ++i) perm[i] = i + 1;
  std::shuffle(perm.begin(), perm.end(), rng);
  std::vector<uint32_t> next(kVocab);
  for (size_t i = 0; i < perm.size(); ++i) next[perm[i]] = perm[(i + 1) % perm.size()];
  rng.seed(seed);
  std::vector<uint32_t> out;
  while (out.size() < n) {
    uint32_t t = 1 + rng() % (kVocab - 1);
    const int len = 8 + static_cast<int>(rng() % 24);
    for (int i = 0; i < len; ++i, t = next[t]) out.push_back(t);
    out.push_back(0);
  }
  out.resize(n);
  return out;
}

// A tiny model trained for a few seconds on the pattern; its checkpoint directory.
class TrainedModel : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = test::make_temp_dir("trace-trained");
    const std::string data = dir_ + "/data";
    fs::create_directories(data);
    write_shard(data + "/train-00000.bin", pattern_stream(20000, 1), kVocab, 0);
    write_shard(data + "/val-00000.bin", pattern_stream(2000, 2), kVocab, 0);
    nlohmann::json c{{"n_embd", 32},        {"num_attention_heads", 2},
                     {"intermediate_size", 64}, {"vocab_size", kVocab},
                     {"block_size", 32},    {"n_layers_in_prelude", 1},
                     {"n_layers_in_recurrent_block", 1}, {"n_layers_in_coda", 1},
                     {"mean_recurrence", 4}, {"mean_backprop_depth", 2},
                     {"tie_embeddings", true}, {"qk_bias", true}};
    std::ofstream(dir_ + "/config.json") << c.dump(1);
    TrainOptions o;
    o.model_config = dir_ + "/config.json";
    o.data = data;
    o.out = dir_ + "/run";
    o.steps = 40;
    o.batch = 8;
    o.seq_len = 16;
    o.lr = 3e-3;
    o.warmup = 4;
    o.threads = 2;
    o.val_depths = {4};
    o.val_windows = 2;
    o.seed = 3;
    o.quiet = true;
    model_ = train(o).last_checkpoint;
  }
  static void TearDownTestSuite() { fs::remove_all(dir_); }
  static std::string dir_, model_;
};
std::string TrainedModel::dir_, TrainedModel::model_;

std::string cli(const std::string& args, std::string* log) {
  return std::to_string(run_command(std::string(HUGINN_CLI) + " " + args, log));
}

TEST_F(TrainedModel, FinalStatesEqualForwardAndMetricsMatchTheSavedStates) {
  const std::string ids = "3,14,15,9,26,5,8,31,2,7";
  const int R = 12;
  const std::string out = dir_ + "/trace", fwd = dir_ + "/fwd.safetensors";
  std::string log;
  ASSERT_EQ(cli("trace --model " + model_ + " --ids " + ids + " --steps 12 --init-scale 0 "
                "--seeds 2 --exit kl:1e-3 latent-diff --threads 2 --out " + out, &log), "0") << log;
  ASSERT_EQ(cli("forward --model " + model_ + " --ids " + ids + " --steps 12 --init-scale 0 "
                "--threads 2 --out " + fwd, &log), "0") << log;
  auto tr = test::load_tensors(out + "/trajectory.safetensors");
  auto fw = test::load_tensors(fwd);
  const int64_t T = 10, E = 32;
  ASSERT_EQ(tr["states"].shape_str(), "[10, 13, 32]");
  EXPECT_EQ(test::rel_err(tr["latent"], fw["latent"]), 0.0);
  EXPECT_EQ(test::rel_err(tr["logits"], fw["logits"]), 0.0);

  // latent = ln_f(s_R): apply ln_f by hand to the recorded raw final states.
  auto weights = test::load_tensors(model_ + "/model.safetensors");
  const Tensor& lnf = weights["transformer.ln_f.weight"];
  Tensor mine = Tensor::empty({T, E});
  for (int64_t i = 0; i < T; ++i) {
    const float* s = tr["states"].f32() + (i * (R + 1) + R) * E;
    double ms = 0;
    for (int64_t j = 0; j < E; ++j) ms += double(s[j]) * s[j] / E;
    for (int64_t j = 0; j < E; ++j) mine.row(i)[j] = float(s[j] / std::sqrt(ms + 1e-6) * lnf.f32()[j]);
  }
  EXPECT_LE(test::rel_err(mine, fw["latent"]), 1e-5);

  // Metrics straight from the saved states.
  const Tensor& rc = tr["metrics.rel_change"];
  const Tensor& df = tr["metrics.dist_to_final"];
  ASSERT_EQ(rc.shape_str(), "[10, 13]");
  for (int64_t i = 0; i < T; ++i) {
    auto st = [&](int t) { return tr["states"].f32() + (i * (R + 1) + t) * E; };
    double nf = 0;
    for (int64_t j = 0; j < E; ++j) nf += double(st(R)[j]) * st(R)[j];
    for (int t = 0; t <= R; ++t) {
      double d = 0, n = 0, dfin = 0;
      for (int64_t j = 0; j < E; ++j) {
        if (t > 0) d += std::pow(double(st(t)[j]) - st(t - 1)[j], 2);
        n += double(st(t)[j]) * st(t)[j];
        dfin += std::pow(double(st(t)[j]) - st(R)[j], 2);
      }
      if (t > 0) {
        EXPECT_NEAR(rc.row(i)[t], std::sqrt(d / n), 1e-6 * std::sqrt(d / n) + 1e-12);
      }
      EXPECT_NEAR(df.row(i)[t], std::sqrt(dfin / nf), 1e-6 * std::sqrt(dfin / nf) + 1e-12);
    }
    EXPECT_TRUE(std::isnan(rc.row(i)[0]));
  }
  // Exit steps in the file: the first t whose saved value is below the threshold.
  const Tensor& kl = tr["metrics.kl"];
  const Tensor& ex = tr["exit.kl:0.001"];
  const Tensor& exl = tr["exit.latent-diff:0.03"];
  for (int64_t i = 0; i < T; ++i) {
    int a = 0, b = 0;
    for (int t = 1; t <= R; ++t) {
      if (!a && kl.row(i)[t] < 1e-3f) a = t;
      if (!b && rc.row(i)[t] < 0.03f) b = t;
    }
    EXPECT_EQ(ex.f32()[i], a) << i;
    EXPECT_EQ(exl.f32()[i], b) << i;
  }
  // Seeds: the main end state is row 0.
  EXPECT_EQ(tr["seeds.final_states"].shape_str(), "[3, 10, 32]");
  EXPECT_EQ(tr["seeds.spread"].shape_str(), "[10, 13]");

  // The summary: every token classified, class counts add up, exit steps agree.
  std::ifstream js(out + "/summary.json");
  const nlohmann::json j = nlohmann::json::parse(js);
  int total = 0;
  for (auto& [k, v] : j["classes"].items()) total += v.get<int>();
  EXPECT_EQ(total, 10);
  ASSERT_EQ(j["per_token"].size(), 10u);
  for (int64_t i = 0; i < T; ++i) {
    const auto& t = j["per_token"][i];
    EXPECT_TRUE(t.contains("class")) << t.dump();
    const auto& e = t["exit_step"]["kl:0.001"];
    EXPECT_EQ(e.is_null() ? 0 : e.get<int>(), int(ex.f32()[i]));
  }
  // The plots are always checked: a missing gnuplot fails here (make test installs it).
  EXPECT_FALSE(plot::find_gnuplot().empty()) << "gnuplot-nox is not installed";
  for (const char* p : {"pca", "convergence", "heatmap"})
    for (const char* ext : {".png", ".svg"}) {
      const std::string f = out + "/" + p + ext;
      ASSERT_TRUE(fs::exists(f)) << f;
      EXPECT_GT(fs::file_size(f), 1000u) << f;
    }
}

TEST(TraceCli, BadInputGivesAClearErrorAndNoOutput) {
  const std::string dir_ = test::make_temp_dir("trace-bad");
  const std::string m = " --model " + golden_dir("tiny-a") + " --ids 1,2,3";
  const std::string out = dir_ + "/never";
  fs::remove_all(out);
  const std::string file = dir_ + "/a-file";
  std::ofstream(file) << "x";
  struct Case {
    std::string args, expect;
  };
  const std::vector<Case> cases = {
      {m + " --steps 0 --out " + out, "--steps must be at least 1"},
      {m + " --steps -3 --out " + out, "--steps must be at least 1"},
      {m + " --steps 4 --out " + file, "exists and is not a directory"},
      {m + " --steps 4 --out " + file + "/sub", "cannot create output directory"},
      {m + " --steps 64 --memory-limit 0.01 --out " + out, "over the memory limit"},
      {m + " --steps 4 --record-tokens 0,7 --out " + out, "names token 7, outside the 3 tokens"},
      {m + " --steps 4 --record-tokens 2-1 --out " + out, "runs backwards"},
      {m + " --steps 4 --record-every 0 --out " + out, "--record-every must be at least 1"},
      {m + " --steps 4 --exit bogus --out " + out, "bogus"},
      {m + " --steps 4 --plot-format jpg --out " + out, "expected png and/or svg"},
      {" --model " + golden_dir("tiny-a") + " --prompt hello --steps 4 --out " + out,
       "needs a tokenizer"},
      {" --model " + golden_dir("tiny-a") + " --steps 4 --out " + out, "exactly one of --prompt or --ids"},
  };
  for (const Case& c : cases) {
    std::string log;
    EXPECT_NE(cli("trace" + c.args, &log), "0") << c.args;
    EXPECT_NE(log.find(c.expect), std::string::npos) << c.args << "\n" << log;
    EXPECT_FALSE(fs::exists(out + "/trajectory.safetensors")) << c.args;
  }
  // The memory-limit message says how to record a subset, and the subset then fits.
  std::string log;
  cli("trace" + m + " --steps 64 --memory-limit 0.05 --out " + out, &log);
  EXPECT_NE(log.find("--record-tokens"), std::string::npos) << log;
  ASSERT_EQ(cli("trace" + m + " --steps 64 --memory-limit 0.05 --record-tokens 2 "
                "--record-every 8 --no-plots --quiet --out " + out, &log), "0") << log;
  auto tr = test::load_tensors(out + "/trajectory.safetensors");
  EXPECT_EQ(tr["states"].shape_str(), "[1, 9, 64]");
  EXPECT_EQ(tr["metrics.rel_change"].shape_str(), "[3, 65]");
  if (getuid() != 0) {  // permissions do not stop root
    const std::string ro = dir_ + "/read-only";
    fs::create_directories(ro);
    fs::permissions(ro, fs::perms::owner_read | fs::perms::owner_exec);
    EXPECT_NE(cli("trace" + m + " --steps 2 --out " + ro, &log), "0");
    EXPECT_NE(log.find("is not writable"), std::string::npos) << log;
    fs::permissions(ro, fs::perms::owner_all);
  }
  fs::remove_all(dir_);
}

TEST(TraceCli, PromptIsTokenizedAndLabelled) {
  const std::string dir = test::make_temp_dir("trace-prompt");
  std::ofstream(dir + "/text.txt") << "the cat sat on the mat. the dog ate the bone.\n"
                                      "the cat sat on the mat. the dog ate the bone.\n";
  std::string log;
  // A byte-level BPE of 290 ids fits tiny-b's 300-row vocabulary.
  ASSERT_EQ(cli("tokenizer train --vocab-size 290 --quiet --input " + dir + "/text.txt --out " +
                dir + "/tok.json", &log), "0") << log;
  ASSERT_EQ(cli("trace --model " + golden_dir("tiny-b") + " --tokenizer " + dir +
                "/tok.json --prompt 'the cat sat' --steps 6 --no-plots --out " + dir + "/t", &log),
            "0") << log;
  std::ifstream js(dir + "/t/summary.json");
  const nlohmann::json j = nlohmann::json::parse(js);
  std::string text;
  for (const auto& t : j["per_token"]) text += t["text"].get<std::string>();
  EXPECT_EQ(text, "the cat sat");
  EXPECT_EQ(j["steps"], 6);
  fs::remove_all(dir);
}

}  // namespace
}  // namespace huginn
