// The strict backend (src/kernels/strict/): its memory cannot be touched by host code. A Tensor
// host accessor on it throws naming the tensor and its space; a raw host read of it (a pointer
// that leaked out of a backend call) faults with a message naming the arena; inside its own
// calls it computes exactly what the CPU backend computes. The golden suites run the model,
// generator, trainer and server on it (kBackends in test_util.h).
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <random>

#include "huginn/backend.h"
#include "huginn/thread_pool.h"
#include "kernels/device_access.h"
#include "test_util.h"

namespace huginn {
namespace {

Tensor host_random(int64_t rows, int64_t cols, uint32_t seed) {
  Tensor t = Tensor::empty({rows, cols});
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> d(-1, 1);
  std::generate(t.f32(), t.f32() + t.numel(), [&] { return d(rng); });
  return t;
}

TEST(StrictBackend, HostAccessorsRefuseItsMemoryNamingTheTensor) {
  ThreadPool pool(1);
  auto be = make_backend("strict", pool);
  Tensor t = be->upload(host_random(3, 5, 1));
  EXPECT_FALSE(t.on_host());
  EXPECT_STREQ(t.space_name(), "strict");
  const std::string e = test::error_message([&] { (void)t.f32(); });
  std::fprintf(stderr, "the accessor's message: %s\n", e.c_str());
  EXPECT_NE(e.find("F32 tensor [3, 5] in strict backend memory"), std::string::npos) << e;
  // Every host path: accessors, views of it, copies.
  EXPECT_THROW((void)t.raw(), Error);
  EXPECT_THROW((void)t.data<float>(), Error);
  EXPECT_THROW((void)t.rows(1, 2).row(0), Error);
  EXPECT_THROW((void)t.reshape({15}).f32(), Error);
  EXPECT_THROW((void)t.clone(), Error);
  Tensor h = Tensor::empty({3, 5});
  EXPECT_THROW(h.copy_from(t), Error);
  EXPECT_THROW(t.copy_from(h), Error);
  Tensor q = be->convert_weight(be->upload(host_random(4, 32, 2)), DType::kQ8);
  EXPECT_THROW((void)q.q8_scales(), Error);
  Tensor q4 = be->convert_weight(be->upload(host_random(4, 32, 2)), DType::kQ4);
  EXPECT_THROW((void)q4.q4_codes(), Error);
  // Identity tests read nothing: allowed.
  EXPECT_TRUE(t.same_data(t.rows(0, 3)));
}

// The planted read: a pointer to backend memory used by host code outside a backend call.
TEST(StrictBackendDeathTest, PlantedHostReadFaultsNamingTheArena) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  ThreadPool pool(1);
  auto be = make_backend("strict", pool);
  Tensor t = be->upload(host_random(2, 8, 3));
  const float* leaked = static_cast<const float*>(DeviceAccess::ptr(t));
  EXPECT_DEATH(
      {
        volatile float x = leaked[3];
        (void)x;
      },
      "host access to backend memory at 0x[0-9a-f]+ in the strict backend arena #[0-9]+");
  // The same memory read through the backend is fine.
  std::vector<float> back(16);
  be->download(t, back.data());
  EXPECT_EQ(back[0], host_random(2, 8, 3).f32()[0]);
}

TEST(StrictBackend, OpsRefuseHostTensors) {
  ThreadPool pool(1);
  auto be = make_backend("strict", pool);
  Tensor a = be->upload(host_random(2, 3, 4)), y = be->alloc({2, 3});
  Tensor host = host_random(2, 3, 5);
  const std::string e = test::error_message([&] { be->add(a, host, y); });
  EXPECT_NE(e.find("add was given a F32 tensor [2, 3] in host memory"), std::string::npos) << e;
  // Another strict backend's tensors are not this one's either.
  auto other = make_backend("strict", pool);
  Tensor foreign = other->upload(host);
  EXPECT_THROW(be->add(a, foreign, y), Error);
}

// Inside its calls it is the CPU backend, bit for bit (including the training-state ops).
TEST(StrictBackend, ComputesWhatTheCpuBackendComputes) {
  ThreadPool pool(2);
  auto cpu = make_backend("cpu", pool), strict = make_backend("strict", pool);
  const Tensor x = host_random(7, 45, 6), w = host_random(33, 45, 7), g = host_random(7, 45, 8);
  auto run = [&](Backend& b) {
    Tensor xs = b.upload(x.clone()), ws = b.upload(w.clone()), y = b.alloc({7, 33});
    b.matmul(xs, ws, y);
    Tensor m = b.alloc({7, 45}), v = b.alloc({7, 45}), gs = b.upload(g);
    AdamWStep p;
    p.step_size = 0.01f;
    p.decay = true;
    p.keep = 0.99f;
    b.adamw_step(xs, gs, m, v, p);
    b.scale(y, 0.5f);
    std::vector<float> out(7 * 33 + 7 * 45);
    b.download(y, out.data());
    b.download(xs, out.data() + 7 * 33);
    out.push_back(static_cast<float>(b.sum_squares(y)));
    return out;
  };
  const auto a = run(*cpu), b = run(*strict);
  ASSERT_EQ(a.size(), b.size());
  EXPECT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * sizeof(float)));
  // Its numerics claims: true of the CPU kernels beneath (no more exact rows than they keep),
  // and limited, so that the model's row groups and column tiles run on this backend.
  EXPECT_LE(strict->matmul_exact_rows(), cpu->matmul_exact_rows());
  EXPECT_LT(strict->matmul_exact_rows(), 64);
  EXPECT_GT(strict->preferred_tile_bytes(), 0);
}

}  // namespace
}  // namespace huginn
