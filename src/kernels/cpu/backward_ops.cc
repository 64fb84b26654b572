// Row-wise backward ops of the fast CPU backend: rmsnorm, add_bias, rope, swiglu, concat,
// embedding scatter-add and the fused cross-entropy. T = tokens, E = features, I = MLP half,
// V = vocabulary. Loops are written for the compiler's vectoriser (contiguous inner loops);
// parameter-gradient sums run over column ranges, each in row order, so no result depends on
// the thread count. Row statistics accumulate in double, as the reference does.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/cpu/backward_kernels.h"

namespace huginn::cpu {

void rmsnorm_backward(const Ctx& c, const Tensor& x, const Tensor& w, float eps, const Tensor& dy,
                      Tensor& dx, Tensor& dw) {
  const int64_t T = x.dim(0), E = x.dim(1);
  const float* wp = w.f32();
  std::vector<float> inv(static_cast<size_t>(T)), coef(static_cast<size_t>(T));
  c.for_range(T, 3 * E, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const float* xr = x.row(t);
      const float* g = dy.row(t);
      double ss = 0, dot = 0;
      for (int64_t i = 0; i < E; ++i) {
        ss += double(xr[i]) * xr[i];
        dot += double(g[i]) * wp[i] * xr[i];
      }
      const double iv = 1.0 / std::sqrt(ss / E + eps);
      inv[t] = static_cast<float>(iv);
      coef[t] = static_cast<float>(iv * iv * iv * dot / E);
    }
  });
  // dw first: dx may alias dy.
  constexpr int64_t kCols = 64;
  c.for_range((E + kCols - 1) / kCols, kCols * T, [&](int64_t b0, int64_t b1) {
    const int64_t i0 = b0 * kCols, i1 = std::min(E, b1 * kCols);
    std::vector<double> acc(static_cast<size_t>(i1 - i0), 0.0);
    for (int64_t t = 0; t < T; ++t) {
      const float* xr = x.row(t);
      const float* g = dy.row(t);
      const float iv = inv[t];
      for (int64_t i = i0; i < i1; ++i) acc[i - i0] += g[i] * xr[i] * iv;
    }
    for (int64_t i = i0; i < i1; ++i) dw.f32()[i] += static_cast<float>(acc[i - i0]);
  });
  c.for_range(T, 3 * E, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const float* xr = x.row(t);
      const float* g = dy.row(t);
      float* d = dx.row(t);
      const float iv = inv[t], cf = coef[t];
      for (int64_t i = 0; i < E; ++i) d[i] = iv * g[i] * wp[i] - cf * xr[i];
    }
  });
}

void add_bias_backward(const Ctx& c, const Tensor& dy, Tensor& dbias) {
  const int64_t T = dy.dim(0), N = dy.dim(1);
  constexpr int64_t kCols = 64;
  c.for_range((N + kCols - 1) / kCols, kCols * T, [&](int64_t b0, int64_t b1) {
    const int64_t n0 = b0 * kCols, n1 = std::min(N, b1 * kCols);
    std::vector<double> acc(static_cast<size_t>(n1 - n0), 0.0);
    for (int64_t t = 0; t < T; ++t)
      for (int64_t n = n0; n < n1; ++n) acc[n - n0] += dy.row(t)[n];
    for (int64_t n = n0; n < n1; ++n) dbias.f32()[n] += static_cast<float>(acc[n - n0]);
  });
}

// The inverse rotation: a = a'·cos + b'·sin, b = b'·cos − a'·sin.
void rope_backward(const Ctx& c, Tensor& dx, const Tensor& cos_sin,
                   std::span<const int32_t> positions, int head_dim) {
  const int64_t T = dx.dim(0), HD = dx.dim(1), half = head_dim / 2;
  c.for_range(T, 3 * HD, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const float* cs = cos_sin.f32() + int64_t(positions[t]) * half * 2;
      float* r = dx.row(t);
      for (int64_t h = 0; h < HD / head_dim; ++h)
        for (int64_t i = 0; i < half; ++i) {
          float* p = r + h * head_dim + 2 * i;
          const float a = p[0], b = p[1], co = cs[2 * i], si = cs[2 * i + 1];
          p[0] = a * co + b * si;
          p[1] = b * co - a * si;
        }
    }
  });
}

