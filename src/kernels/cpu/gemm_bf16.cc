// BF16 mixed-precision GEMM for training (--precision bf16, as the reference trains under bf16
// autocast):  y[M, N] (= or +=) bf16(A[M, K]) · bf16(B[K, N]), F32 accumulation, numerics as
// kernels/bf16_numerics.h defines them (P = ceil(K / 2) pairs).
//
// Both operands are first rounded to BF16 into "pair" matrices whose 32-bit elements hold
// (k, k+1) — PA [M][P] / PB [N][P] from row layouts (k contiguous), QA [P][M] / QB [P][N] from
// column layouts — so that the blocked driver and packers of the F32 GEMM (gemm_packed.h) move
// them as if they were F32 matrices of inner size P: no new blocking, the same cache-size-derived
// kc/mc/nc (a panel of kc pairs has the bytes of kc floats and twice the flops). Only the register
// tile differs:
// - AVX-512 with AVX512_BF16: vdpbf16ps, 12 x 32 outputs, one instruction per pair and 16 lanes
//   (2 FLOP x 2 per lane): twice the work of an FMA where the CPU retires it at the FMA's rate.
// - otherwise: the pair widened to two F32 (a shift and a mask) and two FMAs, odd first, with
//   MXCSR's FTZ and DAZ set around the tile (the generic object: std::fma and an explicit flush),
//   which is the same chain bit for bit.
#include <chrono>
#include <vector>

#include "kernels/bf16_numerics.h"
#include "kernels/cpu/gemm_packed.h"

namespace huginn::cpu {
namespace {

namespace isa = HUGINN_ISA_NS;

// ---- conversion to BF16 pairs (rule 1), split over rows of the result ------------------------

// An element as BF16: F32 rounded (rule 1), BF16 bits (a weight round_bf16 made) as they are.
inline uint16_t as_bf16(float x) { return bf16_round_ftz(x); }
inline uint16_t as_bf16(uint16_t x) { return x; }

// dst[r][p] = bf16(src[r][2p]) | bf16(src[r][2p+1]) << 16, the odd one 0 past K.
template <class T>
void to_pairs_rows(const Ctx& c, const T* src, int64_t ld, int64_t R, int64_t K, uint32_t* dst) {
  const int64_t P = (K + 1) / 2;
  c.for_range(R, K, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const T* s = src + r * ld;
      uint32_t* d = dst + r * P;
      for (int64_t p = 0; p < K / 2; ++p)
        d[p] = as_bf16(s[2 * p]) | uint32_t(as_bf16(s[2 * p + 1])) << 16;
      if (K % 2) d[P - 1] = as_bf16(s[K - 1]);
    }
  });
}

// dst[p][n] = bf16(src[2p][n]) | bf16(src[2p+1][n]) << 16 (rows of src along n), 0 past K.
void to_pairs_cols(const Ctx& c, const float* src, int64_t ld, int64_t K, int64_t C,
                   uint32_t* dst) {
  const int64_t P = (K + 1) / 2;
  c.for_range(P, 2 * C, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      const float* lo = src + 2 * p * ld;
      uint32_t* d = dst + p * C;
      if (2 * p + 1 < K) {
        const float* hi = lo + ld;
        for (int64_t n = 0; n < C; ++n)
          d[n] = bf16_round_ftz(lo[n]) | uint32_t(bf16_round_ftz(hi[n])) << 16;
      } else {
        for (int64_t n = 0; n < C; ++n) d[n] = bf16_round_ftz(lo[n]);
      }
    }
  });
}

// ---- register tiles over pair panels: a [kp][MR], b [kp][NR] 32-bit pairs ---------------------

#if HUGINN_KERNEL_ISA == HUGINN_ISA_GENERIC
// The readable form: rule 2 element by element.
template <class V, int MR, int NV>
void tile_pairs(const float* a, const float* b, int64_t kp, float* c, int64_t ldc, int nr,
                bool load_c) {
  constexpr int NR = NV * V::W;
  for (int i = 0; i < MR; ++i)
    for (int n = 0; n < nr; ++n) {
      float acc = load_c ? flush_subnormal(c[i * ldc + n]) : 0.0f;
      for (int64_t p = 0; p < kp; ++p) {
        uint32_t ai, bi;
        std::memcpy(&ai, a + p * MR + i, 4);
        std::memcpy(&bi, b + p * NR + n, 4);
        acc = bf16_pair_fma(ai, bi, acc);
      }
      c[i * ldc + n] = acc;
    }
}
#else
#if HUGINN_KERNEL_ISA == HUGINN_ISA_AVX512
using IR = __m512i;
inline IR bcast_bits(const float* p) { return _mm512_castps_si512(_mm512_set1_ps(*p)); }
inline IR load_bits(const float* p) { return _mm512_loadu_si512(p); }
inline __m512 odd_f32(IR v) {
  return _mm512_castsi512_ps(_mm512_and_si512(v, _mm512_set1_epi32(int(0xffff0000u))));
}
inline __m512 even_f32(IR v) { return _mm512_castsi512_ps(_mm512_slli_epi32(v, 16)); }
#else
using IR = __m256i;
inline IR bcast_bits(const float* p) { return _mm256_castps_si256(_mm256_set1_ps(*p)); }
inline IR load_bits(const float* p) { return _mm256_loadu_si256(reinterpret_cast<const IR*>(p)); }
inline __m256 odd_f32(IR v) {
  return _mm256_castsi256_ps(_mm256_and_si256(v, _mm256_set1_epi32(int(0xffff0000u))));
}
inline __m256 even_f32(IR v) { return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16)); }
#endif

