// huginn widen (huginn/widen.h): a model embedded into a larger shape computes the source's
// function. On the golden tiny models and a small model trained here, at targets that grow each
// dimension alone and all together: logits and latent states equal the source's, the latent's
// copies are the source's and its padded coordinates zero, an initial state's other coordinates
// do not matter, greedy generations and exit steps are identical; bad targets are refused.
//
// Tolerance: the widened model evaluates the same function in another float32 order (weights
// scaled by 1/k, sqrt(E/E'), sqrt(t), 1/copies, each rounded once; dot products over kE or
// I' terms instead of E or I), which is what golden/README.md's float32 bound covers: rel ≤ 1e-4
// of the largest magnitude (expect ≲ 1e-5). Extra layers add one RMSNorm each, which changes
// its input by eps·|1/mean(u²) − 1|/2 relative (u: the stream the last real norm_4 normalised;
// ≤ 1e-6 for mean(u²) ≥ 0.5), inside the same bound.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <random>

#include "../train/train_fixture.h"
#include "huginn/forward.h"
#include "huginn/generate.h"
#include "huginn/model.h"
#include "huginn/thread_pool.h"
#include "huginn/widen.h"
#include "test_util.h"

namespace huginn {
namespace {

namespace fs = std::filesystem;
constexpr double kTol = 1e-4;  // golden/README.md's float32 bound, see above

struct Shape {
  const char* name;
  int64_t heads_add, t, i_mul, i_add;
  int layers_add[3];
};

// Targets relative to the source: heads H + heads_add of head_dim t·D (E' = (H + heads_add)·t·D,
// so E' is a multiple of E or not), intermediate i_mul·I + i_add, layers added to each block.
const Shape kShapes[] = {
    {"tiled x2", 4, 1, 1, 0, {0, 0, 0}},       // (for H = 4) E' = 2E: every coordinate twice
    {"padded", 2, 1, 1, 0, {0, 0, 0}},         // E' = E + 2D: one copy and 2D zero coordinates
    {"head_dim x2", 0, 2, 1, 0, {0, 0, 0}},    // RoPE pairs moved to equal frequencies
    {"intermediate", 0, 1, 2, 37, {0, 0, 0}},  // neurons copied unevenly
    {"layers", 0, 1, 1, 0, {1, 2, 1}},         // extra layers in prelude, core, coda
    {"all", 1, 2, 3, -5, {1, 2, 1}},           // E' = 2E + 2D (k = 2 and padding), 5 heads over 4
};

ModelConfig target_of(const ModelConfig& s, const Shape& sh) {
  ModelConfig g = s;
  g.n_heads = s.n_heads + sh.heads_add;
  g.head_dim = sh.t * s.head_dim;
  g.n_embd = g.n_heads * g.head_dim;
  g.intermediate_size = sh.i_mul * s.intermediate_size + sh.i_add;
  g.n_prelude += sh.layers_add[0];
  g.n_core += sh.layers_add[1];
  g.n_coda += sh.layers_add[2];
  return widened_config(s, g);
}

std::vector<int32_t> ids_of(int64_t n, int64_t vocab, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<int32_t> ids(static_cast<size_t>(n));
  for (auto& id : ids) id = static_cast<int32_t>(rng() % vocab);
  return ids;
}

// The widened latent's copies q = 0..k-1 each against the source's latent; padding exactly zero.
void expect_latent(const Tensor& wide, const Tensor& src, const std::string& what) {
  const int64_t T = src.dim(0), E = src.dim(1), E2 = wide.dim(1), k = E2 / E;
  double max_err = 0, max_abs = 0;
  for (int64_t t = 0; t < T; ++t)
    for (int64_t j = 0; j < E2; ++j) {
      if (j >= k * E) {
        ASSERT_EQ(wide.row(t)[j], 0.0f) << what << ": padded coordinate " << j;
        continue;
      }
      max_err = std::max(max_err, double(std::fabs(wide.row(t)[j] - src.row(t)[j % E])));
      max_abs = std::max(max_abs, double(std::fabs(src.row(t)[j % E])));
    }
  EXPECT_LE(max_err / max_abs, kTol) << what << ": latent";
}

class Widen : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = test::make_temp_dir("widen"); }
  void TearDown() override { fs::remove_all(dir_); }

