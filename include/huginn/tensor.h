// Tensor: a typed, strided view of up to 5 dimensions over memory that it may or may not own.
// Shapes are row-major; strides are in elements. Kernels take 2-D views [rows, cols] whose
// columns are contiguous (stride(1) == 1) and whose rows may be strided, so a slice of a wider
// buffer (the q part of a fused qkv output, a cache slot) is passed without a copy.
//
// Memory space: a tensor is either host memory (what Tensor::empty / wrap give, files, and the
// CPU backends' tensors, which live in host memory) or backend memory (a device, or the strict
// test backend's arena) that only the owning backend's own calls may touch. Every host accessor
// (raw, data, f32, row, q8_*, q4_*, clone, copy_from) refuses backend memory with a huginn::Error that
// names the tensor's shape and space, in every build type. Views (rows, cols, reshape) keep the
// space. Backends reach their own memory through DeviceAccess (src/kernels/device_access.h).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <memory>
#include <span>
#include <string>

#include "huginn/error.h"

namespace huginn {

// kI8 is safetensors' "I8". kQ8 and kQ4 are in-memory weight formats only (never safetensors
// dtypes): see "Q8 weights" and "Q4 weights" below.
enum class DType : uint8_t { kF32, kBF16, kF16, kF64, kI32, kI64, kU8, kI8, kQ8, kQ4 };

// Bytes per element (kQ8: the int8 value only; kQ4: 1, though a code is half a byte: Q4
// tensors are whole, so no view or stride ever steps by it).
size_t dtype_size(DType t);
size_t storage_bytes(DType t, int64_t numel);  // bytes of a contiguous tensor (kQ8/kQ4: + scales)
// The block-quantized weight formats (Q8, Q4): whole tensors, values then F16 scales.
inline bool is_quantized(DType t) { return t == DType::kQ8 || t == DType::kQ4; }
// The floating-point element types (what a dtype conversion may read or write).
inline bool is_float(DType t) {
  return t == DType::kF32 || t == DType::kBF16 || t == DType::kF16 || t == DType::kF64;
}
const char* dtype_name(DType t);             // safetensors spelling: "F32", "BF16", ...
bool dtype_from_name(const std::string& s, DType* out);

// Scalar conversions (round to nearest even) and bulk conversion to float. bf16_to_f32 is
// inline: the BF16 GEMM's generic tile and reference (kernels/bf16_numerics.h) call it per element.
inline float bf16_to_f32(uint16_t h) {
  const uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
uint16_t f32_to_bf16(float f);
float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);
void convert_to_f32(const void* src, DType src_type, float* dst, int64_t n);
void convert_from_f32(const float* src, void* dst, DType dst_type, int64_t n);

// --- Q8 weights ------------------------------------------------------------------------------
// A Q8 tensor [N, K] (K a multiple of kQ8Block) holds w[n, k] ≈ q[n, k] · scale[n, k / 32]:
// one contiguous buffer of the int8 values q [N, K] row-major, followed by the scales
// [N, K/32] as IEEE half floats (F16; ample range for weights, 2 bytes per 32 values, so 1.0625
// bytes per weight). Quantization: scale = f16(max|w| over the block / 127),
// q = clamp(round_half_even(w / scale), -127, 127). Q8 tensors are whole (no rows()/cols() views).
constexpr int64_t kQ8Block = 32;
class Tensor;
// F32 [N, K] (rows may be strided) -> Q8. Throws huginn::Error when K is not a multiple of 32 or
// a value is not finite.
Tensor quantize_q8(const Tensor& w);

// --- Q4 weights ------------------------------------------------------------------------------
// A Q4 tensor [N, K] (K a multiple of kQ4Block) holds w[n, k] ≈ (u[n, k] - 8) · scale[n, k / 32]
// with u a 4-bit code: one contiguous buffer of the codes, two per byte in k order (k even in
// the low nibble), [N, K/2] bytes row-major, followed by the scales [N, K/32] as F16 (0.5625
// bytes per weight). Quantization, the q4_0 rule of ggml: m = the block's value of largest
// magnitude (the first such), scale = f16(m / -8), q = clamp(round_half_even(w / scale), -8, 7),
// u = q + 8; so m itself is -8 · scale, and the 16 levels span the block's range. (The codes are
// in k order, not ggml's split halves, so a 32-bit word holds 8 consecutive values.) Dequantizing
// is exact in F32: a 4-bit integer times an F16 scale.
constexpr int64_t kQ4Block = 32;
// F32 [N, K] (rows may be strided) -> Q4. Throws huginn::Error when K is not a multiple of 32 or
// a value is not finite.
Tensor quantize_q4(const Tensor& w);

// Any weight dtype (F32, BF16, Q8, Q4) -> F32 [N, K] rows n0..n1 into dst (dense, (n1-n0)·K
// floats).
void weight_rows_to_f32(const Tensor& w, int64_t n0, int64_t n1, float* dst);
// A 2-D weight in F32, BF16, Q8 or Q4 converted to `to` (any of those); returns w itself when
// it already has that dtype. Throws huginn::Error for other dtypes or a Q8/Q4 K not divisible by
// 32.
Tensor convert_weight(const Tensor& w, DType to);

constexpr int kMaxDims = 5;

struct DeviceAccess;

class Tensor {
 public:
  Tensor() = default;

