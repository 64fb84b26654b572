// The BF16 mixed-precision GEMM (kernels/cpu/gemm_bf16.cc; numerics in kernels/bf16_numerics.h)
// and the backend ops on it (matmul_bf16, matmul_backward_bf16):
// - the rounding rule on its edge cases (ties to even, subnormals, NaN, overflow);
// - every path — each instruction set, vdpbf16ps forced on (where the CPU has AVX512_BF16) and
//   off, 1 and 2 threads, the machine's and tiny cache blocks, all four operand layouts, = and
//   += — equals the plain reference bit for bit, on odd sizes, with values that underflow
//   (flushing) as well as ordinary ones; padding around strided outputs untouched;
// - right, not only consistent: within the BF16 rounding bound of a double-precision product;
// - the backend ops of the cpu, strict and ref backends give the same bits, on F32 weights and on
//   weights rounded once by round_bf16, and the backward is the derivative (by central
//   differences in double of the F32 function) to BF16 accuracy.
#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "huginn/backend.h"
#include "huginn/thread_pool.h"
#include "kernels/bf16_numerics.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/kernels.h"

namespace huginn {
namespace {

cpu::GemmF32Fn gemm_of(CpuIsa isa) {
#ifdef HUGINN_HAVE_AVX2
  if (isa == CpuIsa::kAvx2) return &cpu::gemm_bf16<cpu::VecAvx2>;
#endif
#ifdef HUGINN_HAVE_AVX512
  if (isa == CpuIsa::kAvx512) return &cpu::gemm_bf16<cpu::VecAvx512>;
#endif
  return &cpu::gemm_bf16<cpu::VecGeneric>;
}

bool cpu_has_bf16_dot() { return cpu_kernel_info(CpuIsa::kGeneric).cpu_has_avx512_bf16; }

// The dot-product modes worth running here: the F32 FMA tiles always; vdpbf16ps where it exists.
std::vector<cpu::Bf16Dot> dot_modes() {
  std::vector<cpu::Bf16Dot> m{cpu::Bf16Dot::kOff};
  if (cpu_has_bf16_dot()) m.push_back(cpu::Bf16Dot::kOn);
  return m;
}

struct DotMode {
  explicit DotMode(cpu::Bf16Dot m) { cpu::set_bf16_dot(m); }
  ~DotMode() { cpu::set_bf16_dot(cpu::Bf16Dot::kAuto); }
};

struct TinyBlocks {
  explicit TinyBlocks(bool on) {
    if (!on) return;
    const cpu::GemmBlocking b{64, 1, 1};
    cpu::set_gemm_blocking_override(&b);
  }
  ~TinyBlocks() { cpu::set_gemm_blocking_override(nullptr); }
};

float bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// [rows, cols] with rows cols + pad apart; `scale` picks the magnitudes: ordinary values, or
// values whose products underflow F32 (about 1e-20 · 1e-20) mixed with subnormal inputs.
struct Mat {
  int64_t rows, cols, ld;
  std::vector<float> buf;
  Mat(int64_t r, int64_t c, int64_t pad, float scale, std::mt19937& rng)
      : rows(r), cols(c), ld(c + pad), buf(static_cast<size_t>(r * (c + pad) + 1)) {
    std::normal_distribution<float> d(0.0f, 1.0f);
    for (size_t i = 0; i < buf.size(); ++i) buf[i] = d(rng) * scale;
    if (scale < 1e-10f)
      for (size_t i = 0; i < buf.size(); i += 7) buf[i] = d(rng) * 1e-39f;  // subnormal inputs
  }
  float* at(int64_t r, int64_t c) { return buf.data() + r * ld + c; }
  const float* at(int64_t r, int64_t c) const { return buf.data() + r * ld + c; }
};

void expect_same_bits(const Mat& got, const std::vector<float>& want_buf, const std::string& what) {
  int bad = 0;
  for (size_t i = 0; i < got.buf.size() && bad < 3; ++i)
    if (std::memcmp(&got.buf[i], &want_buf[i], 4) != 0)
      ADD_FAILURE() << what << ": element " << i << " (row " << i / got.ld << ", col "
                    << i % got.ld << ") is " << got.buf[i] << ", the reference gives "
                    << want_buf[i] << (bad++, "");
  EXPECT_EQ(bad, 0) << what;
}

TEST(Bf16Gemm, RoundingIsNearestEvenAndFlushesSubnormals) {
  EXPECT_EQ(bf16_round_ftz(1.0f), 0x3f80);
  EXPECT_EQ(bf16_round_ftz(1.0f + 0x1p-8f), 0x3f80);      // tie -> even (down)
  EXPECT_EQ(bf16_round_ftz(1.0f + 0x3p-8f), 0x3f82);      // tie -> even (up)
  EXPECT_EQ(bf16_round_ftz(1.0f + 0x1p-8f + 0x1p-20f), 0x3f81);  // above the tie
  EXPECT_EQ(bf16_round_ftz(-1.0f - 0x1p-8f - 0x1p-20f), 0xbf81);
  EXPECT_EQ(bf16_round_ftz(1e-40f), 0x0000);  // subnormal -> +0
  EXPECT_EQ(bf16_round_ftz(-1e-40f), 0x8000);  // -> -0
  EXPECT_EQ(bf16_round_ftz(0x1p-126f), 0x0080);  // the smallest normal stays
  EXPECT_EQ(bf16_round_ftz(std::numeric_limits<float>::max()), 0x7f80);  // rounds to +inf
  EXPECT_EQ(bf16_round_ftz(-std::numeric_limits<float>::infinity()), 0xff80);
  const uint16_t nan = bf16_round_ftz(bits(0x7f800001u));  // a signalling NaN whose payload is low
  EXPECT_EQ(nan & 0x7f80, 0x7f80);
  EXPECT_NE(nan & 0x7f, 0) << "NaN must stay NaN (quiet), not become infinity";
  // Rule 2: the odd element first (1 - 1 + 2^-30, not (1 + 2^-30) - 1 = 0) ...
  EXPECT_EQ(bf16_pair_fma(0xbf803800u, 0x3f803800u, 1.0f), 0x1p-30f);
  // ... and a result below FLT_MIN is a zero of its sign (0.5 · -2^-126).
  const float flushed = bf16_pair_fma(0x3f00u, 0x8080u, 0.0f);
  EXPECT_EQ(flushed, 0.0f);
  EXPECT_TRUE(std::signbit(flushed));
}

// Every path against the reference, in all layouts. Returns nothing; failures name the case.
void check_all_paths(int64_t M, int64_t K, int64_t N, float scale, std::mt19937& rng) {
  // A [M, K] as rows and as its transpose; B [K, N] as weight rows [N, K] and as [K, N].
  Mat a(M, K, 1, scale, rng), at(K, M, 2, scale, rng), b(N, K, 3, scale, rng), bt(K, N, 1, scale, rng);
  for (int64_t i = 0; i < M; ++i)
    for (int64_t k = 0; k < K; ++k) *at.at(k, i) = *a.at(i, k);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t k = 0; k < K; ++k) *bt.at(k, n) = *b.at(n, k);
  const Mat y0(M, N, 2, scale < 1e-10f ? 1e-38f : 1.0f, rng);  // += starts here
  for (bool acc : {false, true}) {
    std::vector<float> want = y0.buf;
    bf16_gemm_reference([&](int64_t i, int64_t k) { return *a.at(i, k); },
                        [&](int64_t k, int64_t n) { return *b.at(n, k); }, want.data(), y0.ld, M,
                        N, K, acc);
    for (CpuIsa isa : available_cpu_isas())
      for (cpu::Bf16Dot mode : dot_modes())
        for (bool tiny : {false, true})
          for (int threads : {1, 2})
            for (int layout = 0; layout < 4; ++layout) {
              if (mode == cpu::Bf16Dot::kOn && isa != CpuIsa::kAvx512) continue;
              DotMode dm(mode);
              TinyBlocks tb(tiny);
              ThreadPool pool(threads);
              const cpu::Ctx c{pool, 1};
              const bool a_cols = layout & 1, b_kn = layout & 2;
              Mat y = y0;
              const float* ap = a_cols ? at.at(0, 0) : a.at(0, 0);
              const int64_t ai = a_cols ? 1 : a.ld, ak = a_cols ? at.ld : 1;
              const float* bp = b_kn ? bt.at(0, 0) : b.at(0, 0);
              const int64_t bk = b_kn ? bt.ld : 1, bn = b_kn ? 1 : b.ld;
              gemm_of(isa)(c, ap, ai, ak, bp, bk, bn, y.at(0, 0), y.ld, M, N, K, acc);
              expect_same_bits(y, want,
                               std::string(cpu_isa_name(isa)) +
                                   (mode == cpu::Bf16Dot::kOn ? " vdpbf16ps" : " fma") +
                                   " M" + std::to_string(M) + " K" + std::to_string(K) + " N" +
                                   std::to_string(N) + " scale " + std::to_string(scale) +
                                   " layout " + std::to_string(layout) + (acc ? " +=" : " =") +
                                   (tiny ? " tiny blocks" : "") + " threads " +
                                   std::to_string(threads));
            }
  }
}

TEST(Bf16Gemm, EveryPathIsTheReferenceBitForBit) {
  std::mt19937 rng(3);
  RecordProperty("vdpbf16ps", cpu_has_bf16_dot() ? "run" : "absent on this CPU");
  for (auto [M, K, N] : std::vector<std::array<int64_t, 3>>{
           {1, 1, 1}, {1, 7, 5}, {3, 70, 40}, {13, 131, 33}, {45, 130, 70}, {26, 257, 35}})
    for (float scale : {1.0f, 1e-20f}) check_all_paths(M, K, N, scale, rng);
}

// The product is right to BF16 accuracy: each input's rounding is at most 2^-9 relative, so
// |y - exact| <= (2·2^-9 + 2^-18) Σ|a b| plus the F32 sum's rounding (< K·2^-24 Σ|a b|).
TEST(Bf16Gemm, WithinTheBf16BoundOfDoublePrecision) {
  std::mt19937 rng(5);
  const int64_t M = 37, K = 515, N = 29;
  Mat a(M, K, 0, 1.0f, rng), b(N, K, 0, 1.0f, rng), y(M, N, 0, 1.0f, rng);
  ThreadPool pool(1);
  const cpu::Ctx c{pool, 1};
  gemm_of(available_cpu_isas().back())(c, a.at(0, 0), K, 1, b.at(0, 0), 1, K, y.at(0, 0), N, M,
                                        N, K, false);
  double worst = 0;
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      double exact = 0, mag = 0;
      for (int64_t k = 0; k < K; ++k) {
        exact += double(*a.at(m, k)) * *b.at(n, k);
        mag += std::fabs(double(*a.at(m, k)) * *b.at(n, k));
      }
      const double bound = (2 * 0x1p-9 + 0x1p-18 + K * 0x1p-24) * mag;
      worst = std::max(worst, std::fabs(*y.at(m, n) - exact) / bound);
      ASSERT_LE(std::fabs(*y.at(m, n) - exact), bound) << "y[" << m << "][" << n << "]";
    }
  // And it is BF16, not F32: some output is off by more than F32 rounding would allow.
  EXPECT_GT(worst, 0.01);
}

