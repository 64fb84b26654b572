// Batched decode (huginn/forward_batch.h, Generator::decode_batch, DecodeBatcher): a sequence's
// tokens, per-token iteration counts and logits are bit-identical whether it decodes alone or
// batched with others — mixed depths, exit rules, warm starts, caches and samplers in one batch,
// sequences joining and leaving between tokens.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <thread>

#include <nlohmann/json.hpp>

#include "huginn/decode_batcher.h"
#include "huginn/forward_batch.h"
#include "huginn/generate.h"
#include "huginn/samplers.h"
#include "huginn/thread_pool.h"
#include "huginn/wavefront.h"
#include "test_util.h"

namespace huginn {
namespace {

using test::golden_dir;

Tensor random_tensor(int64_t rows, int64_t cols, uint64_t seed) {
  Tensor t = Tensor::empty({rows, cols});
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> d(0.0f, 1.0f);
  for (int64_t i = 0; i < rows * cols; ++i) t.f32()[i] = d(rng);
  return t;
}

bool same_bits(const float* a, const float* b, int64_t n) {
  return std::memcmp(a, b, static_cast<size_t>(n) * sizeof(float)) == 0;
}

class BatchLinear : public ::testing::TestWithParam<std::string> {};

// The property linear() relies on (the backend's matmul gives each of up to
// matmul_exact_rows() rows the bits of a one-row call), and linear() itself over more rows,
// with column tiles.
TEST_P(BatchLinear, RowsEqualOneRowMatmul) {
  ThreadPool pool(2);
  auto be = make_backend(GetParam(), pool);
  auto model = Model::load(golden_dir("tiny-a"), *be);
  BatchRunner br(*model, *be);
  const int64_t exact = be->matmul_exact_rows();
  EXPECT_GE(exact, 1);
  for (auto [N, K] : {std::pair<int64_t, int64_t>{67, 45}, {300, 64}, {700, 1000}}) {
    const Tensor w = be->upload(random_tensor(N, K, 1));
    for (int64_t M : {1, 2, 3, 4, 5, 7, 8, 13, 19, 64, 97}) {
      const Tensor x = be->upload(random_tensor(M, K, 100 + M));
      Tensor y = be->alloc({M, N});
      br.linear(x, w, y);
      const Tensor yh = test::to_host(*be, y);
      Tensor direct = be->alloc({M, N});
      if (M <= exact) be->matmul(x, w, direct);
      const Tensor dh = test::to_host(*be, direct);
      for (int64_t m = 0; m < M; ++m) {
        Tensor one = be->alloc({1, N});
        be->matmul(x.rows(m, m + 1), w, one);
        const Tensor oh = test::to_host(*be, one);
        EXPECT_TRUE(same_bits(yh.row(m), oh.row(0), N)) << "linear N=" << N << " K=" << K
                                                        << " M=" << M << " row " << m;
        if (M <= exact) {
          EXPECT_TRUE(same_bits(dh.row(m), oh.row(0), N))
              << "backend matmul M=" << M << " row " << m << " differs from a one-row call";
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Backends, BatchLinear, ::testing::ValuesIn(test::kBackends));

// The batched decode tests run on the fast CPU backend and on the strict one.
class DecodeBatch : public ::testing::TestWithParam<std::string> {};
class DecodeBatcherTest : public ::testing::TestWithParam<std::string> {};

struct Fixture {
  explicit Fixture(const std::string& backend, const std::string& set = "tiny-a")
      : pool(2), be(make_backend(backend, pool)), model(Model::load(golden_dir(set), *be)) {}
  ThreadPool pool;
  std::unique_ptr<Backend> be;
  std::shared_ptr<const Model> model;
};

// Sequences with every kind of per-request setting; max_new_tokens differ so they leave at
// different ticks. No repetition penalty: the hand-driven loop below does not feed the prompt
// to the sampler's history as generate() does.
std::vector<GenerateOptions> mixed_options() {
  std::vector<GenerateOptions> v;
  GenerateOptions o;
  o.default_stop_ids = false;
  o.steps = 4;
  o.max_new_tokens = 9;
  v.push_back(o);  // greedy, fixed depth
  o = GenerateOptions{};
  o.default_stop_ids = false;
  o.steps = 16;
  o.exit = ExitSpec::parse("kl:5e-3");
  o.warm_start = WarmStart::kAuto;
  o.sampling.greedy = false;
  o.sampling.temperature = 0.9f;
  o.sampling.seed = 7;
  o.max_new_tokens = 12;
  v.push_back(o);  // logit exit, warm start (raw), seeded sampling
  o = GenerateOptions{};
  o.default_stop_ids = false;
  o.steps = 12;
  o.exit = ExitSpec::parse("latent-diff:0.3");
  o.init_scale = 1.0;
  o.init_seed = 3;
  o.cache_strategy = KVCache::Strategy::kCompressS;
  o.cache_slots = 2;
  o.warm_start = WarmStart::kRaw;
  o.max_new_tokens = 7;
  v.push_back(o);  // state exit, random s_0, shared cache
  o = GenerateOptions{};
  o.default_stop_ids = false;
  o.steps = 10;
  o.exit = ExitSpec::parse("argmax-stability:2");
  o.min_steps = 2;
  o.check_every = 2;
  o.warm_start = WarmStart::kLatent;
  o.sampling.greedy = false;
  o.sampling.temperature = 0.7f;
  o.sampling.top_k = 20;
  o.sampling.seed = 11;
  o.max_new_tokens = 10;
  v.push_back(o);  // sparse checks, warm start (ln_f), top-k
  o = GenerateOptions{};
  o.default_stop_ids = false;
  o.steps = 1;
  o.max_new_tokens = 5;
  v.push_back(o);  // one recurrence
  o = GenerateOptions{};
  o.default_stop_ids = false;
  o.steps = 20;
  o.exit = ExitSpec::parse("entropy-diff:1e-2");
  o.sampling.greedy = false;
  o.sampling.min_p = 0.05f;
  o.sampling.seed = 5;
  o.max_new_tokens = 11;
  v.push_back(o);
  return v;
}

const std::vector<std::vector<int32_t>> kPrompts = {
    {3, 141, 59, 26, 53}, {7, 7, 200}, {1}, {90, 12, 44, 250, 31, 8}, {17, 18}, {100, 101, 102}};

struct Trace {
  std::vector<int32_t> tokens;
  std::vector<int> steps;
  std::vector<std::vector<float>> logits;
};

TokenCallback record_into(Trace& t) {
  return [&t](const TokenEvent& ev) {
    t.tokens.push_back(ev.id);
    t.steps.push_back(ev.steps);
    t.logits.emplace_back(ev.logits.begin(), ev.logits.end());
    return true;
  };
}

Trace solo(const Generator& gen, std::span<const int32_t> prompt) {
  Trace t;
  auto ctx = gen.new_context();
  gen.generate(*ctx, prompt, record_into(t));
  return t;
}

void expect_same(const Trace& got, const Trace& want, const std::string& what) {
  EXPECT_EQ(got.tokens, want.tokens) << what;
  EXPECT_EQ(got.steps, want.steps) << what;
  ASSERT_EQ(got.logits.size(), want.logits.size()) << what;
  for (size_t i = 0; i < got.logits.size(); ++i)
    EXPECT_TRUE(got.logits[i] == want.logits[i]) << what << ": logits of token " << i;
}

// A hand-driven engine: sequence i starts (prefill) at tick 2i, then every tick the live
// sequences sample their next token and decode together; each leaves after its max_new_tokens.
TEST_P(DecodeBatch, EqualsSoloWithJoinsLeavesAndMixedSettings) {
  Fixture f(GetParam());
  const auto opts = mixed_options();
  std::vector<std::unique_ptr<Generator>> gens;
  std::vector<Trace> want;
  for (size_t i = 0; i < opts.size(); ++i) {
    gens.push_back(std::make_unique<Generator>(*f.model, *f.be, opts[i]));
    want.push_back(solo(*gens[i], kPrompts[i]));
  }
  // The settings do what they are meant to: adaptive exits end tokens at different depths.
  std::set<int> depths;
  for (const Trace& t : want) depths.insert(t.steps.begin(), t.steps.end());
  EXPECT_GE(depths.size(), 5u) << "exit rules should give varied iteration counts";

  BatchRunner br(*f.model, *f.be);
  const size_t n = opts.size();
  std::vector<std::unique_ptr<GenerationContext>> ctxs(n);
  std::vector<CallResult> last(n);
  std::vector<Trace> got(n);
  std::vector<bool> done(n, false);
  std::set<size_t> batch_sizes;
  for (int tick = 0; std::count(done.begin(), done.end(), true) < static_cast<long>(n); ++tick) {
    std::vector<BatchedCall> calls;
    std::vector<size_t> who;
    for (size_t i = 0; i < n; ++i) {
      if (done[i] || tick < 2 * static_cast<int>(i)) continue;
      if (!ctxs[i]) {
        ctxs[i] = gens[i]->new_context();
        last[i] = gens[i]->prefill(*ctxs[i], kPrompts[i]);
      }
      const int32_t tok = gens[i]->sample(*ctxs[i], last[i].logits);
      got[i].tokens.push_back(tok);
      got[i].steps.push_back(last[i].steps);
      got[i].logits.emplace_back(last[i].logits.begin(), last[i].logits.end());
      if (static_cast<int>(got[i].tokens.size()) >= opts[i].max_new_tokens) {
        done[i] = true;
        continue;
      }
      calls.push_back({gens[i].get(), ctxs[i].get(), tok, {}, nullptr, {}});
      who.push_back(i);
    }
    if (calls.empty()) continue;
    batch_sizes.insert(calls.size());
    Generator::decode_batch(calls, br);
    for (size_t k = 0; k < calls.size(); ++k) {
      ASSERT_FALSE(calls[k].error) << "sequence " << who[k];
      last[who[k]] = calls[k].result;
    }
  }
  for (size_t i = 0; i < n; ++i) expect_same(got[i], want[i], "sequence " + std::to_string(i));
  EXPECT_GE(*batch_sizes.rbegin(), 4u);
  EXPECT_GE(batch_sizes.size(), 4u) << "the batch should grow and shrink";
}

// Continuous depth batching driven by hand (DepthBatch): sequence i's prompt joins the running
// batch at pass 3i, in the middle of the others' tokens, and each finished call's next token
// joins one to three passes later, so passes carry calls at different depths (logit and state
// exits, shared cache slots, warm starts, a one-step sequence). Tokens, depths and logits equal
// solo runs. Prompts join the batch only where the backend's matmul is row-exact for any rows.
TEST_P(DecodeBatch, CallsJoiningMidTokenGetSoloResults) {
  Fixture f(GetParam());
  const auto opts = mixed_options();
  const size_t n = opts.size();
  std::vector<std::unique_ptr<Generator>> gens;
  std::vector<Trace> want;
  for (size_t i = 0; i < n; ++i) {
    gens.push_back(std::make_unique<Generator>(*f.model, *f.be, opts[i]));
    want.push_back(solo(*gens[i], kPrompts[i]));
  }
  const bool prompts = Generator::batches_prompts(*f.be);
  EXPECT_EQ(prompts, GetParam() == "cpu") << "the CPU GEMM is row-exact for any M; strict for 4";
  struct Seq {
    std::unique_ptr<GenerationContext> ctx;
    BatchedCall call;
    int join_at = 0;
    bool in = false, done = false;
    Trace got;
  };
  std::vector<Seq> seqs(n);
  for (size_t i = 0; i < n; ++i) seqs[i].join_at = 3 * static_cast<int>(i);
  auto take = [&](size_t i, const CallResult& r, int pass) {
    Seq& q = seqs[i];
    q.call.id = gens[i]->sample(*q.ctx, r.logits);
    q.call.ids = {};
    q.got.tokens.push_back(q.call.id);
    q.got.steps.push_back(r.steps);
    q.got.logits.emplace_back(r.logits.begin(), r.logits.end());
    q.done = static_cast<int>(q.got.tokens.size()) >= opts[i].max_new_tokens;
    q.join_at = pass + 1 + static_cast<int>(i % 3);
  };
  BatchRunner br(*f.model, *f.be);
  DepthBatch batch(br.pass());
  int mid_token_joins = 0;
  size_t widest = 0;
  for (int pass = 0; std::any_of(seqs.begin(), seqs.end(), [](const Seq& q) { return !q.done; }); ++pass) {
    ASSERT_LT(pass, 10000);
    std::vector<BatchedCall*> join, failed;
    for (size_t i = 0; i < n; ++i) {
      Seq& q = seqs[i];
      if (q.done || q.in || q.join_at > pass) continue;
      if (!q.ctx) {
        q.ctx = gens[i]->new_context();
        q.call = BatchedCall{gens[i].get(), q.ctx.get(), -1, {}, nullptr, kPrompts[i]};
        if (!prompts) {  // a lone prefill; its tokens join
          take(i, gens[i]->prefill(*q.ctx, kPrompts[i]), pass);
          continue;
        }
      }
      join.push_back(&q.call);
      q.in = true;
    }
    if (!join.empty() && batch.size() > 0) ++mid_token_joins;
    batch.admit(join, failed);
    ASSERT_TRUE(failed.empty());
    widest = std::max(widest, batch.size());
    for (BatchedCall* c : batch.step()) {
      const size_t i = static_cast<size_t>(std::find_if(seqs.begin(), seqs.end(), [&](const Seq& q) {
                                             return &q.call == c;
                                           }) - seqs.begin());
      ASSERT_LT(i, n);
      ASSERT_FALSE(c->error) << "sequence " << i;
      seqs[i].in = false;
      take(i, c->result, pass);
    }
  }
  EXPECT_EQ(batch.size(), 0u);
  for (size_t i = 0; i < n; ++i) expect_same(seqs[i].got, want[i], "sequence " + std::to_string(i));
  EXPECT_GE(mid_token_joins, 10) << "calls should join while others are mid-token";
  EXPECT_GE(widest, 4u);
}

// A call past its context fails alone; its context is untouched and the others proceed.
TEST_P(DecodeBatch, CallPastTheContextFailsAlone) {
  Fixture f(GetParam());
  GenerateOptions small;
  small.context_length = 6;
  small.steps = 3;
  GenerateOptions big;
  big.steps = 5;
  Generator g1(*f.model, *f.be, small), g2(*f.model, *f.be, big);
  auto c1 = g1.new_context(), c2 = g2.new_context();
  g1.prefill(*c1, std::vector<int32_t>{1, 2, 3, 4, 5, 6});
  g2.prefill(*c2, std::vector<int32_t>{1, 2, 3});
  auto c3 = g2.new_context();
  g2.prefill(*c3, std::vector<int32_t>{1, 2, 3});
  const CallResult want = g2.decode(*c3, 9);
  const std::vector<float> want_logits(want.logits.begin(), want.logits.end());
  BatchRunner br(*f.model, *f.be);
  std::vector<BatchedCall> calls = {{&g1, c1.get(), 9, {}, nullptr, {}}, {&g2, c2.get(), 9, {}, nullptr, {}}};
  Generator::decode_batch(calls, br);
  EXPECT_TRUE(calls[0].error);
  EXPECT_EQ(c1->n_past(), 6);
  ASSERT_FALSE(calls[1].error);
  EXPECT_EQ(c2->n_past(), 4);
  EXPECT_EQ(calls[1].result.steps, 5);
  EXPECT_TRUE(std::vector<float>(calls[1].result.logits.begin(), calls[1].result.logits.end()) ==
              want_logits);
  try {
    std::rethrow_exception(calls[0].error);
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("context"), std::string::npos) << e.what();
  }
  // An id outside the vocabulary is refused the same way.
  std::vector<BatchedCall> bad = {{&g2, c2.get(), 300, {}, nullptr, {}}};
  Generator::decode_batch(bad, br);
  EXPECT_TRUE(bad[0].error);
  EXPECT_EQ(c2->n_past(), 4);
}

// Threads generating with generate() meet in a DecodeBatcher: same tokens as alone, and the
// calls really were batched. Late starters join while others run.
TEST_P(DecodeBatcherTest, ThreadsGetSoloResults) {
  Fixture f(GetParam(), "tiny-b");
  const auto opts = mixed_options();
  std::vector<std::unique_ptr<Generator>> gens;
  std::vector<Trace> want;
  for (size_t i = 0; i < opts.size(); ++i) {
    GenerateOptions o = opts[i];
    o.max_new_tokens += 8;
    gens.push_back(std::make_unique<Generator>(*f.model, *f.be, o));
    want.push_back(solo(*gens[i], kPrompts[i]));
  }
  DecodeBatcher batcher(*f.model, *f.be, 4, std::chrono::microseconds(20000));
  std::vector<Trace> got(opts.size());
  std::vector<std::thread> threads;
  for (size_t i = 0; i < opts.size(); ++i) {
    threads.emplace_back([&, i] {
      if (i >= 3) {  // join while the first ones are generating
        const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(2);
        while (batcher.stats().ticks < 3 * (i - 2) && std::chrono::steady_clock::now() < give_up)
          std::this_thread::yield();
      }
      DecodeBatcher::Member member(batcher);
      auto ctx = gens[i]->new_context();
      gens[i]->generate(
          *ctx, kPrompts[i],
          [&](const TokenEvent& ev) {
            got[i].tokens.push_back(ev.id);
            got[i].steps.push_back(ev.steps);
            got[i].logits.emplace_back(ev.logits.begin(), ev.logits.end());
            return true;
          },
          nullptr,
          [&](GenerationContext& c, std::span<const int32_t> ids) {
            return member.call(*gens[i], c, ids);
          });
    });
  }
  for (auto& t : threads) t.join();
  for (size_t i = 0; i < opts.size(); ++i) expect_same(got[i], want[i], "thread " + std::to_string(i));
  const DecodeBatcher::Stats st = batcher.stats();
  EXPECT_GE(st.max_rows, 3);
  EXPECT_LE(st.max_rows, 4);
  EXPECT_GT(st.rows, st.ticks);
}

// Wavefront decoders ride the batcher's passes (WavefrontOptions::core / prefill through a
// Member) while other threads decode sequentially in it: every sequence gets what it gets alone,
// the wavefront ones sequential decoding's tokens, steps and logits bit for bit (fixed depth,
// and a KL exit with a shared cache), and their lanes really shared passes with the calls.
TEST_P(DecodeBatcherTest, WavefrontRidesTheBatchBesideSequentialThreads) {
  Fixture f(GetParam(), "tiny-b");
  std::vector<GenerateOptions> opts = mixed_options();
  opts.resize(2);  // sequential: greedy fixed depth; exit, warm start and sampling
  GenerateOptions w;
  w.default_stop_ids = false;
  w.steps = 8;
  w.max_new_tokens = 14;
  opts.push_back(w);  // wavefront, fixed depth, full cache
  w.steps = 12;
  w.exit = ExitSpec::parse("kl:5e-3");
  w.cache_strategy = KVCache::Strategy::kCompressS;
  w.cache_slots = 3;
  w.init_scale = 1.0;
  w.init_seed = 9;
  opts.push_back(w);  // wavefront, logit exit, shared cache, random s_0
  std::vector<std::unique_ptr<Generator>> gens;
  std::vector<Trace> want;
  for (size_t i = 0; i < opts.size(); ++i) {
    opts[i].max_new_tokens += 8;
    gens.push_back(std::make_unique<Generator>(*f.model, *f.be, opts[i]));
    want.push_back(solo(*gens[i], kPrompts[i]));
  }
  DecodeBatcher batcher(*f.model, *f.be, 4, std::chrono::microseconds(20000));
  std::vector<Trace> got(opts.size());
  std::vector<WavefrontStats> wst(opts.size());
  std::vector<std::thread> threads;
  for (size_t i = 0; i < opts.size(); ++i) {
    threads.emplace_back([&, i] {
      DecodeBatcher::Member member(batcher);
      const Generator& g = *gens[i];
      auto ctx = g.new_context();
      const TokenCallback record = record_into(got[i]);
      auto call = [&](GenerationContext& c, std::span<const int32_t> ids) { return member.call(g, c, ids); };
      if (i < 2) {
        g.generate(*ctx, kPrompts[i], record, nullptr, call);
        return;
      }
      WavefrontOptions wo;
      wo.core = [&](Tensor& s, const Tensor& e, const Rows& rows) { member.core(s, e, rows); };
      wo.prefill = call;
      generate_wavefront(g, *ctx, kPrompts[i], wo, record, nullptr, &wst[i]);
    });
  }
  for (auto& t : threads) t.join();
  for (size_t i = 0; i < opts.size(); ++i) expect_same(got[i], want[i], "thread " + std::to_string(i));
  const DecodeBatcher::Stats st = batcher.stats();
  EXPECT_GT(st.rider_rows, 0u);
  EXPECT_GT(st.shared_passes, 0u) << "wavefront lanes shared passes with sequential calls";
  EXPECT_GT(wst[2].rows_per_core_pass(), 1.0) << "several lanes per pass, as alone";
}

// The speculative and diffusion samplers ride the batcher too (their options' core / prefill
// through a Member) beside a sequential thread: each gets the tokens and steps it gets alone.
TEST_P(DecodeBatcherTest, SamplersRideTheBatchBesideASequentialThread) {
  Fixture f(GetParam(), "tiny-b");
  GenerateOptions o;
  o.default_stop_ids = false;
  o.steps = 8;
  o.max_new_tokens = 16;
  o.init_scale = 1.0;
  o.init_seed = 4;
  Generator g(*f.model, *f.be, o);
  SpeculativeOptions spec;
  spec.draft_steps = 2;
  spec.lookahead_for_draft = 4;
  spec.verification_threshold = 0.5;
  DiffusionOptions diff;  // the reference's defaults: EMA, dampened noise, latent-diff
  diff.inner_recurrence = 2;
  auto sample = [&](int k, std::span<const int32_t> prompt, const CoreFn& core, const CallFn& prefill) {
    auto ctx = g.new_context();
    const SamplerRequest one{ctx.get(), prompt, nullptr};
    SpeculativeOptions so = spec;
    DiffusionOptions dso = diff;
    so.core = dso.core = core;
    so.prefill = dso.prefill = prefill;
    return k == 0 ? generate_speculative(g, std::span(&one, 1), so)[0]
                  : generate_diffusion(g, std::span(&one, 1), dso)[0];
  };
  const GenerateResult want[2] = {sample(0, kPrompts[1], {}, {}), sample(1, kPrompts[2], {}, {})};
  const Trace seq_want = solo(g, kPrompts[0]);
  DecodeBatcher batcher(*f.model, *f.be, 4, std::chrono::microseconds(20000));
  GenerateResult got[2];
  Trace seq_got;
  std::vector<std::thread> threads;
  for (int k = 0; k < 3; ++k)
    threads.emplace_back([&, k] {
      DecodeBatcher::Member member(batcher);
      auto call = [&](GenerationContext& c, std::span<const int32_t> ids) { return member.call(g, c, ids); };
      if (k == 2) {
        auto ctx = g.new_context();
        g.generate(*ctx, kPrompts[0], record_into(seq_got), nullptr, call);
        return;
      }
      got[k] = sample(k, kPrompts[k + 1],
                      [&](Tensor& s, const Tensor& e, const Rows& rows) { member.core(s, e, rows); }, call);
    });
  for (auto& t : threads) t.join();
  for (int k = 0; k < 2; ++k) {
    const std::string what = k == 0 ? "speculative" : "diffusion";
    EXPECT_EQ(got[k].tokens, want[k].tokens) << what;
    EXPECT_EQ(got[k].steps, want[k].steps) << what;
    EXPECT_EQ(got[k].finish_reason, want[k].finish_reason) << what;
  }
  expect_same(seq_got, seq_want, "sequential");
  EXPECT_GT(batcher.stats().shared_passes, 0u) << "the samplers' rows shared passes with the calls";
}

// The pass's budget (max_batch) holds for riders, who count a slot per row as a call counts
// one: two sequential threads keep a batch of 2 full, generating again and again until the
// riders are done, while a wavefront decoder (up to 8 lanes), the speculative sampler (4
// verification rows) and the diffusion sampler (a window of up to 16 rows) ride. With no room
// beside the two calls, riders take passes of their own while the calls sit one out (a rider
// larger than the budget alone): each is served while the batch stays full (none waits for the
// calls to end, which would never come here), no pass carries more than 2 slots but a lone
// rider, and every output equals the same generation alone.
TEST_P(DecodeBatcherTest, RidersKeepThePassBudgetAndAreServedBesideAFullBatch) {
  Fixture f(GetParam(), "tiny-b");
  GenerateOptions o;
  o.default_stop_ids = false;
  o.steps = 8;
  o.max_new_tokens = 12;
  o.init_scale = 1.0;
  o.init_seed = 4;
  Generator g(*f.model, *f.be, o);
  GenerateOptions so = o;
  so.steps = 6;
  so.max_new_tokens = 6;
  Generator seq(*f.model, *f.be, so);
  WavefrontOptions wave;
  SpeculativeOptions spec;
  spec.draft_steps = 2;
  spec.lookahead_for_draft = 4;
  spec.verification_threshold = 0.5;
  DiffusionOptions diff;
  diff.inner_recurrence = 2;
  diff.freeze_strategy = DiffusionOptions::Freeze::kFixed;
  diff.max_wavefront = 16;
  const std::string decoders[] = {"wavefront", "speculative", "diffusion"};
  std::vector<GenerateResult> want;
  for (int k = 0; k < 3; ++k) {
    auto ctx = g.new_context();
    want.push_back(generate_decoded(g, *ctx, kPrompts[k], decoders[k], wave, spec, diff));
  }
  const Trace seq_want[2] = {solo(seq, kPrompts[3]), solo(seq, kPrompts[4])};

  DecodeBatcher batcher(*f.model, *f.be, 2, std::chrono::microseconds(20000));
  std::atomic<int> riders_done{0};
  GenerateResult got[3];
  int rounds[2] = {0, 0};
  bool outlasted[2] = {false, false};  // the riders finished while this thread kept generating
  std::vector<std::thread> threads;
  for (int k = 0; k < 2; ++k)
    threads.emplace_back([&, k] {
      DecodeBatcher::Member member(batcher);
      const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(120);
      while (riders_done.load() < 3 && std::chrono::steady_clock::now() < give_up) {
        Trace t;
        auto ctx = seq.new_context();
        seq.generate(*ctx, kPrompts[3 + k], record_into(t), nullptr,
                     [&](GenerationContext& c, std::span<const int32_t> ids) { return member.call(seq, c, ids); });
        expect_same(t, seq_want[k], "sequential thread " + std::to_string(k));
        ++rounds[k];
      }
      outlasted[k] = riders_done.load() == 3;
    });
  for (int k = 0; k < 3; ++k)
    threads.emplace_back([&, k] {
      // The riders start once the batch is full.
      while (batcher.stats().max_rows < 2) std::this_thread::yield();
      DecodeBatcher::Member member(batcher);
      WavefrontOptions wo = wave;
      SpeculativeOptions sp = spec;
      DiffusionOptions df = diff;
      wo.core = sp.core = df.core = [&](Tensor& s, const Tensor& e, const Rows& rows) { member.core(s, e, rows); };
      wo.prefill = sp.prefill = df.prefill = [&](GenerationContext& c, std::span<const int32_t> ids) {
        return member.call(g, c, ids);
      };
      auto ctx = g.new_context();
      got[k] = generate_decoded(g, *ctx, kPrompts[k], decoders[k], wo, sp, df);
      ++riders_done;
    });
  for (auto& t : threads) t.join();
  for (int k = 0; k < 3; ++k) {
    EXPECT_EQ(got[k].tokens, want[k].tokens) << decoders[k];
    EXPECT_EQ(got[k].steps, want[k].steps) << decoders[k];
    EXPECT_EQ(got[k].finish_reason, want[k].finish_reason) << decoders[k];
  }
  for (int k = 0; k < 2; ++k) {
    EXPECT_TRUE(outlasted[k]) << "sequential thread " << k << " stopped before the riders were served";
    EXPECT_GT(rounds[k], 0);
  }
  const DecodeBatcher::Stats st = batcher.stats();
  EXPECT_LE(st.max_load, 2) << "a pass carried more than --max-batch slots";
  EXPECT_EQ(st.max_rows, 2);
  EXPECT_GT(st.rider_rows, 0u);
  EXPECT_GT(st.calls_sat_out, 0u) << "riders had passes of their own while the calls waited";
  EXPECT_GT(st.lone_riders, 0u) << "riders of more than 2 rows ran alone";
}

// A copy of a golden model with room for long prompts (block_size is the RoPE table's length
// only): chunks are multiples of the CPU attention's 64-row query blocks.
std::string long_context_model(const std::string& set) {
  namespace fs = std::filesystem;
  const std::string dir = test::make_temp_dir("chunked_" + set);
  for (const char* f : {"config.json", "model.safetensors"})
    fs::copy_file(golden_dir(set) + "/" + f, dir + "/" + f, fs::copy_options::overwrite_existing);
  nlohmann::json c = nlohmann::json::parse(std::ifstream(dir + "/config.json"));
  c["block_size"] = 1024;
  std::ofstream(dir + "/config.json") << c.dump();
  return dir;
}

std::vector<int32_t> long_prompt(int64_t n, int32_t vocab, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<int32_t> v(static_cast<size_t>(n));
  for (int32_t& t : v) t = static_cast<int32_t>(rng() % static_cast<uint32_t>(vocab));
  return v;
}

// One call through a DepthBatch of its own that cuts prompts into chunks of `chunk` tokens.
CallResult chunked_call(BatchRunner& br, const Generator& g, GenerationContext& ctx,
                        std::span<const int32_t> ids, int64_t chunk, uint64_t* chunks) {
  BatchedCall call{&g, &ctx, -1, {}, nullptr, ids};
  BatchedCall* one = &call;
  std::vector<BatchedCall*> failed;
  DepthBatch batch(br.pass(), chunk);
  batch.admit(std::span<BatchedCall* const>(&one, 1), failed);
  if (call.error) std::rethrow_exception(call.error);
  while (batch.size() > 0) {
    if (g.splits_calls()) {
      EXPECT_LT(batch.rows(), chunk + 64) << "a pass carries at most one chunk";
    }
    batch.step();
  }
  *chunks += batch.chunks();
  return call.result;
}

// Chunked prefill: a 300-token prompt run as chunks of 64 (the last 108: a tail under 64 rows
// stays with the chunk before it, Backend::attention_split_rows), then tokens, then a 129-token
// continuation (64, 65: its draw of s_0 goes on across the chunks) gives every
// call's depth and logits bit-identical to whole calls, with zeros or a seeded random s_0 (a
// chunk's rows continue the call's draw) and warm start. Options that cannot split exactly (an
// exit criterion, shared cache slots) and the strict backend (4 exact matmul rows) run whole,
// with the same answers.
TEST_P(DecodeBatch, ChunkedPrefillEqualsWholeCalls) {
  const std::string dir = long_context_model("tiny-b");
  ThreadPool pool(2);
  std::unique_ptr<Backend> be = make_backend(GetParam(), pool);
  std::shared_ptr<const Model> model = Model::load(dir, *be);
  const int32_t V = static_cast<int32_t>(model->config().vocab_size);
  const std::vector<int32_t> prompt = long_prompt(300, V, 1), more = long_prompt(129, V, 2);
  struct Case {
    const char* name;
    GenerateOptions o;
    bool splits;
  };
  std::vector<Case> cases;
  GenerateOptions o;
  o.steps = 4;
  cases.push_back({"fixed depth, zeros", o, true});
  o.init_scale = 1.0;
  o.init_seed = 9;
  o.warm_start = WarmStart::kLatent;
  cases.push_back({"random s_0, warm start", o, true});
  o = GenerateOptions{};
  o.steps = 8;
  o.exit = ExitSpec::parse("kl:5e-3");
  o.init_scale = 1.0;
  cases.push_back({"KL exit", o, false});
  o = GenerateOptions{};
  o.steps = 6;
  o.cache_strategy = KVCache::Strategy::kCompressS;
  o.cache_slots = 2;
  cases.push_back({"shared cache slots", o, false});
  const bool exact_rows = GetParam() == "cpu";
  BatchRunner br(*model, *be);
  for (const Case& c : cases) {
    Generator g(*model, *be, c.o);
    EXPECT_EQ(g.splits_calls(), c.splits && exact_rows) << c.name;
    auto whole = g.new_context(), parts = g.new_context();
    uint64_t chunks = 0;
    const std::vector<std::vector<int32_t>> calls = {prompt, {5}, {7}, more, {11}};
    for (size_t k = 0; k < calls.size(); ++k) {
      const CallResult w = g.prefill(*whole, calls[k]);
      const std::vector<float> want(w.logits.begin(), w.logits.end());
      const std::vector<double> want_exits(w.exit_values.begin(), w.exit_values.end());
      const int want_steps = w.steps;
      const CallResult p = chunked_call(br, g, *parts, calls[k], 64, &chunks);
      const std::string what = std::string(c.name) + ", call " + std::to_string(k);
      EXPECT_EQ(p.steps, want_steps) << what;
      EXPECT_TRUE(std::vector<float>(p.logits.begin(), p.logits.end()) == want) << what;
      EXPECT_TRUE(std::vector<double>(p.exit_values.begin(), p.exit_values.end()) == want_exits) << what;
      EXPECT_EQ(parts->n_past(), whole->n_past()) << what;
      EXPECT_EQ(parts->history(), whole->history()) << what;
    }
    // 300 = 64 + 64 + 64 + 108, 129 = 64 + 65: 4 chunks after a call's first.
    EXPECT_EQ(chunks, g.splits_calls() ? 4u : 0u) << c.name;
  }
}

// A short request that arrives while a 640-token prompt prefills in chunks of 64 gets all its
// tokens before the long prompt's first one (the order the hand-driven engine observes, no
// clocks): each pass carries one chunk and the short call's current token. Without chunks the
// long prompt finishes first. Both get their solo answers either way.
TEST_P(DecodeBatch, ShortRequestFinishesWhileALongPromptPrefills) {
  const std::string dir = long_context_model("tiny-b");
  ThreadPool pool(2);
  std::unique_ptr<Backend> be = make_backend(GetParam(), pool);
  std::shared_ptr<const Model> model = Model::load(dir, *be);
  if (!Generator::batches_prompts(*be)) {
    // The strict backend's matmul is exact for 4 rows: prompts prefill alone (DecodeBatcher),
    // never in a shared pass, so there is nothing to interleave.
    EXPECT_EQ(GetParam(), "strict");
    return;
  }
  const int32_t V = static_cast<int32_t>(model->config().vocab_size);
  const std::vector<int32_t> long_ids = long_prompt(640, V, 3), short_ids = {17, 18, 19, 20, 21};
  GenerateOptions o;
  o.steps = 4;
  o.max_new_tokens = 4;
  o.default_stop_ids = false;
  Generator g(*model, *be, o);
  const Trace want_short = solo(g, short_ids);
  auto solo_long = g.new_context();
  const CallResult wl = g.prefill(*solo_long, long_ids);
  const std::vector<float> want_long(wl.logits.begin(), wl.logits.end());

  for (const int64_t chunk : {int64_t{64}, int64_t{0}}) {
    BatchRunner br(*model, *be);
    DepthBatch batch(br.pass(), chunk);
    auto lctx = g.new_context(), sctx = g.new_context();
    BatchedCall lcall{&g, lctx.get(), -1, {}, nullptr, long_ids};
    BatchedCall scall{&g, sctx.get(), -1, {}, nullptr, short_ids};
    std::vector<BatchedCall*> failed, join = {&lcall};
    batch.admit(join, failed);
    std::vector<std::string> order;  // "short" per short token, "long" for the long prompt's
    Trace got;
    int64_t widest = 0;
    bool long_done = false;
    for (int pass = 0; !long_done || got.tokens.size() < 4; ++pass) {
      ASSERT_LT(pass, 1000);
      if (pass == 1) {  // the short request arrives while the long prompt prefills
        join = {&scall};
        batch.admit(join, failed);
      }
      widest = std::max(widest, batch.rows());
      for (BatchedCall* c : batch.step()) {
        ASSERT_FALSE(c->error);
        if (c == &lcall) {
          order.push_back("long");
          long_done = true;
          EXPECT_TRUE(std::vector<float>(c->result.logits.begin(), c->result.logits.end()) == want_long);
          continue;
        }
        const int32_t tok = g.sample(*sctx, c->result.logits);
        order.push_back("short");
        got.tokens.push_back(tok);
        got.steps.push_back(c->result.steps);
        got.logits.emplace_back(c->result.logits.begin(), c->result.logits.end());
        if (got.tokens.size() < 4) {
          scall.id = tok;
          scall.ids = {};
          join = {&scall};
          batch.admit(join, failed);
        }
      }
    }
    ASSERT_TRUE(failed.empty());
    expect_same(got, want_short, "short request, chunk " + std::to_string(chunk));
    const std::vector<std::string> short_first = {"short", "short", "short", "short", "long"};
    if (chunk > 0) {
      EXPECT_EQ(order, short_first) << "the short request's tokens come before the long prompt's";
      EXPECT_LE(widest, 64 + 5) << "one chunk and the short call per pass";
      EXPECT_EQ(batch.chunks(), 9u);
    } else {
      EXPECT_EQ(order.front(), "long") << "without chunks the whole prompt's pass comes first";
      EXPECT_EQ(widest, 640 + 5);
    }
  }
}

// A long prompt stops between its chunks when the caller's go_on says no (the server's cancel
// or deadline): a 640-token prompt in chunks of 64 whose go_on turns false after the third chunk
// runs no chunk after it, as a sequential call and as the other decoders' prefill (their CallFn
// through a Member); the call throws huginn::Cancelled, its context holds the three chunks, and
// the batcher serves the next request as before. (The strict backend's prompts prefill whole,
// alone: there is nothing between chunks.)
TEST_P(DecodeBatcherTest, ALongPromptStopsBetweenChunks) {
  const std::string dir = long_context_model("tiny-b");
  ThreadPool pool(2);
  std::unique_ptr<Backend> be = make_backend(GetParam(), pool);
  std::shared_ptr<const Model> model = Model::load(dir, *be);
  GenerateOptions o;
  o.steps = 4;
  o.max_new_tokens = 4;
  o.default_stop_ids = false;
  Generator g(*model, *be, o);
  DecodeBatcher batcher(*model, *be, 2, std::chrono::microseconds(2000), 64);
  if (!Generator::batches_prompts(*be)) {
    EXPECT_EQ(GetParam(), "strict");
    return;
  }
  const std::vector<int32_t> prompt = long_prompt(640, static_cast<int32_t>(model->config().vocab_size), 5);
  for (const std::string decode : {"sequential", "wavefront", "speculative", "diffusion"}) {
    const uint64_t before = batcher.stats().chunks;
    int asked = 0;
    DecodeBatcher::Member member(batcher);
    const CallFn call = [&](GenerationContext& c, std::span<const int32_t> ids) {
      return member.call(g, c, ids, [&] { return ++asked < 3; });
    };
    const CoreFn core = [&](Tensor& s, const Tensor& e, const Rows& rows) { member.core(s, e, rows); };
    WavefrontOptions wo;
    SpeculativeOptions so;
    DiffusionOptions dso;
    wo.core = so.core = dso.core = core;
    wo.prefill = so.prefill = dso.prefill = call;
    auto ctx = g.new_context();
    if (decode == "sequential") {
      EXPECT_THROW(g.generate(*ctx, prompt, {}, nullptr, call), Cancelled);
    } else {
      EXPECT_THROW(generate_decoded(g, *ctx, prompt, decode, wo, so, dso), Cancelled) << decode;
    }
    EXPECT_EQ(asked, 3) << decode << ": asked after each chunk until it said no";
    EXPECT_EQ(batcher.stats().chunks - before, 2u) << decode << ": chunks 2 and 3 ran, none after";
    EXPECT_EQ(ctx->n_past(), 3 * 64) << decode;
  }
  const Trace want = solo(g, kPrompts[0]);
  DecodeBatcher::Member member(batcher);
  Trace got;
  auto ctx = g.new_context();
  g.generate(*ctx, kPrompts[0], record_into(got), nullptr,
             [&](GenerationContext& c, std::span<const int32_t> ids) { return member.call(g, c, ids); });
  expect_same(got, want, "a request after the stopped ones");
}

INSTANTIATE_TEST_SUITE_P(Backends, DecodeBatch, ::testing::Values("cpu", "strict"));
INSTANTIATE_TEST_SUITE_P(Backends, DecodeBatcherTest, ::testing::Values("cpu", "strict"));

}  // namespace
}  // namespace huginn
