// The one interface through which model, trainer and generator call every op. A backend owns
// where tensors live (host memory for the CPU backends, device memory for a future CUDA one) and
// how ops run. Three backends implement it: "ref" (plain scalar loops, the algorithmic reference
// every other backend is tested against), "cpu" (threads + SIMD) and "strict" (the CPU kernels
// over an arena that host code can never touch: the proof that model, generator and
// trainer never read backend memory on the host; src/kernels/strict/).
//
// Every tensor the model, generator and trainer compute with (weights, KV cache, activations,
// gradients, optimizer state) comes from alloc / upload / convert_weight; the only ways back to
// the host are download and the scalar results of the reductions below. Every op is pure
// virtual, so a backend that forgets one does not compile.
//
// Shape legend: T = tokens (rows), S = keys in an attention window, E = n_embd, H = heads,
// D = head_dim (E = H*D), I = MLP intermediate size, V = vocabulary, K/N = matmul in/out.
// 2-D arguments may be row-strided views (stride(1) must be 1). Outputs may alias inputs only
// where a comment says so.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "huginn/tensor.h"

namespace huginn {

class ThreadPool;

// What the Linear layers' GEMMs compute in: F32, or BF16 mixed precision (inputs rounded to
// BF16, F32 accumulation: Backend::matmul_bf16). Training's --precision; inference is F32.
enum class MatmulPrecision { kF32, kBF16 };

// One AdamW update's constants (huginn/train.h, AdamW): with bias corrections bc1, bc2 and the
// learning rate lr, step_size = lr / bc1, sqrt_bc2 = sqrt(bc2), keep = 1 − lr·weight_decay.
struct AdamWStep {
  float beta1 = 0.9f, beta2 = 0.95f, eps = 1e-8f;
  float step_size = 0.0f, sqrt_bc2 = 1.0f;
  bool decay = false;
  float keep = 1.0f;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual const char* name() const = 0;

  // --- memory -------------------------------------------------------------------------------
  // A zero-filled tensor in this backend's memory.
  virtual Tensor alloc(std::initializer_list<int64_t> shape, DType dtype = DType::kF32) = 0;
  // A tensor usable by this backend holding the values of a host tensor (may share memory).
  virtual Tensor upload(const Tensor& host) = 0;
  // Copies a backend tensor (any strides) into contiguous host floats.
  virtual void download(const Tensor& t, float* host) = 0;
  // Bytes of the tensors alloc() returned (for the strict backend also upload's and
  // convert_weight's copies) that are still alive, views included in their tensor's: what this
  // backend's memory holds for its callers (the trainer reports its optimizer state by it).
  virtual int64_t allocated_bytes() const = 0;
  // dst = src, both [T, N]; strided views allowed.
  // They may overlap (rows of one tensor moved up or down, as DepthBatch compacts its batch):
  // the result is as if src were read first.
  virtual void copy(const Tensor& src, Tensor& dst) = 0;
  // A 2-D weight of this backend in F32, BF16 or Q8 converted to `to` (F32, BF16 or Q8), as
  // huginn::convert_weight does on the host; returns w itself when it already has that dtype.
  // Throws huginn::Error for other dtypes, a Q8 K not divisible by 32 or a non-finite value.
  virtual Tensor convert_weight(const Tensor& w, DType to) = 0;

  // --- numerics the callers plan around -----------------------------------------------------
  // The largest M for which every row of matmul(x [M, K], w) has exactly the bits an M = 1 call
  // gives that row (INT64_MAX: any M). Batched decode groups rows by it so that a sequence's
  // tokens do not depend on the batch it ran in.
  virtual int64_t matmul_exact_rows() const = 0;
  // G such that a causal attention call over queries [0, T) split at n — queries [n, T) run as
  // a call of their own against the same keys — gives every query the bits of the whole call
  // when n is a multiple of G and T - n >= G; 0: no split keeps the bits. Prefix reuse plans by it.
  virtual int64_t attention_split_rows() const = 0;
  // Bytes of F32 weight rows worth keeping in cache while groups of rows pass over them (the
  // column tile of row-grouped matmuls); 0: no tiling.
  virtual int64_t preferred_tile_bytes() const = 0;

