// The fast CPU backend: each op is a SIMD kernel (kernels.h) threaded through the given pool.
// This file is the one place that dispatches the instruction set: the kernels of every set the
// build holds are linked in (simd.h), and the best one this CPU runs is picked at run time.
#include "kernels/live_bytes.h"
#include "kernels/cpu/cpu_backend.h"

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <type_traits>

#include <cpuid.h>

#include "huginn/thread_pool.h"
#include "kernels/cpu/backward_kernels.h"
#include "kernels/cpu/kernels.h"
#include "kernels/bf16_numerics.h"

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

void* gemm_buffer(int slot, size_t bytes) {
  struct Buf {
    void* p = nullptr;
    size_t cap = 0;
    ~Buf() { std::free(p); }
  };
  thread_local Buf bufs[4];
  HUGINN_ASSERT(slot >= 0 && slot < 4, "gemm_buffer: bad slot");
  Buf& b = bufs[slot];
  if (b.cap < bytes) {
    const size_t cap = (std::max(bytes, b.cap + b.cap / 2) + 63) / 64 * 64 + 64;
    std::free(b.p);
    b.p = std::aligned_alloc(64, cap);
    b.cap = b.p ? cap : 0;
    if (!b.p) throw Error("out of memory: GEMM panel buffer of " + std::to_string(bytes) + " bytes");
  }
  return b.p;
}

// pick(std::type_identity<V>{}) for the instruction set V of the given matmul<V>.
template <class Pick>
auto for_isa_of(void (*mm)(const Ctx&, const Tensor&, const Tensor&, Tensor&), const Pick& pick) {
#ifdef HUGINN_HAVE_AVX512
  if (mm == &matmul<VecAvx512>) return pick(std::type_identity<VecAvx512>{});
#endif
#ifdef HUGINN_HAVE_AVX2
  if (mm == &matmul<VecAvx2>) return pick(std::type_identity<VecAvx2>{});
#endif
  HUGINN_ASSERT(mm == &matmul<VecGeneric>, "not one of the cpu::matmul instantiations");
  return pick(std::type_identity<VecGeneric>{});
}

GemmF32Fn gemm_f32_like(void (*mm)(const Ctx&, const Tensor&, const Tensor&, Tensor&)) {
  return for_isa_of(mm, [](auto v) -> GemmF32Fn { return &gemm_f32<typename decltype(v)::type>; });
}

