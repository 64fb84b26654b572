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
// the pass's row-exact mode: it hands the backend at most Backend::matmul_exact_rows() rows per
// call (decode_batch_test checks the property). The block and the stages are ModelPass's
// (huginn/forward.h), the same code as the single-sequence pass.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "huginn/forward.h"

namespace huginn {

class BatchRunner {
 public:
  BatchRunner(const Model& model, Backend& backend);

  const Model& model() const { return pass_.model(); }
  Backend& backend() { return pass_.backend(); }
  ModelPass& pass() { return pass_; }

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
  // y = x · wᵀ over B rows, each row bit-identical to a one-row backend matmul.
  void linear(const Tensor& x, const Tensor& w, Tensor& y) { pass_.linear(x, w, y); }

 private:
  Rows rows(std::span<const int32_t> positions, std::span<KVCache* const> caches);
  ModelPass pass_;
  std::vector<int64_t> starts_;  // 0, 1, ..., B: one row per sequence
};

}  // namespace huginn
