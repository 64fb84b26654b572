// The fast CPU backend: each op is a SIMD kernel (kernels.h) threaded through the given pool.
// This file is the one place that dispatches the instruction set.
#include "kernels/cpu/cpu_backend.h"

#include <cstdlib>
#include <cstring>
#include <string>

#include "huginn/thread_pool.h"
#include "kernels/cpu/backward_kernels.h"
#include "kernels/cpu/kernels.h"
#include "kernels/cpu/matmul_lowp.h"
#include "kernels/cpu/simd.h"

namespace huginn {
namespace cpu {

float* scratch(int slot, int64_t n) {
  struct Buf {
    float* p = nullptr;
    int64_t cap = 0;
    ~Buf() { std::free(p); }
  };
  constexpr int kSlots = 4;
  thread_local Buf bufs[kSlots];
  HUGINN_ASSERT(slot >= 0 && slot < kSlots, "scratch: bad slot");
  Buf& b = bufs[slot];
  if (b.cap < n) {
    const int64_t cap = std::max(n, b.cap + b.cap / 2);
    std::free(b.p);
    b.p = static_cast<float*>(std::aligned_alloc(64, (cap * sizeof(float) + 63) / 64 * 64));
    b.cap = b.p ? cap : 0;
    if (!b.p) throw Error("out of memory: CPU backend scratch of " + std::to_string(n) + " floats");
  }
  return b.p;
}

namespace {

// One instruction set's implementation of every op.
struct Kernels {
  decltype(&copy<VecGeneric>) copy;
  decltype(&embedding<VecGeneric>) embedding;
  decltype(&matmul<VecGeneric>) matmul;
  decltype(&matmul_lowp<VecGeneric>) matmul_lowp;  // BF16 / Q8 weights
  decltype(&rmsnorm<VecGeneric>) rmsnorm;
  decltype(&add<VecGeneric>) add;
  decltype(&add_bias<VecGeneric>) add_bias;
  decltype(&rope<VecGeneric>) rope;
  decltype(&attention<VecGeneric>) attention;
  decltype(&swiglu<VecGeneric>) swiglu;
  decltype(&concat_cols<VecGeneric>) concat_cols;
  decltype(&log_softmax<VecGeneric>) log_softmax;
};

template <class V>
constexpr Kernels kernels_for() {
  return {&copy<V>,    &embedding<V>,   &matmul<V>,      &matmul_lowp<V>,
          &rmsnorm<V>, &add<V>,         &add_bias<V>,    &rope<V>,
          &attention<V>, &swiglu<V>,    &concat_cols<V>, &log_softmax<V>};
}

Kernels kernels_for(CpuIsa isa) {
  switch (isa) {
#ifdef HUGINN_HAVE_AVX512
    case CpuIsa::kAvx512: return kernels_for<VecAvx512>();
#endif
#ifdef HUGINN_HAVE_AVX2
    case CpuIsa::kAvx2: return kernels_for<VecAvx2>();
#endif
    case CpuIsa::kGeneric: return kernels_for<VecGeneric>();
    default: break;
  }
  throw Error(std::string("CPU backend: instruction set ") + cpu_isa_name(isa) +
              " is not available in this build or on this CPU");
}

bool cpu_runs(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::kAvx512:
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq");
    case CpuIsa::kAvx2: return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    default: return true;
  }
}

class CpuBackend : public Backend {
 public:
  CpuBackend(ThreadPool& pool, const CpuOptions& o)
      : k_(kernels_for(o.isa)), ctx_{pool, std::max<int64_t>(1, o.min_work_per_thread)} {}
  const char* name() const override { return "cpu"; }

  Tensor alloc(std::initializer_list<int64_t> shape, DType dtype) override {
    return Tensor::empty(shape, dtype);
  }
  Tensor upload(const Tensor& host) override { return host; }
  void download(const Tensor& t, float* host) override {
    if (t.is_contiguous()) {
      std::memcpy(host, t.f32(), t.numel() * sizeof(float));
      return;
    }
    HUGINN_ASSERT(t.ndim() == 2, "download of a strided tensor must be 2-D");
    Tensor dst = Tensor::wrap(host, {t.dim(0), t.dim(1)}, DType::kF32);
    k_.copy(ctx_, t, dst);
  }
  void copy(const Tensor& src, Tensor& dst) override { k_.copy(ctx_, src, dst); }

