// Every op of the fast CPU backend, for every instruction set compiled in, against the scalar
// reference: odd sizes (not multiples of 8 or 16), views starting one float into their buffer
// with row strides wider than the row, 1 and 2 threads with work split as finely as possible.
// Also: 1-thread and 2-thread results are bit-identical.
//
// Tolerances come from float rounding, relative to a per-element magnitude `mag`:
// - matmul: a float FMA chain of K terms errs by about sqrt(K)·2^-24·Σ|x_k w_k| (random
//   rounding; K·2^-24 worst case), so 1e-5·Σ|x_k w_k| is ~4σ for K <= 2000.
// - attention: outputs are convex combinations of v; errors in the softmax weights are a few ulp
//   (float scores, ~2-ulp exp), so 1e-5·max|v|.
// - swiglu, rmsnorm, rope, log_softmax: a few roundings each (2-ulp exp, a 1-ulp different
//   1/rms, FMA vs two products, a float sum of exp), so 1e-6..2e-6 of the magnitude; log_softmax
//   adds 1e-5 absolute for the float sum of up to ~1000 terms inside its log.
// - copy, add, add_bias, concat, embedding do the same single rounding as the reference: exact.
// - the training-state ops (fill, scale, sum_squares, count_non_finite, adamw_step) run the
//   reference's element loop (one running double sum for sum_squares): exact.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "huginn/backend.h"
#include "huginn/thread_pool.h"
#include "kernels/cpu/cpu_backend.h"