// Host tensors through a backend: upload, op, download.
struct OnBackend {
  Backend& be;
  Tensor put(const std::vector<float>& v, int64_t r, int64_t c) {
    Tensor h = Tensor::empty({r, c});
    std::memcpy(h.f32(), v.data(), v.size() * sizeof(float));
    Tensor t = be.alloc({r, c});
    be.copy(be.upload(h), t);
    return t;
  }
  std::vector<float> get(const Tensor& t) {
    std::vector<float> v(static_cast<size_t>(t.numel()));
    be.download(t, v.data());
    return v;
  }
};

struct Outs {
  std::vector<float> y, dx, dw;
};

// How the ops get w: F32 as it is, F32 as a view of wider rows, or BF16 rounded once from that
// view by Backend::round_bf16 (a trainer's copy).
enum class WeightAs { kF32, kF32View, kRounded };

Outs run_ops(Backend& be, const std::vector<float>& x, const std::vector<float>& w,
             const std::vector<float>& dy, const std::vector<float>& dw0, int64_t M, int64_t K,
             int64_t N, WeightAs as = WeightAs::kF32) {
  OnBackend ob{be};
  Tensor tx = ob.put(x, M, K), tw = ob.put(w, N, K), tdy = ob.put(dy, M, N), tdw = ob.put(dw0, N, K);
  if (as != WeightAs::kF32) {  // w in columns 1..K of [N, K + 3] rows
    std::vector<float> wide(static_cast<size_t>(N * (K + 3)), std::nanf(""));
    for (int64_t n = 0; n < N; ++n)
      std::memcpy(&wide[n * (K + 3) + 1], &w[n * K], K * sizeof(float));
    tw = ob.put(wide, N, K + 3).cols(1, K + 1);
  }
  if (as == WeightAs::kRounded) {
    Tensor wb = be.alloc({N, K}, DType::kBF16);
    be.round_bf16(tw, wb);
    tw = wb;
  }
  Tensor ty = be.alloc({M, N}), tdx = be.alloc({M, K});
  be.matmul_bf16(tx, tw, ty);
  be.matmul_backward_bf16(tx, tw, tdy, &tdx, &tdw);
  return {ob.get(ty), ob.get(tdx), ob.get(tdw)};
}

