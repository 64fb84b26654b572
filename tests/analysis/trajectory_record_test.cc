// record_trajectory against independent computations: the golden trace's states and adapter
// outputs, Runner::forward's latent and logits at every step count (a forward pass of t
// recurrences decodes exactly the state s_t), metrics recomputed from those logits and the
// recorded states, subsets, seeds, exit steps, and bad options.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <limits>

#include "huginn/exit.h"
#include "huginn/forward.h"
#include "huginn/model.h"
#include "huginn/thread_pool.h"
#include "huginn/trajectory.h"
#include "test_util.h"

namespace huginn {
namespace {

using test::golden_dir;

struct Fixture {
  ThreadPool pool{2};
  std::unique_ptr<Backend> be;
  std::shared_ptr<const Model> model;
  explicit Fixture(const std::string& set, const std::string& backend = "cpu") {
    be = make_backend(backend, pool);
    model = Model::load(golden_dir(set), *be);
  }
  Tensor host(const Tensor& t) {
    Tensor h = Tensor::empty({t.dim(0), t.dim(1)});
    be->download(t, h.f32());
    return h;
  }
};

// Row `k` of kept token i's states.
Tensor state_row(const Trajectory& tr, int64_t i, int t) {
  return tr.token_states(i).rows(tr.kept_iteration(t), tr.kept_iteration(t) + 1);
}

std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(RecordTrajectory, StatesAndAdapterMatchTheGoldenTrace) {
  for (const char* set : {"tiny-a", "tiny-b"}) {
    Fixture f(set);
    const std::string path = golden_dir(set) + "/trace_L7_s4.safetensors";
    auto want = test::load_tensors(path);
    const std::vector<int32_t> ids = test::load_ids(path, "input_ids");
    Runner runner(*f.model, *f.be);
    TraceOptions o;
    o.steps = 4;
    o.record_adapter = true;
    const Trajectory tr = record_trajectory(runner, ids, o);
    ASSERT_EQ(tr.states.shape_str(), "[7, 5, " + std::to_string(f.model->config().n_embd) + "]");
    for (int t = 0; t <= 4; ++t) {
      Tensor got = Tensor::empty({7, tr.n_embd}), adapter = Tensor::empty({7, tr.n_embd});
      for (int64_t i = 0; i < 7; ++i) {
        std::copy_n(state_row(tr, i, t).f32(), tr.n_embd, got.row(i));
        std::copy_n(tr.adapter_out.f32() + (i * 5 + t) * tr.n_embd, tr.n_embd, adapter.row(i));
      }
      const std::string name = "state." + std::to_string(t);
      EXPECT_LE(test::rel_err(got, want[name]), 1e-4) << set << " " << name;
      if (t > 0) {
        EXPECT_LE(test::rel_err(adapter, want[name + ".adapter_out"]), 1e-4) << name;
      }
    }
    EXPECT_LE(test::rel_err(tr.logits, want["logits"]), 1e-4) << set;
  }
}

// The heart of the must-show: for every t, a plain forward pass of t recurrences gives the
// logits that iteration t of the recording decodes, and its latent_raw is the recorded s_t; the
// metrics follow from those by direct computation.
TEST(RecordTrajectory, EveryIterationMatchesAForwardPassOfThatDepth) {
  Fixture f("tiny-b");
  const std::vector<int32_t> ids = {17, 42, 7, 256, 3, 99, 12};
  const int R = 10;
  const int64_t T = 7, E = f.model->config().n_embd, V = f.model->config().vocab_size;
  Runner runner(*f.model, *f.be);
  TraceOptions o;
  o.steps = R;
  o.init.scale = 1.0;  // a random (seeded) start, so t = 1 is not special
  o.init.seed = 5;
  o.exits = {"kl:1e-3", "latent-diff:0.03"};
  const Trajectory tr = record_trajectory(runner, ids, o);

  Runner plain(*f.model, *f.be);
  std::vector<Tensor> logits(R + 1), raw(R + 1);
  for (int t = 0; t <= R; ++t) {
    ForwardOutput out = plain.forward(ids, t, o.init);
    logits[t] = f.host(out.logits);
    raw[t] = f.host(out.latent_raw);
    if (t == R) {
      EXPECT_EQ(test::rel_err(tr.latent, f.host(out.latent)), 0.0);
      EXPECT_EQ(test::rel_err(tr.logits, logits[t]), 0.0);
    }
  }
  for (int64_t i = 0; i < T; ++i) {
    // Uniform p_0, as the KL exit rule starts.
    std::vector<float> uniform(V, 0.0f);
    for (int t = 0; t <= R; ++t) {
      const float* s = raw[t].row(i);
      const Tensor rec = state_row(tr, i, t);
      for (int64_t j = 0; j < E; ++j) ASSERT_EQ(rec.f32()[j], s[j]) << "token " << i << " t " << t;
      if (t == 0) continue;
      double d = 0, n = 0, df = 0, nf = 0;
      for (int64_t j = 0; j < E; ++j) {
        d += std::pow(double(s[j]) - raw[t - 1].row(i)[j], 2);
        n += double(s[j]) * s[j];
        df += std::pow(double(s[j]) - raw[R].row(i)[j], 2);
        nf += std::pow(double(raw[R].row(i)[j]), 2);
      }
      EXPECT_NEAR(tr.rel_change.at(i, t), std::sqrt(d / n), 1e-9);
      EXPECT_NEAR(tr.dist_to_final.at(i, t), std::sqrt(df / nf), 1e-9);
      // KL(p_{t-1} || p_t), entropy and argmax, straight from the forward logits.
      std::span<const float> prev(t == 1 ? uniform.data() : logits[t - 1].row(i), V);
      std::span<const float> cur(logits[t].row(i), V);
      double mx = -1e300, lse_p = 0, lse_c = 0;
      int64_t best = 0;
      for (int64_t v = 0; v < V; ++v) {
        mx = std::max(mx, double(cur[v]));
        if (cur[v] > cur[best]) best = v;
      }
      double mp = -1e300;
      for (int64_t v = 0; v < V; ++v) mp = std::max(mp, double(prev[v]));
      for (int64_t v = 0; v < V; ++v) {
        lse_c += std::exp(cur[v] - mx);
        lse_p += std::exp(prev[v] - mp);
      }
      lse_c = mx + std::log(lse_c);
      lse_p = mp + std::log(lse_p);
      double kl = 0, h = 0;
      for (int64_t v = 0; v < V; ++v) {
        const double lp = prev[v] - lse_p, lc = cur[v] - lse_c;
        kl += std::exp(lp) * (lp - lc);
        h -= std::exp(lc) * lc;
      }
      EXPECT_NEAR(tr.kl.at(i, t), kl, 1e-9 + 1e-9 * kl) << "token " << i << " t " << t;
      EXPECT_NEAR(tr.entropy.at(i, t), h, 1e-9);
      EXPECT_EQ(tr.top1[i][t], best);
    }
    EXPECT_TRUE(std::isnan(tr.kl.at(i, 0)));
    EXPECT_EQ(tr.top1[i][0], -1);
  }
  // Exit steps: the first t below the threshold, by hand from the recorded grids.
  ASSERT_EQ(tr.exits.size(), 2u);
  EXPECT_EQ(tr.exits[0].spec, "kl:0.001");
  EXPECT_EQ(tr.exits[1].spec, "latent-diff:0.03");
  for (int64_t i = 0; i < T; ++i) {
    int kl_step = 0, ld_step = 0;
    for (int t = 1; t <= R; ++t) {
      if (!kl_step && tr.kl.at(i, t) < 1e-3) kl_step = t;
      if (!ld_step && tr.rel_change.at(i, t) < 0.03) ld_step = t;
    }
    EXPECT_EQ(tr.exits[0].step[i], kl_step) << i;
    EXPECT_EQ(tr.exits[1].step[i], ld_step) << i;
  }
  EXPECT_EQ(kl_exit_steps(tr.kl, 1e-3), tr.exits[0].step);
  int fired = 0;
  for (int s : tr.exits[0].step) fired += s > 0;
  EXPECT_GT(fired, 0) << "the KL exit never fired in 10 steps: the test checks nothing";
}

TEST(RecordTrajectory, SubsetsKeepTheSameValues) {
  Fixture f("tiny-a");
  const std::vector<int32_t> ids = {1, 5, 9, 13, 200, 7};
  Runner runner(*f.model, *f.be);
  TraceOptions full;
  full.steps = 7;
  const Trajectory a = record_trajectory(runner, ids, full);
  TraceOptions sub = full;
  sub.record_tokens = {1, 4};
  sub.record_every = 3;
  const Trajectory b = record_trajectory(runner, ids, sub);
  EXPECT_EQ(b.states.shape_str(), "[2, 4, 64]");  // t = 0, 3, 6 and the last, 7
  EXPECT_EQ(b.iteration_index, (std::vector<int>{0, 3, 6, 7}));
  for (int64_t i : {1, 4})
    for (int t : {0, 3, 6, 7})
      EXPECT_EQ(test::rel_err(state_row(b, i, t), state_row(a, i, t)), 0.0);
  EXPECT_EQ(b.kept_token(0), -1);
  // Metrics still cover every token; dist_to_final only where kept (and at R).
  for (int64_t i = 0; i < 6; ++i) {
    EXPECT_EQ(b.rel_change.at(i, 5), a.rel_change.at(i, 5));
    EXPECT_EQ(b.kl.at(i, 5), a.kl.at(i, 5));
    EXPECT_EQ(b.dist_to_final.at(i, 7), 0.0);
  }
  EXPECT_EQ(b.dist_to_final.at(1, 3), a.dist_to_final.at(1, 3));
  EXPECT_TRUE(std::isnan(b.dist_to_final.at(0, 3)));
  EXPECT_TRUE(std::isnan(b.dist_to_final.at(1, 4)));
  EXPECT_EQ(test::rel_err(a.latent, b.latent), 0.0);
}

TEST(RecordTrajectory, SeedsConvergeToTheSameEndState) {
  Fixture f("tiny-b");
  const std::vector<int32_t> ids = {17, 42, 7, 256};
  Runner runner(*f.model, *f.be);
  TraceOptions o;
  o.steps = 24;
  o.extra_seeds = 3;
  o.decode = false;
  o.exits = {};
  const Trajectory tr = record_trajectory(runner, ids, o);
  ASSERT_EQ(tr.paths.final_states.shape_str(), "[4, 4, 96]");
  // Row 0 is the main trajectory's end state; each seed row is a forward pass from that seed.
  for (int64_t i = 0; i < 4; ++i)
    for (int64_t j = 0; j < 96; ++j)
      ASSERT_EQ(tr.paths.final_states.f32()[i * 96 + j], state_row(tr, i, 24).f32()[j]);
  Runner plain(*f.model, *f.be);
  InitState s2;
  s2.scale = 1.0;
  s2.seed = 2;
  const Tensor want = f.host(plain.forward(ids, 24, s2).latent_raw);
  EXPECT_EQ(test::rel_err(tr.paths.final_states.rows(2, 3).reshape({4, 96}), want), 0.0);
  // The tiny-b recurrence contracts: far apart at the start, together at the end.
  for (int64_t i = 0; i < 4; ++i) {
    EXPECT_GT(tr.paths.spread.at(i, 0), 0.5) << i;
    EXPECT_LT(tr.paths.spread.at(i, 24), 1e-2 * tr.paths.spread.at(i, 0)) << i;
  }
  EXPECT_TRUE(std::isnan(tr.kl.at(0, 3)));  // no decode
}

TEST(RecordTrajectory, BadOptionsAreClearErrors) {
  Fixture f("tiny-a");
  Runner runner(*f.model, *f.be);
  const std::vector<int32_t> ids = {1, 2, 3};
  TraceOptions o;
  o.steps = 0;
  EXPECT_NE(error_of([&] { record_trajectory(runner, ids, o); }).find("--steps must be at least 1"),
            std::string::npos);
  o.steps = 4;
  o.record_tokens = {0, 3};
  EXPECT_NE(error_of([&] { record_trajectory(runner, ids, o); }).find("names token 3, outside the 3 tokens"),
            std::string::npos);
  o.record_tokens = {};
  o.record_every = 0;
  EXPECT_NE(error_of([&] { record_trajectory(runner, ids, o); }).find("--record-every"),
            std::string::npos);
  o.record_every = 1;
  o.memory_limit = 1000;
  const std::string e = error_of([&] { record_trajectory(runner, ids, o); });
  EXPECT_NE(e.find("recording 3 tokens x 5 iterations x 64 floats"), std::string::npos) << e;
  EXPECT_NE(e.find("over the memory limit"), std::string::npos) << e;
  EXPECT_NE(e.find("--record-tokens"), std::string::npos) << e;
  // The estimate is what the limit compares: exactly enough passes.
  o.memory_limit = trace_memory_bytes(f.model->config(), 3, o);
  EXPECT_NO_THROW(record_trajectory(runner, ids, o));
  o.memory_limit = 0;
  o.exits = {"nonsense"};
  EXPECT_NE(error_of([&] { record_trajectory(runner, ids, o); }).find("nonsense"), std::string::npos);
  const std::vector<int32_t> bad_ids = {1, 9999};
  o.exits = {"kl"};
  EXPECT_NE(error_of([&] { record_trajectory(runner, bad_ids, o); }).find("outside the vocabulary"),
            std::string::npos);
}

}  // namespace
}  // namespace huginn