namespace huginn {
namespace {

// A [rows, cols] view one float into its own buffer, rows `cols + pad` apart; the buffer
// (padding included) is filled with random values so that reads or writes outside the view show.
struct View {
  std::shared_ptr<std::vector<float>> buf;
  Tensor t;
};

View make_view(int64_t rows, int64_t cols, std::mt19937& rng, float lo = -1.f, float hi = 1.f,
               int64_t pad = 3) {
  View v;
  v.buf = std::make_shared<std::vector<float>>(static_cast<size_t>(1 + rows * (cols + pad) + 1));
  std::uniform_real_distribution<float> d(lo, hi);
  for (float& x : *v.buf) x = d(rng);
  v.t = Tensor::wrap(v.buf->data() + 1, {rows, cols + pad}, DType::kF32).cols(0, cols);
  return v;
}

// What one run of a case produced: the whole output buffer, and the magnitude each element's
// error is measured against (empty: |reference value|).
struct Result {
  std::vector<float> out;
  std::vector<double> mag;
};

struct Case {
  std::string name;
  double rtol, atol;
  std::function<Result(Backend&)> run;  // builds its inputs from a fixed seed, runs the op
};

// Magnitudes for a view's buffer: `f(r, c)` inside the view, 0 (exact) in the padding.
std::vector<double> mags(const View& v, const std::function<double(int64_t, int64_t)>& f) {
  std::vector<double> m(v.buf->size(), 0.0);
  const float* base = v.buf->data();
  for (int64_t r = 0; r < v.t.dim(0); ++r)
    for (int64_t c = 0; c < v.t.dim(1); ++c) m[v.t.row(r) + c - base] = f(r, c);
  return m;
}

Case matmul_case(int64_t M, int64_t K, int64_t N) {
  return {"matmul M" + std::to_string(M) + " K" + std::to_string(K) + " N" + std::to_string(N),
          1e-5, 0.0, [=](Backend& b) {
            std::mt19937 rng(static_cast<uint32_t>(M * 1000003 + K * 1009 + N));
            View x = make_view(M, K, rng), w = make_view(N, K, rng), y = make_view(M, N, rng);
            b.matmul(x.t, w.t, y.t);
            auto mag = mags(y, [&](int64_t m, int64_t n) {
              double s = 0;
              for (int64_t k = 0; k < K; ++k) s += std::fabs(x.t.row(m)[k] * w.t.row(n)[k]);
              return s;
            });
            return Result{*y.buf, mag};
          }};
}

Case attention_case(int64_t T, int64_t S, int H, int64_t D) {
  return {"attention T" + std::to_string(T) + " S" + std::to_string(S) + " H" +
              std::to_string(H) + " D" + std::to_string(D),
          1e-5, 0.0, [=](Backend& b) {
            std::mt19937 rng(static_cast<uint32_t>(T * 7919 + S * 104729 + H * 31 + D));
            View q = make_view(T, H * D, rng, -2, 2), k = make_view(S, H * D, rng, -2, 2),
                 v = make_view(S, H * D, rng), o = make_view(T, H * D, rng);
            b.attention(q.t, k.t, v.t, H, o.t);
            return Result{*o.buf, mags(o, [](int64_t, int64_t) { return 1.0; })};  // |v| <= 1
          }};
}

// Fills a cos_sin table [P, D/2, 2] for RoPE with base 10000.
Tensor rope_table(int64_t P, int64_t D) {
  Tensor cs = Tensor::empty({P, D / 2, 2});
  for (int64_t p = 0; p < P; ++p)
    for (int64_t i = 0; i < D / 2; ++i) {
      const double a = p * std::pow(10000.0, -2.0 * i / D);
      cs.f32()[(p * D / 2 + i) * 2] = static_cast<float>(std::cos(a));
      cs.f32()[(p * D / 2 + i) * 2 + 1] = static_cast<float>(std::sin(a));
    }
  return cs;
}

std::vector<Case> all_cases() {
  std::vector<Case> cases;
  // Decode (matrix-vector path, M <= 4) and packed path with M, N and K tails.
  for (auto [M, K, N] : std::vector<std::array<int64_t, 3>>{{1, 37, 53},
                                                            {3, 67, 29},
                                                            {4, 1, 5},
                                                            {2, 2000, 19},
                                                            {5, 129, 77},
                                                            {33, 100, 61},
                                                            {70, 257, 45},
                                                            {37, 1999, 131}})
    cases.push_back(matmul_case(M, K, N));
  // Decode (T=1), prefill (T=S), cached prefix (T<S); D above 8 vectors takes two groups.
  for (auto [T, S, H, D] : std::vector<std::array<int64_t, 4>>{{1, 1, 2, 8},
                                                               {1, 37, 3, 24},
                                                               {7, 7, 2, 20},
                                                               {13, 29, 3, 40},
                                                               {17, 17, 4, 16},
                                                               {5, 9, 1, 136}})
    cases.push_back(attention_case(T, S, static_cast<int>(H), D));

  for (bool in_place : {false, true}) {
    const std::string tag = in_place ? " in place" : "";
    cases.push_back({"rmsnorm" + tag, 1e-6, 0.0, [=](Backend& b) {
                       std::mt19937 rng(11);
                       View x = make_view(5, 1001, rng, -3, 3), w = make_view(1, 1001, rng);
                       View y = in_place ? x : make_view(5, 1001, rng);
                       b.rmsnorm(x.t, w.t.reshape({1001}), 1e-6f, y.t);
                       return Result{*y.buf, {}};
                     }});
    cases.push_back({"add" + tag, 0.0, 0.0, [=](Backend& b) {
                       std::mt19937 rng(12);
                       View a = make_view(7, 45, rng), c = make_view(7, 45, rng);
                       View y = in_place ? a : make_view(7, 45, rng);
                       b.add(a.t, c.t, y.t);
                       return Result{*y.buf, {}};
                     }});
    cases.push_back({"log_softmax" + tag, 1e-6, 1e-5, [=](Backend& b) {
                       std::mt19937 rng(13);
                       View x = make_view(3, 1001, rng, -20, 5);
                       View y = in_place ? x : make_view(3, 1001, rng);
                       b.log_softmax(x.t, y.t);
                       return Result{*y.buf, {}};
                     }});
  }
  cases.push_back({"log_softmax all negative, 7 wide", 1e-6, 1e-5, [](Backend& b) {
                     std::mt19937 rng(14);
                     View x = make_view(4, 7, rng, -900, -800), y = make_view(4, 7, rng);
                     b.log_softmax(x.t, y.t);
                     return Result{*y.buf, {}};
                   }});
  cases.push_back({"add_bias", 0.0, 0.0, [](Backend& b) {
                     std::mt19937 rng(15);
                     View x = make_view(9, 33, rng), bias = make_view(1, 33, rng);
                     b.add_bias(x.t, bias.t.reshape({33}));
                     return Result{*x.buf, {}};
                   }});
  cases.push_back({"rope", 1e-6, 0.0, [](Backend& b) {
                     std::mt19937 rng(16);
                     const int64_t H = 3, D = 18;  // 9 pairs per head: tails in every vector
                     View x = make_view(5, H * D, rng, -2, 2);
                     const std::vector<float> in(*x.buf);
                     const std::vector<int32_t> pos{0, 3, 7, 2, 11};
                     b.rope(x.t, rope_table(12, D), pos, static_cast<int>(D));
                     // Error of a·c - b·s is a rounding of |a| + |b| (|c|, |s| <= 1).
                     const float* base = x.buf->data();
                     auto mag = mags(x, [&](int64_t r, int64_t col) {
                       const size_t i = x.t.row(r) + (col & ~int64_t{1}) - base;
                       return std::fabs(in[i]) + std::fabs(in[i + 1]);
                     });
                     return Result{*x.buf, mag};
                   }});
  cases.push_back({"swiglu", 2e-6, 1e-30, [](Backend& b) {
                     std::mt19937 rng(17);
                     View fc = make_view(6, 2 * 37, rng, -12, 12), out = make_view(6, 37, rng);
                     fc.t.row(0)[0] = -100.f;  // exp overflow in the SiLU denominator
                     fc.t.row(1)[1] = 100.f;
                     b.swiglu(fc.t, out.t);
                     return Result{*out.buf, {}};
                   }});
  cases.push_back({"concat_cols", 0.0, 0.0, [](Backend& b) {
                     std::mt19937 rng(18);
                     View a = make_view(5, 13, rng), c = make_view(5, 22, rng),
                          out = make_view(5, 35, rng);
                     b.concat_cols(a.t, c.t, out.t);
                     return Result{*out.buf, {}};
                   }});
  cases.push_back({"embedding", 0.0, 0.0, [](Backend& b) {
                     std::mt19937 rng(19);
                     View table = make_view(50, 37, rng), out = make_view(5, 37, rng);
                     const std::vector<int32_t> ids{3, 0, 49, 7, 7};
                     b.embedding(table.t, ids, 1.7f, out.t);
                     return Result{*out.buf, {}};
                   }});
  cases.push_back({"copy", 0.0, 0.0, [](Backend& b) {
                     std::mt19937 rng(20);
                     View src = make_view(9, 31, rng), dst = make_view(9, 31, rng);
                     b.copy(src.t, dst.t);
                     return Result{*dst.buf, {}};
                   }});
  for (bool strided : {false, true}) {
    const std::string tag = strided ? " (row view)" : "";
    const int64_t pad = strided ? 3 : 0, rows = strided ? 7 : 1, cols = strided ? 45 : 1001;
    cases.push_back({"fill" + tag, 0.0, 0.0, [=](Backend& b) {
                       std::mt19937 rng(22);
                       View x = make_view(rows, cols, rng, -1, 1, pad);
                       b.fill(x.t, 0.25f);
                       return Result{*x.buf, {}};
                     }});
    cases.push_back({"scale" + tag, 0.0, 0.0, [=](Backend& b) {
                       std::mt19937 rng(23);
                       View x = make_view(rows, cols, rng, -1, 1, pad);
                       b.scale(x.t, -0.7f);
                       return Result{*x.buf, {}};
                     }});
    cases.push_back({"sum_squares" + tag, 0.0, 0.0, [=](Backend& b) {
                       std::mt19937 rng(24);
                       View x = make_view(rows, cols, rng, -3, 3, pad);
                       const double s = b.sum_squares(x.t, 0.125);  // continues a running sum
                       const float hi = static_cast<float>(s);
                       return Result{{hi, static_cast<float>(s - hi)}, {}};
                     }});
    cases.push_back({"count_non_finite" + tag, 0.0, 0.0, [=](Backend& b) {
                       std::mt19937 rng(25);
                       View x = make_view(rows, cols, rng, -1, 1, pad);
                       int64_t first = -2;
                       const int64_t none = b.count_non_finite(x.t, &first);
                       const int64_t first_none = first;
                       x.t.row(rows - 1)[cols - 2] = INFINITY;
                       x.t.row(rows - 1)[cols - 1] = NAN;
                       if (strided) x.buf->back() = NAN;  // padding: not counted
                       const int64_t two = b.count_non_finite(x.t, &first);
                       return Result{{float(none), float(first_none), float(two), float(first)}, {}};
                     }});
  }
  for (bool decay : {false, true})
    cases.push_back({std::string("adamw_step") + (decay ? " with decay" : ""), 0.0, 0.0,
                     [=](Backend& b) {
                       std::mt19937 rng(26);
                       const int64_t n = 1001;
                       View w = make_view(1, n, rng, -1, 1, 0), g = make_view(1, n, rng, -1, 1, 0),
                            m = make_view(1, n, rng, -0.1f, 0.1f, 0),
                            v = make_view(1, n, rng, 0, 0.01f, 0);
                       AdamWStep p;
                       p.step_size = 1e-3f / 0.19f;
                       p.sqrt_bc2 = std::sqrt(0.0975f);
                       p.decay = decay;
                       p.keep = 0.9999f;
                       for (int step = 0; step < 3; ++step) b.adamw_step(w.t, g.t, m.t, v.t, p);
                       Result r{*w.buf, {}};
                       r.out.insert(r.out.end(), m.buf->begin(), m.buf->end());
                       r.out.insert(r.out.end(), v.buf->begin(), v.buf->end());
                       return r;
                     }});
  cases.push_back({"download", 0.0, 0.0, [](Backend& b) {
                     std::mt19937 rng(21);
                     View src = make_view(6, 29, rng);
                     std::vector<float> host(6 * 29);
                     b.download(src.t, host.data());
                     return Result{host, {}};
                   }});
  return cases;
}

void expect_close(const Result& got, const Result& ref, double rtol, double atol) {
  ASSERT_EQ(got.out.size(), ref.out.size());
  int bad = 0;
  for (size_t i = 0; i < ref.out.size() && bad < 5; ++i) {
    const double mag = ref.mag.empty() ? std::fabs(ref.out[i]) : ref.mag[i];
    const double err = std::fabs(static_cast<double>(got.out[i]) - ref.out[i]);
    if (!(err <= rtol * mag + atol) && !(got.out[i] == ref.out[i])) {
      ADD_FAILURE() << "element " << i << ": got " << got.out[i] << ", reference " << ref.out[i]
                    << " (error " << err << " > " << rtol * mag + atol << ")";
      ++bad;
    }
  }
}

TEST(Ops, FastBackendMatchesReference) {
  auto ref = make_ref_backend();
  ThreadPool pool1(1), pool2(2);
  for (const Case& c : all_cases()) {
    SCOPED_TRACE(c.name);
    const Result want = c.run(*ref);
    for (CpuIsa isa : available_cpu_isas()) {
      SCOPED_TRACE(cpu_isa_name(isa));
      CpuOptions opt;
      opt.isa = isa;
      opt.min_work_per_thread = 1;  // split even the smallest op between the threads
      auto one = make_cpu_backend(pool1, opt), two = make_cpu_backend(pool2, opt);
      const Result got1 = c.run(*one), got2 = c.run(*two);
      expect_close(got1, want, c.rtol, c.atol);
      ASSERT_EQ(got1.out.size(), got2.out.size());
      EXPECT_EQ(0, std::memcmp(got1.out.data(), got2.out.data(), got1.out.size() * sizeof(float)))
          << "1-thread and 2-thread results differ";
    }
  }
}

// copy within one tensor, rows moved up by 1 and down by 3 (DepthBatch compacting its batch
// after a call leaves): every row as it was before the move, on each backend, with the CPU's
// work split between two threads even for one row (the threads once overwrote rows the other
// had yet to read).
TEST(Ops, CopyOfOverlappingRowsReadsBeforeItWrites) {
  ThreadPool pool2(2);
  std::vector<std::unique_ptr<Backend>> backends;
  backends.push_back(make_ref_backend());
  backends.push_back(make_backend("strict", pool2));
  for (CpuIsa isa : available_cpu_isas()) {
    CpuOptions opt;
    opt.isa = isa;
    opt.min_work_per_thread = 1;
    backends.push_back(make_cpu_backend(pool2, opt));
  }
  const int64_t T = 300, N = 96;
  Tensor host = Tensor::empty({T, N});
  for (int64_t i = 0; i < T * N; ++i) host.f32()[i] = static_cast<float>(i);
  const std::vector<float> before(host.f32(), host.f32() + T * N);  // upload may share host's memory
  for (auto& be : backends) {
    SCOPED_TRACE(be->name());
    for (const auto& [from, to] : {std::pair<int64_t, int64_t>{1, 0}, {0, 3}}) {
      Tensor t = be->upload(host.clone());
      Tensor dst = t.rows(to, to + 256);
      be->copy(t.rows(from, from + 256), dst);
      std::vector<float> got(static_cast<size_t>(T * N));
      be->download(t, got.data());
      int64_t bad = 0;
      for (int64_t r = 0; r < T; ++r) {
        const int64_t want_row = r >= to && r < to + 256 ? r - to + from : r;
        for (int64_t k = 0; k < N; ++k) bad += got[r * N + k] != before[want_row * N + k];
      }
      EXPECT_EQ(bad, 0) << "rows " << from << ".. moved to " << to << "..";
    }
  }
}

TEST(Ops, DefaultCpuBackendUsesBestInstructionSet) {
  ThreadPool pool(2);
  auto b = make_backend("cpu", pool);
  EXPECT_STREQ(b->name(), "cpu");
  EXPECT_FALSE(available_cpu_isas().empty());
  EXPECT_EQ(available_cpu_isas().front(), CpuIsa::kGeneric);  // the fallback is always there
  EXPECT_THROW(make_backend("gpu", pool), Error);
}

}  // namespace
}  // namespace huginn