std::vector<float> normal(size_t n, std::mt19937& rng) {
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> v(n);
  for (float& f : v) f = d(rng);
  return v;
}

TEST(Bf16Gemm, BackendOpsAgreeOnEveryBackendAndIsa) {
  std::mt19937 rng(7);
  const int64_t M = 19, K = 67, N = 45;
  const auto x = normal(M * K, rng), w = normal(N * K, rng), dy = normal(M * N, rng),
             dw0 = normal(N * K, rng);
  auto ref = make_ref_backend();
  const Outs want = run_ops(*ref, x, w, dy, dw0, M, K, N);
  ThreadPool pool(2);
  auto strict = make_strict_backend(pool);
  std::vector<std::pair<std::string, Outs>> got{{"strict", run_ops(*strict, x, w, dy, dw0, M, K, N)}};
  for (CpuIsa isa : available_cpu_isas()) {
    CpuOptions o;
    o.isa = isa;
    o.min_work_per_thread = 1;
    auto be = make_cpu_backend(pool, o);
    got.push_back({std::string("cpu ") + cpu_isa_name(isa), run_ops(*be, x, w, dy, dw0, M, K, N)});
  }
  for (const auto& [name, g] : got) {
    EXPECT_EQ(0, std::memcmp(g.y.data(), want.y.data(), want.y.size() * 4)) << name << " y";
    EXPECT_EQ(0, std::memcmp(g.dx.data(), want.dx.data(), want.dx.size() * 4)) << name << " dx";
    EXPECT_EQ(0, std::memcmp(g.dw.data(), want.dw.data(), want.dw.size() * 4)) << name << " dw";
  }
}

