// BatchRunner: one token for each of B sequences through the ModelPass (src/model/forward.cc) in
// row-exact mode, one row per sequence. B = sequences (rows).
#include "huginn/forward_batch.h"

namespace huginn {

BatchRunner::BatchRunner(const Model& model, Backend& backend) : pass_(model, backend) {
  pass_.set_row_exact(true);
}

Rows BatchRunner::rows(std::span<const int32_t> positions, std::span<KVCache* const> caches) {
  const int64_t B = static_cast<int64_t>(positions.size());
  HUGINN_ASSERT(static_cast<int64_t>(caches.size()) == B, "BatchRunner: one cache per row");
  while (static_cast<int64_t>(starts_.size()) <= B) starts_.push_back(static_cast<int64_t>(starts_.size()));
  return Rows{positions, std::span<const int64_t>(starts_.data(), static_cast<size_t>(B + 1)), caches, {}};
}

void BatchRunner::prelude(std::span<const int32_t> ids, std::span<const int32_t> positions,
                          std::span<KVCache* const> caches, Tensor& e) {
  HUGINN_ASSERT(e.dim(0) == static_cast<int64_t>(ids.size()), "BatchRunner::prelude: one row per token");
  pass_.prelude(ids, rows(positions, caches), e);
}

void BatchRunner::core_step(Tensor& s, const Tensor& e, int t, std::span<const int32_t> positions,
                            std::span<KVCache* const> caches) {
  pass_.core_step(s, e, t, rows(positions, caches));
}

void BatchRunner::coda(const Tensor& s, std::span<const int32_t> positions,
                       std::span<KVCache* const> caches, Tensor& logits) {
  pass_.coda(s, rows(positions, caches), logits, nullptr, /*last_only=*/false);
}

}  // namespace huginn
