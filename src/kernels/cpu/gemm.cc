// GEMM y = x·wᵀ.  x [M, K] (tokens x inner), w [N, K] (a Linear weight as stored), y [M, N];
// all three may be row-strided views.
//
// Two paths, chosen by M alone (never by the thread count, so results do not depend on it):
// - M <= kGemvMaxRows (decode): dot products along K, each weight row streamed once for all
//   rows of x. Bandwidth bound; no packing.
// - otherwise gemm_f32: both operands packed into cache-sized panels (gemm_packed.h); w's rows
//   are transposed into [k][NR] panels in registers, 16x16 at a time. The same routine takes
//   either operand transposed, which is how matmul_backward runs without transposing copies.
// Every output is one FMA chain over k = 0..K-1 in order, whatever the tiling or split.
#include <algorithm>
#include <cstring>

#include "kernels/cpu/gemm_packed.h"

namespace huginn::cpu {
namespace {

constexpr int64_t kGemvMaxRows = 4;

// y[m][n0..n1) for the MB rows of x, four rows of w at a time.
template <class V, int MB>
void gemv_block(const float* const* xr, const Tensor& w, int64_t n0, int64_t n1, int64_t K,
                float* const* yr) {
  using R = typename V::R;
  constexpr int W = V::W;
  const int64_t kfull = K / W * W;
  const int rem = static_cast<int>(K - kfull);
  for (int64_t n = n0; n < n1; n += 4) {
    const float* wr[4];
    for (int i = 0; i < 4; ++i) wr[i] = w.row(std::min(n + i, n1 - 1));  // tail: repeat a row
    R acc[4][MB];
    for (auto& a : acc)
      for (R& r : a) r = V::zero();
    auto step = [&](const auto& load, int64_t k) {
      R xv[MB];
      for (int j = 0; j < MB; ++j) xv[j] = load(xr[j] + k);
      for (int i = 0; i < 4; ++i) {
        const R wv = load(wr[i] + k);
        for (int j = 0; j < MB; ++j) acc[i][j] = V::fmadd(wv, xv[j], acc[i][j]);
      }
    };
    for (int64_t k = 0; k < kfull; k += W) step([](const float* p) { return V::load(p); }, k);
    if (rem) step([rem](const float* p) { return V::load_n(p, rem); }, kfull);
    const int valid = static_cast<int>(std::min<int64_t>(4, n1 - n));
    for (int i = 0; i < valid; ++i)
      for (int j = 0; j < MB; ++j) yr[j][n + i] = V::reduce_add(acc[i][j]);
  }
}

template <class V>
void gemv(const Ctx& c, const Tensor& x, const Tensor& w, Tensor& y) {
  const int64_t M = x.dim(0), K = x.dim(1), N = w.dim(0);
  c.for_range(N, 2 * M * K, [&](int64_t n0, int64_t n1) {
    for (int64_t m = 0; m < M; m += kGemvMaxRows) {
      const float* xr[kGemvMaxRows];
      float* yr[kGemvMaxRows];
      const int mb = static_cast<int>(std::min(kGemvMaxRows, M - m));
      for (int j = 0; j < mb; ++j) xr[j] = x.row(m + j), yr[j] = y.row(m + j);
      switch (mb) {
        case 1: gemv_block<V, 1>(xr, w, n0, n1, K, yr); break;
        case 2: gemv_block<V, 2>(xr, w, n0, n1, K, yr); break;
        case 3: gemv_block<V, 3>(xr, w, n0, n1, K, yr); break;
        default: gemv_block<V, 4>(xr, w, n0, n1, K, yr); break;
      }
    }
  });
}

// A operand [M, K] at (i, k) -> a[i * ai + k * ak] (one of ai, ak is 1), as panels [k][MR].
template <int MR>
void pack_a(const float* a, int64_t ai, int64_t ak, int64_t m0, int64_t rows, int64_t k0,
            int64_t kc, float* dst) {
  if (ai == 1) {  // columns contiguous: copy MR floats per k
    for (int64_t k = 0; k < kc; ++k) {
      const float* s = a + m0 + (k0 + k) * ak;
      for (int64_t i = 0; i < MR; ++i) dst[k * MR + i] = i < rows ? s[i] : 0.0f;
    }
    return;
  }
  pack_rows_u32(a + m0 * ai + k0, ai * 4, rows, kc, MR, reinterpret_cast<uint32_t*>(dst));
}

// B operand [K, N] at (k, n) -> b[k * bk + n * bn] (one of bk, bn is 1), as panels [k][NR].
template <int NR>
void pack_b(const float* b, int64_t bk, int64_t bn, int64_t n0, int64_t cols, int64_t k0,
            int64_t kc, float* dst) {
  if (bk == 1) {  // a weight [N, K] as stored: transpose
    pack_transposed_u32(b + n0 * bn + k0, bn * 4, cols, kc, kc, NR,
                        reinterpret_cast<uint32_t*>(dst));
    return;
  }
  for (int64_t k = 0; k < kc; ++k) {
    const float* s = b + (k0 + k) * bk + n0;
    float* d = dst + k * NR;
    std::memcpy(d, s, cols * sizeof(float));
    std::fill(d + cols, d + NR, 0.0f);
  }
}

}  // namespace

template <class V>
void gemm_f32(const Ctx& c, const float* a, int64_t ai, int64_t ak, const float* b, int64_t bk,
              int64_t bn, float* y, int64_t ldy, int64_t M, int64_t N, int64_t K,
              bool accumulate) {
  constexpr int MR = GemmTile<V>::MR, NV = GemmTile<V>::NV, NR = NV * V::W;
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {
    if (!accumulate)
      for (int64_t m = 0; m < M; ++m) std::memset(y + m * ldy, 0, N * sizeof(float));
    return;
  }
  auto pa = [&](int64_t m0, int64_t rows, int64_t k0, int64_t kc, float* dst) {
    pack_a<MR>(a, ai, ak, m0, rows, k0, kc, dst);
  };
  auto pb = [&](int64_t n0, int64_t cols, int64_t k0, int64_t kc, float* dst) {
    pack_b<NR>(b, bk, bn, n0, cols, k0, kc, dst);
  };
  packed_gemm<MR, NR, float>(c, kGemmBlocking, M, N, K, pa, pb, micro_f32<V, MR, NV>, y, ldy,
                             accumulate);
}


template <class V>
void matmul(const Ctx& c, const Tensor& x, const Tensor& w, Tensor& y) {
  const int64_t M = x.dim(0), K = x.dim(1), N = w.dim(0);
  HUGINN_ASSERT(w.dim(1) == K && y.dim(0) == M && y.dim(1) == N, "matmul: shape mismatch");
  if (M == 0 || N == 0) return;
  if (K == 0) {
    for (int64_t m = 0; m < M; ++m) std::memset(y.row(m), 0, N * sizeof(float));
  } else if (M <= kGemvMaxRows) {
    gemv<V>(c, x, w, y);
  } else {
    gemm_f32<V>(c, x.row(0), x.stride(0), 1, w.row(0), 1, w.stride(0), y.row(0), y.stride(0), M,
                N, K, false);
  }
}

GemmF32Fn gemm_f32_like(void (*mm)(const Ctx&, const Tensor&, const Tensor&, Tensor&)) {
#define HUGINN_MATCH(V) \
  if (mm == &matmul<V>) return &gemm_f32<V>;
  HUGINN_FOR_EACH_VEC(HUGINN_MATCH)
#undef HUGINN_MATCH
  HUGINN_ASSERT(false, "gemm_f32_like: not one of the cpu::matmul instantiations");
  return nullptr;
}

#define HUGINN_INSTANTIATE(V)                                                                  \
  template void matmul<V>(const Ctx&, const Tensor&, const Tensor&, Tensor&);                  \
  template void gemm_f32<V>(const Ctx&, const float*, int64_t, int64_t, const float*, int64_t, \
                            int64_t, float*, int64_t, int64_t, int64_t, int64_t, bool);
HUGINN_FOR_EACH_VEC(HUGINN_INSTANTIATE)
#undef HUGINN_INSTANTIATE

}  // namespace huginn::cpu
