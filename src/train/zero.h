// ZeRO-1 (Rajbhandari et al., 2020, "ZeRO: Memory Optimizations Toward Training Trillion
// Parameter Models", stage 1): the optimizer state is sharded across the ranks of a data-parallel
// run. The flat parameter space (huginn/train.h, flat_pieces: every parameter flattened, in
// named_params order; P floats) is cut into N slices of S = ceil(P / N) floats, rank r owning
// [r·S, min((r+1)·S, P)). Per step:
//   1. reduce-scatter: rank r receives the sum over the ranks of the gradient of its slice,
//   2. clipping by the global norm (each rank's sum of squares of its slice, summed over ranks),
//   3. AdamW on the slice only (AdamW built with that slice holds m, v of the slice only),
//   4. all-gather: every rank's updated slice of the weights to every rank.
// The exchanges go in fixed-size buckets (no collective larger than one bucket): bucket j
// carries elements [j·c, j·c + c) of every rank's slice, c = bucket_floats / N, so a
// reduce-scatter moves N·c floats and an all-gather c floats per rank. Gradients and weights
// reach the host only through Backend::download and go back through Backend::upload + copy (the
// strict backend checks both). A ring reduce-scatter plus all-gather sends what a ring
// all-reduce sends (2·(N−1)/N·P floats per rank); each rank runs 1/N of the AdamW work and holds
// 1/N of its state.
//
// The elementwise AdamW makes every weight's update the one the whole-state optimizer computes
// from the same summed gradient; for two ranks the sums themselves are a + b either way, so
// ZeRO-1 and the all-reduce path agree bit for bit unless clipping scales (the norm's double sum
// is split differently).
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "huginn/train.h"

namespace huginn {
class Communicator;

class ZeroShard {
 public:
  ZeroShard(Communicator& comm, Backend& backend, const std::vector<NamedParam>& params,
            int64_t bucket_floats);
  // This rank's slice [begin, end) of the flat parameter space (what its AdamW is built with).
  int64_t begin() const { return begin_; }
  int64_t end() const { return end_; }

  // The gradients of this rank's slice = their sum over the ranks (the rest is left as it was).
  void reduce_scatter(const std::vector<NamedParam>& params);
  // Clips this rank's slice of the gradients by the global norm; returns that norm.
  double clip(const std::vector<NamedParam>& params, double max_norm);
  // Every rank's slice of the weights, from that rank, on every rank.
  void all_gather(const std::vector<NamedParam>& params);
  // The whole moments (as AdamW::state() of one process gives them) on rank 0, gathered from
  // every rank's slice; empty on the others. A collective: every rank calls it.
  std::vector<std::pair<std::string, Tensor>> gather_state(const AdamW& adam);

  int64_t buckets_last() const { return buckets_; }

 private:
  // Host floats of flat elements [lo, hi) ∩ [0, P) of `which` (values or grads) into dst[0, len),
  // zeros beyond P.
  void download(const std::vector<NamedParam>& params, bool grads, int64_t lo, int64_t len,
                float* dst);
  void upload(const std::vector<NamedParam>& params, bool grads, int64_t lo, int64_t len,
              const float* src);

  Communicator& comm_;
  Backend& be_;
  int64_t P_ = 0, S_ = 0, c_ = 0;
  int64_t begin_ = 0, end_ = 0;
  std::vector<float> send_, recv_;
  int64_t buckets_ = 0;
};

}  // namespace huginn
