// The Huginn recurrent-depth model: immutable weights loaded from an HF checkpoint, and the
// forward pass written once against the Backend interface.
//
//   e    = prelude(wte[ids] · sqrt(E))
//   s_0  = initial state (zeros, seeded truncated normal, or given)
//   s_t+1 = core(adapter([s_t ; e]))            for t = 0 .. r-1
//   logits = lm_head(ln_f(coda(ln_f(s_r))))     latent = ln_f(s_r)
//
// Every layer is a sandwich block: x = norm_2(attn(norm_1(x)) + x); x = norm_4(mlp(norm_3(x)) + x).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "huginn/backend.h"
#include "huginn/config.h"
#include "huginn/safetensors.h"
#include "huginn/tensor.h"

namespace huginn {

// Tensor names of the HF checkpoint, in one place.
namespace names {
std::string block(const char* part, int i);  // "transformer.prelude.0" etc.; part = prelude|core_block|coda
inline constexpr const char* kWte = "transformer.wte.weight";
inline constexpr const char* kAdapter = "transformer.adapter.weight";
inline constexpr const char* kLnF = "transformer.ln_f.weight";
inline constexpr const char* kLmHead = "lm_head.weight";
inline constexpr const char* kFreqs = "freqs_cis";
}  // namespace names

struct BlockWeights {
  Tensor norm_1, norm_2, norm_3, norm_4;  // [E]
  Tensor wqkv;                            // [3E, E]: rows [q | k | v], heads contiguous
  Tensor q_bias, k_bias;                  // [E] each (qk_bias[0], qk_bias[1]); undefined if none
  Tensor attn_proj;                       // [E, E]
  Tensor mlp_fc;                          // [2I, E]: rows [gate | up]
  Tensor mlp_proj;                        // [E, I]
};

struct Weights {
  Tensor wte;      // [V, E]
  Tensor adapter;  // [E, 2E]: columns [state | e]
  Tensor ln_f;     // [E]
  Tensor lm_head;  // [V, E]; the same memory as wte when tied
  std::vector<BlockWeights> prelude, core, coda;
  Tensor rope;  // [max_positions, D/2, 2] (cos, sin)
};

struct ParamCounts {
  int64_t embedding = 0, prelude = 0, adapter = 0, core = 0, coda = 0, head = 0;  // head: 0 if tied
  int64_t total() const { return embedding + prelude + adapter + core + coda + head; }
  // Parameters a non-recurrent model would need to do the same work at r iterations.
  int64_t materialized(int r) const { return embedding + prelude + r * (adapter + core) + coda + head; }
};

// The RoPE table as the reference computes it, in float32: inv = 1 / base^(2i/D),
// theta = float(p) * inv, then (cos, sin). Shape [n_positions, D/2, 2].
Tensor rope_table(int64_t n_positions, int64_t head_dim, double base);

class Model {
 public:
  struct LoadOptions {
    int64_t max_positions = 0;  // RoPE table length; 0 = max(block_size, 4096)
    bool verbose = false;
  };
  // Loads DIR/config.json and the checkpoint's tensors (single file or sharded), converting to
  // F32 (zero-copy for F32 files). Throws huginn::Error naming the file and tensor on any problem;
  // an unexpected extra tensor only warns.
  static std::shared_ptr<const Model> load(const std::string& dir, Backend& backend,
                                           const LoadOptions& options);
  static std::shared_ptr<const Model> load(const std::string& dir, Backend& backend) {
    return load(dir, backend, LoadOptions{});
  }
  // A model from a config and its weights (for tests and training from scratch).
  Model(ModelConfig config, Weights weights, std::shared_ptr<void> keepalive = {});

  const ModelConfig& config() const { return config_; }
  const Weights& weights() const { return weights_; }
  ParamCounts param_counts() const;
  int64_t max_positions() const { return weights_.rope.dim(0); }

 private:
  ModelConfig config_;
  Weights weights_;
  std::shared_ptr<void> keepalive_;  // mapped files the weight views point into
};

}  // namespace huginn