  // --- forward ops --------------------------------------------------------------------------
  // out[t, :] = table[ids[t], :] * scale.   table [V, E], out [T, E]; ids checked by the caller.
  virtual void embedding(const Tensor& table, std::span<const int32_t> ids, float scale,
                         Tensor& out) = 0;
  // y = x · wᵀ.   x [M, K], w [N, K] (a Linear weight as stored), y [M, N].
  virtual void matmul(const Tensor& x, const Tensor& w, Tensor& y) = 0;
  // y = x / sqrt(mean(x²) + eps) · w per row.   x, y [T, E], w [E]; y may alias x.
  virtual void rmsnorm(const Tensor& x, const Tensor& w, float eps, Tensor& y) = 0;
  // y = a + b elementwise.   [T, N]; y may alias a or b.
  virtual void add(const Tensor& a, const Tensor& b, Tensor& y) = 0;
  // x[t, :] += bias in place.   x [T, N], bias [N].
  virtual void add_bias(Tensor& x, const Tensor& bias) = 0;
  // Rotary embedding in place, interleaved pairs (2i, 2i+1) of each head, positions[t] absolute.
  // x [T, H*D]; cos_sin [P, D/2, 2] holds (cos, sin) for position p and frequency i.
  virtual void rope(Tensor& x, const Tensor& cos_sin, std::span<const int32_t> positions,
                    int head_dim) = 0;
  // Causal softmax attention, scale 1/sqrt(D), mask aligned to the bottom-right corner: query t
  // (of T) sees keys 0 .. S-T+t.   q [T, H*D], k, v [S, H*D] (S >= T), out [T, H*D].
  virtual void attention(const Tensor& q, const Tensor& k, const Tensor& v, int n_heads,
                         Tensor& out) = 0;
  // out = silu(fc[:, :I]) * fc[:, I:].   fc [T, 2I], out [T, I].
  virtual void swiglu(const Tensor& fc, Tensor& out) = 0;
  // out = [a | b] along columns.   a [T, A], b [T, B], out [T, A+B].
  virtual void concat_cols(const Tensor& a, const Tensor& b, Tensor& out) = 0;
  // y = log_softmax(x) per row.   [T, V]; y may alias x.
  virtual void log_softmax(const Tensor& x, Tensor& y) = 0;

  // --- training state -----------------------------------------------------------------------
  // Shapes: a contiguous tensor of any shape, or a 2-D row-strided view ("[T, N]" below).
  // x = value everywhere.
  virtual void fill(Tensor& x, float value) = 0;
  // x *= s elementwise.
  virtual void scale(Tensor& x, float s) = 0;
  // acc + Σ x², accumulated in double in element order (row-major) starting from acc, so that
  // chaining calls over several tensors gives exactly one running sum over all of them.
  virtual double sum_squares(const Tensor& x, double acc = 0.0) = 0;
  // How many elements are NaN or ±Inf; *first (when given) receives the row-major index of the
  // first, or -1.
  virtual int64_t count_non_finite(const Tensor& x, int64_t* first = nullptr) = 0;
  // One fused AdamW update of a parameter (all four contiguous, F32, the same element count):
  //   w ← w·keep (when decay);  m ← β1 m + (1−β1) g;  v ← β2 v + (1−β2) g²;
  //   w ← w − step_size · m / (sqrt(v) / sqrt_bc2 + eps)
  // in float, in this order, elementwise (so results do not depend on the thread count).
  virtual void adamw_step(Tensor& w, const Tensor& g, Tensor& m, Tensor& v,
                          const AdamWStep& p) = 0;

