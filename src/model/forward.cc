// The Huginn forward pass over the Backend interface. T = tokens in this call, E = n_embd,
// I = MLP intermediate size, V = vocabulary. Reads top to bottom like the paper: prelude, the
// core block iterated with the adapter, coda.
#include "huginn/forward.h"

#include <cmath>
#include <random>

namespace huginn {

struct Runner::Scratch {
  int64_t T = 0;
  Tensor h, qkv, ctx, tmp, fc, act, cat, xn;  // [T, E], [T, 3E], [T, E], [T, E], [T, 2I], [T, I], [T, 2E], [T, E]
  Tensor e;                                    // [T, E]: prelude's output (see Runner::prelude)
};

Runner::Runner(const Model& model, Backend& backend) : model_(model), be_(backend) {}
Runner::~Runner() = default;

Runner::Scratch& Runner::scratch(int64_t T) {
  if (!scratch_ || scratch_->T < T) {
    const ModelConfig& c = model_.config();
    const int64_t E = c.n_embd, I = c.intermediate_size;
    auto s = std::make_unique<Scratch>();
    s->T = T;
    s->h = be_.alloc({T, E});
    s->qkv = be_.alloc({T, 3 * E});
    s->ctx = be_.alloc({T, E});
    s->tmp = be_.alloc({T, E});
    s->fc = be_.alloc({T, 2 * I});
    s->act = be_.alloc({T, I});
    s->cat = be_.alloc({T, 2 * E});
    s->xn = be_.alloc({T, E});
    s->e = be_.alloc({T, E});
    scratch_ = std::move(s);
  }
  return *scratch_;
}

void Runner::record(const std::string& name, const Tensor& t) {
  if (!trace_ || !trace_->wants(name)) return;
  Tensor host = Tensor::empty({t.dim(0), t.dim(1)});
  be_.download(t, host.f32());
  trace_->record(name, host);
}

// One sandwich block, in place on x [T, E]:
//   x = norm_2(attn(norm_1(x)) + x);  x = norm_4(mlp(norm_3(x)) + x)
void Runner::block(const BlockWeights& w, Tensor& x, std::span<const int32_t> positions,
                   KVCache* cache, int step_index, const std::string& tp) {
  const ModelConfig& c = model_.config();
  const int64_t T = x.dim(0), E = c.n_embd;
  Scratch& s = scratch(T);
  Tensor h = s.h.rows(0, T), qkv = s.qkv.rows(0, T), ctx = s.ctx.rows(0, T),
         tmp = s.tmp.rows(0, T), fc = s.fc.rows(0, T), act = s.act.rows(0, T);
  const bool tr = trace_ && !tp.empty();

  be_.rmsnorm(x, w.norm_1, static_cast<float>(c.norm_eps), h);
  if (tr) record(tp + ".norm_1.out", h);
  be_.matmul(h, w.wqkv, qkv);
  Tensor q = qkv.cols(0, E), k = qkv.cols(E, 2 * E), v = qkv.cols(2 * E, 3 * E);
  if (w.q_bias.defined()) {
    be_.add_bias(q, w.q_bias);
    be_.add_bias(k, w.k_bias);
  }
  if (tr) {
    record(tp + ".attn.q_biased", q);
    record(tp + ".attn.k_biased", k);
    record(tp + ".attn.v", v);
  }
  be_.rope(q, model_.weights().rope, positions, static_cast<int>(c.head_dim));
  be_.rope(k, model_.weights().rope, positions, static_cast<int>(c.head_dim));
  if (tr) {
    record(tp + ".attn.q_rope", q);
    record(tp + ".attn.k_rope", k);
  }
  Tensor keys = k, values = v;
  if (cache) cache->update(step_index, positions, k, v, &keys, &values);
  be_.attention(q, keys, values, static_cast<int>(c.n_heads), ctx);
  if (tr) record(tp + ".attn.context", ctx);
  be_.matmul(ctx, w.attn_proj, tmp);
  if (tr) record(tp + ".attn.out", tmp);
  be_.add(tmp, x, x);
  be_.rmsnorm(x, w.norm_2, static_cast<float>(c.norm_eps), x);
  if (tr) record(tp + ".norm_2.out", x);

  be_.rmsnorm(x, w.norm_3, static_cast<float>(c.norm_eps), h);
  be_.matmul(h, w.mlp_fc, fc);
  be_.swiglu(fc, act);
  be_.matmul(act, w.mlp_proj, tmp);
  if (tr) record(tp + ".mlp.out", tmp);
  be_.add(tmp, x, x);
  be_.rmsnorm(x, w.norm_4, static_cast<float>(c.norm_eps), x);
}

Tensor Runner::prelude(std::span<const int32_t> ids, std::span<const int32_t> positions,
                       KVCache* cache) {
  const ModelConfig& c = model_.config();
  const int64_t T = static_cast<int64_t>(ids.size());
  HUGINN_ASSERT(positions.size() == ids.size(), "prelude: one position per token");
  for (int64_t t = 0; t < T; ++t) {
    if (ids[t] < 0 || ids[t] >= c.vocab_size)
      throw Error("token id " + std::to_string(ids[t]) + " at index " + std::to_string(t) +
                  " is outside the vocabulary [0, " + std::to_string(c.vocab_size) + ")");
    if (positions[t] < 0 || positions[t] >= model_.max_positions())
      throw Error("position " + std::to_string(positions[t]) + " is beyond the context of " +
                  std::to_string(model_.max_positions()) + " positions");
  }
  Tensor e = scratch(T).e.rows(0, T);  // no allocation per token
  be_.embedding(model_.weights().wte, ids, static_cast<float>(std::sqrt(double(c.n_embd))), e);
  record("embed_scaled", e);
  for (int i = 0; i < c.n_prelude; ++i) {
    block(model_.weights().prelude[i], e, positions, cache, i,
          trace_ ? "prelude." + std::to_string(i) : std::string());
    if (trace_) record("prelude." + std::to_string(i) + ".out", e);
  }
  return e;
}

void Runner::core_step(Tensor& s, const Tensor& e, int t, std::span<const int32_t> positions,
                       KVCache* cache) {
  const ModelConfig& c = model_.config();
  const int64_t T = s.dim(0);
  Tensor cat = scratch(T).cat.rows(0, T);
  be_.concat_cols(s, e, cat);  // state first, then e
  be_.matmul(cat, model_.weights().adapter, s);
  const std::string tag = trace_ ? "state." + std::to_string(t + 1) : std::string();
  if (trace_) record(tag + ".adapter_out", s);
  for (int j = 0; j < c.n_core; ++j)
    block(model_.weights().core[j], s, positions, cache, c.n_prelude + t * c.n_core + j, "");
  if (trace_) record(tag, s);
}

void Runner::coda(const Tensor& s, std::span<const int32_t> positions, KVCache* cache,
                  Tensor& logits, Tensor* latent, bool last_only) {
  const ModelConfig& c = model_.config();
  const Weights& w = model_.weights();
  const int64_t T = s.dim(0);
  const float eps = static_cast<float>(c.norm_eps);
  Tensor x = scratch(T).xn.rows(0, T);
  be_.rmsnorm(s, w.ln_f, eps, x);
  if (latent) be_.copy(x, *latent);
  record("coda.in", x);
  for (int m = 0; m < c.n_coda; ++m) {
    block(w.coda[m], x, positions, cache, -(m + 1), "");
    record("coda." + std::to_string(m) + ".out", x);
  }
  be_.rmsnorm(x, w.ln_f, eps, x);
  record("final_norm.out", x);
  if (last_only) {
    Tensor last = x.rows(T - 1, T);
    be_.matmul(last, w.lm_head, logits);
  } else {
    be_.matmul(x, w.lm_head, logits);
  }
  record("logits", logits);
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
  const ModelConfig& c = model_.config();
  const int64_t T = static_cast<int64_t>(ids.size());
  if (T == 0) throw Error("forward: no tokens");
  if (num_steps < 0) throw Error("forward: steps must be >= 0, got " + std::to_string(num_steps));
  std::vector<int32_t> positions(static_cast<size_t>(T));
  for (int64_t t = 0; t < T; ++t) positions[t] = start_pos + static_cast<int32_t>(t);

  Tensor e = prelude(ids, positions, cache);
  Tensor s = be_.upload(make_initial_state(c, T, init));
  record("state.0", s);
  for (int t = 0; t < num_steps; ++t) core_step(s, e, t, positions, cache);

  ForwardOutput out;
  out.latent_raw = s;
  out.latent = be_.alloc({T, c.n_embd});
  out.logits = be_.alloc({T, c.vocab_size});
  coda(s, positions, cache, out.logits, &out.latent);
  return out;
}

}  // namespace huginn
