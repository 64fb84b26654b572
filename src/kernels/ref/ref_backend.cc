// Scalar reference ops. T = tokens, S = keys, E = n_embd, H*D = heads x head_dim, V = vocab.
#include "kernels/ref/ref_backend.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <vector>

#include "kernels/ref/ref_train.h"

namespace huginn {

Tensor RefBackend::alloc(std::initializer_list<int64_t> shape, DType dtype) {
  return live_.count(Tensor::empty(shape, dtype));
}

void RefBackend::download(const Tensor& t, float* host) {
  int64_t rows = t.ndim() >= 2 ? t.numel() / t.dim(-1) : 1;
  int64_t cols = t.ndim() >= 1 ? t.dim(-1) : 1;
  if (t.is_contiguous()) {
    std::memcpy(host, t.f32(), t.numel() * sizeof(float));
    return;
  }
  HUGINN_ASSERT(t.ndim() == 2, "download of a strided tensor must be 2-D");
  for (int64_t r = 0; r < rows; ++r) std::memcpy(host + r * cols, t.row(r), cols * sizeof(float));
}

void RefBackend::copy(const Tensor& src, Tensor& dst) {
  HUGINN_ASSERT(src.dim(0) == dst.dim(0) && src.dim(1) == dst.dim(1), "copy: shape mismatch");
  // Rows of one tensor may overlap (moved up or down): each row read before it is overwritten.
  const int64_t T = src.dim(0), N = src.dim(1);
  const bool up = T == 0 || std::less_equal<const float*>()(dst.row(0), src.row(0));
  std::vector<float> row(static_cast<size_t>(N));
  for (int64_t i = 0; i < T; ++i) {
    const int64_t r = up ? i : T - 1 - i;
    std::copy(src.row(r), src.row(r) + N, row.begin());
    std::copy(row.begin(), row.end(), dst.row(r));
  }
}

void RefBackend::embedding(const Tensor& table, std::span<const int32_t> ids, float scale,
                           Tensor& out) {
  const int64_t E = table.dim(1);
  for (size_t t = 0; t < ids.size(); ++t) {
    const float* src = table.row(ids[t]);
    float* dst = out.row(static_cast<int64_t>(t));
    for (int64_t i = 0; i < E; ++i) dst[i] = src[i] * scale;
  }
}

void RefBackend::matmul(const Tensor& x, const Tensor& w, Tensor& y) {
  const int64_t M = x.dim(0), K = x.dim(1), N = w.dim(0);
  HUGINN_ASSERT(w.dim(1) == K && y.dim(0) == M && y.dim(1) == N, "matmul: shape mismatch");
  std::vector<float> deq;  // BF16 / Q8 / Q4 weights: each row dequantized to F32, then the same dot
  if (w.dtype() != DType::kF32) deq.resize(static_cast<size_t>(N * K));
  if (w.dtype() != DType::kF32 && N * K > 0) weight_rows_to_f32(w, 0, N, deq.data());
  for (int64_t m = 0; m < M; ++m) {
    const float* xr = x.row(m);
    for (int64_t n = 0; n < N; ++n) {
      const float* wr = deq.empty() ? w.row(n) : deq.data() + n * K;
      double acc = 0;
      for (int64_t k = 0; k < K; ++k) acc += static_cast<double>(xr[k]) * wr[k];
      y.row(m)[n] = static_cast<float>(acc);
    }
  }
}

void RefBackend::rmsnorm(const Tensor& x, const Tensor& w, float eps, Tensor& y) {
  const int64_t T = x.dim(0), E = x.dim(1);
  for (int64_t t = 0; t < T; ++t) {
    const float* xr = x.row(t);
    double ss = 0;
    for (int64_t i = 0; i < E; ++i) ss += static_cast<double>(xr[i]) * xr[i];
    const float inv = static_cast<float>(1.0 / std::sqrt(ss / E + eps));
    float* yr = y.row(t);
    for (int64_t i = 0; i < E; ++i) yr[i] = (xr[i] * inv) * w.f32()[i];
  }
}

void RefBackend::add(const Tensor& a, const Tensor& b, Tensor& y) {
  for (int64_t r = 0; r < a.dim(0); ++r)
    for (int64_t c = 0; c < a.dim(1); ++c) y.row(r)[c] = a.row(r)[c] + b.row(r)[c];
}

void RefBackend::add_bias(Tensor& x, const Tensor& bias) {
  for (int64_t r = 0; r < x.dim(0); ++r)
    for (int64_t c = 0; c < x.dim(1); ++c) x.row(r)[c] += bias.f32()[c];
}

void RefBackend::rope(Tensor& x, const Tensor& cos_sin, std::span<const int32_t> positions,
                      int head_dim) {
  const int64_t T = x.dim(0), HD = x.dim(1), half = head_dim / 2;
  for (int64_t t = 0; t < T; ++t) {
    const float* cs = cos_sin.f32() + static_cast<int64_t>(positions[t]) * half * 2;
    float* xr = x.row(t);
    for (int64_t h = 0; h < HD / head_dim; ++h) {
      for (int64_t i = 0; i < half; ++i) {
        float* p = xr + h * head_dim + 2 * i;
        const float a = p[0], b = p[1], c = cs[2 * i], s = cs[2 * i + 1];
        p[0] = a * c - b * s;
        p[1] = b * c + a * s;
      }
    }
  }
}

void RefBackend::attention(const Tensor& q, const Tensor& k, const Tensor& v, int n_heads,
                           Tensor& out) {
  const int64_t T = q.dim(0), S = k.dim(0), HD = q.dim(1), D = HD / n_heads;
  HUGINN_ASSERT(S >= T && v.dim(0) == S, "attention: need S >= T keys");
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));
  std::vector<double> p(static_cast<size_t>(S));
  for (int64_t h = 0; h < n_heads; ++h) {
    for (int64_t t = 0; t < T; ++t) {
      const int64_t last = S - T + t;  // bottom-right aligned causal mask
      const float* qr = q.row(t) + h * D;
      double mx = -INFINITY;
      for (int64_t s = 0; s <= last; ++s) {
        const float* kr = k.row(s) + h * D;
        double dot = 0;
        for (int64_t d = 0; d < D; ++d) dot += static_cast<double>(qr[d]) * kr[d];
        p[s] = dot * scale;
        if (p[s] > mx) mx = p[s];
      }
      double sum = 0;
      for (int64_t s = 0; s <= last; ++s) sum += (p[s] = std::exp(p[s] - mx));
      float* o = out.row(t) + h * D;
      for (int64_t d = 0; d < D; ++d) {
        double acc = 0;
        for (int64_t s = 0; s <= last; ++s) acc += p[s] * v.row(s)[h * D + d];
        o[d] = static_cast<float>(acc / sum);
      }
    }
  }
}