  // --- backward ops -------------------------------------------------------------------------
  // Gradient contract: parameter gradients (dw, dbias, dtable) ACCUMULATE (+=); activation
  // gradients (dx, dq, dfc, ...) are ASSIGNED (=). Each op takes the forward inputs it needs
  // and recomputes the rest. dy is the gradient of the forward output.
  //
  // matmul y = x·wᵀ: dx = dy·w [M, K] (skipped when null); dw += dyᵀ·x [N, K] (skipped when null).
  virtual void matmul_backward(const Tensor& x, const Tensor& w, const Tensor& dy, Tensor* dx,
                               Tensor* dw) = 0;
  // rmsnorm: dx [T, E] assigned, dw [E] accumulated. dx may alias dy (not x).
  virtual void rmsnorm_backward(const Tensor& x, const Tensor& w, float eps, const Tensor& dy,
                                Tensor& dx, Tensor& dw) = 0;
  // add_bias: dbias[n] += Σ_t dy[t, n]. (The input's gradient is dy itself.)
  virtual void add_bias_backward(const Tensor& dy, Tensor& dbias) = 0;
  // rope: the inverse rotation of the gradient, in place (a = a'·cos + b'·sin, b = b'·cos − a'·sin).
  virtual void rope_backward(Tensor& dx, const Tensor& cos_sin,
                             std::span<const int32_t> positions, int head_dim) = 0;
  // attention (same mask as the forward): dq [T, H*D], dk, dv [S, H*D] assigned. `out` is the
  // forward output for these q, k, v; probabilities are recomputed.
  virtual void attention_backward(const Tensor& q, const Tensor& k, const Tensor& v,
                                  const Tensor& out, const Tensor& dout, int n_heads, Tensor& dq,
                                  Tensor& dk, Tensor& dv) = 0;
  // swiglu: dfc [T, 2I] assigned from fc [T, 2I] and dout [T, I].
  virtual void swiglu_backward(const Tensor& fc, const Tensor& dout, Tensor& dfc) = 0;
  // concat_cols: da = dout[:, :A], db = dout[:, A:], both assigned.
  virtual void concat_cols_backward(const Tensor& dout, Tensor& da, Tensor& db) = 0;
  // embedding: dtable[ids[t], :] += scale · dout[t, :] (scatter-add; repeated ids add up).
  virtual void embedding_backward(const Tensor& dout, std::span<const int32_t> ids, float scale,
                                  Tensor& dtable) = 0;
  // Fused log-softmax + NLL. logits [T, V]; labels[t] in [0, V) or -100 (ignored; checked by
  // the caller). Returns the mean of −log_softmax(logits)[t, labels[t]] over the n_valid rows
  // that are not ignored (0 when n_valid = 0). When dlogits is given ([T, V], may alias
  // logits): dlogits = dscale · (softmax − onehot) / n_valid, zero rows where ignored.
  virtual float cross_entropy(const Tensor& logits, std::span<const int32_t> labels, float dscale,
                              Tensor* dlogits) = 0;

  // --- BF16 mixed precision (training with --precision bf16, as the reference's bf16 autocast)
  // matmul and matmul_backward (same shapes and contract as above) with every GEMM input
  // rounded to BF16 and F32 accumulation: y = bf16(x)·bf16(w)ᵀ, dx = bf16(dy)·bf16(w),
  // dw += bf16(dy)ᵀ·bf16(x). The numerics are defined once (src/kernels/bf16_numerics.h: rounding,
  // summation order, flushing of subnormals), so every backend and every CPU gives the same bits.
  // w is F32 (rounded by the call), or BF16 as round_bf16 made it (taken as it is: the same bits
  // as passing the F32 weight it was rounded from).
  virtual void matmul_bf16(const Tensor& x, const Tensor& w, Tensor& y) = 0;
  virtual void matmul_backward_bf16(const Tensor& x, const Tensor& w, const Tensor& dy, Tensor* dx,
                                    Tensor* dw) = 0;
  // wb = bf16(w) by that rule (round to nearest even, subnormals to zero).   w F32 [N, K] (a
  // row-strided view allowed), wb BF16 [N, K] contiguous (from alloc). A trainer rounds each
  // weight once per optimizer step and hands wb to every GEMM of the step in w's place, instead
  // of every GEMM rounding w again (a backend may keep wb in whatever layout its GEMM reads).
  virtual void round_bf16(const Tensor& w, Tensor& wb) = 0;
};

// The plain scalar reference backend (single thread, straightforward loops).
std::unique_ptr<Backend> make_ref_backend();
// The strict test backend: the fast CPU kernels (on `pool`, which must outlive it) over memory
// in its own arena. Its tensors hold addresses of a range mapped PROT_NONE for good, so that any
// host read or write of backend memory faults with a message naming the arena (or, through a
// Tensor accessor, throws huginn::Error first); the backend's ops reach the bytes through a
// private second mapping. For tests and for checking new host code.
std::unique_ptr<Backend> make_strict_backend(ThreadPool& pool);
// The fast CPU backend (SIMD + the given thread pool, which must outlive it).
std::unique_ptr<Backend> make_cpu_backend(ThreadPool& pool);
// By name: "ref", "cpu" or "strict". Throws huginn::Error for anything else.
std::unique_ptr<Backend> make_backend(const std::string& name, ThreadPool& pool);

}  // namespace huginn
