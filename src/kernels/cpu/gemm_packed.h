// The blocked GEMM every matmul of the fast CPU backend runs on (F32, BF16, Q8 and Q4 weights, and
// the backward's transposed operands):
//   C[M, N] (= or +=) A[M, K] · B[K, N]       M rows of x, K inner, N outputs
// with both operands copied into panels first (the GotoBLAS/BLIS scheme): A panels [k][mr] of
// up to MR rows, B micro-panels [k][NR] (NR = NV vectors), and a register tile of mr x NR that
// runs over one of each: per k, mr broadcasts of A against NV vectors of B.
//
// Row-exact by construction: every C element is one FMA chain over k = 0..K-1 in order, from +0
// (or from C when accumulating); between k blocks the running sum is stored in C as an F32 and
// loaded again, which changes nothing. The tile height mr, the blocking and the thread split
// only decide which chains run side by side, never the order inside one, so a row's bits do not
// depend on how many rows came with it (1 or 1000), on this machine's cache sizes or on the
// thread count. That is what lets a batch of decode rows share one pass over the weights.
//
// Two loop orders, both over the calling thread's own range of B micro-panels (threads split
// N only):
// - stream (M <= max(2 MR, 16): decode, and the rows of a depth-parallel decoder's pass): for
//   each micro-panel, its weight rows read front to back over the whole of K, transposed in
//   registers and multiplied straight into the tile, once per block of <= MR rows of A (the
//   blocks after the first find the rows in cache; the generic object packs k blocks and runs
//   every block's tile on each). A is packed once, whole.
// - blocked (larger M): for each nc block, k block: [pack the B block when M needs several mc
//   blocks], for each mc block: pack A (L2), for each micro-panel [packed just in time when one
//   mc block holds all of M] (L1), for each A panel: the tile.
// Blocking (kc, mc, nc) comes from the cache sizes found at run time (cpu_info.h).
#pragma once

#include "kernels/cpu/simd.h"

