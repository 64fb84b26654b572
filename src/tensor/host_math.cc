// The one host log-softmax and KL divergence (huginn/host_math.h). V = vocabulary.
#include "huginn/host_math.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace huginn {

double log_sum_exp(std::span<const float> x) {
  double mx = -std::numeric_limits<double>::infinity();
  for (float v : x) mx = std::max(mx, double(v));
  double sum = 0.0;
  for (float v : x) sum += std::exp(double(v) - mx);
  return mx + std::log(sum);
}

void log_softmax_f64(std::span<const float> x, std::vector<double>& out) {
  out.resize(x.size());
  const double lse = log_sum_exp(x);
  for (size_t i = 0; i < x.size(); ++i) out[i] = double(x[i]) - lse;
}

double log_prob(std::span<const float> x, int64_t id) { return double(x[id]) - log_sum_exp(x); }

double kl_divergence(std::span<const double> log_p, std::span<const double> log_q) {
  double s = 0.0;
  for (size_t v = 0; v < log_p.size(); ++v) s += std::exp(log_p[v]) * (log_p[v] - log_q[v]);
  return s;
}

double entropy(std::span<const double> log_p) {
  double h = 0.0;
  for (double l : log_p) h -= std::exp(l) * l;
  return h;
}

}  // namespace huginn