  // Every target shape of kShapes against `src_dir`'s model: forward (zero and given states) and
  // greedy generation with a KL exit.
  void check_all(const std::string& src_dir, const std::string& label) {
    auto src = Model::load(src_dir, *be_);
    const ModelConfig& s = src->config();
    for (const Shape& sh : kShapes) {
      const std::string what = label + ", " + sh.name;
      const ModelConfig g = target_of(s, sh);
      const std::string out = dir_ + "/" + std::to_string(&sh - kShapes);
      const WidenStats st = write_widened(src_dir, g, out, DType::kF32);
      EXPECT_LT(st.zeros, st.params) << what;
      auto wide = Model::load(out, *be_);
      ASSERT_EQ(wide->config().n_embd, g.n_embd) << what;
      const auto ids = ids_of(11, s.vocab_size, 3);
      Runner rs(*src, *be_), rw(*wide, *be_);
      const ForwardOutput a = rs.forward(ids, 6, InitState{});
      const ForwardOutput b = rw.forward(ids, 6, InitState{});
      const double rel = test::rel_err(b.logits, a.logits);
      EXPECT_LE(rel, kTol) << what << ": logits";
      std::printf("%s: E %lld -> %lld, logits rel %.2e, %.1f %% zero weights\n", what.c_str(),
                  (long long)s.n_embd, (long long)g.n_embd, rel, 100.0 * st.zeros / st.params);
      expect_latent(b.latent, a.latent, what);
      expect_latent(b.latent_raw, a.latent_raw, what + " (raw)");

      // A random initial state: the source's in copy 0, anything elsewhere.
      InitState si{1.0, 9, {}};
      Tensor s0 = make_initial_state(s, int64_t(ids.size()), si);
      InitState wi{1.0, 10, {}};
      Tensor w0 = make_initial_state(g, int64_t(ids.size()), wi);
      for (int64_t t = 0; t < s0.dim(0); ++t)
        for (int64_t j = 0; j < s.n_embd; ++j) w0.row(t)[j] = s0.row(t)[j];
      const ForwardOutput c = rs.forward(ids, 6, InitState{0.0, 0, s0});
      const ForwardOutput d = rw.forward(ids, 6, InitState{0.0, 0, w0});
      EXPECT_LE(test::rel_err(d.logits, c.logits), kTol) << what << ": given state";

      for (const char* exit : {"none", "kl:1e-3"}) {
        GenerateOptions o;
        o.default_stop_ids = false;
        o.max_new_tokens = 12;
        o.steps = 8;
        o.exit = ExitSpec::parse(exit);
        Generator gs(*src, *be_, o), gw(*wide, *be_, o);
        auto cs = gs.new_context(), cw = gw.new_context();
        const std::vector<int32_t> prompt(ids.begin(), ids.begin() + 4);
        const GenerateResult rsrc = gs.generate(*cs, prompt);
        const GenerateResult rwide = gw.generate(*cw, prompt);
        EXPECT_EQ(rsrc.tokens, rwide.tokens) << what << ", exit " << exit;
        EXPECT_EQ(rsrc.steps, rwide.steps) << what << ", exit " << exit;
      }
    }
  }

  ThreadPool pool_{1};
  std::unique_ptr<Backend> be_ = make_backend("cpu", pool_);
  std::string dir_;
};

TEST_F(Widen, GoldenModelsComputeTheSameFunction) {
  check_all(test::golden_dir("tiny-a"), "tiny-a (tied)");
  check_all(test::golden_dir("tiny-b"), "tiny-b (untied)");
}

TEST_F(Widen, TrainedModelComputesTheSameFunction) {
  train_test::Fixture f("widen");
  TrainOptions to = f.options("run");
  to.steps = 150;
  check_all(train(to).last_checkpoint, "trained");
}