  // A new zero-filled, 64-byte-aligned, contiguous tensor that owns its memory.
  static Tensor empty(std::span<const int64_t> shape, DType dtype = DType::kF32);
  static Tensor empty(std::initializer_list<int64_t> shape, DType dtype = DType::kF32) {
    return empty(std::span<const int64_t>(shape.begin(), shape.size()), dtype);
  }
  // A contiguous view of existing memory; `owner` (optional) keeps that memory alive.
  static Tensor wrap(void* data, std::span<const int64_t> shape, DType dtype,
                     std::shared_ptr<void> owner = {});
  static Tensor wrap(void* data, std::initializer_list<int64_t> shape, DType dtype,
                     std::shared_ptr<void> owner = {}) {
    return wrap(data, std::span<const int64_t>(shape.begin(), shape.size()), dtype,
                std::move(owner));
  }

  bool defined() const { return data_ != nullptr || ndim_ > 0; }
  DType dtype() const { return dtype_; }
  int ndim() const { return ndim_; }
  int64_t dim(int i) const { return shape_[i < 0 ? i + ndim_ : i]; }
  int64_t stride(int i) const { return strides_[i < 0 ? i + ndim_ : i]; }
  std::span<const int64_t> shape() const { return {shape_, static_cast<size_t>(ndim_)}; }
  int64_t numel() const;
  size_t nbytes() const { return storage_bytes(dtype_, numel()); }
  bool is_contiguous() const;
  std::string shape_str() const;  // "[7, 64]"

  // Host memory, or the name of the backend whose memory this is ("strict", ...).
  bool on_host() const { return space_ == nullptr; }
  const char* space_name() const { return space_ ? space_ : "host"; }
  // Whether two tensors view the same first element (an identity test: reads no memory).
  bool same_data(const Tensor& o) const { return data_ == o.data_; }

  // Host accessors: each throws huginn::Error for backend memory (see the file comment).
  void* raw() { return host_ptr(); }
  const void* raw() const { return host_ptr(); }
  template <class T>
  T* data() {
    return static_cast<T*>(host_ptr());
  }
  template <class T>
  const T* data() const {
    return static_cast<const T*>(host_ptr());
  }
  // Q8 tensors: the values [N, K] and the F16 scales [N, K/32] that follow them.
  const int8_t* q8_values() const {
    HUGINN_DASSERT(dtype_ == DType::kQ8, "tensor is not Q8");
    return static_cast<const int8_t*>(host_ptr());
  }
  const uint16_t* q8_scales() const {
    HUGINN_DASSERT(dtype_ == DType::kQ8, "tensor is not Q8");
    return reinterpret_cast<const uint16_t*>(static_cast<const int8_t*>(host_ptr()) + numel());
  }
  // Q4 tensors: the codes [N, K/2] (two per byte, low nibble first) and the F16 scales [N, K/32].
  const uint8_t* q4_codes() const {
    HUGINN_DASSERT(dtype_ == DType::kQ4, "tensor is not Q4");
    return static_cast<const uint8_t*>(host_ptr());
  }
  const uint16_t* q4_scales() const {
    HUGINN_DASSERT(dtype_ == DType::kQ4, "tensor is not Q4");
    return reinterpret_cast<const uint16_t*>(static_cast<const uint8_t*>(host_ptr()) + numel() / 2);
  }
  float* f32() {
    HUGINN_DASSERT(dtype_ == DType::kF32, "tensor is not F32");
    return static_cast<float*>(host_ptr());
  }
  const float* f32() const {
    HUGINN_DASSERT(dtype_ == DType::kF32, "tensor is not F32");
    return static_cast<const float*>(host_ptr());
  }
  // Row r of a 2-D (or flattened-leading) view.
  float* row(int64_t r) { return f32() + r * strides_[0]; }
  const float* row(int64_t r) const { return f32() + r * strides_[0]; }

  // Same memory, new shape; requires a contiguous tensor with the same element count.
  Tensor reshape(std::initializer_list<int64_t> shape) const;
  Tensor reshape(std::span<const int64_t> shape) const;
  // Rows [begin, end) along dimension 0.
  Tensor rows(int64_t begin, int64_t end) const;
  // Columns [begin, end) of a 2-D view; keeps the row stride.
  Tensor cols(int64_t begin, int64_t end) const;
  // A contiguous owning host copy (converting nothing). Host tensors only.
  Tensor clone() const;
  // Copies the elements of `src` (same shape and dtype, any strides) into this tensor. Host
  // tensors only.
  void copy_from(const Tensor& src);

 private:
  friend struct DeviceAccess;
  void* host_ptr() const {
    if (space_ != nullptr) [[unlikely]]
      host_access_refused();
    return data_;
  }
  [[noreturn]] void host_access_refused() const;

  void* data_ = nullptr;
  const char* space_ = nullptr;  // nullptr: host; else the owning backend's space name
  DType dtype_ = DType::kF32;
  int ndim_ = 0;
  int64_t shape_[kMaxDims] = {};
  int64_t strides_[kMaxDims] = {};
  std::shared_ptr<void> owner_;
};

}  // namespace huginn
