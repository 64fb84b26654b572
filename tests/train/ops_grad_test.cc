// Every backward op against finite differences, in double precision: the scalar reference
// kernels (src/kernels/ref/ref_grad.h) are templates, so the forward and backward checked here
// are the same code the float backend runs. Objective: L = Σ r ∘ f(inputs) with a random r,
// whose gradient wrt the output is r. Central differences with h = 1e-5 in double have a
// truncation error ~h²·|f'''| ≈ 1e-10 and a rounding error ~1e-16/h ≈ 1e-11, so a relative
// tolerance of 1e-7 separates a correct gradient from any real mistake (those are O(1)).
// Also: the float instantiations of the template forwards equal RefBackend's ops.
#include <gtest/gtest.h>

#include <functional>
#include <random>

#include "huginn/model.h"
#include "kernels/ref/ref_backend.h"
#include "kernels/ref/ref_grad.h"
#include "test_util.h"

namespace huginn {
namespace {

using Vec = std::vector<double>;
using ref::View;

Vec randn(size_t n, uint64_t seed, double scale = 1.0) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> d(0.0, scale);
  Vec v(n);
  for (double& x : v) x = d(rng);
  return v;
}
View<double> mat(Vec& v, int64_t rows, int64_t cols) { return {v.data(), rows, cols, cols}; }
View<const double> cmat(const Vec& v, int64_t rows, int64_t cols) {
  return {v.data(), rows, cols, cols};
}

// Checks `analytic` against central differences of `loss` wrt every entry of `x`.
void expect_fd(const std::function<double()>& loss, Vec& x, const Vec& analytic,
               const std::string& what, double h = 1e-5) {
  ASSERT_EQ(x.size(), analytic.size()) << what;
  double max_diff = 0, max_g = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    const double keep = x[i];
    x[i] = keep + h;
    const double up = loss();
    x[i] = keep - h;
    const double down = loss();
    x[i] = keep;
    const double fd = (up - down) / (2 * h);
    max_diff = std::max(max_diff, std::fabs(fd - analytic[i]));
    max_g = std::max(max_g, std::fabs(analytic[i]));
  }
  ASSERT_GT(max_g, 1e-3) << what << ": gradient is (nearly) zero, the check would be vacuous";
  EXPECT_LE(max_diff / max_g, 1e-7) << what;
}

