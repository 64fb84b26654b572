// Loading a Huginn checkpoint: config.json + safetensors (single or sharded), names as in the
// HF checkpoint, every tensor checked for presence and shape before use.
#include "huginn/model.h"

#include <cmath>
#include <set>

#include "huginn/log.h"

namespace huginn {

std::string names::block(const char* part, int i) {
  return std::string("transformer.") + part + "." + std::to_string(i);
}

Tensor rope_table(int64_t n_positions, int64_t head_dim, double base) {
  const int64_t half = head_dim / 2;
  Tensor t = Tensor::empty({n_positions, half, 2});
  float* p = t.f32();
  // float32 throughout, as the reference: inv = 1 / base^(arange(0, D, 2) / D); theta = p * inv.
  std::vector<float> inv(static_cast<size_t>(half));
  for (int64_t i = 0; i < half; ++i) {
    const float expo = static_cast<float>(2 * i) / static_cast<float>(head_dim);
    inv[i] = 1.0f / powf(static_cast<float>(base), expo);
  }
  for (int64_t pos = 0; pos < n_positions; ++pos) {
    for (int64_t i = 0; i < half; ++i) {
      const float theta = static_cast<float>(pos) * inv[i];
      p[(pos * half + i) * 2] = cosf(theta);
      p[(pos * half + i) * 2 + 1] = sinf(theta);
    }
  }
  return t;
}

namespace {

std::string shape_str(std::span<const int64_t> s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

// Fetches tensors by name, checking shape, and remembers which names were used.
class Loader {
 public:
  Loader(const TensorStore& store, Backend& be, std::string dir)
      : store_(store), be_(be), dir_(std::move(dir)) {}

  Tensor get(const std::string& name, std::initializer_list<int64_t> shape) {
    if (!store_.contains(name))
      throw Error(dir_ + ": missing tensor '" + name + "' (expected shape " +
                  shape_str(std::span<const int64_t>(shape.begin(), shape.size())) + ")");
    const SafetensorsEntry& e = store_.entry(name);
    if (!std::equal(e.shape.begin(), e.shape.end(), shape.begin(), shape.end()))
      throw Error(store_.file_of(name) + ": tensor '" + name + "' has shape " +
                  shape_str(e.shape) + ", expected " +
                  shape_str(std::span<const int64_t>(shape.begin(), shape.size())));
    used_.insert(name);
    return be_.upload(store_.as_f32(name).reshape(shape));
  }
  bool has(const std::string& name) const { return store_.contains(name); }
  void warn_unused() const {
    for (const auto& n : store_.names())
      if (!used_.count(n)) HUGINN_LOG_WARN("%s: unexpected tensor '%s' ignored", dir_.c_str(), n.c_str());
  }
  void mark_used(const std::string& name) { used_.insert(name); }

 private:
  const TensorStore& store_;
  Backend& be_;
  std::string dir_;
  std::set<std::string> used_;
};

BlockWeights load_block(Loader& ld, const ModelConfig& c, const std::string& prefix) {
  const int64_t E = c.n_embd, I = c.intermediate_size;
  BlockWeights w;
  w.norm_1 = ld.get(prefix + ".norm_1.weight", {E});
  w.norm_2 = ld.get(prefix + ".norm_2.weight", {E});
  w.norm_3 = ld.get(prefix + ".norm_3.weight", {E});
  w.norm_4 = ld.get(prefix + ".norm_4.weight", {E});
  w.wqkv = ld.get(prefix + ".attn.Wqkv.weight", {3 * E, E});
  if (c.qk_bias) {
    Tensor b = ld.get(prefix + ".attn.qk_bias", {2, 1, c.n_heads, c.head_dim}).reshape({2, E});
    w.q_bias = b.rows(0, 1).reshape({E});
    w.k_bias = b.rows(1, 2).reshape({E});
  }
  w.attn_proj = ld.get(prefix + ".attn.proj.weight", {E, E});
  w.mlp_fc = ld.get(prefix + ".mlp.fc.weight", {2 * I, E});
  w.mlp_proj = ld.get(prefix + ".mlp.proj.weight", {E, I});
  return w;
}

int64_t block_params(const ModelConfig& c) {
  const int64_t E = c.n_embd, I = c.intermediate_size;
  return 4 * E + 3 * E * E + (c.qk_bias ? 2 * E : 0) + E * E + 2 * I * E + E * I;
}

}  // namespace

Model::Model(ModelConfig config, Weights weights, std::shared_ptr<void> keepalive)
    : config_(std::move(config)), weights_(std::move(weights)), keepalive_(std::move(keepalive)) {}

std::shared_ptr<const Model> Model::load(const std::string& dir, Backend& be,
                                         const LoadOptions& opt) {
  ModelConfig c = ModelConfig::from_file(dir + "/config.json");
  TensorStore store = TensorStore::open(dir);
  Loader ld(store, be, dir);
  const int64_t E = c.n_embd, V = c.vocab_size;

  Weights w;
  w.wte = ld.get(names::kWte, {V, E});
  for (int i = 0; i < c.n_prelude; ++i) w.prelude.push_back(load_block(ld, c, names::block("prelude", i)));
  w.adapter = ld.get(names::kAdapter, {E, 2 * E});
  for (int i = 0; i < c.n_core; ++i) w.core.push_back(load_block(ld, c, names::block("core_block", i)));
  for (int i = 0; i < c.n_coda; ++i) w.coda.push_back(load_block(ld, c, names::block("coda", i)));
  w.ln_f = ld.get(names::kLnF, {E});
  if (ld.has(names::kLmHead)) {
    w.lm_head = ld.get(names::kLmHead, {V, E});
  } else if (c.tie_embeddings) {
    w.lm_head = w.wte;  // tied: the unscaled embedding is the output head
  } else {
    throw Error(dir + ": missing tensor 'lm_head.weight' (config has tie_embeddings: false)");
  }

  // RoPE: our own float32 table, with the stored freqs_cis values where the checkpoint has them
  // (the released code uses the stored table when it loads a checkpoint).
  const int64_t half = c.head_dim / 2;
  int64_t n_pos = opt.max_positions > 0 ? opt.max_positions : std::max<int64_t>(c.block_size, 4096);
  Tensor rope = rope_table(n_pos, c.head_dim, c.rope_base);
  if (ld.has(names::kFreqs)) {
    const SafetensorsEntry& e = store.entry(names::kFreqs);
    if (e.shape.size() != 5 || e.shape[0] != 1 || e.shape[2] != 1 || e.shape[3] != half ||
        e.shape[4] != 2)
      throw Error(store.file_of(names::kFreqs) + ": tensor 'freqs_cis' has shape " +
                  shape_str(e.shape) + ", expected [1, block_size, 1, " + std::to_string(half) +
                  ", 2]");
    ld.mark_used(names::kFreqs);
    Tensor stored = store.as_f32(names::kFreqs);
    const int64_t n = std::min<int64_t>(e.shape[1], n_pos);
    std::copy(stored.f32(), stored.f32() + n * half * 2, rope.f32());
  }
  w.rope = be.upload(rope);
  ld.warn_unused();
  if (opt.verbose) HUGINN_LOG_INFO("loaded %s (%s)", dir.c_str(), c.name.c_str());
  return std::make_shared<const Model>(std::move(c), std::move(w));
}

ParamCounts Model::param_counts() const {
  const ModelConfig& c = config_;
  const int64_t E = c.n_embd, V = c.vocab_size, bp = block_params(c);
  ParamCounts p;
  p.embedding = V * E;
  p.prelude = c.n_prelude * bp;
  p.adapter = 2 * E * E;
  p.core = c.n_core * bp;
  p.coda = c.n_coda * bp + E;  // + ln_f
  p.head = weights_.lm_head.raw() == weights_.wte.raw() ? 0 : V * E;
  return p;
}

}  // namespace huginn
