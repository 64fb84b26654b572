// The numerics of the BF16 mixed-precision GEMM (training with --precision bf16), defined once,
// independent of the machine, so that every implementation gives the same bits:
//   y[m, n] (= or +=) Σ_k bf16(A[m, k]) · bf16(B[k, n])      A [M, K], B [K, N], y F32
// 1. Each input is rounded to BF16, round-to-nearest-even (NaN stays NaN, quiet); a value whose
//    F32 exponent field is 0 (zero or subnormal) becomes a zero of its sign.
// 2. Per output, from acc = +0 (or y, itself flushed when subnormal, when accumulating), over the
//    pairs (k, k+1) of K padded with a zero to even length, odd element first:
//        acc = flush(acc + a[k+1]·b[k+1]);  acc = flush(acc + a[k]·b[k])
//    each add rounded once to F32 (round to nearest even); the product of two BF16 values is
//    exact, so this is one FMA; flush() makes a result of magnitude below FLT_MIN a zero of its
//    sign.
// That is exactly what AVX512_BF16's vdpbf16ps computes per 32-bit lane (Intel SDM: the odd pair
// is accumulated first, each accumulation rounded to nearest even, DAZ and FTZ regardless of
// MXCSR; checked bit for bit on 2 million random lanes, tiny values included, on an AMD Zen 4).
// Without it the same chain runs as F32 FMAs with MXCSR's FTZ and DAZ set (x86), or with an
// explicit flush (the generic object), on the same BF16 inputs (gemm_bf16.cc).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "huginn/tensor.h"

namespace huginn {

// Rule 1: f32 -> BF16 bits. Branch-free, so that the loops converting whole rows vectorize.
inline uint16_t bf16_round_ftz(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  const uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  const uint32_t nan = (u >> 16) | 0x40u;
  const uint32_t zero = (u >> 16) & 0x8000u;
  uint32_t r = (u & 0x7fffffffu) > 0x7f800000u ? nan : rounded;
  r = (u & 0x7f800000u) == 0 ? zero : r;
  return static_cast<uint16_t>(r);
}

// Rule 2's flush: |x| < FLT_MIN -> ±0.
inline float flush_subnormal(float x) {
  return std::fabs(x) < 1.17549435e-38f ? std::copysign(0.0f, x) : x;
}

// Rule 2 for one pair: a, b hold (k, k+1) as BF16 bits in the low / high half.
inline float bf16_pair_fma(uint32_t a, uint32_t b, float acc) {
  const auto lo = [](uint32_t x) { return bf16_to_f32(static_cast<uint16_t>(x)); };
  acc = flush_subnormal(std::fma(lo(a >> 16), lo(b >> 16), acc));
  return flush_subnormal(std::fma(lo(a), lo(b), acc));
}

// The plain reference of the whole product: y[i, n] (= or +=, `accumulate`) over A(i, k) and
// B(k, n) given as functions, K inner; y rows ldy apart. Rules 1 and 2 element by element.
template <class GetA, class GetB>
void bf16_gemm_reference(const GetA& A, const GetB& B, float* y, int64_t ldy, int64_t M, int64_t N,
                         int64_t K, bool accumulate) {
  auto pair = [K](const auto& get, int64_t k) {
    const uint32_t hi = k + 1 < K ? bf16_round_ftz(get(k + 1)) : 0u;
    return bf16_round_ftz(get(k)) | hi << 16;
  };
  for (int64_t i = 0; i < M; ++i)
    for (int64_t n = 0; n < N; ++n) {
      float acc = accumulate ? flush_subnormal(y[i * ldy + n]) : 0.0f;
      for (int64_t k = 0; k < K; k += 2)
        acc = bf16_pair_fma(pair([&](int64_t kk) { return A(i, kk); }, k),
                            pair([&](int64_t kk) { return B(kk, n); }, k), acc);
      y[i * ldy + n] = acc;
    }
}

}  // namespace huginn
