// The Huginn forward pass over the Backend interface, written once: the sandwich block and the
// prelude -> core -> coda stages over the rows of one or more sequences (huginn/forward.h, Rows),
// for the single-sequence runner, batched decode (forward_batch.h) and the training forward
// (train/backward.cc, which keeps the activations). R = rows of a pass, T = tokens of one
// sequence, E = n_embd, I = MLP intermediate size, V = vocabulary. Reads top to bottom like the
// paper: prelude, the core block iterated with the adapter, coda.
#include "huginn/forward.h"

#include <algorithm>
#include <cmath>
#include <random>

namespace huginn {

struct ModelPass::Scratch {
  int64_t R = 0;
  Tensor h, qkv, ctx, tmp, fc, act, cat, xn;  // [R, E], [R, 3E], [R, E], [R, E], [R, 2I], [R, I], [R, 2E], [R, E]
  Tensor e;                                    // [R, E]: Runner::prelude's output
  Tensor last;                                 // [R, E]: the head's rows when gathered
};

ModelPass::ModelPass(const Model& model, Backend& backend) : model_(model), be_(backend) {}
ModelPass::~ModelPass() = default;

ModelPass::Scratch& ModelPass::scratch(int64_t R) {
  if (!scratch_ || scratch_->R < R) {
    const ModelConfig& c = model_.config();
    const int64_t E = c.n_embd, I = c.intermediate_size;
    auto s = std::make_unique<Scratch>();
    s->R = R;
    s->h = be_.alloc({R, E});
    s->qkv = be_.alloc({R, 3 * E});
    s->ctx = be_.alloc({R, E});
    s->tmp = be_.alloc({R, E});
    s->fc = be_.alloc({R, 2 * I});
    s->act = be_.alloc({R, I});
    s->cat = be_.alloc({R, 2 * E});
    s->xn = be_.alloc({R, E});
    s->e = be_.alloc({R, E});
    s->last = be_.alloc({R, E});
    scratch_ = std::move(s);
  }
  return *scratch_;
}

Tensor ModelPass::scratch_e(int64_t R) { return scratch(R).e.rows(0, R); }

Tensor ModelPass::buffer(int slot, int64_t rows, int64_t cols) {
  if (static_cast<int>(buffers_.size()) <= slot) buffers_.resize(static_cast<size_t>(slot) + 1);
  Tensor& b = buffers_[static_cast<size_t>(slot)];
  const int64_t n = rows * cols;
  if (!b.defined() || b.numel() < n) b = be_.alloc({std::max<int64_t>(n, 1)});
  return b.rows(0, n).reshape({rows, cols});
}

// Inference: x0, u1, x1, u2 are the block's x itself (block() passes them), h1 = h3.
BlockActs ModelPass::scratch_acts(int64_t R) {
  Scratch& s = scratch(R);
  BlockActs a;
  a.h1 = a.h3 = s.h.rows(0, R);
  a.qkv = s.qkv.rows(0, R);
  a.ctx = s.ctx.rows(0, R);
  a.tmp = s.tmp.rows(0, R);
  a.fc = s.fc.rows(0, R);
  a.act = s.act.rows(0, R);
  return a;
}

void ModelPass::record(const std::string& name, const Tensor& t) {
  if (!trace_ || !trace_->wants(name)) return;
  Tensor host = Tensor::empty({t.dim(0), t.dim(1)});
  be_.download(t, host.f32());
  trace_->record(name, host);
}

void ModelPass::linear(const Tensor& x, const Tensor& w, Tensor& y) {
  const int64_t M = x.dim(0), N = w.dim(0), K = w.dim(1);
  const int64_t exact = be_.matmul_exact_rows();
  if (precision_ == MatmulPrecision::kBF16) {
    HUGINN_ASSERT(!row_exact_, "linear: BF16 precision is for training, not row-exact decoding");
    return be_.matmul_bf16(x, w, y);
  }
  if (!row_exact_ || M <= exact) return be_.matmul(x, w, y);
  // Column tiles need row views of w, which only F32 weights have; other formats stream the
  // whole matrix once per group of rows.
  const int64_t tile_bytes = be_.preferred_tile_bytes();
  const int64_t tile = w.dtype() == DType::kF32 && tile_bytes > 0
                           ? std::max<int64_t>(16, tile_bytes / std::max<int64_t>(1, K * 4))
                           : N;
  for (int64_t n0 = 0; n0 < N; n0 += tile) {
    const int64_t n1 = std::min(N, n0 + tile);
    const Tensor wt = tile >= N ? w : w.rows(n0, n1);
    for (int64_t m0 = 0; m0 < M; m0 += exact) {
      const int64_t m1 = std::min(M, m0 + exact);
      Tensor yt = tile >= N ? y.rows(m0, m1) : y.rows(m0, m1).cols(n0, n1);
      be_.matmul(x.rows(m0, m1), wt, yt);
    }
  }
}

// Causal attention of each sequence's rows against its own keys: the rows just computed, or its
// cache's whole window after they are written to the slot of `step_index`.
void ModelPass::attend(const Tensor& q, const Tensor& k, const Tensor& v, const Rows& rows,
                       int step_index, Tensor& ctx) {
  const ModelConfig& c = model_.config();
  const int heads = static_cast<int>(c.n_heads);
  // Core step indices move with each sequence's own depth (Rows::iterations).
  const bool own_depth = !rows.iterations.empty() && step_index >= c.n_prelude;
  for (int64_t s = 0; s < rows.sequences(); ++s) {
    const int64_t r0 = rows.starts[s], r1 = rows.starts[s + 1];
    Tensor qs = q.rows(r0, r1), ks = k.rows(r0, r1), vs = v.rows(r0, r1), cs = ctx.rows(r0, r1);
    Tensor keys = ks, values = vs;
    KVCache* cache = rows.caches.empty() ? nullptr : rows.caches[s];
    const int index = own_depth ? step_index + rows.iterations[s] * c.n_core : step_index;
    if (cache) cache->update(index, rows.positions.subspan(r0, r1 - r0), ks, vs, &keys, &values);
    be_.attention(qs, keys, values, heads, cs);
  }
}

// One sandwich block, in place on x [R, E]:
//   x = norm_2(attn(norm_1(x)) + x);  x = norm_4(mlp(norm_3(x)) + x)
// with the activations in `a` (scratch_acts for inference, a kept BlockActs for training).
void ModelPass::block(const BlockWeights& w, Tensor& x, const Rows& rows, int step_index,
                      const BlockActs& act_in, const std::string& tp) {
  const ModelConfig& c = model_.config();
  const int64_t E = c.n_embd;
  const float eps = static_cast<float>(c.norm_eps);
  const int D = static_cast<int>(c.head_dim);
  BlockActs a = act_in;
  if (!a.x0.defined()) a.x0 = a.u1 = a.x1 = a.u2 = x;  // inference: in place
  if (!a.tmp.defined()) a.tmp = x;                      // training: x is free once x0 holds it
  if (!a.x0.same_data(x)) be_.copy(x, a.x0);
  const bool tr = trace_ && !tp.empty();

  be_.rmsnorm(a.x0, w.norm_1, eps, a.h1);
  if (tr) record(tp + ".norm_1.out", a.h1);
  linear(a.h1, w.wqkv, a.qkv);
  Tensor q = a.qkv.cols(0, E), k = a.qkv.cols(E, 2 * E), v = a.qkv.cols(2 * E, 3 * E);
  if (w.q_bias.defined()) {
    be_.add_bias(q, w.q_bias);
    be_.add_bias(k, w.k_bias);
  }
  if (tr) {
    record(tp + ".attn.q_biased", q);
    record(tp + ".attn.k_biased", k);
    record(tp + ".attn.v", v);
  }
  be_.rope(q, weights().rope, rows.positions, D);
  be_.rope(k, weights().rope, rows.positions, D);
  if (tr) {
    record(tp + ".attn.q_rope", q);
    record(tp + ".attn.k_rope", k);
  }
  attend(q, k, v, rows, step_index, a.ctx);
  if (tr) record(tp + ".attn.context", a.ctx);
  linear(a.ctx, w.attn_proj, a.tmp);
  if (tr) record(tp + ".attn.out", a.tmp);
  be_.add(a.tmp, a.x0, a.u1);
  be_.rmsnorm(a.u1, w.norm_2, eps, a.x1);
  if (tr) record(tp + ".norm_2.out", a.x1);

  be_.rmsnorm(a.x1, w.norm_3, eps, a.h3);
  linear(a.h3, w.mlp_fc, a.fc);
  be_.swiglu(a.fc, a.act);
  linear(a.act, w.mlp_proj, a.tmp);
  if (tr) record(tp + ".mlp.out", a.tmp);
  be_.add(a.tmp, a.x1, a.u2);
  be_.rmsnorm(a.u2, w.norm_4, eps, x);
}

void ModelPass::check(std::span<const int32_t> ids, const Rows& rows) const {
  const ModelConfig& c = model_.config();
  HUGINN_ASSERT(rows.positions.size() == ids.size() && rows.sequences() >= 1 &&
                    rows.starts.back() == rows.count() &&
                    (rows.caches.empty() || static_cast<int64_t>(rows.caches.size()) == rows.sequences()),
                "ModelPass: one position per token, sequences covering the rows");
  const char* what = rows.sequences() == 1 ? " at index " : " of batch row ";
  for (size_t t = 0; t < ids.size(); ++t) {
    if (ids[t] < 0 || ids[t] >= c.vocab_size)
      throw Error("token id " + std::to_string(ids[t]) + what + std::to_string(t) +
                  " is outside the vocabulary [0, " + std::to_string(c.vocab_size) + ")");
    if (rows.positions[t] < 0 || rows.positions[t] >= model_.max_positions())
      throw Error("position " + std::to_string(rows.positions[t]) + " is beyond the context of " +
                  std::to_string(model_.max_positions()) + " positions");
  }
}

void ModelPass::prelude(std::span<const int32_t> ids, const Rows& rows, Tensor& e,
                        std::span<BlockActs> keep) {
  const ModelConfig& c = model_.config();
  check(ids, rows);
  be_.embedding(weights().wte, ids, static_cast<float>(std::sqrt(double(c.n_embd))), e);
  record("embed_scaled", e);
  const BlockActs inference = keep.empty() ? scratch_acts(rows.count()) : BlockActs{};
  for (int i = 0; i < c.n_prelude; ++i) {
    const std::string tp = trace_ ? "prelude." + std::to_string(i) : std::string();
    block(weights().prelude[i], e, rows, i, keep.empty() ? inference : keep[i], tp);
    if (trace_) record(tp + ".out", e);
  }
}

void ModelPass::core_step(Tensor& s, const Tensor& e, int t, const Rows& rows, StepActs* keep) {
  const ModelConfig& c = model_.config();
  const int64_t R = s.dim(0);
  HUGINN_ASSERT(rows.iterations.empty() || static_cast<int64_t>(rows.iterations.size()) == rows.sequences(),
                "ModelPass::core_step: one iteration offset per sequence");
  Tensor cat = keep ? keep->cat : scratch(R).cat.rows(0, R);
  be_.concat_cols(s, e, cat);  // state first, then e
  linear(cat, weights().adapter, s);
  const std::string tag = trace_ ? "state." + std::to_string(t + 1) : std::string();
  if (trace_) record(tag + ".adapter_out", s);
  const BlockActs inference = keep ? BlockActs{} : scratch_acts(R);
  for (int j = 0; j < c.n_core; ++j)
    block(weights().core[j], s, rows, c.n_prelude + t * c.n_core + j,
          keep ? keep->blocks[j] : inference, "");
  if (trace_) record(tag, s);
}

void ModelPass::coda(const Tensor& s, const Rows& rows, Tensor& logits, Tensor* latent,
                     bool last_only, CodaActs* keep) {
  const ModelConfig& c = model_.config();
  const Weights& w = weights();
  const int64_t R = s.dim(0), S = rows.sequences();
  const float eps = static_cast<float>(c.norm_eps);
  Tensor x = keep ? keep->xc : scratch(R).xn.rows(0, R);
  be_.rmsnorm(s, w.ln_f, eps, x);
  if (latent) be_.copy(x, *latent);
  record("coda.in", x);
  const BlockActs inference = keep ? BlockActs{} : scratch_acts(R);
  for (int m = 0; m < c.n_coda; ++m) {
    block(w.coda[m], x, rows, -(m + 1), keep ? keep->blocks[m] : inference, "");
    record("coda." + std::to_string(m) + ".out", x);
  }
  Tensor xf = keep ? keep->xf : x;
  be_.rmsnorm(x, w.ln_f, eps, xf);
  record("final_norm.out", xf);
  Tensor head = xf;
  if (last_only && R > S) {  // the last row of each sequence
    if (S == 1) {
      head = xf.rows(R - 1, R);
    } else {
      head = scratch(R).last.rows(0, S);
      for (int64_t q = 0; q < S; ++q) {
        Tensor dst = head.rows(q, q + 1);
        be_.copy(xf.rows(rows.starts[q + 1] - 1, rows.starts[q + 1]), dst);
      }
    }
  }
  linear(head, w.lm_head, logits);
  record("logits", logits);
}

// ---- the single-sequence runner ------------------------------------------------------------

Runner::Runner(const Model& model, Backend& backend) : pass_(model, backend) {}
Runner::~Runner() = default;

Rows Runner::one(std::span<const int32_t> positions, KVCache*& cache) {
  starts_[1] = static_cast<int64_t>(positions.size());
  return Rows{positions, starts_, cache ? std::span<KVCache* const>(&cache, 1)
                                        : std::span<KVCache* const>(), {}};
}

Tensor Runner::prelude(std::span<const int32_t> ids, std::span<const int32_t> positions,
                       KVCache* cache) {
  Tensor e = pass_.scratch_e(static_cast<int64_t>(ids.size()));  // no allocation per token
  pass_.prelude(ids, one(positions, cache), e);
  return e;
}

void Runner::core_step(Tensor& s, const Tensor& e, int t, std::span<const int32_t> positions,
                       KVCache* cache) {
  pass_.core_step(s, e, t, one(positions, cache));
}

void Runner::coda(const Tensor& s, std::span<const int32_t> positions, KVCache* cache,
                  Tensor& logits, Tensor* latent, bool last_only) {
  pass_.coda(s, one(positions, cache), logits, latent, last_only);
}

Tensor make_initial_state(const ModelConfig& c, int64_t T, const InitState& init) {
  const int64_t E = c.n_embd;
  if (init.given.defined()) {
    const Tensor& g = init.given;
    const int64_t n = g.numel();
    if (g.dtype() != DType::kF32 || n != T * E || g.dim(-1) != E)
      throw Error("initial state has shape " + g.shape_str() + " " + dtype_name(g.dtype()) +
                  ", expected F32 [" + std::to_string(T) + ", " + std::to_string(E) + "]");
    return g.clone().reshape({T, E});
  }
  Tensor s = Tensor::empty({T, E});
  if (init.scale == 0.0) return s;
  // Truncated normal (cut at ±3 std, by rejection), then scaled by sqrt(E). Box–Muller on a
  // 64-bit Mersenne Twister keeps the stream identical across standard libraries.
  const double std_ = c.init_std() * init.scale, bound = 3.0 * std_, scale = std::sqrt(double(E));
  std::mt19937_64 rng(init.seed);
  auto uniform = [&] { return (static_cast<double>(rng() >> 11) + 0.5) * 0x1.0p-53; };
  float* p = s.f32();
  for (int64_t i = 0; i < T * E; ++i) {
    double z;
    do {
      z = std::sqrt(-2.0 * std::log(uniform())) * std::cos(2.0 * M_PI * uniform()) * std_;
    } while (std::fabs(z) > bound);
    p[i] = static_cast<float>(z * scale);
  }
  return s;
}

ForwardOutput Runner::forward(std::span<const int32_t> ids, int num_steps, const InitState& init,
                              KVCache* cache, int32_t start_pos) {
  const ModelConfig& c = pass_.model().config();
  Backend& be = pass_.backend();
  const int64_t T = static_cast<int64_t>(ids.size());
  if (T == 0) throw Error("forward: no tokens");
  if (num_steps < 0) throw Error("forward: steps must be >= 0, got " + std::to_string(num_steps));
  std::vector<int32_t> positions(static_cast<size_t>(T));
  for (int64_t t = 0; t < T; ++t) positions[t] = start_pos + static_cast<int32_t>(t);

  Tensor e = prelude(ids, positions, cache);
  Tensor s = be.upload(make_initial_state(c, T, init));
  pass_.record("state.0", s);
  for (int t = 0; t < num_steps; ++t) core_step(s, e, t, positions, cache);

  ForwardOutput out;
  out.latent_raw = s;
  out.latent = be.alloc({T, c.n_embd});
  out.logits = be.alloc({T, c.vocab_size});
  coda(s, positions, cache, out.logits, &out.latent);
  return out;
}

}  // namespace huginn