// Rule 2's flush through MXCSR (FTZ: results, DAZ: inputs, C's included) for one tile.
struct FlushDenormals {
  unsigned saved = _mm_getcsr();
  FlushDenormals() { _mm_setcsr(saved | 0x8040u); }
  ~FlushDenormals() { _mm_setcsr(saved); }
};

// Each pair widened to two F32 and two FMAs, odd first.
template <class V, int MR, int NV>
void tile_pairs(const float* a, const float* b, int64_t kp, float* c, int64_t ldc, int nr,
                bool load_c) {
  using R = typename V::R;
  constexpr int W = V::W, NR = NV * W;
  const FlushDenormals ftz;
  R acc[MR][NV];
  tile_load<V>(acc, c, ldc, nr, load_c);
#pragma GCC unroll 2
  for (int64_t p = 0; p < kp; ++p) {
    R bo[NV], be[NV];
    for (int j = 0; j < NV; ++j) {
      const IR bits = load_bits(b + p * NR + j * W);
      bo[j] = odd_f32(bits);
      be[j] = even_f32(bits);
    }
    for (int i = 0; i < MR; ++i) {
      const IR bits = bcast_bits(a + p * MR + i);
      const R ao = odd_f32(bits), ae = even_f32(bits);
      for (int j = 0; j < NV; ++j) acc[i][j] = V::fmadd(ae, be[j], V::fmadd(ao, bo[j], acc[i][j]));
    }
  }
  tile_store<V>(acc, c, ldc, nr);
}
#endif

template <class V, int NV, int... I>
constexpr std::array<MicroFn, sizeof...(I) + 1> pair_tiles(std::integer_sequence<int, I...>) {
  return {nullptr, &tile_pairs<V, I + 1, NV>...};
}
template <class V>
inline constexpr auto kPairTiles =
    pair_tiles<V, GemmTile<V>::NV>(std::make_integer_sequence<int, GemmTile<V>::MR>{});

#if HUGINN_KERNEL_ISA == HUGINN_ISA_AVX512
// vdpbf16ps: per lane acc = (acc + a_odd·b_odd) + a_even·b_even, FTZ/DAZ: rule 2 in hardware.
#define HUGINN_BF16_TARGET \
  __attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,avx512cd,avx2,fma,f16c,bmi,bmi2,lzcnt,popcnt,avx512bf16")))
template <int MR, int NV>
HUGINN_BF16_TARGET void tile_dot(const float* a, const float* b, int64_t kp, float* c,
                                 int64_t ldc, int nr, bool load_c) {
  constexpr int W = 16, NR = NV * W;
  __m512 acc[MR][NV];
  tile_load<VecAvx512>(acc, c, ldc, nr, load_c);
#pragma GCC unroll 4
  for (int64_t p = 0; p < kp; ++p) {
    __m512bh bv[NV];
    for (int j = 0; j < NV; ++j) bv[j] = (__m512bh)_mm512_loadu_si512(b + p * NR + j * W);
    for (int i = 0; i < MR; ++i) {
      const __m512bh av = (__m512bh)_mm512_castps_si512(_mm512_set1_ps(a[p * MR + i]));
      for (int j = 0; j < NV; ++j) acc[i][j] = _mm512_dpbf16_ps(acc[i][j], av, bv[j]);
    }
  }
  tile_store<VecAvx512>(acc, c, ldc, nr);
}
template <int NV, int... I>
constexpr std::array<MicroFn, sizeof...(I) + 1> dot_tiles(std::integer_sequence<int, I...>) {
  return {nullptr, &tile_dot<I + 1, NV>...};
}
using VT = GemmTile<VecAvx512>;
constexpr auto kDotTiles = dot_tiles<VT::NV>(std::make_integer_sequence<int, VT::MR>{});

