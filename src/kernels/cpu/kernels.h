// The fast CPU kernels, each a template over a vector type from simd.h (explicitly instantiated
// for every type compiled in). cpu_backend.cc picks one instantiation per instruction set.
// Shape legend as in huginn/backend.h: T tokens, S keys, E n_embd, H heads, D head_dim,
// I intermediate, V vocabulary, M/K/N matmul rows/inner/outputs.
#pragma once

#include <cstdint>
#include <span>

#include "huginn/tensor.h"
#include "huginn/thread_pool.h"

namespace huginn::cpu {

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

template <class V>
void matmul(const Ctx& c, const Tensor& x, const Tensor& w, Tensor& y);
// y[M, N] (= or +=, `accumulate`) A[M, K] · B[K, N], fp32, for operands given by strides in
// elements: A(i, k) = a[i * ai + k * ak], B(k, n) = b[k * bk + n * bn], where one stride of each
// operand is 1 (either layout, so transposed operands need no copy); y rows ldy apart.
template <class V>
void gemm_f32(const Ctx& c, const float* a, int64_t ai, int64_t ak, const float* b, int64_t bk,
              int64_t bn, float* y, int64_t ldy, int64_t M, int64_t N, int64_t K,
              bool accumulate);
using GemmF32Fn = void (*)(const Ctx&, const float*, int64_t, int64_t, const float*, int64_t,
                          int64_t, float*, int64_t, int64_t, int64_t, int64_t, bool);
// The gemm_f32 of the same instruction set as the given matmul<V> (for the backward ops, which
// receive the forward's matmul).
GemmF32Fn gemm_f32_like(void (*mm)(const Ctx&, const Tensor&, const Tensor&, Tensor&));

// y[M, N] = x[M, K] · w[N, K]ᵀ with w in bf16 (a Linear weight as stored, HF [out, in]) and
// fp32 accumulation; x, y fp32. Rows are ld* elements apart (views of wider buffers are fine).
// x is used as it is (not rounded to bf16): for M > 4 the result is bit-identical to matmul<V>(x,
// w widened to fp32), one fp32 FMA chain over k in order per output.
// Weight panels are widened while packed, on the fly (no cache, no allocation once warm).
// Results do not depend on the thread count. Meant for M >~ 8 (prefill); matvec-sized M is
// better served by a weight-streaming kernel. Why not vdpbf16ps: see gemm_bf16.cc.
// For the weight-format owner: dispatch from cpu_backend.cc's matmul, e.g.
//   gemm_bf16<V>(ctx, x.row(0), x.stride(0), w.data<uint16_t>(), w.stride(0), y.row(0),
//                y.stride(0), M, N, K);
template <class V>
void gemm_bf16(const Ctx& c, const float* x, int64_t ldx, const uint16_t* w, int64_t ldw, float* y,
               int64_t ldy, int64_t M, int64_t N, int64_t K);
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
