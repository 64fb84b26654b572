// Reference initialisation (`huginn init`) and `huginn data prepare`.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "huginn/data.h"
#include "huginn/error.h"
#include "huginn/safetensors.h"
#include "huginn/train.h"
#include "test_util.h"

namespace huginn {
namespace {
namespace fs = std::filesystem;

struct Stats {
  double mean = 0, std = 0, max_abs = 0;
};
Stats stats(const Tensor& t) {
  Stats s;
  const float* d = t.f32();
  const int64_t n = t.numel();
  for (int64_t i = 0; i < n; ++i) s.mean += d[i];
  s.mean /= n;
  for (int64_t i = 0; i < n; ++i) {
    s.std += (d[i] - s.mean) * (d[i] - s.mean);
    s.max_abs = std::max(s.max_abs, std::fabs(static_cast<double>(d[i])));
  }
  s.std = std::sqrt(s.std / n);
  return s;
}

// A normal N(0, σ²) truncated at ±3σ has std σ·0.98654.
constexpr double kTruncFactor = 0.986540;

TEST(Init, ReferenceInitialisationStatistics) {
  const ModelConfig c = ModelConfig::from_file(test::golden_dir("tiny-b") + "/config.json");
  auto m = TrainableModel::init(c, 11);
  const double std = std::sqrt(2.0 / (5.0 * c.n_embd));
  const double out_std = std / std::sqrt(2.0 * (c.n_prelude + c.n_coda + c.n_core * c.mean_recurrence));
  int checked = 0;
  for (const auto& [name, t] : m->hf_tensors()) {
    if (name == "freqs_cis") continue;
    Stats s = stats(t);
    if (t.ndim() == 1) {  // norms
      EXPECT_EQ(s.mean, 1.0) << name;
      EXPECT_EQ(s.std, 0.0) << name;
    } else if (name.find("qk_bias") != std::string::npos) {
      EXPECT_EQ(s.max_abs, 0.0) << name;
    } else if (name.find("mlp.fc") != std::string::npos) {
      const int64_t half = t.dim(0) / 2;
      Stats gate = stats(t.rows(0, half).clone()), up = stats(t.rows(half, t.dim(0)).clone());
      EXPECT_NEAR(gate.std, std * kTruncFactor, 0.03 * std) << name;
      EXPECT_NEAR(up.std, out_std * kTruncFactor, 0.03 * out_std) << name;
      EXPECT_LE(up.max_abs, 3 * out_std * 1.0000001) << name;
    } else {
      const bool out_proj = name.find("attn.proj") != std::string::npos ||
                            name.find("mlp.proj") != std::string::npos;
      const double want = out_proj ? out_std : std;  // wte, Wqkv, adapter, lm_head: std
      EXPECT_NEAR(s.std, want * kTruncFactor, 0.03 * want) << name;
      EXPECT_NEAR(s.mean, 0.0, 0.05 * want) << name;
      EXPECT_LE(s.max_abs, 3 * want * 1.0000001) << name;
      EXPECT_GT(s.max_abs, 2.5 * want) << name;  // the tails are there, just cut
    }
    ++checked;
  }
  EXPECT_EQ(checked, 76);  // tiny-b stores 77 tensors (lm_head untied), freqs_cis skipped
}

TEST(Init, SeededAndDeterministic) {
  const ModelConfig c = ModelConfig::from_file(test::golden_dir("tiny-a") + "/config.json");
  auto a = TrainableModel::init(c, 5), b = TrainableModel::init(c, 5), d = TrainableModel::init(c, 6);
  const auto ta = a->hf_tensors(), tb = b->hf_tensors(), td = d->hf_tensors();
  const Tensor& wa = ta[0].second;
  EXPECT_EQ(std::memcmp(wa.raw(), tb[0].second.raw(), wa.nbytes()), 0);
  EXPECT_NE(std::memcmp(wa.raw(), td[0].second.raw(), wa.nbytes()), 0);
}

TEST(Init, CliWritesALoadableModelAndNeverOverwrites) {
  const std::string dir = test::make_temp_dir("init");
  const std::string cli = HUGINN_CLI;
  const std::string cfg = test::golden_dir("tiny-a") + "/config.json";
  std::string log;
  ASSERT_EQ(test::run_command(cli + " init --model-config " + cfg + " --out " + dir + "/m --seed 1", &log), 0) << log;
  ASSERT_EQ(test::run_command(cli + " forward --model " + dir + "/m --ids 5,6,7 --steps 3 --out " +
                                  dir + "/f.safetensors", &log), 0) << log;
  auto loaded = TrainableModel::load(dir + "/m");
  auto fresh = TrainableModel::init(ModelConfig::from_file(cfg), 1);
  const auto a = loaded->hf_tensors(), b = fresh->hf_tensors();
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i)
    EXPECT_EQ(std::memcmp(a[i].second.raw(), b[i].second.raw(), a[i].second.nbytes()), 0) << a[i].first;
  // Tied: 40 tensors as in the golden tiny-a, no lm_head.
  EXPECT_EQ(a.size(), 40u);

