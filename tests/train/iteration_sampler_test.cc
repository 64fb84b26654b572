// The iteration sampler's distribution against the golden pmf (README item 17): a distribution
// check over 200k seeded draws — the mean of n+k within 4 standard errors of the exact mean and
// a chi-square goodness-of-fit test — plus the structural rules and seeding.
#include <gtest/gtest.h>

#include <cmath>

#include "huginn/backward.h"
#include "test_util.h"

namespace huginn {
namespace {

std::vector<double> golden_pmf() {
  auto t = test::load_tensors(test::golden_dir("sampler") + "/iteration_sampler_m32_b8.safetensors");
  const Tensor& pmf = t.at("pmf_total");
  return std::vector<double>(pmf.f32(), pmf.f32() + pmf.numel());
}

// Upper 0.1% point of chi-square with `dof` degrees of freedom (Wilson–Hilferty, z = 3.09).
double chi2_crit_999(int dof) {
  const double a = 2.0 / (9.0 * dof);
  return dof * std::pow(1.0 - a + 3.09 * std::sqrt(a), 3);
}

TEST(IterationSampler, MatchesGoldenPmf) {
  const std::vector<double> pmf = golden_pmf();
  ASSERT_EQ(pmf.size(), 401u);
  ASSERT_EQ(pmf[0], 0.0);  // p = Poisson + 1 >= 1
  double mean = 0, m2 = 0;
  for (size_t p = 0; p < pmf.size(); ++p) {
    mean += p * pmf[p];
    m2 += double(p) * p * pmf[p];
  }
  const double var = m2 - mean * mean;
  EXPECT_NEAR(mean, 33.0, 1e-3);  // the json's exact E[n+k] = 32.99997
  EXPECT_NEAR(var, 322.83, 0.1);

  const int N = 200000;
  IterationSampler sampler(32, 8, 20250131);
  std::vector<int64_t> count(pmf.size() + 1, 0);  // last bin: p > 400
  double sum = 0;
  for (int i = 0; i < N; ++i) {
    const auto [n, k] = sampler.next();
    ASSERT_GE(n, 0);
    ASSERT_GE(k, 1);
    ASSERT_LE(k, 8);
    if (n > 0) {
      ASSERT_EQ(k, 8) << "n > 0 only once the backprop depth is filled";
    }
    const int p = n + k;
    sum += p;
    ++count[std::min<size_t>(p, pmf.size())];
  }
  const double se = std::sqrt(var / N);
  EXPECT_LE(std::fabs(sum / N - mean), 4 * se) << "sample mean " << sum / N;

  // Chi-square over bins merged left to right until each expects >= 20 draws.
  double chi2 = 0, e_acc = 0, o_acc = 0, mass = 0;
  int bins = 0;
  for (size_t p = 0; p < pmf.size(); ++p) {
    e_acc += pmf[p] * N;
    o_acc += count[p];
    mass += pmf[p];
    if (e_acc >= 20 && (1.0 - mass) * N >= 20) {
      chi2 += (o_acc - e_acc) * (o_acc - e_acc) / e_acc;
      ++bins;
      e_acc = o_acc = 0;
    }
  }
  e_acc += (1.0 - mass) * N;  // the tail, with the p > 400 bin
  o_acc += count.back();
  chi2 += (o_acc - e_acc) * (o_acc - e_acc) / e_acc;
  ++bins;
  ASSERT_GE(bins, 30);
  EXPECT_LE(chi2, chi2_crit_999(bins - 1)) << bins << " bins";
  RecordProperty("chi2", std::to_string(chi2) + " on " + std::to_string(bins - 1) + " dof");
}

// The test above can fail: a sampler with the wrong mean (mean_recurrence 30) is rejected.
TEST(IterationSampler, ChiSquareRejectsAWrongDistribution) {
  const std::vector<double> pmf = golden_pmf();
  const int N = 200000;
  IterationSampler wrong(30, 8, 7);
  std::vector<int64_t> count(pmf.size() + 1, 0);
  for (int i = 0; i < N; ++i) {
    const auto [n, k] = wrong.next();
    ++count[std::min<size_t>(n + k, pmf.size())];
  }
  double chi2 = 0, e_acc = 0, o_acc = 0, mass = 0;
  int bins = 0;
  for (size_t p = 0; p < pmf.size(); ++p) {
    e_acc += pmf[p] * N;
    o_acc += count[p];
    mass += pmf[p];
    if (e_acc >= 20 && (1.0 - mass) * N >= 20) {
      chi2 += (o_acc - e_acc) * (o_acc - e_acc) / e_acc;
      ++bins;
      e_acc = o_acc = 0;
    }
  }
  EXPECT_GT(chi2, chi2_crit_999(bins));
}

TEST(IterationSampler, SeededAndDeterministic) {
  IterationSampler a(32, 8, 5), b(32, 8, 5), c(32, 8, 6);
  int differ = 0;
  for (int i = 0; i < 100; ++i) {
    const auto x = a.next(), y = b.next(), z = c.next();
    EXPECT_EQ(x, y);
    differ += x != z;
  }
  EXPECT_GT(differ, 50);
  EXPECT_THROW(IterationSampler(0, 8, 1), Error);
  EXPECT_THROW(IterationSampler(32, -1, 1), Error);
}

}  // namespace
}  // namespace huginn
