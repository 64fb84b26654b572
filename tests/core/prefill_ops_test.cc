// The prefill/training paths of the fast CPU backend against the scalar reference at sizes the
// small op tests do not reach: attention forward and backward over several query blocks (T up to
// 200, with and without a cached prefix S > T, head sizes off the vector width), matmul_backward
// over M = 2..300 with tails of every tile. Every instruction set compiled in; 1 and 2 threads
// (work split as finely as possible) bit-identical. Inputs are row-strided views.
//
// Tolerance: max |fast - ref| / max |ref| <= 1e-5 per output tensor, as in ops_backward_test:
// both sides are float computations of the same formulas in different summation orders (a few
// hundred terms: ~sqrt(n)·2^-24 relative), far below a wrong mask, block edge or index (>= 1e-2).
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "huginn/thread_pool.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/ref/ref_backend.h"

namespace huginn {
namespace {

struct Buf {
  std::shared_ptr<std::vector<float>> mem;
  Tensor t;
};
Buf make(int64_t rows, int64_t cols, uint32_t seed) {
  Buf b;
  b.mem = std::make_shared<std::vector<float>>(static_cast<size_t>(rows * (cols + 3) + 2));
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> d(-1.f, 1.f);
  for (float& x : *b.mem) x = d(rng);
  b.t = Tensor::wrap(b.mem->data() + 1, {rows, cols + 3}, DType::kF32).cols(0, cols);
  return b;
}
std::vector<float> flat(const Tensor& t) {
  std::vector<float> out;
  for (int64_t r = 0; r < t.dim(0); ++r) out.insert(out.end(), t.row(r), t.row(r) + t.dim(1));
  return out;
}

// Named output tensors of one run.
using Outputs = std::vector<std::pair<std::string, std::vector<float>>>;
using Run = std::function<Outputs(Backend&)>;

void compare(const std::string& what, const Run& run) {
  RefBackend ref;
  ThreadPool one(1), two(2);
  const Outputs want = run(ref);
  for (CpuIsa isa : available_cpu_isas()) {
    CpuOptions o;
    o.isa = isa;
    o.min_work_per_thread = 1;
    auto b1 = make_cpu_backend(one, o), b2 = make_cpu_backend(two, o);
    const Outputs got1 = run(*b1), got2 = run(*b2);
    for (size_t j = 0; j < want.size(); ++j) {
      const auto& w = want[j].second;
      const auto& g = got1[j].second;
      ASSERT_EQ(w.size(), g.size());
      double max_diff = 0, max_want = 0;
      for (size_t i = 0; i < w.size(); ++i) {
        max_diff = std::max(max_diff, std::fabs(double(g[i]) - w[i]));
        max_want = std::max(max_want, std::fabs(double(w[i])));
      }
      const std::string name = what + " " + want[j].first + " on " + cpu_isa_name(isa);
      EXPECT_LE(max_diff, 1e-5 * max_want) << name;
      EXPECT_TRUE(got1[j].second == got2[j].second) << name << ": 1 and 2 threads differ";
    }
  }
}

TEST(PrefillOps, AttentionForwardAndBackward) {
  // {T, S, H, D}: one or several query blocks, partial last block, cached prefix.
  for (auto [T, S, H, D] : std::vector<std::array<int64_t, 4>>{{8, 8, 2, 16},
                                                               {9, 30, 3, 24},
                                                               {64, 64, 2, 64},
                                                               {65, 65, 2, 20},
                                                               {130, 170, 3, 40},
                                                               {200, 200, 2, 72}}) {
    const std::string what = "attention T" + std::to_string(T) + " S" + std::to_string(S) +
                             " H" + std::to_string(H) + " D" + std::to_string(D);
    compare(what, [=](Backend& be) {
      const uint32_t seed = static_cast<uint32_t>(T * 1000 + S);
      Buf q = make(T, H * D, seed), k = make(S, H * D, seed + 1), v = make(S, H * D, seed + 2);
      Buf out = make(T, H * D, seed + 3), dout = make(T, H * D, seed + 4);
      be.attention(q.t, k.t, v.t, static_cast<int>(H), out.t);
      Buf dq = make(T, H * D, seed + 5), dk = make(S, H * D, seed + 6), dv = make(S, H * D, 7);
      be.attention_backward(q.t, k.t, v.t, out.t, dout.t, static_cast<int>(H), dq.t, dk.t, dv.t);
      return Outputs{{"out", flat(out.t)}, {"dq", flat(dq.t)}, {"dk", flat(dk.t)},
                     {"dv", flat(dv.t)}};
    });
  }
}

TEST(PrefillOps, MatmulBackward) {
  for (auto [M, K, N] : std::vector<std::array<int64_t, 3>>{
           {2, 33, 17}, {5, 64, 100}, {13, 129, 31}, {37, 300, 65}, {100, 17, 290}, {300, 70, 45}}) {
    const std::string what = "matmul_backward M" + std::to_string(M) + " K" + std::to_string(K) +
                             " N" + std::to_string(N);
    compare(what, [=](Backend& be) {
      const uint32_t seed = static_cast<uint32_t>(M * 7 + K * 13 + N);
      Buf x = make(M, K, seed), w = make(N, K, seed + 1), dy = make(M, N, seed + 2);
      Buf dx = make(M, K, seed + 3), dw = make(N, K, seed + 4);  // dw accumulates onto this
      be.matmul_backward(x.t, w.t, dy.t, &dx.t, &dw.t);
      return Outputs{{"dx", flat(dx.t)}, {"dw", flat(dw.t)}};
    });
  }
}

}  // namespace
}  // namespace huginn
