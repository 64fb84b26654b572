// The GEMM of the CPU backend (gemm.cc, gemm_packed.h) for every instruction set in the build and
// every weight format (F32, BF16, Q8, Q4):
// - exact: every output equals, bit for bit, the scalar chain acc = fma(x[m][k], w[n][k], acc)
//   over k = 0..K-1 from +0, with w widened / dequantized to F32 (the contract in kernels.h);
// - row-exact, checked directly: row m of a call on M = 1..70 rows of a strided view has the
//   bits of a call on that row alone (M <= max(2 MR, 16) runs the stream loop order in row
//   blocks, above it the blocked one: both are crossed);
// - the same under the machine's blocking and under tiny blocks (kc 64, mc = one tile, nc = one
//   micro-panel) that make every loop of the blocked GEMM run several times on small shapes,
//   and with 1 and 2 threads (work split as finely as possible);
// - and right, not only consistent: within 1e-5·Σ|x_k w_k| of a double-precision sum (~4σ of
//   the F32 chain's rounding for K <= 2000, far below its worst case at K = 4100);
// - padding around strided outputs untouched; gemm_f32 with either operand transposed, = and +=.
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

namespace huginn {
namespace {

struct Isa {
  CpuIsa isa;
  cpu::GemmF32Fn gemm;
};

std::vector<Isa> isas() {
  std::vector<Isa> out;
  for (CpuIsa isa : available_cpu_isas()) {
    cpu::GemmF32Fn g = &cpu::gemm_f32<cpu::VecGeneric>;
#ifdef HUGINN_HAVE_AVX2
    if (isa == CpuIsa::kAvx2) g = &cpu::gemm_f32<cpu::VecAvx2>;
#endif
#ifdef HUGINN_HAVE_AVX512
    if (isa == CpuIsa::kAvx512) g = &cpu::gemm_f32<cpu::VecAvx512>;
#endif
    out.push_back({isa, g});
  }
  return out;
}

// A [rows, cols] view one float into a buffer whose rows are cols + pad apart, all of it random
// (the padding must come back unchanged).
struct View {
  std::vector<float> buf;
  Tensor t;
  View(int64_t rows, int64_t cols, int64_t pad, std::mt19937& rng) {
    buf.resize(static_cast<size_t>(rows * (cols + pad) + 2));
    std::normal_distribution<float> d(0.0f, 1.0f);
    for (float& v : buf) v = d(rng);
    t = Tensor::wrap(buf.data() + 1, {rows, cols + pad}, DType::kF32).cols(0, cols);
  }
};

// The contract: one FMA chain per output, k in order, from +0.
std::vector<float> chain(const Tensor& x, const Tensor& wf) {
  const int64_t M = x.dim(0), N = wf.dim(0), K = x.dim(1);
  std::vector<float> y(static_cast<size_t>(M * N));
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      float acc = 0.0f;
      for (int64_t k = 0; k < K; ++k) acc = std::fma(x.row(m)[k], wf.row(n)[k], acc);
      y[m * N + n] = acc;
    }
  return y;
}

// Every output of y (a view) equals want bit for bit; the padding equals `pad_before`.
void expect_exact(const View& y, const std::vector<float>& want, const std::vector<float>& pad_before,
                  const std::string& what) {
  int bad = 0;
  const int64_t M = y.t.dim(0), N = y.t.dim(1);
  for (int64_t m = 0; m < M && bad < 3; ++m)
    for (int64_t n = 0; n < N && bad < 3; ++n)
      if (std::memcmp(&y.t.row(m)[n], &want[m * N + n], 4) != 0)
        ADD_FAILURE() << what << ": y[" << m << "][" << n << "] = " << y.t.row(m)[n]
                      << ", the FMA chain gives " << want[m * N + n] << (bad++, "");
  // Padding: every buffer element outside the view.
  std::vector<char> inside(y.buf.size(), 0);
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) inside[&y.t.row(m)[n] - y.buf.data()] = 1;
  for (size_t i = 0; i < y.buf.size() && bad < 3; ++i)
    if (!inside[i] && std::memcmp(&y.buf[i], &pad_before[i], 4) != 0)
      ADD_FAILURE() << what << ": padding at " << i << " written" << (bad++, "");
  EXPECT_EQ(bad, 0) << what;
}