// Seconds for `reps` full tiles of kp pairs from L1 (best of three).
double time_tile(MicroFn f, const float* a, const float* b, float* c, int64_t kp, int reps) {
  double best = 1e30;
  for (int round = 0; round < 3; ++round) {
    const auto t0 = std::chrono::steady_clock::now();
    for (int r = 0; r < reps; ++r) f(a, b, kp, c, VT::NR, VT::NR, r > 0);
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return best;
}

// The probe: the two tiles on the same pairs (small values, no overflow), GFLOP/s of each.
Bf16DotChoice measure_dot() {
  constexpr int64_t kp = 128;
  constexpr int reps = 400;
  std::vector<float> a(kp * VT::MR), b(kp * VT::NR), c(VT::MR * VT::NR);
  for (size_t i = 0; i < a.size(); ++i) {
    const uint32_t pair = 0x3f803f80u ^ static_cast<uint32_t>(i % 7);  // ~1.0 in both halves
    std::memcpy(&a[i], &pair, 4);
  }
  for (size_t i = 0; i < b.size(); ++i) {
    const uint32_t pair = 0x3a803a80u ^ static_cast<uint32_t>(i % 5);  // ~1e-3
    std::memcpy(&b[i], &pair, 4);
  }
  const double flops = 4.0 * kp * VT::MR * VT::NR * reps;
  const double fma_s = time_tile(kPairTiles<VecAvx512>[VT::MR], a.data(), b.data(), c.data(), kp, reps);
  const double dot_s = time_tile(kDotTiles[VT::MR], a.data(), b.data(), c.data(), kp, reps);
  Bf16DotChoice r;
  r.dot_gflops = flops / dot_s * 1e-9;
  r.fma_gflops = flops / fma_s * 1e-9;
  r.dot = dot_s < 0.9 * fma_s;  // ties go to the path every CPU has
  return r;
}

bool cpu_has_bf16_dot() {
  static const bool has = __builtin_cpu_supports("avx512bf16");
  return has;
}

const Bf16DotChoice& probed() {
  static const Bf16DotChoice r = cpu_has_bf16_dot() ? measure_dot() : Bf16DotChoice{};
  return r;
}

bool use_dot() {
  if (!cpu_has_bf16_dot()) return false;
  switch (bf16_dot_mode()) {
    case Bf16Dot::kOff: return false;
    case Bf16Dot::kOn: return true;
    default: return probed().dot;
  }
}
#endif

template <class V>
const MicroFn* pair_tiles_now() {
#if HUGINN_KERNEL_ISA == HUGINN_ISA_AVX512
  if (use_dot()) return kDotTiles.data();
#endif
  return kPairTiles<V>.data();
}

}  // namespace

#if HUGINN_KERNEL_ISA == HUGINN_ISA_AVX512
namespace isa_avx512 {
Bf16DotChoice bf16_dot_probe() {
  Bf16DotChoice r = probed();
  r.dot = use_dot();
  return r;
}
}  // namespace isa_avx512
#endif

namespace {

// A rounded to pairs (slot 2), and the blocked driver on the pair tiles with the given B packer.
template <class V, class PackB>
void gemm_pairs(const Ctx& c, const float* a, int64_t ai, int64_t ak, const PackB& pack_b,
                float* y, int64_t ldy, int64_t M, int64_t N, int64_t K, bool accumulate) {
  const int64_t P = (K + 1) / 2;
  auto* pa = static_cast<uint32_t*>(gemm_buffer(2, M * P * sizeof(uint32_t)));
  const bool a_rows = ak == 1;
  if (a_rows) {
    to_pairs_rows(c, a, ai, M, K, pa);
  } else {
    to_pairs_cols(c, a, ak, K, M, pa);
  }
  // The pair matrix as F32 bit containers for the packers (32-bit moves only).
  const float* fa = reinterpret_cast<const float*>(pa);
  auto pack_a = [&](int64_t m0, int rows, int64_t k0, int64_t kc, float* dst) {
    if (a_rows) {
      isa::pack_a_rows(fa + m0 * P + k0, P, rows, kc, dst);
    } else {
      isa::pack_a_cols(fa + k0 * M + m0, M, rows, kc, dst);
    }
  };
  packed_gemm<V>(c, M, N, P, pack_a, pack_b, y, ldy, accumulate, nullptr, pair_tiles_now<V>());
}

// B [K, N] F32 as pairs: rounded into slot 3, then packed as F32 bit containers.
template <class V>
auto pair_packer_f32(const Ctx& c, const float* b, int64_t bk, int64_t bn, int64_t N, int64_t K) {
  constexpr int NR = GemmTile<V>::NR;
  const int64_t P = (K + 1) / 2;
  auto* pb = static_cast<uint32_t*>(gemm_buffer(3, N * P * sizeof(uint32_t)));
  const bool b_rows = bk == 1;
  if (b_rows) {
    to_pairs_rows(c, b, bn, N, K, pb);
  } else {
    to_pairs_cols(c, b, bk, K, N, pb);
  }
  const float* fb = reinterpret_cast<const float*>(pb);
  return [=](int64_t n0, int cols, int64_t k0, int64_t kc, float* dst) {
    if (b_rows) {
      isa::pack_b_rows_f32(fb + n0 * P + k0, P, cols, kc, NR, dst);
    } else {
      isa::pack_b_cols_f32(fb + k0 * N + n0, N, cols, kc, NR, dst);
    }
  };
}

// B(k, n) = b[k * ld + n] BF16 (rows of B along N, e.g. a weight [N_w, K_w] read as dx = dy·w):
// pairs (k, k+1) are two rows interleaved, straight into a micro-panel [kc][NR], the high half 0
// past K and columns from `cols` on 0.
void pack_b_cols_bf16(const uint16_t* b, int64_t ld, int cols, int64_t kc, int64_t k_left, int NR,
                      uint32_t* dst) {
  for (int64_t p = 0; p < kc; ++p, dst += NR) {
    const uint16_t* lo = b + 2 * p * ld;
    if (2 * p + 1 < k_left) {
      const uint16_t* hi = lo + ld;
      for (int j = 0; j < cols; ++j) dst[j] = uint32_t(lo[j]) | uint32_t(hi[j]) << 16;
    } else {
      for (int j = 0; j < cols; ++j) dst[j] = lo[j];
    }
    for (int j = cols; j < NR; ++j) dst[j] = 0;
  }
}

}  // namespace