namespace {

// One instruction set's implementation of every op.
struct Kernels {
  decltype(&copy<VecGeneric>) copy;
  decltype(&embedding<VecGeneric>) embedding;
  decltype(&matmul<VecGeneric>) matmul;
  decltype(&matmul_lowp<VecGeneric>) matmul_lowp;  // BF16 / Q8 / Q4 weights
  decltype(&rmsnorm<VecGeneric>) rmsnorm;
  decltype(&add<VecGeneric>) add;
  decltype(&add_bias<VecGeneric>) add_bias;
  decltype(&rope<VecGeneric>) rope;
  decltype(&attention<VecGeneric>) attention;
  decltype(&swiglu<VecGeneric>) swiglu;
  decltype(&concat_cols<VecGeneric>) concat_cols;
  decltype(&log_softmax<VecGeneric>) log_softmax;
  decltype(&gemm_info<VecGeneric>) gemm_info;
};

template <class V>
constexpr Kernels kernels_for() {
  return {&copy<V>,    &embedding<V>,   &matmul<V>,      &matmul_lowp<V>,
          &rmsnorm<V>, &add<V>,         &add_bias<V>,    &rope<V>,
          &attention<V>, &swiglu<V>,    &concat_cols<V>, &log_softmax<V>,
          &gemm_info<V>};
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

// Every feature the objects of an instruction set were compiled for (simd.h's target strings;
// __builtin_cpu_supports also checks that the OS saves the vector registers).
// F16C comes from CPUID leaf 1 (ECX bit 29): clang 14 (Debian 12's, which builds the fuzzers)
// does not know "f16c" as a __builtin_cpu_supports feature.
bool cpu_has_f16c() {
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  return __get_cpuid(1, &eax, &ebx, &ecx, &edx) && (ecx & bit_F16C) != 0;
}

bool cpu_runs(CpuIsa isa) {
  __builtin_cpu_init();
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                    cpu_has_f16c() && __builtin_cpu_supports("bmi") &&
                    __builtin_cpu_supports("bmi2") && __builtin_cpu_supports("popcnt");
  switch (isa) {
    case CpuIsa::kAvx512:
      return avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
             __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
             __builtin_cpu_supports("avx512cd");
    case CpuIsa::kAvx2: return avx2;
    default: return true;
  }
}

}  // namespace

GemmF32Fn gemm_bf16_like(void (*mm)(const Ctx&, const Tensor&, const Tensor&, Tensor&)) {
  return for_isa_of(mm, [](auto v) -> GemmF32Fn { return &gemm_bf16<typename decltype(v)::type>; });
}

GemmBf16WbFn gemm_bf16_wb_like(void (*mm)(const Ctx&, const Tensor&, const Tensor&, Tensor&)) {
  return for_isa_of(mm, [](auto v) -> GemmBf16WbFn {
    return &gemm_bf16_wb<typename decltype(v)::type>;
  });
}

namespace {
std::atomic<int> bf16_dot_override{-1};  // -1: none, else a Bf16Dot
}  // namespace

void set_bf16_dot(Bf16Dot mode) { bf16_dot_override.store(static_cast<int>(mode)); }

Bf16Dot bf16_dot_mode() {
  const int o = bf16_dot_override.load();
  if (o >= 0) return static_cast<Bf16Dot>(o);
  static const Bf16Dot env = [] {
    const char* v = std::getenv("HUGINN_BF16_DOT");
    if (!v || !*v) return Bf16Dot::kAuto;
    if (std::strcmp(v, "0") == 0) return Bf16Dot::kOff;
    if (std::strcmp(v, "1") == 0) return Bf16Dot::kOn;
    throw Error(std::string("HUGINN_BF16_DOT must be 0 or 1, got '") + v + "'");
  }();
  return env;
}

#ifdef HUGINN_HAVE_AVX512
namespace isa_avx512 {
Bf16DotChoice bf16_dot_probe();  // gemm_bf16.cc
}
#endif

Bf16DotChoice bf16_dot_choice() {
#ifdef HUGINN_HAVE_AVX512
  if (cpu_runs(CpuIsa::kAvx512)) return isa_avx512::bf16_dot_probe();
#endif
  return {};
}

namespace {

// A BF16 tensor's elements (round_bf16's weights).
const uint16_t* bf16_bits(const Tensor& w) { return static_cast<const uint16_t*>(w.raw()); }

class CpuBackend : public Backend {
 public:
  CpuBackend(ThreadPool& pool, const CpuOptions& o)
      : k_(kernels_for(o.isa)), ctx_{pool, std::max<int64_t>(1, o.min_work_per_thread)} {}
  const char* name() const override { return "cpu"; }

  Tensor alloc(std::initializer_list<int64_t> shape, DType dtype) override {
    return live_.count(Tensor::empty(shape, dtype));
  }
  Tensor upload(const Tensor& host) override { return host; }
  int64_t allocated_bytes() const override { return live_.bytes(); }
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
  Tensor convert_weight(const Tensor& w, DType to) override { return huginn::convert_weight(w, to); }

  // Every M runs the one GEMM chain (gemm.cc: each output is the FMA chain over k in order,
  // for F32, BF16, Q8 and Q4 weights), so any number of rows has the bits of one-row calls
  // (gemm_test and decode_batch_test check it).
  int64_t matmul_exact_rows() const override { return INT64_MAX; }
  int64_t attention_split_rows() const override { return cpu::kAttnBlockRows; }
  // The GEMM blocks itself from the caches found at run time (cpu_info.cc): callers need not tile.
  int64_t preferred_tile_bytes() const override { return 0; }

