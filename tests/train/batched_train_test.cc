// Batched training (BackwardRunner::loss_and_grad over a batch): the B sequences run as one pass
// ([ΣT, E] GEMMs, attention and loss per sequence, one (n, k)) and give what the loop of
// per-sequence calls gives: each sequence's loss and every parameter's accumulated gradient.
//
// Tolerance: the batch sums each weight gradient over all ΣT rows in one GEMM where the loop adds
// B separately rounded partial sums, and the GEMM's row blocking differs with M, so results agree
// to float rounding, not bit for bit: max |batched − loop| <= 1e-5 · max |loop| per tensor, the
// bound the golden gradients meet against PyTorch's own summation order (seen: 1.4e-6 on the
// CPU backend, 2e-7 on the reference). Losses agree to 1e-6 relative. A wrong batch (a sequence
// seeing another's keys, a shared divisor of the loss, a dropped initial state) is off by O(1).
#include <gtest/gtest.h>

#include <cmath>

#include "huginn/backward.h"
#include "huginn/thread_pool.h"
#include "test_util.h"

namespace huginn {
namespace {

using Param = std::tuple<std::string, std::string>;  // set, backend
class BatchedTrain : public ::testing::TestWithParam<Param> {};

TEST_P(BatchedTrain, EqualsThePerSequenceLoop) {
  const auto& [set, backend] = GetParam();
  ThreadPool pool(2);
  auto be = make_backend(backend, pool);
  auto model = Model::load(test::golden_dir(set), *be);
  const int64_t V = model->config().vocab_size;
  // Three sequences of different lengths, some labels ignored, each with its own initial state.
  std::vector<std::vector<int32_t>> ids = {{5, 17, 200, 3, 3, 99, 41}, {8, 1, 2}, {}};
  for (int t = 0; t < 13; ++t) ids[2].push_back(static_cast<int32_t>((37 * t + 11) % V));
  std::vector<std::vector<int32_t>> labels;
  for (const auto& s : ids) {
    std::vector<int32_t> l(s.begin() + 1, s.end());
    l.push_back(-100);
    labels.push_back(l);
  }
  labels[0][1] = -100;
  const float scales[3] = {0.25f, 0.5f, 0.25f};
  LossOptions opt;
  opt.n_no_grad = 2;
  opt.n_with_grad = 3;
  opt.init.scale = 1.0;

  BackwardRunner runner(*model, *be);
  Grads loop = Grads::zeros_like(*model, *be), batched = Grads::zeros_like(*model, *be);
  std::vector<TrainSequence> batch;
  float want[3];
  for (size_t b = 0; b < 3; ++b) {
    LossOptions one = opt;
    one.init.seed = 100 + b;
    want[b] = runner.loss_and_grad(ids[b], labels[b], one, loop, scales[b]);
    batch.push_back({ids[b], labels[b], 100 + b, scales[b]});
  }
  std::vector<float> got(3);
  runner.loss_and_grad(batch, opt, batched, got);
  for (size_t b = 0; b < 3; ++b) EXPECT_NEAR(got[b], want[b], 1e-6 * std::fabs(want[b])) << b;

  auto a = named_params(*model, loop), c = named_params(*model, batched);
  ASSERT_EQ(a.size(), c.size());
  double worst = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const Tensor la = test::to_host(*be, a[i].grad), lc = test::to_host(*be, c[i].grad);
    const double rel = test::rel_err(lc, la);
    worst = std::max(worst, rel);
    EXPECT_LE(rel, 1e-5) << a[i].name;
  }
  RecordProperty("worst_grad_rel", std::to_string(worst));
  std::fprintf(stderr, "%s on %s: worst gradient difference %.2e of the tensor's max\n",
               set.c_str(), backend.c_str(), worst);
}

INSTANTIATE_TEST_SUITE_P(All, BatchedTrain,
                         ::testing::Combine(::testing::Values("tiny-a", "tiny-b"),
                                            ::testing::ValuesIn(test::kBackends)),
                         [](const auto& info) {
                           std::string n = std::get<0>(info.param) + "_" + std::get<1>(info.param);
                           for (char& ch : n)
                             if (ch == '-') ch = '_';
                           return n;
                         });

// One sequence in a batch is exactly the one-sequence call (the same pass, bit for bit).
TEST(BatchedTrain, ABatchOfOneIsTheSingleCall) {
  ThreadPool pool(1);
  auto be = make_backend("cpu", pool);
  auto model = Model::load(test::golden_dir("tiny-b"), *be);
  const std::vector<int32_t> ids = {4, 9, 16, 25, 36, 49}, labels = {9, 16, 25, 36, 49, -100};
  LossOptions opt;
  opt.n_no_grad = 1;
  opt.n_with_grad = 2;
  BackwardRunner runner(*model, *be);
  Grads g1 = Grads::zeros_like(*model, *be), g2 = Grads::zeros_like(*model, *be);
  const float l1 = runner.loss_and_grad(ids, labels, opt, g1, 0.5f);
  const TrainSequence one{ids, labels, 0, 0.5f};
  float l2 = 0;
  runner.loss_and_grad(std::span<const TrainSequence>(&one, 1), opt, g2, std::span<float>(&l2, 1));
  EXPECT_EQ(l1, l2);
  auto a = named_params(*model, g1), c = named_params(*model, g2);
  for (size_t i = 0; i < a.size(); ++i) EXPECT_EQ(test::rel_err(a[i].grad, c[i].grad), 0.0) << a[i].name;
}

}  // namespace
}  // namespace huginn
