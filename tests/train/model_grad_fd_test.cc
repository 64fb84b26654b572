// Whole-model finite-difference check at tiny size (tiny-a, 8 tokens, 3 tracked recurrences,
// n = 0 so that the full gradient is what backprop computes): for one entry of each kind of
// parameter — the embedding (used twice: input and tied head), a prelude norm, the adapter, core
// qk_bias / Wqkv / mlp, a coda projection and ln_f — the central difference of the float loss
// agrees with loss_and_grad. Also: with n > 0 untracked steps, the gradient of a core weight
// equals the central difference of the loss with the untracked steps' state frozen
// (a given initial state), i.e. truncation cuts exactly the state.
//
// Step and tolerance: the float forward's loss (~5.5) carries rounding noise of ~1e-6 absolute,
// so with h = 1e-2 the difference quotient's noise is ~5e-5; the truncation error h²·f'''/6 is
// of the same order for these smooth functions. We test the largest-|gradient| entry of each
// tensor (|g| >= 1e-3 asserted), with tolerance 2e-2·|g| + 2e-4: a wrong gradient (a missing
// path, a sign, a factor) is off by O(|g|).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>

#include "huginn/backward.h"
#include "huginn/thread_pool.h"
#include "test_util.h"

namespace huginn {
namespace {

// A writable copy of a model's weights (qk_bias kept as one [2, E] buffer, the head kept tied).
std::shared_ptr<Model> writable_copy(const Model& m) {
  auto block = [](const BlockWeights& b) {
    BlockWeights o = b;
    for (Tensor* t : {&o.norm_1, &o.norm_2, &o.norm_3, &o.norm_4, &o.wqkv, &o.attn_proj,
                      &o.mlp_fc, &o.mlp_proj})
      *t = t->clone();
    if (b.qk_bias.defined()) {
      const int64_t E = b.qk_bias.dim(1);
      o.qk_bias = b.qk_bias.clone();
      o.q_bias = o.qk_bias.rows(0, 1).reshape({E});
      o.k_bias = o.qk_bias.rows(1, 2).reshape({E});
    }
    return o;
  };
  const Weights& w = m.weights();
  Weights c;
  c.wte = w.wte.clone();
  c.adapter = w.adapter.clone();
  c.ln_f = w.ln_f.clone();
  c.lm_head = w.lm_head.same_data(w.wte) ? c.wte : w.lm_head.clone();
  c.rope = w.rope.clone();
  for (const auto& b : w.prelude) c.prelude.push_back(block(b));
  for (const auto& b : w.core) c.core.push_back(block(b));
  for (const auto& b : w.coda) c.coda.push_back(block(b));
  return std::make_shared<Model>(m.config(), std::move(c));
}

struct Fixture {
  ThreadPool pool{1};
  std::unique_ptr<Backend> be = make_backend("cpu", pool);
  std::shared_ptr<Model> model;
  std::vector<int32_t> ids = {5, 17, 200, 3, 3, 99, 41, 250}, labels = {17, 200, 3, 3, 99, 41, 250, -100};
  Fixture() { model = writable_copy(*Model::load(test::golden_dir("tiny-a"), *be)); }
};

// Central difference of f wrt value[i], restoring the entry.
double central(Tensor value, int64_t i, double h, const std::function<double()>& f) {
  float* p = value.f32() + i;
  const float keep = *p;
  *p = keep + static_cast<float>(h);
  const double up = f();
  *p = keep - static_cast<float>(h);
  const double down = f();
  *p = keep;
  return (up - down) / (2 * h);
}

int64_t argmax_abs(const Tensor& g) {
  int64_t best = 0;
  for (int64_t i = 0; i < g.numel(); ++i)
    if (std::fabs(g.f32()[i]) > std::fabs(g.f32()[best])) best = i;
  return best;
}

TEST(ModelGradFD, FullBackpropMatchesCentralDifferences) {
  Fixture fx;
  Grads grads = Grads::zeros_like(*fx.model, *fx.be);
  BackwardRunner runner(*fx.model, *fx.be);
  LossOptions opt;
  opt.n_no_grad = 0;
  opt.n_with_grad = 3;
  runner.loss_and_grad(fx.ids, fx.labels, opt, grads);
  auto loss = [&] { return double(runner.loss(fx.ids, fx.labels, 3)); };
  const std::vector<std::string> checked = {
      "transformer.wte.weight", "transformer.prelude.0.norm_1.weight",
      "transformer.prelude.0.attn.Wqkv.weight", "transformer.adapter.weight",
      "transformer.core_block.0.attn.qk_bias", "transformer.core_block.1.mlp.fc.weight",
      "transformer.core_block.1.norm_4.weight", "transformer.coda.0.attn.proj.weight",
      "transformer.ln_f.weight"};
  int n = 0;
  for (const NamedParam& p : named_params(*fx.model, grads)) {
    if (std::find(checked.begin(), checked.end(), p.name) == checked.end()) continue;
    ++n;
    const int64_t i = argmax_abs(p.grad);
    const double g = p.grad.f32()[i];
    ASSERT_GE(std::fabs(g), 1e-3) << p.name;
    const double fd = central(p.value, i, 1e-2, loss);
    EXPECT_NEAR(fd, g, 2e-2 * std::fabs(g) + 2e-4) << p.name << "[" << i << "]";
  }
  EXPECT_EQ(n, static_cast<int>(checked.size()));
}

TEST(ModelGradFD, TruncationCutsOnlyTheState) {
  Fixture fx;
  const ModelConfig& c = fx.model->config();
  // The state after 2 untracked steps, computed once: with it given as the initial state and
  // n = 0, the loss as a function of the weights is what the truncated gradient differentiates.
  Runner fwd(*fx.model, *fx.be);
  const int64_t T = static_cast<int64_t>(fx.ids.size());
  std::vector<int32_t> pos(fx.ids.size());
  for (size_t t = 0; t < pos.size(); ++t) pos[t] = static_cast<int32_t>(t);
  Tensor e = fwd.prelude(fx.ids, pos, nullptr);
  Tensor s = make_initial_state(c, T, {});
  for (int t = 0; t < 2; ++t) fwd.core_step(s, e, t, pos, nullptr);
  InitState frozen;
  frozen.given = s.clone();

  Grads grads = Grads::zeros_like(*fx.model, *fx.be);
  BackwardRunner runner(*fx.model, *fx.be);
  LossOptions opt;
  opt.n_no_grad = 2;
  opt.n_with_grad = 2;
  const float l = runner.loss_and_grad(fx.ids, fx.labels, opt, grads);
  EXPECT_NEAR(runner.loss(fx.ids, fx.labels, 2, frozen), l, 1e-5 * l);
  auto loss = [&] { return double(runner.loss(fx.ids, fx.labels, 2, frozen)); };
  for (const NamedParam& p : named_params(*fx.model, grads)) {
    // Core weights and the prelude (through e; the frozen state keeps the untracked steps'
    // dependence on e out, as the reference's detach does).
    if (p.name != "transformer.core_block.1.attn.Wqkv.weight" &&
        p.name != "transformer.prelude.0.mlp.proj.weight")
      continue;
    const int64_t i = argmax_abs(p.grad);
    const double g = p.grad.f32()[i];
    ASSERT_GE(std::fabs(g), 1e-3) << p.name;
    // Perturbing a prelude weight also moves the untracked steps' output in the full model,
    // but not in the frozen-state one — exactly the detach the gradient implements.
    const double fd = central(p.value, i, 1e-2, loss);
    EXPECT_NEAR(fd, g, 2e-2 * std::fabs(g) + 2e-4) << p.name << "[" << i << "]";
  }
}

}  // namespace
}  // namespace huginn
