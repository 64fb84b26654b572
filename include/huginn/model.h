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
#include <optional>
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
// The big matrices, which the inference weight formats (BF16, Q8, Q4) apply to: Wqkv, attn.proj,
// mlp.fc, mlp.proj of every block, the adapter and lm_head. Embeddings and norms stay F32.
bool is_matrix(const std::string& name);
// A Q8 matrix is stored as two tensors: NAME (I8 [N, K]) and NAME + kQ8ScalesSuffix
// (F16 [N, K/32]), in a file whose __metadata__ has kWeightFormatKey = kQ8Format.
inline constexpr const char* kQ8ScalesSuffix = ".q8_scales";
inline constexpr const char* kWeightFormatKey = "huginn.weight_format";
inline constexpr const char* kQ8Format = "q8_0";  // int8, one F16 scale per 32 values along K
// A Q4 matrix: NAME (U8 [N, K/2], two 4-bit codes a byte, k order, low nibble first) and
// NAME + kQ4ScalesSuffix (F16 [N, K/32]), in a file whose kWeightFormatKey = kQ4Format. Not
// ggml's q4_0 layout (whose bytes pair value j with j + 16): the same rule, codes in k order.
inline constexpr const char* kQ4ScalesSuffix = ".q4_scales";
inline constexpr const char* kQ4Format = "q4_32";
}  // namespace names

struct BlockWeights {
  Tensor norm_1, norm_2, norm_3, norm_4;  // [E]
  Tensor wqkv;                            // [3E, E]: rows [q | k | v], heads contiguous
  Tensor qk_bias;                         // [2, E] as the checkpoint's [2, 1, H, D]; undefined if none
  Tensor q_bias, k_bias;                  // [E] each: the rows of qk_bias
  Tensor attn_proj;                       // [E, E]
  Tensor mlp_fc;                          // [2I, E]: rows [gate | up]
  Tensor mlp_proj;                        // [E, I]
};

struct Weights {
  Tensor wte;      // [V, E]
  Tensor adapter;  // [E, 2E]: columns [state | e]
  Tensor ln_f;     // [E]
  Tensor lm_head;  // [V, E]; the same memory as wte when tied (F32), else a converted copy
  bool head_tied = false;  // lm_head is wte (possibly converted to the weight dtype)
  std::vector<BlockWeights> prelude, core, coda;
  Tensor rope;  // [max_positions, D/2, 2] (cos, sin)
};

// The Linear layers' matrices of `w` (names::is_matrix: every block's wqkv, attn_proj, mlp_fc,
// mlp_proj, then the adapter and lm_head), in that order.
std::vector<Tensor*> linear_matrices(Weights& w);

struct ParamCounts {
  int64_t embedding = 0, prelude = 0, adapter = 0, core = 0, coda = 0, head = 0;  // head: 0 if tied
  int64_t total() const { return embedding + prelude + adapter + core + coda + head; }
  // Parameters a non-recurrent model would need to do the same work at r iterations.
  int64_t materialized(int r) const { return embedding + prelude + r * (adapter + core) + coda + head; }
};

// The parameter counts of a model with config `c`, from the config alone (`head_tied`: no
// separate lm_head), as Model::param_counts gives for a loaded one.
ParamCounts count_params(const ModelConfig& c, bool head_tied);

// The RoPE table as the reference computes it, in float32: inv = 1 / base^(2i/D),
// theta = float(p) * inv, then (cos, sin). Shape [n_positions, D/2, 2]. Built whole at load, so
// bounded: 1 to kMaxRopePositions positions (config.json's block_size limit, 256x Huginn-0125's
// 4096) and at most kMaxRopeFloats floats (1 GiB); huginn::Error otherwise.
inline constexpr int64_t kMaxRopePositions = int64_t{1} << 20;
inline constexpr int64_t kMaxRopeFloats = int64_t{1} << 28;
Tensor rope_table(int64_t n_positions, int64_t head_dim, double base);

// A weight-format flag: "f32" | "bf16" | "q8" | "q4" -> that dtype; "auto" -> std::nullopt (as the
// checkpoint stores its matrices). Throws huginn::Error naming the value otherwise.
std::optional<DType> parse_weight_dtype(const std::string& s);

class Model {
 public:
  struct LoadOptions {
    int64_t max_positions = 0;  // RoPE table length; 0 = max(block_size, 4096)
    bool verbose = false;
    // The dtype of the big matrices (names::is_matrix; a tied lm_head gets its own copy when
    // not F32): F32, BF16, Q8 or Q4. std::nullopt: as the checkpoint stores them (Q8 for I8 +
    // scales, Q4 for U8 + scales, BF16 for BF16, else F32). Embeddings, norms and biases are always F32.
    std::optional<DType> weight_dtype = DType::kF32;
  };
  // Loads DIR/config.json and the checkpoint's tensors (single file or sharded), converting to
  // F32 (zero-copy for F32 files) and the matrices to options.weight_dtype. Throws huginn::Error naming the file and tensor on any problem;
  // an unexpected extra tensor only warns.
  static std::shared_ptr<const Model> load(const std::string& dir, Backend& backend,
                                           const LoadOptions& options);
  static std::shared_ptr<const Model> load(const std::string& dir, Backend& backend) {
    return load(dir, backend, LoadOptions{});
  }
  // A copy whose big matrices (names::is_matrix; a tied lm_head gets its own copy) are in `dt`
  // (F32, BF16, Q8 or Q4), converted by the backend (Backend::convert_weight); every other tensor is
  // shared. For random-weight benchmarks and studies.
  std::shared_ptr<const Model> with_weight_dtype(DType dt, Backend& backend) const;
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
