// SIMD vector types, one per instruction set. W = float lanes per register. Every fast kernel
// is a template over one of these, so the generic C++ fallback (always compiled), AVX2+FMA and
// AVX-512 share one source; cpu_backend.cc is the one place that picks among them.
//
// How one binary runs on any x86-64 (src/CMakeLists.txt, HUGINN_ISA_KERNEL_SOURCES): every kernel
// source that includes this header is compiled once per instruction set, into its own object,
// with HUGINN_KERNEL_ISA = HUGINN_ISA_GENERIC, HUGINN_ISA_AVX2 or HUGINN_ISA_AVX512. This header
// then defines only that set's vector type (HUGINN_VEC), and switches the compiler to that
// instruction set for the rest of the file (#pragma GCC target / clang attribute, closed by
// HUGINN_KERNELS_END at the end of the file) — after the standard and generic project headers
// are in, so their inline functions stay compiled for baseline x86-64 in every object and the
// linker may keep any copy of them. Everything defined after this point has a name that carries
// the instruction set (a template over HUGINN_VEC, the namespace HUGINN_ISA_NS, or internal
// linkage); tests/core/isa_objects_test checks that, and that nothing else in an AVX object uses
// AVX instructions. The whole build may still be compiled with -march=native (HUGINN_NATIVE).
//
// Include this header after every standard header a kernel source needs.
#pragma once

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <utility>

#include "kernels/cpu/kernels.h"

#define HUGINN_ISA_GENERIC 0
#define HUGINN_ISA_AVX2 1
#define HUGINN_ISA_AVX512 2
#ifndef HUGINN_KERNEL_ISA
#error "simd.h is for the per-instruction-set kernel sources (HUGINN_ISA_KERNEL_SOURCES)"
#endif

#if HUGINN_KERNEL_ISA != HUGINN_ISA_GENERIC
// Without -march, GCC notes that functions returning __m256 / __m512 have another ABI than in an
// AVX build. Those are the inline helpers here, called only from code of the same object and
// instruction set; what the objects export takes and returns pointers and scalars.
#pragma GCC diagnostic ignored "-Wpsabi"
// GCC 12 flags its own _mm512_undefined_ps() idiom inside the intrinsics as uninitialized.
#pragma GCC diagnostic ignored "-Wuninitialized"
#if !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>
#endif

// From here on: this object's instruction set.
#if HUGINN_KERNEL_ISA == HUGINN_ISA_AVX2
#define HUGINN_ISA_NS isa_avx2
#define HUGINN_VEC ::huginn::cpu::VecAvx2
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c,bmi,bmi2,lzcnt,popcnt"))), apply_to = function)
#define HUGINN_KERNELS_END _Pragma("clang attribute pop")
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c,bmi,bmi2,lzcnt,popcnt")
#define HUGINN_KERNELS_END _Pragma("GCC pop_options")
#endif
#elif HUGINN_KERNEL_ISA == HUGINN_ISA_AVX512
#define HUGINN_ISA_NS isa_avx512
#define HUGINN_VEC ::huginn::cpu::VecAvx512
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,avx512cd,avx2,fma,f16c,bmi,bmi2,lzcnt,popcnt"))), apply_to = function)
#define HUGINN_KERNELS_END _Pragma("clang attribute pop")
#else
#pragma GCC push_options
#pragma GCC target("avx512f,avx512dq,avx512bw,avx512vl,avx512cd,avx2,fma,f16c,bmi,bmi2,lzcnt,popcnt")
#define HUGINN_KERNELS_END _Pragma("GCC pop_options")
#endif
#else
#define HUGINN_ISA_NS isa_generic
#define HUGINN_VEC ::huginn::cpu::VecGeneric
#define HUGINN_KERNELS_END
#endif

