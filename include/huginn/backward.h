// Training-time computation: loss and parameter gradients with truncated backpropagation through
// the recurrence (golden README items 9-10, 17).
//
// Gradient contract: parameter gradients ACCUMULATE (+=) — across the k tracked iterations that
// reuse the core weights, and across calls (gradient accumulation); Grads::zero clears them.
// Activation gradients inside the backward pass are assigned (=).
#pragma once

#include <cstdint>
#include <memory>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "huginn/forward.h"

namespace huginn {

// Parameter gradients laid out like Weights (same shapes). `lm_head` is undefined when the head
// is tied: its gradient accumulates into `wte`. `rope` is never a parameter.
struct Grads {
  Weights w;
  static Grads zeros_like(const Model& model, Backend& be);
  void zero(Backend& be);
};

// One trainable tensor under its HF checkpoint name, with its gradient. `decay` is false for
// norms, biases (qk_bias) and embeddings (AdamW's default exclusions).
struct NamedParam {
  std::string name;
  Tensor value;
  Tensor grad;
  bool decay = true;
};
// Every parameter of `model` paired with its slot in `grads`, in a fixed order. qk_bias is one
// parameter [2, 1, H, D] as in the checkpoint.
std::vector<NamedParam> named_params(const Model& model, Grads& grads);

struct LossOptions {
  int n_no_grad = 0;    // recurrences run without tracking (their state is a constant)
  int n_with_grad = 1;  // recurrences tracked; e is not detached
  InitState init;       // zeros by default (a batch: each sequence's seed is its own)
  // The Linear layers' GEMMs, forward and backward (BF16: Backend::matmul_bf16 and
  // matmul_backward_bf16; weights, gradients and everything else stay F32).
  MatmulPrecision precision = MatmulPrecision::kF32;
  // BF16: the Linear weights are rounded to BF16 once (Backend::round_bf16) and every GEMM of the
  // call reads those copies; consecutive calls with the same nonzero weights_version promise that
  // the weights did not change between them and reuse the copies (the trainer passes its
  // optimizer step, so gradient accumulation rounds once per step); 0: rounded again every call.
  uint64_t weights_version = 0;
  // false: no copies, every GEMM rounds the F32 weights itself (the same bits, slower; tests
  // compare the two).
  bool bf16_weight_copies = true;
};

// One sequence of a training batch.
struct TrainSequence {
  std::span<const int32_t> ids, labels;  // labels already shifted; -100 = no loss there
  uint64_t init_seed = 0;                // its initial state's seed (scale: LossOptions::init)
  float grad_scale = 1.0f;               // its loss's weight in the gradient
};

// Keeps activation buffers between calls; memory holds only the k tracked iterations (plus
// prelude and coda), so it does not grow with n_no_grad.
class BackwardRunner {
 public:
  BackwardRunner(const Model& model, Backend& backend);
  ~BackwardRunner();
  // Mean cross-entropy over positions whose label != -100 (labels already shifted). Adds
  // grad_scale · dLoss/dθ into `grads`. Throws huginn::Error on bad ids/labels.
  float loss_and_grad(std::span<const int32_t> ids, std::span<const int32_t> labels,
                      const LossOptions& opt, Grads& grads, float grad_scale = 1.0f);
  // A batch as one pass: the sequences' tokens are the rows of [ΣT, E] GEMMs, attention and the
  // loss run per sequence, and all share one (n, k), as the reference trains. losses[b]
  // receives sequence b's mean loss; grads accumulate Σ_b grad_scale_b · dLoss_b/dθ (equal to
  // the per-sequence calls up to float summation order).
  void loss_and_grad(std::span<const TrainSequence> batch, const LossOptions& opt, Grads& grads,
                     std::span<float> losses);
  // The same loss without gradients, at num_steps recurrences (validation).
  float loss(std::span<const int32_t> ids, std::span<const int32_t> labels, int num_steps,
             const InitState& init = {});
  size_t peak_activation_bytes() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// "poisson-lognormal-filling" (golden README item 17): with s = mean_backprop_depth,
// t = max(mean_recurrence - s, 0), sigma = 0.5, mu = ln(t + s) - sigma^2 / 2:
// rate ~ LogNormal(mu, sigma); p = Poisson(rate) + 1; n_no_grad = max(p - s, 0),
// n_with_grad = min(p, s). Seeded; deterministic for a seed.
class IterationSampler {
 public:
  IterationSampler(int mean_recurrence, int mean_backprop_depth, uint64_t seed);
  std::pair<int, int> next();  // (n_no_grad, n_with_grad)
 private:
  int mean_recurrence_, backprop_depth_;
  std::mt19937_64 rng_;
};

}  // namespace huginn