namespace huginn::cpu {

// The register tile of this instruction set: MR rows of A x NV vectors of B.
template <class V>
struct GemmTile {
  static constexpr int MR = V::kGemmRows, NV = V::kGemmVecs, NR = NV * V::W;
};

// This instruction set's blocking on this machine (or the test override), kc a multiple of 64.
template <class V>
GemmBlocking gemm_blocking_now() {
  static const GemmBlocking computed =
      gemm_blocking_from_env(gemm_blocking(cpu_caches(), GemmTile<V>::MR, GemmTile<V>::NR));
  GemmBlocking b;
  return gemm_blocking_override(&b) ? b : computed;
}

namespace HUGINN_ISA_NS {

// Packers (gemm_pack.cc). A panels are [k][rows] (compact: `rows` <= 16 floats per k); B
// micro-panels are [k][NR] with the columns from `cols` on zero. Sources may be unaligned.
// A(i, k) = src[i * ld + k] (rows of x).
void pack_a_rows(const float* src, int64_t ld, int rows, int64_t kc, float* dst);
// A(i, k) = src[i + k * ld] (a transposed operand, read along its columns).
void pack_a_cols(const float* src, int64_t ld, int rows, int64_t kc, float* dst);
// B(k, n) = w[n * ld + k]: F32 / BF16 weight rows, transposed (BF16 widened exactly).
void pack_b_rows_f32(const float* w, int64_t ld, int64_t cols, int64_t kc, int NR, float* dst);
void pack_b_rows_bf16(const uint16_t* w, int64_t ld, int64_t cols, int64_t kc, int NR,
                      float* dst);
// Q8 weight rows n0.. (values q + n * K, F16 scales s + n * (K / 32)), k0 a multiple of 32:
// B(k, n) = q[n][k0 + k] · scale[n][(k0 + k) / 32], exact in F32.
void pack_b_rows_q8(const int8_t* q, const uint16_t* s, int64_t K, int64_t cols, int64_t k0,
                    int64_t kc, int NR, float* dst);
// Q4 weight rows n0.. (codes q + n * K / 2, F16 scales s + n * (K / 32)), k0 a multiple of 32:
// B(k, n) = (code[n][k0 + k] - 8) · scale[n][(k0 + k) / 32], exact in F32.
void pack_b_rows_q4(const uint8_t* q, const uint16_t* s, int64_t K, int64_t cols, int64_t k0,
                    int64_t kc, int NR, float* dst);
// B(k, n) = b[k * ld + n] (rows of B along N), copied.
void pack_b_cols_f32(const float* b, int64_t ld, int64_t cols, int64_t kc, int NR, float* dst);

#if HUGINN_KERNEL_ISA != HUGINN_ISA_GENERIC
// Decode (M <= kStreamMaxRows): one micro-panel's k block of weight rows (as the pack_b_rows_*
// above take them) transposed in registers and multiplied straight into C[M][cols] (= or += when
// load_c), with A packed as [kc][M]: the FMA chains of pack_b_rows_* + micro_tile, without the
// round trip of the panel through memory.
inline constexpr int kStreamMaxRows = GemmTile<HUGINN_VEC>::MR;
void stream_rows_f32(const float* w, int64_t ld, int64_t cols, int64_t kc, int NR, const float* a,
                     int M, float* c, int64_t ldc, bool load_c);
void stream_rows_bf16(const uint16_t* w, int64_t ld, int64_t cols, int64_t kc, int NR,
                      const float* a, int M, float* c, int64_t ldc, bool load_c);
void stream_rows_q8(const int8_t* q, const uint16_t* s, int64_t K, int64_t cols, int64_t k0,
                    int64_t kc, int NR, const float* a, int M, float* c, int64_t ldc, bool load_c);
void stream_rows_q4(const uint8_t* q, const uint16_t* s, int64_t K, int64_t cols, int64_t k0,
                    int64_t kc, int NR, const float* a, int M, float* c, int64_t ldc, bool load_c);
#endif

}  // namespace HUGINN_ISA_NS

// The entry of a strided GEMM (gemm_f32, gemm_bf16): counts the call; true when there is
// nothing to multiply (M or N empty, or K empty: then y = 0 unless accumulating).
template <class V>
bool gemm_is_trivial(float* y, int64_t ldy, int64_t M, int64_t N, int64_t K, bool accumulate) {
  gemm_calls<V>.fetch_add(1, std::memory_order_relaxed);
  if (M <= 0 || N <= 0) return true;
  if (K > 0) return false;
  if (!accumulate)
    for (int64_t m = 0; m < M; ++m) std::memset(y + m * ldy, 0, N * sizeof(float));
  return true;
}

// A register tile's accumulators from C (load_c) or zero, and back to C: columns past nr are
// neither read nor written.
template <class V, int MR, int NV>
inline void tile_load(typename V::R (&acc)[MR][NV], const float* c, int64_t ldc, int nr, bool load_c) {
  constexpr int W = V::W;
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NV; ++j) {
      const int n = std::clamp(nr - j * W, 0, W);
      acc[i][j] = load_c && n > 0 ? ld<V>(c + i * ldc + j * W, n) : V::zero();
    }
}
template <class V, int MR, int NV>
inline void tile_store(const typename V::R (&acc)[MR][NV], float* c, int64_t ldc, int nr) {
  constexpr int W = V::W;
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NV; ++j) {
      const int n = std::clamp(nr - j * W, 0, W);
      if (n > 0) st<V>(c + i * ldc + j * W, acc[i][j], n);
    }
}

// The register tile: C[MR x nr] (= or +=) a[kc][MR] · b[kc][NR], NR = NV vectors.
template <class V, int MR, int NV>
void micro_tile(const float* a, const float* b, int64_t kc, float* c, int64_t ldc, int nr,
                bool load_c) {
  using R = typename V::R;
  constexpr int W = V::W, NR = NV * W;
  R acc[MR][NV];
  tile_load<V>(acc, c, ldc, nr, load_c);
#pragma GCC unroll 4
  for (int64_t k = 0; k < kc; ++k) {
    R bv[NV];
    for (int j = 0; j < NV; ++j) bv[j] = V::load(b + k * NR + j * W);
    for (int i = 0; i < MR; ++i) {
      const R av = V::set1(a[k * MR + i]);
      for (int j = 0; j < NV; ++j) acc[i][j] = V::fmadd(av, bv[j], acc[i][j]);
    }
  }
  tile_store<V>(acc, c, ldc, nr);
}

