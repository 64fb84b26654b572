// The fast CPU kernels, each a template over a vector type from simd.h, explicitly instantiated
// in the object of that type's instruction set (simd.h says how one binary holds all of them).
// cpu_backend.cc picks one instantiation per instruction set at run time.
// Shape legend as in huginn/backend.h: T tokens, S keys, E n_embd, H heads, D head_dim,
// I intermediate, V vocabulary, M/K/N matmul rows/inner/outputs.
#pragma once

#include <atomic>
#include <cstdint>
#include <limits>
#include <span>

#include "huginn/tensor.h"
#include "huginn/thread_pool.h"
#include "kernels/cpu/cpu_info.h"

namespace huginn::cpu {

// The vector types of simd.h. Kernels are instantiated for VecGeneric always, and for VecAvx2 /
// VecAvx512 where the build has those objects (HUGINN_HAVE_AVX2 / HUGINN_HAVE_AVX512: x86-64).
struct VecGeneric;
struct VecAvx2;
struct VecAvx512;

// What every kernel needs to split its work: the pool, and the least work (in flops or
// elements) worth handing to a thread — below it an op runs on the calling thread alone.
// Work is always split over independent outputs with a per-output order of operations that
// does not depend on the split, so results are bit-identical for any thread count.
struct Ctx {
  ThreadPool& pool;
  int64_t min_work_per_thread;

