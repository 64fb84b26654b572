// ZeRO-1 optimizer-state sharding: bucketed reduce-scatter, global-norm clipping, all-gather and
// the checkpoint's gather of the moments (zero.h).
#include "train/zero.h"

#include <algorithm>

#include "huginn/comm.h"
#include "huginn/error.h"

namespace huginn {

ZeroShard::ZeroShard(Communicator& comm, Backend& backend, const std::vector<NamedParam>& params,
                     int64_t bucket_floats)
    : comm_(comm), be_(backend) {
  const int N = comm.size(), r = comm.rank();
  P_ = flat_size(params);
  S_ = (P_ + N - 1) / N;
  c_ = std::max<int64_t>(1, bucket_floats / N);
  begin_ = std::min(P_, r * S_);
  end_ = std::min(P_, (r + 1) * S_);
  send_.resize(static_cast<size_t>(std::min(c_, S_) * N));
  recv_.resize(static_cast<size_t>(std::min(c_, S_) * N));
}

void ZeroShard::download(const std::vector<NamedParam>& params, bool grads, int64_t lo, int64_t len,
                         float* dst) {
  const int64_t a = std::min(lo, P_), b = std::min(lo + len, P_);
  for (const FlatPiece& pc : flat_pieces(params, a, b)) {
    const NamedParam& p = params[pc.param];
    be_.download(piece_view(grads ? p.grad : p.value, pc), dst + pc.at);
  }
  std::fill(dst + (b - a), dst + len, 0.0f);  // the padding of the last slices
}

void ZeroShard::upload(const std::vector<NamedParam>& params, bool grads, int64_t lo, int64_t len,
                       const float* src) {
  const int64_t a = std::min(lo, P_), b = std::min(lo + len, P_);
  for (const FlatPiece& pc : flat_pieces(params, a, b)) {
    const NamedParam& p = params[pc.param];
    Tensor dst = piece_view(grads ? p.grad : p.value, pc).reshape({1, pc.end - pc.begin});
    const Tensor host =
        Tensor::wrap(const_cast<float*>(src) + pc.at, {1, pc.end - pc.begin}, DType::kF32);
    be_.copy(be_.upload(host), dst);
  }
}

void ZeroShard::reduce_scatter(const std::vector<NamedParam>& params) {
  const int N = comm_.size(), r = comm_.rank();
  buckets_ = 0;
  for (int64_t j = 0; j < S_; j += c_) {
    const int64_t len = std::min(c_, S_ - j);
    for (int q = 0; q < N; ++q) download(params, true, q * S_ + j, len, send_.data() + q * len);
    comm_.reduce_scatter_sum(std::span<const float>(send_.data(), static_cast<size_t>(N * len)),
                             std::span<float>(recv_.data(), static_cast<size_t>(len)));
    upload(params, true, r * S_ + j, len, recv_.data());
    ++buckets_;
  }
}

double ZeroShard::clip(const std::vector<NamedParam>& params, double max_norm) {
  std::vector<Tensor> mine;
  for (const FlatPiece& pc : flat_pieces(params, begin_, end_))
    mine.push_back(piece_view(params[pc.param].grad, pc));
  return clip_grad_norm(be_, mine, max_norm, &comm_);
}

void ZeroShard::all_gather(const std::vector<NamedParam>& params) {
  const int N = comm_.size(), r = comm_.rank();
  for (int64_t j = 0; j < S_; j += c_) {
    const int64_t len = std::min(c_, S_ - j);
    download(params, false, r * S_ + j, len, send_.data());
    comm_.all_gather(
        std::as_bytes(std::span<const float>(send_.data(), static_cast<size_t>(len))),
        std::as_writable_bytes(std::span<float>(recv_.data(), static_cast<size_t>(N * len))));
    for (int q = 0; q < N; ++q)  // this rank's own slice is already in place
      if (q != r) upload(params, false, q * S_ + j, len, recv_.data() + q * len);
  }
}

std::vector<std::pair<std::string, Tensor>> ZeroShard::gather_state(const AdamW& adam) {
  HUGINN_ASSERT(adam.begin() == begin_ && adam.end() == end_,
                "ZeroShard::gather_state: the optimizer holds another slice");
  const int N = comm_.size();
  const bool root = comm_.rank() == 0;
  const std::vector<NamedParam>& params = adam.params();
  std::vector<float> whole[2];
  for (int which = 0; which < 2; ++which) {
    std::vector<float> mine = adam.slice_state(which == 1);
    mine.resize(static_cast<size_t>(S_), 0.0f);
    if (root) whole[which].resize(static_cast<size_t>(S_ * N));
    std::vector<float> got(root ? static_cast<size_t>(std::min(c_, S_) * N) : 0);
    for (int64_t j = 0; j < S_; j += c_) {  // in buckets, as every other exchange
      const int64_t len = std::min(c_, S_ - j);
      comm_.gather(std::as_bytes(std::span<const float>(mine.data() + j, static_cast<size_t>(len))),
                   std::as_writable_bytes(
                       std::span<float>(got.data(), root ? static_cast<size_t>(N * len) : 0)),
                   0);
      for (int q = 0; root && q < N; ++q)
        std::copy_n(got.data() + q * len, len, whole[which].data() + q * S_ + j);
    }
  }
  std::vector<std::pair<std::string, Tensor>> out;
  if (!root) return out;
  int64_t off = 0;
  for (const NamedParam& p : params) {
    for (int which = 0; which < 2; ++which) {
      Tensor t = Tensor::empty(p.value.shape());
      std::copy_n(whole[which].data() + off, p.value.numel(), t.f32());
      out.emplace_back((which == 0 ? "adam.m." : "adam.v.") + p.name, std::move(t));
    }
    off += p.value.numel();
  }
  return out;
}

}  // namespace huginn
