// huginn widen's construction (see huginn/widen.h and docs/widen.md): every target tensor is a
// function of one source tensor, produced row by row (Row below) and streamed to the file in
// chunks of rows, so the target is never held whole.
#include "huginn/widen.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>
#include <memory>
#include <vector>

#include "huginn/error.h"
#include "huginn/model.h"
#include "huginn/safetensors.h"
#include "util/mapped_file.h"

namespace huginn {
namespace {

void require_at_least(const char* field, int64_t target, int64_t source) {
  if (target < source)
    throw Error("widen: target " + std::string(field) + " " + std::to_string(target) +
                " is smaller than the source's " + std::to_string(source) +
                " (a widened model only grows)");
}

// The source model's tensors as F32 host copies, read once each on demand (the source is the
// small model; the target is what is streamed).
class Source {
 public:
  explicit Source(const std::string& dir) : store_(TensorStore::open(dir)) {}
  bool contains(const std::string& n) const { return store_.contains(n); }
  const Tensor& get(const std::string& name) {
    auto it = cache_.find(name);
    if (it != cache_.end()) return it->second;
    Tensor raw = store_.raw(name);
    if (!is_float(raw.dtype()))
      throw Error(store_.file_of(name) + ": tensor '" + name + "' is " + dtype_name(raw.dtype()) +
                  "; widen reads float checkpoints (convert a Q8 / Q4 one's original instead)");
    Tensor f = Tensor::empty(std::span<const int64_t>(store_.entry(name).shape));
    convert_to_f32(raw.raw(), raw.dtype(), f.f32(), raw.numel());
    return cache_.emplace(name, std::move(f)).first->second;
  }

 private:
  TensorStore store_;
  std::map<std::string, Tensor> cache_;
};

// The index maps between the source and target shapes.
struct Maps {
  int64_t E, E2, k;         // residual widths, copies
  double c;                 // kE / E': the padded stream's mean square over the source's
  int64_t H, H2, D, D2, t;  // heads, head dims, t = D2 / D
  int64_t I, I2;

  Maps(const ModelConfig& s, const ModelConfig& g)
      : E(s.n_embd),
        E2(g.n_embd),
        k(g.n_embd / s.n_embd),
        c(double(k * s.n_embd) / double(g.n_embd)),
        H(s.n_heads),
        H2(g.n_heads),
        D(s.head_dim),
        D2(g.head_dim),
        t(g.head_dim / s.head_dim),
        I(s.intermediate_size),
        I2(g.intermediate_size) {}

