// GEMM y = x·wᵀ.  x [M, K] (tokens x inner), w [N, K] (a Linear weight as stored, F32, BF16, Q8
// or Q4), y [M, N]; x, y and F32 / BF16 w may be row-strided views. Also the strided-operand
// gemm_f32 the backward ops run on.
//
// One path for every M: the blocked GEMM of gemm_packed.h (stream loop order for M <= MR, the
// decode case; blocked above), with the weights transposed, widened (BF16) or dequantized (Q8,
// Q4) as they are packed. So every output is the same FMA chain over k in order whatever M:
// row-exact (kernels.h), and BF16 / Q8 / Q4 results are bit-identical to F32 on the converted
// weights.
//
// Why not vdpbf16ps for BF16 weights (where the CPU has AVX512_BF16): one reduction order must
// serve every M, and vdpbf16ps needs x rounded to BF16 (2^-9 relative error per element, against
// none here). At prefill sizes it does not win either: on a Xeon with AVX512_BF16 it retired one
// instruction per two cycles against two FMAs per cycle (~90 vs ~179 GFLOP/s peak; a 12x32
// vdpbf16ps tile ran at 64-74 GFLOP/s and oneDNN's brgemm at ~80, against 87-128 for the widened
// F32 path). At decode, where bytes matter, BF16 weights already halve what is streamed.
// Training in BF16 mixed precision (--precision bf16) is another contract, x rounded too, and
// does use vdpbf16ps where it measures faster (gemm_bf16.cc): on an AMD Zen 4 it retires at
// twice the F32 FMA rate.
#include "kernels/cpu/gemm_packed.h"

