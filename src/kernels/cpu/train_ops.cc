// The fast CPU backend's training-state ops: fill, scale, sum of squares, non-finite count and
// the fused AdamW update, threaded where the result cannot depend on the split. N = elements.
// The element loops are the reference's (kernels/ref/ref_train.h): these ops are bandwidth
// bound, and sharing the loop keeps the two backends bit-identical by construction.
#include <algorithm>

#include "kernels/cpu/backward_kernels.h"
#include "kernels/ref/ref_train.h"

namespace huginn::cpu {

void fill(const Ctx& c, Tensor& x, float value) {
  ref::for_each_run(x, [&](float* p, int64_t n, int64_t) {
    c.for_range(n, 1, [&](int64_t i0, int64_t i1) { std::fill(p + i0, p + i1, value); });
  });
}

void scale(const Ctx& c, Tensor& x, float s) {
  ref::for_each_run(x, [&](float* p, int64_t n, int64_t) {
    c.for_range(n, 1, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) p[i] *= s;
    });
  });
}

// One running sum in element order (the contract), hence one thread.
double sum_squares(const Tensor& x, double acc) { return ref::sum_squares(x, acc); }

int64_t count_non_finite(const Tensor& x, int64_t* first) { return ref::count_non_finite(x, first); }

void adamw_step(const Ctx& c, Tensor& w, const Tensor& g, Tensor& m, Tensor& v,
                const AdamWStep& p) {
  HUGINN_ASSERT(w.is_contiguous() && g.is_contiguous() && m.is_contiguous() && v.is_contiguous() &&
                    g.numel() == w.numel() && m.numel() == w.numel() && v.numel() == w.numel(),
                "adamw_step: four contiguous tensors of one size expected");
  float* wp = w.f32();
  const float* gp = g.f32();
  float* mp = m.f32();
  float* vp = v.f32();
  c.for_range(w.numel(), 8, [&](int64_t i0, int64_t i1) { ref::adamw(wp, gp, mp, vp, i0, i1, p); });
}

}  // namespace huginn::cpu