  const auto before = fs::last_write_time(dir + "/m/model.safetensors");
  EXPECT_EQ(test::run_command(cli + " init --model-config " + cfg + " --out " + dir + "/m --seed 2", &log), 1);
  EXPECT_NE(log.find("already exists"), std::string::npos) << log;
  EXPECT_EQ(fs::last_write_time(dir + "/m/model.safetensors"), before);
  fs::remove_all(dir);
}

// The streamed writer behind `huginn init --dtype/--shards` (the Huginn-0125-shaped benchmark
// model): the same values as TrainableModel::init, split into shards with an index the loader
// follows; BF16 is the F32 values rounded; bad shard counts are refused.
TEST(Init, StreamedShardedCheckpoint) {
  const std::string dir = test::make_temp_dir("init-shards");
  const std::string cfg = test::golden_dir("tiny-b") + "/config.json";
  const ModelConfig c = ModelConfig::from_file(cfg);
  std::string log;
  ASSERT_EQ(test::run_command(std::string(HUGINN_CLI) + " init --model-config " + cfg + " --out " +
                                  dir + "/f32 --seed 4 --shards 3 -q", &log), 0) << log;
  for (const char* f : {"model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors",
                        "model-00003-of-00003.safetensors", "model.safetensors.index.json"})
    EXPECT_TRUE(fs::exists(dir + "/f32/" + f)) << f;
  EXPECT_FALSE(fs::exists(dir + "/f32/model.safetensors"));
  auto loaded = TrainableModel::load(dir + "/f32");
  auto fresh = TrainableModel::init(c, 4);
  const auto a = loaded->hf_tensors(), b = fresh->hf_tensors();
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i)
    EXPECT_EQ(std::memcmp(a[i].second.raw(), b[i].second.raw(), a[i].second.nbytes()), 0) << a[i].first;

  write_init_checkpoint(c, 4, dir, DType::kBF16, 1);
  const TensorStore bf = TensorStore::open(dir);
  const TensorStore f32 = TensorStore::open(dir + "/f32");
  for (const std::string& n : f32.names()) {
    ASSERT_EQ(bf.entry(n).dtype, DType::kBF16) << n;
    const Tensor want = f32.as_f32(n), got = bf.as_f32(n);
    for (int64_t i = 0; i < want.numel(); ++i)
      ASSERT_EQ(got.f32()[i], bf16_to_f32(f32_to_bf16(want.f32()[i]))) << n << "[" << i << "]";
  }
  EXPECT_NE(test::error_message([&] { write_init_checkpoint(c, 4, dir, DType::kBF16, 0); }).find("shards"),
            std::string::npos);
  EXPECT_NE(test::error_message([&] { write_init_checkpoint(c, 4, dir, DType::kBF16, 1000); }).find("shards"),
            std::string::npos);
  fs::remove_all(dir);
}

TEST(DataPrepare, TextAndJsonlToShards) {
  const std::string dir = test::make_temp_dir("prepare");
  const std::string tok = std::string(HUGINN_TEST_DATA) + "/tokenizers/mistral-7b/tokenizer.json";
  std::ofstream(dir + "/a.jsonl") << "{\"text\": \"hello world\"}\n\n{\"text\": \"the quick brown fox\"}\n";
  std::ofstream(dir + "/b.txt") << "plain text document";
  std::string log;
  const std::string cmd = std::string(HUGINN_CLI) + " data prepare --tokenizer " + tok +
                          " --input " + dir + "/a.jsonl " + dir + "/b.txt --val-fraction 0.25"
                          " --shard-tokens 5 --threads 2 --out " + dir + "/d";
  ASSERT_EQ(test::run_command(cmd, &log), 0) << log;

  ShardSet train = ShardSet::open(dir + "/d", "train"), val = ShardSet::open(dir + "/d", "val");
  EXPECT_EQ(train.vocab_size(), 32000u);
  const int32_t eot = train.shards()[0].info().eot_id;
  EXPECT_EQ(eot, 2);  // </s>
  EXPECT_GT(train.shards().size(), 1u);  // split at 5 tokens per shard
  std::vector<int32_t> all;
  for (const ShardSet* s : {&train, &val})
    for (const auto& sh : s->shards()) {
      std::vector<int32_t> t(sh.size());
      sh.read(0, t);
      all.insert(all.end(), t.begin(), t.end());
    }
  EXPECT_EQ(std::count(all.begin(), all.end(), eot), 3);  // one per document
  EXPECT_EQ(all.back(), eot);
  EXPECT_EQ(val.total_tokens(), static_cast<uint64_t>(std::llround(0.25 * all.size())));

  // Re-running into the same directory refuses to overwrite; bad JSONL names file and line.
  EXPECT_EQ(test::run_command(cmd, &log), 1);
  EXPECT_NE(log.find("already holds train shards"), std::string::npos) << log;
  std::ofstream(dir + "/bad.jsonl") << "{\"text\": \"ok\"}\n{\"txt\": 1}\n";
  EXPECT_EQ(test::run_command(std::string(HUGINN_CLI) + " data prepare --tokenizer " + tok +
                                  " --input " + dir + "/bad.jsonl --out " + dir + "/d2", &log), 1);
  EXPECT_NE(log.find("bad.jsonl:2: expected an object with a string field \"text\""),
            std::string::npos) << log;
  fs::remove_all(dir);
}

}  // namespace
}  // namespace huginn
