// The blocked GEMM both packed GEMMs (fp32 in gemm.cc, bf16 in gemm_bf16.cc) run on:
//   C[M, N] (= or +=) A[M, K] · B[K, N]
// with both operands copied into cache-sized panels first (the GotoBLAS/BLIS scheme):
//   per thread, for its own range of N panels:  for each NC block of columns, for each KC block
//   of k:  pack B (KC x NC, L2)  then for each MC block of rows:  pack A (MC x KC, L2),  then a
//   register tile of MR rows x NR columns for every (panel, tile): MR broadcasts of A against
//   NR/W vectors of B per k, C tile loaded/stored once per KC block.
// Packing costs (M + N)·K copies against 2·M·N·K flops, and makes every inner loop read two
// contiguous streams (no L1 set aliasing at power-of-two K, no strided weight rows).
// Work is split over N panels only, and each C element is one accumulation chain over k in
// order, so results do not depend on the thread count.
// Shapes here are in packed units: for bf16 one packed k is a pair of k values.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "kernels/cpu/kernels.h"
#include "kernels/cpu/simd.h"

namespace huginn::cpu {

// A per-calling-thread, 64-byte-aligned buffer of at least `bytes` for the packed panels (slot 0:
// B, slot 1: A), reused across calls; separate from the scratch() slots other kernels use.
void* gemm_buffer(int slot, size_t bytes);

// Blocking of one packed GEMM; P is the packed element (float, or uint32_t = a bf16 pair).
struct GemmBlocking {
  int64_t kc, mc, nc;
};

// The fp32 register tile per instruction set (MR rows of A x NV vectors of B) and the blocking:
// a B micro-panel (kc x NR) stays in L1, an A block (mc x kc) and a B block (kc x nc) in L2.
template <class V>
struct GemmTile {
  static constexpr int MR = V::kGemmRows, NV = V::kGemmVecs;
};
// Measured at 1 thread (bench-m shapes): 12x2 and 6x4 tiles, kc 128..384, mc 96..192, nc
// 1024..2048 all within the machine's noise (~10%) of each other.
inline constexpr GemmBlocking kGemmBlocking{256, 192, 1024};

// pack_a(m0, rows, k0, kc, P* dst): dst[k][MR] for k < kc, rows >= `rows` zero.
// pack_b(n0, cols, k0, kc, P* dst): dst[k][NR] for k < kc, columns >= `cols` zero.
// micro(a, b, kc, c, ldc, mr, nr, load_c): C tile (mr x nr at c) (= or +=) a·b.
template <int MR, int NR, class P, class PackA, class PackB, class Micro>
void packed_gemm(const Ctx& c, const GemmBlocking& bl, int64_t M, int64_t N, int64_t K,
                 const PackA& pack_a, const PackB& pack_b, const Micro& micro, float* C,
                 int64_t ldc, bool accumulate) {
  const int64_t panels = (N + NR - 1) / NR;
  const int64_t kc_max = std::min(bl.kc, K);
  const int64_t mc_max = std::min((M + MR - 1) / MR * MR, bl.mc / MR * MR);
  const int64_t nc_max = std::min(panels * NR, std::max<int64_t>(NR, bl.nc / NR * NR));
  // Unit of work: one panel of NR columns over all M and K.
  c.for_range(panels, 2 * M * K * NR, [&](int64_t p0, int64_t p1) {
    P* bbuf = static_cast<P*>(gemm_buffer(0, kc_max * nc_max * sizeof(P)));
    P* abuf = static_cast<P*>(gemm_buffer(1, kc_max * mc_max * sizeof(P)));
    const int64_t n_end = std::min(N, p1 * NR);
    for (int64_t jc = p0 * NR; jc < n_end; jc += nc_max) {
      const int64_t nc = std::min(nc_max, n_end - jc);
      for (int64_t k0 = 0; k0 < K; k0 += kc_max) {
        const int64_t kc = std::min(kc_max, K - k0);
        const bool load_c = accumulate || k0 > 0;
        for (int64_t j = 0; j < nc; j += NR)
          pack_b(jc + j, std::min<int64_t>(NR, nc - j), k0, kc, bbuf + j * kc);
        for (int64_t ic = 0; ic < M; ic += mc_max) {
          const int64_t mc = std::min(mc_max, M - ic);
          for (int64_t i = 0; i < mc; i += MR)
            pack_a(ic + i, std::min<int64_t>(MR, mc - i), k0, kc, abuf + i * kc);
          for (int64_t j = 0; j < nc; j += NR) {
            const int nr = static_cast<int>(std::min<int64_t>(NR, nc - j));
            for (int64_t i = 0; i < mc; i += MR) {
              const int mr = static_cast<int>(std::min<int64_t>(MR, mc - i));
              micro(abuf + i * kc, bbuf + j * kc, kc, C + (ic + i) * ldc + jc + j, ldc, mr, nr,
                    load_c);
            }
          }
        }
      }
    }
  });
}

// The fp32 register tile: C[mr x nr] (= or +=) a[kc][MR] · b[kc][NR], NR = NV vectors.
template <class V, int MR, int NV>
void micro_f32(const float* a, const float* b, int64_t kc, float* c, int64_t ldc, int mr, int nr,
               bool load_c) {
  using R = typename V::R;
  constexpr int W = V::W, NR = NV * W;
  R acc[MR][NV];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NV; ++j) {
      const int n = std::clamp(nr - j * W, 0, W);
      acc[i][j] = load_c && i < mr && n > 0 ? ld<V>(c + i * ldc + j * W, n) : V::zero();
    }
  for (int64_t k = 0; k < kc; ++k) {
    R bv[NV];
    for (int j = 0; j < NV; ++j) bv[j] = V::load(b + k * NR + j * W);
    for (int i = 0; i < MR; ++i) {
      const R av = V::set1(a[k * MR + i]);
      for (int j = 0; j < NV; ++j) acc[i][j] = V::fmadd(av, bv[j], acc[i][j]);
    }
  }
  for (int i = 0; i < mr; ++i)
    for (int j = 0; j < NV; ++j) {
      const int n = std::clamp(nr - j * W, 0, W);
      if (n > 0) st<V>(c + i * ldc + j * W, acc[i][j], n);
    }
}

// dst[k][NW] = element k of row n of src (32-bit elements: fp32 values or bf16 pairs; rows
// ld_bytes apart, any alignment) for n < cols and k < kvalid; zero elsewhere up to kc x NW.
// 16x16 blocks go through registers on AVX-512.
void pack_transposed_u32(const void* src, int64_t ld_bytes, int64_t cols, int64_t kvalid,
                         int64_t kc, int NW, uint32_t* dst);

// dst[k][MR] = element k of row i of src for i < rows, k < kc (zero for rows >= `rows`), rows
// ld_bytes apart: an A panel from a row-major operand. In registers on AVX-512 when MR <= 16.
void pack_rows_u32(const void* src, int64_t ld_bytes, int64_t rows, int64_t kc, int MR,
                   uint32_t* dst);

// dst[k][NW] = float(src[n][k]) for bf16 rows (ld elements apart), n < cols, k < kc; columns
// >= cols zero. Widening is exact (bf16 is the top half of an fp32).
void pack_transposed_bf16(const uint16_t* src, int64_t ld, int64_t cols, int64_t kc, int NW,
                          float* dst);

}  // namespace huginn::cpu