Tensor weights(int64_t N, int64_t K, DType dt, std::mt19937& rng) {
  View w(N, K, 0, rng);
  Tensor f = Tensor::empty({N, K});
  f.copy_from(w.t);
  return convert_weight(f, dt);
}

// Blockings under which every shape is checked: this machine's, and tiny blocks.
std::vector<std::pair<std::string, bool>> blockings() { return {{"machine", false}, {"tiny", true}}; }

struct TinyBlocks {
  explicit TinyBlocks(bool on) {
    if (!on) return;
    const cpu::GemmBlocking b{64, 1, 1};  // mc, nc round up to one tile / micro-panel
    cpu::set_gemm_blocking_override(&b);
  }
  ~TinyBlocks() { cpu::set_gemm_blocking_override(nullptr); }
};

// y = x · wᵀ for every ISA, at 1 and 2 threads, for one format and blocking, against the chain.
void check_matmul(DType dt, int64_t M, int64_t K, int64_t N, bool tiny, std::mt19937& rng) {
  const std::string shape = std::string(dtype_name(dt)) + " M" + std::to_string(M) + " K" +
                            std::to_string(K) + " N" + std::to_string(N) +
                            (tiny ? " tiny blocks" : "");
  const Tensor w = weights(N, K, dt, rng);
  const Tensor wf = convert_weight(w, DType::kF32);
  View x(M, K, 3, rng);
  const std::vector<float> want = chain(x.t, wf);
  TinyBlocks blocks(tiny);
  for (const Isa& isa : isas())
    for (int threads : {1, 2}) {
      ThreadPool pool(threads);
      CpuOptions o;
      o.isa = isa.isa;
      o.min_work_per_thread = 1;
      auto be = make_cpu_backend(pool, o);
      View y(M, N, 5, rng);
      const std::vector<float> pad = y.buf;
      be->matmul(x.t, w, y.t);
      expect_exact(y, want, pad,
                   std::string(cpu_isa_name(isa.isa)) + " " + shape + " threads " +
                       std::to_string(threads));
    }
}

TEST(Gemm, EveryOutputIsTheFmaChainForEveryRowCount) {
  std::mt19937 rng(11);
  for (DType dt : {DType::kF32, DType::kBF16, DType::kQ8, DType::kQ4})
    for (auto [K, N] : std::vector<std::pair<int64_t, int64_t>>{{64, 33}, {96, 70}, {160, 17}}) {
      if (!is_quantized(dt)) K += 5;  // odd K where the format allows it
      for (int64_t M = 1; M <= 70; ++M) check_matmul(dt, M, K, N, M % 2 == 0, rng);
    }
}

TEST(Gemm, LargerShapesAcrossTheCacheBlocks) {
  std::mt19937 rng(12);
  struct S {
    int64_t M, K, N;
  };
  for (DType dt : {DType::kF32, DType::kBF16, DType::kQ8, DType::kQ4})
    for (const S& s : {S{200, 704, 65}, S{7, 4128, 20}, S{9, 64, 2100}, S{300, 512, 100},
                       S{13, 1056, 300}})
      for (const auto& [name, tiny] : blockings()) check_matmul(dt, s.M, s.K, s.N, tiny, rng);
}

TEST(Gemm, RowAloneHasTheBitsOfTheBatch) {
  std::mt19937 rng(13);
  for (const Isa& isa : isas())
    for (DType dt : {DType::kF32, DType::kBF16, DType::kQ8, DType::kQ4}) {
      ThreadPool pool(2);
      CpuOptions o;
      o.isa = isa.isa;
      o.min_work_per_thread = 1;
      auto be = make_cpu_backend(pool, o);
      const int64_t K = is_quantized(dt) ? 224 : 229, N = 97;
      const Tensor w = weights(N, K, dt, rng);
      for (int64_t M = 1; M <= 70; ++M) {
        View x(M, K, 2, rng), y(M, N, 3, rng), y1(1, N, 0, rng);
        be->matmul(x.t, w, y.t);
        for (int64_t m = 0; m < M; ++m) {
          be->matmul(x.t.rows(m, m + 1), w, y1.t);
          ASSERT_EQ(std::memcmp(y.t.row(m), y1.t.row(0), N * 4), 0)
              << cpu_isa_name(isa.isa) << " " << dtype_name(dt) << ": row " << m << " of " << M
              << " differs from the row alone";
        }
      }
    }
}

