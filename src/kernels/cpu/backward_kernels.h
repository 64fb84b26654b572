// The fast CPU backend's backward ops (gradient contract of huginn/backend.h: parameter
// gradients +=, activation gradients =). Free functions over the same Ctx as the forward
// kernels; every op splits over independent outputs with a fixed per-output order, so results
// do not depend on the thread count. Shapes as in huginn/backend.h.
#pragma once

#include <cstdint>
#include <span>

#include "huginn/backend.h"
#include "kernels/cpu/kernels.h"

namespace huginn::cpu {

// `gemm`: the instruction set's gemm_f32, or gemm_bf16 for the BF16 mixed-precision backward.
void matmul_backward(const Ctx& c, GemmF32Fn gemm, const Tensor& x, const Tensor& w,
                     const Tensor& dy, Tensor* dx, Tensor* dw);
void rmsnorm_backward(const Ctx& c, const Tensor& x, const Tensor& w, float eps, const Tensor& dy,
                      Tensor& dx, Tensor& dw);
void add_bias_backward(const Ctx& c, const Tensor& dy, Tensor& dbias);
void rope_backward(const Ctx& c, Tensor& dx, const Tensor& cos_sin,
                   std::span<const int32_t> positions, int head_dim);
// `gemm`: the backend's instruction set's gemm_f32 (gemm_f32_like of its matmul), so a forced
// set (CpuOptions::isa, HUGINN_CPU_ISA) reaches the attention backward too.
void attention_backward(const Ctx& c, GemmF32Fn gemm, const Tensor& q, const Tensor& k,
                        const Tensor& v, const Tensor& out, const Tensor& dout, int n_heads,
                        Tensor& dq, Tensor& dk, Tensor& dv);
void swiglu_backward(const Ctx& c, const Tensor& fc, const Tensor& dout, Tensor& dfc);
void concat_cols_backward(const Ctx& c, const Tensor& dout, Tensor& da, Tensor& db);
void embedding_backward(const Ctx& c, const Tensor& dout, std::span<const int32_t> ids,
                        float scale, Tensor& dtable);
float cross_entropy(const Ctx& c, const Tensor& logits, std::span<const int32_t> labels,
                    float dscale, Tensor* dlogits);

// Training-state ops (train_ops.cc), as Backend declares them.
void fill(const Ctx& c, Tensor& x, float value);
void scale(const Ctx& c, Tensor& x, float s);
double sum_squares(const Tensor& x, double acc);
int64_t count_non_finite(const Tensor& x, int64_t* first);
void adamw_step(const Ctx& c, Tensor& w, const Tensor& g, Tensor& m, Tensor& v,
                const AdamWStep& p);

}  // namespace huginn::cpu
