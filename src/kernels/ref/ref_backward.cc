// RefBackend's backward ops: Tensor glue around the scalar kernels of ref_grad.h (float).
// T = tokens, S = keys, E = n_embd, H*D = heads x head_dim, V = vocab.
#include "kernels/ref/ref_backend.h"
#include "kernels/bf16_numerics.h"
#include "kernels/ref/ref_grad.h"

namespace huginn {
namespace {

ref::View<float> v2(Tensor& t) {
  const int64_t cols = t.dim(-1), rows = t.numel() / std::max<int64_t>(cols, 1);
  return {t.f32(), rows, cols, t.ndim() >= 2 ? t.stride(0) : cols};
}
ref::View<const float> v2(const Tensor& t) {
  const int64_t cols = t.dim(-1), rows = t.numel() / std::max<int64_t>(cols, 1);
  return {t.f32(), rows, cols, t.ndim() >= 2 ? t.stride(0) : cols};
}
ref::View<float> v2(Tensor* t) { return t ? v2(*t) : ref::View<float>{}; }

}  // namespace

void RefBackend::matmul_backward(const Tensor& x, const Tensor& w, const Tensor& dy, Tensor* dx,
                                 Tensor* dw) {
  HUGINN_ASSERT(dy.dim(0) == x.dim(0) && dy.dim(1) == w.dim(0) && w.dim(1) == x.dim(1),
                "matmul_backward: shape mismatch");
  ref::matmul_backward(v2(x), v2(w), v2(dy), v2(dx), v2(dw));
}

// BF16 mixed precision: kernels/bf16_numerics.h's reference on the operands as the cpu backend
// reads them. A BF16 weight (round_bf16's) is widened exactly; rounding it again changes nothing.
namespace {
// w(n, k) as F32 from an F32 or BF16 weight [N, K].
auto weight_at(const Tensor& w) {
  HUGINN_ASSERT(w.dtype() == DType::kF32 || w.dtype() == DType::kBF16,
                "matmul_bf16: weights neither F32 nor BF16");
  const bool bf16 = w.dtype() == DType::kBF16;
  const int64_t ld = w.stride(0);
  const void* p = w.raw();
  return [bf16, ld, p](int64_t n, int64_t k) {
    return bf16 ? bf16_to_f32(static_cast<const uint16_t*>(p)[n * ld + k])
                : static_cast<const float*>(p)[n * ld + k];
  };
}
}  // namespace

void RefBackend::matmul_bf16(const Tensor& x, const Tensor& w, Tensor& y) {
  const int64_t M = x.dim(0), K = x.dim(1), N = w.dim(0);
  HUGINN_ASSERT(w.dim(1) == K && y.dim(0) == M && y.dim(1) == N, "matmul_bf16: shapes");
  const auto wt = weight_at(w);
  bf16_gemm_reference([&](int64_t m, int64_t k) { return x.row(m)[k]; },
                      [&](int64_t k, int64_t n) { return wt(n, k); }, y.row(0), y.stride(0), M, N,
                      K, false);
}

void RefBackend::matmul_backward_bf16(const Tensor& x, const Tensor& w, const Tensor& dy,
                                      Tensor* dx, Tensor* dw) {
  const int64_t M = x.dim(0), K = x.dim(1), N = w.dim(0);
  HUGINN_ASSERT(dy.dim(0) == M && dy.dim(1) == N && w.dim(1) == K,
                "matmul_backward_bf16: shape mismatch");
  const auto wt = weight_at(w);
  if (dx)  // dx[m, k] = Σ_n dy[m, n] · w[n, k]
    bf16_gemm_reference([&](int64_t m, int64_t n) { return dy.row(m)[n]; },
                        [&](int64_t n, int64_t k) { return wt(n, k); }, dx->row(0),
                        dx->stride(0), M, K, N, false);
  if (dw)  // dw[n, k] += Σ_m dy[m, n] · x[m, k]
    bf16_gemm_reference([&](int64_t n, int64_t m) { return dy.row(m)[n]; },
                        [&](int64_t m, int64_t k) { return x.row(m)[k]; }, dw->row(0),
                        dw->stride(0), N, K, M, true);
}

void RefBackend::round_bf16(const Tensor& w, Tensor& wb) {
  const int64_t N = w.dim(0), K = w.dim(1);
  HUGINN_ASSERT(w.dtype() == DType::kF32 && wb.dtype() == DType::kBF16 && wb.is_contiguous() &&
                    wb.dim(0) == N && wb.dim(1) == K,
                "round_bf16: w F32 [N, K], wb BF16 [N, K] contiguous");
  auto* out = static_cast<uint16_t*>(wb.raw());
  for (int64_t n = 0; n < N; ++n)
    for (int64_t k = 0; k < K; ++k) out[n * K + k] = bf16_round_ftz(w.row(n)[k]);
}

void RefBackend::rmsnorm_backward(const Tensor& x, const Tensor& w, float eps, const Tensor& dy,
                                  Tensor& dx, Tensor& dw) {
  ref::rmsnorm_backward(v2(x), w.f32(), eps, v2(dy), v2(dx), dw.f32());
}

void RefBackend::add_bias_backward(const Tensor& dy, Tensor& dbias) {
  ref::add_bias_backward(v2(dy), dbias.f32());
}

void RefBackend::rope_backward(Tensor& dx, const Tensor& cos_sin,
                               std::span<const int32_t> positions, int head_dim) {
  ref::rope_backward(v2(dx), cos_sin.f32(), positions, head_dim);
}

void RefBackend::attention_backward(const Tensor& q, const Tensor& k, const Tensor& v,
                                    const Tensor& out, const Tensor& dout, int n_heads,
                                    Tensor& dq, Tensor& dk, Tensor& dv) {
  HUGINN_ASSERT(k.dim(0) >= q.dim(0) && v.dim(0) == k.dim(0), "attention_backward: need S >= T");
  ref::attention_backward(v2(q), v2(k), v2(v), v2(dout), n_heads, v2(dq), v2(dk), v2(dv));
}

void RefBackend::swiglu_backward(const Tensor& fc, const Tensor& dout, Tensor& dfc) {
  ref::swiglu_backward(v2(fc), v2(dout), v2(dfc));
}

void RefBackend::concat_cols_backward(const Tensor& dout, Tensor& da, Tensor& db) {
  ref::concat_cols_backward(v2(dout), v2(da), v2(db));
}

void RefBackend::embedding_backward(const Tensor& dout, std::span<const int32_t> ids, float scale,
                                    Tensor& dtable) {
  ref::embedding_backward(v2(dout), ids, scale, v2(dtable));
}

float RefBackend::cross_entropy(const Tensor& logits, std::span<const int32_t> labels,
                                float dscale, Tensor* dlogits) {
  HUGINN_ASSERT(labels.size() == size_t(logits.dim(0)), "cross_entropy: one label per row");
  return static_cast<float>(ref::cross_entropy(v2(logits), labels, dscale, v2(dlogits)));
}

}  // namespace huginn