// The strict backend (no host reads of backend memory) and BF16 storage load and agree in tokens.
TEST_F(Widen, Bf16OnTheStrictBackend) {
  const std::string src_dir = test::golden_dir("tiny-a");
  auto strict = make_backend("strict", pool_);
  auto src = Model::load(src_dir, *strict);
  const ModelConfig g = target_of(src->config(), kShapes[5]);
  write_widened(src_dir, g, dir_ + "/bf16", DType::kBF16);
  auto wide = Model::load(dir_ + "/bf16", *strict);
  const auto ids = ids_of(9, src->config().vocab_size, 5);
  Runner rs(*src, *strict), rw(*wide, *strict);
  const ForwardOutput a = rs.forward(ids, 4, InitState{});
  const ForwardOutput b = rw.forward(ids, 4, InitState{});
  // Every tensor stored in BF16 (8 mantissa bits): weight_formats_model_test's bound for BF16
  // matrices against F32 (bench_accuracy measures 0.3 %).
  EXPECT_LE(test::rel_err(test::to_host(*strict, b.logits), test::to_host(*strict, a.logits)),
            0.02);
}

TEST_F(Widen, BadTargetsAreRefused) {
  const ModelConfig s = ModelConfig::from_file(test::golden_dir("tiny-a") + "/config.json");
  auto refuse = [&](ModelConfig g, const char* needle) {
    const std::string msg = test::error_message([&] { widened_config(s, g); });
    EXPECT_NE(msg.find(needle), std::string::npos) << msg;
  };
  ModelConfig g = s;
  g.n_embd = 32, g.n_heads = 2;
  refuse(g, "n_embd 32 is smaller than the source's 64");
  g = s;
  g.n_heads = 8, g.n_embd = 96, g.head_dim = 12;
  refuse(g, "head_dim (n_embd / num_attention_heads) 12 is smaller than the source's 16");
  g = s;
  g.n_embd = 96, g.n_heads = 4, g.head_dim = 24;
  refuse(g, "head_dim 24 (n_embd 96 / 4 heads) is not a multiple of the source's 16");
  g = s;
  g.vocab_size = 512;
  refuse(g, "vocab_size 512 differs");
  g = s;
  g.n_core = 1;
  refuse(g, "n_layers_in_recurrent_block 1 is smaller");
  g = s;
  g.intermediate_size = 64;
  refuse(g, "intermediate_size 64 is smaller");
}

// The command: --help, a preset, a file target, an existing output refused.
TEST_F(Widen, Command) {
  std::string out;
  ASSERT_EQ(test::run_command(std::string(HUGINN_CLI) + " widen --help", &out), 0);
  EXPECT_NE(out.find("--shape"), std::string::npos);
  // tiny-b with a task.json, which describes the vocabulary and so comes along.
  const std::string src = dir_ + "/src";
  fs::create_directories(src);
  for (const char* f : {"config.json", "model.safetensors"})
    fs::copy_file(test::golden_dir("tiny-b") + "/" + f, src + "/" + f);
  {
    std::ofstream f(src + "/task.json");
    f << "{\"vocabulary\": \"bytes\"}\n";
  }
  std::string cfg = train_test::read_file(src + "/config.json");
  const ModelConfig s = ModelConfig::from_json(cfg, "tiny-b");
  const ModelConfig g = target_of(s, kShapes[5]);
  const std::string shape = dir_ + "/shape.json";
  {
    std::ofstream f(shape);
    f << g.to_json();
  }
  const std::string cmd = std::string(HUGINN_CLI) + " widen -q --model " + src + " --shape " +
                          shape + " --out " + dir_ + "/w";
  ASSERT_EQ(test::run_command(cmd, &out), 0) << out;
  EXPECT_NE(out.find("n_embd 96 -> 224"), std::string::npos) << out;
  EXPECT_EQ(train_test::read_file(dir_ + "/w/task.json"),
            train_test::read_file(src + "/task.json"));
  EXPECT_NE(test::run_command(cmd, &out), 0);
  EXPECT_NE(out.find("already exists"), std::string::npos) << out;
  EXPECT_NE(test::run_command(std::string(HUGINN_CLI) + " widen --model " + src +
                                  " --shape nonesuch --out " + dir_ + "/x",
                              &out),
            0);
  EXPECT_NE(out.find("not a preset (huginn-0125)"), std::string::npos) << out;
  ModelConfig loaded = ModelConfig::from_file(dir_ + "/w/config.json");
  EXPECT_FALSE(loaded.tie_embeddings);
  EXPECT_DOUBLE_EQ(loaded.norm_eps, s.norm_eps * 192.0 / 224.0);
}

}  // namespace
}  // namespace huginn
