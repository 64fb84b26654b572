// Parameter gradients (Grads) and the named parameter list the optimizer and `huginn grad` walk.
// Names are the HF checkpoint's (huginn/model.h names::), in checkpoint order.
#include "huginn/backward.h"

namespace huginn {
namespace {

BlockWeights block_zeros(const BlockWeights& w, Backend& be) {
  auto like = [&](const Tensor& t) {
    return t.ndim() == 1 ? be.alloc({t.dim(0)}) : be.alloc({t.dim(0), t.dim(1)});
  };
  BlockWeights g;
  g.norm_1 = like(w.norm_1);
  g.norm_2 = like(w.norm_2);
  g.norm_3 = like(w.norm_3);
  g.norm_4 = like(w.norm_4);
  g.wqkv = like(w.wqkv);
  if (w.qk_bias.defined()) {
    // One [2, E] buffer, as the checkpoint's qk_bias [2, 1, H, D]; q and k are its two rows.
    const int64_t E = w.qk_bias.dim(1);
    g.qk_bias = be.alloc({2, E});
    g.q_bias = g.qk_bias.rows(0, 1).reshape({E});
    g.k_bias = g.qk_bias.rows(1, 2).reshape({E});
  }
  g.attn_proj = like(w.attn_proj);
  g.mlp_fc = like(w.mlp_fc);
  g.mlp_proj = like(w.mlp_proj);
  return g;
}

bool tied(const Weights& w) { return w.lm_head.same_data(w.wte); }

// qk_bias as the checkpoint's [2, 1, H, D].
Tensor qk_bias_view(const BlockWeights& b, const ModelConfig& c) {
  return b.qk_bias.reshape({2, 1, c.n_heads, c.head_dim});
}

void add_block(std::vector<NamedParam>& out, const std::string& p, const BlockWeights& w,
               BlockWeights& g, const ModelConfig& c) {
  auto add = [&](const std::string& name, const Tensor& v, const Tensor& gr, bool decay) {
    out.push_back({name, v, gr, decay});
  };
  add(p + ".norm_1.weight", w.norm_1, g.norm_1, false);
  if (w.qk_bias.defined()) add(p + ".attn.qk_bias", qk_bias_view(w, c), qk_bias_view(g, c), false);
  add(p + ".attn.Wqkv.weight", w.wqkv, g.wqkv, true);
  add(p + ".attn.proj.weight", w.attn_proj, g.attn_proj, true);
  add(p + ".norm_2.weight", w.norm_2, g.norm_2, false);
  add(p + ".mlp.fc.weight", w.mlp_fc, g.mlp_fc, true);
  add(p + ".mlp.proj.weight", w.mlp_proj, g.mlp_proj, true);
  add(p + ".norm_3.weight", w.norm_3, g.norm_3, false);
  add(p + ".norm_4.weight", w.norm_4, g.norm_4, false);
}

}  // namespace

Grads Grads::zeros_like(const Model& model, Backend& be) {
  const Weights& w = model.weights();
  Grads g;
  g.w.wte = be.alloc({w.wte.dim(0), w.wte.dim(1)});
  g.w.adapter = be.alloc({w.adapter.dim(0), w.adapter.dim(1)});
  g.w.ln_f = be.alloc({w.ln_f.dim(0)});
  if (!tied(w)) g.w.lm_head = be.alloc({w.lm_head.dim(0), w.lm_head.dim(1)});
  for (const auto& b : w.prelude) g.w.prelude.push_back(block_zeros(b, be));
  for (const auto& b : w.core) g.w.core.push_back(block_zeros(b, be));
  for (const auto& b : w.coda) g.w.coda.push_back(block_zeros(b, be));
  return g;
}

void Grads::zero(Backend& be) {
  auto clear = [&](Tensor& t) {
    if (t.defined()) be.fill(t, 0.0f);
  };
  auto clear_block = [&](BlockWeights& b) {
    for (Tensor* t : {&b.norm_1, &b.norm_2, &b.norm_3, &b.norm_4, &b.wqkv, &b.qk_bias,
                      &b.attn_proj, &b.mlp_fc, &b.mlp_proj})
      clear(*t);
  };
  clear(w.wte);
  clear(w.adapter);
  clear(w.ln_f);
  clear(w.lm_head);
  for (auto& b : w.prelude) clear_block(b);
  for (auto& b : w.core) clear_block(b);
  for (auto& b : w.coda) clear_block(b);
}

// `value` views the model's weight memory (the optimizer updates it in place, so the weights must
// be writable: a copy, not a read-only mapping).
std::vector<NamedParam> named_params(const Model& model, Grads& grads) {
  const Weights& w = model.weights();
  const ModelConfig& c = model.config();
  std::vector<NamedParam> out;
  out.push_back({names::kWte, w.wte, grads.w.wte, false});
  for (int i = 0; i < c.n_prelude; ++i)
    add_block(out, names::block("prelude", i), w.prelude[i], grads.w.prelude[i], c);
  out.push_back({names::kAdapter, w.adapter, grads.w.adapter, true});
  for (int i = 0; i < c.n_core; ++i)
    add_block(out, names::block("core_block", i), w.core[i], grads.w.core[i], c);
  for (int i = 0; i < c.n_coda; ++i)
    add_block(out, names::block("coda", i), w.coda[i], grads.w.coda[i], c);
  out.push_back({names::kLnF, w.ln_f, grads.w.ln_f, false});
  if (!tied(w)) out.push_back({names::kLmHead, w.lm_head, grads.w.lm_head, true});
  return out;
}

}  // namespace huginn
