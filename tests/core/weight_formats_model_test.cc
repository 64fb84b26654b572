// Models with BF16 / Q8 / Q4 matrices: the golden tiny models converted at load agree with F32,
// pre-converted checkpoints (huginn convert --dtype q8|q4|bf16) load back, malformed Q8 / Q4
// files are rejected with a message naming the tensor, and the CLI's --dtype reaches the loader.
//
// Accuracy bounds are measured (bench/bench_accuracy.cc prints the full table) with a margin;
// the test runs r = 8 from a zero state over 48 positions.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <map>
#include <random>

#include "huginn/forward.h"
#include "huginn/model.h"
#include "huginn/safetensors.h"
#include "huginn/thread_pool.h"
#include "test_util.h"

namespace huginn {
namespace {

namespace fs = std::filesystem;
using test::golden_dir;

std::vector<int32_t> token_ids(int64_t n, int64_t vocab) {
  std::mt19937 rng(11);
  std::vector<int32_t> ids(static_cast<size_t>(n));
  for (auto& id : ids) id = static_cast<int32_t>(rng() % vocab);
  return ids;
}

Tensor logits_of(const Model& m, Backend& be, int steps = 8) {
  Runner r(m, be);
  const auto ids = token_ids(48, m.config().vocab_size);
  return r.forward(ids, steps, InitState{}).logits;
}

struct Agreement {
  double top1 = 0, max_abs = 0, max_logit = 0;
};

Agreement compare(const Tensor& got, const Tensor& want) {
  const int64_t T = want.dim(0), V = want.dim(1);
  Agreement a;
  int same = 0;
  for (int64_t t = 0; t < T; ++t) {
    int64_t ag = 0, aw = 0;
    for (int64_t v = 0; v < V; ++v) {
      if (got.row(t)[v] > got.row(t)[ag]) ag = v;
      if (want.row(t)[v] > want.row(t)[aw]) aw = v;
      a.max_abs = std::max(a.max_abs, double(std::fabs(got.row(t)[v] - want.row(t)[v])));
      a.max_logit = std::max(a.max_logit, double(std::fabs(want.row(t)[v])));
    }
    same += ag == aw;
  }
  a.top1 = double(same) / T;
  return a;
}

std::shared_ptr<const Model> load(const std::string& dir, Backend& be, std::optional<DType> dt) {
  Model::LoadOptions o;
  o.weight_dtype = dt;
  return Model::load(dir, be, o);
}

class WeightFormatModels : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = test::make_temp_dir("wfmt"); }
  void TearDown() override { fs::remove_all(dir_); }
  ThreadPool pool_{1};
  std::unique_ptr<Backend> be_ = make_backend("cpu", pool_);
  std::string dir_;
};

TEST_F(WeightFormatModels, GoldenModelsAgreeWithF32) {
  for (const char* set : {"tiny-a", "tiny-b"}) {
    auto f32 = load(golden_dir(set), *be_, DType::kF32);
    const Tensor want = logits_of(*f32, *be_);
    for (DType dt : {DType::kBF16, DType::kQ8, DType::kQ4}) {
      auto m = load(golden_dir(set), *be_, dt);
      const Weights& w = m->weights();
      EXPECT_EQ(w.core[0].wqkv.dtype(), dt);
      EXPECT_EQ(w.adapter.dtype(), dt);
      EXPECT_EQ(w.lm_head.dtype(), dt);
      EXPECT_EQ(w.wte.dtype(), DType::kF32);
      EXPECT_EQ(w.core[0].norm_1.dtype(), DType::kF32);
      EXPECT_EQ(m->param_counts().total(), f32->param_counts().total()) << set;
      const Agreement a = compare(logits_of(*m, *be_), want);
      // Measured (bench_accuracy, 32 tokens, r = 8..64): top-1 1.00 for BF16 and Q8, 0.75-0.91
      // for Q4 (these random-weight models' logits are nearly flat: max |logit| 2.3-2.8);
      // max |dlogit| / max |logit| 0.3 % (BF16), 0.9-1.4 % (Q8), 19 % (Q4). Bounds: 2 %, 5 %
      // and 30 %; top-1 0.9, 0.9 and 0.6.
      const double max_rel = dt == DType::kBF16 ? 0.02 : dt == DType::kQ8 ? 0.05 : 0.30;
      EXPECT_GE(a.top1, dt == DType::kQ4 ? 0.6 : 0.9) << set << " " << dtype_name(dt);
      EXPECT_LE(a.max_abs, max_rel * a.max_logit)
          << set << " " << dtype_name(dt) << " top1 " << a.top1;
      EXPECT_GT(a.max_abs, 0.0) << "no quantization error at all: were the weights converted?";
    }
  }
}

