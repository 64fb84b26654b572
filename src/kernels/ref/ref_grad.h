// Scalar reference kernels for training, forward and backward side by side, templated on the
// float type: the backend instantiates float (RefBackend's *_backward ops), the
// finite-difference tests instantiate double (forward and backward of the same code).
// T = tokens (rows), S = keys, E = features, H*D = heads x head_dim, I = MLP half, V = vocab.
//
// Gradient contract: parameter gradients (dw, dbias, dtable) accumulate (+=), activation
// gradients (dx, dq, dfc, ...) are assigned (=). Sums run in double.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <span>
#include <vector>

namespace huginn::ref {

// A row-strided 2-D view: element (r, c) at p[r * ld + c].
template <class T>
struct View {
  T* p = nullptr;
  int64_t rows = 0, cols = 0, ld = 0;
  T* row(int64_t r) const { return p + r * ld; }
  operator View<const T>() const { return {p, rows, cols, ld}; }
};

// ---- forward (the FD tests' double model; float results equal RefBackend's) ------------------

// y = x · wᵀ.   x [M, K], w [N, K], y [M, N].
template <class T>
void matmul(View<const T> x, View<const T> w, View<T> y) {
  for (int64_t m = 0; m < x.rows; ++m)
    for (int64_t n = 0; n < w.rows; ++n) {
      double acc = 0;
      for (int64_t k = 0; k < x.cols; ++k) acc += double(x.row(m)[k]) * w.row(n)[k];
      y.row(m)[n] = T(acc);
    }
}

template <class T>
void rmsnorm(View<const T> x, const T* w, double eps, View<T> y) {
  const int64_t E = x.cols;
  for (int64_t t = 0; t < x.rows; ++t) {
    double ss = 0;
    for (int64_t i = 0; i < E; ++i) ss += double(x.row(t)[i]) * x.row(t)[i];
    const T inv = T(1.0 / std::sqrt(ss / E + eps));
    for (int64_t i = 0; i < E; ++i) y.row(t)[i] = (x.row(t)[i] * inv) * w[i];
  }
}

template <class T>
void add_bias(View<T> x, const T* bias) {
  for (int64_t t = 0; t < x.rows; ++t)
    for (int64_t n = 0; n < x.cols; ++n) x.row(t)[n] += bias[n];
}

// Interleaved pairs (2i, 2i+1) per head; cs [P, D/2, 2] = (cos, sin); sign -1 rotates back.
template <class T>
void rope_rotate(View<T> x, const float* cs, std::span<const int32_t> pos, int64_t D, int sign) {
  const int64_t half = D / 2;
  for (int64_t t = 0; t < x.rows; ++t) {
    const float* c = cs + int64_t(pos[t]) * half * 2;
    for (int64_t h = 0; h < x.cols / D; ++h)
      for (int64_t i = 0; i < half; ++i) {
        T* p = x.row(t) + h * D + 2 * i;
        const T a = p[0], b = p[1], co = T(c[2 * i]), si = T(sign * c[2 * i + 1]);
        p[0] = a * co - b * si;
        p[1] = b * co + a * si;
      }
  }
}

// Softmax probabilities of query t, head h over keys 0..last (bottom-right causal mask).
template <class T>
int64_t attn_probs(View<const T> q, View<const T> k, int64_t h, int64_t D, int64_t t,
                   std::vector<double>& p) {
  const int64_t last = k.rows - q.rows + t;
  const double scale = 1.0 / std::sqrt(double(D));
  double mx = -INFINITY;
  for (int64_t s = 0; s <= last; ++s) {
    double dot = 0;
    for (int64_t d = 0; d < D; ++d) dot += double(q.row(t)[h * D + d]) * k.row(s)[h * D + d];
    p[s] = dot * scale;
    mx = std::max(mx, p[s]);
  }
  double sum = 0;
  for (int64_t s = 0; s <= last; ++s) sum += (p[s] = std::exp(p[s] - mx));
  for (int64_t s = 0; s <= last; ++s) p[s] /= sum;
  return last;
}

template <class T>
void attention(View<const T> q, View<const T> k, View<const T> v, int64_t H, View<T> out) {
  const int64_t D = q.cols / H;
  std::vector<double> p(static_cast<size_t>(k.rows));
  for (int64_t h = 0; h < H; ++h)
    for (int64_t t = 0; t < q.rows; ++t) {
      const int64_t last = attn_probs(q, k, h, D, t, p);
      for (int64_t d = 0; d < D; ++d) {
        double acc = 0;
        for (int64_t s = 0; s <= last; ++s) acc += p[s] * v.row(s)[h * D + d];
        out.row(t)[h * D + d] = T(acc);
      }
    }
}

template <class T>
void swiglu(View<const T> fc, View<T> out) {
  const int64_t I = out.cols;
  for (int64_t t = 0; t < fc.rows; ++t)
    for (int64_t i = 0; i < I; ++i) {
      const T a = fc.row(t)[i];
      out.row(t)[i] = a / (T(1) + std::exp(-a)) * fc.row(t)[I + i];
    }
}

template <class T>
void embedding(View<const T> table, std::span<const int32_t> ids, T scale, View<T> out) {
  for (size_t t = 0; t < ids.size(); ++t)
    for (int64_t i = 0; i < table.cols; ++i) out.row(int64_t(t))[i] = table.row(ids[t])[i] * scale;
}

// ---- backward -------------------------------------------------------------------------------

// dx = dy·w [M, K] (when dx.p), dw += dyᵀ·x [N, K] (when dw.p).
template <class T>
void matmul_backward(View<const T> x, View<const T> w, View<const T> dy, View<T> dx, View<T> dw) {
  const int64_t M = x.rows, K = x.cols, N = w.rows;
  if (dx.p)
    for (int64_t m = 0; m < M; ++m)
      for (int64_t k = 0; k < K; ++k) {
        double acc = 0;
        for (int64_t n = 0; n < N; ++n) acc += double(dy.row(m)[n]) * w.row(n)[k];
        dx.row(m)[k] = T(acc);
      }
  if (dw.p)
    for (int64_t n = 0; n < N; ++n)
      for (int64_t k = 0; k < K; ++k) {
        double acc = 0;
        for (int64_t m = 0; m < M; ++m) acc += double(dy.row(m)[n]) * x.row(m)[k];
        dw.row(n)[k] += T(acc);
      }
}

// y_i = x_i·inv·w_i, inv = (mean(x²) + eps)^-1/2:
//   dx_i = inv·g_i − inv³·x_i·Σ_j(g_j x_j)/E with g = dy·w;   dw_i += Σ_t dy_i·x_i·inv.
template <class T>
void rmsnorm_backward(View<const T> x, const T* w, double eps, View<const T> dy, View<T> dx,
                      T* dw) {
  const int64_t E = x.cols;
  std::vector<double> dwacc(static_cast<size_t>(E), 0.0);
  for (int64_t t = 0; t < x.rows; ++t) {
    const T* xr = x.row(t);
    const T* g = dy.row(t);
    double ss = 0, dot = 0;
    for (int64_t i = 0; i < E; ++i) {
      ss += double(xr[i]) * xr[i];
      dot += double(g[i]) * w[i] * xr[i];
    }
    const double inv = 1.0 / std::sqrt(ss / E + eps), c = inv * inv * inv * dot / E;
    for (int64_t i = 0; i < E; ++i) {
      const double gi = g[i];  // read before dx (which may alias dy) is written
      dwacc[i] += gi * xr[i] * inv;
      dx.row(t)[i] = T(inv * gi * w[i] - c * xr[i]);
    }
  }
  for (int64_t i = 0; i < E; ++i) dw[i] += T(dwacc[i]);
}

template <class T>
void add_bias_backward(View<const T> dy, T* dbias) {
  for (int64_t n = 0; n < dy.cols; ++n) {
    double acc = 0;
    for (int64_t t = 0; t < dy.rows; ++t) acc += dy.row(t)[n];
    dbias[n] += T(acc);
  }
}

// The rotation is orthogonal, so its backward is the forward rotation by −θ.
template <class T>
void rope_backward(View<T> dx, const float* cs, std::span<const int32_t> pos, int64_t D) {
  rope_rotate(dx, cs, pos, D, -1);
}

// With P = softmax(q kᵀ/√D) and O = P v: dv = Pᵀ dO; dP = dO vᵀ; dS = P ∘ (dP − rowsum(P ∘ dP));
// dq = dS k/√D; dk = dSᵀ q/√D.
template <class T>
void attention_backward(View<const T> q, View<const T> k, View<const T> v, View<const T> dout,
                        int64_t H, View<T> dq, View<T> dk, View<T> dv) {
  const int64_t D = q.cols / H, S = k.rows;
  const double scale = 1.0 / std::sqrt(double(D));
  std::vector<double> p(static_cast<size_t>(S)), dp(p), dka(static_cast<size_t>(S * D)), dva(dka);
  for (int64_t h = 0; h < H; ++h) {
    std::fill(dka.begin(), dka.end(), 0.0);
    std::fill(dva.begin(), dva.end(), 0.0);
    for (int64_t t = 0; t < q.rows; ++t) {
      const int64_t last = attn_probs(q, k, h, D, t, p);
      const T* go = dout.row(t) + h * D;
      double rowdot = 0;
      for (int64_t s = 0; s <= last; ++s) {
        double acc = 0;
        for (int64_t d = 0; d < D; ++d) acc += double(go[d]) * v.row(s)[h * D + d];
        dp[s] = acc;
        rowdot += p[s] * acc;
      }
      std::vector<double> dqa(static_cast<size_t>(D), 0.0);
      for (int64_t s = 0; s <= last; ++s) {
        const double ds = p[s] * (dp[s] - rowdot) * scale;
        for (int64_t d = 0; d < D; ++d) {
          dqa[d] += ds * k.row(s)[h * D + d];
          dka[s * D + d] += ds * q.row(t)[h * D + d];
          dva[s * D + d] += p[s] * go[d];
        }
      }
      for (int64_t d = 0; d < D; ++d) dq.row(t)[h * D + d] = T(dqa[d]);
    }
    for (int64_t s = 0; s < S; ++s)
      for (int64_t d = 0; d < D; ++d) {
        dk.row(s)[h * D + d] = T(dka[s * D + d]);
        dv.row(s)[h * D + d] = T(dva[s * D + d]);
      }
  }
}

// out = silu(a)·b:  da = dout·b·σ(a)(1 + a(1 − σ(a))),  db = dout·silu(a).
template <class T>
void swiglu_backward(View<const T> fc, View<const T> dout, View<T> dfc) {
  const int64_t I = dout.cols;
  for (int64_t t = 0; t < fc.rows; ++t)
    for (int64_t i = 0; i < I; ++i) {
      const double a = fc.row(t)[i], b = fc.row(t)[I + i], g = dout.row(t)[i];
      const double sig = 1.0 / (1.0 + std::exp(-a));
      dfc.row(t)[i] = T(g * b * sig * (1.0 + a * (1.0 - sig)));
      dfc.row(t)[I + i] = T(g * a * sig);
    }
}

template <class T>
void concat_cols_backward(View<const T> dout, View<T> da, View<T> db) {
  for (int64_t t = 0; t < dout.rows; ++t) {
    for (int64_t i = 0; i < da.cols; ++i) da.row(t)[i] = dout.row(t)[i];
    for (int64_t i = 0; i < db.cols; ++i) db.row(t)[i] = dout.row(t)[da.cols + i];
  }
}

template <class T>
void embedding_backward(View<const T> dout, std::span<const int32_t> ids, T scale,
                        View<T> dtable) {
  for (size_t t = 0; t < ids.size(); ++t)
    for (int64_t i = 0; i < dtable.cols; ++i)
      dtable.row(ids[t])[i] += dout.row(int64_t(t))[i] * scale;
}

// Mean NLL over rows whose label is not -100; dlogits (when dl.p, may alias logits) =
// dscale·(softmax − onehot)/n_valid, zero on ignored rows.
template <class T>
double cross_entropy(View<const T> logits, std::span<const int32_t> labels, double dscale,
                     View<T> dl) {
  const int64_t V = logits.cols;
  int64_t n_valid = 0;
  for (int32_t l : labels) n_valid += l != -100;
  double total = 0;
  for (int64_t t = 0; t < logits.rows; ++t) {
    const T* x = logits.row(t);
    const int32_t l = labels[size_t(t)];
    if (l == -100) {
      if (dl.p) std::fill(dl.row(t), dl.row(t) + V, T(0));
      continue;
    }
    double mx = -INFINITY, sum = 0;
    for (int64_t i = 0; i < V; ++i) mx = std::max(mx, double(x[i]));
    for (int64_t i = 0; i < V; ++i) sum += std::exp(double(x[i]) - mx);
    const double lse = mx + std::log(sum);
    total += lse - double(x[l]);
    if (!dl.p) continue;
    const double g = dscale / double(n_valid);
    for (int64_t i = 0; i < V; ++i) dl.row(t)[i] = T(std::exp(double(x[i]) - lse) * g);
    dl.row(t)[l] -= T(g);
  }
  return n_valid ? total / double(n_valid) : 0.0;
}

}  // namespace huginn::ref
