// The packed GEMMs of the CPU backend against a double-precision reference, over many shapes
// (M = 2..300 with odd sizes, N and K tails of every register tile, K and M and N across the cache
// blocks), row-strided views whose padding must stay untouched, every instruction set compiled
// in, and 1 vs 2 threads (work split as finely as possible) bit-identical.
//
// Tolerances: fp32 accumulation of K exact-or-once-rounded products errs by about
// sqrt(K)·2^-24·Σ|x_k w_k| (K·2^-24 worst case), so 1e-5·Σ|x_k w_k| is ~4σ for K <= 2000 and
// still far below the worst case at K = 4100 (the reduction's random-walk error is ~1e-6 there).
// gemm_bf16 must also equal matmul on the widened weights bit for bit (its contract).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "huginn/backend.h"
#include "huginn/thread_pool.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/kernels.h"
#include "kernels/cpu/simd.h"

namespace huginn {
namespace {

struct Shape {
  int64_t M, K, N;
};

std::vector<Shape> shapes() {
  std::vector<Shape> s;
  for (int64_t M : {2, 3, 5, 8, 13, 24, 37, 100, 255, 300})
    for (auto [K, N] : std::vector<std::pair<int64_t, int64_t>>{
             {1, 7}, {2, 33}, {17, 16}, {64, 64}, {129, 31}, {300, 100}, {513, 47}})
      s.push_back({M, K, N});
  s.push_back({200, 700, 65});   // M across the 192-row block, K across the k blocks
  s.push_back({7, 4100, 20});    // long K
  s.push_back({9, 40, 2100});    // N across the 1024-column block
  return s;
}

uint16_t bf16_of(float f) { return f32_to_bf16(f); }
float f32_of_bf16(uint16_t h) { return bf16_to_f32(h); }

// Buffers of rows `ld` apart, filled with random values (padding included: it must not change).
struct Mat {
  int64_t rows, cols, ld;
  std::vector<float> v;
};
Mat make(int64_t rows, int64_t cols, int64_t pad, std::mt19937& rng) {
  Mat m{rows, cols, cols + pad, {}};
  m.v.resize(static_cast<size_t>(rows * m.ld + 1));
  std::uniform_real_distribution<float> d(-1.f, 1.f);
  for (float& x : m.v) x = d(rng);
  return m;
}

using GemmBf16Fn = void (*)(const cpu::Ctx&, const float*, int64_t, const uint16_t*, int64_t,
                            float*, int64_t, int64_t, int64_t, int64_t);
using MatmulFn = void (*)(const cpu::Ctx&, const Tensor&, const Tensor&, Tensor&);

struct Isa {
  std::string name;
  GemmBf16Fn bf16;
  MatmulFn f32;
};

std::vector<Isa> isas() {
  std::vector<Isa> out{{"generic", &cpu::gemm_bf16<cpu::VecGeneric>, &cpu::matmul<cpu::VecGeneric>}};
  for (CpuIsa isa : available_cpu_isas()) {
#ifdef HUGINN_HAVE_AVX2
    if (isa == CpuIsa::kAvx2)
      out.push_back({"avx2", &cpu::gemm_bf16<cpu::VecAvx2>, &cpu::matmul<cpu::VecAvx2>});
#endif
#ifdef HUGINN_HAVE_AVX512
    if (isa == CpuIsa::kAvx512)
      out.push_back({"avx512", &cpu::gemm_bf16<cpu::VecAvx512>, &cpu::matmul<cpu::VecAvx512>});
#endif
  }
  return out;
}

// Checks y (inside the view) against ref within 1e-5·mag, and the padding against `orig`.
void check(const Mat& y, const Mat& orig, const std::vector<double>& ref,
           const std::vector<double>& mag, const std::string& what) {
  int bad = 0;
  for (int64_t m = 0; m < y.rows; ++m)
    for (int64_t i = 0; i < y.ld; ++i) {
      const size_t at = static_cast<size_t>(m * y.ld + i);
      if (i >= y.cols) {
        if (y.v[at] != orig.v[at] && bad++ < 3) ADD_FAILURE() << what << ": padding written";
        continue;
      }
      const size_t r = static_cast<size_t>(m * y.cols + i);
      if (!(std::fabs(y.v[at] - ref[r]) <= 1e-5 * mag[r] + 1e-30) && bad++ < 3)
        ADD_FAILURE() << what << ": y[" << m << "][" << i << "] = " << y.v[at] << ", want "
                      << ref[r] << " (mag " << mag[r] << ")";
    }
  EXPECT_EQ(bad, 0) << what;
}

TEST(Gemm, Bf16WeightsMatchReference) {
  ThreadPool pool1(1), pool2(2);
  const cpu::Ctx c1{pool1, 1}, c2{pool2, 1};
  for (const Isa& isa : isas())
    for (const Shape& s : shapes()) {
      const std::string what = isa.name + " bf16 M" + std::to_string(s.M) + " K" +
                               std::to_string(s.K) + " N" + std::to_string(s.N);
      std::mt19937 rng(static_cast<uint32_t>(s.M * 7919 + s.K * 31 + s.N));
      Mat x = make(s.M, s.K, 3, rng), wf = make(s.N, s.K, 1, rng), y = make(s.M, s.N, 5, rng);
      std::vector<uint16_t> w(wf.v.size());
      for (size_t i = 0; i < w.size(); ++i) w[i] = bf16_of(wf.v[i]);
      std::vector<double> ref(static_cast<size_t>(s.M * s.N)), mag(ref.size());
      for (int64_t m = 0; m < s.M; ++m)
        for (int64_t n = 0; n < s.N; ++n) {
          double acc = 0, a = 0;
          for (int64_t k = 0; k < s.K; ++k) {
            const double p = static_cast<double>(x.v[m * x.ld + k]) * f32_of_bf16(w[n * wf.ld + k]);
            acc += p, a += std::fabs(p);
          }
          ref[m * s.N + n] = acc, mag[m * s.N + n] = a;
        }
      Mat y2 = y;
      const Mat orig = y;
      isa.bf16(c1, x.v.data(), x.ld, w.data(), wf.ld, y.v.data(), y.ld, s.M, s.N, s.K);
      isa.bf16(c2, x.v.data(), x.ld, w.data(), wf.ld, y2.v.data(), y.ld, s.M, s.N, s.K);
      check(y, orig, ref, mag, what);
      EXPECT_EQ(std::memcmp(y.v.data(), y2.v.data(), y.v.size() * 4), 0) << what << ": threads";
      if (s.M > 4) {  // matmul's packed path (M <= 4 is its matrix-vector path)
        Mat wide = wf, y3 = orig;
        for (size_t i = 0; i < w.size(); ++i) wide.v[i] = f32_of_bf16(w[i]);
        const Tensor xt = Tensor::wrap(x.v.data(), {x.rows, x.ld}, DType::kF32).cols(0, x.cols);
        const Tensor wt = Tensor::wrap(wide.v.data(), {wide.rows, wide.ld}, DType::kF32).cols(0, s.K);
        Tensor yt = Tensor::wrap(y3.v.data(), {y3.rows, y3.ld}, DType::kF32).cols(0, s.N);
        isa.f32(c1, xt, wt, yt);
        EXPECT_EQ(std::memcmp(y.v.data(), y3.v.data(), y.v.size() * 4), 0)
            << what << ": differs from matmul on the widened weights";
      }
    }
}

TEST(Gemm, F32MatchesReference) {
  ThreadPool pool1(1), pool2(2);
  const cpu::Ctx c1{pool1, 1}, c2{pool2, 1};
  for (const Isa& isa : isas())
    for (const Shape& s : shapes()) {
      const std::string what = isa.name + " f32 M" + std::to_string(s.M) + " K" +
                               std::to_string(s.K) + " N" + std::to_string(s.N);
      std::mt19937 rng(static_cast<uint32_t>(s.M * 7919 + s.K * 31 + s.N));
      Mat x = make(s.M, s.K, 3, rng), w = make(s.N, s.K, 1, rng), y = make(s.M, s.N, 5, rng);
      std::vector<double> ref(static_cast<size_t>(s.M * s.N)), mag(ref.size());
      for (int64_t m = 0; m < s.M; ++m)
        for (int64_t n = 0; n < s.N; ++n) {
          double acc = 0, a = 0;
          for (int64_t k = 0; k < s.K; ++k) {
            const double p = static_cast<double>(x.v[m * x.ld + k]) * w.v[n * w.ld + k];
            acc += p, a += std::fabs(p);
          }
          ref[m * s.N + n] = acc, mag[m * s.N + n] = a;
        }
      Mat y2 = y;
      const Mat orig = y;
      auto view = [](Mat& m) {
        return Tensor::wrap(m.v.data(), {m.rows, m.ld}, DType::kF32).cols(0, m.cols);
      };
      const Tensor xt = view(x), wt = view(w);
      Tensor yt = view(y), y2t = view(y2);
      isa.f32(c1, xt, wt, yt);
      isa.f32(c2, xt, wt, y2t);
      check(y, orig, ref, mag, what);
      EXPECT_EQ(std::memcmp(y.v.data(), y2.v.data(), y.v.size() * 4), 0) << what << ": threads";
    }
}

}  // namespace
}  // namespace huginn
