// Backend-side access to tensor memory. Host code reaches tensor memory only through Tensor's
// host accessors, which refuse backend memory; a backend reaches its own memory through these,
// inside its own calls. Only src/kernels/ includes this header.
#pragma once

#include "huginn/tensor.h"

namespace huginn {

struct DeviceAccess {
  // The address of t's first element in its own space (reading it is the backend's business).
  static void* ptr(const Tensor& t) { return t.data_; }
  // The same view (shape, strides, owner) over host memory at `data`, tagged host: a backend
  // whose memory the host can reach at another address hands its kernels these.
  static Tensor host_view_at(const Tensor& t, void* data) {
    Tensor h = t;
    h.data_ = data;
    h.space_ = nullptr;
    return h;
  }
  // A view of memory a backend owns, tagged with that backend's space name (static storage).
  static Tensor in_space(Tensor t, const char* space) {
    t.space_ = space;
    return t;
  }
};

}  // namespace huginn