TEST_F(WeightFormatModels, RefAndCpuAgreeOnQuantizedModels) {
  auto ref = make_ref_backend();
  for (DType dt : {DType::kBF16, DType::kQ8, DType::kQ4}) {
    auto m = load(golden_dir("tiny-b"), *be_, dt);
    const Agreement a = compare(logits_of(*m, *be_, 4), logits_of(*m, *ref, 4));
    EXPECT_EQ(a.top1, 1.0) << dtype_name(dt);
    EXPECT_LE(a.max_abs, 1e-2 * a.max_logit) << dtype_name(dt);
  }
}

// Whether p lies in a memory mapping of a file under `dir` (/proc/self/maps: "start-end perms
// offset dev inode path").
bool in_file_mapping(const void* p, const std::string& dir) {
  std::ifstream maps("/proc/self/maps");
  const auto at = reinterpret_cast<uintptr_t>(p);
  for (std::string line; std::getline(maps, line);) {
    uintptr_t lo = 0, hi = 0;
    if (std::sscanf(line.c_str(), "%lx-%lx", &lo, &hi) != 2 || at < lo || at >= hi) continue;
    const size_t slash = line.find('/');
    return slash != std::string::npos && line.compare(slash, dir.size(), dir) == 0;
  }
  return false;
}

std::string cli(const std::string& args) {
  std::string log;
  const int rc = test::run_command(std::string(HUGINN_CLI) + " " + args, &log);
  return rc == 0 ? std::string() : "rc " + std::to_string(rc) + ": " + log;
}

TEST_F(WeightFormatModels, PreConvertedQuantizedLoadsBackExactly) {
  for (const auto& [flag, dt] : {std::pair{"q8", DType::kQ8}, std::pair{"q4", DType::kQ4}})
    for (const char* set : {"tiny-a", "tiny-b"}) {
      const std::string out = dir_ + "/" + set + "-" + flag;
      ASSERT_EQ(cli("convert --model " + golden_dir(set) + " --out " + out + " --dtype " + flag +
                    " --shards 2"),
                "");
      auto from_file = load(out, *be_, std::nullopt);  // as stored
      auto at_load = load(golden_dir(set), *be_, dt);
      EXPECT_EQ(from_file->weights().prelude[0].mlp_fc.dtype(), dt);
      EXPECT_EQ(from_file->weights().lm_head.dtype(), dt);
      EXPECT_EQ(from_file->weights().wte.dtype(), DType::kF32);
      // Used as mapped (values and scales lie back to back in the file), not copied; converted
      // at load, in memory of its own.
      const std::string canon = fs::canonical(out).string();
      EXPECT_TRUE(in_file_mapping(from_file->weights().core[0].mlp_proj.raw(), canon)) << flag;
      EXPECT_FALSE(in_file_mapping(at_load->weights().core[0].mlp_proj.raw(), canon)) << flag;
      const Tensor a = logits_of(*from_file, *be_), b = logits_of(*at_load, *be_);
      ASSERT_EQ(a.numel(), b.numel());
      for (int64_t i = 0; i < a.numel(); ++i)
        ASSERT_EQ(a.f32()[i], b.f32()[i]) << flag << " " << set << " " << i;
      // Loaded as F32 instead: the dequantized matrices.
      auto deq = load(out, *be_, DType::kF32);
      EXPECT_EQ(deq->weights().core[0].wqkv.dtype(), DType::kF32);
      // A quantized checkpoint converts only to its own format (or keep).
      const char* other = dt == DType::kQ8 ? "q4" : "q8";
      const std::string err = cli("convert --model " + out + " --out " + dir_ + "/x --dtype " + other);
      EXPECT_NE(err.find(std::string("holds ") + flag + " matrices"), std::string::npos) << err;
    }
}