  // parallel_for over n items of `work_per_item` each, in chunks worth at least
  // min_work_per_thread.
  template <class F>
  void for_range(int64_t n, int64_t work_per_item, const F& fn) const {
    const int64_t per = work_per_item > 0 ? work_per_item : 1;
    const int64_t grain = (min_work_per_thread + per - 1) / per;
    pool.parallel_for(n, grain, fn);
  }
};

// y[M, N] = x[M, K] · w[N, K]ᵀ with F32 weights; x, y, w may be row-strided views.
// Row-exact: every output is one FMA chain over k = 0..K-1 in order starting from +0
// (acc = fma(x[m][k], w[n][k], acc)), whatever M, the register tile, the cache blocking or the
// thread split. So row m of a call on M rows has exactly the bits of a call on row m alone (a
// batch never changes an answer), and results depend neither on the thread count nor on the
// machine's cache sizes; only the instruction set's FMA vs the generic std::fma could differ,
// and both round once.
template <class V>
void matmul(const Ctx& c, const Tensor& x, const Tensor& w, Tensor& y);
// How many rows one matmul call takes and stays row-exact (the contract above): any. What the CPU
// backend answers when a caller (batched decode) asks how many rows it may group.
inline constexpr int64_t kMatmulExactRows = std::numeric_limits<int64_t>::max();
// Prefill attention computes queries in blocks of this many rows from the call's first query
// (attention.cc), so a call split at a multiple of it, with at least this many queries in the
// second part, gives every query the same bits (Backend::attention_split_rows).
inline constexpr int64_t kAttnBlockRows = 64;
// y[M, N] (= or +=, `accumulate`) A[M, K] · B[K, N], fp32, for operands given by strides in
// elements: A(i, k) = a[i * ai + k * ak], B(k, n) = b[k * bk + n * bn], where one stride of each
// operand is 1 (either layout, so transposed operands need no copy); y rows ldy apart. The same
// FMA chain per output as matmul (continuing from y's value when accumulating).
template <class V>
void gemm_f32(const Ctx& c, const float* a, int64_t ai, int64_t ak, const float* b, int64_t bk,
              int64_t bn, float* y, int64_t ldy, int64_t M, int64_t N, int64_t K,
              bool accumulate);
using GemmF32Fn = void (*)(const Ctx&, const float*, int64_t, int64_t, const float*, int64_t,
                          int64_t, float*, int64_t, int64_t, int64_t, int64_t, bool);
// The gemm_f32 of the same instruction set as the given matmul<V> (for the backward ops, which
// receive the forward's matmul).
GemmF32Fn gemm_f32_like(void (*mm)(const Ctx&, const Tensor&, const Tensor&, Tensor&));
// Calls taken by one instruction set's GEMM entry points (matmul, matmul_lowp, gemm_f32) in this
// process. Results cannot show which set an op ran on (every set computes the same FMA chains,
// bit for bit), so tests read these to prove that a forced set reaches every GEMM
// (cpu_gemm_calls in cpu_backend.h). One relaxed add per call, not per tile.
template <class V>
inline std::atomic<uint64_t> gemm_calls{0};

// The same product in BF16 mixed precision (training with --precision bf16): A and B rounded to
// BF16, F32 accumulation, numerics exactly as kernels/bf16_numerics.h defines them, so the bits
// depend neither on the instruction set, nor on whether vdpbf16ps runs them, nor on blocking or
// thread count. Same operand conventions as gemm_f32.
template <class V>
void gemm_bf16(const Ctx& c, const float* a, int64_t ai, int64_t ak, const float* b, int64_t bk,
               int64_t bn, float* y, int64_t ldy, int64_t M, int64_t N, int64_t K,
               bool accumulate);
// gemm_bf16 with B given as BF16 bits (a weight Backend::round_bf16 rounded once per optimizer
// step): the same bits as gemm_bf16 on the F32 values they came from, without rounding B again.
// Weight rows along K (bk = 1, the forward) are read as the pairs they are when K and the row
// stride are even; rows along N (bn = 1, dx = dy·w) are interleaved two rows at a time as the
// micro-panels are packed.
template <class V>
void gemm_bf16_wb(const Ctx& c, const float* a, int64_t ai, int64_t ak, const uint16_t* b,
                  int64_t bk, int64_t bn, float* y, int64_t ldy, int64_t M, int64_t N, int64_t K,
                  bool accumulate);
using GemmBf16WbFn = void (*)(const Ctx&, const float*, int64_t, int64_t, const uint16_t*, int64_t,
                              int64_t, float*, int64_t, int64_t, int64_t, int64_t, bool);
// The gemm_bf16 / gemm_bf16_wb of the same instruction set as the given matmul<V>.
GemmF32Fn gemm_bf16_like(void (*mm)(const Ctx&, const Tensor&, const Tensor&, Tensor&));
GemmBf16WbFn gemm_bf16_wb_like(void (*mm)(const Ctx&, const Tensor&, const Tensor&, Tensor&));
// Whether gemm_bf16 runs its tiles on vdpbf16ps: kAuto (default; HUGINN_BF16_DOT=0 / 1 in the
// environment forces off / on) uses it where the CPU has AVX512_BF16 and a short probe at first
// use measures it faster than the F32 FMA tile on the same pairs; kOn uses it wherever the CPU
// has it. Results are the same bits either way; tests force each.
enum class Bf16Dot { kAuto, kOff, kOn };
void set_bf16_dot(Bf16Dot mode);
Bf16Dot bf16_dot_mode();  // the override, else the environment's, else kAuto
// What gemm_bf16<VecAvx512> decided on this machine (false in builds without AVX-512), and the
// probe's figures in GFLOP/s of one tile (0 when it did not run).
struct Bf16DotChoice {
  bool dot = false;
  double dot_gflops = 0, fma_gflops = 0;
};
Bf16DotChoice bf16_dot_choice();

// y[M, N] = x[M, K] · w[N, K]ᵀ with BF16, Q8 or Q4 weights (a Linear weight as stored, HF [out,
// in]; Q8 / Q4 layouts in huginn/tensor.h), x and y F32 row-strided. The weights are widened
// (BF16: exact) or dequantized (Q8 / Q4: value · F16 scale, exact in F32) while they are packed,
// and the F32 chain
// of matmul runs on them with x as it is: the result is bit-identical to matmul<V> on
// convert_weight(w, F32), for every M (row-exact as matmul). Why not vdpbf16ps: gemm.cc.
template <class V>
void matmul_lowp(const Ctx& c, const Tensor& x, const Tensor& w, Tensor& y);

// What the GEMM of one instruction set runs with on this machine: the register tile (MR rows of
// x by NR weight rows) and the cache blocking derived from cpu_caches() (cpu_info.h).
struct GemmInfo {
  int mr, nr;
  GemmBlocking blocking;
};
template <class V>
GemmInfo gemm_info();

// A per-calling-thread, 64-byte-aligned buffer of at least `bytes` for the packed GEMM panels
// (slot 0: B, slot 1: A; gemm_bf16's BF16 operands: 2 A, 3 B), reused across calls; separate from
// the scratch() slots.
void* gemm_buffer(int slot, size_t bytes);

template <class V>
void attention(const Ctx& c, const Tensor& q, const Tensor& k, const Tensor& v, int n_heads,
               Tensor& out);

template <class V>
void copy(const Ctx& c, const Tensor& src, Tensor& dst);
template <class V>
void embedding(const Ctx& c, const Tensor& table, std::span<const int32_t> ids, float scale,
               Tensor& out);
template <class V>
void rmsnorm(const Ctx& c, const Tensor& x, const Tensor& w, float eps, Tensor& y);
template <class V>
void add(const Ctx& c, const Tensor& a, const Tensor& b, Tensor& y);
template <class V>
void add_bias(const Ctx& c, Tensor& x, const Tensor& bias);
template <class V>
void rope(const Ctx& c, Tensor& x, const Tensor& cos_sin, std::span<const int32_t> positions,
          int head_dim);
template <class V>
void swiglu(const Ctx& c, const Tensor& fc, Tensor& out);
template <class V>
void concat_cols(const Ctx& c, const Tensor& a, const Tensor& b, Tensor& out);
template <class V>
void log_softmax(const Ctx& c, const Tensor& x, Tensor& y);

// A per-calling-thread scratch buffer of at least n floats, 64-byte aligned, reused across calls
// (no allocation per op once warm). Each call may invalidate the previous pointer for this slot.
float* scratch(int slot, int64_t n);

}  // namespace huginn::cpu
