// Matmul with BF16 and Q8 weights.  x [M, K] F32, w [N, K], y [M, N] F32; fp32 accumulation.
//
// - M <= kMatvecMaxRows (decode): weight-streaming matvec. Threads split the N output rows; each
//   row of w is read once for all rows of x, four rows of w at a time. BF16 weights are widened
//   to F32 in registers (even lanes by a shift, odd lanes by a mask, against a copy of x split
//   the same way) and meet x exactly; where the CPU has AVX512_BF16 and it is switched on,
//   vdpbf16ps multiplies them with x rounded to BF16 instead (one instruction per 32 weights). Q8 blocks of 32
//   are widened int8 -> F32, dotted with x, and the block sum is scaled once.
// - larger M (prefill): BF16 goes to the packed GEMM of gemm_bf16.cc (weights widened while
//   packed); Q8 tiles of w are widened to F32 and the F32 GEMM of the same instruction set runs
//   on them.
// Every output is computed by one thread in a fixed order, so results do not depend on the
// thread count.
#include "kernels/cpu/matmul_lowp.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <type_traits>

#include "kernels/cpu/simd.h"

namespace huginn::cpu {
namespace {

// --- widening loads, one set per vector type ---------------------------------------------------
template <class V>
struct Widen;

template <>
struct Widen<VecGeneric> {
  using R = VecGeneric::R;
  static R bf16(const uint16_t* p) {
    R r;
    for (int i = 0; i < VecGeneric::W; ++i) r.v[i] = bf16_to_f32(p[i]);
    return r;
  }
  static R i8(const int8_t* p) {
    R r;
    for (int i = 0; i < VecGeneric::W; ++i) r.v[i] = static_cast<float>(p[i]);
    return r;
  }
  // 2W BF16 values -> the even-indexed ones and the odd-indexed ones as F32.
  static void bf16_pair(const uint16_t* p, R& even, R& odd) {
    for (int i = 0; i < VecGeneric::W; ++i) {
      even.v[i] = bf16_to_f32(p[2 * i]);
      odd.v[i] = bf16_to_f32(p[2 * i + 1]);
    }
  }
  static float f16(uint16_t h) { return f16_to_f32(h); }
  static void f16_n(const uint16_t* p, int n, float* out) {
    for (int i = 0; i < n; ++i) out[i] = f16_to_f32(p[i]);
  }
};

#ifdef HUGINN_HAVE_AVX2
template <>
struct Widen<VecAvx2> {
  using R = __m256;
  static R bf16(const uint16_t* p) {
    const __m256i u = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(u, 16));
  }
  static R i8(const int8_t* p) {
    return _mm256_cvtepi32_ps(
        _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
  }
  // A BF16 is the high half of an F32: within each 32-bit lane, the even element moves up by a
  // shift and the odd one is already in place once the low half is cleared. No shuffles.
  static void bf16_pair(const uint16_t* p, R& even, R& odd) {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
    even = _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
    odd = _mm256_castsi256_ps(_mm256_and_si256(v, _mm256_set1_epi32(int(0xffff0000u))));
  }
  static float f16(uint16_t h) { return _cvtsh_ss(h); }
  static void f16_n(const uint16_t* p, int n, float* out) {
    for (int i = 0; i < n; ++i) out[i] = _cvtsh_ss(p[i]);
  }
};
#endif

#ifdef HUGINN_HAVE_AVX512
template <>
struct Widen<VecAvx512> {
  using R = __m512;
  static R bf16(const uint16_t* p) {
    const __m512i u =
        _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    return _mm512_castsi512_ps(_mm512_slli_epi32(u, 16));
  }
  static R i8(const int8_t* p) {
    return _mm512_cvtepi32_ps(
        _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
  }
  static void bf16_pair(const uint16_t* p, R& even, R& odd) {
    const __m512i v = _mm512_loadu_si512(p);
    even = _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
    odd = _mm512_castsi512_ps(_mm512_and_si512(v, _mm512_set1_epi32(int(0xffff0000u))));
  }
  static float f16(uint16_t h) { return _cvtsh_ss(h); }
  static void f16_n(const uint16_t* p, int n, float* out) {  // n <= 16
#ifdef __AVX512BW__
    const __mmask16 m = static_cast<__mmask16>((1u << n) - 1);
    _mm512_storeu_ps(out, _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, p)));
#else
    for (int i = 0; i < n; ++i) out[i] = _cvtsh_ss(p[i]);
#endif
  }
};
#endif

#if defined(HUGINN_HAVE_AVX512) && defined(__AVX512BF16__)
#define HUGINN_HAVE_DPBF16 1
#endif

std::atomic<bool> g_use_dpbf16{true};

bool cpu_has_dpbf16() {
#ifdef HUGINN_HAVE_DPBF16
  static const bool ok = __builtin_cpu_supports("avx512bf16");
  return ok;
#else
  return false;
#endif
}

// Rows [n0, n1) of w for MB rows of x: the output rows are walked four at a time (a short tail
// repeats its last row and drops the extra results).
struct Rows {
  const float* const* x;
  float* const* y;
  int64_t K;
};

// Touches the cache line `ahead` bytes past p: the same place in the next group of four rows,
// so that memory is already streaming the next rows while these are summed (each row is only
// a few KB, too short for the hardware prefetcher to ramp up on alone). Harmless past the end.
inline void prefetch_ahead(const void* p, int64_t ahead) {
  __builtin_prefetch(static_cast<const char*>(p) + ahead, 0, 3);
}

// --- BF16, widened to F32 --------------------------------------------------------------------
// xp holds the MB rows of x (Kp apart) with each chunk of 2W values split into its even- and
// odd-indexed halves, to meet Widen::bf16_pair; the last K % 2W values are done in scalar.
template <class V>
void deinterleave(const float* x, int64_t K, float* xp) {
  constexpr int W = V::W;
  for (int64_t c = 0; c + 2 * W <= K; c += 2 * W)
    for (int l = 0; l < W; ++l) {
      xp[c + l] = x[c + 2 * l];
      xp[c + W + l] = x[c + 2 * l + 1];
    }
}

template <class V, int MB>
void bf16_block(const Rows& r, const float* xp, int64_t Kp, const uint16_t* w, int64_t n0,
                int64_t n1) {
  using R = typename V::R;
  constexpr int W = V::W;
  const int64_t K = r.K, kfull = K / (2 * W) * (2 * W);
  for (int64_t n = n0; n < n1; n += 4) {
    const uint16_t* wr[4];
    for (int i = 0; i < 4; ++i) wr[i] = w + std::min(n + i, n1 - 1) * K;
    R acc[4][MB];
    for (auto& a : acc)
      for (R& v : a) v = V::zero();
    for (int64_t k = 0; k < kfull; k += 2 * W) {
      R xe[MB], xo[MB];
      for (int j = 0; j < MB; ++j) {
        xe[j] = V::load(xp + j * Kp + k);
        xo[j] = V::load(xp + j * Kp + k + W);
      }
      for (int i = 0; i < 4; ++i) {
        prefetch_ahead(wr[i] + k, 8 * K);
        R we, wo;
        Widen<V>::bf16_pair(wr[i] + k, we, wo);
        for (int j = 0; j < MB; ++j)
          acc[i][j] = V::fmadd(wo, xo[j], V::fmadd(we, xe[j], acc[i][j]));
      }
    }
    const int valid = static_cast<int>(std::min<int64_t>(4, n1 - n));
    for (int i = 0; i < valid; ++i)
      for (int j = 0; j < MB; ++j) {
        float s = V::reduce_add(acc[i][j]);
        for (int64_t k = kfull; k < K; ++k) s += bf16_to_f32(wr[i][k]) * r.x[j][k];
        r.y[j][n + i] = s;
      }
  }
}

#ifdef HUGINN_HAVE_DPBF16
// --- BF16 with vdpbf16ps: xb holds the MB rows of x in BF16, each padded to Kp (a multiple
// of 32) with zeros; the weight tail is loaded masked.
template <int MB>
__attribute__((target("avx512bf16,avx512bw,avx512f"))) void bf16_block_dp(
    const Rows& r, const uint16_t* xb, int64_t Kp, const uint16_t* w, int64_t n0, int64_t n1) {
  const int64_t K = r.K, kfull = K / 32 * 32;
  const __mmask32 tail = static_cast<__mmask32>((1ull << (K - kfull)) - 1);
  for (int64_t n = n0; n < n1; n += 4) {
    const uint16_t* wr[4];
    for (int i = 0; i < 4; ++i) wr[i] = w + std::min(n + i, n1 - 1) * K;
    __m512 acc[4][MB];
    for (auto& a : acc)
      for (__m512& v : a) v = _mm512_setzero_ps();
    auto step = [&](int64_t k, auto load) {
      __m512bh xv[MB];
      for (int j = 0; j < MB; ++j) xv[j] = (__m512bh)_mm512_loadu_si512(xb + j * Kp + k);
      for (int i = 0; i < 4; ++i) {
        prefetch_ahead(wr[i] + k, 8 * K);
        const __m512bh wv = (__m512bh)load(wr[i] + k);
        for (int j = 0; j < MB; ++j) acc[i][j] = _mm512_dpbf16_ps(acc[i][j], wv, xv[j]);
      }
    };
    for (int64_t k = 0; k < kfull; k += 32)
      step(k, [](const uint16_t* p) { return _mm512_loadu_si512(p); });
    if (kfull < K)
      step(kfull, [tail](const uint16_t* p) { return _mm512_maskz_loadu_epi16(tail, p); });
    const int valid = static_cast<int>(std::min<int64_t>(4, n1 - n));
    for (int i = 0; i < valid; ++i)
      for (int j = 0; j < MB; ++j) r.y[j][n + i] = _mm512_reduce_add_ps(acc[i][j]);
  }
}
#endif

// --- Q8 ------------------------------------------------------------------------------------
constexpr int kScaleGroup = 16;
template <class V, int MB>
void q8_block(const Rows& r, const Tensor& w, int64_t n0, int64_t n1) {
  using R = typename V::R;
  constexpr int W = V::W, NV = kQ8Block / W;  // vectors per block
  const int64_t K = r.K, nb = K / kQ8Block;
  const int8_t* qv = w.q8_values();
  const uint16_t* qs = w.q8_scales();
  for (int64_t n = n0; n < n1; n += 4) {
    const int8_t* wr[4];
    const uint16_t* sr[4];
    for (int i = 0; i < 4; ++i) {
      const int64_t row = std::min(n + i, n1 - 1);
      wr[i] = qv + row * K;
      sr[i] = qs + row * nb;
    }
    R acc[4][MB];
    for (auto& a : acc)
      for (R& v : a) v = V::zero();
    float sf[4][kScaleGroup];  // the F16 scales of the next kScaleGroup blocks, as F32
    for (int64_t b = 0; b < nb; ++b) {
      const int64_t k = b * kQ8Block;
      if (b % kScaleGroup == 0)
        for (int i = 0; i < 4; ++i)
          Widen<V>::f16_n(sr[i] + b, static_cast<int>(std::min<int64_t>(kScaleGroup, nb - b)), sf[i]);
      R xv[MB][NV];
      for (int j = 0; j < MB; ++j)
        for (int v = 0; v < NV; ++v) xv[j][v] = V::load(r.x[j] + k + v * W);
      for (int i = 0; i < 4; ++i) {
        if (b % 2 == 0) prefetch_ahead(wr[i] + k, 4 * K);
        R wv[NV];
        for (int v = 0; v < NV; ++v) wv[v] = Widen<V>::i8(wr[i] + k + v * W);
        const R s = V::set1(sf[i][b % kScaleGroup]);
        for (int j = 0; j < MB; ++j) {
          R p = V::mul(wv[0], xv[j][0]);
          for (int v = 1; v < NV; ++v) p = V::fmadd(wv[v], xv[j][v], p);
          acc[i][j] = V::fmadd(p, s, acc[i][j]);
        }
      }
    }
    const int valid = static_cast<int>(std::min<int64_t>(4, n1 - n));
    for (int i = 0; i < valid; ++i)
      for (int j = 0; j < MB; ++j) r.y[j][n + i] = V::reduce_add(acc[i][j]);
  }
}

template <class V, int MB>
void matvec_rows(const Rows& r, const Tensor& w, const uint16_t* xb, const float* xp, int64_t Kp,
                 int64_t n0, int64_t n1) {
  if (w.dtype() == DType::kQ8) {
    q8_block<V, MB>(r, w, n0, n1);
    return;
  }
#ifdef HUGINN_HAVE_DPBF16
  if (xb) {
    bf16_block_dp<MB>(r, xb, Kp, w.data<uint16_t>(), n0, n1);
    return;
  }
#endif
  bf16_block<V, MB>(r, xp, Kp, w.data<uint16_t>(), n0, n1);
}

template <class V>
void matvec(const Ctx& c, const Tensor& x, const Tensor& w, Tensor& y) {
  const int64_t M = x.dim(0), K = x.dim(1), N = w.dim(0);
  const float* xr[kMatvecMaxRows];
  float* yr[kMatvecMaxRows];
  for (int64_t m = 0; m < M; ++m) xr[m] = x.row(m), yr[m] = y.row(m);
  const Rows rows{xr, yr, K};
  const uint16_t* xb = nullptr;
  const float* xp = nullptr;
  const int64_t Kp = (K + 31) / 32 * 32;
#ifdef HUGINN_HAVE_DPBF16
  if constexpr (std::is_same_v<V, VecAvx512>) {
    if (w.dtype() == DType::kBF16 && g_use_dpbf16.load(std::memory_order_relaxed) &&
        cpu_has_dpbf16()) {
      auto* buf = reinterpret_cast<uint16_t*>(scratch(3, (M * Kp + 1) / 2));
      std::memset(buf, 0, static_cast<size_t>(M * Kp) * 2);
      for (int64_t m = 0; m < M; ++m) convert_from_f32(xr[m], buf + m * Kp, DType::kBF16, K);
      xb = buf;
    }
  }
#endif
  if (w.dtype() == DType::kBF16 && !xb) {
    float* buf = scratch(3, M * Kp);
    for (int64_t m = 0; m < M; ++m) deinterleave<V>(xr[m], K, buf + m * Kp);
    xp = buf;
  }
  c.for_range(N, 2 * M * K, [&](int64_t n0, int64_t n1) {
    switch (M) {
      case 1: matvec_rows<V, 1>(rows, w, xb, xp, Kp, n0, n1); break;
      case 2: matvec_rows<V, 2>(rows, w, xb, xp, Kp, n0, n1); break;
      case 3: matvec_rows<V, 3>(rows, w, xb, xp, Kp, n0, n1); break;
      default: matvec_rows<V, 4>(rows, w, xb, xp, Kp, n0, n1); break;
    }
  });
}

// Rows [n0, n1) of w widened to F32 into dst [(n1 - n0), K].
template <class V>
void widen_rows(const Tensor& w, int64_t n0, int64_t n1, float* dst) {
  constexpr int W = V::W;
  const int64_t K = w.dim(1), kfull = K / W * W;
  for (int64_t n = n0; n < n1; ++n) {
    float* d = dst + (n - n0) * K;
    if (w.dtype() == DType::kBF16) {
      const uint16_t* s = w.data<uint16_t>() + n * K;
      for (int64_t k = 0; k < kfull; k += W) V::store(d + k, Widen<V>::bf16(s + k));
      for (int64_t k = kfull; k < K; ++k) d[k] = bf16_to_f32(s[k]);
    } else {
      const int8_t* s = w.q8_values() + n * K;
      const uint16_t* sc = w.q8_scales() + n * (K / kQ8Block);
      for (int64_t k = 0; k < K; k += W)
        V::store(d + k, V::mul(Widen<V>::i8(s + k), V::set1(Widen<V>::f16(sc[k / kQ8Block]))));
    }
  }
}

template <class V>
void gemm_by_tiles(const Ctx& c, const Tensor& x, const Tensor& w, Tensor& y, MatmulF32 f32) {
  const int64_t K = x.dim(1), N = w.dim(0);
  // About 2 MB of F32 weights per tile: large enough that the GEMM's packing of x (M·K per
  // tile) is small next to its M·nb·K work, small enough to stay in L2/L3.
  const int64_t nb = std::clamp<int64_t>((int64_t{1} << 19) / std::max<int64_t>(K, 1), 16, N);
  float* tile = scratch(3, nb * K);
  for (int64_t n0 = 0; n0 < N; n0 += nb) {
    const int64_t n1 = std::min(N, n0 + nb);
    c.for_range(n1 - n0, K, [&](int64_t a, int64_t b) {
      widen_rows<V>(w, n0 + a, n0 + b, tile + a * K);
    });
    const Tensor wt = Tensor::wrap(tile, {n1 - n0, K}, DType::kF32);
    Tensor yt = y.cols(n0, n1);
    f32(c, x, wt, yt);
  }
}

}  // namespace

