// PCA and the Jacobi eigen-decomposition against independent computations: the defining
// equations on a directly computed covariance, power iteration, and a case with a known answer.
// The converging / orbiting / drifting rule on synthetic trajectories, and state metrics by hand.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "huginn/trajectory.h"

namespace huginn {
namespace {

Tensor random_points(int64_t n, int64_t dim, uint64_t seed, double spread_decay = 0.8) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> N(0.0, 1.0);
  Tensor x = Tensor::empty({n, dim});
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < dim; ++j)  // anisotropic, so the components are well separated
      x.row(i)[j] = static_cast<float>(N(rng) * std::pow(spread_decay, double(j)) + 0.3 * j);
  return x;
}

// The sample covariance, computed directly (divisor n - 1).
std::vector<double> covariance(const Tensor& x) {
  const int64_t n = x.dim(0), d = x.dim(1);
  std::vector<double> mean(d, 0.0), c(d * d, 0.0);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < d; ++j) mean[j] += x.row(i)[j] / double(n);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t a = 0; a < d; ++a)
      for (int64_t b = 0; b < d; ++b)
        c[a * d + b] += (x.row(i)[a] - mean[a]) * (x.row(i)[b] - mean[b]) / double(n - 1);
  return c;
}

// The top eigenpair of a symmetric PSD matrix by power iteration (an independent algorithm).
std::pair<double, std::vector<double>> power_iteration(const std::vector<double>& c, int64_t d) {
  std::vector<double> v(d, 1.0), w(d);
  double lam = 0;
  for (int it = 0; it < 5000; ++it) {
    for (int64_t a = 0; a < d; ++a) {
      w[a] = 0;
      for (int64_t b = 0; b < d; ++b) w[a] += c[a * d + b] * v[b];
    }
    double nrm = 0;
    for (double x : w) nrm += x * x;
    nrm = std::sqrt(nrm);
    lam = nrm;
    for (int64_t a = 0; a < d; ++a) v[a] = w[a] / nrm;
  }
  return {lam, v};
}

void check_pca_against_covariance(const Tensor& x, int k) {
  const int64_t d = x.dim(1);
  const Pca p = pca(x, k);
  const std::vector<double> c = covariance(x);
  double trace = 0;
  for (int64_t a = 0; a < d; ++a) trace += c[a * d + a];
  EXPECT_NEAR(p.total_variance, trace, 1e-6 * trace);
  for (int i = 0; i < p.k; ++i) {
    const double* v = &p.components[i * d];
    // C v = λ v, unit length, orthogonal to the others.
    for (int64_t a = 0; a < d; ++a) {
      double cv = 0;
      for (int64_t b = 0; b < d; ++b) cv += c[a * d + b] * v[b];
      EXPECT_NEAR(cv, p.variance[i] * v[a], 1e-6 * p.variance[0]) << "component " << i;
    }
    for (int j = 0; j <= i; ++j) {
      double dot = 0;
      for (int64_t a = 0; a < d; ++a) dot += v[a] * p.components[j * d + a];
      EXPECT_NEAR(dot, i == j ? 1.0 : 0.0, 1e-9);
    }
    if (i > 0) {
      EXPECT_GE(p.variance[i - 1], p.variance[i]);
    }
    // Projections are the centred points dotted with the component.
    for (int64_t r = 0; r < x.dim(0); ++r) {
      double s = 0;
      for (int64_t a = 0; a < d; ++a) s += (x.row(r)[a] - p.mean[a]) * v[a];
      EXPECT_NEAR(p.projection[r * p.k + i], s, 1e-6 * std::sqrt(p.variance[0]));
    }
  }
  // The top component agrees with power iteration (up to sign).
  auto [lam, v] = power_iteration(c, d);
  EXPECT_NEAR(p.variance[0], lam, 1e-6 * lam);
  double dot = 0;
  for (int64_t a = 0; a < d; ++a) dot += v[a] * p.components[a];
  EXPECT_NEAR(std::abs(dot), 1.0, 1e-6);
}