void RefBackend::swiglu(const Tensor& fc, Tensor& out) {
  const int64_t I = out.dim(1);
  for (int64_t t = 0; t < fc.dim(0); ++t) {
    const float* g = fc.row(t);
    for (int64_t i = 0; i < I; ++i) {
      const float a = g[i];
      out.row(t)[i] = a / (1.0f + std::exp(-a)) * g[I + i];
    }
  }
}

void RefBackend::concat_cols(const Tensor& a, const Tensor& b, Tensor& out) {
  const int64_t A = a.dim(1), B = b.dim(1);
  for (int64_t t = 0; t < a.dim(0); ++t) {
    for (int64_t i = 0; i < A; ++i) out.row(t)[i] = a.row(t)[i];
    for (int64_t i = 0; i < B; ++i) out.row(t)[A + i] = b.row(t)[i];
  }
}

void RefBackend::log_softmax(const Tensor& x, Tensor& y) {
  const int64_t V = x.dim(1);
  for (int64_t t = 0; t < x.dim(0); ++t) {
    const float* xr = x.row(t);
    double mx = -INFINITY;
    for (int64_t i = 0; i < V; ++i) mx = std::max<double>(mx, xr[i]);
    double sum = 0;
    for (int64_t i = 0; i < V; ++i) sum += std::exp(xr[i] - mx);
    const double lse = mx + std::log(sum);
    float* yr = y.row(t);
    for (int64_t i = 0; i < V; ++i) yr[i] = static_cast<float>(xr[i] - lse);
  }
}

void RefBackend::fill(Tensor& x, float value) {
  ref::for_each_run(x, [&](float* p, int64_t n, int64_t) { std::fill(p, p + n, value); });
}

void RefBackend::scale(Tensor& x, float s) {
  ref::for_each_run(x, [&](float* p, int64_t n, int64_t) {
    for (int64_t i = 0; i < n; ++i) p[i] *= s;
  });
}

double RefBackend::sum_squares(const Tensor& x, double acc) { return ref::sum_squares(x, acc); }

int64_t RefBackend::count_non_finite(const Tensor& x, int64_t* first) {
  return ref::count_non_finite(x, first);
}

void RefBackend::adamw_step(Tensor& w, const Tensor& g, Tensor& m, Tensor& v, const AdamWStep& p) {
  HUGINN_ASSERT(w.is_contiguous() && g.is_contiguous() && m.is_contiguous() && v.is_contiguous() &&
                    g.numel() == w.numel() && m.numel() == w.numel() && v.numel() == w.numel(),
                "adamw_step: four contiguous tensors of one size expected");
  ref::adamw(w.f32(), g.f32(), m.f32(), v.f32(), 0, w.numel(), p);
}

std::unique_ptr<Backend> make_ref_backend() { return std::make_unique<RefBackend>(); }

}  // namespace huginn