using MicroFn = void (*)(const float*, const float*, int64_t, float*, int64_t, int, bool);

// micro_tile for every panel height 1..MR (index = rows), so that a short panel (the last rows
// of M, or decode's one row) costs its own rows only.
template <class V, int NV, int... I>
constexpr std::array<MicroFn, sizeof...(I) + 1> micro_table(std::integer_sequence<int, I...>) {
  return {nullptr, &micro_tile<V, I + 1, NV>...};
}
template <class V>
inline constexpr auto kMicro = micro_table<V, GemmTile<V>::NV>(
    std::make_integer_sequence<int, GemmTile<V>::MR>{});

// Decode's loop order runs up to this many rows (two register tiles, and at least 16: the rows a
// depth-parallel decoder puts into one pass); the blocked path above it.
template <class V>
constexpr int64_t stream_row_limit() {
  return std::max(2 * GemmTile<V>::MR, 16);
}

// The stream loop order (M <= stream_row_limit): each weight micro-panel in turn, read once from
// memory, against every row block of A (blocks of at most MR rows, as even as can be, each packed
// once, whole): fused, each block streams the micro-panel's rows through the registers (the
// second block finds them in L1/L2); otherwise one packed k block of the panel serves every block.
template <class V, class PackA, class PackB, class StreamB>
void stream_gemm(const Ctx& c, int64_t M, int64_t N, int64_t K, const PackA& pack_a,
                 const PackB& pack_b, float* C, int64_t ldc, bool accumulate,
                 const StreamB& stream_b, const MicroFn* tiles) {
  constexpr int MR = GemmTile<V>::MR, NR = GemmTile<V>::NR;
  const GemmBlocking bl = gemm_blocking_now<V>();
  const int64_t panels = (N + NR - 1) / NR;
  const int blocks = static_cast<int>((M + MR - 1) / MR);
  // Block b: rows [row0(b), row0(b + 1)), packed at abuf + row0(b) * K as [K][rows].
  auto row0 = [&](int b) { return static_cast<int>(M * b / blocks); };
  c.for_range(panels, 2 * M * K * NR, [&](int64_t p0, int64_t p1) {
    float* abuf = static_cast<float*>(gemm_buffer(1, K * M * sizeof(float)));
    for (int b = 0; b < blocks; ++b) {
      const int rows = row0(b + 1) - row0(b);
      float* ab = abuf + row0(b) * K;
      for (int64_t k0 = 0; k0 < K; k0 += bl.kc)
        pack_a(row0(b), rows, k0, std::min(bl.kc, K - k0), ab + k0 * rows);
    }
    if constexpr (!std::is_same_v<StreamB, std::nullptr_t>) {
      // Fused: the whole of K at once, so each weight row is read front to back.
      for (int64_t p = p0; p < p1; ++p)
        for (int b = 0; b < blocks; ++b)
          stream_b(p * NR, static_cast<int>(std::min<int64_t>(NR, N - p * NR)), 0, K,
                   abuf + row0(b) * K, row0(b + 1) - row0(b), C + row0(b) * ldc + p * NR,
                   accumulate);
    } else {
      float* bbuf = static_cast<float*>(gemm_buffer(0, bl.kc * NR * sizeof(float)));
      for (int64_t p = p0; p < p1; ++p) {
        const int nr = static_cast<int>(std::min<int64_t>(NR, N - p * NR));
        for (int64_t k0 = 0; k0 < K; k0 += bl.kc) {
          const int64_t kc = std::min(bl.kc, K - k0);
          pack_b(p * NR, nr, k0, kc, bbuf);
          for (int b = 0; b < blocks; ++b) {
            const int rows = row0(b + 1) - row0(b);
            tiles[rows](abuf + row0(b) * K + k0 * rows, bbuf, kc, C + row0(b) * ldc + p * NR, ldc,
                        nr, accumulate || k0 > 0);
          }
        }
      }
    }
  });
}

