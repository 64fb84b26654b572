// Bucketed all-reduce of parameter gradients (grad_sync.h).
#include "train/grad_sync.h"

#include <algorithm>

#include "huginn/comm.h"
#include "huginn/error.h"

namespace huginn {

GradSync::GradSync(Communicator& comm, Backend& backend, int64_t bucket_floats)
    : comm_(comm), be_(backend), bucket_(static_cast<size_t>(bucket_floats)) {
  HUGINN_ASSERT(bucket_floats > 0, "GradSync: the bucket must hold at least one float");
}

void GradSync::all_reduce(const std::vector<NamedParam>& params) {
  buckets_ = 0;
  const int64_t cap = static_cast<int64_t>(bucket_.size());
  for (const NamedParam& p : params) {
    const Tensor flat = p.grad.reshape({1, p.grad.numel()});
    for (int64_t done = 0, n = flat.numel(); done < n;) {
      const int64_t len = std::min(n - done, cap - fill_);
      Tensor piece = flat.cols(done, done + len);
      be_.download(piece, bucket_.data() + fill_);
      pieces_.push_back({piece, fill_});
      fill_ += len;
      done += len;
      if (fill_ == cap) flush();
    }
  }
  if (fill_ > 0) flush();
}

void GradSync::flush() {
  comm_.all_reduce_sum(std::span<float>(bucket_.data(), static_cast<size_t>(fill_)));
  for (Piece& p : pieces_) {
    const Tensor host = Tensor::wrap(bucket_.data() + p.offset, {1, p.grad.numel()}, DType::kF32);
    be_.copy(be_.upload(host), p.grad);
  }
  pieces_.clear();
  fill_ = 0;
  ++buckets_;
}

}  // namespace huginn
