// Causal softmax attention.  q [T, H*D], k, v [S, H*D] (S >= T; query t sees keys 0..S-T+t,
// the mask aligned bottom-right), out [T, H*D].
// Prefill (T >= kAttnMinBlockRows): per head, blocks of queries as two packed GEMMs (Q·Kᵀ, then
// P·V) around a masked softmax, threaded over (block, head). Decode (a few queries): per
// (query, head) pair, dot products along D in registers, a stable softmax, the weighted sum of v.
// Either way each output is computed by one thread in a fixed order (thread-count independent).
#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <utility>

#include "kernels/cpu/kernels.h"
#include "kernels/cpu/simd.h"

namespace huginn::cpu {
namespace {

constexpr int kMaxVecs = 8;
// Prefill: queries in blocks of kAttnBlock rows per head (scores [rows, keys] stay in L2);
// fewer than kAttnMinBlockRows queries take the per-row path.
constexpr int64_t kAttnBlock = kAttnBlockRows, kAttnMinBlockRows = 8;
static_assert(kAttnBlock >= kAttnMinBlockRows, "a split's second part must take the block path");

// Lanes of vector c in a group of `dlen` floats; kFull: dlen is NC whole vectors (the usual
// head_dim), which keeps masks and branches out of the inner loops.
template <class V, bool kFull>
inline int lanes(int c, int dlen) {
  return kFull ? V::W : std::min(V::W, dlen - c * V::W);
}

// sc[s] += q·k_s over one group of NC vectors (dlen floats), for s < n.
template <class V, int NC, bool kFull>
void dot_group(const float* q, const float* k0, int64_t ldk, int64_t n, int dlen, float* sc) {
  using R = typename V::R;
  R qv[NC];
  for (int c = 0; c < NC; ++c) qv[c] = ld<V>(q + c * V::W, lanes<V, kFull>(c, dlen));
  for (int64_t s = 0; s < n; ++s) {
    const float* kr = k0 + s * ldk;
    R acc = V::mul(qv[0], ld<V>(kr, lanes<V, kFull>(0, dlen)));
    for (int c = 1; c < NC; ++c)
      acc = V::fmadd(qv[c], ld<V>(kr + c * V::W, lanes<V, kFull>(c, dlen)), acc);
    sc[s] += V::reduce_add(acc);
  }
}

// o = inv * sum_s p[s] v_s over one group of NC vectors (dlen floats).
template <class V, int NC, bool kFull>
void wsum_group(const float* p, int64_t n, const float* v0, int64_t ldv, int dlen, float inv,
                float* o) {
  using R = typename V::R;
  R acc[NC];
  for (R& a : acc) a = V::zero();
  for (int64_t s = 0; s < n; ++s) {
    const R ps = V::set1(p[s]);
    const float* vr = v0 + s * ldv;
    for (int c = 0; c < NC; ++c)
      acc[c] = V::fmadd(ps, ld<V>(vr + c * V::W, lanes<V, kFull>(c, dlen)), acc[c]);
  }
  const R iv = V::set1(inv);
  for (int c = 0; c < NC; ++c)
    st<V>(o + c * V::W, V::mul(acc[c], iv), lanes<V, kFull>(c, dlen));
}

using DotFn = void (*)(const float*, const float*, int64_t, int64_t, int, float*);
using WsumFn = void (*)(const float*, int64_t, const float*, int64_t, int, float, float*);

// Indexed by [full][vectors - 1].
template <class V, int... I>
constexpr std::array<std::array<DotFn, sizeof...(I)>, 2> dot_table(
    std::integer_sequence<int, I...>) {
  return {{{&dot_group<V, I + 1, false>...}, {&dot_group<V, I + 1, true>...}}};
}
template <class V, int... I>
constexpr std::array<std::array<WsumFn, sizeof...(I)>, 2> wsum_table(
    std::integer_sequence<int, I...>) {
  return {{{&wsum_group<V, I + 1, false>...}, {&wsum_group<V, I + 1, true>...}}};
}

// sc[0..n) <- exp(scale*sc - max) in place; returns 1 / their sum.
template <class V>
float softmax_inplace(float* sc, int64_t n, float scale) {
  const int64_t full = n / V::W * V::W;
  const auto sv = V::set1(scale);
  auto mv = V::set1(-std::numeric_limits<float>::infinity());
  for (int64_t s = 0; s < full; s += V::W) {
    const auto x = V::mul(V::load(sc + s), sv);
    V::store(sc + s, x);
    mv = V::max(mv, x);
  }
  float mx = V::reduce_max(mv);
  for (int64_t s = full; s < n; ++s) mx = std::max(mx, sc[s] *= scale);
  const auto m = V::set1(mx);
  auto sum = V::zero();
  for_chunks<V>(n, [&](int64_t s, int cnt) {
    const auto p = V::exp(V::sub(ld<V>(sc + s, cnt), m));
    st<V>(sc + s, p, cnt);
    sum = V::add(sum, cnt == V::W ? p : ld<V>(sc + s, cnt));  // re-load drops the padding lanes
  });
  return 1.0f / V::reduce_add(sum);
}


// One (query, head) pair start to finish: the decode path (a few queries against a cache).
template <class V>
void attention_row(const Tensor& q, const Tensor& k, const Tensor& v, int64_t H, int64_t t,
                   int64_t h, Tensor& out) {
  static constexpr auto kDot = dot_table<V>(std::make_integer_sequence<int, kMaxVecs>());
  static constexpr auto kWsum = wsum_table<V>(std::make_integer_sequence<int, kMaxVecs>());
  constexpr int64_t kGroup = kMaxVecs * V::W;
  const int64_t T = q.dim(0), S = k.dim(0), D = q.dim(1) / H;
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(D)));
  const int64_t n = S - T + t + 1;
  float* sc = scratch(1, n);
  std::fill(sc, sc + n, 0.0f);
  const float* qr = q.row(t) + h * D;
  for (int64_t g = 0; g < D; g += kGroup) {
    const int dlen = static_cast<int>(std::min(kGroup, D - g));
    kDot[dlen % V::W == 0][(dlen + V::W - 1) / V::W - 1](qr + g, k.row(0) + h * D + g,
                                                         k.stride(0), n, dlen, sc);
  }
  const float inv = softmax_inplace<V>(sc, n, scale);
  for (int64_t g = 0; g < D; g += kGroup) {
    const int dlen = static_cast<int>(std::min(kGroup, D - g));
    kWsum[dlen % V::W == 0][(dlen + V::W - 1) / V::W - 1](
        sc, n, v.row(0) + h * D + g, v.stride(0), dlen, inv, out.row(t) + h * D + g);
  }
}

