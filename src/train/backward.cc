// Loss and gradients with truncated backpropagation through the recurrence (golden README items
// 9-10), for a batch of sequences run as one pass. R = rows of the pass (the batch's tokens,
// sequence after sequence), T = tokens of one sequence, E = n_embd, I = MLP intermediate size,
// V = vocabulary, k = tracked steps.
//
//   e = prelude(wte[ids]·√E)                    tracked (activations kept)
//   s_0 → s_n: n untracked core steps            ModelPass::core_step, nothing kept
//   s_n → s_n+k: k tracked core steps            adapter input [s ; e] and every core block kept
//   logits = lm_head(ln_f(coda(ln_f(s_n+k))))    coda kept; loss = mean cross-entropy per sequence
//
// The forward is the model's own (ModelPass, src/model/forward.cc) with activation stores; the
// backward mirrors it op by op. Every matmul runs over all R rows ([R, E] GEMMs, weight
// gradients summed over the batch by the GEMM itself); attention and the loss run per sequence.
// With LossOptions::precision = BF16 every one of those matmuls, forward (ModelPass::linear) and
// backward (linear_backward), is the backend's BF16 mixed-precision op; nothing else changes.
// s_n is a constant (its gradient is dropped); e is not cut, so de sums the e-half of each
// tracked adapter input's gradient and flows into the prelude and wte. Core weights' gradients
// accumulate over the k steps.
//
// Memory (recompute-free, independent of n): every tracked block keeps x0, h1, qkv, ctx, u1, x1,
// h3, fc, act, u2 = R·(10E + 3I) floats; there are P + k·C + Q tracked blocks, plus k adapter
// inputs (R·2E) and fixed buffers (reserve(): ten [R, E], dqkv, dfc, dact, dcat, logits). So
//   peak_activation_bytes = 4·R·[(P + k·C + Q)(10E + 3I) + 2kE + 15E + 3I + V]
// e.g. tiny-b (E 96, I 256, P/C/Q 2/4/2, V 300), R = 64, k = 8: 16.2 MiB for any n. The n
// untracked steps use the pass's inference scratch. Buffers grow to the largest R seen.
#include "huginn/backward.h"

#include <cmath>

namespace huginn {
namespace {

// A block's kept activations, as views of their first R rows.
BlockActs first_rows(const BlockActs& a, int64_t R) {
  BlockActs v;
  for (auto [dst, src] : {std::pair{&v.x0, &a.x0}, {&v.h1, &a.h1}, {&v.qkv, &a.qkv},
                          {&v.ctx, &a.ctx}, {&v.u1, &a.u1}, {&v.x1, &a.x1}, {&v.h3, &a.h3},
                          {&v.fc, &a.fc}, {&v.act, &a.act}, {&v.u2, &a.u2}})
    *dst = src->rows(0, R);
  return v;
}

}  // namespace

struct BackwardRunner::Impl {
  const Model& model;
  Backend& be;
  ModelPass pass;  // the training forward and the untracked steps
  Runner runner;   // loss() at a fixed depth
  int64_t cap = 0;  // rows every buffer below holds
  std::vector<BlockActs> prelude, coda;
  std::vector<StepActs> steps;  // grows to the largest k seen
  Tensor e, s, xc, xf, logits;  // [cap, E] x4, [cap, V]
  // Backward scratch.
  Tensor dx, du, dh, dqkv, dctx, dfc, dact, dcat, de, de_part;
  size_t bytes = 0, peak = 0;
  // This call's rows: ids, labels, positions and sequence starts of the batch.
  std::vector<int32_t> ids, labels, pos;
  std::vector<int64_t> starts;

  Impl(const Model& m, Backend& b) : model(m), be(b), pass(m, b), runner(m, b) {}

