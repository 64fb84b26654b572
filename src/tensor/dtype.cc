#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "huginn/tensor.h"

namespace huginn {

size_t dtype_size(DType t) {
  switch (t) {
    case DType::kF32: return 4;
    case DType::kBF16: return 2;
    case DType::kF16: return 2;
    case DType::kF64: return 8;
    case DType::kI32: return 4;
    case DType::kI64: return 8;
    case DType::kU8: return 1;
    case DType::kI8: return 1;
    case DType::kQ8: return 1;
    case DType::kQ4: return 1;
  }
  return 0;
}

size_t storage_bytes(DType t, int64_t numel) {
  const size_t n = static_cast<size_t>(numel);
  if (t == DType::kQ8) return n + n / kQ8Block * 2;
  if (t == DType::kQ4) return (n + 1) / 2 + n / kQ4Block * 2;
  return n * dtype_size(t);
}

const char* dtype_name(DType t) {
  switch (t) {
    case DType::kF32: return "F32";
    case DType::kBF16: return "BF16";
    case DType::kF16: return "F16";
    case DType::kF64: return "F64";
    case DType::kI32: return "I32";
    case DType::kI64: return "I64";
    case DType::kU8: return "U8";
    case DType::kI8: return "I8";
    case DType::kQ8: return "Q8";
    case DType::kQ4: return "Q4";
  }
  return "?";
}

bool dtype_from_name(const std::string& s, DType* out) {
  static const struct { const char* name; DType t; } kTable[] = {
      {"F32", DType::kF32}, {"BF16", DType::kBF16}, {"F16", DType::kF16}, {"F64", DType::kF64},
      {"I32", DType::kI32}, {"I64", DType::kI64},   {"U8", DType::kU8},
      {"I8", DType::kI8}};  // not Q8 or Q4: they are no safetensors dtypes
  for (const auto& e : kTable) {
    if (s == e.name) {
      *out = e.t;
      return true;
    }
  }
  return false;
}

uint16_t f32_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40);  // NaN
  u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest even
  return static_cast<uint16_t>(u >> 16);
}

float f16_to_f32(uint16_t h) {
  uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t man = h & 0x3ffu;
  uint32_t u;
  if (exp == 0) {
    if (man == 0) {
      u = sign;
    } else {  // subnormal: normalise
      int e = -1;
      do {
        ++e;
        man <<= 1;
      } while ((man & 0x400u) == 0);
      u = sign | static_cast<uint32_t>(127 - 15 - e) << 23 | (man & 0x3ffu) << 13;
    }
  } else if (exp == 31) {
    u = sign | 0x7f800000u | man << 13;
  } else {
    u = sign | (exp + 127 - 15) << 23 | man << 13;
  }
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

uint16_t f32_to_f16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  uint32_t sign = (u >> 16) & 0x8000u;
  uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00u);  // NaN
  if (a >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // overflow -> inf
  if (a < 0x38800000u) {  // subnormal or zero in f16
    if (a < 0x33000000u) return static_cast<uint16_t>(sign);
    uint32_t man = (a & 0x7fffffu) | 0x800000u;
    int shift = 113 - static_cast<int>(a >> 23) + 13;  // 126 - exp + 14 - 1
    uint32_t half = man >> shift;
    uint32_t rem = man & ((1u << shift) - 1);
    uint32_t mid = 1u << (shift - 1);
    if (rem > mid || (rem == mid && (half & 1u))) ++half;
    return static_cast<uint16_t>(sign | half);
  }
  uint32_t r = a - 0x38000000u;  // rebias exponent 127 -> 15
  r += 0xfffu + ((r >> 13) & 1u);
  return static_cast<uint16_t>(sign | (r >> 13));
}

void convert_to_f32(const void* src, DType t, float* dst, int64_t n) {
  switch (t) {
    case DType::kF32: std::memcpy(dst, src, static_cast<size_t>(n) * 4); return;
    case DType::kBF16: {
      auto* s = static_cast<const uint16_t*>(src);
      for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_f32(s[i]);
      return;
    }
    case DType::kF16: {
      auto* s = static_cast<const uint16_t*>(src);
      for (int64_t i = 0; i < n; ++i) dst[i] = f16_to_f32(s[i]);
      return;
    }
    case DType::kF64: {
      auto* s = static_cast<const double*>(src);
      for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<float>(s[i]);
      return;
    }
    default: throw Error(std::string("cannot convert ") + dtype_name(t) + " to F32");
  }
}

