// The one interface through which model, trainer and generator call every op. A backend owns
// where tensors live (host memory for the CPU backends, device memory for a future CUDA one) and
// how ops run. Two CPU backends implement it: "ref" (plain scalar loops, the algorithmic
// reference every other backend is tested against) and "cpu" (threads + SIMD).
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
  // dst = src, both [T, N]; strided views allowed.
  virtual void copy(const Tensor& src, Tensor& dst) = 0;

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

  // --- backward ops -------------------------------------------------------------------------
  // Gradient contract: parameter gradients (dw, dbias, dtable) ACCUMULATE (+=); activation
  // gradients (dx, dq, dfc, ...) are ASSIGNED (=). Each op takes the forward inputs it needs
  // and recomputes the rest. dy is the gradient of the forward output. Not overriding an op
  // gives the scalar reference on host memory (src/kernels/ref/ref_grad.h).
  //
  // matmul y = x·wᵀ: dx = dy·w [M, K] (skipped when null); dw += dyᵀ·x [N, K] (skipped when null).
  virtual void matmul_backward(const Tensor& x, const Tensor& w, const Tensor& dy, Tensor* dx,
                               Tensor* dw);
  // rmsnorm: dx [T, E] assigned, dw [E] accumulated. dx may alias dy (not x).
  virtual void rmsnorm_backward(const Tensor& x, const Tensor& w, float eps, const Tensor& dy,
                                Tensor& dx, Tensor& dw);
  // add_bias: dbias[n] += Σ_t dy[t, n]. (The input's gradient is dy itself.)
  virtual void add_bias_backward(const Tensor& dy, Tensor& dbias);
  // rope: the inverse rotation of the gradient, in place (a = a'·cos + b'·sin, b = b'·cos − a'·sin).
  virtual void rope_backward(Tensor& dx, const Tensor& cos_sin,
                             std::span<const int32_t> positions, int head_dim);
  // attention (same mask as the forward): dq [T, H*D], dk, dv [S, H*D] assigned. `out` is the
  // forward output for these q, k, v; probabilities are recomputed.
  virtual void attention_backward(const Tensor& q, const Tensor& k, const Tensor& v,
                                  const Tensor& out, const Tensor& dout, int n_heads, Tensor& dq,
                                  Tensor& dk, Tensor& dv);
  // swiglu: dfc [T, 2I] assigned from fc [T, 2I] and dout [T, I].
  virtual void swiglu_backward(const Tensor& fc, const Tensor& dout, Tensor& dfc);
  // concat_cols: da = dout[:, :A], db = dout[:, A:], both assigned.
  virtual void concat_cols_backward(const Tensor& dout, Tensor& da, Tensor& db);
  // embedding: dtable[ids[t], :] += scale · dout[t, :] (scatter-add; repeated ids add up).
  virtual void embedding_backward(const Tensor& dout, std::span<const int32_t> ids, float scale,
                                  Tensor& dtable);
  // Fused log-softmax + NLL. logits [T, V]; labels[t] in [0, V) or -100 (ignored; checked by
  // the caller). Returns the mean of −log_softmax(logits)[t, labels[t]] over the n_valid rows
  // that are not ignored (0 when n_valid = 0). When dlogits is given ([T, V], may alias
  // logits): dlogits = dscale · (softmax − onehot) / n_valid, zero rows where ignored.
  virtual float cross_entropy(const Tensor& logits, std::span<const int32_t> labels, float dscale,
                              Tensor* dlogits);
};

// The plain scalar reference backend (single thread, straightforward loops).
std::unique_ptr<Backend> make_ref_backend();
// The fast CPU backend (SIMD + the given thread pool, which must outlive it).
std::unique_ptr<Backend> make_cpu_backend(ThreadPool& pool);
// By name: "ref" or "cpu". Throws huginn::Error for anything else.
std::unique_ptr<Backend> make_backend(const std::string& name, ThreadPool& pool);

}  // namespace huginn