namespace huginn::cpu {
namespace {

namespace isa = HUGINN_ISA_NS;

// The fused decode kernels exist in the SIMD objects only (the generic one packs and runs the tile).
#if HUGINN_KERNEL_ISA != HUGINN_ISA_GENERIC
#define HUGINN_STREAM(call) call
#else
#define HUGINN_STREAM(call) \
  (void)n0, (void)cols, (void)k0, (void)kc, (void)a, (void)rows, (void)cp, (void)ldc, (void)load_c
#endif

// C[M, N] = x · wᵀ for weights of any format; pack_rows(n0, cols, k0, kc, dst) packs w's rows,
// stream_rows(n0, cols, k0, kc, a, rows, c, load_c) is the fused decode kernel on them.
template <class V, class PackRows, class StreamRows>
void matmul_packed(const Ctx& c, const Tensor& x, float* y, int64_t ldy, int64_t N,
                   const PackRows& pack_rows, const StreamRows& stream_rows) {
  const int64_t M = x.dim(0), K = x.dim(1), ldx = x.stride(0);
  const float* xp = x.row(0);
  auto pa = [&](int64_t m0, int rows, int64_t k0, int64_t kc, float* dst) {
    isa::pack_a_rows(xp + m0 * ldx + k0, ldx, rows, kc, dst);
  };
#if HUGINN_KERNEL_ISA != HUGINN_ISA_GENERIC
  packed_gemm<V>(c, M, N, K, pa, pack_rows, y, ldy, false,
                 [&](int64_t n0, int cols, int64_t k0, int64_t kc, const float* a, int rows,
                     float* cp, bool load_c) { stream_rows(n0, cols, k0, kc, a, rows, cp, ldy, load_c); });
#else
  (void)stream_rows;
  packed_gemm<V>(c, M, N, K, pa, pack_rows, y, ldy, false);
#endif
}

bool zero_or_empty(const Tensor& x, int64_t N, Tensor& y) {
  const int64_t M = x.dim(0), K = x.dim(1);
  if (M == 0 || N == 0) return true;
  if (K > 0) return false;
  for (int64_t m = 0; m < M; ++m) std::memset(y.row(m), 0, N * sizeof(float));
  return true;
}

}  // namespace

template <class V>
void gemm_f32(const Ctx& c, const float* a, int64_t ai, int64_t ak, const float* b, int64_t bk,
              int64_t bn, float* y, int64_t ldy, int64_t M, int64_t N, int64_t K,
              bool accumulate) {
  constexpr int NR = GemmTile<V>::NR;
  if (gemm_is_trivial<V>(y, ldy, M, N, K, accumulate)) return;
  auto pa = [&](int64_t m0, int rows, int64_t k0, int64_t kc, float* dst) {
    if (ak == 1) {
      isa::pack_a_rows(a + m0 * ai + k0, ai, rows, kc, dst);
    } else {
      isa::pack_a_cols(a + m0 + k0 * ak, ak, rows, kc, dst);
    }
  };
  auto pb = [&](int64_t n0, int cols, int64_t k0, int64_t kc, float* dst) {
    if (bk == 1) {  // a weight [N, K] as stored: transpose
      isa::pack_b_rows_f32(b + n0 * bn + k0, bn, cols, kc, NR, dst);
    } else {
      isa::pack_b_cols_f32(b + k0 * bk + n0, bk, cols, kc, NR, dst);
    }
  };
  packed_gemm<V>(c, M, N, K, pa, pb, y, ldy, accumulate);
}

template <class V>
void matmul(const Ctx& c, const Tensor& x, const Tensor& w, Tensor& y) {
  gemm_calls<V>.fetch_add(1, std::memory_order_relaxed);
  const int64_t K = x.dim(1), N = w.dim(0);
  HUGINN_ASSERT(w.dim(1) == K && y.dim(0) == x.dim(0) && y.dim(1) == N, "matmul: shape mismatch");
  if (zero_or_empty(x, N, y)) return;
  const float* wp = w.row(0);
  const int64_t ldw = w.stride(0);
  constexpr int NR = GemmTile<V>::NR;
  matmul_packed<V>(
      c, x, y.row(0), y.stride(0), N,
      [&](int64_t n0, int cols, int64_t k0, int64_t kc, float* dst) {
        isa::pack_b_rows_f32(wp + n0 * ldw + k0, ldw, cols, kc, NR, dst);
      },
      [&](int64_t n0, int cols, int64_t k0, int64_t kc, const float* a, int rows, float* cp,
          int64_t ldc, bool load_c) {
        HUGINN_STREAM(isa::stream_rows_f32(wp + n0 * ldw + k0, ldw, cols, kc, NR, a, rows, cp,
                                           ldc, load_c));
      });
}

template <class V>
void matmul_lowp(const Ctx& c, const Tensor& x, const Tensor& w, Tensor& y) {
  gemm_calls<V>.fetch_add(1, std::memory_order_relaxed);
  const int64_t K = x.dim(1), N = w.dim(0);
  HUGINN_ASSERT(w.ndim() == 2 && w.dim(1) == K && y.dim(0) == x.dim(0) && y.dim(1) == N,
                "matmul: shape mismatch");
  HUGINN_ASSERT((w.dtype() == DType::kBF16 && w.stride(1) == 1) ||
                    (is_quantized(w.dtype()) && K % kQ8Block == 0),
                "matmul: weights must be F32, row-strided BF16, Q8 or Q4");
  if (zero_or_empty(x, N, y)) return;
  constexpr int NR = GemmTile<V>::NR;
  if (w.dtype() == DType::kBF16) {
    const uint16_t* wp = w.data<uint16_t>();
    const int64_t ldw = w.stride(0);
    matmul_packed<V>(
        c, x, y.row(0), y.stride(0), N,
        [&](int64_t n0, int cols, int64_t k0, int64_t kc, float* dst) {
          isa::pack_b_rows_bf16(wp + n0 * ldw + k0, ldw, cols, kc, NR, dst);
        },
        [&](int64_t n0, int cols, int64_t k0, int64_t kc, const float* a, int rows, float* cp,
            int64_t ldc, bool load_c) {
          HUGINN_STREAM(isa::stream_rows_bf16(wp + n0 * ldw + k0, ldw, cols, kc, NR, a, rows, cp,
                                              ldc, load_c));
        });
    return;
  }
  if (w.dtype() == DType::kQ4) {
    const uint8_t* q = w.q4_codes();
    const uint16_t* s = w.q4_scales();
    matmul_packed<V>(
        c, x, y.row(0), y.stride(0), N,
        [&](int64_t n0, int cols, int64_t k0, int64_t kc, float* dst) {
          isa::pack_b_rows_q4(q + n0 * K / 2, s + n0 * (K / kQ4Block), K, cols, k0, kc, NR, dst);
        },
        [&](int64_t n0, int cols, int64_t k0, int64_t kc, const float* a, int rows, float* cp,
            int64_t ldc, bool load_c) {
          HUGINN_STREAM(isa::stream_rows_q4(q + n0 * K / 2, s + n0 * (K / kQ4Block), K, cols, k0,
                                            kc, NR, a, rows, cp, ldc, load_c));
        });
    return;
  }
  const int8_t* q = w.q8_values();
  const uint16_t* s = w.q8_scales();
  matmul_packed<V>(
      c, x, y.row(0), y.stride(0), N,
      [&](int64_t n0, int cols, int64_t k0, int64_t kc, float* dst) {
        isa::pack_b_rows_q8(q + n0 * K, s + n0 * (K / kQ8Block), K, cols, k0, kc, NR, dst);
      },
      [&](int64_t n0, int cols, int64_t k0, int64_t kc, const float* a, int rows, float* cp,
          int64_t ldc, bool load_c) {
        HUGINN_STREAM(isa::stream_rows_q8(q + n0 * K, s + n0 * (K / kQ8Block), K, cols, k0, kc,
                                          NR, a, rows, cp, ldc, load_c));
      });
}

template <class V>
GemmInfo gemm_info() {
  return {GemmTile<V>::MR, GemmTile<V>::NR, gemm_blocking_now<V>()};
}

#define HUGINN_INSTANTIATE(V)                                                                  \
  template void matmul<V>(const Ctx&, const Tensor&, const Tensor&, Tensor&);                  \
  template void matmul_lowp<V>(const Ctx&, const Tensor&, const Tensor&, Tensor&);             \
  template void gemm_f32<V>(const Ctx&, const float*, int64_t, int64_t, const float*, int64_t, \
                            int64_t, float*, int64_t, int64_t, int64_t, int64_t, bool);        \
  template GemmInfo gemm_info<V>();
HUGINN_FOR_EACH_VEC(HUGINN_INSTANTIATE)
#undef HUGINN_INSTANTIATE

}  // namespace huginn::cpu
HUGINN_KERNELS_END
