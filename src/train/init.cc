// Trainable weights: the reference initialisation, loading a checkpoint into owned F32 tensors,
// and writing one back in the HF layout. E = n_embd, I = intermediate, V = vocab, H·D = E.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numbers>
#include <random>

#include "huginn/data.h"
#include "huginn/error.h"
#include "huginn/safetensors.h"
#include "huginn/train.h"
#include "util/mapped_file.h"

namespace huginn {
namespace {

struct Spec {
  std::string name;
  std::vector<int64_t> shape;
};

// Every stored tensor of a checkpoint for `c`, in checkpoint order (freqs_cis excluded).
std::vector<Spec> specs(const ModelConfig& c) {
  const int64_t E = c.n_embd, I = c.intermediate_size, V = c.vocab_size;
  std::vector<Spec> out{{names::kWte, {V, E}}};
  auto block = [&](const char* part, int n) {
    for (int i = 0; i < n; ++i) {
      const std::string p = names::block(part, i);
      for (const char* nm : {".norm_1.weight", ".norm_2.weight", ".norm_3.weight", ".norm_4.weight"})
        out.push_back({p + nm, {E}});
      out.push_back({p + ".attn.Wqkv.weight", {3 * E, E}});
      if (c.qk_bias) out.push_back({p + ".attn.qk_bias", {2, 1, c.n_heads, c.head_dim}});
      out.push_back({p + ".attn.proj.weight", {E, E}});
      out.push_back({p + ".mlp.fc.weight", {2 * I, E}});
      out.push_back({p + ".mlp.proj.weight", {E, I}});
    }
  };
  block("prelude", c.n_prelude);
  out.push_back({names::kAdapter, {E, 2 * E}});
  block("core_block", c.n_core);
  block("coda", c.n_coda);
  out.push_back({names::kLnF, {E}});
  if (!c.tie_embeddings) out.push_back({names::kLmHead, {V, E}});
  return out;
}

bool ends_with(const std::string& s, const char* suffix) {
  const size_t n = std::char_traits<char>::length(suffix);
  return s.size() >= n && s.compare(s.size() - n, n, suffix) == 0;
}

// Truncated normal N(0, std²) cut at ±3 std by rejection, from a per-tensor seeded stream.
void trunc_normal(float* out, int64_t n, double std, uint64_t seed) {
  std::mt19937_64 rng(seed);
  auto uniform = [&] { return (static_cast<double>(rng() >> 11) + 0.5) * 0x1.0p-53; };
  for (int64_t i = 0; i < n;) {
    const double r = std::sqrt(-2.0 * std::log(uniform())), th = 2.0 * std::numbers::pi * uniform();
    for (double z : {r * std::cos(th), r * std::sin(th)})
      if (std::fabs(z) <= 3.0 && i < n) out[i++] = static_cast<float>(z * std);
  }
}

void fill_init(const ModelConfig& c, const std::string& name, Tensor& t, uint64_t seed) {
  const double std = c.init_std();
  const double out_std =
      std / std::sqrt(2.0 * (c.n_prelude + c.n_coda + c.n_core * c.mean_recurrence));
  float* d = t.f32();
  const int64_t n = t.numel();
  const uint64_t s = mix_seed(seed, fnv1a64(name.data(), name.size()));
  if (ends_with(name, "weight") && t.ndim() == 1) {
    std::fill(d, d + n, 1.0f);  // RMSNorm gains
  } else if (ends_with(name, "qk_bias")) {
    std::fill(d, d + n, 0.0f);
  } else if (ends_with(name, "attn.proj.weight") || ends_with(name, "mlp.proj.weight")) {
    trunc_normal(d, n, out_std, s);
  } else if (ends_with(name, "mlp.fc.weight")) {
    // rows [gate | up]: the released init_glu gives the second half the out-projection std
    trunc_normal(d, n / 2, std, s);
    trunc_normal(d + n / 2, n - n / 2, out_std, mix_seed(s, 1));
  } else {
    trunc_normal(d, n, std, s);  // wte, Wqkv, adapter, lm_head
  }
}

}  // namespace

void TrainableModel::build(ModelConfig c, std::map<std::string, Tensor> host) {
  for (auto& [name, t] : host) owned_.emplace(name, be_->upload(t));
  const int64_t E = c.n_embd;
  auto get = [&](const std::string& n) { return owned_.at(n); };
  auto block = [&](const char* part, int i) {
    const std::string p = names::block(part, i);
    BlockWeights b;
    b.norm_1 = get(p + ".norm_1.weight");
    b.norm_2 = get(p + ".norm_2.weight");
    b.norm_3 = get(p + ".norm_3.weight");
    b.norm_4 = get(p + ".norm_4.weight");
    b.wqkv = get(p + ".attn.Wqkv.weight");
    if (c.qk_bias) {
      b.qk_bias = get(p + ".attn.qk_bias").reshape({2, E});
      b.q_bias = b.qk_bias.rows(0, 1).reshape({E});
      b.k_bias = b.qk_bias.rows(1, 2).reshape({E});
    }
    b.attn_proj = get(p + ".attn.proj.weight");
    b.mlp_fc = get(p + ".mlp.fc.weight");
    b.mlp_proj = get(p + ".mlp.proj.weight");
    return b;
  };
  Weights w;
  w.wte = get(names::kWte);
  for (int i = 0; i < c.n_prelude; ++i) w.prelude.push_back(block("prelude", i));
  w.adapter = get(names::kAdapter);
  for (int i = 0; i < c.n_core; ++i) w.core.push_back(block("core_block", i));
  for (int i = 0; i < c.n_coda; ++i) w.coda.push_back(block("coda", i));
  w.ln_f = get(names::kLnF);
  w.lm_head = c.tie_embeddings ? w.wte : get(names::kLmHead);
  w.rope = be_->upload(rope_table(std::max<int64_t>(c.block_size, 4096), c.head_dim, c.rope_base));
  model_ = std::make_unique<Model>(std::move(c), std::move(w));
}

std::unique_ptr<TrainableModel> TrainableModel::init(const ModelConfig& config, uint64_t seed,
                                                     Backend& be) {
  std::map<std::string, Tensor> host;
  for (const Spec& s : specs(config)) {
    Tensor t = Tensor::empty(std::span<const int64_t>(s.shape));
    fill_init(config, s.name, t, seed);
    host.emplace(s.name, t);
  }
  std::unique_ptr<TrainableModel> m(new TrainableModel);
  m->be_ = &be;
  m->build(config, std::move(host));
  return m;
}

std::unique_ptr<TrainableModel> TrainableModel::init(const ModelConfig& config, uint64_t seed) {
  auto be = make_ref_backend();
  auto m = init(config, seed, *be);
  m->own_be_ = std::move(be);
  return m;
}

std::unique_ptr<TrainableModel> TrainableModel::load(const std::string& dir) {
  auto be = make_ref_backend();
  auto m = load(dir, *be);
  m->own_be_ = std::move(be);
  return m;
}

std::unique_ptr<TrainableModel> TrainableModel::load(const std::string& dir, Backend& be) {
  ModelConfig c = ModelConfig::from_file(dir + "/config.json");
  TensorStore store = TensorStore::open(dir);
  std::map<std::string, Tensor> owned;
  for (const Spec& s : specs(c)) {
    if (!store.contains(s.name))
      throw Error(store.source() + ": missing tensor '" + s.name + "'");
    const SafetensorsEntry& e = store.entry(s.name);
    if (e.shape != s.shape)
      throw Error(store.file_of(s.name) + ": tensor '" + s.name + "' has shape " +
                  Tensor::wrap(nullptr, std::span<const int64_t>(e.shape), DType::kF32).shape_str() +
                  ", expected " +
                  Tensor::wrap(nullptr, std::span<const int64_t>(s.shape), DType::kF32).shape_str());
    owned.emplace(s.name, store.as_f32(s.name).clone());
  }
  std::unique_ptr<TrainableModel> m(new TrainableModel);
  m->be_ = &be;
  m->build(std::move(c), std::move(owned));
  return m;
}

std::vector<std::pair<std::string, Tensor>> TrainableModel::live_tensors() const {
  const ModelConfig& c = config();
  std::vector<std::pair<std::string, Tensor>> out;
  for (const Spec& s : specs(c)) out.emplace_back(s.name, owned_.at(s.name));
  const int64_t half = c.head_dim / 2;
  Tensor freqs = model_->weights().rope.rows(0, c.block_size).reshape({1, c.block_size, 1, half, 2});
  out.emplace_back(names::kFreqs, freqs);
  return out;
}

std::vector<std::pair<std::string, Tensor>> TrainableModel::hf_tensors() const {
  std::vector<std::pair<std::string, Tensor>> out;
  for (auto& [name, t] : live_tensors()) {
    Tensor h = Tensor::empty(t.shape());
    be_->download(t, h.f32());
    out.emplace_back(name, h);
  }
  return out;
}

void write_init_checkpoint(const ModelConfig& c, uint64_t seed, const std::string& dir,
                           DType dtype, int shards,
                           const std::function<void(int64_t, int64_t)>& progress) {
  if (dtype != DType::kF32 && dtype != DType::kBF16)
    throw Error(std::string("checkpoint dtype ") + dtype_name(dtype) + ": expected F32 or BF16");
  const std::vector<Spec> all = specs(c);
  if (shards < 1 || shards > static_cast<int>(all.size()))
    throw Error("shards: " + std::to_string(shards) + ", expected 1 to " +
                std::to_string(all.size()) + " (the checkpoint's tensor count)");
  // Contiguous runs of tensors, cut where the running size passes each 1/shards of the total.
  std::vector<SafetensorsSpec> st;
  int64_t total = 0;
  for (const Spec& s : all) {
    st.push_back({s.name, dtype, s.shape});
    total += st.back().nbytes();
  }
  std::vector<std::vector<SafetensorsSpec>> parts(static_cast<size_t>(shards));
  int64_t acc = 0;
  size_t cur = 0;  // moves on by at most one shard per tensor, so none is left empty
  for (size_t i = 0; i < st.size(); ++i) {
    const int64_t left = static_cast<int64_t>(st.size() - i);
    const int64_t want = std::max<int64_t>(std::min<int64_t>(shards - 1, acc * shards / total),
                                           shards - left);
    if (static_cast<int64_t>(cur) < want && !parts[cur].empty()) ++cur;
    parts[cur].push_back(st[i]);
    acc += st[i].nbytes();
  }
  auto file_name = [&](int i) {
    if (shards == 1) return std::string("model.safetensors");
    char b[64];
    std::snprintf(b, sizeof b, "model-%05d-of-%05d.safetensors", i + 1, shards);
    return std::string(b);
  };
  const std::string cfg = c.to_json();
  write_file_atomic(dir + "/config.json", cfg.data(), cfg.size());
  int64_t done = 0;
  for (int i = 0; i < shards; ++i) {
    write_safetensors_streaming(
        dir + "/" + file_name(i), parts[static_cast<size_t>(i)], {{"format", "pt"}},
        [&](const SafetensorsSpec& spec, const SafetensorsAppend& append) {
          Tensor t = Tensor::empty(std::span<const int64_t>(spec.shape));
          fill_init(c, spec.name, t, seed);
          append_as(t, dtype, append);
          done += spec.nbytes();
          if (progress) progress(done, total);
        });
  }
  if (shards == 1) return;
  std::string idx = "{\"metadata\": {\"total_size\": " + std::to_string(total) + "}, \"weight_map\": {";
  bool first = true;
  for (int i = 0; i < shards; ++i)
    for (const SafetensorsSpec& s : parts[static_cast<size_t>(i)]) {
      idx += std::string(first ? "" : ", ") + "\"" + s.name + "\": \"" + file_name(i) + "\"";
      first = false;
    }
  idx += "}}\n";
  write_file_atomic(dir + "/model.safetensors.index.json", idx.data(), idx.size());
}

void TrainableModel::save_hf(const std::string& dir) const {
  const std::string cfg = config().to_json();
  write_file_atomic(dir + "/config.json", cfg.data(), cfg.size());
  SafetensorsWriter w;
  for (const auto& [name, t] : hf_tensors()) w.add(name, t);
  w.add_metadata("format", "pt");
  w.write(dir + "/model.safetensors");
}

}  // namespace huginn
