// Causal attention backward (mask aligned bottom-right, as the forward). q [T, H*D], k, v, dk, dv
// [S, H*D], out/dout/dq [T, H*D]. Per head, with P = softmax(q kᵀ/√D) recomputed:
//   dv = Pᵀ dO;  dP = dO vᵀ;  dS = P ∘ (dP − rowsum(dO ∘ O)) / √D;  dq = dS k;  dk = dSᵀ q.
// Per head, blocks of kBlock queries, each a handful of packed GEMMs on [rows, keys] matrices
// (P, dS) that stay in L2; dk and dv accumulate over the blocks in order. Heads are independent
// and each is done by one thread (thread-count independent).
#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernels/cpu/backward_kernels.h"

namespace huginn::cpu {
namespace {

constexpr int64_t kBlock = 64;

struct HeadArgs {
  const Tensor &q, &k, &v, &out, &dout;
  Tensor &dq, &dk, &dv;
  int64_t D;
};

// Rows t0..t0+bq of head `off`: p, ds are [bq, n] buffers (n = keys the last row sees).
void block_backward(const Ctx& c, GemmF32Fn gemm, const HeadArgs& a, int64_t off, int64_t t0,
                    int64_t bq, float* p, float* ds) {
  const int64_t T = a.q.dim(0), S = a.k.dim(0), D = a.D, n = S - T + t0 + bq;
  const float scale = static_cast<float>(1.0 / std::sqrt(double(D)));
  const float* q0 = a.q.row(t0) + off;
  const float* go = a.dout.row(t0) + off;
  const int64_t ldq = a.q.stride(0), ldo = a.dout.stride(0);
  gemm(c, q0, ldq, 1, a.k.row(0) + off, 1, a.k.stride(0), p, n, bq, n, D, false);  // scores
  gemm(c, go, ldo, 1, a.v.row(0) + off, 1, a.v.stride(0), ds, n, bq, n, D, false);  // dP
  for (int64_t i = 0; i < bq; ++i) {
    float* pr = p + i * n;
    float* dr = ds + i * n;
    const int64_t ni = n - bq + i + 1;
    float mx = -INFINITY;
    for (int64_t s = 0; s < ni; ++s) mx = std::max(mx, pr[s] *= scale);
    double sum = 0;
    for (int64_t s = 0; s < ni; ++s) sum += (pr[s] = std::exp(pr[s] - mx));
    const float inv = static_cast<float>(1.0 / sum);
    const float* gr = go + i * ldo;
    const float* orow = a.out.row(t0 + i) + off;
    float rowdot = 0;
    for (int64_t d = 0; d < D; ++d) rowdot += gr[d] * orow[d];
    for (int64_t s = 0; s < ni; ++s) {
      pr[s] *= inv;
      dr[s] = pr[s] * (dr[s] - rowdot) * scale;
    }
    std::fill(pr + ni, pr + n, 0.0f);
    std::fill(dr + ni, dr + n, 0.0f);
  }
  gemm(c, ds, n, 1, a.k.row(0) + off, a.k.stride(0), 1, a.dq.row(t0) + off, a.dq.stride(0), bq, D,
       n, false);                                                                    // dq = dS k
  gemm(c, ds, 1, n, q0, ldq, 1, a.dk.row(0) + off, a.dk.stride(0), n, D, bq, true);  // dk += dSᵀq
  gemm(c, p, 1, n, go, ldo, 1, a.dv.row(0) + off, a.dv.stride(0), n, D, bq, true);   // dv += PᵀdO
}

}  // namespace

void attention_backward(const Ctx& c, GemmF32Fn gemm, const Tensor& q, const Tensor& k,
                        const Tensor& v, const Tensor& out, const Tensor& dout, int n_heads,
                        Tensor& dq, Tensor& dk, Tensor& dv) {
  const int64_t T = q.dim(0), S = k.dim(0), D = q.dim(1) / n_heads;
  HUGINN_ASSERT(S >= T && v.dim(0) == S, "attention_backward: need S >= T keys");
  const HeadArgs a{q, k, v, out, dout, dq, dk, dv, D};
  c.for_range(n_heads, 4 * T * S * D, [&](int64_t h0, int64_t h1) {
    const int64_t bmax = std::min(kBlock, T);
    float* p = scratch(0, bmax * S);
    float* ds = scratch(1, bmax * S);
    for (int64_t h = h0; h < h1; ++h) {
      const int64_t off = h * D;
      for (int64_t s = 0; s < S; ++s) {
        std::fill(dk.row(s) + off, dk.row(s) + off + D, 0.0f);
        std::fill(dv.row(s) + off, dv.row(s) + off + D, 0.0f);
      }
      for (int64_t t0 = 0; t0 < T; t0 += kBlock)
        block_backward(c, gemm, a, off, t0, std::min(kBlock, T - t0), p, ds);
    }
  });
}

}  // namespace huginn::cpu