// A weight rounded once (Backend::round_bf16, what a trainer does once per optimizer step) gives
// matmul_bf16 and matmul_backward_bf16 the bits of the F32 weight it came from, on every backend,
// instruction set, dot mode, blocking and thread count: K even (the pairs read in place) and odd
// (widened), N odd (the interleaved panels' tail), values that underflow and subnormal weights
// (flushed by the rounding as by the per-call path).
TEST(Bf16Gemm, RoundedWeightsGiveTheBitsOfTheF32Weights) {
  std::mt19937 rng(11);
  auto ref = make_ref_backend();
  ThreadPool pool(2);
  for (auto [M, K, N] : std::vector<std::array<int64_t, 3>>{{19, 66, 45}, {5, 67, 33}, {40, 130, 18}})
    for (float scale : {1.0f, 1e-20f}) {
      auto vals = [&](int64_t n) {
        auto v = normal(static_cast<size_t>(n), rng);
        for (size_t i = 0; i < v.size(); ++i) v[i] = i % 7 == 3 && scale < 1 ? v[i] * 1e-39f : v[i] * scale;
        return v;
      };
      const auto x = vals(M * K), w = vals(N * K), dy = vals(M * N), dw0 = vals(N * K);
      const Outs want = run_ops(*ref, x, w, dy, dw0, M, K, N);
      const std::string shape = " M" + std::to_string(M) + " K" + std::to_string(K) + " N" +
                                std::to_string(N) + " scale " + std::to_string(scale);
      std::vector<std::pair<std::string, Outs>> got;
      got.push_back({"ref", run_ops(*ref, x, w, dy, dw0, M, K, N, WeightAs::kRounded)});
      auto strict = make_strict_backend(pool);
      got.push_back({"strict", run_ops(*strict, x, w, dy, dw0, M, K, N, WeightAs::kRounded)});
      for (CpuIsa isa : available_cpu_isas())
        for (cpu::Bf16Dot mode : dot_modes())
          for (bool tiny : {false, true}) {
            if (mode == cpu::Bf16Dot::kOn && isa != CpuIsa::kAvx512) continue;
            DotMode dm(mode);
            TinyBlocks tb(tiny);
            CpuOptions o;
            o.isa = isa;
            o.min_work_per_thread = 1;
            auto be = make_cpu_backend(pool, o);
            const std::string name = std::string("cpu ") + cpu_isa_name(isa) +
                                     (mode == cpu::Bf16Dot::kOn ? " vdpbf16ps" : " fma") +
                                     (tiny ? " tiny blocks" : "");
            got.push_back({name + " view", run_ops(*be, x, w, dy, dw0, M, K, N, WeightAs::kF32View)});
            got.push_back({name + " rounded", run_ops(*be, x, w, dy, dw0, M, K, N, WeightAs::kRounded)});
          }
      for (const auto& [name, g] : got) {
        EXPECT_EQ(0, std::memcmp(g.y.data(), want.y.data(), want.y.size() * 4)) << name << shape << " y";
        EXPECT_EQ(0, std::memcmp(g.dx.data(), want.dx.data(), want.dx.size() * 4)) << name << shape << " dx";
        EXPECT_EQ(0, std::memcmp(g.dw.data(), want.dw.data(), want.dw.size() * 4)) << name << shape << " dw";
      }
    }
}

