// Decoding several sequences at once: one new token per sequence, each at its own position in
// its own KV cache, run through prelude, core recurrences and coda together so that every linear
// layer (wqkv, attn_proj, mlp_fc, mlp_proj, adapter, lm_head) is one matmul over B rows instead
// of B matrix-vector products: the weights are read once per layer for the whole batch, which
// is what decode (bandwidth bound) needs. Attention stays per sequence (its own cache).
//
// B = sequences in the batch (rows), E = n_embd, V = vocabulary.
//
// Exactness: every row comes out with the bits a one-row Runner call gives it. Row-wise ops
// (rmsnorm, add, rope, swiglu, ...) are row-independent by construction; matmul is made so by
// linear(): it hands the backend at most kExactRows rows per call, the largest M for which the
// backend's matmul computes each row exactly as an M = 1 call does (the CPU GEMM switches to a
// differently-ordered packed kernel above 4 rows; forward_batch_test checks the property).
#pragma once

#include <cstdint>
#include <memory>
#include <span>

#include "huginn/forward.h"

namespace huginn {

class BatchRunner {
 public:
  // Largest row count per matmul call whose rows are bit-identical to one-row calls.
  static constexpr int64_t kExactRows = 4;

  BatchRunner(const Model& model, Backend& backend);
  ~BatchRunner();
  BatchRunner(const BatchRunner&) = delete;
  BatchRunner& operator=(const BatchRunner&) = delete;

  const Model& model() const { return model_; }
  Backend& backend() { return be_; }

  // e [B, E] = prelude(embed(ids) · sqrt(E)): token ids[b] at positions[b] in caches[b].
  // Throws huginn::Error for ids outside the vocabulary or positions past the RoPE table.
  void prelude(std::span<const int32_t> ids, std::span<const int32_t> positions,
               std::span<KVCache* const> caches, Tensor& e);
  // One recurrence t (0-based) for every row: s <- core(adapter([s ; e])), in place. s, e [B, E].
  void core_step(Tensor& s, const Tensor& e, int t, std::span<const int32_t> positions,
                 std::span<KVCache* const> caches);
  // logits [B, V] = lm_head(ln_f(coda(ln_f(s)))); writes the coda entries of each cache.
  void coda(const Tensor& s, std::span<const int32_t> positions, std::span<KVCache* const> caches,
            Tensor& logits);

  // y = x · wᵀ over B rows, each row bit-identical to a one-row backend matmul. Rows go to the
  // backend in groups of kExactRows; for F32 weights the output columns are tiled so that a
  // block of weight rows stays in cache while every group of rows passes over it.
  void linear(const Tensor& x, const Tensor& w, Tensor& y);

 private:
  struct Scratch;
  Scratch& scratch(int64_t B);
  void block(const BlockWeights& w, Tensor& x, std::span<const int32_t> positions,
             std::span<KVCache* const> caches, int step_index);

  const Model& model_;
  Backend& be_;
  std::unique_ptr<Scratch> scratch_;
};

}  // namespace huginn