  const ModelConfig& c() const { return model.config(); }
  Tensor alloc(int64_t rows, int64_t cols) {
    bytes += static_cast<size_t>(rows * cols) * sizeof(float);
    return be.alloc({rows, cols});
  }
  BlockActs block_acts() {
    const int64_t E = c().n_embd, I = c().intermediate_size;
    BlockActs a;
    for (Tensor* t : {&a.x0, &a.h1, &a.ctx, &a.u1, &a.x1, &a.h3, &a.u2}) *t = alloc(cap, E);
    a.qkv = alloc(cap, 3 * E);
    a.fc = alloc(cap, 2 * I);
    a.act = alloc(cap, I);
    return a;
  }
  MatmulPrecision precision = MatmulPrecision::kF32;  // this call's (LossOptions)
  // BF16: the model's weights with every Linear matrix a BF16 copy (LossOptions::weights_version).
  Weights bf16;
  uint64_t bf16_version = 0;
  bool bf16_made = false;
  const Weights& bf16_weights(uint64_t version);
  void reserve(int64_t rows, int k);
  // The backward of ModelPass::linear in this call's precision.
  void linear_backward(const Tensor& x, const Tensor& w, const Tensor& dy, Tensor* dx, Tensor* dw) {
    if (precision == MatmulPrecision::kBF16) {
      be.matmul_backward_bf16(x, w, dy, dx, dw);
    } else {
      be.matmul_backward(x, w, dy, dx, dw);
    }
  }
  Rows rows() const { return Rows{pos, starts, {}, {}}; }
  void block_backward(const BlockWeights& w, BlockWeights& g, const BlockActs& a, Tensor& dx);
  void check_inputs(std::span<const int32_t> ids, std::span<const int32_t> labels) const;
  void gather(std::span<const TrainSequence> batch);
};

void BackwardRunner::Impl::reserve(int64_t R, int k) {
  const ModelConfig& cf = c();
  const int64_t E = cf.n_embd, I = cf.intermediate_size, V = cf.vocab_size;
  if (R > cap) {  // more rows than ever: everything is reallocated
    cap = R;
    bytes = 0;
    prelude.clear();
    coda.clear();
    steps.clear();
    for (int i = 0; i < cf.n_prelude; ++i) prelude.push_back(block_acts());
    for (int i = 0; i < cf.n_coda; ++i) coda.push_back(block_acts());
    for (Tensor* t : {&e, &s, &xc, &xf, &dx, &du, &dh, &dctx, &de, &de_part}) *t = alloc(cap, E);
    logits = alloc(cap, V);
    dqkv = alloc(cap, 3 * E);
    dfc = alloc(cap, 2 * I);
    dact = alloc(cap, I);
    dcat = alloc(cap, 2 * E);
  }
  while (static_cast<int>(steps.size()) < k) {
    StepActs st;
    st.cat = alloc(cap, 2 * E);
    for (int j = 0; j < cf.n_core; ++j) st.blocks.push_back(block_acts());
    steps.push_back(std::move(st));
  }
  peak = std::max(peak, bytes);
}

const Weights& BackwardRunner::Impl::bf16_weights(uint64_t version) {
  if (bf16_made && version != 0 && version == bf16_version) return bf16;
  Weights src = model.weights();
  if (!bf16_made) {  // the model's tensors, the matrices replaced by BF16 ones of their shapes
    bf16 = src;
    for (Tensor* t : linear_matrices(bf16)) *t = be.alloc({t->dim(0), t->dim(1)}, DType::kBF16);
    bf16_made = true;
  }
  const std::vector<Tensor*> from = linear_matrices(src), to = linear_matrices(bf16);
  for (size_t i = 0; i < from.size(); ++i) be.round_bf16(*from[i], *to[i]);
  bf16_version = version;
  return bf16;
}

// dx: gradient of the block output in, of the block input out. Parameter grads accumulate.
// Every buffer here is a view of this call's R rows.
void BackwardRunner::Impl::block_backward(const BlockWeights& w, BlockWeights& g,
                                          const BlockActs& a, Tensor& dxio) {
  const ModelConfig& cf = c();
  const int64_t E = cf.n_embd, R = dxio.dim(0);
  const float eps = static_cast<float>(cf.norm_eps);
  Tensor du_ = du.rows(0, R), dh_ = dh.rows(0, R), dctx_ = dctx.rows(0, R),
         dqkv_ = dqkv.rows(0, R), dfc_ = dfc.rows(0, R), dact_ = dact.rows(0, R);
  // MLP half: u2 = mlp(norm_3(x1)) + x1.
  be.rmsnorm_backward(a.u2, w.norm_4, eps, dxio, du_, g.norm_4);
  linear_backward(a.act, w.mlp_proj, du_, &dact_, &g.mlp_proj);
  be.swiglu_backward(a.fc, dact_, dfc_);
  linear_backward(a.h3, w.mlp_fc, dfc_, &dh_, &g.mlp_fc);
  be.rmsnorm_backward(a.x1, w.norm_3, eps, dh_, dh_, g.norm_3);
  be.add(du_, dh_, dxio);  // d x1 = residual + norm_3 path
  // Attention half: u1 = attn(norm_1(x0)) + x0.
  be.rmsnorm_backward(a.u1, w.norm_2, eps, dxio, du_, g.norm_2);
  linear_backward(a.ctx, w.attn_proj, du_, &dctx_, &g.attn_proj);
  Tensor q = a.qkv.cols(0, E), k = a.qkv.cols(E, 2 * E), v = a.qkv.cols(2 * E, 3 * E);
  Tensor dq = dqkv_.cols(0, E), dk = dqkv_.cols(E, 2 * E), dv = dqkv_.cols(2 * E, 3 * E);
  const int heads = static_cast<int>(cf.n_heads);
  for (size_t b = 0; b + 1 < starts.size(); ++b) {  // attention per sequence
    const int64_t r0 = starts[b], r1 = starts[b + 1];
    Tensor dqb = dq.rows(r0, r1), dkb = dk.rows(r0, r1), dvb = dv.rows(r0, r1);
    be.attention_backward(q.rows(r0, r1), k.rows(r0, r1), v.rows(r0, r1), a.ctx.rows(r0, r1),
                          dctx_.rows(r0, r1), heads, dqb, dkb, dvb);
  }
  be.rope_backward(dq, model.weights().rope, pos, static_cast<int>(cf.head_dim));
  be.rope_backward(dk, model.weights().rope, pos, static_cast<int>(cf.head_dim));
  if (w.q_bias.defined()) {
    be.add_bias_backward(dq, g.q_bias);
    be.add_bias_backward(dk, g.k_bias);
  }
  linear_backward(a.h1, w.wqkv, dqkv_, &dh_, &g.wqkv);
  be.rmsnorm_backward(a.x0, w.norm_1, eps, dh_, dh_, g.norm_1);
  be.add(du_, dh_, dxio);
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

// The batch's rows: ids, labels and positions sequence after sequence, and where each starts.
void BackwardRunner::Impl::gather(std::span<const TrainSequence> batch) {
  ids.clear();
  labels.clear();
  pos.clear();
  starts.assign(1, 0);
  for (const TrainSequence& q : batch) {
    check_inputs(q.ids, q.labels);
    ids.insert(ids.end(), q.ids.begin(), q.ids.end());
    labels.insert(labels.end(), q.labels.begin(), q.labels.end());
    for (size_t t = 0; t < q.ids.size(); ++t) pos.push_back(static_cast<int32_t>(t));
    starts.push_back(static_cast<int64_t>(ids.size()));
  }
}

BackwardRunner::BackwardRunner(const Model& model, Backend& backend)
    : impl_(std::make_unique<Impl>(model, backend)) {}
BackwardRunner::~BackwardRunner() = default;

size_t BackwardRunner::peak_activation_bytes() const { return impl_->peak; }

float BackwardRunner::loss_and_grad(std::span<const int32_t> ids, std::span<const int32_t> labels,
                                    const LossOptions& opt, Grads& grads, float grad_scale) {
  TrainSequence one{ids, labels, opt.init.seed, grad_scale};
  float loss = 0;
  loss_and_grad(std::span<const TrainSequence>(&one, 1), opt, grads, std::span<float>(&loss, 1));
  return loss;
}

void BackwardRunner::loss_and_grad(std::span<const TrainSequence> batch, const LossOptions& opt,
                                   Grads& grads, std::span<float> losses) {
  Impl& m = *impl_;
  if (batch.empty()) throw Error("loss: no sequences");
  HUGINN_ASSERT(losses.size() == batch.size(), "loss_and_grad: one loss per sequence");
  if (opt.n_no_grad < 0 || opt.n_with_grad < 0)
    throw Error("loss: recurrence counts must be >= 0, got " + std::to_string(opt.n_no_grad) +
                " without and " + std::to_string(opt.n_with_grad) + " with gradient");
  m.gather(batch);
  m.precision = opt.precision;
  m.pass.set_precision(opt.precision);
  const bool copies = opt.precision == MatmulPrecision::kBF16 && opt.bf16_weight_copies;
  const Weights& w = copies ? m.bf16_weights(opt.weights_version) : m.model.weights();
  m.pass.set_weights(copies ? &w : nullptr);
  const ModelConfig& c = m.c();
  const int64_t R = static_cast<int64_t>(m.ids.size()), E = c.n_embd;
  const int k = opt.n_with_grad;
  const float eps = static_cast<float>(c.norm_eps), emb_scale = static_cast<float>(std::sqrt(double(E)));
  m.reserve(R, k);
  Backend& be = m.be;
  const Rows rows = m.rows();

  // ---- forward: the model's pass, keeping what the backward needs ----
  std::vector<BlockActs> pre, cod;
  for (const BlockActs& a : m.prelude) pre.push_back(first_rows(a, R));
  CodaActs coda{m.xc.rows(0, R), m.xf.rows(0, R), {}};
  for (const BlockActs& a : m.coda) coda.blocks.push_back(first_rows(a, R));
  std::vector<StepActs> tracked(static_cast<size_t>(k));
  for (int t = 0; t < k; ++t) {
    tracked[t].cat = m.steps[t].cat.rows(0, R);
    for (const BlockActs& a : m.steps[t].blocks) tracked[t].blocks.push_back(first_rows(a, R));
  }
  Tensor e = m.e.rows(0, R), s = m.s.rows(0, R), logits = m.logits.rows(0, R);
  m.pass.prelude(m.ids, rows, e, pre);
  Tensor init = Tensor::empty({R, E});  // each sequence's initial state, on the host
  for (size_t b = 0; b < batch.size(); ++b) {
    InitState is = opt.init;
    is.seed = batch[b].init_seed;
    const int64_t r0 = m.starts[b], T = m.starts[b + 1] - r0;
    init.rows(r0, r0 + T).copy_from(make_initial_state(c, T, is));
  }
  be.copy(be.upload(init), s);
  for (int t = 0; t < opt.n_no_grad; ++t) m.pass.core_step(s, e, t, rows);
  for (int t = 0; t < k; ++t) m.pass.core_step(s, e, opt.n_no_grad + t, rows, &tracked[t]);
  m.pass.coda(s, rows, logits, nullptr, /*last_only=*/false, &coda);
  for (size_t b = 0; b < batch.size(); ++b) {  // each sequence's mean loss; logits → dlogits
    Tensor lb = logits.rows(m.starts[b], m.starts[b + 1]);
    losses[b] = be.cross_entropy(lb, std::span<const int32_t>(m.labels).subspan(
                                         m.starts[b], m.starts[b + 1] - m.starts[b]),
                                 batch[b].grad_scale, &lb);
  }

  // ---- backward ----
  Tensor dx = m.dx.rows(0, R), de = m.de.rows(0, R), de_part = m.de_part.rows(0, R),
         dcat = m.dcat.rows(0, R);
  const bool tied = m.model.weights().lm_head.same_data(m.model.weights().wte);
  m.linear_backward(coda.xf, w.lm_head, logits, &dx, tied ? &grads.w.wte : &grads.w.lm_head);
  be.rmsnorm_backward(coda.xc, w.ln_f, eps, dx, dx, grads.w.ln_f);
  for (int i = c.n_coda - 1; i >= 0; --i) m.block_backward(w.coda[i], grads.w.coda[i], coda.blocks[i], dx);
  be.rmsnorm_backward(s, w.ln_f, eps, dx, dx, grads.w.ln_f);  // dx = d s_n+k
  // de starts at zero and sums the e-half of every tracked step's adapter-input gradient.
  be.fill(de, 0.0f);
  for (int t = k - 1; t >= 0; --t) {
    for (int j = c.n_core - 1; j >= 0; --j)
      m.block_backward(w.core[j], grads.w.core[j], tracked[t].blocks[j], dx);
    m.linear_backward(tracked[t].cat, w.adapter, dx, &dcat, &grads.w.adapter);
    be.concat_cols_backward(dcat, dx, de_part);  // dx = d s_t (dropped at t = 0)
    be.add(de, de_part, de);
  }
  for (int i = c.n_prelude - 1; i >= 0; --i)
    m.block_backward(w.prelude[i], grads.w.prelude[i], pre[i], de);
  be.embedding_backward(de, m.ids, emb_scale, grads.w.wte);
}

float BackwardRunner::loss(std::span<const int32_t> ids, std::span<const int32_t> labels,
                           int num_steps, const InitState& init) {
  Impl& m = *impl_;
  m.check_inputs(ids, labels);
  ForwardOutput out = m.runner.forward(ids, num_steps, init);
  return m.be.cross_entropy(out.logits, labels, 1.0f, nullptr);
}

}  // namespace huginn
