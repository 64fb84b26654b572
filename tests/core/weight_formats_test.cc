// BF16, Q8 and Q4 weights: conversions, and matmul of every CPU instruction set against the scalar
// reference (which dequantizes each weight to F32 and sums in double).
//
// Tolerance, relative to Σ_k |x_k w_k| of each output (w dequantized): the kernels widen /
// dequantize the weights to the same F32 values the reference uses, so only the float FMA chain
// differs from its double sum: 2e-5 (see ops_test.cc). gemm_test checks the bits of the chain.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "huginn/backend.h"
#include "huginn/thread_pool.h"
#include "kernels/cpu/cpu_backend.h"

namespace huginn {
namespace {

Tensor random_f32(int64_t rows, int64_t cols, std::mt19937& rng, float scale = 1.0f) {
  Tensor t = Tensor::empty({rows, cols});
  std::normal_distribution<float> d(0.0f, scale);
  for (int64_t i = 0; i < t.numel(); ++i) t.f32()[i] = d(rng);
  return t;
}

// x as a view one float into a wider buffer (rows strided), to catch contiguity assumptions.
struct Strided {
  Tensor buf, view;
};
Strided strided(const Tensor& x) {
  Strided s;
  s.buf = Tensor::empty({x.dim(0), x.dim(1) + 5});
  s.view = s.buf.cols(1, x.dim(1) + 1);
  s.view.copy_from(x);
  return s;
}

// Σ_k |x_k w_k| for every output, w as F32.
std::vector<double> magnitudes(const Tensor& x, const Tensor& wf) {
  const int64_t M = x.dim(0), N = wf.dim(0), K = x.dim(1);
  std::vector<double> mag(static_cast<size_t>(M * N));
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      double s = 0;
      for (int64_t k = 0; k < K; ++k) s += std::fabs(double(x.row(m)[k]) * wf.row(n)[k]);
      mag[m * N + n] = s;
    }
  return mag;
}

struct Shape {
  int64_t M, N, K;
};

std::vector<Shape> shapes(bool odd_k) {
  std::vector<Shape> out;
  const std::vector<int64_t> ks = odd_k ? std::vector<int64_t>{1, 7, 32, 33, 100, 257}
                                        : std::vector<int64_t>{32, 64, 96, 320};
  for (int64_t M : {1, 2, 3, 4, 5, 9, 33})
    for (int64_t N : {1, 5, 17, 64})
      for (int64_t K : ks) out.push_back({M, N, K});
  return out;
}

void check_backend(Backend& be, DType dt, const std::vector<Shape>& cases, double rtol,
                   const std::string& what) {
  auto ref = make_ref_backend();
  std::mt19937 rng(7);
  for (const Shape& s : cases) {
    const Tensor x = random_f32(s.M, s.K, rng);
    const Tensor w = convert_weight(random_f32(s.N, s.K, rng, 0.05f), dt);
    const Tensor wf = convert_weight(w, DType::kF32);
    Tensor want = Tensor::empty({s.M, s.N});
    ref->matmul(x, w, want);
    Strided xs = strided(x);
    Strided ys = strided(Tensor::empty({s.M, s.N}));
    be.matmul(xs.view, w, ys.view);
    const auto mag = magnitudes(x, wf);
    for (int64_t m = 0; m < s.M; ++m)
      for (int64_t n = 0; n < s.N; ++n)
        ASSERT_NEAR(ys.view.row(m)[n], want.row(m)[n], rtol * mag[m * s.N + n] + 1e-30)
            << what << " M=" << s.M << " N=" << s.N << " K=" << s.K << " at [" << m << ", " << n
            << "]";
    // The padding around y is untouched.
    EXPECT_EQ(ys.buf.row(0)[0], 0.0f);
  }
}

TEST(WeightFormats, RefMatmulDequantizesThenDots) {
  std::mt19937 rng(1);
  const Tensor x = random_f32(3, 64, rng), w = random_f32(5, 64, rng);
  auto ref = make_ref_backend();
  for (DType dt : {DType::kBF16, DType::kQ8, DType::kQ4}) {
    const Tensor wl = convert_weight(w, dt), wf = convert_weight(wl, DType::kF32);
    Tensor a = Tensor::empty({3, 5}), b = Tensor::empty({3, 5});
    ref->matmul(x, wl, a);
    ref->matmul(x, wf, b);
    for (int64_t i = 0; i < a.numel(); ++i) EXPECT_EQ(a.f32()[i], b.f32()[i]) << dtype_name(dt);
  }
}

TEST(WeightFormats, CpuMatmulMatchesReferenceEveryIsa) {
  for (CpuIsa isa : available_cpu_isas()) {
    for (int threads : {1, 2}) {
      ThreadPool pool(threads);
      CpuOptions o;
      o.isa = isa;
      o.min_work_per_thread = 1;
      auto be = make_cpu_backend(pool, o);
      const std::string tag = std::string(cpu_isa_name(isa)) + " threads=" + std::to_string(threads);
      check_backend(*be, DType::kBF16, shapes(true), 2e-5, tag + " bf16");
      check_backend(*be, DType::kQ8, shapes(false), 2e-5, tag + " q8");
      check_backend(*be, DType::kQ4, shapes(false), 2e-5, tag + " q4");
    }
  }
}

TEST(WeightFormats, ResultsDoNotDependOnThreadCount) {
  std::mt19937 rng(3);
  for (DType dt : {DType::kBF16, DType::kQ8, DType::kQ4}) {
    for (int64_t M : {1, 3, 20}) {
      const Tensor x = random_f32(M, 256, rng), w = convert_weight(random_f32(77, 256, rng), dt);
      std::vector<float> got[2];
      for (int threads : {1, 2}) {
        ThreadPool pool(threads);
        CpuOptions o;
        o.isa = best_cpu_isa();
        o.min_work_per_thread = 1;
        auto be = make_cpu_backend(pool, o);
        Tensor y = Tensor::empty({M, 77});
        be->matmul(x, w, y);
        got[threads - 1].assign(y.f32(), y.f32() + y.numel());
      }
      EXPECT_EQ(got[0], got[1]) << dtype_name(dt) << " M=" << M;
    }
  }
}

TEST(WeightFormats, Bf16ConversionRoundsToNearestEven) {
  // Halfway cases both ways, a NaN, infinities, tiny and huge values.
  std::vector<float> v = {1.0f + 0x1p-8f, 1.0f + 3 * 0x1p-8f, -1.0f - 0x1p-8f, 0x1p-130f,
                          3.4e38f,        -0.0f,              INFINITY,        -INFINITY};
  std::mt19937 rng(5);
  std::normal_distribution<float> d;
  while (v.size() < 64) v.push_back(d(rng));
  Tensor w = Tensor::wrap(v.data(), {2, 32}, DType::kF32);
  Tensor b = convert_weight(w, DType::kBF16);
  ASSERT_EQ(b.dtype(), DType::kBF16);
  for (int64_t i = 0; i < 64; ++i) EXPECT_EQ(b.data<uint16_t>()[i], f32_to_bf16(v[i])) << i;
  EXPECT_EQ(b.data<uint16_t>()[0], 0x3f80);  // 1 + 2^-8 is halfway: to even (1.0)
  EXPECT_EQ(b.data<uint16_t>()[1], 0x3f82);  // 1 + 3·2^-8 is halfway: to even (1 + 2^-6)
  // And back: every BF16 value is exact in F32.
  Tensor f = convert_weight(b, DType::kF32);
  for (int64_t i = 0; i < 64; ++i) EXPECT_EQ(f32_to_bf16(f.f32()[i]), b.data<uint16_t>()[i]);
}

TEST(WeightFormats, Q8ErrorIsWithinHalfAStepPerBlock) {
  std::mt19937 rng(9);
  Tensor w = random_f32(7, 128, rng, 0.02f);
  w.row(0)[0] = 0.0f;
  for (int64_t k = 32; k < 64; ++k) w.row(1)[k] = 0.0f;         // an all-zero block
  for (int64_t k = 64; k < 96; ++k) w.row(2)[k] = 1e-7f * k;    // a tiny block (F16 subnormal)
  w.row(3)[5] = 7.5f;                                            // an outlier
  const Tensor q = quantize_q8(w);
  ASSERT_EQ(q.dtype(), DType::kQ8);
  EXPECT_EQ(q.nbytes(), size_t(7 * 128 + 7 * 4 * 2));
  const Tensor back = convert_weight(q, DType::kF32);
  for (int64_t n = 0; n < 7; ++n)
    for (int64_t b = 0; b < 4; ++b) {
      float amax = 0;
      for (int64_t i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(w.row(n)[b * 32 + i]));
      const float s = f16_to_f32(q.q8_scales()[n * 4 + b]);
      EXPECT_NEAR(s, amax / 127, amax / 127 * 0x1p-10 + 6e-8) << n << "," << b;
      const double bound = std::max(0.5 * s, amax - 127.0 * s) * (1 + 1e-6);
      for (int64_t i = 0; i < 32; ++i) {
        const int64_t k = b * 32 + i;
        EXPECT_LE(std::fabs(double(back.row(n)[k]) - w.row(n)[k]), bound) << n << "," << k;
        EXPECT_GE(q.q8_values()[n * 128 + k], -127);
      }
    }
  EXPECT_EQ(back.row(1)[40], 0.0f);
}

// The Q4 rule of huginn/tensor.h, written out independently: per block of 32, m = the first value
// of largest magnitude, scale = f16(m / -8), code = clamp(round-half-even(w / scale), -8, 7) + 8,
// two codes a byte in k order (k even in the low nibble), then the scales.
TEST(WeightFormats, Q4BytesFollowTheDocumentedRule) {
  std::mt19937 rng(19);
  Tensor w = random_f32(5, 96, rng, 0.03f);
  for (int64_t k = 32; k < 64; ++k) w.row(1)[k] = 0.0f;  // an all-zero block
  w.row(2)[3] = -0.5f;                                   // a negative outlier: scale > 0
  w.row(2)[9] = 0.5f;                                    // as large, later: clamps to +7
  w.row(3)[70] = 0.25f;                                  // a positive outlier: scale < 0
  w.row(4)[33] = -0.5f;     // row 4, block 1: scale 1/16, and three values on exact steps:
  w.row(4)[34] = 0.03125f;  //   half a step -> 0 (half-even)
  w.row(4)[35] = 0.09375f;  //   1.5 steps -> 2 (half-even)
  w.row(4)[40] = 0.0625f;   //   one step -> 1
  const Tensor q = quantize_q4(w);
  ASSERT_EQ(q.dtype(), DType::kQ4);
  ASSERT_EQ(q.nbytes(), size_t(5 * 96 / 2 + 5 * 3 * 2));
  const auto* bytes = static_cast<const uint8_t*>(q.raw());
  const auto* scales = reinterpret_cast<const uint16_t*>(bytes + 5 * 96 / 2);
  for (int64_t n = 0; n < 5; ++n)
    for (int64_t b = 0; b < 3; ++b) {
      const float* blk = w.row(n) + b * 32;
      float m = 0.0f;
      for (int i = 0; i < 32; ++i)
        if (std::fabs(blk[i]) > std::fabs(m)) m = blk[i];
      const uint16_t s16 = f32_to_f16(m / -8.0f);
      ASSERT_EQ(scales[n * 3 + b], s16) << n << "," << b;
      const float s = f16_to_f32(s16);
      for (int i = 0; i < 32; ++i) {
        int code = 8;
        if (s != 0.0f) code = int(std::clamp(std::nearbyint(blk[i] / s), -8.0f, 7.0f)) + 8;
        const uint8_t byte = bytes[n * 48 + b * 16 + i / 2];
        ASSERT_EQ(i % 2 == 0 ? byte & 15 : byte >> 4, code) << n << "," << b * 32 + i;
      }
    }
  // Byte of (n, k): n * 48 + k / 2, k even in the low nibble.
  EXPECT_EQ(f16_to_f32(scales[2 * 3]), 0.0625f);   // -0.5 / -8
  EXPECT_EQ(bytes[2 * 48 + 1] >> 4, 0);            // k = 3: -0.5 is code -8 exactly
  EXPECT_EQ(bytes[2 * 48 + 4] >> 4, 15);           // k = 9: +0.5 clamps to +7
  EXPECT_LT(f16_to_f32(scales[3 * 3 + 2]), 0.0f);  // +0.25 / -8
  EXPECT_EQ(bytes[3 * 48 + 35] & 15, 0);           // k = 70: +0.25 is code -8
  EXPECT_EQ(bytes[1 * 48 + 16], 0x88);             // zero block: code 0 twice
  EXPECT_EQ(bytes[4 * 48 + 17] & 15, 8 + 0);       // k = 34
  EXPECT_EQ(bytes[4 * 48 + 17] >> 4, 8 + 2);       // k = 35
  EXPECT_EQ(bytes[4 * 48 + 20] & 15, 8 + 1);       // k = 40
  // Dequantized: (code - 8) · scale, exact; within half a step of the weight except where a
  // value of the other sign than the block's extreme exceeds 7.5 steps (clamped to +7: within
  // one step, as row 2's +0.5).
  const Tensor back = convert_weight(q, DType::kF32);
  for (int64_t n = 0; n < 5; ++n)
    for (int64_t k = 0; k < 96; ++k) {
      const float s = std::fabs(f16_to_f32(scales[n * 3 + k / 32]));
      const uint8_t byte = bytes[n * 48 + k / 2];
      const int code = (k % 2 == 0 ? byte & 15 : byte >> 4) - 8;
      ASSERT_EQ(back.row(n)[k], float(code) * f16_to_f32(scales[n * 3 + k / 32]));
      const bool clamped = w.row(n)[k] / f16_to_f32(scales[n * 3 + k / 32]) > 7.5;
      EXPECT_LE(std::fabs(double(back.row(n)[k]) - w.row(n)[k]), (clamped ? 1.0 : 0.5) * s * 1.001)
          << n << "," << k;
    }
}

TEST(WeightFormats, Q4RejectsBadInput) {
  std::mt19937 rng(4);
  Tensor w = random_f32(2, 48, rng);
  try {
    quantize_q4(w);
    FAIL() << "K = 48 accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("not a multiple of 32"), std::string::npos) << e.what();
  }
  EXPECT_THROW(convert_weight(w, DType::kQ4), Error);
  Tensor v = random_f32(2, 32, rng);
  v.row(0)[31] = INFINITY;
  EXPECT_THROW(quantize_q4(v), Error);
  Tensor big = random_f32(1, 32, rng);
  big.row(0)[0] = 1e6f;  // 1e6 / 8 overflows the F16 scale
  try {
    quantize_q4(big);
    FAIL() << "a block max of 1e6 accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("overflows the F16 scale"), std::string::npos) << e.what();
  }
}

TEST(WeightFormats, Q8RejectsBadInput) {
  std::mt19937 rng(2);
  Tensor w = random_f32(2, 48, rng);
  try {
    quantize_q8(w);
    FAIL() << "K = 48 accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("not a multiple of 32"), std::string::npos) << e.what();
  }
  Tensor v = random_f32(2, 32, rng);
  v.row(1)[3] = NAN;
  EXPECT_THROW(quantize_q8(v), Error);
  EXPECT_THROW(convert_weight(v, DType::kI32), Error);
}

}  // namespace
}  // namespace huginn
