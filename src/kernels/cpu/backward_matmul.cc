// matmul backward for y = x·wᵀ (x [M, K], w [N, K], dy [M, N]) on top of the forward GEMM:
//   dx = dy·w      = gemm(dy, wᵀ)           wᵀ [K, N] packed once (N·K, vs M·N·K of work)
//   dw += dyᵀ·x    = gemm(dyᵀ, xᵀ), added   dyᵀ [N, M], xᵀ [K, M]
// so the backward runs at the forward GEMM's speed and inherits its thread-count independence.
#include <algorithm>
#include <vector>

#include "kernels/cpu/backward_kernels.h"

namespace huginn::cpu {
namespace {

// Buffers of the calling thread, separate from the forward kernels' scratch slots.
Tensor buffer(int slot, int64_t rows, int64_t cols) {
  thread_local std::vector<float> bufs[3];
  std::vector<float>& b = bufs[slot];
  if (b.size() < static_cast<size_t>(rows * cols)) b.resize(static_cast<size_t>(rows * cols));
  return Tensor::wrap(b.data(), {rows, cols}, DType::kF32);
}

// dst [C, R] = srcᵀ for src [R, C] (row-strided), in 32x32 tiles.
void transpose(const Ctx& c, const Tensor& src, Tensor& dst) {
  const int64_t R = src.dim(0), C = src.dim(1);
  constexpr int64_t B = 32;
  c.for_range((C + B - 1) / B, B * R, [&](int64_t b0, int64_t b1) {
    for (int64_t c0 = b0 * B; c0 < std::min(C, b1 * B); c0 += B)
      for (int64_t r0 = 0; r0 < R; r0 += B)
        for (int64_t col = c0; col < std::min(C, c0 + B); ++col) {
          float* d = dst.row(col);
          for (int64_t r = r0; r < std::min(R, r0 + B); ++r) d[r] = src.row(r)[col];
        }
  });
}

}  // namespace

void matmul_backward(const Ctx& c, MatmulFn mm, const Tensor& x, const Tensor& w,
                     const Tensor& dy, Tensor* dx, Tensor* dw) {
  const int64_t M = x.dim(0), K = x.dim(1), N = w.dim(0);
  HUGINN_ASSERT(w.dim(1) == K && dy.dim(0) == M && dy.dim(1) == N, "matmul_backward: shapes");
  if (dx) {
    Tensor wt = buffer(0, K, N);
    transpose(c, w, wt);
    mm(c, dy, wt, *dx);
  }
  if (dw) {
    Tensor dyt = buffer(0, N, M), xt = buffer(1, K, M), g = buffer(2, N, K);
    transpose(c, dy, dyt);
    transpose(c, x, xt);
    mm(c, dyt, xt, g);
    c.for_range(N, K, [&](int64_t n0, int64_t n1) {
      for (int64_t n = n0; n < n1; ++n) {
        float* d = dw->row(n);
        const float* s = g.row(n);
        for (int64_t k = 0; k < K; ++k) d[k] += s[k];
      }
    });
  }
}

}  // namespace huginn::cpu