// pack_a(m0, rows, k0, kc, dst): A rows m0.. (rows <= MR), k0..k0+kc, as [k][rows].
// pack_b(n0, cols, k0, kc, dst): B columns n0.. (cols <= NR), as [k][NR].
// stream_b(n0, cols, k0, kc, a, rows, c, load_c): C[rows][n0..n0+cols) (= or +=) a[kc][rows] ·
// B, the fused decode kernel, or nullptr (then decode packs B and runs the tile).
// micro: the register tiles by panel height (kMicro<V> when null); gemm_bf16.cc passes its own,
// whose panels hold BF16 pairs in the 32-bit elements (K then counts pairs).
template <class V, class PackA, class PackB, class StreamB = std::nullptr_t>
void packed_gemm(const Ctx& c, int64_t M, int64_t N, int64_t K, const PackA& pack_a,
                 const PackB& pack_b, float* C, int64_t ldc, bool accumulate,
                 const StreamB& stream_b = nullptr, const MicroFn* micro = nullptr) {
  constexpr int MR = GemmTile<V>::MR, NR = GemmTile<V>::NR;
  const MicroFn* tiles = micro ? micro : kMicro<V>.data();
  const GemmBlocking bl = gemm_blocking_now<V>();
  const int64_t panels = (N + NR - 1) / NR;
  // A panel of `rows` rows starting at packed offset `off` (compact panels of MR rows).
  auto run_panel = [&](const float* a, int rows, const float* b, int64_t kc, int64_t m, int64_t n,
                       int nr, bool load_c) {
    tiles[rows](a, b, kc, C + m * ldc + n, ldc, nr, load_c);
  };
  if (M <= stream_row_limit<V>()) {
    stream_gemm<V>(c, M, N, K, pack_a, pack_b, C, ldc, accumulate, stream_b, tiles);
    return;
  }
  const int64_t mc_max = std::min((M + MR - 1) / MR * MR, std::max<int64_t>(MR, bl.mc / MR * MR));
  const bool fused = mc_max >= M;  // one mc block: pack each B micro-panel just before its use
  c.for_range(panels, 2 * M * K * NR, [&](int64_t p0, int64_t p1) {
    const int64_t nc_max = fused ? (p1 - p0) * NR : std::max<int64_t>(NR, bl.nc / NR * NR);
    const int64_t kc_max = std::min(bl.kc, K);
    float* bbuf = static_cast<float*>(
        gemm_buffer(0, kc_max * (fused ? NR : std::min(nc_max, (p1 - p0) * NR)) * sizeof(float)));
    float* abuf = static_cast<float*>(gemm_buffer(1, kc_max * mc_max * sizeof(float)));
    const int64_t n_end = std::min(N, p1 * NR);
    for (int64_t jc = p0 * NR; jc < n_end; jc += nc_max) {
      const int64_t nc = std::min(nc_max, n_end - jc);
      for (int64_t k0 = 0; k0 < K; k0 += kc_max) {
        const int64_t kc = std::min(kc_max, K - k0);
        const bool load_c = accumulate || k0 > 0;
        if (!fused)
          for (int64_t j = 0; j < nc; j += NR)
            pack_b(jc + j, static_cast<int>(std::min<int64_t>(NR, nc - j)), k0, kc, bbuf + j * kc);
        for (int64_t ic = 0; ic < M; ic += mc_max) {
          const int64_t mc = std::min(mc_max, M - ic);
          for (int64_t i = 0; i < mc; i += MR)
            pack_a(ic + i, static_cast<int>(std::min<int64_t>(MR, mc - i)), k0, kc, abuf + i * kc);
          for (int64_t j = 0; j < nc; j += NR) {
            const int nr = static_cast<int>(std::min<int64_t>(NR, nc - j));
            const float* b = bbuf + j * kc;
            if (fused) {
              pack_b(jc + j, nr, k0, kc, bbuf);
              b = bbuf;
            }
            for (int64_t i = 0; i < mc; i += MR)
              run_panel(abuf + i * kc, static_cast<int>(std::min<int64_t>(MR, mc - i)), b, kc,
                        ic + i, jc + j, nr, load_c);
          }
        }
      }
    }
  });
}

}  // namespace huginn::cpu
