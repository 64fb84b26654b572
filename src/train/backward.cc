// Loss and gradients with truncated backpropagation through the recurrence (golden README items
// 9-10). T = tokens, E = n_embd, I = MLP intermediate size, V = vocabulary, k = tracked steps.
//
//   e = prelude(wte[ids]·√E)                    tracked (activations kept)
//   s_0 → s_n: n untracked core steps            plain Runner::core_step, nothing kept
//   s_n → s_n+k: k tracked core steps            adapter input [s ; e] and every core block kept
//   logits = lm_head(ln_f(coda(ln_f(s_n+k))))    coda kept; loss = mean cross-entropy
//
// The backward mirrors this op by op. s_n is a constant (its gradient is dropped); e is not cut,
// so de sums the e-half of each tracked adapter input's gradient and flows into the prelude and
// wte. Core weights' gradients accumulate over the k steps.
//
// Memory (recompute-free, independent of n): every tracked block keeps x0, h1, qkv, ctx, u1, x1,
// h3, fc, act, u2 = T·(10E + 3I) floats; there are P + k·C + Q tracked blocks, plus k adapter
// inputs (T·2E) and fixed buffers (reserve(): eleven [T, E], dqkv, dfc, dact, dcat, logits). So
//   peak_activation_bytes = 4·T·[(P + k·C + Q)(10E + 3I) + 2kE + 16E + 3I + V]
// e.g. tiny-b (E 96, I 256, P/C/Q 2/4/2, V 300), T = 64, k = 8: 16.2 MiB for any n. The n
// untracked steps use the plain Runner's fixed scratch.
#include "huginn/backward.h"

#include <cmath>

namespace huginn {
namespace {

// A sandwich block's saved activations ([T, ·] each).
struct BlockActs {
  Tensor x0, h1, qkv, ctx, u1, x1, h3, fc, act, u2;  // E, E, 3E, E, E, E, E, 2I, I, E
};

struct StepActs {
  Tensor cat;  // [T, 2E] = [s_in ; e], the adapter input
  std::vector<BlockActs> blocks;
};

}  // namespace

struct BackwardRunner::Impl {
  const Model& model;
  Backend& be;
  Runner runner;
  int64_t T = 0;
  std::vector<BlockActs> prelude, coda;
  std::vector<StepActs> steps;  // grows to the largest k seen
  Tensor s, s_final, xc, xf, logits, e;  // [T,E] x4, [T,V], [T,E]
  // Backward scratch.
  Tensor dx, du, dh, dqkv, dctx, dfc, dact, dcat, de, de_part;
  size_t bytes = 0, peak = 0;

  Impl(const Model& m, Backend& b) : model(m), be(b), runner(m, b) {}

