// RefBackend's backward ops: Tensor glue around the scalar kernels of ref_grad.h (float).
// T = tokens, S = keys, E = n_embd, H*D = heads x head_dim, V = vocab.
#include "kernels/ref/ref_backend.h"
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
