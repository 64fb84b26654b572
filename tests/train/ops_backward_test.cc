// Every backward op of the fast CPU backend, for every instruction set compiled in, against the
// scalar reference (RefBackend): odd sizes, views one float into their buffer with row strides
// wider than the row, 1 and 2 threads with work split as finely as possible; 1- and 2-thread
// results must be bit-identical. Parameter-gradient outputs start non-zero (they accumulate).
//
// Tolerance, relative to the largest reference value of the op's outputs: the reference sums
// in double, the fast kernels mostly in float; a float sum of n terms errs by ~sqrt(n)·2^-24 of
// the sum of magnitudes, which for n <= 100 here is < 1e-6, so 1e-5 leaves margin while any real
// error (a wrong index, sign or missing term) is O(1).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <functional>
#include <random>
#include <string>

#include "huginn/model.h"
#include "huginn/thread_pool.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/ref/ref_backend.h"

namespace huginn {
namespace {

struct Buf {
  std::shared_ptr<std::vector<float>> mem;
  Tensor t;
};

// A [rows, cols] view one float into a random buffer, rows cols + 3 apart.
Buf make(int64_t rows, int64_t cols, uint32_t seed, float scale = 1.f) {
  Buf b;
  b.mem = std::make_shared<std::vector<float>>(static_cast<size_t>(rows * (cols + 3) + 2));
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> d(-scale, scale);
  for (float& x : *b.mem) x = d(rng);
  b.t = Tensor::wrap(b.mem->data() + 1, {rows, cols + 3}, DType::kF32).cols(0, cols);
  return b;
}
std::vector<float> flat(const Tensor& t) {
  std::vector<float> out;
  for (int64_t r = 0; r < t.dim(0); ++r) out.insert(out.end(), t.row(r), t.row(r) + t.dim(1));
  return out;
}

using Run = std::function<std::vector<float>(Backend&)>;
struct Case {
  const char* name;
  Run run;
};

std::vector<Case> cases() {
  std::vector<Case> c;
  c.push_back({"matmul", [](Backend& be) {
                 Buf x = make(13, 37, 1), w = make(19, 37, 2), dy = make(13, 19, 3);
                 Buf dx = make(13, 37, 4), dw = make(19, 37, 5);
                 be.matmul_backward(x.t, w.t, dy.t, &dx.t, &dw.t);
                 auto out = flat(dx.t), b = flat(dw.t);
                 out.insert(out.end(), b.begin(), b.end());
                 return out;
               }});
  c.push_back({"matmul_dw_only", [](Backend& be) {
                 Buf x = make(3, 70, 6), w = make(33, 70, 7), dy = make(3, 33, 8), dw = make(33, 70, 9);
                 be.matmul_backward(x.t, w.t, dy.t, nullptr, &dw.t);
                 return flat(dw.t);
               }});
  c.push_back({"rmsnorm", [](Backend& be) {
                 Buf x = make(7, 45, 10, 2.f), w = make(1, 45, 11), dy = make(7, 45, 12);
                 Buf dw = make(1, 45, 13);
                 Tensor wv = w.t.clone().reshape({45}), dwv = dw.t.clone().reshape({45});
                 be.rmsnorm_backward(x.t, wv, 1e-6f, dy.t, dy.t, dwv);  // dx aliases dy
                 auto out = flat(dy.t);
                 out.insert(out.end(), dwv.f32(), dwv.f32() + 45);
                 return out;
               }});
  c.push_back({"add_bias", [](Backend& be) {
                 Buf dy = make(9, 131, 14);
                 Tensor db = make(1, 131, 15).t.clone().reshape({131});
                 be.add_bias_backward(dy.t, db);
                 return std::vector<float>(db.f32(), db.f32() + 131);
               }});
  c.push_back({"rope", [](Backend& be) {
                 Buf dx = make(5, 36, 16);
                 const Tensor cs = rope_table(32, 12, 50000.0);
                 const std::vector<int32_t> pos = {0, 31, 7, 8, 3};
                 be.rope_backward(dx.t, cs, pos, 12);
                 return flat(dx.t);
               }});
  c.push_back({"attention", [](Backend& be) {
                 const int64_t T = 7, S = 11, H = 3, D = 10;
                 Buf q = make(T, H * D, 17), k = make(S, H * D, 18), v = make(S, H * D, 19);
                 Buf dout = make(T, H * D, 20), out = make(T, H * D, 21);
                 RefBackend ref;
                 ref.attention(q.t, k.t, v.t, H, out.t);
                 Buf dq = make(T, H * D, 22), dk = make(S, H * D, 23), dv = make(S, H * D, 24);
                 be.attention_backward(q.t, k.t, v.t, out.t, dout.t, H, dq.t, dk.t, dv.t);
                 auto r = flat(dq.t), a = flat(dk.t), b = flat(dv.t);
                 r.insert(r.end(), a.begin(), a.end());
                 r.insert(r.end(), b.begin(), b.end());
                 return r;
               }});
  c.push_back({"swiglu", [](Backend& be) {
                 Buf fc = make(6, 2 * 29, 25, 4.f), dout = make(6, 29, 26), dfc = make(6, 58, 27);
                 be.swiglu_backward(fc.t, dout.t, dfc.t);
                 return flat(dfc.t);
               }});
  c.push_back({"concat", [](Backend& be) {
                 Buf dout = make(5, 30, 28), da = make(5, 13, 29), db = make(5, 17, 30);
                 be.concat_cols_backward(dout.t, da.t, db.t);
                 auto r = flat(da.t), b = flat(db.t);
                 r.insert(r.end(), b.begin(), b.end());
                 return r;
               }});
  c.push_back({"embedding", [](Backend& be) {
                 Buf dout = make(6, 71, 31), table = make(9, 71, 32);
                 const std::vector<int32_t> ids = {4, 0, 4, 8, 4, 2};
                 be.embedding_backward(dout.t, ids, 2.5f, table.t);
                 return flat(table.t);
               }});
  c.push_back({"cross_entropy", [](Backend& be) {
                 Buf logits = make(6, 301, 33, 5.f), dl = make(6, 301, 34);
                 const std::vector<int32_t> labels = {3, -100, 300, 0, 17, 3};
                 const float loss = be.cross_entropy(logits.t, labels, 0.7f, &dl.t);
                 auto r = flat(dl.t);
                 r.push_back(loss);
                 r.push_back(be.cross_entropy(logits.t, labels, 1.f, nullptr));
                 be.cross_entropy(logits.t, labels, 0.7f, &logits.t);  // in place
                 auto in_place = flat(logits.t);
                 r.insert(r.end(), in_place.begin(), in_place.end());
                 return r;
               }});
  return c;
}

class FastBackward : public ::testing::TestWithParam<CpuIsa> {};

TEST_P(FastBackward, MatchesReferenceAndThreadCount) {
  RefBackend ref;
  ThreadPool one(1), two(2);
  CpuOptions o;
  o.isa = GetParam();
  o.min_work_per_thread = 1;
  auto b1 = make_cpu_backend(one, o), b2 = make_cpu_backend(two, o);
  for (const Case& c : cases()) {
    const auto want = c.run(ref), got1 = c.run(*b1), got2 = c.run(*b2);
    ASSERT_EQ(want.size(), got1.size()) << c.name;
    double max_diff = 0, max_want = 0;
    for (size_t i = 0; i < want.size(); ++i) {
      max_diff = std::max(max_diff, std::fabs(double(got1[i]) - want[i]));
      max_want = std::max(max_want, std::fabs(double(want[i])));
    }
    EXPECT_LE(max_diff / max_want, 1e-5) << c.name << " on " << cpu_isa_name(o.isa);
    EXPECT_EQ(got1, got2) << c.name << ": 1 and 2 threads differ on " << cpu_isa_name(o.isa);
  }
}

// Which set's GEMM ran cannot be seen in the results (every set computes the same FMA chains),
// so these read the per-set call counters: `run` must call the GEMM of `want` and of no other set.
void expect_gemms_only_on(CpuIsa want, const char* what, const std::function<void()>& run) {
  std::vector<uint64_t> before;
  for (CpuIsa isa : available_cpu_isas()) before.push_back(cpu_gemm_calls(isa));
  run();
  for (size_t i = 0; i < before.size(); ++i) {
    const CpuIsa isa = available_cpu_isas()[i];
    const uint64_t calls = cpu_gemm_calls(isa) - before[i];
    if (isa == want)
      EXPECT_GT(calls, 0u) << what << ": no GEMM call on the backend's set " << cpu_isa_name(isa);
    else
      EXPECT_EQ(calls, 0u) << what << ": " << calls << " GEMM call(s) on " << cpu_isa_name(isa)
                           << ", the backend's set is " << cpu_isa_name(want);
  }
}

bool multiplies_matrices(const Case& c) {
  const std::string n = c.name;
  return n.rfind("matmul", 0) == 0 || n == "attention";
}

// Every backward op that multiplies matrices (matmul_backward, attention_backward) runs on the
// backend's own set, not on the best one this CPU has.
TEST_P(FastBackward, GemmsRunOnTheBackendsInstructionSet) {
  ThreadPool two(2);
  CpuOptions o;
  o.isa = GetParam();
  o.min_work_per_thread = 1;  // the attention heads run on the pool's threads
  auto be = make_cpu_backend(two, o);
  for (const Case& c : cases())
    if (multiplies_matrices(c)) expect_gemms_only_on(o.isa, c.name, [&] { c.run(*be); });
}

INSTANTIATE_TEST_SUITE_P(Isa, FastBackward, ::testing::ValuesIn(available_cpu_isas()),
                         [](const auto& info) { return std::string(cpu_isa_name(info.param)); });

// HUGINN_CPU_ISA reaches the default backend's forward GEMMs (decode-sized and prefill-sized,
// f32 and bf16 weights) and its backward ones, the attention backward included. Runs with the
// variable set or not (make test runs it unset; the ISA checks run ctest with =avx2, =generic).
TEST(ForcedIsa, HuginnCpuIsaReachesEveryGemm) {
  const CpuIsa want = cpu_isa_from_env(std::getenv("HUGINN_CPU_ISA"), available_cpu_isas());
  ASSERT_EQ(best_cpu_isa(), want);
  ThreadPool two(2);
  auto be = make_backend("cpu", two);
  for (int64_t m : {1, 37}) {
    Buf x = make(m, 64, 40), y = make(m, 24, 41);
    const Tensor w = make(24, 64, 42).t.clone();
    expect_gemms_only_on(want, "matmul f32", [&] { be->matmul(x.t, w, y.t); });
    const Tensor wb = convert_weight(w, DType::kBF16);
    expect_gemms_only_on(want, "matmul bf16", [&] { be->matmul(x.t, wb, y.t); });
  }
  for (const Case& c : cases())
    if (multiplies_matrices(c)) expect_gemms_only_on(want, c.name, [&] { c.run(*be); });
}

TEST(ForcedIsa, UnknownOrUnavailableSetIsAnErrorNamingTheVariable) {
  const std::vector<CpuIsa> all = available_cpu_isas();
  EXPECT_EQ(cpu_isa_from_env(nullptr, all), all.back());
  EXPECT_EQ(cpu_isa_from_env("", all), all.back());
  for (CpuIsa isa : all) EXPECT_EQ(cpu_isa_from_env(cpu_isa_name(isa), all), isa);
  auto message = [](const char* value, const std::vector<CpuIsa>& available) {
    try {
      cpu_isa_from_env(value, available);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("accepted");
  };
  for (const char* bad : {"avx1024", "AVX2", " avx2", "sse"}) {
    const std::string m = message(bad, all);
    EXPECT_NE(m.find("HUGINN_CPU_ISA"), std::string::npos) << bad << ": " << m;
    EXPECT_NE(m.find("expected generic, avx2 or avx512"), std::string::npos) << m;
  }
  // A known set this build or CPU lacks (as avx512 on an AVX2-only machine).
  const std::string m = message("avx512", {CpuIsa::kGeneric, CpuIsa::kAvx2});
  EXPECT_NE(m.find("HUGINN_CPU_ISA=avx512"), std::string::npos) << m;
  EXPECT_NE(m.find("not compiled into this build or not run by this CPU"), std::string::npos) << m;
}

}  // namespace
}  // namespace huginn