namespace huginn::cpu {

#if HUGINN_KERNEL_ISA == HUGINN_ISA_GENERIC
// Plain C++: arrays of 8 floats. Slow but portable; also the readable spec of each primitive.
struct VecGeneric {
  static constexpr int W = 8;
  static constexpr const char* kName = "generic";
  static constexpr int kGemmRows = 4, kGemmVecs = 2;  // GEMM tile: rows of w x vectors of x
  struct R {
    float v[W];
  };
  static R zero() { return R{}; }
  static R set1(float a) {
    R r;
    for (float& x : r.v) x = a;
    return r;
  }
  static R load(const float* p) { return load_n(p, W); }
  static R load_n(const float* p, int n) {
    R r{};
    for (int i = 0; i < n; ++i) r.v[i] = p[i];
    return r;
  }
  static void store(float* p, R a) { store_n(p, a, W); }
  static void store_n(float* p, R a, int n) {
    for (int i = 0; i < n; ++i) p[i] = a.v[i];
  }
  template <class F>
  static R map2(R a, R b, F f) {
    for (int i = 0; i < W; ++i) a.v[i] = f(a.v[i], b.v[i]);
    return a;
  }
  static R add(R a, R b) { return map2(a, b, [](float x, float y) { return x + y; }); }
  static R sub(R a, R b) { return map2(a, b, [](float x, float y) { return x - y; }); }
  static R mul(R a, R b) { return map2(a, b, [](float x, float y) { return x * y; }); }
  static R div(R a, R b) { return map2(a, b, [](float x, float y) { return x / y; }); }
  static R max(R a, R b) { return map2(a, b, [](float x, float y) { return x > y ? x : y; }); }
  static R fmadd(R a, R b, R c) {  // a*b + c, one rounding like the hardware FMA
    for (int i = 0; i < W; ++i) c.v[i] = std::fma(a.v[i], b.v[i], c.v[i]);
    return c;
  }
  static float reduce_add(R a) {  // pairwise tree, like the SIMD versions
    for (int w = W / 2; w > 0; w /= 2)
      for (int i = 0; i < w; ++i) a.v[i] += a.v[i + w];
    return a.v[0];
  }
  static float reduce_max(R a) {
    float m = a.v[0];
    for (float x : a.v) m = x > m ? x : m;
    return m;
  }
  static R exp(R a) {
    for (float& x : a.v) x = std::exp(x);
    return a;
  }
  // Rotates interleaved pairs: (a, b) by (c, s) -> (a c - b s, b c + a s); cs holds (c, s) pairs.
  static R rope(R x, R cs) {
    R r;
    for (int i = 0; i < W; i += 2) {
      const float a = x.v[i], b = x.v[i + 1], c = cs.v[i], s = cs.v[i + 1];
      r.v[i] = a * c - b * s;
      r.v[i + 1] = b * c + a * s;
    }
    return r;
  }
};
#endif

// Cephes-style expf on any vector type (max error ~2 ulp). Inputs are clamped to the range where
// the result is a normal float or +inf, so exp(-1000) is ~1e-38 rather than 0 (harmless where it
// is used: softmax terms and the SiLU denominator).
template <class V, class I>
inline typename V::R exp_poly(typename V::R x, I to_pow2) {
  using R = typename V::R;
  x = V::max(V::set1(-87.336f), x);
  x = V::min(V::set1(88.7229f), x);
  const R fx = V::round(V::mul(x, V::set1(1.44269504088896341f)));
  x = V::fmadd(fx, V::set1(-0.693359375f), x);
  x = V::fmadd(fx, V::set1(2.12194440e-4f), x);
  R y = V::set1(1.9875691500e-4f);
  y = V::fmadd(y, x, V::set1(1.3981999507e-3f));
  y = V::fmadd(y, x, V::set1(8.3334519073e-3f));
  y = V::fmadd(y, x, V::set1(4.1665795894e-2f));
  y = V::fmadd(y, x, V::set1(1.6666665459e-1f));
  y = V::fmadd(y, x, V::set1(5.0000001201e-1f));
  y = V::fmadd(y, V::mul(x, x), V::add(x, V::set1(1.0f)));
  return V::mul(y, to_pow2(fx));
}

#if HUGINN_KERNEL_ISA == HUGINN_ISA_AVX2
struct VecAvx2 {
  static constexpr int W = 8;
  static constexpr const char* kName = "avx2";
  static constexpr int kGemmRows = 6, kGemmVecs = 2;  // 12 accumulators of 16 ymm
  using R = __m256;
  static R zero() { return _mm256_setzero_ps(); }
  static R set1(float a) { return _mm256_set1_ps(a); }
  static R load(const float* p) { return _mm256_loadu_ps(p); }
  static __m256i mask(int n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  }
  static R load_n(const float* p, int n) { return _mm256_maskload_ps(p, mask(n)); }
  static void store(float* p, R a) { _mm256_storeu_ps(p, a); }
  static void store_n(float* p, R a, int n) { _mm256_maskstore_ps(p, mask(n), a); }
  static R add(R a, R b) { return _mm256_add_ps(a, b); }
  static R sub(R a, R b) { return _mm256_sub_ps(a, b); }
  static R mul(R a, R b) { return _mm256_mul_ps(a, b); }
  static R div(R a, R b) { return _mm256_div_ps(a, b); }
  static R max(R a, R b) { return _mm256_max_ps(a, b); }
  static R min(R a, R b) { return _mm256_min_ps(a, b); }
  static R fmadd(R a, R b, R c) { return _mm256_fmadd_ps(a, b, c); }
  static R round(R a) { return _mm256_round_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  static float reduce_add(R a) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }
  static float reduce_max(R a) {
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }
  static R exp(R x) {
    return exp_poly<VecAvx2>(x, [](R n) {
      const __m256i e = _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127));
      return _mm256_castsi256_ps(_mm256_slli_epi32(e, 23));
    });
  }
  static R rope(R x, R cs) {
    const R sw = _mm256_permute_ps(x, 0xB1);  // (b, a) pairs
    return _mm256_fmaddsub_ps(x, _mm256_moveldup_ps(cs), _mm256_mul_ps(sw, _mm256_movehdup_ps(cs)));
  }
};
#endif

