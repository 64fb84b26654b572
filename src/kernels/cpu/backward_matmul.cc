// matmul backward for y = x·wᵀ (x [M, K], w [N, K], dy [M, N]) on the forward's packed GEMM,
// which takes either operand transposed, so nothing is copied besides its own panels:
//   dx  = dy·w      A = dy [M, N],            B = w  [N, K] (rows along K)
//   dw += dyᵀ·x     A = dyᵀ (dy read by column), B = x  [M, K], accumulated in place
// Same speed as the forward and the same thread-count independence (splits over outputs).
#include "kernels/cpu/backward_kernels.h"

namespace huginn::cpu {

void matmul_backward(const Ctx& c, GemmF32Fn gemm, const Tensor& x, const Tensor& w,
                     const Tensor& dy, Tensor* dx, Tensor* dw) {
  const int64_t M = x.dim(0), K = x.dim(1), N = w.dim(0);
  HUGINN_ASSERT(w.dim(1) == K && dy.dim(0) == M && dy.dim(1) == N, "matmul_backward: shapes");
  if (dx)
    gemm(c, dy.row(0), dy.stride(0), 1, w.row(0), w.stride(0), 1, dx->row(0), dx->stride(0), M,
         K, N, false);
  if (dw)
    gemm(c, dy.row(0), 1, dy.stride(0), x.row(0), x.stride(0), 1, dw->row(0), dw->stride(0), N,
         K, M, true);
}

}  // namespace huginn::cpu
