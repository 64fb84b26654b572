// Loading a Huginn checkpoint: config.json + safetensors (single or sharded), names as in the
// HF checkpoint, every tensor checked for presence and shape before use.
#include "huginn/model.h"

#include <cmath>
#include <cstring>
#include <memory>
#include <set>

#include "huginn/log.h"

namespace huginn {

std::string names::block(const char* part, int i) {
  return std::string("transformer.") + part + "." + std::to_string(i);
}

bool names::is_matrix(const std::string& name) {
  auto ends = [&](const char* suffix) {
    const std::string s(suffix);
    return name.size() >= s.size() && name.compare(name.size() - s.size(), s.size(), s) == 0;
  };
  return name == kAdapter || name == kLmHead || ends(".attn.Wqkv.weight") ||
         ends(".attn.proj.weight") || ends(".mlp.fc.weight") || ends(".mlp.proj.weight");
}

std::optional<DType> parse_weight_dtype(const std::string& s) {
  if (s == "f32") return DType::kF32;
  if (s == "bf16") return DType::kBF16;
  if (s == "q8") return DType::kQ8;
  if (s == "q4") return DType::kQ4;
  if (s == "auto") return std::nullopt;
  throw Error("weight dtype '" + s + "': expected f32, bf16, q8, q4 or auto");
}

Tensor rope_table(int64_t n_positions, int64_t head_dim, double base) {
  if (head_dim < 2 || head_dim % 2 != 0)
    throw Error("RoPE table: head_dim " + std::to_string(head_dim) + " must be even and >= 2");
  if (n_positions < 1 || n_positions > kMaxRopePositions)
    throw Error("RoPE table: " + std::to_string(n_positions) + " positions, expected 1 to " +
                std::to_string(kMaxRopePositions) + " (block_size or max_positions)");
  if (n_positions * head_dim > kMaxRopeFloats)
    throw Error("RoPE table: " + std::to_string(n_positions) + " positions x head_dim " +
                std::to_string(head_dim) + " is " + std::to_string(n_positions * head_dim * 4) +
                " bytes, more than the " + std::to_string(kMaxRopeFloats * 4) +
                "-byte limit (lower block_size or max_positions)");
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

// Non-finite elements (NaN or +-Inf, by exponent bits) of an F32 or BF16 tensor: their count and
// the flat index of the first. Branch-free per chunk so that the scan vectorizes.
struct NonFinite {
  int64_t count = 0, first = -1;
};
template <class U, U kExp>
NonFinite scan_non_finite(const U* p, int64_t n) {
  NonFinite r;
  constexpr int64_t kChunk = 4096;
  for (int64_t c = 0; c < n; c += kChunk) {
    const int64_t e = std::min(n, c + kChunk);
    int64_t k = 0;
    for (int64_t i = c; i < e; ++i) k += (p[i] & kExp) == kExp;
    if (k == 0) continue;
    if (r.first < 0)
      for (int64_t i = c; i < e && r.first < 0; ++i)
        if ((p[i] & kExp) == kExp) r.first = i;
    r.count += k;
  }
  return r;
}
NonFinite non_finite(const Tensor& t) {
  HUGINN_ASSERT(t.is_contiguous(), "non_finite: strided tensor");
  if (t.dtype() == DType::kF32)
    return scan_non_finite<uint32_t, 0x7f800000u>(static_cast<const uint32_t*>(t.raw()), t.numel());
  if (t.dtype() == DType::kBF16)
    return scan_non_finite<uint16_t, 0x7f80u>(static_cast<const uint16_t*>(t.raw()), t.numel());
  return {};
}

// A weight with a NaN or Inf makes every logit NaN (norms and matmuls spread it to every
// position), so it is an error at load, naming the tensor, the first bad element and the count,
// not a silent exit 0 with garbage.
void check_finite(const Tensor& t, const std::string& file, const std::string& name) {
  const NonFinite r = non_finite(t);
  if (r.count == 0) return;
  std::string at = "[";
  int64_t rem = r.first;
  std::vector<int64_t> idx(static_cast<size_t>(t.ndim()));
  for (int d = t.ndim() - 1; d >= 0; --d) {
    idx[static_cast<size_t>(d)] = rem % t.dim(d);
    rem /= t.dim(d);
  }
  for (size_t d = 0; d < idx.size(); ++d) at += (d ? ", " : "") + std::to_string(idx[d]);
  at += "]";
  float v;
  if (t.dtype() == DType::kF32) {
    std::memcpy(&v, static_cast<const float*>(t.raw()) + r.first, sizeof v);
  } else {
    uint16_t h;
    std::memcpy(&h, static_cast<const uint16_t*>(t.raw()) + r.first, sizeof h);
    const uint32_t bits = uint32_t{h} << 16;
    std::memcpy(&v, &bits, sizeof v);
  }
  throw Error(file + ": tensor '" + name + "' holds " + std::to_string(r.count) +
              " non-finite value" + (r.count > 1 ? "s" : "") + ", the first " +
              (std::isnan(v) ? "NaN" : v > 0 ? "+Inf" : "-Inf") + " at " + at +
              " (a diverged or corrupt checkpoint)");
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
    Tensor t = store_.as_f32(name);
    check_finite(t, store_.file_of(name), name);
    return be_.upload(t.reshape(shape));
  }
  // A big matrix [N, K] in the target weight dtype (see LoadOptions::weight_dtype).
  Tensor matrix(const std::string& name, int64_t N, int64_t K) {
    const bool q4 = store_.contains(name) && store_.entry(name).dtype == DType::kU8;
    if (q4 && K % kQ4Block != 0)
      throw Error(store_.file_of(name) + ": Q4 tensor '" + name + "' would have K = " +
                  std::to_string(K) + ", expected a multiple of " + std::to_string(kQ4Block));
    get_checked_entry(name, N, q4 ? K / 2 : K);  // Q4 codes: two a byte
    const SafetensorsEntry& e = store_.entry(name);
    Tensor w;
    if (q4) {
      w = stored_quantized(name, N, K, DType::kQ4);
    } else if (e.dtype == DType::kI8) {
      w = stored_quantized(name, N, K, DType::kQ8);
    } else if (e.dtype == DType::kBF16) {
      // The mapped bytes (zero-copy when 2-byte aligned); another target is converted from them
      // a few rows at a time (convert_weight), never through a whole F32 copy.
      w = store_.raw(name).reshape({N, K});
      if (reinterpret_cast<uintptr_t>(w.raw()) % 2 != 0) w = w.clone();
    } else {
      w = store_.as_f32(name).reshape({N, K});
    }
    check_finite(w, store_.file_of(name), name);  // Q8 / Q4: scales checked in stored_quantized
    try {
      return be_.upload(convert_weight(w, target_));
    } catch (const Error& err) {
      throw Error(store_.file_of(name) + ": tensor '" + name + "': " + err.what());
    }
  }
  void set_target(DType t) { target_ = t; }
  DType target() const { return target_; }
  bool has(const std::string& name) const { return store_.contains(name); }
  void warn_unused() const {
    for (const auto& n : store_.names())
      if (!used_.count(n)) HUGINN_LOG_WARN("%s: unexpected tensor '%s' ignored", dir_.c_str(), n.c_str());
  }
  void mark_used(const std::string& name) { used_.insert(name); }

 private:
  void get_checked_entry(const std::string& name, int64_t N, int64_t K) {
    const std::vector<int64_t> shape{N, K};
    if (!store_.contains(name))
      throw Error(dir_ + ": missing tensor '" + name + "' (expected shape " + shape_str(shape) + ")");
    const SafetensorsEntry& e = store_.entry(name);
    if (e.shape != shape)
      throw Error(store_.file_of(name) + ": tensor '" + name + "' has shape " +
                  shape_str(e.shape) + ", expected " + shape_str(shape));
    used_.insert(name);
  }
  // NAME (I8 [N, K] for Q8, U8 [N, K/2] for Q4; its shape checked by the caller) + the scales
  // NAME.q8_scales / NAME.q4_scales (F16 [N, K/32]) -> one Q8 / Q4 tensor, every part checked.
  Tensor stored_quantized(const std::string& name, int64_t N, int64_t K, DType dt) {
    const bool q4 = dt == DType::kQ4;
    const char* format = q4 ? names::kQ4Format : names::kQ8Format;
    const std::string& file = store_.file_of(name);
    const std::string where = file + ": " + dtype_name(dt) + " tensor '" + name + "'";
    const auto& md = store_.metadata_of(name);
    auto it = md.find(names::kWeightFormatKey);
    if (it == md.end() || it->second != format)
      throw Error(where + " is " + (q4 ? "U8" : "I8") + ", but the file's __metadata__ does not have \"" +
                  names::kWeightFormatKey + "\": \"" + format + "\" (found " +
                  (it == md.end() ? std::string("none") : "\"" + it->second + "\"") + ")");
    if (K % kQ8Block != 0)
      throw Error(where + " has K = " + std::to_string(K) + ", expected a multiple of " +
                  std::to_string(kQ8Block));
    const std::string sn = name + (q4 ? names::kQ4ScalesSuffix : names::kQ8ScalesSuffix);
    const std::vector<int64_t> sshape{N, K / kQ8Block};
    if (!store_.contains(sn))
      throw Error(where + " has no scales: missing tensor '" + sn + "' (expected F16 " +
                  shape_str(sshape) + ")");
    const SafetensorsEntry& se = store_.entry(sn);
    if (se.dtype != DType::kF16 || se.shape != sshape)
      throw Error(store_.file_of(sn) + ": scales tensor '" + sn + "' is " +
                  dtype_name(se.dtype) + " " + shape_str(se.shape) + ", expected F16 " +
                  shape_str(sshape));
    used_.insert(sn);
    const Tensor values = store_.raw(name), scales = store_.raw(sn);
    const int64_t value_bytes = q4 ? N * K / 2 : N * K;
    const auto* vp = static_cast<const uint8_t*>(values.raw());
    const auto* sc = static_cast<const uint16_t*>(scales.raw());
    Tensor q;
    if (reinterpret_cast<const uint8_t*>(sc) == vp + value_bytes &&
        reinterpret_cast<uintptr_t>(sc) % alignof(uint16_t) == 0) {
      // The file holds the values and then the scales back to back (huginn convert writes NAME
      // and NAME.*_scales next to each other, in name order): our layout, used as mapped. The
      // view keeps the mapping alive through `values`; nothing is written through it.
      auto keep = std::make_shared<Tensor>(values);
      q = Tensor::wrap(const_cast<uint8_t*>(vp), {N, K}, dt,
                       std::shared_ptr<void>(keep, const_cast<uint8_t*>(vp)));
    } else {
      q = Tensor::empty({N, K}, dt);
      auto* dst = static_cast<uint8_t*>(q.raw());
      std::memcpy(dst, vp, static_cast<size_t>(value_bytes));
      std::memcpy(dst + value_bytes, sc, static_cast<size_t>(N * (K / kQ8Block)) * 2);
      sc = reinterpret_cast<const uint16_t*>(dst + value_bytes);
    }
    for (int64_t i = 0; i < N * (K / kQ8Block); ++i)
      if ((sc[i] & 0x7c00u) == 0x7c00u)
        throw Error(store_.file_of(sn) + ": scales tensor '" + sn + "' holds a non-finite value at [" +
                    std::to_string(i / (K / kQ8Block)) + ", " + std::to_string(i % (K / kQ8Block)) +
                    "]");
    return q;
  }
  DType target_ = DType::kF32;
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
  w.wqkv = ld.matrix(prefix + ".attn.Wqkv.weight", 3 * E, E);
  if (c.qk_bias) {
    w.qk_bias = ld.get(prefix + ".attn.qk_bias", {2, 1, c.n_heads, c.head_dim}).reshape({2, E});
    w.q_bias = w.qk_bias.rows(0, 1).reshape({E});
    w.k_bias = w.qk_bias.rows(1, 2).reshape({E});
  }
  w.attn_proj = ld.matrix(prefix + ".attn.proj.weight", E, E);
  w.mlp_fc = ld.matrix(prefix + ".mlp.fc.weight", 2 * I, E);
  w.mlp_proj = ld.matrix(prefix + ".mlp.proj.weight", E, I);
  return w;
}

// The requested weight dtype, or the stored one of the first matrix ("as stored").
DType resolve_weight_dtype(std::optional<DType> want, const TensorStore& store,
                           const ModelConfig& c) {
  if (want) {
    if (*want != DType::kF32 && *want != DType::kBF16 && !is_quantized(*want))
      throw Error(std::string("weight dtype ") + dtype_name(*want) +
                  " is not supported (expected F32, BF16, Q8 or Q4)");
    return *want;
  }
  const std::string probe = c.n_prelude > 0 ? names::block("prelude", 0) + ".attn.Wqkv.weight"
                                            : std::string(names::kAdapter);
  if (!store.contains(probe)) return DType::kF32;  // reported as missing later
  const DType t = store.entry(probe).dtype;
  if (t == DType::kI8) return DType::kQ8;
  if (t == DType::kU8) return DType::kQ4;
  return t == DType::kBF16 ? DType::kBF16 : DType::kF32;
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
  ld.set_target(resolve_weight_dtype(opt.weight_dtype, store, c));

  Weights w;
  w.wte = ld.get(names::kWte, {V, E});
  for (int i = 0; i < c.n_prelude; ++i) w.prelude.push_back(load_block(ld, c, names::block("prelude", i)));
  w.adapter = ld.matrix(names::kAdapter, E, 2 * E);
  for (int i = 0; i < c.n_core; ++i) w.core.push_back(load_block(ld, c, names::block("core_block", i)));
  for (int i = 0; i < c.n_coda; ++i) w.coda.push_back(load_block(ld, c, names::block("coda", i)));
  w.ln_f = ld.get(names::kLnF, {E});
  if (ld.has(names::kLmHead)) {
    w.lm_head = ld.matrix(names::kLmHead, V, E);
  } else if (c.tie_embeddings) {
    // Tied: the unscaled embedding is the output head (its own copy in a non-F32 weight dtype,
    // since the embedding gather reads F32 rows).
    w.lm_head = be.convert_weight(w.wte, ld.target());
    w.head_tied = true;
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
    check_finite(stored, store.file_of(names::kFreqs), names::kFreqs);
    const int64_t n = std::min<int64_t>(e.shape[1], n_pos);
    std::copy(stored.f32(), stored.f32() + n * half * 2, rope.f32());
  }
  w.rope = be.upload(rope);
  ld.warn_unused();
  if (opt.verbose) HUGINN_LOG_INFO("loaded %s (%s)", dir.c_str(), c.name.c_str());
  return std::make_shared<const Model>(std::move(c), std::move(w));
}

std::vector<Tensor*> linear_matrices(Weights& w) {
  std::vector<Tensor*> out;
  for (auto* blocks : {&w.prelude, &w.core, &w.coda})
    for (BlockWeights& b : *blocks)
      for (Tensor* t : {&b.wqkv, &b.attn_proj, &b.mlp_fc, &b.mlp_proj}) out.push_back(t);
  out.push_back(&w.adapter);
  out.push_back(&w.lm_head);
  return out;
}

std::shared_ptr<const Model> Model::with_weight_dtype(DType dt, Backend& be) const {
  Weights w = weights_;
  for (Tensor* t : linear_matrices(w)) *t = be.convert_weight(*t, dt);
  if (weights_.head_tied || weights_.lm_head.same_data(weights_.wte)) w.head_tied = true;
  return std::make_shared<const Model>(config_, std::move(w), keepalive_);
}

ParamCounts Model::param_counts() const {
  return count_params(config_, weights_.head_tied || weights_.lm_head.same_data(weights_.wte));
}

ParamCounts count_params(const ModelConfig& c, bool head_tied) {
  const int64_t E = c.n_embd, V = c.vocab_size, bp = block_params(c);
  ParamCounts p;
  p.embedding = V * E;
  p.prelude = c.n_prelude * bp;
  p.adapter = 2 * E * E;
  p.core = c.n_core * bp;
  p.coda = c.n_coda * bp + E;  // + ln_f
  p.head = head_tied ? 0 : V * E;
  return p;
}

}  // namespace huginn