void convert_from_f32(const float* src, void* dst, DType t, int64_t n) {
  switch (t) {
    case DType::kF32: std::memcpy(dst, src, static_cast<size_t>(n) * 4); return;
    case DType::kBF16: {
      auto* d = static_cast<uint16_t*>(dst);
      for (int64_t i = 0; i < n; ++i) d[i] = f32_to_bf16(src[i]);
      return;
    }
    case DType::kF16: {
      auto* d = static_cast<uint16_t*>(dst);
      for (int64_t i = 0; i < n; ++i) d[i] = f32_to_f16(src[i]);
      return;
    }
    case DType::kF64: {
      auto* d = static_cast<double*>(dst);
      for (int64_t i = 0; i < n; ++i) d[i] = src[i];
      return;
    }
    default: throw Error(std::string("cannot convert F32 to ") + dtype_name(t));
  }
}

// --- weight formats --------------------------------------------------------------------------

namespace {

// Row n of a Q8 matrix from its F32 values wr [K]: int8 values into qv [K], scales into qs [K/32].
void quantize_q8_row(const float* wr, int64_t n, int64_t K, int8_t* qv, uint16_t* qs) {
  for (int64_t b = 0; b < K / kQ8Block; ++b) {
    const float* src = wr + b * kQ8Block;
    float amax = 0.0f;
    for (int64_t i = 0; i < kQ8Block; ++i) {
      if (!std::isfinite(src[i]))
        throw Error("cannot quantize a weight with a non-finite value at [" + std::to_string(n) +
                    ", " + std::to_string(b * kQ8Block + i) + "]");
      amax = std::max(amax, std::fabs(src[i]));
    }
    const uint16_t s16 = f32_to_f16(amax / 127.0f);
    const float s = f16_to_f32(s16);
    if (std::isinf(s))
      throw Error("cannot quantize to Q8: block max " + std::to_string(amax) +
                  " overflows the F16 scale");
    qs[b] = s16;
    int8_t* dst = qv + b * kQ8Block;
    for (int64_t i = 0; i < kQ8Block; ++i) {
      const float r = s > 0.0f ? std::nearbyint(src[i] / s) : 0.0f;  // default mode: half-even
      dst[i] = static_cast<int8_t>(std::clamp(r, -127.0f, 127.0f));
    }
  }
}

// Row n of a Q4 matrix from its F32 values wr [K]: codes into qc [K/2], scales into qs [K/32].
void quantize_q4_row(const float* wr, int64_t n, int64_t K, uint8_t* qc, uint16_t* qs) {
  for (int64_t b = 0; b < K / kQ4Block; ++b) {
    const float* src = wr + b * kQ4Block;
    float m = 0.0f;  // the value of largest magnitude, the first one on ties
    for (int64_t i = 0; i < kQ4Block; ++i) {
      if (!std::isfinite(src[i]))
        throw Error("cannot quantize a weight with a non-finite value at [" + std::to_string(n) +
                    ", " + std::to_string(b * kQ4Block + i) + "]");
      if (std::fabs(src[i]) > std::fabs(m)) m = src[i];
    }
    const uint16_t s16 = f32_to_f16(m / -8.0f);
    const float s = f16_to_f32(s16);
    if (std::isinf(s))
      throw Error("cannot quantize to Q4: block max " + std::to_string(std::fabs(m)) +
                  " overflows the F16 scale");
    qs[b] = s16;
    uint8_t* dst = qc + b * kQ4Block / 2;
    for (int64_t i = 0; i < kQ4Block; i += 2) {
      uint8_t u[2];
      for (int j = 0; j < 2; ++j) {
        const float r = s != 0.0f ? std::nearbyint(src[i + j] / s) : 0.0f;  // half-even
        u[j] = static_cast<uint8_t>(std::clamp(r, -8.0f, 7.0f) + 8.0f);
      }
      dst[i / 2] = static_cast<uint8_t>(u[0] | (u[1] << 4));
    }
  }
}

// Value k of row n of a Q4 matrix (codes qc, scales qs, row length K).
inline float q4_at(const uint8_t* qc, const uint16_t* qs, int64_t K, int64_t n, int64_t k) {
  const uint8_t byte = qc[(n * K + k) / 2];
  const int code = (k % 2 == 0 ? byte & 15 : byte >> 4) - 8;
  return static_cast<float>(code) * f16_to_f32(qs[(n * K + k) / kQ4Block]);
}

void check_block_k(const Tensor& w, DType to) {
  if (w.dim(1) % kQ8Block != 0)
    throw Error("cannot quantize a " + w.shape_str() + " weight to " + dtype_name(to) + ": K = " +
                std::to_string(w.dim(1)) + " is not a multiple of " + std::to_string(kQ8Block));
}

}  // namespace

