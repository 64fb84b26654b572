// Packing for the blocked GEMM (gemm_packed.h), one object per instruction set: A panels
// [k][rows] and B micro-panels [k][NR] from F32 / BF16 / Q8 / Q4 weight rows, transposed in
// registers (16 x 16 32-bit blocks on AVX-512, 8 x 8 on AVX2; element by element in the generic
// object and on the ragged k edges), or from rows along N (copied). A 32-bit element of a BF16
// row is a pair of values (k, k+1), of a Q8 row four values and of a Q4 row eight (nibbles in k
// order), so one transpose moves 2, 4 or 8 k at once. Widening BF16 is exact (it is the top half
// of an F32); dequantizing Q8 / Q4 is exact (an int8 or int4 times an F16 scale has at most 18
// significant bits).
// Shapes: A [rows <= 16][kc] and B [cols <= NR][kc] as stored, K the full row length of Q8 / Q4.
#include "kernels/cpu/gemm_packed.h"

namespace huginn::cpu::HUGINN_ISA_NS {
namespace {

// The chunk sources' pieces must inline into the stream loop: out of line (GCC's choice for the
// 16 x 16 transpose once every row count instantiates it) the chunk's 16 registers make a round
// trip through the stack per call, which cost decode a third of its time (perf, M = 1 BF16).
#define HUGINN_INLINE inline __attribute__((always_inline))

// ---- element by element: the generic object, and the k tails of the SIMD ones -------------

// dst[k][NR] = get(n, k) for n < cols (zero up to NR), k in [k_begin, k_end).
template <class Get>
void pack_b_ref(const Get& get, int64_t cols, int64_t k_begin, int64_t k_end, int NR,
                float* dst) {
  for (int64_t k = k_begin; k < k_end; ++k)
    for (int64_t n = 0; n < NR; ++n) dst[k * NR + n] = n < cols ? get(n, k) : 0.0f;
}

void pack_a_ref(const float* src, int64_t ld, int rows, int64_t k_begin, int64_t k_end,
                float* dst) {
  for (int64_t k = k_begin; k < k_end; ++k)
    for (int i = 0; i < rows; ++i) dst[k * rows + i] = src[i * ld + k];
}

float q8_value(const int8_t* q, const uint16_t* s, int64_t K, int64_t n, int64_t k) {
  return static_cast<float>(q[n * K + k]) * f16_to_f32(s[n * (K / kQ8Block) + k / kQ8Block]);
}
// Q4: codes c (two per byte, k even in the low nibble), value (code - 8) · scale.
float q4_value(const uint8_t* c, const uint16_t* s, int64_t K, int64_t n, int64_t k) {
  const uint8_t byte = c[(n * K + k) / 2];
  const int code = (k % 2 == 0 ? byte & 15 : byte >> 4) - 8;
  return static_cast<float>(code) * f16_to_f32(s[n * (K / kQ4Block) + k / kQ4Block]);
}

#if HUGINN_KERNEL_ISA == HUGINN_ISA_AVX512
constexpr int kT = 16;  // transpose block: kT rows x kT 32-bit elements
using Reg = __m512i;

// r[j] = column j of the 16 x 16 block whose row i is r[i] (32-bit elements).
HUGINN_INLINE void transpose(Reg r[16]) {
  Reg t[16], u[16];
#pragma GCC unroll 8
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
  }
  // u[4g + c], 128-bit lane l: column 4l + c of rows 4g..4g+3.
#pragma GCC unroll 4
  for (int g = 0; g < 4; ++g) {
    u[4 * g + 0] = _mm512_unpacklo_epi64(t[4 * g], t[4 * g + 2]);
    u[4 * g + 1] = _mm512_unpackhi_epi64(t[4 * g], t[4 * g + 2]);
    u[4 * g + 2] = _mm512_unpacklo_epi64(t[4 * g + 1], t[4 * g + 3]);
    u[4 * g + 3] = _mm512_unpackhi_epi64(t[4 * g + 1], t[4 * g + 3]);
  }
#pragma GCC unroll 4
  for (int c = 0; c < 4; ++c) {
    const Reg v02 = _mm512_shuffle_i32x4(u[c], u[4 + c], 0x88);
    const Reg v13 = _mm512_shuffle_i32x4(u[c], u[4 + c], 0xdd);
    const Reg w02 = _mm512_shuffle_i32x4(u[8 + c], u[12 + c], 0x88);
    const Reg w13 = _mm512_shuffle_i32x4(u[8 + c], u[12 + c], 0xdd);
    r[0 + c] = _mm512_shuffle_i32x4(v02, w02, 0x88);
    r[8 + c] = _mm512_shuffle_i32x4(v02, w02, 0xdd);
    r[4 + c] = _mm512_shuffle_i32x4(v13, w13, 0x88);
    r[12 + c] = _mm512_shuffle_i32x4(v13, w13, 0xdd);
  }
}
inline Reg load_row(const void* p) { return _mm512_loadu_si512(p); }
// The first `bytes` bytes of p (a multiple of 4), the rest zero, without touching memory past them.
inline Reg load_row_part(const void* p, int bytes) {
  return _mm512_maskz_loadu_epi8(bytes >= 64 ? ~0ull : (1ull << bytes) - 1, p);
}
inline Reg zero_reg() { return _mm512_setzero_si512(); }
inline void store_rows(float* p, Reg v, int rows) {
  _mm512_mask_storeu_epi32(p, static_cast<__mmask16>((1u << rows) - 1), v);
}
inline Reg bf16_even(Reg v) { return _mm512_slli_epi32(v, 16); }
inline Reg bf16_odd(Reg v) { return _mm512_and_si512(v, _mm512_set1_epi32(int(0xffff0000u))); }
// Byte t of every 32-bit lane, sign-extended, as F32, times the scales.
template <int t>
inline Reg q8_byte(Reg v, const float* scales) {
  const Reg b = t == 3 ? _mm512_srai_epi32(v, 24) : _mm512_srai_epi32(_mm512_slli_epi32(v, 24 - 8 * t), 24);
  return _mm512_castps_si512(_mm512_mul_ps(_mm512_cvtepi32_ps(b), _mm512_loadu_ps(scales)));
}
// Nibble t of every 32-bit lane, minus 8, as F32, times the scales. vpermps looks the value up
// in a 16-entry table by the index's low 4 bits, which are the nibble once shifted down: one
// instruction for the mask, subtract and convert (the same F32 values, so the same bits).
template <int t>
inline Reg q4_nibble(Reg v, const float* scales) {
  const __m512 codes = _mm512_setr_ps(-8, -7, -6, -5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5, 6, 7);
  const __m512 w = _mm512_permutexvar_ps(t == 0 ? v : _mm512_srli_epi32(v, 4 * t), codes);
  return _mm512_castps_si512(_mm512_mul_ps(w, _mm512_loadu_ps(scales)));
}
inline void widen_f16(const uint16_t* h, float* out) {
  _mm512_store_ps(out, _mm512_cvtph_ps(_mm256_load_si256(reinterpret_cast<const __m256i*>(h))));
}
using FR = __m512;  // kT floats
inline FR as_f(Reg r) { return _mm512_castsi512_ps(r); }
inline FR fma(float a, FR b, FR c) { return _mm512_fmadd_ps(_mm512_set1_ps(a), b, c); }
inline FR load_n(const float* p, int n) {
  return _mm512_maskz_loadu_ps(static_cast<__mmask16>((1u << n) - 1), p);
}
inline void store_n(float* p, FR v, int n) {
  _mm512_mask_storeu_ps(p, static_cast<__mmask16>((1u << n) - 1), v);
}
inline FR zero_f() { return _mm512_setzero_ps(); }
inline void store_f(float* p, FR v) { _mm512_storeu_ps(p, v); }
#define HUGINN_SIMD_PACK 1
#elif HUGINN_KERNEL_ISA == HUGINN_ISA_AVX2
constexpr int kT = 8;
using Reg = __m256i;

HUGINN_INLINE void transpose(Reg ri[8]) {
  __m256 r[8], t[8], u[8];
  for (int i = 0; i < 8; ++i) r[i] = _mm256_castsi256_ps(ri[i]);
  for (int i = 0; i < 4; ++i) {
    t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  for (int g = 0; g < 2; ++g) {
    u[4 * g + 0] = _mm256_shuffle_ps(t[4 * g], t[4 * g + 2], 0x44);
    u[4 * g + 1] = _mm256_shuffle_ps(t[4 * g], t[4 * g + 2], 0xee);
    u[4 * g + 2] = _mm256_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0x44);
    u[4 * g + 3] = _mm256_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0xee);
  }
  for (int c = 0; c < 4; ++c) {
    ri[c] = _mm256_castps_si256(_mm256_permute2f128_ps(u[c], u[4 + c], 0x20));
    ri[4 + c] = _mm256_castps_si256(_mm256_permute2f128_ps(u[c], u[4 + c], 0x31));
  }
}
inline Reg load_row(const void* p) { return _mm256_loadu_si256(static_cast<const Reg*>(p)); }
inline Reg zero_reg() { return _mm256_setzero_si256(); }
inline void store_rows(float* p, Reg v, int rows) {
  const Reg m = _mm256_cmpgt_epi32(_mm256_set1_epi32(rows), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  _mm256_maskstore_epi32(reinterpret_cast<int*>(p), m, v);
}
inline Reg bf16_even(Reg v) { return _mm256_slli_epi32(v, 16); }
inline Reg bf16_odd(Reg v) { return _mm256_and_si256(v, _mm256_set1_epi32(int(0xffff0000u))); }
template <int t>
inline Reg q8_byte(Reg v, const float* scales) {
  const Reg b = t == 3 ? _mm256_srai_epi32(v, 24) : _mm256_srai_epi32(_mm256_slli_epi32(v, 24 - 8 * t), 24);
  return _mm256_castps_si256(_mm256_mul_ps(_mm256_cvtepi32_ps(b), _mm256_loadu_ps(scales)));
}
template <int t>
inline Reg q4_nibble(Reg v, const float* scales) {
  const Reg b = _mm256_sub_epi32(_mm256_and_si256(_mm256_srli_epi32(v, 4 * t), _mm256_set1_epi32(15)),
                                 _mm256_set1_epi32(8));
  return _mm256_castps_si256(_mm256_mul_ps(_mm256_cvtepi32_ps(b), _mm256_loadu_ps(scales)));
}
inline void widen_f16(const uint16_t* h, float* out) {
  _mm256_store_ps(out, _mm256_cvtph_ps(_mm_load_si128(reinterpret_cast<const __m128i*>(h))));
}
using FR = __m256;
inline FR as_f(Reg r) { return _mm256_castsi256_ps(r); }
inline FR fma(float a, FR b, FR c) { return _mm256_fmadd_ps(_mm256_set1_ps(a), b, c); }
inline __m256i lane_mask(int n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
inline FR load_n(const float* p, int n) { return _mm256_maskload_ps(p, lane_mask(n)); }
inline Reg load_row_part(const void* p, int bytes) {
  return _mm256_maskload_epi32(static_cast<const int*>(p), lane_mask(bytes / 4));
}
inline void store_n(float* p, FR v, int n) { _mm256_maskstore_ps(p, lane_mask(n), v); }
inline FR zero_f() { return _mm256_setzero_ps(); }
inline void store_f(float* p, FR v) { _mm256_storeu_ps(p, v); }
#define HUGINN_SIMD_PACK 1
#endif

#ifdef HUGINN_SIMD_PACK
// The kT rows starting at row g of a B micro-panel (rows past `cols` read as zero). load() also
// prefetches what comes next, since decode reads every weight from memory once, in rows too
// short for the hardware prefetcher to ramp up on: when packing (ahead > 0), the same place
// `ahead` bytes on (the next micro-panel, packed next); when the rows are streamed front to back
// (ahead = 0, stream_src), the next kT rows, which follow these in memory, as one linear walk
// paced so that it ends as these rows do.
struct RowGroup {
  static constexpr int kLinesPerLoad = kT * static_cast<int>(sizeof(Reg)) / 64;
  const char* row[kT];
  const char* next;  // linear mode: the first of the next kT rows
  int g, n;          // first row (in the micro-panel), valid rows
  int64_t ahead;     // packing mode: prefetch distance in bytes
  RowGroup(const void* base, int64_t ld_bytes, int64_t cols, int g0, int64_t ahead_bytes)
      : g(g0), ahead(ahead_bytes) {
    n = static_cast<int>(std::clamp<int64_t>(cols - g, 0, kT));
    for (int i = 0; i < kT; ++i)
      row[i] = static_cast<const char*>(base) + (g + std::min(i, std::max(n - 1, 0))) * ld_bytes;
    next = static_cast<const char*>(base) + (g + kT) * ld_bytes;
  }
  HUGINN_INLINE void load(int64_t off_bytes, Reg r[kT]) const {
    if (n == kT) {
      if (ahead == 0) {
        const char* p = next + off_bytes * kT;
        for (int i = 0; i < kLinesPerLoad; ++i) __builtin_prefetch(p + 64 * i, 0, 3);
      }
#pragma GCC unroll 16
      for (int i = 0; i < kT; ++i) {
        if (ahead > 0) __builtin_prefetch(row[i] + off_bytes + ahead, 0, 3);
        r[i] = load_row(row[i] + off_bytes);
      }
      return;
    }
    for (int i = 0; i < kT; ++i) r[i] = i < n ? load_row(row[i] + off_bytes) : zero_reg();
  }
  // The same with only `bytes` of each row (a multiple of 4) read, the rest zero.
  void load_part(int64_t off_bytes, int bytes, Reg r[kT]) const {
    for (int i = 0; i < kT; ++i) r[i] = i < n ? load_row_part(row[i] + off_bytes, bytes) : zero_reg();
  }
};

// stream_src's RowGroups prefetch the next rows linearly (RowGroup, ahead = 0).
constexpr int64_t kStreamAhead = 0;

// ---- weight-row sources: each transposes one chunk of a RowGroup's rows in registers and hands
// the result to emit(j, w) for j = 0, 1, ... in k order, w = values k + j of the kT rows as F32 ----

struct SrcF32 {
  static constexpr int kSteps = kT;  // k values per chunk
  static constexpr bool kGrouped = false;  // rows in scale groups of 32 (chunk_part)
  const float* w;
  int64_t ld;
  RowGroup rows(int64_t cols, int g, int64_t ahead_rows) const {
    return RowGroup(w, ld * 4, cols, g, ahead_rows > 0 ? ahead_rows * ld * 4 : kStreamAhead);
  }
  template <class Emit>
  HUGINN_INLINE void chunk(const RowGroup& rg, int64_t k, const Emit& emit) const {
    Reg r[kT];
    rg.load(k * 4, r);
    transpose(r);
#pragma GCC unroll 16  // r[] must stay in registers
    for (int j = 0; j < kT; ++j) emit(j, as_f(r[j]));
  }
  float at(int64_t n, int64_t k) const { return w[n * ld + k]; }
};

struct SrcBf16 {
  static constexpr int kSteps = 2 * kT;  // a 32-bit element is a pair (k, k + 1)
  static constexpr bool kGrouped = false;
  const uint16_t* w;
  int64_t ld;
  RowGroup rows(int64_t cols, int g, int64_t ahead_rows) const {
    return RowGroup(w, ld * 2, cols, g, ahead_rows > 0 ? ahead_rows * ld * 2 : kStreamAhead);
  }
  template <class Emit>
  HUGINN_INLINE void chunk(const RowGroup& rg, int64_t k, const Emit& emit) const {
    Reg r[kT];
    rg.load(k * 2, r);
    transpose(r);  // r[j]: the pair (k + 2j, k + 2j + 1) of every row
#pragma GCC unroll 16
    for (int j = 0; j < kT; ++j) {
      emit(2 * j, as_f(bf16_even(r[j])));
      emit(2 * j + 1, as_f(bf16_odd(r[j])));
    }
  }
  float at(int64_t n, int64_t k) const { return bf16_to_f32(w[n * ld + k]); }
};

// The F16 scales of the groups of 32 values that a chunk of `kn` values at k covers, widened:
// sc[b][i] = scale of group b of row g + i (zero past the valid rows or past kn).
template <int kGroups>
void chunk_scales(const uint16_t* s, int64_t nb, int64_t b0, const RowGroup& rg, int kn,
                  float (&sc)[kGroups][kT]) {
  for (int b = 0; b < kGroups; ++b) {
    alignas(32) uint16_t h[kT] = {};
    if (b * kQ8Block < kn)
      for (int i = 0; i < rg.n; ++i) h[i] = s[(rg.g + i) * nb + b0 + b];
    widen_f16(h, sc[b]);
  }
}

// Q8 (kPer = 4: a 32-bit element is four int8 values) and Q4 (kPer = 8: eight 4-bit codes,
// low nibble first) rows: values v (row n0's), F16 scales s, one per 32 values.
template <int kPer>
struct SrcQuant {
  static constexpr int kSteps = kPer * kT;
  static constexpr bool kGrouped = true;
  static_assert(kSteps % kQ8Block == 0 && kQ8Block == kQ4Block, "a chunk covers whole groups");
  static constexpr int kGroups = kSteps / kQ8Block;
  const uint8_t* v;    // row n0's values
  const uint16_t* s;   // row n0's scales
  int64_t K, k0;       // row length; the k block's start (a multiple of 32)
  static constexpr int64_t bytes(int64_t values) { return values * 4 / kPer; }
  RowGroup rows(int64_t cols, int g, int64_t ahead_rows) const {
    return RowGroup(v + bytes(k0), bytes(K), cols, g,
                    ahead_rows > 0 ? ahead_rows * bytes(K) : kStreamAhead);
  }
  template <class Emit>
  HUGINN_INLINE void chunk(const RowGroup& rg, int64_t k, const Emit& emit) const {
    chunk_part(rg, k, kSteps, emit);
  }
  // The first `kn` values (a multiple of 32: rows end on a scale group, not always on a chunk).
  template <class Emit>
  HUGINN_INLINE void chunk_part(const RowGroup& rg, int64_t k, int kn, const Emit& emit) const {
    alignas(64) float sc[kGroups][kT];
    chunk_scales<kGroups>(s, K / kQ8Block, (k0 + k) / kQ8Block, rg, kn, sc);
    Reg r[kT];
    if (kn == kSteps) {
      rg.load(bytes(k), r);
    } else {
      rg.load_part(bytes(k), static_cast<int>(bytes(kn)), r);
    }
    transpose(r);  // r[j]: values k + kPer·j ... of every row, one per byte (Q8) or nibble (Q4)
#pragma GCC unroll 16
    for (int j = 0; j < kT; ++j) {
      if (kPer * j >= kn) break;
      const float* scj = sc[kPer * j / kQ8Block];
      [&]<int... t>(std::integer_sequence<int, t...>) {
        (emit(kPer * j + t, as_f(value<t>(r[j], scj))), ...);
      }(std::make_integer_sequence<int, kPer>{});
    }
  }
  template <int t>
  static Reg value(Reg r, const float* scales) {
    if constexpr (kPer == 4) return q8_byte<t>(r, scales);
    else return q4_nibble<t>(r, scales);
  }
  float at(int64_t n, int64_t k) const {
    if constexpr (kPer == 4) return q8_value(reinterpret_cast<const int8_t*>(v), s, K, n, k0 + k);
    else return q4_value(v, s, K, n, k0 + k);
  }
};
using SrcQ8 = SrcQuant<4>;
using SrcQ4 = SrcQuant<8>;

// B micro-panel [k][NR] from a source: whole chunks in registers, the k tail element by element.
// Whole scale groups of a Q8 / Q4 row that end it short of a full chunk go through chunk_part.
template <class Src>
constexpr int64_t part_steps(int64_t left) {
  if constexpr (Src::kGrouped) return left / kQ8Block * kQ8Block;
  return 0;
}

template <class Src>
void pack_b_src(const Src& src, int64_t cols, int64_t kc, int NR, float* dst) {
  int64_t kfull = kc / Src::kSteps * Src::kSteps;
  const int64_t kpart = part_steps<Src>(kc - kfull);
  for (int g = 0; g < NR; g += kT) {
    const RowGroup rg = src.rows(cols, g, NR);
    auto store = [&](int64_t k) { return [&, k](int j, FR w) { store_f(dst + (k + j) * NR + g, w); }; };
    for (int64_t k = 0; k < kfull; k += Src::kSteps) src.chunk(rg, k, store(k));
    if constexpr (Src::kGrouped)
      if (kpart > 0) src.chunk_part(rg, kfull, static_cast<int>(kpart), store(kfull));
  }
  kfull += kpart;
  pack_b_ref([&](int64_t n, int64_t k) { return src.at(n, k); }, cols, kfull, kc, NR, dst);
}

// C[M][cols of the micro-panel] (= or +=) a[kc][M] · B, B's chunks used as they come out of the
// transpose: per kT-column group, M accumulators, one FMA chain per output in k order (the chain
// of micro_tile on the packed panel, so the bits are the same).
template <int M, class Src>
void stream_src(const Src& src, int64_t cols, int64_t kc, int NR, const float* a, float* c,
                int64_t ldc, bool load_c) {
  const int64_t kfull = kc / Src::kSteps * Src::kSteps;
  const int64_t kpart = part_steps<Src>(kc - kfull);
  for (int g = 0; g < NR && g < cols; g += kT) {
    const RowGroup rg = src.rows(cols, g, 0);
    FR acc[M];
    for (int m = 0; m < M; ++m) acc[m] = load_c ? load_n(c + m * ldc + g, rg.n) : zero_f();
    auto fmas = [&](int64_t k) {
      return [&, k](int j, FR w) {
        const float* ak = a + (k + j) * M;
        for (int m = 0; m < M; ++m) acc[m] = fma(ak[m], w, acc[m]);
      };
    };
    for (int64_t k = 0; k < kfull; k += Src::kSteps) src.chunk(rg, k, fmas(k));
    if constexpr (Src::kGrouped)
      if (kpart > 0) src.chunk_part(rg, kfull, static_cast<int>(kpart), fmas(kfull));
    for (int64_t k = kfull + kpart; k < kc; ++k) {
      alignas(64) float wk[kT] = {};
      for (int i = 0; i < rg.n; ++i) wk[i] = src.at(g + i, k);
      const FR w = load_n(wk, kT);
      for (int m = 0; m < M; ++m) acc[m] = fma(a[k * M + m], w, acc[m]);
    }
    for (int m = 0; m < M; ++m) store_n(c + m * ldc + g, acc[m], rg.n);
  }
}
#endif  // HUGINN_SIMD_PACK

}  // namespace

void pack_a_rows(const float* src, int64_t ld, int rows, int64_t kc, float* dst) {
  int64_t k = 0;
#ifdef HUGINN_SIMD_PACK
  const RowGroup rg(src, ld * 4, rows, 0, 0);
  for (; k + kT <= kc; k += kT) {
    Reg r[kT];
    rg.load(k * 4, r);
    transpose(r);
    for (int j = 0; j < kT; ++j) store_rows(dst + (k + j) * rows, r[j], rows);
  }
#endif
  pack_a_ref(src, ld, rows, k, kc, dst);
}

// The copying packers: a few dozen bytes per k, so in registers rather than through memcpy calls.
void pack_a_cols(const float* src, int64_t ld, int rows, int64_t kc, float* dst) {
  for (int64_t k = 0; k < kc; ++k) {
#ifdef HUGINN_SIMD_PACK
    for (int i = 0; i < rows; i += kT) {
      const int n = std::min(kT, rows - i);
      store_n(dst + k * rows + i, load_n(src + k * ld + i, n), n);
    }
#else
    for (int i = 0; i < rows; ++i) dst[k * rows + i] = src[k * ld + i];
#endif
  }
}

void pack_b_cols_f32(const float* b, int64_t ld, int64_t cols, int64_t kc, int NR, float* dst) {
  for (int64_t k = 0; k < kc; ++k) {
    float* d = dst + k * NR;
#ifdef HUGINN_SIMD_PACK
    for (int g = 0; g < NR; g += kT) {
      const int n = static_cast<int>(std::clamp<int64_t>(cols - g, 0, kT));
      store_f(d + g, n > 0 ? load_n(b + k * ld + g, n) : zero_f());
    }
#else
    for (int64_t n = 0; n < NR; ++n) d[n] = n < cols ? b[k * ld + n] : 0.0f;
#endif
  }
}

#ifdef HUGINN_SIMD_PACK
void pack_b_rows_f32(const float* w, int64_t ld, int64_t cols, int64_t kc, int NR, float* dst) {
  pack_b_src(SrcF32{w, ld}, cols, kc, NR, dst);
}
void pack_b_rows_bf16(const uint16_t* w, int64_t ld, int64_t cols, int64_t kc, int NR,
                      float* dst) {
  pack_b_src(SrcBf16{w, ld}, cols, kc, NR, dst);
}
void pack_b_rows_q8(const int8_t* q, const uint16_t* s, int64_t K, int64_t cols, int64_t k0,
                    int64_t kc, int NR, float* dst) {
  pack_b_src(SrcQ8{reinterpret_cast<const uint8_t*>(q), s, K, k0}, cols, kc, NR, dst);
}
void pack_b_rows_q4(const uint8_t* q, const uint16_t* s, int64_t K, int64_t cols, int64_t k0,
                    int64_t kc, int NR, float* dst) {
  pack_b_src(SrcQ4{q, s, K, k0}, cols, kc, NR, dst);
}

namespace {
template <class Src, int... I>
void stream_dispatch(const Src& src, int64_t cols, int64_t kc, int NR, const float* a, int M,
                     float* c, int64_t ldc, bool load_c, std::integer_sequence<int, I...>) {
  using Fn = void (*)(const Src&, int64_t, int64_t, int, const float*, float*, int64_t, bool);
  static constexpr Fn table[] = {&stream_src<I + 1, Src>...};
  table[M - 1](src, cols, kc, NR, a, c, ldc, load_c);
}
constexpr auto kStreamRows = std::make_integer_sequence<int, kStreamMaxRows>{};
}  // namespace

void stream_rows_f32(const float* w, int64_t ld, int64_t cols, int64_t kc, int NR, const float* a,
                     int M, float* c, int64_t ldc, bool load_c) {
  stream_dispatch(SrcF32{w, ld}, cols, kc, NR, a, M, c, ldc, load_c, kStreamRows);
}
void stream_rows_bf16(const uint16_t* w, int64_t ld, int64_t cols, int64_t kc, int NR,
                      const float* a, int M, float* c, int64_t ldc, bool load_c) {
  stream_dispatch(SrcBf16{w, ld}, cols, kc, NR, a, M, c, ldc, load_c, kStreamRows);
}
void stream_rows_q8(const int8_t* q, const uint16_t* s, int64_t K, int64_t cols, int64_t k0,
                    int64_t kc, int NR, const float* a, int M, float* c, int64_t ldc,
                    bool load_c) {
  stream_dispatch(SrcQ8{reinterpret_cast<const uint8_t*>(q), s, K, k0}, cols, kc, NR, a, M, c, ldc,
                  load_c, kStreamRows);
}
void stream_rows_q4(const uint8_t* q, const uint16_t* s, int64_t K, int64_t cols, int64_t k0,
                    int64_t kc, int NR, const float* a, int M, float* c, int64_t ldc,
                    bool load_c) {
  stream_dispatch(SrcQ4{q, s, K, k0}, cols, kc, NR, a, M, c, ldc, load_c, kStreamRows);
}
#else
// The generic object: element by element (the readable form of what the SIMD ones compute).
void pack_b_rows_f32(const float* w, int64_t ld, int64_t cols, int64_t kc, int NR, float* dst) {
  pack_b_ref([&](int64_t n, int64_t k) { return w[n * ld + k]; }, cols, 0, kc, NR, dst);
}
void pack_b_rows_bf16(const uint16_t* w, int64_t ld, int64_t cols, int64_t kc, int NR,
                      float* dst) {
  pack_b_ref([&](int64_t n, int64_t k) { return bf16_to_f32(w[n * ld + k]); }, cols, 0, kc, NR,
             dst);
}
void pack_b_rows_q8(const int8_t* q, const uint16_t* s, int64_t K, int64_t cols, int64_t k0,
                    int64_t kc, int NR, float* dst) {
  pack_b_ref([&](int64_t n, int64_t k) { return q8_value(q, s, K, n, k0 + k); }, cols, 0, kc, NR,
             dst);
}
void pack_b_rows_q4(const uint8_t* q, const uint16_t* s, int64_t K, int64_t cols, int64_t k0,
                    int64_t kc, int NR, float* dst) {
  pack_b_ref([&](int64_t n, int64_t k) { return q4_value(q, s, K, n, k0 + k); }, cols, 0, kc, NR,
             dst);
}
#endif

}  // namespace huginn::cpu::HUGINN_ISA_NS
HUGINN_KERNELS_END