  void embedding(const Tensor& table, std::span<const int32_t> ids, float scale,
                 Tensor& out) override {
    k_.embedding(ctx_, table, ids, scale, out);
  }
  // The one dtype dispatch of the weights: F32 to the GEMM, BF16 / Q8 to matmul_lowp.cc.
  void matmul(const Tensor& x, const Tensor& w, Tensor& y) override {
    if (w.dtype() == DType::kF32) {
      k_.matmul(ctx_, x, w, y);
    } else {
      k_.matmul_lowp(ctx_, x, w, y, k_.matmul);
    }
  }
  void rmsnorm(const Tensor& x, const Tensor& w, float eps, Tensor& y) override {
    k_.rmsnorm(ctx_, x, w, eps, y);
  }
  void add(const Tensor& a, const Tensor& b, Tensor& y) override { k_.add(ctx_, a, b, y); }
  void add_bias(Tensor& x, const Tensor& bias) override { k_.add_bias(ctx_, x, bias); }
  void rope(Tensor& x, const Tensor& cos_sin, std::span<const int32_t> positions,
            int head_dim) override {
    k_.rope(ctx_, x, cos_sin, positions, head_dim);
  }
  void attention(const Tensor& q, const Tensor& k, const Tensor& v, int n_heads,
                 Tensor& out) override {
    k_.attention(ctx_, q, k, v, n_heads, out);
  }
  void swiglu(const Tensor& fc, Tensor& out) override { k_.swiglu(ctx_, fc, out); }
  void concat_cols(const Tensor& a, const Tensor& b, Tensor& out) override {
    k_.concat_cols(ctx_, a, b, out);
  }
  void log_softmax(const Tensor& x, Tensor& y) override { k_.log_softmax(ctx_, x, y); }

  // Backward ops (backward_*.cc); matmul_backward runs on this instruction set's GEMM.
  void matmul_backward(const Tensor& x, const Tensor& w, const Tensor& dy, Tensor* dx,
                       Tensor* dw) override {
    cpu::matmul_backward(ctx_, k_.matmul, x, w, dy, dx, dw);
  }
  void rmsnorm_backward(const Tensor& x, const Tensor& w, float eps, const Tensor& dy, Tensor& dx,
                        Tensor& dw) override {
    cpu::rmsnorm_backward(ctx_, x, w, eps, dy, dx, dw);
  }
  void add_bias_backward(const Tensor& dy, Tensor& dbias) override {
    cpu::add_bias_backward(ctx_, dy, dbias);
  }
  void rope_backward(Tensor& dx, const Tensor& cos_sin, std::span<const int32_t> positions,
                     int head_dim) override {
    cpu::rope_backward(ctx_, dx, cos_sin, positions, head_dim);
  }
  void attention_backward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out,
                          const Tensor& dout, int n_heads, Tensor& dq, Tensor& dk,
                          Tensor& dv) override {
    cpu::attention_backward(ctx_, gemm_f32_like(k_.matmul), q, k, v, out, dout, n_heads, dq, dk,
                            dv);
  }
  void swiglu_backward(const Tensor& fc, const Tensor& dout, Tensor& dfc) override {
    cpu::swiglu_backward(ctx_, fc, dout, dfc);
  }
  void concat_cols_backward(const Tensor& dout, Tensor& da, Tensor& db) override {
    cpu::concat_cols_backward(ctx_, dout, da, db);
  }
  void embedding_backward(const Tensor& dout, std::span<const int32_t> ids, float scale,
                          Tensor& dtable) override {
    cpu::embedding_backward(ctx_, dout, ids, scale, dtable);
  }
  float cross_entropy(const Tensor& logits, std::span<const int32_t> labels, float dscale,
                      Tensor* dlogits) override {
    return cpu::cross_entropy(ctx_, logits, labels, dscale, dlogits);
  }

 private:
  Kernels k_;
  Ctx ctx_;
};

}  // namespace
}  // namespace cpu

const char* cpu_isa_name(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::kAvx512: return "avx512";
    case CpuIsa::kAvx2: return "avx2";
    default: return "generic";
  }
}

std::vector<CpuIsa> available_cpu_isas() {
  std::vector<CpuIsa> out{CpuIsa::kGeneric};
#ifdef HUGINN_HAVE_AVX2
  if (cpu::cpu_runs(CpuIsa::kAvx2)) out.push_back(CpuIsa::kAvx2);
#endif
#ifdef HUGINN_HAVE_AVX512
  if (cpu::cpu_runs(CpuIsa::kAvx512)) out.push_back(CpuIsa::kAvx512);
#endif
  return out;
}

CpuIsa best_cpu_isa() { return available_cpu_isas().back(); }

std::unique_ptr<Backend> make_cpu_backend(ThreadPool& pool, const CpuOptions& options) {
  return std::make_unique<cpu::CpuBackend>(pool, options);
}

namespace {

// HUGINN_ISA=avx512|avx2|generic forces the default backend's instruction set, so that one machine
// can run (and compare) every kernel path; unset or empty: the best this CPU runs.
CpuIsa isa_from_environment() {
  const char* env = std::getenv("HUGINN_ISA");
  if (!env || !*env) return best_cpu_isa();
  const std::string want = env;
  std::string runs;
  for (CpuIsa isa : available_cpu_isas()) {
    if (want == cpu_isa_name(isa)) return isa;
    runs += std::string(runs.empty() ? "" : ", ") + cpu_isa_name(isa);
  }
  if (want != "avx512" && want != "avx2" && want != "generic")
    throw Error("HUGINN_ISA='" + want + "': expected avx512, avx2 or generic");
  throw Error("HUGINN_ISA=" + want + ": not compiled into this build or not run by this CPU "
              "(available: " + runs + ")");
}

}  // namespace

std::unique_ptr<Backend> make_cpu_backend(ThreadPool& pool) {
  CpuOptions o;
  o.isa = isa_from_environment();
  return make_cpu_backend(pool, o);
}

}  // namespace huginn
