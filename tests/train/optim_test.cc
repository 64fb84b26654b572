// AdamW against hand-computed steps, gradient clipping, learning-rate schedules.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "huginn/thread_pool.h"
#include "huginn/train.h"

namespace huginn {
namespace {

// The optimizer on host memory: the reference backend's tensors are host tensors.
Backend& host_backend() {
  static std::unique_ptr<Backend> be = make_ref_backend();
  return *be;
}

NamedParam make_param(const std::string& name, std::vector<float> w, bool decay) {
  NamedParam p;
  p.name = name;
  const int64_t n = static_cast<int64_t>(w.size());
  p.value = Tensor::empty({n});
  p.grad = Tensor::empty({n});
  std::copy(w.begin(), w.end(), p.value.f32());
  p.decay = decay;
  return p;
}

void set_grad(NamedParam& p, std::vector<float> g) { std::copy(g.begin(), g.end(), p.grad.f32()); }

TEST(AdamW, MatchesHandComputedSteps) {
  AdamWOptions o;
  o.beta1 = 0.9;
  o.beta2 = 0.95;
  o.eps = 1e-8;
  o.weight_decay = 0.1;
  std::vector<NamedParam> ps{make_param("w", {1.0f, -2.0f, 0.5f}, true),
                             make_param("norm", {1.0f, 1.0f, 1.0f}, false)};
  AdamW opt(ps, o, host_backend());
  const double lr = 0.01;
  // Step 1, g = (0.5, -1, 2) on both. With bias correction, step 1 moves every element by
  // lr·sign(g) (m̂ = g, v̂ = g²), after decay for the decayed parameter.
  set_grad(ps[0], {0.5f, -1.0f, 2.0f});
  set_grad(ps[1], {0.5f, -1.0f, 2.0f});
  opt.step(lr);
  const double keep = 1.0 - lr * 0.1;
  const double w1[3] = {1.0 * keep - lr, -2.0 * keep + lr, 0.5 * keep - lr};
  const double n1[3] = {1.0 - lr, 1.0 + lr, 1.0 - lr};
  for (int i = 0; i < 3; ++i) {
    EXPECT_NEAR(ps[0].value.f32()[i], w1[i], 1e-6) << i;
    EXPECT_NEAR(ps[1].value.f32()[i], n1[i], 1e-6) << i;
  }
  // Step 2, g2 = (-0.5, 0, 1): m = 0.9·0.1·g1 ... written out in double.
  const double g1[3] = {0.5, -1.0, 2.0}, g2[3] = {-0.5, 0.0, 1.0};
  set_grad(ps[0], {-0.5f, 0.0f, 1.0f});
  set_grad(ps[1], {-0.5f, 0.0f, 1.0f});
  opt.step(lr);
  for (int i = 0; i < 3; ++i) {
    const double m = 0.9 * (0.1 * g1[i]) + 0.1 * g2[i];
    const double v = 0.95 * (0.05 * g1[i] * g1[i]) + 0.05 * g2[i] * g2[i];
    const double mhat = m / (1 - 0.81), vhat = v / (1 - 0.9025);
    const double upd = lr * mhat / (std::sqrt(vhat) + 1e-8);
    EXPECT_NEAR(ps[0].value.f32()[i], w1[i] * keep - upd, 1e-6) << i;
    EXPECT_NEAR(ps[1].value.f32()[i], n1[i] - upd, 1e-6) << i;
  }
  EXPECT_EQ(opt.steps_taken(), 2);
}

TEST(AdamW, DecayAllAlsoDecaysExcludedParams) {
  AdamWOptions o;
  o.weight_decay = 0.5;
  o.decay_all = true;
  std::vector<NamedParam> ps{make_param("norm", {2.0f}, false)};
  AdamW opt(ps, o, host_backend());
  set_grad(ps[0], {0.0f});  // zero gradient: only the decay moves it
  opt.step(0.1);
  EXPECT_NEAR(ps[0].value.f32()[0], 2.0 * (1 - 0.05), 1e-6);
}

TEST(AdamW, MinimisesAQuadratic) {
  // f(w) = Σ c_i (w_i − t_i)², badly conditioned; AdamW without decay must reach t.
  const std::vector<float> t{3.0f, -1.0f, 0.25f, 10.0f}, c{100.0f, 1.0f, 0.01f, 5.0f};
  std::vector<NamedParam> ps{make_param("w", {0, 0, 0, 0}, true)};
  AdamWOptions o;
  o.weight_decay = 0.0;
  AdamW opt(ps, o, host_backend());
  Schedule s;
  s.lr = 0.5;
  s.min_lr = 1e-4;
  s.total = 3000;
  for (int step = 0; step < s.total; ++step) {
    for (int i = 0; i < 4; ++i) ps[0].grad.f32()[i] = 2 * c[i] * (ps[0].value.f32()[i] - t[i]);
    opt.step(s.at(step));
  }
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(ps[0].value.f32()[i], t[i], 2e-2) << i;
}

TEST(AdamW, StateRoundTripContinuesIdentically) {
  auto run = [](int split) {
    std::vector<NamedParam> ps{make_param("w", {1.0f, 2.0f}, true)};
    AdamW a(ps, AdamWOptions{}, host_backend());
    for (int s = 0; s < split; ++s) {
      set_grad(ps[0], {std::sin(s * 1.0f), std::cos(s * 1.0f)});
      a.step(0.01);
    }
    std::map<std::string, Tensor> st;
    for (auto& [k, t] : a.state()) st.emplace(k, t.clone());
    std::vector<NamedParam> qs{make_param("w", {ps[0].value.f32()[0], ps[0].value.f32()[1]}, true)};
    AdamW b(qs, AdamWOptions{}, host_backend());
    b.set_state(st, a.steps_taken(), "test");
    for (int s = split; s < 10; ++s) {
      set_grad(qs[0], {std::sin(s * 1.0f), std::cos(s * 1.0f)});
      b.step(0.01);
    }
    return std::pair<float, float>(qs[0].value.f32()[0], qs[0].value.f32()[1]);
  };
  const auto straight = run(10), resumed = run(4);
  EXPECT_EQ(straight.first, resumed.first);
  EXPECT_EQ(straight.second, resumed.second);
}

TEST(AdamW, SetStateRejectsMissingOrMisshapenMoments) {
  std::vector<NamedParam> ps{make_param("w", {1.0f, 2.0f}, true)};
  AdamW a(ps, AdamWOptions{}, host_backend());
  std::map<std::string, Tensor> st{{"adam.m.w", Tensor::empty({2})}};
  EXPECT_THROW(a.set_state(st, 1, "s"), Error);
  st["adam.v.w"] = Tensor::empty({3});
  try {
    a.set_state(st, 1, "state.safetensors");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("adam.v.w"), std::string::npos) << e.what();
  }
}

TEST(ClipGradNorm, ScalesOnlyAboveTheLimit) {
  std::vector<NamedParam> ps{make_param("a", {0, 0}, true), make_param("b", {0}, true)};
  set_grad(ps[0], {3.0f, 0.0f});
  set_grad(ps[1], {4.0f});
  EXPECT_NEAR(clip_grad_norm(host_backend(), ps, 10.0), 5.0, 1e-12);
  EXPECT_EQ(ps[0].grad.f32()[0], 3.0f);  // untouched below the limit
  EXPECT_NEAR(clip_grad_norm(host_backend(), ps, 1.0), 5.0, 1e-12);
  const double a = ps[0].grad.f32()[0], b = ps[1].grad.f32()[0];
  EXPECT_NEAR(std::sqrt(a * a + b * b), 1.0, 1e-5);
  EXPECT_NEAR(a / b, 0.75, 1e-6);  // direction kept
}

TEST(ClipGradNorm, NonFiniteIsReportedAndNotScaled) {
  std::vector<NamedParam> ps{make_param("a", {0, 0}, true)};
  set_grad(ps[0], {NAN, 1.0f});
  EXPECT_FALSE(std::isfinite(clip_grad_norm(host_backend(), ps, 1.0)));
  EXPECT_EQ(ps[0].grad.f32()[1], 1.0f);
  set_grad(ps[0], {INFINITY, 1.0f});
  EXPECT_FALSE(std::isfinite(clip_grad_norm(host_backend(), ps, 1.0)));
}

TEST(Schedule, WarmupThenCosine) {
  Schedule s;
  s.kind = ScheduleKind::kCosine;
  s.lr = 1.0;
  s.min_lr = 0.1;
  s.warmup = 4;
  s.total = 14;
  EXPECT_DOUBLE_EQ(s.at(0), 0.25);
  EXPECT_DOUBLE_EQ(s.at(3), 1.0);
  EXPECT_DOUBLE_EQ(s.at(4), 1.0);                   // first post-warmup step: peak
  EXPECT_NEAR(s.at(13), 0.1, 1e-12);                // last step: min
  EXPECT_NEAR(s.at(8), 0.1 + 0.9 * 0.5 * (1 + std::cos(M_PI * 4 / 9)), 1e-12);  // p = 4/9
  for (int i = 4; i < 13; ++i) EXPECT_GT(s.at(i), s.at(i + 1));  // monotone decay
}

TEST(Schedule, Linear) {
  Schedule s;
  s.kind = ScheduleKind::kLinear;
  s.lr = 2.0;
  s.min_lr = 0.0;
  s.total = 11;
  EXPECT_DOUBLE_EQ(s.at(0), 2.0);
  EXPECT_DOUBLE_EQ(s.at(5), 1.0);
  EXPECT_DOUBLE_EQ(s.at(10), 0.0);
}

TEST(Schedule, ConstantWithCooldown) {
  Schedule s;
  s.kind = ScheduleKind::kConstant;
  s.lr = 1.0;
  s.min_lr = 0.0;
  s.warmup = 2;
  s.total = 20;
  s.cooldown = 4;
  EXPECT_DOUBLE_EQ(s.at(0), 0.5);
  EXPECT_DOUBLE_EQ(s.at(2), 1.0);
  EXPECT_DOUBLE_EQ(s.at(15), 1.0);
  EXPECT_DOUBLE_EQ(s.at(16), 0.75);
  EXPECT_DOUBLE_EQ(s.at(18), 0.25);
  EXPECT_DOUBLE_EQ(s.at(19), 0.0);
  EXPECT_EQ(Schedule::parse("constant"), ScheduleKind::kConstant);
  EXPECT_THROW(Schedule::parse("exponential"), Error);
}

}  // namespace
}  // namespace huginn