// The backward is the derivative of y = x·wᵀ to BF16 accuracy: L = Σ r ⊙ y, central differences
// of L in double (exact for a bilinear function up to double rounding) against dx and dw - dw0.
TEST(Bf16Gemm, BackwardIsTheDerivativeToBf16Accuracy) {
  std::mt19937 rng(9);
  const int64_t M = 6, K = 21, N = 11;
  auto x = normal(M * K, rng), w = normal(N * K, rng);
  const auto r = normal(M * N, rng);
  const std::vector<float> zero(N * K, 0.0f);
  ThreadPool pool(1);
  auto be = make_cpu_backend(pool);
  const Outs g = run_ops(*be, x, w, r, zero, M, K, N);
  auto loss = [&] {
    double l = 0;
    for (int64_t m = 0; m < M; ++m)
      for (int64_t n = 0; n < N; ++n) {
        double y = 0;
        for (int64_t k = 0; k < K; ++k) y += double(x[m * K + k]) * w[n * K + k];
        l += r[m * N + n] * y;
      }
    return l;
  };
  auto fd = [&](std::vector<float>& v, size_t i) {
    const float h = 1.0f / 64, keep = v[i];  // exact steps: v ± h has no rounding at |v| < 2^17
    v[i] = keep + h;
    const double up = loss();
    v[i] = keep - h;
    const double down = loss();
    v[i] = keep;
    return (up - down) / (2 * h);
  };
  // |d_bf16 - d| <= (2·2^-9 + 2^-18 + K'·2^-24) Σ|terms| with K' the summed length.
  for (size_t i = 0; i < x.size(); ++i) {
    const int64_t m = i / K, k = i % K;
    double mag = 0;
    for (int64_t n = 0; n < N; ++n) mag += std::fabs(double(r[m * N + n]) * w[n * K + k]);
    EXPECT_NEAR(g.dx[i], fd(x, i), (2 * 0x1p-9 + 0x1p-18 + N * 0x1p-24) * mag + 1e-9) << "dx " << i;
  }
  for (size_t i = 0; i < w.size(); ++i) {
    const int64_t n = i / K, k = i % K;
    double mag = 0;
    for (int64_t m = 0; m < M; ++m) mag += std::fabs(double(r[m * N + n]) * x[m * K + k]);
    EXPECT_NEAR(g.dw[i], fd(w, i), (2 * 0x1p-9 + 0x1p-18 + M * 0x1p-24) * mag + 1e-9) << "dw " << i;
  }
}

}  // namespace
}  // namespace huginn