double dot(const Vec& a, const Vec& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

TEST(OpsGradFD, Matmul) {
  const int64_t M = 5, K = 7, N = 3;
  Vec x = randn(M * K, 1), w = randn(N * K, 2), r = randn(M * N, 3), y(M * N);
  auto loss = [&] {
    ref::matmul<double>(cmat(x, M, K), cmat(w, N, K), mat(y, M, N));
    return dot(y, r);
  };
  Vec dx(M * K), dw = randn(N * K, 4), dw0 = dw;  // dw accumulates onto what is there
  ref::matmul_backward<double>(cmat(x, M, K), cmat(w, N, K), cmat(r, M, N), mat(dx, M, K),
                               mat(dw, N, K));
  for (size_t i = 0; i < dw.size(); ++i) dw[i] -= dw0[i];
  expect_fd(loss, x, dx, "matmul dx");
  expect_fd(loss, w, dw, "matmul dw");
}

TEST(OpsGradFD, RmsNorm) {
  const int64_t T = 3, E = 9;
  Vec x = randn(T * E, 5), w = randn(E, 6), r = randn(T * E, 7), y(T * E);
  auto loss = [&] {
    ref::rmsnorm<double>(cmat(x, T, E), w.data(), 1e-6, mat(y, T, E));
    return dot(y, r);
  };
  Vec dx = r, dw = randn(E, 8), dw0 = dw;  // dx aliases dy: allowed
  ref::rmsnorm_backward<double>(cmat(x, T, E), w.data(), 1e-6, cmat(dx, T, E), mat(dx, T, E),
                                dw.data());
  for (int64_t i = 0; i < E; ++i) dw[i] -= dw0[i];
  expect_fd(loss, x, dx, "rmsnorm dx");
  expect_fd(loss, w, dw, "rmsnorm dw");
}

TEST(OpsGradFD, AddBias) {
  const int64_t T = 4, N = 5;
  Vec x = randn(T * N, 9), b = randn(N, 10), r = randn(T * N, 11);
  auto loss = [&] {
    Vec y = x;
    ref::add_bias<double>(mat(y, T, N), b.data());
    return dot(y, r);
  };
  Vec db(N, 0.0);
  ref::add_bias_backward<double>(cmat(r, T, N), db.data());
  expect_fd(loss, b, db, "add_bias dbias");
}

TEST(OpsGradFD, Rope) {
  const int64_t T = 4, D = 6, H = 2;
  const Tensor cs = rope_table(16, D, 10000.0);
  const std::vector<int32_t> pos = {3, 0, 11, 5};
  Vec x = randn(T * H * D, 12), r = randn(T * H * D, 13);
  auto loss = [&] {
    Vec y = x;
    ref::rope_rotate<double>(mat(y, T, H * D), cs.f32(), pos, D, +1);
    return dot(y, r);
  };
  Vec dx = r;
  ref::rope_backward<double>(mat(dx, T, H * D), cs.f32(), pos, D);
  expect_fd(loss, x, dx, "rope dx");
}

void attention_fd(int64_t T, int64_t S) {
  const int64_t H = 2, D = 4, HD = H * D;
  Vec q = randn(T * HD, 14), k = randn(S * HD, 15), v = randn(S * HD, 16), r = randn(T * HD, 17);
  Vec out(T * HD);
  auto loss = [&] {
    ref::attention<double>(cmat(q, T, HD), cmat(k, S, HD), cmat(v, S, HD), H, mat(out, T, HD));
    return dot(out, r);
  };
  Vec dq(T * HD), dk(S * HD), dv(S * HD);
  ref::attention_backward<double>(cmat(q, T, HD), cmat(k, S, HD), cmat(v, S, HD), cmat(r, T, HD),
                                  H, mat(dq, T, HD), mat(dk, S, HD), mat(dv, S, HD));
  const std::string tag = " T=" + std::to_string(T) + " S=" + std::to_string(S);
  expect_fd(loss, q, dq, "attention dq" + tag);
  expect_fd(loss, k, dk, "attention dk" + tag);
  expect_fd(loss, v, dv, "attention dv" + tag);
}

TEST(OpsGradFD, AttentionCausal) { attention_fd(5, 5); }
TEST(OpsGradFD, AttentionBottomRight) { attention_fd(3, 7); }

TEST(OpsGradFD, Swiglu) {
  const int64_t T = 3, I = 5;
  Vec fc = randn(T * 2 * I, 18, 2.0), r = randn(T * I, 19), y(T * I);
  auto loss = [&] {
    ref::swiglu<double>(cmat(fc, T, 2 * I), mat(y, T, I));
    return dot(y, r);
  };
  Vec dfc(T * 2 * I);
  ref::swiglu_backward<double>(cmat(fc, T, 2 * I), cmat(r, T, I), mat(dfc, T, 2 * I));
  expect_fd(loss, fc, dfc, "swiglu dfc");
}

TEST(OpsGradFD, ConcatCols) {
  const int64_t T = 3, A = 4, B = 5;
  Vec a = randn(T * A, 20), b = randn(T * B, 21), r = randn(T * (A + B), 22);
  auto loss = [&] {
    double s = 0;
    for (int64_t t = 0; t < T; ++t) {
      for (int64_t i = 0; i < A; ++i) s += a[t * A + i] * r[t * (A + B) + i];
      for (int64_t i = 0; i < B; ++i) s += b[t * B + i] * r[t * (A + B) + A + i];
    }
    return s;
  };
  Vec da(T * A), db(T * B);
  ref::concat_cols_backward<double>(cmat(r, T, A + B), mat(da, T, A), mat(db, T, B));
  expect_fd(loss, a, da, "concat da");
  expect_fd(loss, b, db, "concat db");
}

TEST(OpsGradFD, EmbeddingScatterAdd) {
  const int64_t V = 6, E = 4;
  const std::vector<int32_t> ids = {2, 5, 2, 0, 2};  // repeated ids must add up
  const int64_t T = static_cast<int64_t>(ids.size());
  Vec table = randn(V * E, 23), r = randn(T * E, 24), y(T * E);
  auto loss = [&] {
    ref::embedding<double>(cmat(table, V, E), ids, 1.7, mat(y, T, E));
    return dot(y, r);
  };
  Vec dt(V * E, 0.0);
  ref::embedding_backward<double>(cmat(r, T, E), ids, 1.7, mat(dt, V, E));
  expect_fd(loss, table, dt, "embedding dtable");
}

TEST(OpsGradFD, CrossEntropy) {
  const int64_t T = 5, V = 7;
  const std::vector<int32_t> labels = {3, -100, 0, 6, 3};
  Vec x = randn(T * V, 25, 2.0);
  auto loss = [&] { return ref::cross_entropy<double>(cmat(x, T, V), labels, 0.0, {}); };
  Vec dx(T * V);
  const double l = ref::cross_entropy<double>(cmat(x, T, V), labels, 1.0, mat(dx, T, V));
  EXPECT_NEAR(l, loss(), 1e-15);
  expect_fd(loss, x, dx, "cross_entropy dlogits");
  for (int64_t i = 0; i < V; ++i) EXPECT_EQ(dx[V + i], 0.0) << "ignored row";
}

// The templates instantiated for float are the forward RefBackend runs (so the FD checks above
// are about the ops the model uses).
TEST(OpsGradFD, FloatTemplatesEqualRefBackend) {
  RefBackend be;
  const int64_t T = 3, S = 5, E = 8, H = 2;
  auto rnd = [](std::initializer_list<int64_t> shape, uint64_t seed) {
    Tensor t = Tensor::empty(shape);
    Vec v = randn(static_cast<size_t>(t.numel()), seed);
    for (int64_t i = 0; i < t.numel(); ++i) t.f32()[i] = static_cast<float>(v[i]);
    return t;
  };
  auto view = [](Tensor& t) { return View<float>{t.f32(), t.dim(0), t.dim(1), t.dim(1)}; };
  Tensor q = rnd({T, E}, 30), k = rnd({S, E}, 31), v = rnd({S, E}, 32), w = rnd({E}, 33);
  Tensor a = be.alloc({T, E}, DType::kF32), b = be.alloc({T, E}, DType::kF32);
  be.attention(q, k, v, static_cast<int>(H), a);
  ref::attention<float>(view(q), view(k), view(v), H, view(b));
  EXPECT_LE(test::rel_err(b, a), 1e-6) << "attention";
  be.rmsnorm(q, w, 1e-6f, a);
  ref::rmsnorm<float>(view(q), w.f32(), 1e-6, view(b));
  EXPECT_LE(test::rel_err(b, a), 1e-6) << "rmsnorm";
  Tensor fc = rnd({T, 2 * E}, 34);
  be.swiglu(fc, a);
  ref::swiglu<float>(view(fc), view(b));
  EXPECT_LE(test::rel_err(b, a), 1e-6) << "swiglu";
  Tensor wm = rnd({E, E}, 35);
  be.matmul(q, wm, a);
  ref::matmul<float>(view(q), view(wm), view(b));
  EXPECT_LE(test::rel_err(b, a), 1e-6) << "matmul";
  const Tensor cs = rope_table(8, 4, 10000.0);
  const std::vector<int32_t> pos = {1, 7, 4};
  Tensor c = q.clone(), d = q.clone();
  be.rope(c, cs, pos, 4);
  ref::rope_rotate<float>(view(d), cs.f32(), pos, 4, +1);
  EXPECT_LE(test::rel_err(d, c), 1e-6) << "rope";
  Tensor lp = be.alloc({T, E}, DType::kF32);
  be.log_softmax(q, lp);
  const std::vector<int32_t> labels = {2, 0, 7};
  double nll = 0;
  for (int64_t t = 0; t < T; ++t) nll -= lp.row(t)[labels[t]];
  EXPECT_NEAR(be.cross_entropy(q, labels, 1.0f, nullptr), nll / T, 1e-6) << "cross_entropy";
}

}  // namespace
}  // namespace huginn
