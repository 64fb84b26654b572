// Backend::allocated_bytes for the backends: the bytes of the tensors alloc() made that are still
// alive. Each counted tensor's owner adds its bytes when it is made and takes them off when its
// last view goes (which may be after the backend itself is gone: the count is shared).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>

#include "huginn/tensor.h"

namespace huginn {

class LiveBytes {
 public:
  int64_t bytes() const { return n_->load(std::memory_order_relaxed); }
  // A host tensor `t` that owns its memory, counted while any view of it lives.
  Tensor count(const Tensor& t) const {
    const int64_t n = static_cast<int64_t>(t.nbytes());
    std::shared_ptr<std::atomic<int64_t>> live = n_;
    live->fetch_add(n, std::memory_order_relaxed);
    std::shared_ptr<void> owner(new Tensor(t), [live, n](void* p) {
      delete static_cast<Tensor*>(p);
      live->fetch_sub(n, std::memory_order_relaxed);
    });
    return Tensor::wrap(const_cast<void*>(t.raw()), t.shape(), t.dtype(), std::move(owner));
  }
  // For a backend with its own owners (strict): the shared count to add to and take from.
  std::shared_ptr<std::atomic<int64_t>> counter() const { return n_; }

 private:
  std::shared_ptr<std::atomic<int64_t>> n_ = std::make_shared<std::atomic<int64_t>>(0);
};

}  // namespace huginn
