// Data-parallel gradient exchange: the sum over ranks of every parameter gradient, in place.
// Gradients live in backend memory; they reach the host only through Backend::download and go
// back through Backend::upload + copy (the strict backend checks both), one fixed-size bucket at
// a time, so the host holds one bucket, never a second copy of all gradients, and no single
// collective is larger than a bucket (the reference chunked its all-reduce into 64 MB pieces to
// avoid hangs at scale).
//
// Buckets cut the parameters' gradients, concatenated in named_params order, into pieces of
// bucket_floats; a tensor may span buckets. The order and the cuts are the same on every rank.
#pragma once

#include <cstdint>
#include <vector>

#include "huginn/backward.h"

namespace huginn {
class Communicator;

class GradSync {
 public:
  GradSync(Communicator& comm, Backend& backend, int64_t bucket_floats);
  // Sums params[i].grad over the ranks, on every rank.
  void all_reduce(const std::vector<NamedParam>& params);
  int64_t buckets_last() const { return buckets_; }

 private:
  struct Piece {
    Tensor grad;     // a [1, n] column slice of one parameter's gradient, flattened
    int64_t offset;  // where it sits in the bucket
  };
  void flush();

  Communicator& comm_;
  Backend& be_;
  std::vector<float> bucket_;
  std::vector<Piece> pieces_;
  int64_t fill_ = 0;
  int64_t buckets_ = 0;
};

}  // namespace huginn
