// y = x·wᵀ with low-precision weights (BF16, Q8; see huginn/tensor.h for the Q8 layout).
// x [M, K] F32, w [N, K] BF16 or Q8, y [M, N] F32; fp32 accumulation. One template per vector
// type of simd.h; cpu_backend.cc picks the instantiation and sends every non-F32 weight here.
#pragma once

#include "kernels/cpu/kernels.h"

namespace huginn::cpu {

// The F32 matmul of the same instruction set, used for M > kMatvecMaxRows on dequantized tiles.
using MatmulF32 = void (*)(const Ctx&, const Tensor&, const Tensor&, Tensor&);

// Up to this many rows of x, the weights are streamed once through matvec kernels
// (decode); above it, tiles of w are widened to F32 and handed to the F32 GEMM.
constexpr int64_t kMatvecMaxRows = 4;

template <class V>
void matmul_lowp(const Ctx& c, const Tensor& x, const Tensor& w, Tensor& y, MatmulF32 f32);

// Whether the BF16 matvec uses vdpbf16ps (x rounded to BF16 once per call) on this build and
// CPU; otherwise BF16 weights are widened to F32 and x is used exactly. For tests and benches.
bool bf16_matvec_uses_dpbf16();
// Switches the vdpbf16ps path on (the default) or off, process-wide. For tests and benches only.
void set_bf16_matvec_dpbf16(bool on);

}  // namespace huginn::cpu