#include "huginn/thread_pool.h"
#include "kernels/cpu/cpu_backend.h"

namespace huginn {
namespace {

TEST(AdamW, ThreadedStepEqualsSerialStep) {
  const int n = 200003;  // odd: uneven thread chunks
  std::vector<float> w(n);
  for (int i = 0; i < n; ++i) w[i] = std::sin(0.37f * i);
  std::vector<NamedParam> a{make_param("w", w, true)}, b{make_param("w", w, true)};
  ThreadPool one(1), three(3);
  CpuOptions co;
  co.isa = best_cpu_isa();
  co.min_work_per_thread = 1;  // every step really split
  auto b1 = make_cpu_backend(one, co), b3 = make_cpu_backend(three, co);
  AdamW oa(a, AdamWOptions{}, *b1), ob(b, AdamWOptions{}, *b3);
  for (int s = 0; s < 3; ++s) {
    for (int i = 0; i < n; ++i) a[0].grad.f32()[i] = b[0].grad.f32()[i] = std::cos(0.11f * i + s);
    oa.step(0.01);
    ob.step(0.01);
  }
  EXPECT_EQ(std::memcmp(a[0].value.raw(), b[0].value.raw(), a[0].value.nbytes()), 0);
}

// ZeRO-1's sharded AdamW (huginn/train.h): three optimizers over slices of the flat parameter
// space that cut through parameters ([0, 4), [4, 11), [11, 15) of sizes 5, 7, 3) update every
// element to the bits the whole optimizer gives it, hold only their slice's moments, and load
// their slice of a whole state. On the reference backend and on the strict one (whose tensors
// the host cannot read: the slices are backend views, updated by backend calls only).
TEST(AdamW, SlicesOfTheFlatParametersUpdateAsTheWholeOptimizerDoes) {
  ThreadPool pool(1);
  for (const char* name : {"ref", "strict"}) {
    SCOPED_TRACE(name);
    std::unique_ptr<Backend> be = make_backend(name, pool);
    const int64_t sizes[3] = {5, 7, 3}, cuts[4] = {0, 4, 11, 15};
    auto params = [&](uint32_t seed) {
      std::vector<NamedParam> ps;
      for (int i = 0; i < 3; ++i) {
        Tensor w = Tensor::empty({sizes[i]});
        for (int64_t j = 0; j < sizes[i]; ++j) w.f32()[j] = std::sin(float(seed + 7 * i + j));
        ps.push_back({"p" + std::to_string(i), be->upload(w), be->alloc({sizes[i]}), i != 1});
      }
      return ps;
    };
    AdamWOptions o;
    o.weight_decay = 0.1;
    std::vector<NamedParam> whole_ps = params(1), shard_ps = params(1);
    // The moments' bytes, as the backend counts its memory and as the optimizer sums them.
    int64_t before = be->allocated_bytes();
    AdamW whole(whole_ps, o, *be);
    EXPECT_EQ(be->allocated_bytes() - before, 2 * 4 * 15);
    EXPECT_EQ(whole.state_bytes(), 2 * 4 * 15);
    std::vector<std::unique_ptr<AdamW>> shards;
    for (int r = 0; r < 3; ++r) {
      before = be->allocated_bytes();
      shards.push_back(std::make_unique<AdamW>(shard_ps, o, *be, cuts[r], cuts[r + 1]));
      EXPECT_EQ(be->allocated_bytes() - before, 2 * 4 * (cuts[r + 1] - cuts[r])) << "slice " << r;
      EXPECT_EQ(shards[r]->state_bytes(), 2 * 4 * (cuts[r + 1] - cuts[r]));
    }
    for (int step = 0; step < 3; ++step) {
      for (int i = 0; i < 3; ++i) {
        Tensor g = Tensor::empty({sizes[i]});
        for (int64_t j = 0; j < sizes[i]; ++j) g.f32()[j] = std::cos(float(3 * step + i + 2 * j));
        for (auto* ps : {&whole_ps, &shard_ps}) {
          Tensor dst = (*ps)[i].grad.reshape({1, sizes[i]});
          be->copy(be->upload(g.reshape({1, sizes[i]})), dst);
        }
      }
      whole.step(0.01);
      for (auto& sh : shards) sh->step(0.01);
    }
    for (int i = 0; i < 3; ++i) {
      std::vector<float> a(static_cast<size_t>(sizes[i])), b(a.size());
      be->download(whole_ps[i].value, a.data());
      be->download(shard_ps[i].value, b.data());
      EXPECT_EQ(a, b) << "parameter " << i;
    }
    // The slices' moments, concatenated, are the whole optimizer's, and load back slice by slice.
    const auto state = whole.state();
    std::map<std::string, Tensor> by_name(state.begin(), state.end());
    for (int second = 0; second < 2; ++second) {
      std::vector<float> flat;
      for (int i = 0; i < 3; ++i) {
        const Tensor& t = by_name.at((second ? "adam.v.p" : "adam.m.p") + std::to_string(i));
        flat.insert(flat.end(), t.f32(), t.f32() + t.numel());
      }
      for (int r = 0; r < 3; ++r) {
        const std::vector<float> want(flat.begin() + cuts[r], flat.begin() + cuts[r + 1]);
        EXPECT_EQ(shards[r]->slice_state(second), want) << "slice " << r;
        AdamW loaded(shard_ps, o, *be, cuts[r], cuts[r + 1]);
        loaded.set_state(by_name, 3, "test");
        EXPECT_EQ(loaded.slice_state(second), want) << "slice " << r << " loaded";
      }
    }
  }
}

}  // namespace
}  // namespace huginn
