// The training-time recurrence sampler "poisson-lognormal-filling" (golden README item 17).
#include <cmath>

#include "huginn/backward.h"

namespace huginn {

IterationSampler::IterationSampler(int mean_recurrence, int mean_backprop_depth, uint64_t seed)
    : mean_recurrence_(mean_recurrence), backprop_depth_(mean_backprop_depth), rng_(seed) {
  if (mean_recurrence < 1)
    throw Error("mean_recurrence must be >= 1, got " + std::to_string(mean_recurrence));
  if (mean_backprop_depth < 0)
    throw Error("mean_backprop_depth must be >= 0, got " + std::to_string(mean_backprop_depth));
}

std::pair<int, int> IterationSampler::next() {
  const int s = backprop_depth_, t = std::max(mean_recurrence_ - s, 0);
  const double sigma = 0.5, mu = std::log(double(t + s)) - sigma * sigma / 2;
  const double rate = std::lognormal_distribution<double>(mu, sigma)(rng_);
  const int p = static_cast<int>(std::poisson_distribution<int64_t>(rate)(rng_)) + 1;
  return {std::max(p - s, 0), std::min(p, s)};
}

}  // namespace huginn
