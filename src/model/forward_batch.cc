// The batched decode pass: one token for each of B sequences through prelude, core and coda,
// the same sandwich blocks as forward.cc with the linear layers over B rows and attention per
// row against that row's own cache. B = sequences (rows), E = n_embd, I = MLP intermediate
// size, V = vocabulary.
#include "huginn/forward_batch.h"

#include <algorithm>
#include <cmath>
#include <string>

namespace huginn {

namespace {
// Output columns per tile in linear(): a tile of F32 weight rows is at most this many bytes, so
// it stays in L2 while the row groups pass over it.
constexpr int64_t kTileBytes = 512 * 1024;
}  // namespace

struct BatchRunner::Scratch {
  int64_t B = 0;
  Tensor h, qkv, ctx, tmp, fc, act, cat, xn;  // [B, E], [B, 3E], [B, E], [B, E], [B, 2I], [B, I], [B, 2E], [B, E]
};

BatchRunner::BatchRunner(const Model& model, Backend& backend) : model_(model), be_(backend) {}
BatchRunner::~BatchRunner() = default;

BatchRunner::Scratch& BatchRunner::scratch(int64_t B) {
  if (!scratch_ || scratch_->B < B) {
    const ModelConfig& c = model_.config();
    const int64_t E = c.n_embd, I = c.intermediate_size;
    auto s = std::make_unique<Scratch>();
    s->B = B;
    s->h = be_.alloc({B, E});
    s->qkv = be_.alloc({B, 3 * E});
    s->ctx = be_.alloc({B, E});
    s->tmp = be_.alloc({B, E});
    s->fc = be_.alloc({B, 2 * I});
    s->act = be_.alloc({B, I});
    s->cat = be_.alloc({B, 2 * E});
    s->xn = be_.alloc({B, E});
    scratch_ = std::move(s);
  }
  return *scratch_;
}

void BatchRunner::linear(const Tensor& x, const Tensor& w, Tensor& y) {
  const int64_t M = x.dim(0), N = w.dim(0), K = w.dim(1);
  if (M <= kExactRows) return be_.matmul(x, w, y);
  // Column tiles need row views of w, which only F32 weights have; other formats stream the
  // whole matrix once per group of kExactRows rows.
  const int64_t tile = w.dtype() == DType::kF32
                           ? std::max<int64_t>(16, kTileBytes / std::max<int64_t>(1, K * 4))
                           : N;
  for (int64_t n0 = 0; n0 < N; n0 += tile) {
    const int64_t n1 = std::min(N, n0 + tile);
    const Tensor wt = tile == N ? w : w.rows(n0, n1);
    for (int64_t m0 = 0; m0 < M; m0 += kExactRows) {
      const int64_t m1 = std::min(M, m0 + kExactRows);
      Tensor yt = tile == N ? y.rows(m0, m1) : y.rows(m0, m1).cols(n0, n1);
      be_.matmul(x.rows(m0, m1), wt, yt);
    }
  }
}

// One sandwich block on x [B, E] (see Runner::block): the linear layers over all rows, the
// attention row by row, each row's keys and values going into its own cache.
void BatchRunner::block(const BlockWeights& w, Tensor& x, std::span<const int32_t> positions,
                        std::span<KVCache* const> caches, int step_index) {
  const ModelConfig& c = model_.config();
  const int64_t B = x.dim(0), E = c.n_embd;
  const float eps = static_cast<float>(c.norm_eps);
  Scratch& s = scratch(B);
  Tensor h = s.h.rows(0, B), qkv = s.qkv.rows(0, B), ctx = s.ctx.rows(0, B),
         tmp = s.tmp.rows(0, B), fc = s.fc.rows(0, B), act = s.act.rows(0, B);

  be_.rmsnorm(x, w.norm_1, eps, h);
  linear(h, w.wqkv, qkv);
  Tensor q = qkv.cols(0, E), k = qkv.cols(E, 2 * E), v = qkv.cols(2 * E, 3 * E);
  if (w.q_bias.defined()) {
    be_.add_bias(q, w.q_bias);
    be_.add_bias(k, w.k_bias);
  }
  be_.rope(q, model_.weights().rope, positions, static_cast<int>(c.head_dim));
  be_.rope(k, model_.weights().rope, positions, static_cast<int>(c.head_dim));
  for (int64_t b = 0; b < B; ++b) {
    Tensor qb = q.rows(b, b + 1), kb = k.rows(b, b + 1), vb = v.rows(b, b + 1),
           cb = ctx.rows(b, b + 1);
    Tensor keys = kb, values = vb;
    if (caches[b]) caches[b]->update(step_index, positions.subspan(b, 1), kb, vb, &keys, &values);
    be_.attention(qb, keys, values, static_cast<int>(c.n_heads), cb);
  }
  linear(ctx, w.attn_proj, tmp);
  be_.add(tmp, x, x);
  be_.rmsnorm(x, w.norm_2, eps, x);

  be_.rmsnorm(x, w.norm_3, eps, h);
  linear(h, w.mlp_fc, fc);
  be_.swiglu(fc, act);
  linear(act, w.mlp_proj, tmp);
  be_.add(tmp, x, x);
  be_.rmsnorm(x, w.norm_4, eps, x);
}

void BatchRunner::prelude(std::span<const int32_t> ids, std::span<const int32_t> positions,
                          std::span<KVCache* const> caches, Tensor& e) {
  const ModelConfig& c = model_.config();
  const int64_t B = static_cast<int64_t>(ids.size());
  HUGINN_ASSERT(positions.size() == ids.size() && caches.size() == ids.size() && e.dim(0) == B,
                "BatchRunner::prelude: one position, cache and row per token");
  for (int64_t b = 0; b < B; ++b) {
    if (ids[b] < 0 || ids[b] >= c.vocab_size)
      throw Error("token id " + std::to_string(ids[b]) + " of batch row " + std::to_string(b) +
                  " is outside the vocabulary [0, " + std::to_string(c.vocab_size) + ")");
    if (positions[b] < 0 || positions[b] >= model_.max_positions())
      throw Error("position " + std::to_string(positions[b]) + " is beyond the context of " +
                  std::to_string(model_.max_positions()) + " positions");
  }
  be_.embedding(model_.weights().wte, ids, static_cast<float>(std::sqrt(double(c.n_embd))), e);
  for (int i = 0; i < c.n_prelude; ++i) block(model_.weights().prelude[i], e, positions, caches, i);
}

void BatchRunner::core_step(Tensor& s, const Tensor& e, int t,
                            std::span<const int32_t> positions,
                            std::span<KVCache* const> caches) {
  const ModelConfig& c = model_.config();
  const int64_t B = s.dim(0);
  Tensor cat = scratch(B).cat.rows(0, B);
  be_.concat_cols(s, e, cat);  // state first, then e
  linear(cat, model_.weights().adapter, s);
  for (int j = 0; j < c.n_core; ++j)
    block(model_.weights().core[j], s, positions, caches, c.n_prelude + t * c.n_core + j);
}

void BatchRunner::coda(const Tensor& s, std::span<const int32_t> positions,
                       std::span<KVCache* const> caches, Tensor& logits) {
  const ModelConfig& c = model_.config();
  const Weights& w = model_.weights();
  const int64_t B = s.dim(0);
  const float eps = static_cast<float>(c.norm_eps);
  Tensor x = scratch(B).xn.rows(0, B);
  be_.rmsnorm(s, w.ln_f, eps, x);
  for (int m = 0; m < c.n_coda; ++m) block(w.coda[m], x, positions, caches, -(m + 1));
  be_.rmsnorm(x, w.ln_f, eps, x);
  linear(x, w.lm_head, logits);
}

}  // namespace huginn