TEST(SymmetricEigen, ReconstructsTheMatrix) {
  std::mt19937_64 rng(3);
  std::normal_distribution<double> N(0.0, 1.0);
  const int n = 9;
  std::vector<double> a(n * n);
  for (int i = 0; i < n; ++i)
    for (int j = i; j < n; ++j) a[i * n + j] = a[j * n + i] = N(rng);
  const SymmetricEigen e = symmetric_eigen(a, n);
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < n; ++j) {
      double s = 0;
      for (int k = 0; k < n; ++k) s += e.values[k] * e.vectors[k * n + i] * e.vectors[k * n + j];
      EXPECT_NEAR(s, a[i * n + j], 1e-10);
    }
  for (int k = 1; k < n; ++k) EXPECT_GE(e.values[k - 1], e.values[k]);
  EXPECT_LT(e.values[n - 1], 0.0);  // an indefinite matrix: negative eigenvalues stay negative
}

TEST(Pca, GramPathMatchesCovarianceEquationsAndPowerIteration) {
  // n < dim: computed through the n x n Gram matrix (the trajectory case: R+1 << E).
  check_pca_against_covariance(random_points(12, 40, 1), 4);
}

TEST(Pca, CovariancePathMatchesCovarianceEquationsAndPowerIteration) {
  check_pca_against_covariance(random_points(50, 6, 2), 3);
}

TEST(Pca, EllipseInARotatedPlaneHasKnownAxes) {
  // Points on an ellipse with semi-axes 3 and 1 in the plane spanned by orthonormal u, w of R^8,
  // sampled evenly: the components are ±u, ±w with variances 9/2 and 1/2 (·n/(n−1)).
  const int64_t n = 64, d = 8;
  std::vector<double> u(d, 0.0), w(d, 0.0);
  for (int64_t j = 0; j < d; ++j) {
    u[j] = (j % 2 ? 1.0 : -1.0) / std::sqrt(double(d));
    w[j] = (j < d / 2 ? 1.0 : -1.0) / std::sqrt(double(d));
  }
  Tensor x = Tensor::empty({n, d});
  for (int64_t i = 0; i < n; ++i) {
    const double th = 2 * M_PI * double(i) / double(n);
    for (int64_t j = 0; j < d; ++j)
      x.row(i)[j] = static_cast<float>(5.0 + 3 * std::cos(th) * u[j] + std::sin(th) * w[j]);
  }
  const Pca p = pca(x, 2);
  const double f = double(n) / double(n - 1);
  EXPECT_NEAR(p.variance[0], 4.5 * f, 1e-5);
  EXPECT_NEAR(p.variance[1], 0.5 * f, 1e-5);
  double du = 0, dw = 0;
  for (int64_t j = 0; j < d; ++j) {
    du += p.components[j] * u[j];
    dw += p.components[d + j] * w[j];
  }
  EXPECT_NEAR(std::abs(du), 1.0, 1e-6);
  EXPECT_NEAR(std::abs(dw), 1.0, 1e-6);
  EXPECT_NEAR(p.explained(0) + p.explained(1), 1.0, 1e-6);
}

TEST(Pca, BadInputIsAnError) {
  EXPECT_THROW(pca(Tensor::empty({3, 4}), 0), Error);
  EXPECT_THROW(pca(Tensor::empty({2, 3, 4}), 2), Error);
}

// ---------------------------------------------------------------------------------------------

// s_t in R^E for t = 0..R built by f(t, j).
template <class F>
Tensor synthetic(int R, int64_t E, F f) {
  Tensor s = Tensor::empty({R + 1, E});
  for (int t = 0; t <= R; ++t)
    for (int64_t j = 0; j < E; ++j) s.row(t)[j] = static_cast<float>(f(t, j));
  return s;
}