TEST_F(WeightFormatModels, PreConvertedBf16KeepsBf16Matrices) {
  const std::string out = dir_ + "/b";
  ASSERT_EQ(cli("convert --model " + golden_dir("tiny-b") + " --out " + out + " --dtype bf16"), "");
  auto m = load(out, *be_, std::nullopt);
  EXPECT_EQ(m->weights().core[1].attn_proj.dtype(), DType::kBF16);
  auto f32 = load(golden_dir("tiny-b"), *be_, DType::kF32);
  const Agreement a = compare(logits_of(*m, *be_), logits_of(*f32, *be_));
  EXPECT_GE(a.top1, 0.9);
}

// Rewrites the tensors of `src` (one file) into dir/model.safetensors, with edits.
void rewrite(const std::string& src_dir, const std::string& dir,
             const std::function<void(const std::string&, const Tensor&, SafetensorsWriter&)>& each,
             bool metadata, const char* format = names::kQ8Format) {
  fs::create_directories(dir);
  fs::copy_file(src_dir + "/config.json", dir + "/config.json");
  auto f = SafetensorsFile::open(src_dir + "/model.safetensors");
  SafetensorsWriter w;
  if (metadata) w.add_metadata(names::kWeightFormatKey, format);
  for (const auto& e : f->entries()) each(e.name, f->raw(e.name), w);
  w.write(dir + "/model.safetensors");
}

void expect_load_error(const std::string& dir, const std::vector<std::string>& parts) {
  ThreadPool pool(1);
  auto be = make_backend("cpu", pool);
  try {
    load(dir, *be, std::nullopt);
    FAIL() << dir << " loaded";
  } catch (const Error& e) {
    for (const auto& p : parts)
      EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << e.what() << "\nmissing: " << p;
  }
}

TEST_F(WeightFormatModels, MalformedQ8FilesAreRejected) {
  const std::string q8 = dir_ + "/q8";
  ASSERT_EQ(cli("convert --model " + golden_dir("tiny-a") + " --out " + q8 + " --dtype q8"), "");
  const std::string victim = "transformer.core_block.1.mlp.proj.weight";
  const std::string scales = victim + names::kQ8ScalesSuffix;
  auto keep = [](const std::string& n, const Tensor& t, SafetensorsWriter& w) { w.add(n, t); };

  rewrite(q8, dir_ + "/no-scales", [&](const std::string& n, const Tensor& t, SafetensorsWriter& w) {
    if (n != scales) w.add(n, t);
  }, true);
  expect_load_error(dir_ + "/no-scales", {victim, "missing tensor '" + scales + "'", "F16 [64, 4]"});

  rewrite(q8, dir_ + "/bad-shape", [&](const std::string& n, const Tensor& t, SafetensorsWriter& w) {
    w.add(n, n == scales ? t.reshape({32, 8}) : t);
  }, true);
  expect_load_error(dir_ + "/bad-shape", {scales, "[32, 8]", "expected F16 [64, 4]"});

  rewrite(q8, dir_ + "/bad-dtype", [&](const std::string& n, const Tensor& t, SafetensorsWriter& w) {
    if (n == scales) w.add(n, t, DType::kF32); else w.add(n, t);
  }, true);
  expect_load_error(dir_ + "/bad-dtype", {scales, "F32", "expected F16"});

  rewrite(q8, dir_ + "/inf-scale", [&](const std::string& n, const Tensor& t, SafetensorsWriter& w) {
    if (n != scales) return w.add(n, t);
    Tensor c = t.clone();
    c.data<uint16_t>()[5] = 0x7c00;  // +inf
    w.add(n, c);
  }, true);
  expect_load_error(dir_ + "/inf-scale", {scales, "non-finite", "[1, 1]"});

  rewrite(q8, dir_ + "/no-metadata", keep, false);
  expect_load_error(dir_ + "/no-metadata", {"transformer.", "is I8", names::kWeightFormatKey});

  rewrite(q8, dir_ + "/bad-values", [&](const std::string& n, const Tensor& t, SafetensorsWriter& w) {
    w.add(n, n == victim ? t.reshape({128, 64}) : t);
  }, true);
  expect_load_error(dir_ + "/bad-values", {victim, "[128, 64]", "expected [64, 128]"});
}

