// Trajectory analysis on host states: metrics recomputed from saved states, PCA through a Jacobi
// eigen-decomposition, and the converging / orbiting / drifting rule. n = points (iterations),
// E or dim = state width, k = components. Everything in double.
#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "huginn/trajectory.h"
#include "huginn/host_math.h"

namespace huginn {

namespace {

double row_dist(const Tensor& x, int64_t a, int64_t b) {
  const int64_t E = x.dim(1);
  const float* pa = x.row(a);
  const float* pb = x.row(b);
  double s = 0.0;
  for (int64_t j = 0; j < E; ++j) {
    const double d = double(pa[j]) - double(pb[j]);
    s += d * d;
  }
  return std::sqrt(s);
}

double row_norm(const Tensor& x, int64_t a) {
  const float* p = x.row(a);
  double s = 0.0;
  for (int64_t j = 0; j < x.dim(1); ++j) s += double(p[j]) * double(p[j]);
  return std::sqrt(s);
}

void check_2d(const Tensor& x, const char* what) {
  if (x.ndim() != 2 || x.dtype() != DType::kF32 || x.stride(1) != 1)
    throw Error(std::string(what) + ": expected a 2-D F32 tensor [n, dim], got " + x.shape_str());
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Metrics

StateMetrics state_metrics(const Tensor& states) {
  check_2d(states, "state_metrics");
  const int64_t n = states.dim(0);
  StateMetrics m;
  m.rel_change.assign(size_t(n), std::numeric_limits<double>::quiet_NaN());
  m.dist_to_final.assign(size_t(n), 0.0);
  const double nf = row_norm(states, n - 1);
  for (int64_t t = 0; t < n; ++t) {
    if (t > 0) m.rel_change[t] = row_dist(states, t, t - 1) / row_norm(states, t);
    m.dist_to_final[t] = row_dist(states, t, n - 1) / nf;
  }
  return m;
}

double kl_from_logits(std::span<const float> p_logits, std::span<const float> q_logits) {
  HUGINN_ASSERT(p_logits.size() == q_logits.size(), "kl_from_logits: sizes differ");
  std::vector<double> lp, lq;
  log_softmax_f64(p_logits, lp);
  log_softmax_f64(q_logits, lq);
  return kl_divergence(lp, lq);
}

double entropy_from_logits(std::span<const float> logits) {
  std::vector<double> l;
  log_softmax_f64(logits, l);
  return entropy(l);
}

// ---------------------------------------------------------------------------------------------
// Symmetric eigen-decomposition: cyclic Jacobi. Each rotation zeroes one off-diagonal pair; sweeps
// repeat until the off-diagonal mass is negligible against the diagonal. O(n³) per sweep, fine
// for the small matrices here (n <= a few hundred), and unconditionally stable.

SymmetricEigen symmetric_eigen(std::vector<double> a, int n) {
  HUGINN_ASSERT(a.size() == size_t(n) * size_t(n), "symmetric_eigen: a must be n x n");
  auto A = [&](int i, int j) -> double& { return a[size_t(i) * n + j]; };
  std::vector<double> v(size_t(n) * n, 0.0);  // columns are eigenvectors while iterating
  for (int i = 0; i < n; ++i) v[size_t(i) * n + i] = 1.0;
  for (int sweep = 0; sweep < 100; ++sweep) {
    double off = 0.0, diag = 0.0;
    for (int i = 0; i < n; ++i) {
      diag += A(i, i) * A(i, i);
      for (int j = i + 1; j < n; ++j) off += A(i, j) * A(i, j);
    }
    if (off <= 1e-26 * std::max(diag, 1e-300)) break;
    for (int p = 0; p < n; ++p)
      for (int q = p + 1; q < n; ++q) {
        const double apq = A(p, q);
        if (apq == 0.0) continue;
        // The rotation angle that zeroes A(p, q) (Golub & Van Loan, sym.schur2).
        const double theta = (A(q, q) - A(p, p)) / (2.0 * apq);
        const double t = (theta >= 0 ? 1.0 : -1.0) / (std::abs(theta) + std::sqrt(theta * theta + 1.0));
        const double cs = 1.0 / std::sqrt(t * t + 1.0), sn = t * cs;
        for (int k = 0; k < n; ++k) {  // A <- A·J
          const double akp = A(k, p), akq = A(k, q);
          A(k, p) = cs * akp - sn * akq;
          A(k, q) = sn * akp + cs * akq;
        }
        for (int k = 0; k < n; ++k) {  // A <- Jᵀ·A
          const double apk = A(p, k), aqk = A(q, k);
          A(p, k) = cs * apk - sn * aqk;
          A(q, k) = sn * apk + cs * aqk;
        }
        for (int k = 0; k < n; ++k) {  // V <- V·J
          double& vkp = v[size_t(k) * n + p];
          double& vkq = v[size_t(k) * n + q];
          const double x = vkp, y = vkq;
          vkp = cs * x - sn * y;
          vkq = sn * x + cs * y;
        }
      }
  }
  std::vector<int> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int x, int y) { return A(x, x) > A(y, y); });
  SymmetricEigen out;
  out.values.resize(size_t(n));
  out.vectors.resize(size_t(n) * n);
  for (int k = 0; k < n; ++k) {
    const int c = order[k];
    out.values[k] = A(c, c);
    // A fixed sign (largest-magnitude entry positive) so results are reproducible.
    int big = 0;
    for (int j = 0; j < n; ++j)
      if (std::abs(v[size_t(j) * n + c]) > std::abs(v[size_t(big) * n + c])) big = j;
    const double sign = v[size_t(big) * n + c] < 0 ? -1.0 : 1.0;
    for (int j = 0; j < n; ++j) out.vectors[size_t(k) * n + j] = sign * v[size_t(j) * n + c];
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// PCA

Pca pca(const Tensor& x, int k) {
  check_2d(x, "pca");
  const int64_t n = x.dim(0), dim = x.dim(1);
  if (n < 1 || dim < 1) throw Error("pca: no points");
  if (k < 1) throw Error("pca: k must be at least 1");
  Pca r;
  r.n = n;
  r.dim = dim;
  r.k = static_cast<int>(std::min<int64_t>(k, std::min(n, dim)));
  r.mean.assign(size_t(dim), 0.0);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < dim; ++j) r.mean[j] += x.row(i)[j];
  for (double& m : r.mean) m /= double(n);
  std::vector<double> xc(size_t(n * dim));  // centred points
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < dim; ++j) xc[i * dim + j] = x.row(i)[j] - r.mean[j];
  const double div = n > 1 ? double(n - 1) : 1.0;