template <class V>
void gemm_bf16(const Ctx& c, const float* a, int64_t ai, int64_t ak, const float* b, int64_t bk,
               int64_t bn, float* y, int64_t ldy, int64_t M, int64_t N, int64_t K,
               bool accumulate) {
  if (gemm_is_trivial<V>(y, ldy, M, N, K, accumulate)) return;
  gemm_pairs<V>(c, a, ai, ak, pair_packer_f32<V>(c, b, bk, bn, N, K), y, ldy, M, N, K, accumulate);
}

template <class V>
void gemm_bf16_wb(const Ctx& c, const float* a, int64_t ai, int64_t ak, const uint16_t* b,
                  int64_t bk, int64_t bn, float* y, int64_t ldy, int64_t M, int64_t N, int64_t K,
                  bool accumulate) {
  constexpr int NR = GemmTile<V>::NR;
  if (gemm_is_trivial<V>(y, ldy, M, N, K, accumulate)) return;
  const int64_t P = (K + 1) / 2;
  if (bk == 1) {
    // Weight rows along K: with K and the row stride even, each row already is its P pairs.
    uint32_t* pb = nullptr;
    int64_t ld = bn / 2;
    if (K % 2 || bn % 2) {  // otherwise: the pairs copied into slot 3 (0 past K)
      pb = static_cast<uint32_t*>(gemm_buffer(3, N * P * sizeof(uint32_t)));
      to_pairs_rows(c, b, bn, N, K, pb);
      ld = P;
    }
    const float* fb = pb ? reinterpret_cast<const float*>(pb) : reinterpret_cast<const float*>(b);
    auto pack_b = [=](int64_t n0, int cols, int64_t k0, int64_t kc, float* dst) {
      isa::pack_b_rows_f32(fb + n0 * ld + k0, ld, cols, kc, NR, dst);
    };
    return gemm_pairs<V>(c, a, ai, ak, pack_b, y, ldy, M, N, K, accumulate);
  }
  auto pack_b = [=](int64_t n0, int cols, int64_t k0, int64_t kc, float* dst) {
    pack_b_cols_bf16(b + 2 * k0 * bk + n0, bk, cols, kc, K - 2 * k0, NR,
                     reinterpret_cast<uint32_t*>(dst));
  };
  gemm_pairs<V>(c, a, ai, ak, pack_b, y, ldy, M, N, K, accumulate);
}

#define HUGINN_INSTANTIATE(V)                                                                   \
  template void gemm_bf16<V>(const Ctx&, const float*, int64_t, int64_t, const float*, int64_t, \
                             int64_t, float*, int64_t, int64_t, int64_t, int64_t, bool);         \
  template void gemm_bf16_wb<V>(const Ctx&, const float*, int64_t, int64_t, const uint16_t*,    \
                                int64_t, int64_t, float*, int64_t, int64_t, int64_t, int64_t, bool);
HUGINN_FOR_EACH_VEC(HUGINN_INSTANTIATE)
#undef HUGINN_INSTANTIATE

}  // namespace huginn::cpu
HUGINN_KERNELS_END