TEST_F(WeightFormatModels, MalformedQ4FilesAreRejected) {
  const std::string q4 = dir_ + "/q4";
  ASSERT_EQ(cli("convert --model " + golden_dir("tiny-a") + " --out " + q4 + " --dtype q4"), "");
  const std::string victim = "transformer.core_block.1.mlp.proj.weight";  // [64, 128]: U8 [64, 64]
  const std::string scales = victim + names::kQ4ScalesSuffix;
  auto keep = [](const std::string& n, const Tensor& t, SafetensorsWriter& w) { w.add(n, t); };
  auto edit = [&](const char* name, auto each, bool metadata, const char* format) {
    rewrite(q4, dir_ + "/" + name, each, metadata, format);
    return dir_ + "/" + name;
  };
  expect_load_error(edit("no-scales", [&](const std::string& n, const Tensor& t, SafetensorsWriter& w) {
                      if (n != scales) w.add(n, t);
                    }, true, names::kQ4Format),
                    {victim, "missing tensor '" + scales + "'", "F16 [64, 4]"});
  expect_load_error(edit("inf-scale", [&](const std::string& n, const Tensor& t, SafetensorsWriter& w) {
                      if (n != scales) return w.add(n, t);
                      Tensor c = t.clone();
                      c.data<uint16_t>()[6] = 0xfc00;  // -inf
                      w.add(n, c);
                    }, true, names::kQ4Format),
                    {scales, "non-finite", "[1, 2]"});
  expect_load_error(edit("no-metadata", keep, false, names::kQ4Format),
                    {"transformer.", "is U8", names::kWeightFormatKey});
  expect_load_error(edit("q8-metadata", keep, true, names::kQ8Format),
                    {"is U8", std::string("\"") + names::kQ4Format + "\"", "found \"q8_0\""});
  expect_load_error(edit("bad-codes", [&](const std::string& n, const Tensor& t, SafetensorsWriter& w) {
                      w.add(n, n == victim ? t.reshape({128, 32}) : t);
                    }, true, names::kQ4Format),
                    {victim, "[128, 32]", "expected [64, 64]"});
}

TEST_F(WeightFormatModels, CliDtypeReachesTheLoader) {
  const auto ids = token_ids(6, 256);
  std::string list;
  for (size_t i = 0; i < ids.size(); ++i) list += (i ? "," : "") + std::to_string(ids[i]);
  std::map<std::string, Tensor> out;
  for (const char* dt : {"f32", "bf16", "q8", "q4"}) {
    const std::string path = dir_ + "/" + dt + ".safetensors";
    ASSERT_EQ(cli("forward --model " + golden_dir("tiny-a") + " --ids " + list +
                  " --steps 4 --threads 1 --dtype " + dt + " --out " + path),
              "");
    out[dt] = test::load_tensors(path)["logits"];
  }
  EXPECT_GT(test::rel_err(out["bf16"], out["f32"]), 0.0);
  EXPECT_LT(test::rel_err(out["bf16"], out["f32"]), 0.05);
  EXPECT_GT(test::rel_err(out["q8"], out["f32"]), 0.0);
  EXPECT_LT(test::rel_err(out["q8"], out["f32"]), 0.05);
  EXPECT_GT(test::rel_err(out["q4"], out["f32"]), test::rel_err(out["q8"], out["f32"]));
  for (const char* dt : {"q8", "q4"}) {
    std::string info;
    ASSERT_EQ(test::run_command(std::string(HUGINN_CLI) + " info --dtype " + dt + " --model " +
                                    golden_dir("tiny-a"), &info), 0) << info;
    const std::string want = dt == std::string("q8") ? "Q8" : "Q4";
    EXPECT_NE(info.find(want + ", "), std::string::npos) << info;
  }
  // Training keeps F32 weights: no --dtype there; the inference commands have it.
  std::string help;
  ASSERT_EQ(test::run_command(std::string(HUGINN_CLI) + " train --help", &help), 0) << help;
  EXPECT_EQ(help.find("--dtype"), std::string::npos) << help;
  for (const char* cmd : {"forward", "generate", "chat", "serve", "eval", "trace", "info"}) {
    ASSERT_EQ(test::run_command(std::string(HUGINN_CLI) + " " + cmd + " --help", &help), 0) << cmd;
    EXPECT_NE(help.find("--dtype"), std::string::npos) << cmd;
  }
}

}  // namespace
}  // namespace huginn
