// bf16-weight GEMM  y[M, N] = x[M, K] · w[N, K]ᵀ  with fp32 accumulation (contract in kernels.h).
// M rows (tokens), K inner, N outputs; x, y fp32 row-strided, w bf16 row-strided.
//
// The weight panels are widened to fp32 while they are packed (exact: bf16 is the top half of an
// fp32), 16x16 blocks at a time in registers, and the fp32 register tile of gemm_f32 runs on them
// with x as it is. Measured on the development machine (Xeon with AVX512-BF16, 1 thread, same
// load): vdpbf16ps retires one instruction per two cycles where vfmadd231ps retires two per cycle,
// so its 64 flops per instruction make half the fp32 FMA peak (~90 vs ~179 GFLOP/s); a vdpbf16ps
// tile (12x32, pairs packed on the fly) ran at 64-74 GFLOP/s and oneDNN's avx512_core_bf16
// brgemm at ~80, against 87-128 for this widened fp32 path. bf16 weights therefore buy memory
// (half the bytes streamed, see the matvec kernels), not arithmetic, at prefill sizes.
#include <cstring>

#include "kernels/cpu/gemm_packed.h"

namespace huginn::cpu {

template <class V>
void gemm_bf16(const Ctx& c, const float* x, int64_t ldx, const uint16_t* w, int64_t ldw, float* y,
               int64_t ldy, int64_t M, int64_t N, int64_t K) {
  constexpr int MR = GemmTile<V>::MR, NV = GemmTile<V>::NV, NR = NV * V::W;
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {
    for (int64_t m = 0; m < M; ++m) std::memset(y + m * ldy, 0, N * sizeof(float));
    return;
  }
  auto pack_a = [&](int64_t m0, int64_t rows, int64_t k0, int64_t kc, float* dst) {
    pack_rows_u32(x + m0 * ldx + k0, ldx * 4, rows, kc, MR, reinterpret_cast<uint32_t*>(dst));
  };
  auto pack_b = [&](int64_t n0, int64_t cols, int64_t k0, int64_t kc, float* dst) {
    pack_transposed_bf16(w + n0 * ldw + k0, ldw, cols, kc, NR, dst);
  };
  packed_gemm<MR, NR, float>(c, kGemmBlocking, M, N, K, pack_a, pack_b, micro_f32<V, MR, NV>, y,
                             ldy, false);
}

#define HUGINN_INSTANTIATE(V)                                                              \
  template void gemm_bf16<V>(const Ctx&, const float*, int64_t, const uint16_t*, int64_t, \
                             float*, int64_t, int64_t, int64_t, int64_t);
HUGINN_FOR_EACH_VEC(HUGINN_INSTANTIATE)
#undef HUGINN_INSTANTIATE

}  // namespace huginn::cpu