  void embedding(const Tensor& table, std::span<const int32_t> ids, float scale,
                 Tensor& out) override {
    k_.embedding(ctx_, table, ids, scale, out);
  }
  // The one dtype dispatch of the weights: F32 to matmul, BF16 / Q8 / Q4 to matmul_lowp (gemm.cc).
  void matmul(const Tensor& x, const Tensor& w, Tensor& y) override {
    if (w.dtype() == DType::kF32) {
      k_.matmul(ctx_, x, w, y);
    } else {
      k_.matmul_lowp(ctx_, x, w, y);
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

  void fill(Tensor& x, float value) override { cpu::fill(ctx_, x, value); }
  void scale(Tensor& x, float s) override { cpu::scale(ctx_, x, s); }
  double sum_squares(const Tensor& x, double acc) override { return cpu::sum_squares(x, acc); }
  int64_t count_non_finite(const Tensor& x, int64_t* first) override {
    return cpu::count_non_finite(x, first);
  }
  void adamw_step(Tensor& w, const Tensor& g, Tensor& m, Tensor& v, const AdamWStep& p) override {
    cpu::adamw_step(ctx_, w, g, m, v, p);
  }

  // Backward ops (backward_*.cc); matmul_backward runs on this instruction set's GEMM.
  void matmul_backward(const Tensor& x, const Tensor& w, const Tensor& dy, Tensor* dx,
                       Tensor* dw) override {
    cpu::matmul_backward(ctx_, gemm_f32_like(k_.matmul), x, w, dy, dx, dw);
  }
  // BF16 mixed precision: the same GEMM calls on this instruction set's gemm_bf16, or gemm_bf16_wb
  // on a weight round_bf16 made.
  void matmul_bf16(const Tensor& x, const Tensor& w, Tensor& y) override {
    const int64_t M = x.dim(0), K = x.dim(1), N = w.dim(0);
    HUGINN_ASSERT(w.dim(1) == K && y.dim(0) == M && y.dim(1) == N, "matmul_bf16: shapes");
    if (w.dtype() == DType::kBF16) {
      gemm_bf16_wb_like(k_.matmul)(ctx_, x.row(0), x.stride(0), 1, bf16_bits(w), 1, w.stride(0),
                                   y.row(0), y.stride(0), M, N, K, false);
      return;
    }
    HUGINN_ASSERT(w.dtype() == DType::kF32, "matmul_bf16: weights neither F32 nor BF16");
    gemm_bf16_like(k_.matmul)(ctx_, x.row(0), x.stride(0), 1, w.row(0), 1, w.stride(0), y.row(0),
                              y.stride(0), M, N, K, false);
  }
  void matmul_backward_bf16(const Tensor& x, const Tensor& w, const Tensor& dy, Tensor* dx,
                            Tensor* dw) override {
    if (w.dtype() != DType::kBF16) {
      cpu::matmul_backward(ctx_, gemm_bf16_like(k_.matmul), x, w, dy, dx, dw);
      return;
    }
    // dx = dy·w on the rounded weight; dw += dyᵀ·x does not read w.
    const int64_t M = x.dim(0), K = x.dim(1), N = w.dim(0);
    HUGINN_ASSERT(w.dim(1) == K && dy.dim(0) == M && dy.dim(1) == N, "matmul_backward_bf16: shapes");
    if (dx)
      gemm_bf16_wb_like(k_.matmul)(ctx_, dy.row(0), dy.stride(0), 1, bf16_bits(w), w.stride(0), 1,
                                   dx->row(0), dx->stride(0), M, K, N, false);
    if (dw) cpu::matmul_backward(ctx_, gemm_bf16_like(k_.matmul), x, w, dy, nullptr, dw);
  }
  void round_bf16(const Tensor& w, Tensor& wb) override {
    const int64_t N = w.dim(0), K = w.dim(1);
    HUGINN_ASSERT(w.dtype() == DType::kF32 && wb.dtype() == DType::kBF16 && wb.is_contiguous() &&
                      wb.dim(0) == N && wb.dim(1) == K,
                  "round_bf16: w F32 [N, K], wb BF16 [N, K] contiguous");
    auto* out = static_cast<uint16_t*>(wb.raw());
    ctx_.for_range(N, K, [&](int64_t n0, int64_t n1) {
      for (int64_t n = n0; n < n1; ++n) {
        const float* src = w.row(n);
        for (int64_t k = 0; k < K; ++k) out[n * K + k] = bf16_round_ftz(src[k]);
      }
    });
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
  LiveBytes live_;
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

CpuIsa cpu_isa_from_env(const char* value, const std::vector<CpuIsa>& available) {
  HUGINN_ASSERT(!available.empty(), "cpu_isa_from_env: no instruction set available");
  if (!value || !*value) return available.back();
  std::string list;
  for (CpuIsa i : available) {
    if (std::strcmp(value, cpu_isa_name(i)) == 0) return i;
    list += std::string(list.empty() ? "" : ", ") + cpu_isa_name(i);
  }
  const std::string v = value;
  if (v != "generic" && v != "avx2" && v != "avx512")
    throw Error("HUGINN_CPU_ISA='" + v + "': not an instruction set (expected generic, avx2 or "
                "avx512; this build and CPU run " + list + ")");
  throw Error("HUGINN_CPU_ISA=" + v + ": not compiled into this build or not run by this CPU "
              "(this build and CPU run " + list + ")");
}

CpuIsa best_cpu_isa() {
  static const CpuIsa isa = cpu_isa_from_env(std::getenv("HUGINN_CPU_ISA"), available_cpu_isas());
  return isa;
}

uint64_t cpu_gemm_calls(CpuIsa isa) {
  switch (isa) {
#ifdef HUGINN_HAVE_AVX512
    case CpuIsa::kAvx512: return cpu::gemm_calls<cpu::VecAvx512>.load();
#endif
#ifdef HUGINN_HAVE_AVX2
    case CpuIsa::kAvx2: return cpu::gemm_calls<cpu::VecAvx2>.load();
#endif
    case CpuIsa::kGeneric: return cpu::gemm_calls<cpu::VecGeneric>.load();
    default: return 0;
  }
}

CpuKernelInfo cpu_kernel_info(CpuIsa isa) {
  CpuKernelInfo k;
  k.isa = isa;
  k.cpu_has_avx512_bf16 = __builtin_cpu_supports("avx512bf16");
  if (isa == CpuIsa::kAvx512) {
    const cpu::Bf16DotChoice d = cpu::bf16_dot_choice();
    k.bf16_dot = d.dot;
    k.bf16_dot_gflops = d.dot_gflops;
    k.bf16_fma_gflops = d.fma_gflops;
  }
  const cpu::GemmInfo g = cpu::kernels_for(isa).gemm_info();
  k.gemm_mr = g.mr;
  k.gemm_nr = g.nr;
  k.blocking = g.blocking;
  k.caches = cpu::cpu_caches();
  return k;
}

std::string describe(const CpuKernelInfo& k) {
  char buf[640], dot[160];
  const cpu::CpuCaches& c = k.caches;
  if (k.bf16_dot_gflops > 0) {
    std::snprintf(dot, sizeof dot,
                  "present; bf16 training GEMMs %s vdpbf16ps (tile probe %.0f vs %.0f GFLOP/s on "
                  "FMAs); not used for inference: see gemm.cc",
                  k.bf16_dot ? "on" : "not on", k.bf16_dot_gflops, k.bf16_fma_gflops);
  } else {
    std::snprintf(dot, sizeof dot, "%s", k.cpu_has_avx512_bf16 ? "present" : "absent");
  }
  std::snprintf(buf, sizeof buf,
                "isa %s (AVX512_BF16 %s), GEMM tile %dx%d, blocking kc %lld "
                "mc %lld nc %lld, caches L1d %lld KiB, L2 %lld KiB, L3 %lld KiB shared by %d (%s)",
                cpu_isa_name(k.isa), dot, k.gemm_mr,
                k.gemm_nr, static_cast<long long>(k.blocking.kc),
                static_cast<long long>(k.blocking.mc), static_cast<long long>(k.blocking.nc),
                static_cast<long long>(c.l1d >> 10), static_cast<long long>(c.l2 >> 10),
                static_cast<long long>(c.l3 >> 10), c.l3_shared_by, c.source.c_str());
  return buf;
}

std::unique_ptr<Backend> make_cpu_backend(ThreadPool& pool, const CpuOptions& options) {
  return std::make_unique<cpu::CpuBackend>(pool, options);
}

std::unique_ptr<Backend> make_cpu_backend(ThreadPool& pool) {
  CpuOptions o;
  o.isa = best_cpu_isa();
  return make_cpu_backend(pool, o);
}

}  // namespace huginn
