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