// A block of bq queries (from t0) of head h, as two GEMMs: scores = Q·Kᵀ over the keys the last
// query sees, a masked softmax per row (weights past a row's last key set to 0), out = P·V, then
// each row scaled by 1 / its sum. Called inside a job of c's pool, the GEMMs run on this thread.
template <class V>
void attention_block(const Ctx& c, const Tensor& q, const Tensor& k, const Tensor& v, int64_t H, int64_t t0,
                     int64_t bq, int64_t h, Tensor& out) {
  const int64_t T = q.dim(0), S = k.dim(0), D = q.dim(1) / H;
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(D)));
  const int64_t n = S - T + t0 + bq;
  float* sc = scratch(1, bq * n);
  gemm_f32<V>(c, q.row(t0) + h * D, q.stride(0), 1, k.row(0) + h * D, 1, k.stride(0), sc,
              n, bq, n, D, false);
  float inv[kAttnBlock];
  for (int64_t i = 0; i < bq; ++i) {
    float* row = sc + i * n;
    const int64_t ni = n - bq + i + 1;
    inv[i] = softmax_inplace<V>(row, ni, scale);
    std::fill(row + ni, row + n, 0.0f);
  }
  float* o = out.row(t0) + h * D;
  gemm_f32<V>(c, sc, n, 1, v.row(0) + h * D, v.stride(0), 1, o, out.stride(0), bq, D, n,
              false);
  for (int64_t i = 0; i < bq; ++i) {
    float* r = o + i * out.stride(0);
    const auto iv = V::set1(inv[i]);
    for_chunks<V>(D, [&](int64_t d, int cnt) { st<V>(r + d, V::mul(ld<V>(r + d, cnt), iv), cnt); });
  }
}

}  // namespace

template <class V>
void attention(const Ctx& c, const Tensor& q, const Tensor& k, const Tensor& v, int n_heads,
               Tensor& out) {
  const int64_t T = q.dim(0), S = k.dim(0), HD = q.dim(1), D = HD / n_heads, H = n_heads;
  HUGINN_ASSERT(S >= T && v.dim(0) == S && k.dim(1) == HD && v.dim(1) == HD && HD % H == 0,
                "attention: need S >= T keys and matching widths");
  if (T == 0 || HD == 0) return;
  if (T < kAttnMinBlockRows) {
    // Unit u -> (row r, head h); rows alternate first/last query so that contiguous chunks of
    // units carry about the same number of keys (causal rows grow with t).
    c.for_range(T * H, 4 * D * (S - T / 2), [&](int64_t b, int64_t e) {
      for (int64_t u = b; u < e; ++u) {
        const int64_t r = u / H, h = u % H;
        attention_row<V>(q, k, v, H, r % 2 == 0 ? r / 2 : T - 1 - r / 2, h, out);
      }
    });
    return;
  }
  // Unit u -> (query block, head), blocks alternating first/last as above.
  const int64_t blocks = (T + kAttnBlock - 1) / kAttnBlock;
  c.for_range(blocks * H, 4 * D * kAttnBlock * (S - T / 2), [&](int64_t b, int64_t e) {
    for (int64_t u = b; u < e; ++u) {
      const int64_t r = u / H, h = u % H;
      const int64_t blk = r % 2 == 0 ? r / 2 : blocks - 1 - r / 2;
      const int64_t t0 = blk * kAttnBlock;
      attention_block<V>(c, q, k, v, H, t0, std::min(kAttnBlock, T - t0), h, out);
    }
  });
}

#define HUGINN_INSTANTIATE(V)                                                                   \
  template void attention<V>(const Ctx&, const Tensor&, const Tensor&, const Tensor&, int, \
                             Tensor&);
HUGINN_FOR_EACH_VEC(HUGINN_INSTANTIATE)
#undef HUGINN_INSTANTIATE

}  // namespace huginn::cpu
HUGINN_KERNELS_END
