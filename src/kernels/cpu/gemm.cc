// GEMM y = x·wᵀ.  x [M, K] (tokens x inner), w [N, K] (a Linear weight as stored), y [M, N];
// all three may be row-strided views.
//
// Two paths, chosen by M alone (never by the thread count, so results do not depend on it):
// - M <= kGemvMaxRows (decode): dot products along K, each weight row streamed once for all
//   rows of x. Bandwidth bound; no packing.
// - otherwise: x is packed transposed into panels of MW rows ([K][MW], zero padded), and a
//   register tile computes yᵀ[n.., m..] += w[n, k] (broadcast) * xᵀ[k, m..], rows of w read in
//   place, K in cache-sized blocks. Packing x costs M·K against M·N·K of work, so it is cheap
//   for every layer shape (N >= 64), whereas packing w (the usual layout) would cost N·K, i.e.
//   1/M of the work.
// Every output is one FMA chain over k = 0..K-1 in order, whatever the tiling or split.
#include <algorithm>
#include <cstring>

#include "kernels/cpu/kernels.h"
#include "kernels/cpu/simd.h"

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

// dst[k][j] = x[m0 + j][k] for j < count, 0 for the padding rows. Blocks of 16 k keep the
// 16 destination lines in L1 while the MW source rows are read along k.
template <int MW>
void pack_xt(const Tensor& x, int64_t m0, int64_t count, int64_t K, float* dst) {
  constexpr int64_t kB = 16;
  for (int64_t k0 = 0; k0 < K; k0 += kB) {
    const int64_t kb = std::min(kB, K - k0);
    float* d = dst + k0 * MW;
    for (int64_t j = 0; j < MW; ++j) {
      if (j < count) {
        const float* xr = x.row(m0 + j) + k0;
        for (int64_t k = 0; k < kb; ++k) d[k * MW + j] = xr[k];
      } else {
        for (int64_t k = 0; k < kb; ++k) d[k * MW + j] = 0.0f;
      }
    }
  }
}

// acc[i][m] (+)= sum_k w_i[k] * xt[k][m] for k < kc, NR rows of w and MV vectors of m; `acc`
// holds the partial sums of the previous K blocks (exactly: the FMA chain just continues).
template <class V, int NR, int MV>
void tile(const float* const* wr, const float* xt, int64_t kc, bool first, float* acc_io) {
  using R = typename V::R;
  constexpr int W = V::W;
  R acc[NR][MV];
  for (int i = 0; i < NR; ++i)
    for (int j = 0; j < MV; ++j)
      acc[i][j] = first ? V::zero() : V::load(acc_io + (i * MV + j) * W);
  for (int64_t k = 0; k < kc; ++k) {
    R b[MV];
    for (int j = 0; j < MV; ++j) b[j] = V::load(xt + k * MV * W + j * W);
    for (int i = 0; i < NR; ++i) {
      const R a = V::set1(wr[i][k]);
      for (int j = 0; j < MV; ++j) acc[i][j] = V::fmadd(a, b[j], acc[i][j]);
    }
  }
  for (int i = 0; i < NR; ++i)
    for (int j = 0; j < MV; ++j) V::store(acc_io + (i * MV + j) * W, acc[i][j]);
}

// K is done in blocks of kKc: per block, one tile of w rows (NR x kKc, L1) meets every panel
// of x (M x kKc, L2), the accumulators parked in a per-thread buffer between blocks.
constexpr int64_t kKc = 256;

template <class V>
void gemm_packed(const Ctx& c, const Tensor& x, const Tensor& w, Tensor& y) {
  constexpr int NR = V::kGemmRows, MV = V::kGemmVecs, MW = MV * V::W;
  const int64_t M = x.dim(0), K = x.dim(1), N = w.dim(0);
  const int64_t panels = (M + MW - 1) / MW, tiles = (N + NR - 1) / NR;
  float* xt = scratch(0, panels * K * MW);
  c.for_range(panels, K * MW, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p)
      pack_xt<MW>(x, p * MW, std::min<int64_t>(MW, M - p * MW), K, xt + p * K * MW);
  });
  c.for_range(tiles, 2 * M * K * NR, [&](int64_t t0, int64_t t1) {
    float* acc = scratch(2, (t1 - t0) * panels * NR * MW);  // this thread's own buffer
    for (int64_t k0 = 0; k0 < K; k0 += kKc) {
      const int64_t kc = std::min(kKc, K - k0);
      const bool first = k0 == 0, last = k0 + kc == K;
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t n0 = t * NR, nc = std::min<int64_t>(NR, N - n0);
        const float* wr[NR];
        for (int i = 0; i < NR; ++i) wr[i] = w.row(n0 + std::min<int64_t>(i, nc - 1)) + k0;
        for (int64_t p = 0; p < panels; ++p) {
          float* a = acc + ((t - t0) * panels + p) * NR * MW;
          tile<V, NR, MV>(wr, xt + p * K * MW + k0 * MW, kc, first, a);
          if (!last) continue;
          const int64_t m0 = p * MW, mc = std::min<int64_t>(MW, M - m0);
          for (int64_t m = 0; m < mc; ++m) {
            float* yr = y.row(m0 + m) + n0;
            for (int64_t i = 0; i < nc; ++i) yr[i] = a[i * MW + m];
          }
        }
      }
    }
  });
}

}  // namespace

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
    gemm_packed<V>(c, x, w, y);
  }
}

#define HUGINN_INSTANTIATE(V) \
  template void matmul<V>(const Ctx&, const Tensor&, const Tensor&, Tensor&);
HUGINN_FOR_EACH_VEC(HUGINN_INSTANTIATE)
#undef HUGINN_INSTANTIATE

}  // namespace huginn::cpu