TEST(Classify, FixedPointOrbitAndDrift) {
  const int R = 32;
  const int64_t E = 16;
  auto base = [](int64_t j) { return 2.0 + std::sin(double(j)); };
  // Spirals into a fixed point: steps shrink by 0.7 per iteration.
  Tensor conv = synthetic(R, E, [&](int t, int64_t j) {
    return base(j) + std::pow(0.7, t) * std::cos(0.9 * t + double(j));
  });
  // A period-6 orbit around the same centre (radius 1).
  Tensor orbit = synthetic(R, E, [&](int t, int64_t j) {
    return base(j) + (j == 0 ? std::cos(2 * M_PI * t / 6) : j == 1 ? std::sin(2 * M_PI * t / 6) : 0);
  });
  // Drift along a fixed direction with a small wobble.
  Tensor drift = synthetic(R, E, [&](int t, int64_t j) {
    return base(j) + 0.5 * t * (j == 3 ? 1.0 : 0.0) + 0.02 * std::sin(double(t)) * (j == 4);
  });

  const Classification c = classify_trajectory(conv);
  EXPECT_EQ(c.cls, TrajectoryClass::kConverging);
  EXPECT_EQ(c.window, 8);
  EXPECT_NEAR(c.contraction, 0.7, 0.05);  // the spiral's per-iteration factor

  const Classification o = classify_trajectory(orbit);
  EXPECT_EQ(o.cls, TrajectoryClass::kOrbiting) << o.tail_change << " " << o.straightness;
  EXPECT_EQ(o.return_lag, 6);
  EXPECT_LT(o.return_distance, 1e-5);
  EXPECT_NEAR(o.contraction, 1.0, 1e-4);

  const Classification d = classify_trajectory(drift);
  EXPECT_EQ(d.cls, TrajectoryClass::kDrifting);
  EXPECT_GT(d.straightness, 0.9);

  // Tightening the rule moves the boundary as documented: a looser tolerance makes the slow
  // orbit count as converged (tail change = step / |s| ~ 0.1 here).
  ClassifyOptions loose;
  loose.converge_tol = 1.0;
  EXPECT_EQ(classify_trajectory(orbit, loose).cls, TrajectoryClass::kConverging);

  EXPECT_EQ(classify_trajectory(synthetic(1, E, [](int t, int64_t j) { return t + j; })).cls,
            TrajectoryClass::kUndetermined);
}

TEST(StateMetrics, ByHand) {
  // Two dimensions: s0 = (0, 0), s1 = (3, 4), s2 = (3, 5).
  Tensor s = Tensor::empty({3, 2});
  const float v[] = {0, 0, 3, 4, 3, 5};
  std::copy(v, v + 6, s.f32());
  const StateMetrics m = state_metrics(s);
  EXPECT_TRUE(std::isnan(m.rel_change[0]));
  EXPECT_DOUBLE_EQ(m.rel_change[1], 1.0);  // |(3,4)| / |(3,4)|
  EXPECT_NEAR(m.rel_change[2], 1.0 / std::sqrt(34.0), 1e-12);
  EXPECT_NEAR(m.dist_to_final[0], 1.0, 1e-12);  // |s2| / |s2|
  EXPECT_NEAR(m.dist_to_final[1], 1.0 / std::sqrt(34.0), 1e-12);
  EXPECT_EQ(m.dist_to_final[2], 0.0);

  const float p[] = {1, 2, 3}, q[] = {1, 2, 3}, r[] = {0, 0, 0};
  EXPECT_NEAR(kl_from_logits(p, q), 0.0, 1e-15);
  EXPECT_NEAR(entropy_from_logits(r), std::log(3.0), 1e-12);
  // KL(uniform || softmax(1,2,3)) = Σ (1/3) (log(1/3) − log p_v)
  double want = 0, lse = std::log(std::exp(1.0) + std::exp(2.0) + std::exp(3.0));
  for (double x : {1.0, 2.0, 3.0}) want += (std::log(1.0 / 3) - (x - lse)) / 3;
  EXPECT_NEAR(kl_from_logits(r, p), want, 1e-12);
}

}  // namespace
}  // namespace huginn
