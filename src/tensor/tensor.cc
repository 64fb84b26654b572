#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>

#include "huginn/tensor.h"

namespace huginn {
namespace {

void set_contiguous_strides(int ndim, const int64_t* shape, int64_t* strides) {
  int64_t s = 1;
  for (int i = ndim - 1; i >= 0; --i) {
    strides[i] = s;
    s *= shape[i];
  }
}

}  // namespace

Tensor Tensor::wrap(void* data, std::span<const int64_t> shape, DType dtype,
                    std::shared_ptr<void> owner) {
  HUGINN_ASSERT(shape.size() <= kMaxDims, "too many dimensions");
  Tensor t;
  t.data_ = data;
  t.dtype_ = dtype;
  t.ndim_ = static_cast<int>(shape.size());
  for (int i = 0; i < t.ndim_; ++i) {
    HUGINN_ASSERT(shape[i] >= 0, "negative dimension");
    t.shape_[i] = shape[i];
  }
  set_contiguous_strides(t.ndim_, t.shape_, t.strides_);
  t.owner_ = std::move(owner);
  return t;
}

namespace {

std::string shape_text(std::span<const int64_t> shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

// Bytes of a contiguous tensor of `shape`, checked in every build type: shapes reach here from
// files and flags, and a wrapped product would allocate a small buffer that is then written far
// past its end.
size_t checked_bytes(std::span<const int64_t> shape, DType dtype) {
  if (shape.size() > static_cast<size_t>(kMaxDims))
    throw Error("tensor of shape " + shape_text(shape) + ": more than " +
                std::to_string(kMaxDims) + " dimensions");
  int64_t n = 1;
  bool overflow = false;
  for (int64_t d : shape) {
    if (d < 0) throw Error("tensor of shape " + shape_text(shape) + ": negative dimension");
    overflow |= __builtin_mul_overflow(n, d, &n);
  }
  // Q8 / Q4 store one 2-byte scale per 32 values: at most 2 bytes per element, like the others.
  const int64_t per = is_quantized(dtype) ? 2 : static_cast<int64_t>(dtype_size(dtype));
  int64_t bytes = 0;
  overflow |= __builtin_mul_overflow(n, per, &bytes);
  overflow |= bytes > std::numeric_limits<int64_t>::max() - 64;  // room to round up to 64
  if (overflow)
    throw Error("tensor of shape " + shape_text(shape) + " (" + dtype_name(dtype) +
                ") needs more than 2^63 bytes");
  return storage_bytes(dtype, n);
}

}  // namespace

Tensor Tensor::empty(std::span<const int64_t> shape, DType dtype) {
  const size_t bytes = checked_bytes(shape, dtype);
  size_t alloc = (bytes + 63) / 64 * 64;
  if (alloc == 0) alloc = 64;
  void* p = std::aligned_alloc(64, alloc);
  if (!p)
    throw Error("out of memory allocating " + std::to_string(bytes) + " bytes for a tensor of shape " +
                shape_text(shape));
  std::memset(p, 0, alloc);
  std::shared_ptr<void> owner(p, [](void* q) { std::free(q); });
  return wrap(p, shape, dtype, std::move(owner));
}

int64_t Tensor::numel() const {
  int64_t n = 1;
  for (int i = 0; i < ndim_; ++i) n *= shape_[i];
  return n;
}

bool Tensor::is_contiguous() const {
  int64_t s = 1;
  for (int i = ndim_ - 1; i >= 0; --i) {
    if (shape_[i] != 1 && strides_[i] != s) return false;
    s *= shape_[i];
  }
  return true;
}

std::string Tensor::shape_str() const {
  std::string s = "[";
  for (int i = 0; i < ndim_; ++i) {
    if (i) s += ", ";
    s += std::to_string(shape_[i]);
  }
  return s + "]";
}

Tensor Tensor::reshape(std::initializer_list<int64_t> shape) const {
  return reshape(std::span<const int64_t>(shape.begin(), shape.size()));
}

Tensor Tensor::reshape(std::span<const int64_t> shape) const {
  HUGINN_ASSERT(is_contiguous(), "reshape of a non-contiguous tensor");
  Tensor t = wrap(data_, shape, dtype_, owner_);
  t.space_ = space_;
  HUGINN_ASSERT(t.numel() == numel(), "reshape changes the element count");
  return t;
}

void Tensor::host_access_refused() const {
  throw Error(std::string("host access to a ") + dtype_name(dtype_) + " tensor " + shape_str() +
              " in " + space_ + " backend memory: only that backend's own calls may touch it " +
              "(download it, or compute with a backend op)");
}

Tensor Tensor::rows(int64_t begin, int64_t end) const {
  HUGINN_ASSERT(ndim_ >= 1 && 0 <= begin && begin <= end && end <= shape_[0], "rows out of range");
  HUGINN_ASSERT(!is_quantized(dtype_) || (begin == 0 && end == shape_[0]),
                "rows of a Q8/Q4 tensor");
  Tensor t = *this;
  t.data_ = static_cast<char*>(data_) + begin * strides_[0] * dtype_size(dtype_);
  t.shape_[0] = end - begin;
  return t;
}

Tensor Tensor::cols(int64_t begin, int64_t end) const {
  HUGINN_ASSERT(ndim_ == 2 && 0 <= begin && begin <= end && end <= shape_[1], "cols out of range");
  HUGINN_ASSERT(!is_quantized(dtype_) || (begin == 0 && end == shape_[1]),
                "cols of a Q8/Q4 tensor");
  Tensor t = *this;
  t.data_ = static_cast<char*>(data_) + begin * strides_[1] * dtype_size(dtype_);
  t.shape_[1] = end - begin;
  return t;
}

Tensor Tensor::clone() const {
  host_ptr();  // refuses backend memory
  Tensor t = empty(shape(), dtype_);
  t.copy_from(*this);
  return t;
}

void Tensor::copy_from(const Tensor& src) {
  HUGINN_ASSERT(src.ndim_ == ndim_ && src.dtype_ == dtype_, "copy_from: shape or dtype mismatch");
  for (int i = 0; i < ndim_; ++i) HUGINN_ASSERT(src.shape_[i] == shape_[i], "copy_from: shape");
  host_ptr();
  src.host_ptr();
  if (is_contiguous() && src.is_contiguous()) {
    std::memcpy(data_, src.data_, nbytes());
    return;
  }
  HUGINN_ASSERT(!is_quantized(dtype_), "copy_from: strided Q8/Q4 tensor");
  // Generic strided copy over a flat index.
  const size_t es = dtype_size(dtype_);
  int64_t n = numel();
  for (int64_t flat = 0; flat < n; ++flat) {
    int64_t rem = flat, so = 0, dof = 0;
    for (int i = ndim_ - 1; i >= 0; --i) {
      int64_t idx = rem % shape_[i];
      rem /= shape_[i];
      so += idx * src.strides_[i];
      dof += idx * strides_[i];
    }
    std::memcpy(static_cast<char*>(data_) + dof * es, static_cast<const char*>(src.data_) + so * es,
                es);
  }
}

}  // namespace huginn
