// The scalar reference backend: each op is the plainest loop that computes it (double
// accumulators where a sum is long), single-threaded. It is the oracle for every faster backend.
#pragma once

#include <cstdint>

#include "huginn/backend.h"
#include "kernels/live_bytes.h"

namespace huginn {

class RefBackend : public Backend {
 public:
  const char* name() const override { return "ref"; }
  Tensor alloc(std::initializer_list<int64_t> shape, DType dtype) override;
  Tensor upload(const Tensor& host) override { return host; }
  int64_t allocated_bytes() const override { return live_.bytes(); }
  void download(const Tensor& t, float* host) override;
  void copy(const Tensor& src, Tensor& dst) override;
  Tensor convert_weight(const Tensor& w, DType to) override { return huginn::convert_weight(w, to); }
  // Each row's dot products run alone, in double: rows never depend on M.
  int64_t matmul_exact_rows() const override { return INT64_MAX; }
  // Each query's softmax and sum run alone over its own keys.
  int64_t attention_split_rows() const override { return 1; }
  int64_t preferred_tile_bytes() const override { return 0; }

  void embedding(const Tensor& table, std::span<const int32_t> ids, float scale,
                 Tensor& out) override;
  void matmul(const Tensor& x, const Tensor& w, Tensor& y) override;
  void rmsnorm(const Tensor& x, const Tensor& w, float eps, Tensor& y) override;
  void add(const Tensor& a, const Tensor& b, Tensor& y) override;
  void add_bias(Tensor& x, const Tensor& bias) override;
  void rope(Tensor& x, const Tensor& cos_sin, std::span<const int32_t> positions,
            int head_dim) override;
  void attention(const Tensor& q, const Tensor& k, const Tensor& v, int n_heads,
                 Tensor& out) override;
  void swiglu(const Tensor& fc, Tensor& out) override;
  void concat_cols(const Tensor& a, const Tensor& b, Tensor& out) override;
  void log_softmax(const Tensor& x, Tensor& y) override;

  void fill(Tensor& x, float value) override;
  void scale(Tensor& x, float s) override;
  double sum_squares(const Tensor& x, double acc) override;
  int64_t count_non_finite(const Tensor& x, int64_t* first) override;
  void adamw_step(Tensor& w, const Tensor& g, Tensor& m, Tensor& v, const AdamWStep& p) override;

  // Backward ops: the templated scalar kernels of ref_grad.h instantiated for float
  // (ref_backward.cc).
  void matmul_bf16(const Tensor& x, const Tensor& w, Tensor& y) override;
  void matmul_backward_bf16(const Tensor& x, const Tensor& w, const Tensor& dy, Tensor* dx,
                            Tensor* dw) override;
  void round_bf16(const Tensor& w, Tensor& wb) override;
  void matmul_backward(const Tensor& x, const Tensor& w, const Tensor& dy, Tensor* dx,
                       Tensor* dw) override;
  void rmsnorm_backward(const Tensor& x, const Tensor& w, float eps, const Tensor& dy, Tensor& dx,
                        Tensor& dw) override;
  void add_bias_backward(const Tensor& dy, Tensor& dbias) override;
  void rope_backward(Tensor& dx, const Tensor& cos_sin, std::span<const int32_t> positions,
                     int head_dim) override;
  void attention_backward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out,
                          const Tensor& dout, int n_heads, Tensor& dq, Tensor& dk,
                          Tensor& dv) override;
  void swiglu_backward(const Tensor& fc, const Tensor& dout, Tensor& dfc) override;
  void concat_cols_backward(const Tensor& dout, Tensor& da, Tensor& db) override;
  void embedding_backward(const Tensor& dout, std::span<const int32_t> ids, float scale,
                          Tensor& dtable) override;
  float cross_entropy(const Tensor& logits, std::span<const int32_t> labels, float dscale,
                      Tensor* dlogits) override;
 private:
  LiveBytes live_;
};

}  // namespace huginn