TEST(Gemm, MatchesDoublePrecision) {
  std::mt19937 rng(14);
  for (const Isa& isa : isas())
    for (auto [M, K, N] : std::vector<std::array<int64_t, 3>>{{1, 2000, 50}, {37, 513, 47},
                                                               {5, 4100, 20}}) {
      ThreadPool pool(1);
      CpuOptions o;
      o.isa = isa.isa;
      auto be = make_cpu_backend(pool, o);
      const Tensor w = weights(N, K, DType::kF32, rng);
      View x(M, K, 1, rng), y(M, N, 1, rng);
      be->matmul(x.t, w, y.t);
      for (int64_t m = 0; m < M; ++m)
        for (int64_t n = 0; n < N; ++n) {
          double acc = 0, mag = 0;
          for (int64_t k = 0; k < K; ++k) {
            const double p = double(x.t.row(m)[k]) * w.row(n)[k];
            acc += p, mag += std::fabs(p);
          }
          ASSERT_NEAR(y.t.row(m)[n], acc, 1e-5 * mag)
              << cpu_isa_name(isa.isa) << " M" << M << " K" << K << " [" << m << ", " << n << "]";
        }
    }
}

// gemm_f32 with A and B in either layout (the backward's transposed operands), = and +=.
TEST(Gemm, StridedOperandsAndAccumulate) {
  std::mt19937 rng(15);
  for (const Isa& isa : isas())
    for (const auto& [name, tiny] : blockings())
      // M 16 and 23: the stream loop order's row blocks (up to max(2 MR, 16) rows) with +=.
      for (auto [M, K, N] : std::vector<std::array<int64_t, 3>>{
               {3, 70, 40}, {16, 71, 37}, {23, 66, 70}, {45, 130, 33}}) {
        TinyBlocks blocks(tiny);
        ThreadPool pool(2);
        const cpu::Ctx c{pool, 1};
        View a(M, K, 1, rng), at(K, M, 2, rng), b(N, K, 3, rng), bt(K, N, 1, rng);
        for (int64_t i = 0; i < M; ++i)
          for (int64_t k = 0; k < K; ++k) at.t.row(k)[i] = a.t.row(i)[k];
        for (int64_t n = 0; n < N; ++n)
          for (int64_t k = 0; k < K; ++k) bt.t.row(k)[n] = b.t.row(n)[k];
        for (bool acc : {false, true})
          for (int layout = 0; layout < 4; ++layout) {
            const bool a_cols = layout & 1, b_rows_n = layout & 2;
            View y(M, N, 2, rng);
            std::vector<float> want(static_cast<size_t>(M * N));
            for (int64_t m = 0; m < M; ++m)
              for (int64_t n = 0; n < N; ++n) {
                float s = acc ? y.t.row(m)[n] : 0.0f;
                for (int64_t k = 0; k < K; ++k) s = std::fma(a.t.row(m)[k], b.t.row(n)[k], s);
                want[m * N + n] = s;
              }
            const std::vector<float> pad = y.buf;
            const float* ap = a_cols ? at.t.row(0) : a.t.row(0);
            const int64_t ai = a_cols ? 1 : a.t.stride(0), ak = a_cols ? at.t.stride(0) : 1;
            const float* bp = b_rows_n ? bt.t.row(0) : b.t.row(0);
            const int64_t bk = b_rows_n ? bt.t.stride(0) : 1, bn = b_rows_n ? 1 : b.t.stride(0);
            isa.gemm(c, ap, ai, ak, bp, bk, bn, y.t.row(0), y.t.stride(0), M, N, K, acc);
            expect_exact(y, want, pad,
                         std::string(cpu_isa_name(isa.isa)) + " gemm_f32 layout " +
                             std::to_string(layout) + (acc ? " +=" : " =") + " " + name);
          }
      }
}

}  // namespace
}  // namespace huginn
