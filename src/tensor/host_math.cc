#include "huginn/host_math.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace huginn {

void log_softmax_f64(std::span<const float> x, std::vector<double>& out) {
  out.resize(x.size());
  double mx = -std::numeric_limits<double>::infinity();
  for (float v : x) mx = std::max(mx, double(v));
  double sum = 0.0;
  for (float v : x) sum += std::exp(double(v) - mx);
  const double lse = mx + std::log(sum);
  for (size_t i = 0; i < x.size(); ++i) out[i] = double(x[i]) - lse;
}

}  // namespace huginn