  const ModelConfig& c() const { return model.config(); }
  Tensor alloc(int64_t rows, int64_t cols) {
    bytes += static_cast<size_t>(rows * cols) * sizeof(float);
    return be.alloc({rows, cols});
  }
  BlockActs block_acts() {
    const int64_t E = c().n_embd, I = c().intermediate_size;
    BlockActs a;
    for (Tensor* t : {&a.x0, &a.h1, &a.ctx, &a.u1, &a.x1, &a.h3, &a.u2}) *t = alloc(T, E);
    a.qkv = alloc(T, 3 * E);
    a.fc = alloc(T, 2 * I);
    a.act = alloc(T, I);
    return a;
  }
  void reserve(int64_t tokens, int k);
  void block_forward(const BlockWeights& w, Tensor& x, BlockActs& a,
                     std::span<const int32_t> pos);
  void block_backward(const BlockWeights& w, BlockWeights& g, const BlockActs& a, Tensor& dx,
                      std::span<const int32_t> pos);
  void check_inputs(std::span<const int32_t> ids, std::span<const int32_t> labels) const;
};

void BackwardRunner::Impl::reserve(int64_t tokens, int k) {
  const ModelConfig& cf = c();
  const int64_t E = cf.n_embd, I = cf.intermediate_size, V = cf.vocab_size;
  if (tokens != T) {  // a new length: everything is reallocated
    T = tokens;
    bytes = 0;
    prelude.clear();
    coda.clear();
    steps.clear();
    for (int i = 0; i < cf.n_prelude; ++i) prelude.push_back(block_acts());
    for (int i = 0; i < cf.n_coda; ++i) coda.push_back(block_acts());
    for (Tensor* t : {&e, &s, &s_final, &xc, &xf, &dx, &du, &dh, &dctx, &de, &de_part})
      *t = alloc(T, E);
    logits = alloc(T, V);
    dqkv = alloc(T, 3 * E);
    dfc = alloc(T, 2 * I);
    dact = alloc(T, I);
    dcat = alloc(T, 2 * E);
  }
  while (static_cast<int>(steps.size()) < k) {
    StepActs st;
    st.cat = alloc(T, 2 * E);
    for (int j = 0; j < cf.n_core; ++j) st.blocks.push_back(block_acts());
    steps.push_back(std::move(st));
  }
  peak = std::max(peak, bytes);
}

// x = norm_2(attn(norm_1(x)) + x); x = norm_4(mlp(norm_3(x)) + x), in place, keeping `a`.
void BackwardRunner::Impl::block_forward(const BlockWeights& w, Tensor& x, BlockActs& a,
                                         std::span<const int32_t> pos) {
  const ModelConfig& cf = c();
  const int64_t E = cf.n_embd;
  const float eps = static_cast<float>(cf.norm_eps);
  be.copy(x, a.x0);
  be.rmsnorm(a.x0, w.norm_1, eps, a.h1);
  be.matmul(a.h1, w.wqkv, a.qkv);
  Tensor q = a.qkv.cols(0, E), k = a.qkv.cols(E, 2 * E), v = a.qkv.cols(2 * E, 3 * E);
  if (w.q_bias.defined()) {
    be.add_bias(q, w.q_bias);
    be.add_bias(k, w.k_bias);
  }
  be.rope(q, model.weights().rope, pos, static_cast<int>(cf.head_dim));
  be.rope(k, model.weights().rope, pos, static_cast<int>(cf.head_dim));
  be.attention(q, k, v, static_cast<int>(cf.n_heads), a.ctx);
  be.matmul(a.ctx, w.attn_proj, x);
  be.add(x, a.x0, a.u1);
  be.rmsnorm(a.u1, w.norm_2, eps, a.x1);
  be.rmsnorm(a.x1, w.norm_3, eps, a.h3);
  be.matmul(a.h3, w.mlp_fc, a.fc);
  be.swiglu(a.fc, a.act);
  be.matmul(a.act, w.mlp_proj, x);
  be.add(x, a.x1, a.u2);
  be.rmsnorm(a.u2, w.norm_4, eps, x);
}

// dx: gradient of the block output in, of the block input out. Parameter grads accumulate.
void BackwardRunner::Impl::block_backward(const BlockWeights& w, BlockWeights& g,
                                          const BlockActs& a, Tensor& dxio,
                                          std::span<const int32_t> pos) {
  const ModelConfig& cf = c();
  const int64_t E = cf.n_embd;
  const float eps = static_cast<float>(cf.norm_eps);
  // MLP half: u2 = mlp(norm_3(x1)) + x1.
  be.rmsnorm_backward(a.u2, w.norm_4, eps, dxio, du, g.norm_4);
  be.matmul_backward(a.act, w.mlp_proj, du, &dact, &g.mlp_proj);
  be.swiglu_backward(a.fc, dact, dfc);
  be.matmul_backward(a.h3, w.mlp_fc, dfc, &dh, &g.mlp_fc);
  be.rmsnorm_backward(a.x1, w.norm_3, eps, dh, dh, g.norm_3);
  be.add(du, dh, dxio);  // d x1 = residual + norm_3 path
  // Attention half: u1 = attn(norm_1(x0)) + x0.
  be.rmsnorm_backward(a.u1, w.norm_2, eps, dxio, du, g.norm_2);
  be.matmul_backward(a.ctx, w.attn_proj, du, &dctx, &g.attn_proj);
  Tensor q = a.qkv.cols(0, E), k = a.qkv.cols(E, 2 * E), v = a.qkv.cols(2 * E, 3 * E);
  Tensor dq = dqkv.cols(0, E), dk = dqkv.cols(E, 2 * E), dv = dqkv.cols(2 * E, 3 * E);
  be.attention_backward(q, k, v, a.ctx, dctx, static_cast<int>(cf.n_heads), dq, dk, dv);
  be.rope_backward(dq, model.weights().rope, pos, static_cast<int>(cf.head_dim));
  be.rope_backward(dk, model.weights().rope, pos, static_cast<int>(cf.head_dim));
  if (w.q_bias.defined()) {
    be.add_bias_backward(dq, g.q_bias);
    be.add_bias_backward(dk, g.k_bias);
  }
  be.matmul_backward(a.h1, w.wqkv, dqkv, &dh, &g.wqkv);
  be.rmsnorm_backward(a.x0, w.norm_1, eps, dh, dh, g.norm_1);
  be.add(du, dh, dxio);
}

void BackwardRunner::Impl::check_inputs(std::span<const int32_t> ids,
                                        std::span<const int32_t> labels) const {
  const ModelConfig& cf = c();
  if (ids.empty()) throw Error("loss: no tokens");
  if (labels.size() != ids.size())
    throw Error("loss: " + std::to_string(labels.size()) + " labels for " +
                std::to_string(ids.size()) + " tokens (need one label per token)");
  if (static_cast<int64_t>(ids.size()) > model.max_positions())
    throw Error("loss: " + std::to_string(ids.size()) + " tokens exceed the context of " +
                std::to_string(model.max_positions()) + " positions");
  for (size_t t = 0; t < ids.size(); ++t) {
    if (ids[t] < 0 || ids[t] >= cf.vocab_size)
      throw Error("token id " + std::to_string(ids[t]) + " at index " + std::to_string(t) +
                  " is outside the vocabulary [0, " + std::to_string(cf.vocab_size) + ")");
    if (labels[t] != -100 && (labels[t] < 0 || labels[t] >= cf.vocab_size))
      throw Error("label " + std::to_string(labels[t]) + " at index " + std::to_string(t) +
                  " is neither -100 nor in the vocabulary [0, " + std::to_string(cf.vocab_size) +
                  ")");
  }
}

BackwardRunner::BackwardRunner(const Model& model, Backend& backend)
    : impl_(std::make_unique<Impl>(model, backend)) {}
BackwardRunner::~BackwardRunner() = default;

size_t BackwardRunner::peak_activation_bytes() const { return impl_->peak; }

float BackwardRunner::loss_and_grad(std::span<const int32_t> ids, std::span<const int32_t> labels,
                                    const LossOptions& opt, Grads& grads, float grad_scale) {
  Impl& m = *impl_;
  m.check_inputs(ids, labels);
  if (opt.n_no_grad < 0 || opt.n_with_grad < 0)
    throw Error("loss: recurrence counts must be >= 0, got " + std::to_string(opt.n_no_grad) +
                " without and " + std::to_string(opt.n_with_grad) + " with gradient");
  const ModelConfig& c = m.c();
  const Weights& w = m.model.weights();
  const int64_t T = static_cast<int64_t>(ids.size()), E = c.n_embd;
  const int k = opt.n_with_grad;
  const float eps = static_cast<float>(c.norm_eps), emb_scale = static_cast<float>(std::sqrt(double(E)));
  m.reserve(T, k);
  std::vector<int32_t> pos(static_cast<size_t>(T));
  for (int64_t t = 0; t < T; ++t) pos[t] = static_cast<int32_t>(t);
  Backend& be = m.be;

  // ---- forward ----
  Tensor& e = m.e;
  be.embedding(w.wte, ids, emb_scale, e);
  for (int i = 0; i < c.n_prelude; ++i) m.block_forward(w.prelude[i], e, m.prelude[i], pos);
  Tensor init = be.upload(make_initial_state(c, T, opt.init));
  be.copy(init, m.s);
  for (int t = 0; t < opt.n_no_grad; ++t) m.runner.core_step(m.s, e, t, pos, nullptr);
  for (int t = 0; t < k; ++t) {
    StepActs& st = m.steps[t];
    be.concat_cols(m.s, e, st.cat);
    be.matmul(st.cat, w.adapter, m.s);
    for (int j = 0; j < c.n_core; ++j) m.block_forward(w.core[j], m.s, st.blocks[j], pos);
  }
  be.copy(m.s, m.s_final);
  be.rmsnorm(m.s_final, w.ln_f, eps, m.xc);
  for (int i = 0; i < c.n_coda; ++i) m.block_forward(w.coda[i], m.xc, m.coda[i], pos);
  be.rmsnorm(m.xc, w.ln_f, eps, m.xf);
  be.matmul(m.xf, w.lm_head, m.logits);
  const float loss = be.cross_entropy(m.logits, labels, grad_scale, &m.logits);  // → dlogits

  // ---- backward ----
  const bool tied = w.lm_head.same_data(w.wte);
  be.matmul_backward(m.xf, w.lm_head, m.logits, &m.dx, tied ? &grads.w.wte : &grads.w.lm_head);
  be.rmsnorm_backward(m.xc, w.ln_f, eps, m.dx, m.dx, grads.w.ln_f);
  for (int i = c.n_coda - 1; i >= 0; --i)
    m.block_backward(w.coda[i], grads.w.coda[i], m.coda[i], m.dx, pos);
  be.rmsnorm_backward(m.s_final, w.ln_f, eps, m.dx, m.dx, grads.w.ln_f);  // dx = d s_n+k
  // de starts at zero and sums the e-half of every tracked step's adapter-input gradient.
  be.fill(m.de, 0.0f);
  for (int t = k - 1; t >= 0; --t) {
    StepActs& st = m.steps[t];
    for (int j = c.n_core - 1; j >= 0; --j)
      m.block_backward(w.core[j], grads.w.core[j], st.blocks[j], m.dx, pos);
    be.matmul_backward(st.cat, w.adapter, m.dx, &m.dcat, &grads.w.adapter);
    be.concat_cols_backward(m.dcat, m.dx, m.de_part);  // dx = d s_t (dropped at t = 0)
    be.add(m.de, m.de_part, m.de);
  }
  for (int i = c.n_prelude - 1; i >= 0; --i)
    m.block_backward(w.prelude[i], grads.w.prelude[i], m.prelude[i], m.de, pos);
  be.embedding_backward(m.de, ids, emb_scale, grads.w.wte);
  return loss;
}

float BackwardRunner::loss(std::span<const int32_t> ids, std::span<const int32_t> labels,
                           int num_steps, const InitState& init) {
  Impl& m = *impl_;
  m.check_inputs(ids, labels);
  ForwardOutput out = m.runner.forward(ids, num_steps, init);
  return m.be.cross_entropy(out.logits, labels, 1.0f, nullptr);
}

}  // namespace huginn
