// Loading checkpoints: sharded BF16 equals F32-after-rounding; bad checkpoints give errors that
// name the file and tensor; bad inputs to the forward pass are rejected.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "huginn/forward.h"
#include "huginn/log.h"
#include "huginn/safetensors.h"
#include "huginn/thread_pool.h"
#include "test_util.h"

namespace huginn {
namespace {

namespace fs = std::filesystem;
using test::golden_dir;

// Writes `tensors` (name -> F32 host tensor) as a checkpoint dir with the golden config.
void write_model_dir(const std::string& dir, const std::string& set,
                     const std::map<std::string, Tensor>& tensors, DType dtype, int shards) {
  fs::create_directories(dir);
  fs::copy_file(golden_dir(set) + "/config.json", dir + "/config.json",
                fs::copy_options::overwrite_existing);
  std::vector<std::string> names;
  for (const auto& [n, t] : tensors) names.push_back(n);
  if (shards == 1) {
    SafetensorsWriter w;
    for (const auto& n : names) w.add(n, tensors.at(n), dtype);
    w.write(dir + "/model.safetensors");
    return;
  }
  std::string index = "{\"metadata\": {}, \"weight_map\": {";
  for (int s = 0; s < shards; ++s) {
    char fname[64];
    std::snprintf(fname, sizeof fname, "model-%05d-of-%05d.safetensors", s + 1, shards);
    SafetensorsWriter w;
    for (size_t i = s; i < names.size(); i += shards) {
      w.add(names[i], tensors.at(names[i]), dtype);
      index += (index.back() == '{' ? "" : ", ") + std::string("\"") + names[i] + "\": \"" + fname + "\"";
    }
    w.write(dir + "/" + fname);
  }
  index += "}}";
  std::ofstream(dir + "/model.safetensors.index.json") << index;
}

std::map<std::string, Tensor> golden_weights(const std::string& set) {
  return test::load_tensors(golden_dir(set) + "/model.safetensors");
}

ForwardOutput run(const std::string& dir, Backend& be, std::vector<int32_t> ids, int steps) {
  auto m = Model::load(dir, be);
  Runner r(*m, be);
  ForwardOutput o = r.forward(ids, steps, InitState{});
  return {o.logits.clone(), o.latent.clone(), o.latent_raw.clone()};
}

class ModelLoad : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = test::make_temp_dir("load");
    be_ = make_backend("cpu", pool_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  // Expects loading dir to throw a huginn::Error whose message contains every `parts`.
  void expect_load_error(const std::string& dir, std::initializer_list<std::string> parts) {
    try {
      Model::load(dir, *be_);
      ADD_FAILURE() << "loading " << dir << " did not fail";
    } catch (const Error& e) {
      for (const auto& p : parts) EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << e.what();
    }
  }
  ThreadPool pool_{2};
  std::unique_ptr<Backend> be_;
  std::string dir_;
};

TEST_F(ModelLoad, Bf16InTwoShardsMatchesF32AfterRounding) {
  for (const char* set : {"tiny-a", "tiny-b"}) {
    auto w = golden_weights(set);
    std::map<std::string, Tensor> rounded;
    for (auto& [n, t] : w) {
      Tensor r = t.clone();
      for (int64_t i = 0; i < r.numel(); ++i) r.f32()[i] = bf16_to_f32(f32_to_bf16(r.f32()[i]));
      rounded[n] = r;
    }
    const std::string bf = dir_ + "/" + set + "-bf16", f32 = dir_ + "/" + set + "-f32";
    write_model_dir(bf, set, w, DType::kBF16, 2);
    write_model_dir(f32, set, rounded, DType::kF32, 1);
    ASSERT_TRUE(fs::exists(bf + "/model.safetensors.index.json"));
    std::vector<int32_t> ids = {3, 1, 4, 1, 5, 9, 2};
    ForwardOutput a = run(bf, *be_, ids, 4), b = run(f32, *be_, ids, 4);
    EXPECT_EQ(test::rel_err(a.logits, b.logits), 0.0) << set;
    EXPECT_EQ(test::rel_err(a.latent, b.latent), 0.0) << set;
    // ...and bf16 rounding really changed the weights (the test can fail).
    ForwardOutput orig = run(golden_dir(set), *be_, ids, 4);
    EXPECT_GT(test::rel_err(a.logits, orig.logits), 1e-6) << set;
  }
}

TEST_F(ModelLoad, F32WeightsAreNotCopied) {
  auto m = Model::load(golden_dir("tiny-a"), *be_);
  auto f = SafetensorsFile::open(golden_dir("tiny-a") + "/model.safetensors");
  Tensor raw = f->raw("transformer.adapter.weight");
  // Both map the same file; the weight view must point into a mapping, not a fresh buffer:
  // compare the offset of the tensor within its file with the other mapping's.
  const auto* base_w = static_cast<const uint8_t*>(m->weights().wte.raw());
  const auto* adapter_w = static_cast<const uint8_t*>(m->weights().adapter.raw());
  const auto* base_r = static_cast<const uint8_t*>(f->raw("transformer.wte.weight").raw());
  EXPECT_EQ(adapter_w - base_w, static_cast<const uint8_t*>(raw.raw()) - base_r);
}

TEST_F(ModelLoad, TiedHeadIsTheEmbedding) {
  auto m = Model::load(golden_dir("tiny-a"), *be_);
  EXPECT_EQ(m->weights().lm_head.raw(), m->weights().wte.raw());
  EXPECT_EQ(m->param_counts().head, 0);
  auto b = Model::load(golden_dir("tiny-b"), *be_);
  EXPECT_NE(b->weights().lm_head.raw(), b->weights().wte.raw());
  EXPECT_EQ(b->param_counts().head, 300 * 96);
}

TEST_F(ModelLoad, TiedHeadSavedExplicitlyIsAccepted) {
  auto w = golden_weights("tiny-a");
  w["lm_head.weight"] = w["transformer.wte.weight"];
  write_model_dir(dir_ + "/m", "tiny-a", w, DType::kF32, 1);
  std::vector<int32_t> ids = {7, 8, 9};
  ForwardOutput a = run(dir_ + "/m", *be_, ids, 2), b = run(golden_dir("tiny-a"), *be_, ids, 2);
  EXPECT_EQ(test::rel_err(a.logits, b.logits), 0.0);
}

TEST_F(ModelLoad, MissingTensorIsNamed) {
  auto w = golden_weights("tiny-b");
  w.erase("transformer.core_block.2.mlp.fc.weight");
  write_model_dir(dir_ + "/m", "tiny-b", w, DType::kF32, 1);
  expect_load_error(dir_ + "/m", {"missing tensor", "transformer.core_block.2.mlp.fc.weight", "[512, 96]"});
}

TEST_F(ModelLoad, MissingUntiedHeadIsNamed) {
  auto w = golden_weights("tiny-b");
  w.erase("lm_head.weight");
  write_model_dir(dir_ + "/m", "tiny-b", w, DType::kF32, 1);
  expect_load_error(dir_ + "/m", {"lm_head.weight", "tie_embeddings"});
}

TEST_F(ModelLoad, WrongShapeIsNamed) {
  auto w = golden_weights("tiny-a");
  w["transformer.adapter.weight"] = Tensor::empty({64, 64});
  write_model_dir(dir_ + "/m", "tiny-a", w, DType::kF32, 1);
  expect_load_error(dir_ + "/m", {"transformer.adapter.weight", "[64, 64]", "expected [64, 128]", "model.safetensors"});
}

TEST_F(ModelLoad, ExtraTensorWarnsButLoads) {
  auto w = golden_weights("tiny-a");
  w["transformer.unexpected.weight"] = Tensor::empty({3});
  write_model_dir(dir_ + "/m", "tiny-a", w, DType::kF32, 1);
  testing::internal::CaptureStderr();
  EXPECT_NO_THROW(Model::load(dir_ + "/m", *be_));
  std::string err = testing::internal::GetCapturedStderr();
  EXPECT_NE(err.find("transformer.unexpected.weight"), std::string::npos) << err;
}

TEST_F(ModelLoad, FreqsCisIsOptional) {
  auto w = golden_weights("tiny-b");
  w.erase("freqs_cis");
  write_model_dir(dir_ + "/m", "tiny-b", w, DType::kF32, 1);
  std::vector<int32_t> ids = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
  ForwardOutput a = run(dir_ + "/m", *be_, ids, 3), b = run(golden_dir("tiny-b"), *be_, ids, 3);
  EXPECT_LE(test::rel_err(a.logits, b.logits), 1e-5);
}

TEST_F(ModelLoad, MissingShardIsNamed) {
  auto w = golden_weights("tiny-a");
  write_model_dir(dir_ + "/m", "tiny-a", w, DType::kBF16, 2);
  fs::remove(dir_ + "/m/model-00002-of-00002.safetensors");
  expect_load_error(dir_ + "/m", {"model-00002-of-00002.safetensors"});
}

TEST_F(ModelLoad, MissingConfigIsNamed) {
  fs::create_directories(dir_ + "/m");
  expect_load_error(dir_ + "/m", {"config.json"});
}

// block_size 2^58 wrapped Tensor::empty's size product and rope_table wrote far past a 64-byte
// buffer; a large but allowed block_size gets a RoPE table of exactly that many positions.
TEST_F(ModelLoad, BlockSizeIsBoundedAndSizesTheRopeTable) {
  const std::string src = golden_dir("tiny-a");
  fs::create_directories(dir_ + "/m");
  fs::create_symlink(src + "/model.safetensors", dir_ + "/m/model.safetensors");
  auto with_block = [&](const std::string& v) {
    std::ifstream in(src + "/config.json");
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const size_t at = text.find("\"block_size\"");
    ASSERT_NE(at, std::string::npos);
    const size_t colon = text.find(':', at), end = text.find_first_of(",}", colon);
    text.replace(colon + 1, end - colon - 1, " " + v);
    std::ofstream(dir_ + "/m/config.json") << text;
  };
  for (const char* v : {"576460752303423488", "4611686018427387904", "16777216"}) {
    with_block(v);
    expect_load_error(dir_ + "/m", {dir_ + "/m/config.json", "'block_size'", v, "1048576"});
  }
  with_block("65536");
  auto m = Model::load(dir_ + "/m", *be_);
  EXPECT_EQ(m->max_positions(), 65536);
}

// A NaN or Inf weight once loaded silently and every logit came out NaN with exit status 0.
TEST_F(ModelLoad, NonFiniteWeightsAreNamed) {
  const float nan = std::nanf(""), inf = INFINITY;
  struct Case {
    const char* tensor;
    int64_t at;
    float v;
    DType dt;
    const char* want;
  };
  for (const Case& c : {Case{"transformer.adapter.weight", 130, nan, DType::kF32, "NaN at [1, 2]"},
                        Case{"transformer.ln_f.weight", 5, -inf, DType::kF32, "-Inf at [5]"},
                        Case{"transformer.prelude.0.attn.Wqkv.weight", 64, inf, DType::kBF16, "+Inf at [1, 0]"},
                        Case{"transformer.wte.weight", 0, nan, DType::kBF16, "NaN at [0, 0]"}}) {
    auto w = golden_weights("tiny-a");
    Tensor t = w.at(c.tensor).clone();
    t.f32()[c.at] = c.v;
    t.f32()[t.numel() - 1] = nan;  // a second one, counted
    w[c.tensor] = t;
    const std::string dir = dir_ + "/m" + std::to_string(c.at);
    write_model_dir(dir, "tiny-a", w, c.dt, 1);
    expect_load_error(dir, {dir + "/model.safetensors", std::string("'") + c.tensor + "'",
                            "2 non-finite values", c.want});
  }
  // BF16 weights loaded as BF16 (no conversion) are checked too.
  auto w = golden_weights("tiny-a");
  Tensor t = w.at("transformer.coda.0.mlp.proj.weight").clone();
  t.f32()[3] = nan;
  w["transformer.coda.0.mlp.proj.weight"] = t;
  write_model_dir(dir_ + "/bf", "tiny-a", w, DType::kBF16, 1);
  Model::LoadOptions o;
  o.weight_dtype = DType::kBF16;
  try {
    Model::load(dir_ + "/bf", *be_, o);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'transformer.coda.0.mlp.proj.weight' holds 1 non-finite value, the first NaN at [0, 3]"),
              std::string::npos)
        << e.what();
  }
}

TEST_F(ModelLoad, IdsOutsideVocabularyAreRejected) {
  auto m = Model::load(golden_dir("tiny-a"), *be_);
  Runner r(*m, *be_);
  std::vector<int32_t> bad = {1, 256, 3};
  try {
    r.forward(bad, 2, InitState{});
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("256"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("vocabulary"), std::string::npos) << e.what();
  }
  std::vector<int32_t> neg = {-1};
  EXPECT_THROW(r.forward(neg, 2, InitState{}), Error);
}

TEST_F(ModelLoad, InitialStateIsSeededAndScaled) {
  ModelConfig c = ModelConfig::from_file(golden_dir("tiny-a") + "/config.json");
  InitState a{1.0, 42, {}}, b{1.0, 42, {}}, d{1.0, 43, {}};
  Tensor sa = make_initial_state(c, 50, a), sb = make_initial_state(c, 50, b), sd = make_initial_state(c, 50, d);
  EXPECT_EQ(test::rel_err(sa, sb), 0.0);
  EXPECT_GT(test::rel_err(sa, sd), 0.1);
  // std sqrt(2/(5E)) cut at 3 std, times sqrt(E): |x| <= 3 sqrt(2/5), sample std ~ sqrt(2/5)·0.986.
  double ss = 0, mx = 0;
  for (int64_t i = 0; i < sa.numel(); ++i) {
    ss += double(sa.f32()[i]) * sa.f32()[i];
    mx = std::max(mx, std::fabs(double(sa.f32()[i])));
  }
  const double sd_want = std::sqrt(2.0 / 5.0) * 0.9866;  // truncation at 3 std shrinks std by 1.3%
  EXPECT_NEAR(std::sqrt(ss / sa.numel()), sd_want, 0.03);
  EXPECT_LE(mx, 3 * std::sqrt(2.0 / 5.0) + 1e-6);
  Tensor z = make_initial_state(c, 5, InitState{});
  for (int64_t i = 0; i < z.numel(); ++i) EXPECT_EQ(z.f32()[i], 0.f);
}

}  // namespace
}  // namespace huginn
