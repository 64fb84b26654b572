// Row-wise ops: copy, embedding, RMSNorm, add, bias, RoPE, SwiGLU, concat, log-softmax.
// T = rows (tokens), E = n_embd, I = intermediate, V = vocabulary, D = head_dim.
// Each is threaded over rows and vectorised along the row; a row's arithmetic never depends on
// how rows are split between threads.
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>

#include "kernels/cpu/kernels.h"
#include "kernels/cpu/simd.h"

namespace huginn::cpu {
namespace {

// fn(t) for every row, threaded; `cost` is the work of one row.
template <class F>
void each_row(const Ctx& c, int64_t rows, int64_t cost, const F& fn) {
  c.for_range(rows, cost, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) fn(t);
  });
}

}  // namespace

template <class V>
void copy(const Ctx& c, const Tensor& src, Tensor& dst) {
  HUGINN_ASSERT(src.dim(0) == dst.dim(0) && src.dim(1) == dst.dim(1), "copy: shape mismatch");
  const int64_t T = src.dim(0), N = src.dim(1);
  if (T == 0) return;
  // Overlapping rows (a batch moving its rows up, DepthBatch): threads would overwrite rows
  // another thread has yet to read, so one thread copies them in the order that reads each
  // source row before it is overwritten.
  const float *s0 = src.row(0), *s1 = src.row(T - 1) + N, *d0 = dst.row(0), *d1 = dst.row(T - 1) + N;
  if (std::less<const float*>()(s0, d1) && std::less<const float*>()(d0, s1)) {
    const bool up = std::less_equal<const float*>()(d0, s0);
    for (int64_t i = 0; i < T; ++i) {
      const int64_t t = up ? i : T - 1 - i;
      std::memmove(dst.row(t), src.row(t), N * sizeof(float));
    }
    return;
  }
  each_row(c, T, N, [&](int64_t t) { std::memmove(dst.row(t), src.row(t), N * sizeof(float)); });
}

template <class V>
void embedding(const Ctx& c, const Tensor& table, std::span<const int32_t> ids, float scale,
               Tensor& out) {
  const int64_t E = table.dim(1);
  const auto s = V::set1(scale);
  each_row(c, static_cast<int64_t>(ids.size()), E, [&](int64_t t) {
    HUGINN_DASSERT(ids[t] >= 0 && ids[t] < table.dim(0), "embedding: id out of range");
    const float* src = table.row(ids[t]);
    float* dst = out.row(t);
    for_chunks<V>(E, [&](int64_t i, int n) { st<V>(dst + i, V::mul(ld<V>(src + i, n), s), n); });
  });
}

template <class V>
void rmsnorm(const Ctx& c, const Tensor& x, const Tensor& w, float eps, Tensor& y) {
  const int64_t E = x.dim(1);
  const float* wv = w.f32();
  each_row(c, x.dim(0), 3 * E, [&](int64_t t) {
    const float* xr = x.row(t);
    auto acc = V::zero();
    for_chunks<V>(E, [&](int64_t i, int n) {
      const auto v = ld<V>(xr + i, n);
      acc = V::fmadd(v, v, acc);
    });
    const double ms = static_cast<double>(V::reduce_add(acc)) / static_cast<double>(E);
    const auto inv = V::set1(static_cast<float>(1.0 / std::sqrt(ms + eps)));
    float* yr = y.row(t);
    for_chunks<V>(E, [&](int64_t i, int n) {
      st<V>(yr + i, V::mul(V::mul(ld<V>(xr + i, n), inv), ld<V>(wv + i, n)), n);
    });
  });
}

template <class V>
void add(const Ctx& c, const Tensor& a, const Tensor& b, Tensor& y) {
  const int64_t N = a.dim(1);
  each_row(c, a.dim(0), N, [&](int64_t t) {
    const float *ar = a.row(t), *br = b.row(t);
    float* yr = y.row(t);
    for_chunks<V>(N, [&](int64_t i, int n) {
      st<V>(yr + i, V::add(ld<V>(ar + i, n), ld<V>(br + i, n)), n);
    });
  });
}

template <class V>
void add_bias(const Ctx& c, Tensor& x, const Tensor& bias) {
  const int64_t N = x.dim(1);
  const float* bv = bias.f32();
  each_row(c, x.dim(0), N, [&](int64_t t) {
    float* xr = x.row(t);
    for_chunks<V>(N, [&](int64_t i, int n) {
      st<V>(xr + i, V::add(ld<V>(xr + i, n), ld<V>(bv + i, n)), n);
    });
  });
}