  r.components.assign(size_t(r.k * dim), 0.0);
  r.variance.assign(size_t(r.k), 0.0);
  if (n <= dim) {
    // Gram matrix G = Xc·Xcᵀ (n x n): G u = λ u gives the component Xcᵀu / sqrt(λ).
    std::vector<double> g(size_t(n * n));
    for (int64_t a = 0; a < n; ++a)
      for (int64_t b = a; b < n; ++b) {
        double s = 0.0;
        for (int64_t j = 0; j < dim; ++j) s += xc[a * dim + j] * xc[b * dim + j];
        g[a * n + b] = g[b * n + a] = s;
      }
    SymmetricEigen eg = symmetric_eigen(std::move(g), static_cast<int>(n));
    for (int c = 0; c < r.k; ++c) {
      const double lam = std::max(eg.values[c], 0.0);
      r.variance[c] = lam / div;
      if (lam <= 0) continue;  // a degenerate direction: leave the component zero
      const double inv = 1.0 / std::sqrt(lam);
      for (int64_t a = 0; a < n; ++a) {
        const double u = eg.vectors[c * n + a] * inv;
        for (int64_t j = 0; j < dim; ++j) r.components[c * dim + j] += u * xc[a * dim + j];
      }
    }
  } else {
    // Covariance C = Xcᵀ·Xc / div (dim x dim).
    std::vector<double> cov(size_t(dim * dim));
    for (int64_t a = 0; a < dim; ++a)
      for (int64_t b = a; b < dim; ++b) {
        double s = 0.0;
        for (int64_t i = 0; i < n; ++i) s += xc[i * dim + a] * xc[i * dim + b];
        cov[a * dim + b] = cov[b * dim + a] = s / div;
      }
    SymmetricEigen ec = symmetric_eigen(std::move(cov), static_cast<int>(dim));
    for (int c = 0; c < r.k; ++c) {
      r.variance[c] = std::max(ec.values[c], 0.0);
      std::copy_n(ec.vectors.begin() + c * dim, dim, r.components.begin() + c * dim);
    }
  }
  r.total_variance = 0.0;
  for (double v : xc) r.total_variance += v * v;
  r.total_variance /= div;
  r.projection.assign(size_t(n * r.k), 0.0);
  for (int64_t i = 0; i < n; ++i)
    for (int c = 0; c < r.k; ++c) {
      double s = 0.0;
      for (int64_t j = 0; j < dim; ++j) s += xc[i * dim + j] * r.components[c * dim + j];
      r.projection[i * r.k + c] = s;
    }
  return r;
}

// ---------------------------------------------------------------------------------------------
// Classification

const char* trajectory_class_name(TrajectoryClass c) {
  switch (c) {
    case TrajectoryClass::kConverging: return "converging";
    case TrajectoryClass::kOrbiting: return "orbiting";
    case TrajectoryClass::kDrifting: return "drifting";
    case TrajectoryClass::kUndetermined: return "undetermined";
  }
  return "?";
}

Classification classify_trajectory(const Tensor& states, const ClassifyOptions& o) {
  check_2d(states, "classify_trajectory");
  const int R = static_cast<int>(states.dim(0)) - 1;
  Classification c;
  if (R < 2) return c;
  const int w = std::min(R, std::max(o.min_window,
                                     static_cast<int>(std::lround(o.window_fraction * R))));
  c.window = w;
  std::vector<double> changes, steps;
  double path = 0.0;
  for (int t = R - w + 1; t <= R; ++t) {
    const double step = row_dist(states, t, t - 1);
    path += step;
    steps.push_back(step);
    changes.push_back(step / row_norm(states, t));
  }
  const int ends = std::max(1, std::min(2, w / 2));  // steps averaged at each end of the window
  double first = 0.0, last = 0.0;
  for (int k = 0; k < ends; ++k) {
    first += steps[k];
    last += steps[steps.size() - 1 - k];
  }
  // Per-iteration factor between the two ends' centres, which lie w − m iterations apart.
  c.contraction = first > 0 ? std::pow(last / first, 1.0 / double(std::max(w - ends, 1))) : 0.0;
  std::nth_element(changes.begin(), changes.begin() + changes.size() / 2, changes.end());
  double median = changes[changes.size() / 2];
  if (changes.size() % 2 == 0) {
    const double lower = *std::max_element(changes.begin(), changes.begin() + changes.size() / 2);
    median = 0.5 * (median + lower);
  }
  c.tail_change = median;
  c.straightness = path > 0 ? row_dist(states, R, R - w) / path : 0.0;
  const double nf = row_norm(states, R);
  for (int k = 2; k <= w; ++k) {
    const double d = row_dist(states, R, R - k) / nf;
    if (c.return_lag == 0 || d < c.return_distance) {
      c.return_lag = k;
      c.return_distance = d;
    }
  }
  if (c.tail_change < o.converge_tol || c.contraction < o.converge_contraction)
    c.cls = TrajectoryClass::kConverging;
  else if (c.straightness >= o.drift_straightness)
    c.cls = TrajectoryClass::kDrifting;
  else
    c.cls = TrajectoryClass::kOrbiting;
  return c;
}

}  // namespace huginn
