// The training-state ops as plain loops over contiguous runs of floats (fill, scale, sum of
// squares, non-finite count, the AdamW update), shared by the reference backend and, element for
// element, by the fast CPU backend's threaded versions. N = elements of a run.
#pragma once

#include <cmath>
#include <cstdint>

#include "huginn/backend.h"
#include "huginn/error.h"

namespace huginn::ref {

// Calls f(p, n, offset) for each contiguous run of x in row-major order: one run for a
// contiguous tensor, one per row of a 2-D row-strided view. `offset` is the run's first
// element's row-major index.
template <class TensorRef, class F>
void for_each_run(TensorRef& x, F&& f) {
  if (x.is_contiguous()) return f(x.f32(), x.numel(), int64_t{0});
  HUGINN_ASSERT(x.ndim() == 2 && x.stride(1) == 1, "a strided tensor here must be a 2-D row view");
  for (int64_t r = 0; r < x.dim(0); ++r) f(x.row(r), x.dim(1), r * x.dim(1));
}

inline double sum_squares(const float* p, int64_t n, double acc) {
  for (int64_t i = 0; i < n; ++i) acc += static_cast<double>(p[i]) * p[i];
  return acc;
}

// Non-finite elements of p[0..n): their count; *first receives the first's index (or keeps -1).
inline int64_t count_non_finite(const float* p, int64_t n, int64_t* first) {
  int64_t c = 0;
  for (int64_t i = 0; i < n; ++i)
    if (!std::isfinite(p[i])) {
      if (c++ == 0 && *first < 0) *first = i;
    }
  return c;
}

// Over a tensor's runs (for_each_run), as Backend::sum_squares / count_non_finite define them.
template <class TensorRef>
double sum_squares(const TensorRef& x, double acc) {
  for_each_run(x, [&](const float* p, int64_t n, int64_t) { acc = sum_squares(p, n, acc); });
  return acc;
}
template <class TensorRef>
int64_t count_non_finite(const TensorRef& x, int64_t* first) {
  int64_t count = 0, at = -1;
  for_each_run(x, [&](const float* p, int64_t n, int64_t off) {
    int64_t f = -1;
    count += count_non_finite(p, n, &f);
    if (at < 0 && f >= 0) at = off + f;
  });
  if (first) *first = at;
  return count;
}

// AdamW on elements [begin, end) (huginn/backend.h, Backend::adamw_step).
inline void adamw(float* w, const float* g, float* m, float* v, int64_t begin, int64_t end,
                  const AdamWStep& p) {
  const float b1 = p.beta1, b2 = p.beta2;
  for (int64_t j = begin; j < end; ++j) {
    if (p.decay) w[j] *= p.keep;
    m[j] = b1 * m[j] + (1.0f - b1) * g[j];
    v[j] = b2 * v[j] + (1.0f - b2) * g[j] * g[j];
    w[j] -= p.step_size * m[j] / (std::sqrt(v[j]) / p.sqrt_bc2 + p.eps);
  }
}

}  // namespace huginn::ref