// The row quantizers run inside convert_weight, a few F32 rows at a time (the one loop for both
// formats); these are its F32 entry points.
Tensor quantize_q8(const Tensor& w) {
  HUGINN_ASSERT(w.ndim() == 2 && w.dtype() == DType::kF32, "quantize_q8: F32 [N, K] expected");
  return convert_weight(w, DType::kQ8);
}

Tensor quantize_q4(const Tensor& w) {
  HUGINN_ASSERT(w.ndim() == 2 && w.dtype() == DType::kF32, "quantize_q4: F32 [N, K] expected");
  return convert_weight(w, DType::kQ4);
}

void weight_rows_to_f32(const Tensor& w, int64_t n0, int64_t n1, float* dst) {
  const int64_t K = w.dim(1);
  switch (w.dtype()) {
    case DType::kF32:
      for (int64_t n = n0; n < n1; ++n) std::memcpy(dst + (n - n0) * K, w.row(n), K * 4);
      return;
    case DType::kBF16:
      for (int64_t n = n0; n < n1; ++n)
        convert_to_f32(w.data<uint16_t>() + n * w.stride(0), DType::kBF16, dst + (n - n0) * K, K);
      return;
    case DType::kQ8: {
      const int8_t* qv = w.q8_values();
      const uint16_t* qs = w.q8_scales();
      for (int64_t n = n0; n < n1; ++n)
        for (int64_t k = 0; k < K; ++k)
          dst[(n - n0) * K + k] =
              static_cast<float>(qv[n * K + k]) * f16_to_f32(qs[(n * K + k) / kQ8Block]);
      return;
    }
    case DType::kQ4: {
      const uint8_t* qc = w.q4_codes();
      const uint16_t* qs = w.q4_scales();
      for (int64_t n = n0; n < n1; ++n)
        for (int64_t k = 0; k < K; ++k) dst[(n - n0) * K + k] = q4_at(qc, qs, K, n, k);
      return;
    }
    default: throw Error(std::string("a weight cannot be ") + dtype_name(w.dtype()));
  }
}

// Through F32 a few rows at a time (about 4 MB), so that converting a matrix holds the source
// and the result, never a whole F32 copy besides (a 17920 x 5280 BF16 matrix to Q8: 95 MB out,
// not 380 MB of F32 in between).
Tensor convert_weight(const Tensor& w, DType to) {
  HUGINN_ASSERT(w.ndim() == 2, "convert_weight: 2-D weight expected");
  if (w.dtype() == to) return w;
  if (to != DType::kF32 && to != DType::kBF16 && !is_quantized(to))
    throw Error(std::string("weights cannot be converted to ") + dtype_name(to) +
                " (expected F32, BF16, Q8 or Q4)");
  const int64_t N = w.dim(0), K = w.dim(1);
  if (to == DType::kF32) {
    Tensor f = Tensor::empty({N, K});
    weight_rows_to_f32(w, 0, N, f.f32());
    return f;
  }
  if (is_quantized(to)) check_block_k(w, to);
  Tensor out = Tensor::empty({N, K}, to);
  const int64_t chunk = std::max<int64_t>(1, (int64_t{1} << 20) / std::max<int64_t>(1, K));
  std::vector<float> f(static_cast<size_t>(std::min(N, chunk) * K));
  for (int64_t n0 = 0; n0 < N; n0 += chunk) {
    const int64_t n1 = std::min(N, n0 + chunk);
    weight_rows_to_f32(w, n0, n1, f.data());
    if (to == DType::kBF16) {
      convert_from_f32(f.data(), static_cast<uint16_t*>(out.raw()) + n0 * K, DType::kBF16, (n1 - n0) * K);
      continue;
    }
    if (to == DType::kQ4) {
      auto* qc = static_cast<uint8_t*>(out.raw());
      auto* qs = reinterpret_cast<uint16_t*>(qc + N * K / 2);
      for (int64_t n = n0; n < n1; ++n)
        quantize_q4_row(f.data() + (n - n0) * K, n, K, qc + n * K / 2, qs + n * (K / kQ4Block));
      continue;
    }
    int8_t* qv = static_cast<int8_t*>(out.raw());
    auto* qs = reinterpret_cast<uint16_t*>(qv + N * K);
    for (int64_t n = n0; n < n1; ++n)
      quantize_q8_row(f.data() + (n - n0) * K, n, K, qv + n * K, qs + n * (K / kQ8Block));
  }
  return out;
}

}  // namespace huginn