#if HUGINN_KERNEL_ISA == HUGINN_ISA_AVX512
struct VecAvx512 {
  static constexpr int W = 16;
  static constexpr const char* kName = "avx512";
  static constexpr int kGemmRows = 12, kGemmVecs = 2;  // 24 accumulators of 32 zmm
  using R = __m512;
  static R zero() { return _mm512_setzero_ps(); }
  static R set1(float a) { return _mm512_set1_ps(a); }
  static R load(const float* p) { return _mm512_loadu_ps(p); }
  static __mmask16 mask(int n) { return static_cast<__mmask16>((1u << n) - 1); }
  static R load_n(const float* p, int n) { return _mm512_maskz_loadu_ps(mask(n), p); }
  static void store(float* p, R a) { _mm512_storeu_ps(p, a); }
  static void store_n(float* p, R a, int n) { _mm512_mask_storeu_ps(p, mask(n), a); }
  static R add(R a, R b) { return _mm512_add_ps(a, b); }
  static R sub(R a, R b) { return _mm512_sub_ps(a, b); }
  static R mul(R a, R b) { return _mm512_mul_ps(a, b); }
  static R div(R a, R b) { return _mm512_div_ps(a, b); }
  static R max(R a, R b) { return _mm512_max_ps(a, b); }
  static R min(R a, R b) { return _mm512_min_ps(a, b); }
  static R fmadd(R a, R b, R c) { return _mm512_fmadd_ps(a, b, c); }
  static R round(R a) {
    return _mm512_roundscale_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  }
  static float reduce_add(R a) {
    __m256 h = _mm256_add_ps(_mm512_castps512_ps256(a), _mm512_extractf32x8_ps(a, 1));
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }
  static float reduce_max(R a) { return _mm512_reduce_max_ps(a); }
  static R exp(R x) {
    return exp_poly<VecAvx512>(x, [](R n) {
      const __m512i e = _mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127));
      return _mm512_castsi512_ps(_mm512_slli_epi32(e, 23));
    });
  }
  static R rope(R x, R cs) {
    const R sw = _mm512_permute_ps(x, 0xB1);
    return _mm512_fmaddsub_ps(x, _mm512_moveldup_ps(cs), _mm512_mul_ps(sw, _mm512_movehdup_ps(cs)));
  }
};
#endif

// Expands X(VecType) for the vector type of this object (the explicit instantiations of every
// kernel source end with it).
#define HUGINN_FOR_EACH_VEC(X) X(HUGINN_VEC)

// Full vectors then a masked tail: f(i, n) for i = 0, W, 2W, ... with n = min(W, len - i).
template <class V, class F>
inline void for_chunks(int64_t len, const F& f) {
  int64_t i = 0;
  for (; i + V::W <= len; i += V::W) f(i, V::W);
  if (i < len) f(i, static_cast<int>(len - i));
}
template <class V>
inline typename V::R ld(const float* p, int n) {
  return n == V::W ? V::load(p) : V::load_n(p, n);
}
template <class V>
inline void st(float* p, typename V::R a, int n) {
  if (n == V::W) {
    V::store(p, a);
  } else {
    V::store_n(p, a, n);
  }
}

}  // namespace huginn::cpu
