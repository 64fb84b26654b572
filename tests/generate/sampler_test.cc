// Each sampler on fixed logits: seeded draws whose frequencies must match the distribution the
// sampler defines (4-sigma bands), plus the deterministic parts (greedy ties, filters' survivors,
// penalties, reseeding).
#include <gtest/gtest.h>

#include <cmath>
#include <map>

#include "huginn/error.h"
#include "huginn/sampler.h"

namespace huginn {
namespace {

const std::vector<float> kLogits = {2.0f, 1.0f, 0.5f, 0.0f, -1.0f, -3.0f};

std::vector<double> softmax(const std::vector<double>& x) {
  double mx = -INFINITY, s = 0;
  for (double v : x) mx = std::max(mx, v);
  std::vector<double> p(x.size());
  for (size_t i = 0; i < x.size(); ++i) s += p[i] = std::exp(x[i] - mx);
  for (double& v : p) v /= s;
  return p;
}

std::vector<double> logits_d(float scale = 1.0f) {
  std::vector<double> x;
  for (float v : kLogits) x.push_back(v / scale);
  return x;
}

// Draws n tokens and checks each id's frequency against want (0 = must never appear).
void expect_distribution(SamplerChain& chain, const std::vector<double>& want, int n = 40000) {
  std::vector<int> counts(want.size(), 0);
  for (int i = 0; i < n; ++i) {
    const int32_t id = chain.sample(kLogits);
    ASSERT_GE(id, 0);
    ASSERT_LT(id, static_cast<int32_t>(want.size()));
    ++counts[static_cast<size_t>(id)];
  }
  for (size_t i = 0; i < want.size(); ++i) {
    const double f = double(counts[i]) / n;
    if (want[i] == 0.0) {
      EXPECT_EQ(counts[i], 0) << "id " << i << " must be filtered out";
    } else {
      const double sigma = std::sqrt(want[i] * (1 - want[i]) / n);
      EXPECT_NEAR(f, want[i], 4 * sigma + 1e-9) << "id " << i;
    }
  }
}

// Keeps ids in `keep`, renormalises the given probabilities over them.
std::vector<double> restrict(const std::vector<double>& p, const std::vector<int>& keep) {
  std::vector<double> out(p.size(), 0.0);
  double s = 0;
  for (int i : keep) s += p[static_cast<size_t>(i)];
  for (int i : keep) out[static_cast<size_t>(i)] = p[static_cast<size_t>(i)] / s;
  return out;
}

TEST(Sampler, GreedyTakesArgmaxLowestIdOnTie) {
  SamplerChain c;
  c.add(make_greedy_sampler());
  EXPECT_EQ(c.sample(kLogits), 0);
  const std::vector<float> tie = {0.5f, 3.0f, 1.0f, 3.0f};
  EXPECT_EQ(c.sample(tie), 1);
}

TEST(Sampler, DistMatchesSoftmax) {
  SamplerChain c;
  c.add(make_dist_sampler(7));
  expect_distribution(c, softmax(logits_d()));
}

TEST(Sampler, TemperatureSharpens) {
  SamplerChain c;
  c.add(make_temperature_sampler(0.5f));
  c.add(make_dist_sampler(11));
  expect_distribution(c, softmax(logits_d(0.5f)));
  SamplerChain hot;
  hot.add(make_temperature_sampler(2.0f));
  hot.add(make_dist_sampler(12));
  expect_distribution(hot, softmax(logits_d(2.0f)));
}

TEST(Sampler, TopKKeepsKMostLikely) {
  SamplerChain c;
  c.add(make_top_k_sampler(3));
  c.add(make_dist_sampler(13));
  expect_distribution(c, restrict(softmax(logits_d()), {0, 1, 2}));
  // Ties at the k-th probability stay (the reference compares probabilities with '<').
  Candidates cand;
  const std::vector<float> tie = {1.0f, 0.0f, 0.0f, -1.0f};
  cand.reset(tie);
  make_top_k_sampler(2)->apply(cand);
  EXPECT_EQ(cand.data.size(), 3u);
}

TEST(Sampler, TopPDropsTokensPastTheMass) {
  const std::vector<double> p = softmax(logits_d());
  // Cumulative: p0, p0+p1, ... The reference keeps each token whose cumulative mass (itself
  // included) is <= top_p, and always the first.
  const float top_p = static_cast<float>(p[0] + p[1] + 0.5 * p[2]);
  SamplerChain c;
  c.add(make_top_p_sampler(top_p));
  c.add(make_dist_sampler(17));
  expect_distribution(c, restrict(p, {0, 1}));
  Candidates cand;
  cand.reset(kLogits);
  make_top_p_sampler(0.01f)->apply(cand);  // below the top probability: the top one stays
  ASSERT_EQ(cand.data.size(), 1u);
  EXPECT_EQ(cand.data[0].id, 0);
}

TEST(Sampler, MinPDropsUnlikelyTokens) {
  const std::vector<double> p = softmax(logits_d());
  SamplerChain c;
  c.add(make_min_p_sampler(0.2f));  // keeps p >= 0.2 · p0: ids 0 (1.0), 1 (0.37), 2 (0.22)
  c.add(make_dist_sampler(19));
  std::vector<int> keep;
  for (int i = 0; i < 6; ++i)
    if (p[static_cast<size_t>(i)] >= 0.2 * p[0]) keep.push_back(i);
  ASSERT_EQ(keep, (std::vector<int>{0, 1, 2}));
  expect_distribution(c, restrict(p, keep));
}

TEST(Sampler, RepetitionPenaltyFollowsTheHFRule) {
  auto pen = make_repetition_penalty_sampler(2.0f);
  pen->accept(0);  // logit 2 -> 1
  pen->accept(4);  // logit -1 -> -2
  pen->accept(4);  // counted once
  Candidates cand;
  cand.reset(kLogits);
  pen->apply(cand);
  EXPECT_FLOAT_EQ(cand.data[0].logit, 1.0f);
  EXPECT_FLOAT_EQ(cand.data[4].logit, -2.0f);
  EXPECT_FLOAT_EQ(cand.data[1].logit, 1.0f);
  // In a chain: the penalised distribution.
  SamplerChain c;
  c.add(make_repetition_penalty_sampler(2.0f));
  c.add(make_dist_sampler(23));
  c.accept(0);
  std::vector<double> x = logits_d();
  x[0] = 1.0;
  expect_distribution(c, softmax(x));
  // A window of 1 forgets older tokens.
  auto win = make_repetition_penalty_sampler(2.0f, 1);
  win->accept(0);
  win->accept(1);
  cand.reset(kLogits);
  win->apply(cand);
  EXPECT_FLOAT_EQ(cand.data[0].logit, 2.0f);
  EXPECT_FLOAT_EQ(cand.data[1].logit, 0.5f);
}

TEST(Sampler, ReferenceChainOrderAndSeeding) {
  SamplingParams sp;
  sp.greedy = false;
  sp.temperature = 0.8f;
  sp.top_k = 4;
  sp.top_p = 0.95f;
  sp.min_p = 0.05f;
  sp.repetition_penalty = 1.1f;
  sp.seed = 42;
  auto a = make_sampler_chain(sp);
  EXPECT_EQ(a->name(), "repetition-penalty -> temperature -> top-k -> top-p -> min-p -> dist");
  auto b = a->clone();
  std::vector<int32_t> ra, rb;
  for (int i = 0; i < 200; ++i) {
    ra.push_back(a->sample(kLogits));
    rb.push_back(static_cast<SamplerChain*>(b.get())->sample(kLogits));
  }
  EXPECT_EQ(ra, rb);  // same seed, same stream
  a->reset();
  std::vector<int32_t> again;
  for (int i = 0; i < 200; ++i) again.push_back(a->sample(kLogits));
  EXPECT_EQ(again, ra);  // reset reseeds
  sp.seed = 43;
  auto other = make_sampler_chain(sp);
  std::vector<int32_t> ro;
  for (int i = 0; i < 200; ++i) ro.push_back(other->sample(kLogits));
  EXPECT_NE(ro, ra);
  std::map<int32_t, int> seen;
  for (int32_t id : ra) ++seen[id];
  EXPECT_GT(seen.size(), 1u);
  EXPECT_EQ(seen.count(5), 0u);  // top-k 4 removes ids 4, 5
  EXPECT_EQ(seen.count(4), 0u);

  SamplingParams g;  // greedy by default; temperature <= 0 is greedy too
  EXPECT_EQ(make_sampler_chain(g)->name(), "greedy");
  g.greedy = false;
  g.temperature = 0.0f;
  EXPECT_EQ(make_sampler_chain(g)->sample(kLogits), 0);
}

TEST(Sampler, BadParametersAreErrors) {
  SamplingParams sp;
  sp.greedy = false;
  sp.top_p = 1.5f;
  EXPECT_THROW(make_sampler_chain(sp), Error);
  sp.top_p = 1.0f;
  sp.min_p = -0.1f;
  EXPECT_THROW(make_sampler_chain(sp), Error);
  sp.min_p = 0.0f;
  sp.top_k = -1;
  EXPECT_THROW(make_sampler_chain(sp), Error);
  sp.top_k = 0;
  sp.repetition_penalty = 0.0f;
  EXPECT_THROW(make_sampler_chain(sp), Error);
  EXPECT_THROW(make_temperature_sampler(0.0f), Error);
  EXPECT_THROW(make_top_k_sampler(0), Error);
}

// A vanishing temperature or penalty used to be accepted: logits / 1e-40 overflow to inf, softmax
// turns them into NaN and the chain always picks one token. Both are bounded, the bound is in the
// message, and at the smallest accepted values sampling stays finite and follows the argmax.
TEST(Sampler, VanishingTemperatureAndPenaltyAreRefusedWithTheBound) {
  for (float t : {1e-40f, 1e-6f, 0.0f, -1.0f, 1e5f, INFINITY, NAN}) {
    try {
      make_temperature_sampler(t);
      ADD_FAILURE() << "temperature " << t << " accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("[1e-05, 10000]"), std::string::npos) << e.what();
    }
  }
  for (float p : {1e-40f, 1e-4f, 0.0f, 1e3f, INFINITY, NAN})
    EXPECT_THROW(make_repetition_penalty_sampler(p, 64), Error) << p;
  SamplingParams sp;
  sp.greedy = false;
  sp.temperature = 1e-5f;
  sp.repetition_penalty = 1e-3f;
  sp.seed = 7;
  auto chain = make_sampler_chain(sp);
  std::vector<float> logits = {30.0f, -25.0f, 29.9f, 0.0f};
  for (int i = 0; i < 20; ++i) EXPECT_EQ(chain->sample(logits), 0);
}

}  // namespace
}  // namespace huginn