bool bf16_matvec_uses_dpbf16() { return cpu_has_dpbf16() && g_use_dpbf16.load(); }
void set_bf16_matvec_dpbf16(bool on) { g_use_dpbf16.store(on); }

template <class V>
void matmul_lowp(const Ctx& c, const Tensor& x, const Tensor& w, Tensor& y, MatmulF32 f32) {
  const int64_t M = x.dim(0), K = x.dim(1), N = w.dim(0);
  HUGINN_ASSERT(w.ndim() == 2 && w.dim(1) == K && y.dim(0) == M && y.dim(1) == N,
                "matmul: shape mismatch");
  HUGINN_ASSERT((w.dtype() == DType::kBF16 && w.is_contiguous()) ||
                    (w.dtype() == DType::kQ8 && K % kQ8Block == 0),
                "matmul: weights must be F32, contiguous BF16, or Q8");
  if (M == 0 || N == 0) return;
  if (K == 0) {
    for (int64_t m = 0; m < M; ++m) std::memset(y.row(m), 0, N * sizeof(float));
  } else if (M <= kMatvecMaxRows) {
    matvec<V>(c, x, w, y);
  } else if (w.dtype() == DType::kBF16) {  // the packed BF16 GEMM of gemm_bf16.cc
    gemm_bf16<V>(c, x.row(0), x.stride(0), w.data<uint16_t>(), w.stride(0), y.row(0), y.stride(0),
                 M, N, K);
  } else {
    gemm_by_tiles<V>(c, x, w, y, f32);
  }
}

#define HUGINN_INSTANTIATE(V) \
  template void matmul_lowp<V>(const Ctx&, const Tensor&, const Tensor&, Tensor&, MatmulF32);
HUGINN_FOR_EACH_VEC(HUGINN_INSTANTIATE)
#undef HUGINN_INSTANTIATE

}  // namespace huginn::cpu