void swiglu_backward(const Ctx& c, const Tensor& fc, const Tensor& dout, Tensor& dfc) {
  const int64_t T = fc.dim(0), I = dout.dim(1);
  c.for_range(T, 20 * I, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const float* a = fc.row(t);
      const float* b = a + I;
      const float* g = dout.row(t);
      float* da = dfc.row(t);
      float* db = da + I;
      for (int64_t i = 0; i < I; ++i) {
        const float sig = 1.0f / (1.0f + std::exp(-a[i]));
        da[i] = g[i] * b[i] * sig * (1.0f + a[i] * (1.0f - sig));
        db[i] = g[i] * a[i] * sig;
      }
    }
  });
}

void concat_cols_backward(const Ctx& c, const Tensor& dout, Tensor& da, Tensor& db) {
  const int64_t T = dout.dim(0), A = da.dim(1), B = db.dim(1);
  c.for_range(T, A + B, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      std::memcpy(da.row(t), dout.row(t), A * sizeof(float));
      std::memcpy(db.row(t), dout.row(t) + A, B * sizeof(float));
    }
  });
}

// Split over columns of the table so repeated ids never race; each column adds in token order.
void embedding_backward(const Ctx& c, const Tensor& dout, std::span<const int32_t> ids,
                        float scale, Tensor& dtable) {
  const int64_t E = dtable.dim(1), T = static_cast<int64_t>(ids.size());
  constexpr int64_t kCols = 64;
  c.for_range((E + kCols - 1) / kCols, kCols * T, [&](int64_t b0, int64_t b1) {
    const int64_t i0 = b0 * kCols, i1 = std::min(E, b1 * kCols);
    for (int64_t t = 0; t < T; ++t) {
      float* d = dtable.row(ids[t]);
      const float* g = dout.row(t);
      for (int64_t i = i0; i < i1; ++i) d[i] += g[i] * scale;
    }
  });
}

float cross_entropy(const Ctx& c, const Tensor& logits, std::span<const int32_t> labels,
                    float dscale, Tensor* dlogits) {
  const int64_t T = logits.dim(0), V = logits.dim(1);
  HUGINN_ASSERT(labels.size() == static_cast<size_t>(T), "cross_entropy: one label per row");
  int64_t n_valid = 0;
  for (int32_t l : labels) n_valid += l != -100;
  const float g = n_valid ? static_cast<float>(double(dscale) / double(n_valid)) : 0.0f;
  std::vector<double> row_loss(static_cast<size_t>(T), 0.0);
  c.for_range(T, 4 * V, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const float* x = logits.row(t);
      const int32_t l = labels[t];
      float* d = dlogits ? dlogits->row(t) : nullptr;
      if (l == -100) {
        if (d) std::fill(d, d + V, 0.0f);
        continue;
      }
      float mx = -INFINITY;
      for (int64_t i = 0; i < V; ++i) mx = std::max(mx, x[i]);
      double sum = 0;
      for (int64_t i = 0; i < V; ++i) sum += std::exp(x[i] - mx);
      const double lse = mx + std::log(sum);
      row_loss[t] = lse - x[l];
      if (!d) continue;
      const float lsef = static_cast<float>(lse);
      for (int64_t i = 0; i < V; ++i) d[i] = std::exp(x[i] - lsef) * g;
      d[l] -= g;
    }
  });
  double total = 0;
  for (double r : row_loss) total += r;
  return n_valid ? static_cast<float>(total / double(n_valid)) : 0.0f;
}

}  // namespace huginn::cpu