  // The source residual coordinate of target coordinate j, or -1 for a zero coordinate.
  int64_t res(int64_t j) const { return j < k * E ? j % E : -1; }
  // Copies of source head h among the target's heads (h' = h mod H), of neuron n likewise.
  int64_t head_copies(int64_t h) const { return H2 / H + (h < H2 % H ? 1 : 0); }
  int64_t neuron_copies(int64_t n) const { return I2 / I + (n < I2 % I ? 1 : 0); }
  // The source q/k feature of target feature f of a head (interleaved RoPE pairs: pair i of the
  // source at pair t·i, which has the same frequency), or -1 for a zero feature.
  int64_t qk_feature(int64_t f) const {
    const int64_t pair = f / 2;
    return pair % t == 0 ? 2 * (pair / t) + f % 2 : -1;
  }
};

// One target tensor: its shape and how to compute row r (cols floats) from the source.
struct Recipe {
  std::vector<int64_t> shape;
  std::function<void(int64_t r, float* out)> row;
};

// Target row of a matrix whose columns read the residual stream: copy j of source column j' / k.
void residual_cols(const Maps& m, const float* src, float scale, float* out) {
  for (int64_t j = 0; j < m.E2; ++j) {
    const int64_t s = m.res(j);
    out[j] = s < 0 ? 0.0f : src[s] * scale / float(m.k);
  }
}

struct Layer {
  std::string src;  // the source layer this target layer copies
  bool extra = false, last_real = false, last_extra = false;
};

// Target layers of one block: the source's, then the extra ones (see huginn/widen.h).
std::vector<Layer> plan_block(const char* part, int n_src, int n_dst) {
  std::vector<Layer> out;
  for (int i = 0; i < n_dst; ++i) {
    Layer l;
    l.src = names::block(part, std::min(i, n_src - 1));
    l.extra = i >= n_src;
    l.last_real = n_dst > n_src && i == n_src - 1;
    l.last_extra = n_dst > n_src && i == n_dst - 1;
    out.push_back(l);
  }
  return out;
}

// The recipes of one target layer's tensors, keyed by their names.
void layer_recipes(const Maps& m, Source& src, const Layer& l, const std::string& dst,
                   std::map<std::string, Recipe>& out) {
  const float sc = float(std::sqrt(m.c));
  // Norms: the source weight tiled (pad coordinates see zeros; any weight is exact there), or
  // ones where the layer's norm_4 moved to the last extra layer, or ones for an extra norm_2/4.
  for (int n = 1; n <= 4; ++n) {
    const std::string name = "norm_" + std::to_string(n) + ".weight";
    const bool ones = (n == 4 && l.last_real) || (l.extra && (n == 2 || (n == 4 && !l.last_extra)));
    const Tensor w = src.get(l.src + "." + name);
    out[dst + "." + name] = {{m.E2}, [m, w, ones, sc](int64_t, float* o) {
                               for (int64_t j = 0; j < m.E2; ++j)
                                 o[j] = sc * (ones ? 1.0f : w.f32()[j % m.E]);
                             }};
  }
  const Tensor wqkv = src.get(l.src + ".attn.Wqkv.weight");
  const float qscale = float(std::sqrt(double(m.t)));
  out[dst + ".attn.Wqkv.weight"] = {{3 * m.E2, m.E2}, [m, wqkv, qscale](int64_t r, float* o) {
                                      const int64_t part = r / m.E2, h2 = (r % m.E2) / m.D2,
                                                    f = r % m.D2;
                                      const int64_t fs = part == 2 ? f % m.D : m.qk_feature(f);
                                      if (fs < 0) return std::fill(o, o + m.E2, 0.0f);
                                      residual_cols(m, wqkv.row(part * m.E + (h2 % m.H) * m.D + fs),
                                                    part == 0 ? qscale : 1.0f, o);
                                    }};
  const std::string bias = l.src + ".attn.qk_bias";
  if (src.contains(bias)) {
    const Tensor b = src.get(bias);  // [2, 1, H, D]
    out[dst + ".attn.qk_bias"] = {{2, 1, m.H2, m.D2}, [m, b, qscale](int64_t r, float* o) {
                                    const int64_t part = r / m.H2, h = (r % m.H2) % m.H;
                                    for (int64_t f = 0; f < m.D2; ++f) {
                                      const int64_t fs = m.qk_feature(f);
                                      o[f] = fs < 0 ? 0.0f
                                                    : b.f32()[(part * m.H + h) * m.D + fs] *
                                                          (part == 0 ? qscale : 1.0f);
                                    }
                                  }};
  }
  const Tensor proj = src.get(l.src + ".attn.proj.weight");
  const bool zero = l.extra;
  out[dst + ".attn.proj.weight"] = {{m.E2, m.E2}, [m, proj, zero](int64_t r, float* o) {
                                      const int64_t s = m.res(r);
                                      if (zero || s < 0) return std::fill(o, o + m.E2, 0.0f);
                                      for (int64_t col = 0; col < m.E2; ++col) {
                                        const int64_t h = (col / m.D2) % m.H;
                                        o[col] = proj.row(s)[h * m.D + (col % m.D2) % m.D] /
                                                 float(m.head_copies(h) * m.t);
                                      }
                                    }};
  const Tensor fc = src.get(l.src + ".mlp.fc.weight");  // [2I, E]: two halves of I rows
  out[dst + ".mlp.fc.weight"] = {{2 * m.I2, m.E2}, [m, fc](int64_t r, float* o) {
                                   const int64_t half = r / m.I2, n = (r % m.I2) % m.I;
                                   residual_cols(m, fc.row(half * m.I + n), 1.0f, o);
                                 }};
  const Tensor mp = src.get(l.src + ".mlp.proj.weight");  // [E, I]
  out[dst + ".mlp.proj.weight"] = {{m.E2, m.I2}, [m, mp, zero](int64_t r, float* o) {
                                     const int64_t s = m.res(r);
                                     if (zero || s < 0) return std::fill(o, o + m.I2, 0.0f);
                                     for (int64_t n = 0; n < m.I2; ++n)
                                       o[n] = mp.row(s)[n % m.I] / float(m.neuron_copies(n % m.I));
                                   }};
}

}  // namespace

ModelConfig widened_config(const ModelConfig& s, const ModelConfig& g) {
  require_at_least("n_embd", g.n_embd, s.n_embd);
  require_at_least("num_attention_heads", g.n_heads, s.n_heads);
  require_at_least("head_dim (n_embd / num_attention_heads)", g.head_dim, s.head_dim);
  require_at_least("intermediate_size", g.intermediate_size, s.intermediate_size);
  require_at_least("n_layers_in_prelude", g.n_prelude, s.n_prelude);
  require_at_least("n_layers_in_recurrent_block", g.n_core, s.n_core);
  require_at_least("n_layers_in_coda", g.n_coda, s.n_coda);
  require_at_least("block_size", g.block_size, s.block_size);
  if (g.head_dim % s.head_dim != 0)
    throw Error("widen: target head_dim " + std::to_string(g.head_dim) + " (n_embd " +
                std::to_string(g.n_embd) + " / " + std::to_string(g.n_heads) +
                " heads) is not a multiple of the source's " + std::to_string(s.head_dim) +
                ": RoPE pair i of the source needs a target pair of the same frequency");
  if (g.vocab_size != s.vocab_size)
    throw Error("widen: target vocab_size " + std::to_string(g.vocab_size) +
                " differs from the source's " + std::to_string(s.vocab_size) +
                ": a widened model keeps the source's vocabulary (a new token's logit cannot be "
                "kept below every real one by a linear map)");
  ModelConfig w = s;
  w.n_embd = g.n_embd;
  w.n_heads = g.n_heads;
  w.head_dim = g.head_dim;
  w.intermediate_size = g.intermediate_size;
  w.n_prelude = g.n_prelude;
  w.n_core = g.n_core;
  w.n_coda = g.n_coda;
  w.block_size = g.block_size;
  w.tie_embeddings = false;  // the embedding and the LM head scale differently
  const Maps m(s, w);
  w.norm_eps = s.norm_eps * m.c;
  return w;
}

WidenStats write_widened(const std::string& source_dir, const ModelConfig& shape,
                         const std::string& dir, DType dtype,
                         const std::function<void(int64_t, int64_t)>& progress) {
  namespace fs = std::filesystem;
  if (dtype != DType::kF32 && dtype != DType::kBF16)
    throw Error(std::string("widen: dtype ") + dtype_name(dtype) + ": expected f32 or bf16");
  const ModelConfig s = ModelConfig::from_file((fs::path(source_dir) / "config.json").string());
  const ModelConfig g = widened_config(s, shape);
  Source src(source_dir);
  const Maps m(s, g);
  std::map<std::string, Recipe> recipes;
  const float emb = float(std::sqrt(double(m.E) / double(m.E2)));
  const Tensor wte = src.get(names::kWte);
  recipes[names::kWte] = {{s.vocab_size, m.E2}, [m, wte, emb](int64_t r, float* o) {
                            for (int64_t j = 0; j < m.E2; ++j) {
                              const int64_t s = m.res(j);
                              o[j] = s < 0 ? 0.0f : wte.row(r)[s] * emb;
                            }
                          }};
  const Tensor head = s.tie_embeddings ? wte : src.get(names::kLmHead);
  recipes[names::kLmHead] = {{s.vocab_size, m.E2}, [m, head](int64_t r, float* o) {
                               residual_cols(m, head.row(r), 1.0f, o);
                             }};
  const Tensor lnf = src.get(names::kLnF);
  const float sc = float(std::sqrt(m.c));
  recipes[names::kLnF] = {{m.E2}, [m, lnf, sc](int64_t, float* o) {
                            for (int64_t j = 0; j < m.E2; ++j) o[j] = sc * lnf.f32()[j % m.E];
                          }};
  const Tensor ad = src.get(names::kAdapter);  // [E, 2E]: state columns, then embedding columns
  recipes[names::kAdapter] = {{m.E2, 2 * m.E2}, [m, ad](int64_t r, float* o) {
                                const int64_t s = m.res(r);
                                if (s < 0) return std::fill(o, o + 2 * m.E2, 0.0f);
                                for (int64_t j = 0; j < m.E2; ++j)  // copy 0 of the state only
                                  o[j] = j < m.E ? ad.row(s)[j] : 0.0f;
                                residual_cols(m, ad.row(s) + m.E, 1.0f, o + m.E2);
                              }};
  const struct {
    const char* part;
    int n_src, n_dst;
  } blocks[] = {{"prelude", s.n_prelude, g.n_prelude},
                {"core_block", s.n_core, g.n_core},
                {"coda", s.n_coda, g.n_coda}};
  for (const auto& b : blocks) {
    const auto layers = plan_block(b.part, b.n_src, b.n_dst);
    for (size_t i = 0; i < layers.size(); ++i)
      layer_recipes(m, src, layers[i], names::block(b.part, int(i)), recipes);
  }
  std::vector<SafetensorsSpec> specs;
  int64_t total = 0;
  for (const auto& [name, rec] : recipes) {
    specs.push_back({name, dtype, rec.shape});
    total += specs.back().nbytes();
  }
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec || !fs::is_directory(dir))
    throw Error(dir + ": cannot create the output directory" + (ec ? ": " + ec.message() : ""));
  WidenStats stats;
  int64_t done = 0;
  write_safetensors_streaming(
      (fs::path(dir) / "model.safetensors").string(), specs, {{"format", "pt"}},
      [&](const SafetensorsSpec& spec, const SafetensorsAppend& append) {
        const Recipe& rec = recipes.at(spec.name);
        const int64_t cols = rec.shape.back();
        int64_t rows = 1;
        for (size_t i = 0; i + 1 < rec.shape.size(); ++i) rows *= rec.shape[i];
        const int64_t chunk = std::max<int64_t>(1, (int64_t(1) << 20) / cols);
        for (int64_t r0 = 0; r0 < rows; r0 += chunk) {
          const int64_t n = std::min(chunk, rows - r0);
          Tensor t = Tensor::empty({n, cols});
          for (int64_t r = 0; r < n; ++r) rec.row(r0 + r, t.row(r));
          for (int64_t i = 0; i < n * cols; ++i) stats.zeros += t.f32()[i] == 0.0f;
          append_as(t, dtype, append);
        }
        stats.params += rows * cols;
        done += spec.nbytes();
        if (progress) progress(done, total);
      });
  const std::string cfg = g.to_json();
  write_file_atomic((fs::path(dir) / "config.json").string(), cfg.data(), cfg.size());
  // The vocabulary is kept, so is what describes it (eval and trace read these).
  for (const char* f : {"task.json", "tokenizer.json"}) {
    const fs::path from = fs::path(source_dir) / f;
    if (!fs::exists(from)) continue;
    auto file = MappedFile::open(from.string());
    write_file_atomic((fs::path(dir) / f).string(), file->data(), file->size());
  }
  return stats;
}

}  // namespace huginn