template <class V>
void rope(const Ctx& c, Tensor& x, const Tensor& cos_sin, std::span<const int32_t> positions,
          int head_dim) {
  static_assert(V::W % 2 == 0, "pairs must not straddle vectors");
  const int64_t HD = x.dim(1), D = head_dim;
  HUGINN_ASSERT(D % 2 == 0 && HD % D == 0, "rope: head_dim must be even and divide the width");
  each_row(c, x.dim(0), 4 * HD, [&](int64_t t) {
    HUGINN_DASSERT(positions[t] >= 0 && positions[t] < cos_sin.dim(0), "rope: bad position");
    const float* cs = cos_sin.f32() + static_cast<int64_t>(positions[t]) * D;
    float* xr = x.row(t);
    for (int64_t h = 0; h < HD; h += D) {
      for_chunks<V>(D, [&](int64_t i, int n) {  // n stays even: D is even, W is even
        st<V>(xr + h + i, V::rope(ld<V>(xr + h + i, n), ld<V>(cs + i, n)), n);
      });
    }
  });
}

template <class V>
void swiglu(const Ctx& c, const Tensor& fc, Tensor& out) {
  const int64_t I = out.dim(1);
  HUGINN_ASSERT(fc.dim(1) == 2 * I && fc.dim(0) == out.dim(0), "swiglu: shape mismatch");
  const auto one = V::set1(1.0f);
  each_row(c, fc.dim(0), 24 * I, [&](int64_t t) {
    const float* g = fc.row(t);
    float* o = out.row(t);
    for_chunks<V>(I, [&](int64_t i, int n) {
      const auto a = ld<V>(g + i, n);
      const auto silu = V::div(a, V::add(one, V::exp(V::sub(V::zero(), a))));
      st<V>(o + i, V::mul(silu, ld<V>(g + I + i, n)), n);
    });
  });
}

template <class V>
void concat_cols(const Ctx& c, const Tensor& a, const Tensor& b, Tensor& out) {
  const int64_t A = a.dim(1), B = b.dim(1);
  HUGINN_ASSERT(out.dim(1) == A + B && a.dim(0) == b.dim(0), "concat_cols: shape mismatch");
  each_row(c, a.dim(0), A + B, [&](int64_t t) {
    std::memcpy(out.row(t), a.row(t), A * sizeof(float));
    std::memcpy(out.row(t) + A, b.row(t), B * sizeof(float));
  });
}

template <class V>
void log_softmax(const Ctx& c, const Tensor& x, Tensor& y) {
  const int64_t N = x.dim(1), full = N / V::W * V::W;
  each_row(c, x.dim(0), 24 * N, [&](int64_t t) {
    const float* xr = x.row(t);
    // Max: vectors, then the tail scalar (zero-filled tail lanes could exceed a negative max).
    auto mv = V::set1(-std::numeric_limits<float>::infinity());
    for (int64_t i = 0; i < full; i += V::W) mv = V::max(mv, V::load(xr + i));
    float mx = V::reduce_max(mv);
    for (int64_t i = full; i < N; ++i) mx = std::max(mx, xr[i]);
    const auto m = V::set1(mx);
    auto sv = V::zero();
    for (int64_t i = 0; i < full; i += V::W) sv = V::add(sv, V::exp(V::sub(V::load(xr + i), m)));
    double sum = V::reduce_add(sv);
    for (int64_t i = full; i < N; ++i) sum += std::exp(static_cast<double>(xr[i]) - mx);
    // (x - max) - log(sum): x - max is exact near the max, so the error stays relative to |y|
    // even when |x| is large (x - (max + log sum) would round at the scale of |max|).
    const auto ls = V::set1(static_cast<float>(std::log(sum)));
    float* yr = y.row(t);
    for_chunks<V>(N, [&](int64_t i, int n) {
      st<V>(yr + i, V::sub(V::sub(ld<V>(xr + i, n), m), ls), n);
    });
  });
}

#define HUGINN_INSTANTIATE(V)                                                                  \
  template void copy<V>(const Ctx&, const Tensor&, Tensor&);                                   \
  template void embedding<V>(const Ctx&, const Tensor&, std::span<const int32_t>, float,       \
                             Tensor&);                                                         \
  template void rmsnorm<V>(const Ctx&, const Tensor&, const Tensor&, float, Tensor&);          \
  template void add<V>(const Ctx&, const Tensor&, const Tensor&, Tensor&);                     \
  template void add_bias<V>(const Ctx&, Tensor&, const Tensor&);                               \
  template void rope<V>(const Ctx&, Tensor&, const Tensor&, std::span<const int32_t>, int);    \
  template void swiglu<V>(const Ctx&, const Tensor&, Tensor&);                                 \
  template void concat_cols<V>(const Ctx&, const Tensor&, const Tensor&, Tensor&);             \
  template void log_softmax<V>(const Ctx&, const Tensor&, Tensor&);
HUGINN_FOR_EACH_VEC(HUGINN_INSTANTIATE)
#undef HUGINN_INSTANTIATE

}  // namespace huginn::cpu
HUGINN_KERNELS_END
