// Training with --precision bf16 (BF16 mixed-precision GEMMs, everything else F32) on the tiny
// pattern fixture: it learns, its loss tracks the F32 run's step by step, it resumes bit for bit
// on every backend, the strict backend trains it exactly as the cpu backend, and a checkpoint
// keeps its precision; the BF16 copies of the weights (rounded once per optimizer step) change no
// bit of losses, gradients or weights.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <vector>

#include "huginn/backward.h"
#include "huginn/thread_pool.h"
#include "huginn/train.h"
#include "test_util.h"
#include "train_fixture.h"

namespace huginn {
namespace {
using namespace train_test;  // NOLINT: the shared fixture

std::vector<double> step_losses(const std::string& out) {
  std::vector<double> v;
  std::ifstream f(out + "/metrics.jsonl");
  std::string line;
  while (std::getline(f, line)) {
    const auto j = nlohmann::json::parse(line);
    if (j.contains("loss") && j.contains("step") && !j.contains("val_loss") && j["loss"].is_number())
      v.push_back(j["loss"].get<double>());
  }
  return v;
}

// 40 steps at lr 3e-3: the loss falls from ~3.5 to ~1; BF16 inputs (2^-9 relative rounding per
// GEMM operand) move each step's loss by far less than the learning does. Bound: 0.01 nats at
// every step (the largest difference measured was 0.0009; both runs' bits are the same on every
// machine, see kernels/bf16_numerics.h), and the runs must differ (the BF16 path really ran).
TEST(Bf16Train, LossTracksTheF32Run) {
  Fixture f("bf16-track");
  TrainOptions o = f.options("f32");
  o.steps = 40;
  train(o);
  TrainOptions b = o;
  b.out = f.dir + "/bf16";
  b.precision = MatmulPrecision::kBF16;
  train(b);
  const std::vector<double> lf = step_losses(o.out), lb = step_losses(b.out);
  ASSERT_EQ(lf.size(), 40u);
  ASSERT_EQ(lb.size(), 40u);
  double worst = 0;
  bool differ = false;
  for (size_t s = 0; s < lf.size(); ++s) {
    worst = std::max(worst, std::fabs(lf[s] - lb[s]));
    differ = differ || lf[s] != lb[s];
    EXPECT_NEAR(lb[s], lf[s], 0.01) << "step " << s + 1;
  }
  std::printf("bf16 vs f32 loss over 40 steps: largest difference %.4f nats (first %.4f, last "
              "%.4f / %.4f)\n", worst, lf.front(), lf.back(), lb.back());
  EXPECT_TRUE(differ) << "the bf16 run is the f32 run bit for bit: BF16 GEMMs did not run";
  EXPECT_LT(lb.back(), lb.front() - 1.0) << "the bf16 run did not learn";
}

class Bf16TrainOn : public ::testing::TestWithParam<std::string> {};

TEST_P(Bf16TrainOn, ResumeIsBitIdenticalToAStraightRun) {
  Fixture f("bf16-resume");
  TrainOptions straight = f.options("straight");
  straight.backend = GetParam();
  straight.precision = MatmulPrecision::kBF16;
  straight.steps = 12;
  straight.save_every = 6;
  train(straight);
  TrainOptions first = straight;
  first.out = f.dir + "/split";
  first.stop_at = 6;
  EXPECT_EQ(train(first).final_step, 6);
  TrainOptions second = first;
  second.stop_at = 0;
  second.resume = true;
  EXPECT_EQ(train(second).final_step, 12);
  for (const char* file : {"model.safetensors", "train_state.safetensors"}) {
    const std::string a = read_file(f.dir + "/straight/step-00000012/" + file);
    const std::string b = read_file(f.dir + "/split/step-00000012/" + file);
    ASSERT_FALSE(a.empty()) << file;
    EXPECT_TRUE(a == b) << file << " differs between the resumed and the straight bf16 run";
  }
}

INSTANTIATE_TEST_SUITE_P(Backends, Bf16TrainOn, ::testing::ValuesIn(test::kBackends));

// Three AdamW steps on tiny-b, bf16, batch of two, (n, k) = (2, 2). `copies`: the runner rounds
// the weights once per step (weights_version = the step) or, when false, every GEMM rounds the F32
// weights itself; `stale`: the same version every step (copies never refreshed: wrong on purpose).
// Returns every loss, every gradient after each step, and the final weights, as raw bytes.
std::string three_steps(const std::string& backend, bool copies, bool stale) {
  ThreadPool pool(2);
  auto be = make_backend(backend, pool);
  auto tm = TrainableModel::load(test::golden_dir("tiny-b"), *be);
  const Model& m = tm->model();
  BackwardRunner runner(m, *be);
  Grads grads = Grads::zeros_like(m, *be);
  AdamW adam(named_params(m, grads), AdamWOptions{}, *be);
  const std::vector<int32_t> a = {5, 17, 200, 3, 3, 99, 41, 8, 1, 2, 7, 250, 31},
                             b = {9, 9, 120, 64, 2, 18, 77, 5, 260, 11, 4, 6, 13};
  const std::vector<TrainSequence> batch = {{std::span(a).first(12), std::span(a).subspan(1), 1, 0.5f},
                                            {std::span(b).first(12), std::span(b).subspan(1), 2, 0.5f}};
  LossOptions lo;
  lo.n_no_grad = 2;
  lo.n_with_grad = 2;
  lo.init.scale = 1.0;
  lo.precision = MatmulPrecision::kBF16;
  lo.bf16_weight_copies = copies;
  std::string out;
  auto append = [&](const Tensor& t) {
    std::vector<float> h(static_cast<size_t>(t.numel()));
    be->download(t, h.data());
    out.append(reinterpret_cast<const char*>(h.data()), h.size() * sizeof(float));
  };
  std::vector<float> losses(2);
  for (int step = 0; step < 3; ++step) {
    lo.weights_version = stale ? 1 : static_cast<uint64_t>(step) + 1;
    grads.zero(*be);
    runner.loss_and_grad(batch, lo, grads, losses);
    out.append(reinterpret_cast<const char*>(losses.data()), losses.size() * sizeof(float));
    for (const NamedParam& p : adam.params()) append(p.grad);
    adam.step(1e-2);
  }
  for (const NamedParam& p : adam.params()) append(p.value);
  return out;
}

class Bf16CopiesOn : public ::testing::TestWithParam<std::string> {};

TEST_P(Bf16CopiesOn, WeightCopiesChangeNoBit) {
  const std::string per_gemm = three_steps(GetParam(), false, false);
  EXPECT_TRUE(three_steps(GetParam(), true, false) == per_gemm)
      << "the BF16 copies of the weights changed a loss, a gradient or a weight";
  // The comparison sees stale copies: reusing step 1's copies in steps 2 and 3 changes the bits.
  EXPECT_FALSE(three_steps(GetParam(), true, true) == per_gemm);
}

// cpu and strict (the ref backend's ops take the same rounded weights in
// gemm_bf16_test's RoundedWeightsGiveTheBitsOfTheF32Weights; three runs on it here take 10 s).
INSTANTIATE_TEST_SUITE_P(Backends, Bf16CopiesOn, ::testing::Values("cpu", "strict"));

// The strict backend runs the CPU kernels: its bf16 run is the cpu backend's, bit for bit.
TEST(Bf16Train, StrictBackendTrainsExactlyAsTheCpuBackend) {
  Fixture f("bf16-strict");
  TrainOptions c = f.options("cpu");
  c.precision = MatmulPrecision::kBF16;
  c.steps = 6;
  train(c);
  TrainOptions s = c;
  s.out = f.dir + "/strict";
  s.backend = "strict";
  train(s);
  EXPECT_TRUE(read_file(c.out + "/step-00000006/model.safetensors") ==
              read_file(s.out + "/step-00000006/model.safetensors"));
}

// A checkpoint records --precision bf16; resuming it in f32 (or an f32 one in bf16) is refused.
TEST(Bf16Train, ResumeKeepsThePrecision) {
  Fixture f("bf16-keep");
  TrainOptions o = f.options("run");
  o.precision = MatmulPrecision::kBF16;
  o.stop_at = 4;
  train(o);
  TrainOptions other = o;
  other.stop_at = 0;
  other.resume = true;
  other.precision = MatmulPrecision::kF32;
  EXPECT_NE(error_of([&] { train(other); })
                .find("was trained with --precision bf16, this run has --precision f32"),
            std::string::npos);
  TrainOptions f32 = f.options("run32");
  f32.stop_at = 4;
  train(f32);
  f32.stop_at = 0;
  f32.resume = true;
  f32.precision = MatmulPrecision::kBF16;
  EXPECT_NE(error_of([&] { train(f32); })
                .find("was trained with --precision f32, this run has --precision bf16"),
            std::string::npos);
  other.precision = MatmulPrecision::kBF16;
  EXPECT_EQ(train(other).final_step, 20);
}

}  // namespace
}  // namespace huginn
