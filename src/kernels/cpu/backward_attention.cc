// Causal attention backward (mask aligned bottom-right, as the forward). q [T, H*D], k, v, dk, dv
// [S, H*D], out/dout/dq [T, H*D]. Per head, with P = softmax(q kᵀ/√D) recomputed:
//   dv = Pᵀ dO;  dP = dO vᵀ;  dS = P ∘ (dP − rowsum(dO ∘ O)) / √D;  dq = dS k;  dk = dSᵀ q.
// Heads are independent and each is done by one thread in a fixed order (thread-count
// independent). One row of P lives in a per-thread [S] buffer.
#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cpu/backward_kernels.h"

namespace huginn::cpu {
namespace {

float dot(const float* a, const float* b, int64_t n) {
  float s = 0;
  for (int64_t i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}
void axpy(float a, const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += a * x[i];
}

void head_backward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out,
                   const Tensor& dout, int64_t h, int64_t D, Tensor& dq, Tensor& dk, Tensor& dv,
                   std::vector<float>& P) {
  const int64_t T = q.dim(0), S = k.dim(0), off = h * D;
  const float scale = static_cast<float>(1.0 / std::sqrt(double(D)));
  P.resize(static_cast<size_t>(S));
  for (int64_t s = 0; s < S; ++s) {
    std::fill(dk.row(s) + off, dk.row(s) + off + D, 0.0f);
    std::fill(dv.row(s) + off, dv.row(s) + off + D, 0.0f);
  }
  for (int64_t t = 0; t < T; ++t) {
    const int64_t last = S - T + t;
    float* p = P.data();
    const float* qr = q.row(t) + off;
    float mx = -INFINITY;
    for (int64_t s = 0; s <= last; ++s) mx = std::max(mx, p[s] = dot(qr, k.row(s) + off, D) * scale);
    double sum = 0;
    for (int64_t s = 0; s <= last; ++s) sum += (p[s] = std::exp(p[s] - mx));
    const float inv = static_cast<float>(1.0 / sum);
    const float* go = dout.row(t) + off;
    const float rowdot = dot(go, out.row(t) + off, D);
    float* dqr = dq.row(t) + off;
    std::fill(dqr, dqr + D, 0.0f);
    for (int64_t s = 0; s <= last; ++s) {
      const float pr = p[s] * inv;
      axpy(pr, go, dv.row(s) + off, D);
      const float ds = pr * (dot(go, v.row(s) + off, D) - rowdot) * scale;
      axpy(ds, k.row(s) + off, dqr, D);
      axpy(ds, qr, dk.row(s) + off, D);
    }
  }
}

}  // namespace

void attention_backward(const Ctx& c, const Tensor& q, const Tensor& k, const Tensor& v,
                        const Tensor& out, const Tensor& dout, int n_heads, Tensor& dq,
                        Tensor& dk, Tensor& dv) {
  const int64_t T = q.dim(0), S = k.dim(0), D = q.dim(1) / n_heads;
  HUGINN_ASSERT(S >= T && v.dim(0) == S, "attention_backward: need S >= T keys");
  c.for_range(n_heads, 4 * T * S * D, [&](int64_t h0, int64_t h1) {
    thread_local std::vector<float> P;
    for (int64_t h = h0; h < h1; ++h) head_backward(q, k, v, out, dout, h, D, dq, dk, dv, P);
  });
}

}  // namespace huginn::cpu
