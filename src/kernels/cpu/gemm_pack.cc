// Packing helpers shared by the packed GEMMs (gemm_packed.h): per-thread panel buffers and the
// transposing copy of 32-bit elements (fp32 values or bf16 pairs). Shapes: dst [kc][NW].
#include <cstdlib>
#include <cstring>
#include <string>

#include "kernels/cpu/gemm_packed.h"

namespace huginn::cpu {

void* gemm_buffer(int slot, size_t bytes) {
  struct Buf {
    void* p = nullptr;
    size_t cap = 0;
    ~Buf() { std::free(p); }
  };
  thread_local Buf bufs[2];
  HUGINN_ASSERT(slot >= 0 && slot < 2, "gemm_buffer: bad slot");
  Buf& b = bufs[slot];
  if (b.cap < bytes) {
    const size_t cap = (std::max(bytes, b.cap + b.cap / 2) + 63) / 64 * 64 + 64;
    std::free(b.p);
    b.p = std::aligned_alloc(64, cap);
    b.cap = b.p ? cap : 0;
    if (!b.p) throw Error("out of memory: GEMM panel buffer of " + std::to_string(bytes) + " bytes");
  }
  return b.p;
}

namespace {

#ifdef HUGINN_HAVE_AVX512
// out[j] = column j of the 16x16 block whose row i is rows[i] (16 x 32-bit each).
inline void transpose16(__m512i r[16]) {
  __m512i t[16], u[16];
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
  }
  // u[4g + c], 128-bit lane l: column 4l + c of rows 4g..4g+3.
  for (int g = 0; g < 4; ++g) {
    u[4 * g + 0] = _mm512_unpacklo_epi64(t[4 * g], t[4 * g + 2]);
    u[4 * g + 1] = _mm512_unpackhi_epi64(t[4 * g], t[4 * g + 2]);
    u[4 * g + 2] = _mm512_unpacklo_epi64(t[4 * g + 1], t[4 * g + 3]);
    u[4 * g + 3] = _mm512_unpackhi_epi64(t[4 * g + 1], t[4 * g + 3]);
  }
  for (int c = 0; c < 4; ++c) {
    const __m512i v02 = _mm512_shuffle_i32x4(u[c], u[4 + c], 0x88);
    const __m512i v13 = _mm512_shuffle_i32x4(u[c], u[4 + c], 0xdd);
    const __m512i w02 = _mm512_shuffle_i32x4(u[8 + c], u[12 + c], 0x88);
    const __m512i w13 = _mm512_shuffle_i32x4(u[8 + c], u[12 + c], 0xdd);
    r[0 + c] = _mm512_shuffle_i32x4(v02, w02, 0x88);
    r[8 + c] = _mm512_shuffle_i32x4(v02, w02, 0xdd);
    r[4 + c] = _mm512_shuffle_i32x4(v13, w13, 0x88);
    r[12 + c] = _mm512_shuffle_i32x4(v13, w13, 0xdd);
  }
}
#endif

}  // namespace

void pack_transposed_u32(const void* src, int64_t ld_bytes, int64_t cols, int64_t kvalid,
                         int64_t kc, int NW, uint32_t* dst) {
  const char* s = static_cast<const char*>(src);
  auto at = [&](int64_t n, int64_t k) {
    uint32_t v;
    std::memcpy(&v, s + n * ld_bytes + k * 4, 4);  // rows need not be 4-byte aligned
    return v;
  };
  int64_t n0 = 0;
#ifdef HUGINN_HAVE_AVX512
  const int64_t kfull = kvalid / 16 * 16;
  for (; n0 + 16 <= cols; n0 += 16) {
    for (int64_t k0 = 0; k0 < kfull; k0 += 16) {
      __m512i r[16];
      for (int i = 0; i < 16; ++i) r[i] = _mm512_loadu_si512(s + (n0 + i) * ld_bytes + k0 * 4);
      transpose16(r);
      for (int j = 0; j < 16; ++j) _mm512_storeu_si512(dst + (k0 + j) * NW + n0, r[j]);
    }
    for (int64_t k = kfull; k < kc; ++k)
      for (int64_t n = n0; n < n0 + 16; ++n) dst[k * NW + n] = k < kvalid ? at(n, k) : 0u;
  }
#endif
  for (int64_t k = 0; k < kc; ++k) {
    uint32_t* d = dst + k * NW;
    for (int64_t n = n0; n < NW; ++n) d[n] = n < cols && k < kvalid ? at(n, k) : 0u;
  }
}

void pack_rows_u32(const void* src, int64_t ld_bytes, int64_t rows, int64_t kc, int MR,
                   uint32_t* dst) {
  const char* s = static_cast<const char*>(src);
  int64_t k0 = 0;
#ifdef HUGINN_HAVE_AVX512
  if (MR <= 16) {
    const __mmask16 keep = static_cast<__mmask16>((1u << MR) - 1);
    for (; k0 + 16 <= kc; k0 += 16) {
      __m512i r[16];
      for (int i = 0; i < 16; ++i)
        r[i] = i < rows ? _mm512_loadu_si512(s + i * ld_bytes + k0 * 4) : _mm512_setzero_si512();
      transpose16(r);
      for (int j = 0; j < 16; ++j) _mm512_mask_storeu_epi32(dst + (k0 + j) * MR, keep, r[j]);
    }
  }
#endif
  for (int64_t i = 0; i < MR; ++i) {
    const char* row = s + std::min<int64_t>(i, rows - 1) * ld_bytes;
    for (int64_t k = k0; k < kc; ++k) {
      uint32_t v = 0;
      if (i < rows) std::memcpy(&v, row + k * 4, 4);
      dst[k * MR + i] = v;
    }
  }
}

void pack_transposed_bf16(const uint16_t* src, int64_t ld, int64_t cols, int64_t kc, int NW,
                          float* dst) {
  auto widen = [](uint16_t h) {
    const uint32_t u = static_cast<uint32_t>(h) << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
  };
  int64_t n0 = 0;
#ifdef HUGINN_HAVE_AVX512
  const int64_t kfull = kc / 16 * 16;
  for (; n0 + 16 <= cols; n0 += 16) {
    for (int64_t k0 = 0; k0 < kfull; k0 += 16) {
      __m512i r[16];
      for (int i = 0; i < 16; ++i) {
        const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + (n0 + i) * ld + k0));
        r[i] = _mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16);
      }
      transpose16(r);
      for (int j = 0; j < 16; ++j)
        _mm512_storeu_si512(dst + (k0 + j) * NW + n0, r[j]);
    }
    for (int64_t k = kfull; k < kc; ++k)
      for (int64_t n = n0; n < n0 + 16; ++n) dst[k * NW + n] = widen(src[n * ld + k]);
  }
#endif
  for (int64_t k = 0; k < kc; ++k) {
    float* d = dst + k * NW;
    for (int64_t n = n0; n < NW; ++n) d[n] = n < cols ? widen(src[n * ld + k]) : 0.0f;
  }
}

}  // namespace huginn::cpu
