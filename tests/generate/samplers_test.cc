// The reference's speculative and diffusion-forcing samplers (huginn/samplers.h):
// - speculative at threshold 1 is sequential greedy decoding at --steps, bit for bit (tokens,
//   steps, and the context it leaves behind continues with sequential's logits), whatever the
//   draft depth and lookahead, random initial states included;
// - speculative at any threshold equals an oracle built from sequential calls: drafts by
//   single-token calls at the draft depth on a copy of the verified cache, verification by
//   full-depth calls, acceptance by the reference's rule;
// - diffusion equals a plain single-sequence oracle of the reference's loop (window, cache
//   trimmed to the window start, states carried over, EMA of prelude outputs, noise mixing with
//   the dampened weight), and each freeze strategy follows its own law where they differ;
// - a batch of prompts gives each prompt what it gets alone; bad settings name their flag.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>

#include "../train/train_fixture.h"
#include "huginn/samplers.h"
#include "huginn/thread_pool.h"
#include "test_util.h"

namespace huginn {
namespace {

using test::golden_dir;

int32_t argmax(std::span<const float> v) {
  return static_cast<int32_t>(std::max_element(v.begin(), v.end()) - v.begin());
}

GenerateOptions base_options(int steps, int max_new) {
  GenerateOptions o;
  o.default_stop_ids = false;
  o.max_new_tokens = max_new;
  o.steps = steps;
  return o;
}

std::vector<GenerateResult> run_batch(const Generator& g, const std::vector<std::vector<int32_t>>& prompts,
                                      const SpeculativeOptions* spec, const DiffusionOptions* diff,
                                      SamplerStats* stats = nullptr,
                                      std::vector<std::unique_ptr<GenerationContext>>* keep = nullptr) {
  std::vector<std::unique_ptr<GenerationContext>> ctxs;
  std::vector<SamplerRequest> reqs;
  for (const auto& p : prompts) {
    ctxs.push_back(g.new_context());
    reqs.push_back({ctxs.back().get(), p, nullptr});
  }
  auto r = spec ? generate_speculative(g, reqs, *spec, stats) : generate_diffusion(g, reqs, *diff, stats);
  if (keep) *keep = std::move(ctxs);
  return r;
}

// The logits of one more sequential decode call on a context: equal bits mean equal caches.
std::vector<float> next_logits(const Generator& g, GenerationContext& ctx, int32_t id) {
  const CallResult r = g.decode(ctx, id);
  return {r.logits.begin(), r.logits.end()};
}

struct SpecCase {
  std::string name;
  GenerateOptions o;
  SpeculativeOptions s;
};

std::vector<SpecCase> threshold_one_cases() {
  std::vector<SpecCase> v;
  for (int draft : {1, 3, 7})
    for (int look : {1, 3, 8}) {
      SpecCase c{"draft " + std::to_string(draft) + ", lookahead " + std::to_string(look),
                 base_options(8, 13), {draft, look, 1.0}};
      v.push_back(c);
    }
  SpecCase r{"random s0, draft 2, lookahead 4", base_options(8, 13), {2, 4, 1.0}};
  r.o.init_scale = 1.0;
  r.o.init_seed = 11;
  v.push_back(r);
  SpecCase p{"repetition penalty, draft 2, lookahead 4", base_options(6, 13), {2, 4, 1.0}};
  p.o.sampling.repetition_penalty = 1.7f;
  v.push_back(p);
  return v;
}

class Speculative : public ::testing::TestWithParam<std::string> {};

TEST_P(Speculative, ThresholdOneIsSequentialGreedyBitForBit) {
  ThreadPool pool(2);
  auto be = make_backend(GetParam(), pool);
  for (const char* set : {"tiny-a", "tiny-b"}) {
    auto model = Model::load(golden_dir(set), *be);
    const std::vector<int32_t> prompt{3, 17, 5, 42, 9};
    for (const SpecCase& c : threshold_one_cases()) {
      const std::string what = std::string(set) + ", " + c.name;
      Generator g(*model, *be, c.o);
      auto seq_ctx = g.new_context();
      const GenerateResult seq = g.generate(*seq_ctx, prompt);
      std::vector<std::unique_ptr<GenerationContext>> ctxs;
      SamplerStats st;
      const auto got = run_batch(g, {prompt}, &c.s, nullptr, &st, &ctxs);
      ASSERT_EQ(got.size(), 1u);
      EXPECT_EQ(seq.tokens, got[0].tokens) << what;
      EXPECT_EQ(seq.steps, got[0].steps) << what;
      EXPECT_EQ(seq.finish_reason, got[0].finish_reason) << what;
      EXPECT_EQ(seq_ctx->n_past(), ctxs[0]->n_past()) << what;
      EXPECT_EQ(seq_ctx->history(), ctxs[0]->history()) << what;
      const std::vector<float> a = next_logits(g, *seq_ctx, seq.tokens.back());
      const std::vector<float> b = next_logits(g, *ctxs[0], got[0].tokens.back());
      EXPECT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * 4)) << what << ": the cache left behind differs";
      EXPECT_EQ(st.tokens, 13) << what;
      EXPECT_LE(st.accepted, st.drafted) << what;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Backends, Speculative, ::testing::Values("cpu", "strict"));

// The reference's rounds, replayed with sequential calls: drafts at the draft depth on a context
// holding a copy of the verified entries, verification by full-depth decode calls.
std::vector<int32_t> speculative_oracle(const Model& model, Backend& be, GenerateOptions o,
                                        std::span<const int32_t> prompt, const SpeculativeOptions& s,
                                        int64_t* accepted) {
  Generator full(model, be, o);
  GenerateOptions od = o;
  od.steps = s.draft_steps;
  Generator draft(model, be, od);
  auto ctx = full.new_context();
  CallResult r = full.prefill(*ctx, prompt);
  std::vector<int32_t> out{argmax(r.logits)};
  int32_t last = out.back();
  while (static_cast<int>(out.size()) < o.max_new_tokens) {
    const int L = std::min<int>(s.lookahead_for_draft, o.max_new_tokens - static_cast<int>(out.size()));
    std::vector<int32_t> hist = ctx->history();
    hist.push_back(last);
    auto dctx = draft.new_context();
    draft.reuse_prefix(*dctx, ctx->cache(), hist, ctx->n_past());
    std::vector<int32_t> drafts;
    int32_t x = last;
    for (int j = 0; j < L; ++j) {
      drafts.push_back(argmax(draft.decode(*dctx, x).logits));
      x = drafts.back();
    }
    x = last;
    int j = 0;
    for (; j < L; ++j) {
      const CallResult v = full.decode(*ctx, x);
      const int32_t d = drafts[static_cast<size_t>(j)];
      const float mx = *std::max_element(v.logits.begin(), v.logits.end());
      const bool pass = s.verification_threshold >= 1.0
                            ? argmax(v.logits) == d
                            : std::exp(double(v.logits[static_cast<size_t>(d)]) - mx) >= s.verification_threshold;
      if (!pass) {
        out.push_back(argmax(v.logits));
        break;
      }
      *accepted += 1;
      out.push_back(d);
      x = d;
    }
    last = out.back();
  }
  return out;
}

TEST(SpeculativeThreshold, EveryThresholdIsTheReferenceRule) {
  ThreadPool pool(2);
  auto be = make_backend("cpu", pool);
  int64_t differs = 0;
  for (const char* set : {"tiny-a", "tiny-b"}) {
    auto model = Model::load(golden_dir(set), *be);
    const std::vector<int32_t> prompt{3, 17, 5, 42, 9};
    for (double t : {0.0, 0.05, 0.5, 0.9, 1.0})
      for (int look : {1, 3}) {
        const GenerateOptions o = base_options(8, 12);
        const SpeculativeOptions s{1, look, t};
        int64_t want_acc = 0;
        const auto want = speculative_oracle(*model, *be, o, prompt, s, &want_acc);
        Generator g(*model, *be, o);
        SamplerStats st;
        const auto got = run_batch(g, {prompt}, &s, nullptr, &st);
        const std::string what = std::string(set) + ", threshold " + std::to_string(t) + ", lookahead " + std::to_string(look);
        EXPECT_EQ(want, got[0].tokens) << what;
        EXPECT_EQ(want_acc, st.accepted) << what;
        if (t == 0.0) {
          EXPECT_EQ(st.accepted, st.drafted) << what << ": threshold 0 accepts every draft";
        }
        auto seq_ctx = g.new_context();
        if (g.generate(*seq_ctx, prompt).tokens != got[0].tokens) ++differs;
      }
  }
  EXPECT_GT(differs, 0) << "no threshold below 1 ever changed the output: the rule was not exercised";
}

// ---- diffusion -------------------------------------------------------------------------------

// The reference's loop for one prompt on a plain single-sequence Runner, full prefill, greedy,
// initial states zero (so noise mixing only scales: s·(1 - w)), headway 1, no wavefront cap.
std::vector<int32_t> diffusion_oracle(const Model& model, Backend& be, int N, int max_new,
                                      std::span<const int32_t> prompt, const DiffusionOptions& d) {
  const ModelConfig& c = model.config();
  const int64_t E = c.n_embd, V = c.vocab_size;
  Runner runner(model, be);
  KVCache cache(c, be);
  ForwardOutput f = runner.forward(prompt, N, InitState{}, &cache, 0);
  const int32_t P = static_cast<int32_t>(prompt.size());
  std::vector<float> lg(static_cast<size_t>(P * V));
  be.download(f.logits, lg.data());
  std::vector<int32_t> seq(prompt.begin(), prompt.end());
  seq.push_back(argmax(std::span<const float>(lg).subspan(static_cast<size_t>((P - 1) * V), V)));
  int32_t F = P + 1, cidx = P;
  std::vector<int> counter(1024, 0), stable(1024, 0);
  for (int32_t p = 0; p < F; ++p) counter[p] = N;
  std::vector<float> s(static_cast<size_t>(E), 0.0f), prev = s, old_e;
  int32_t old_c = -1;
  for (int step = 0; F - P < max_new; ++step) {
    const int64_t S = static_cast<int64_t>(s.size()) / E;
    std::vector<int32_t> pos, ids;
    for (int64_t i = 0; i < S; ++i) {
      pos.push_back(cidx + static_cast<int32_t>(i));
      ids.push_back(seq[static_cast<size_t>(cidx + i)]);
    }
    Tensor e = runner.prelude(ids, pos, &cache).clone();
    std::vector<float> eh(static_cast<size_t>(S * E));
    be.download(e, eh.data());
    if (d.ema_embeds > 0) {
      const std::vector<float> old = old_c < 0 ? eh : old_e;
      const int64_t shift = old_c < 0 ? 0 : cidx - old_c;
      const float a = static_cast<float>(d.ema_embeds);
      for (int64_t i = 0; i < S; ++i)
        for (int64_t j = 0; j < E; ++j) {
          float x = eh[i * E + j] * (1.0f - a);
          if (i + shift < static_cast<int64_t>(old.size()) / E) x += old[(i + shift) * E + j] * a;
          eh[i * E + j] = x;
        }
      old_e = eh;
      old_c = cidx;
    }
    for (int64_t i = 0; i < S; ++i) {
      const double w = d.state_noise_mixing / (1.0 + counter[cidx + i]);
      for (int64_t j = 0; j < E; ++j) s[i * E + j] = s[i * E + j] * static_cast<float>(1.0 - w) + static_cast<float>(w) * 0.0f;
    }
    Tensor eh_t = Tensor::empty({S, E}), sh = Tensor::empty({S, E});
    std::copy(eh.begin(), eh.end(), eh_t.f32());
    std::copy(s.begin(), s.end(), sh.f32());
    Tensor ed = be.upload(eh_t), sd = be.upload(sh);
    for (int t = 0; t < d.inner_recurrence; ++t) runner.core_step(sd, ed, t, pos, &cache);
    for (int64_t i = 0; i < S; ++i) counter[cidx + i] += d.inner_recurrence;
    Tensor logits = be.alloc({S, V});
    runner.coda(sd, pos, &cache, logits, nullptr, false);
    be.download(sd, s.data());
    lg.resize(static_cast<size_t>(S * V));
    be.download(logits, lg.data());
    std::vector<int32_t> fresh;
    for (int64_t i = 0; i < S; ++i) fresh.push_back(argmax(std::span<const float>(lg).subspan(static_cast<size_t>(i * V), V)));
    for (size_t p = 0; p < seq.size(); ++p)
      if (seq[p] == (p < size_t(F) ? seq[p] : fresh[p - F])) ++stable[p];
    seq.resize(static_cast<size_t>(F));
    seq.insert(seq.end(), fresh.begin(), fresh.end());
    s.resize(s.size() + static_cast<size_t>(E), 0.0f);
    int32_t k = -1;
    if (d.freeze_strategy == DiffusionOptions::Freeze::kFixed) {
      if (step > N / d.inner_recurrence) k = F + 1;
    } else if (d.freeze_strategy == DiffusionOptions::Freeze::kTokenStability) {
      for (size_t p = 0; p < stable.size(); ++p)
        if (stable[p] > N / d.inner_recurrence) k = static_cast<int32_t>(p) + 1;
    } else {
      for (int64_t i = 0; i < static_cast<int64_t>(prev.size()) / E; ++i) {
        double dd = 0, m = 0;
        for (int64_t j = 0; j < E; ++j) {
          dd += double(s[i * E + j] - prev[i * E + j]) * double(s[i * E + j] - prev[i * E + j]);
          m += double(s[i * E + j]) * s[i * E + j];
        }
        if (std::sqrt(dd) / std::sqrt(m) < d.exit_t) k = cidx + static_cast<int32_t>(i) + 1;
      }
    }
    if (k > F) {
      s.erase(s.begin(), s.begin() + (k - 1 - cidx) * E);
      F = k;
      cidx = k - 1;
    }
    cache.drop_from(cidx);
    prev = s;
  }
  return {seq.begin() + P, seq.begin() + P + max_new};
}

DiffusionOptions plain(DiffusionOptions::Freeze f, int inner) {
  DiffusionOptions d;
  d.freeze_strategy = f;
  d.inner_recurrence = inner;
  d.max_wavefront = 0;
  d.ema_embeds = 0;
  d.state_noise_mixing = 0;
  return d;
}

TEST(Diffusion, EqualsThePlainLoopOfTheReference) {
  ThreadPool pool(2);
  auto be = make_backend("cpu", pool);
  using F = DiffusionOptions::Freeze;
  for (const char* set : {"tiny-a", "tiny-b"}) {
    auto model = Model::load(golden_dir(set), *be);
    const std::vector<int32_t> prompt{3, 17, 5, 42, 9};
    std::vector<std::pair<std::string, DiffusionOptions>> cases;
    cases.push_back({"fixed", plain(F::kFixed, 4)});
    cases.push_back({"token-stability", plain(F::kTokenStability, 2)});
    DiffusionOptions ld = plain(F::kLatentDiff, 2);
    ld.exit_t = 0.5;
    cases.push_back({"latent-diff 0.5", ld});
    DiffusionOptions ema = plain(F::kFixed, 2);
    ema.ema_embeds = 0.3;
    ema.state_noise_mixing = 0.5;
    cases.push_back({"fixed, ema 0.3, noise 0.5 dampened", ema});
    DiffusionOptions ld2 = ema;
    ld2.freeze_strategy = F::kLatentDiff;
    ld2.exit_t = 0.2;
    cases.push_back({"latent-diff 0.2, ema, noise", ld2});
    for (const auto& [name, d] : cases) {
      GenerateOptions o = base_options(8, 10);
      Generator g(*model, *be, o);
      const auto got = run_batch(g, {prompt}, nullptr, &d);
      const auto want = diffusion_oracle(*model, *be, 8, 10, prompt, d);
      EXPECT_EQ(want, got[0].tokens) << set << ", " << name;
      EXPECT_EQ(got[0].finish_reason, "length") << set << ", " << name;
    }
  }
}

// Each strategy's own law, on one case where all three differ (steps 8, inner 2: N / I = 4).
TEST(Diffusion, FreezeStrategiesFollowTheirRules) {
  ThreadPool pool(2);
  auto be = make_backend("cpu", pool);
  auto model = Model::load(golden_dir("tiny-b"), *be);
  const std::vector<int32_t> prompt{4, 8, 15, 16};
  const int N = 8, I = 2, T = N / I, n = 9;
  using F = DiffusionOptions::Freeze;
  Generator g(*model, *be, base_options(N, n));
  auto run = [&](DiffusionOptions d, SamplerStats* st) { return run_batch(g, {prompt}, nullptr, &d, st)[0]; };
  // fixed: nothing freezes in steps 0..T, then one token per step (headway 1); each token came
  // from a state with I·(T + 2) recurrences (the first: its position also carries the prefill's N).
  SamplerStats fs;
  const GenerateResult fixed = run(plain(F::kFixed, I), &fs);
  EXPECT_EQ(fs.rounds, T + 1 + (n - 1));
  ASSERT_EQ(fixed.steps.size(), size_t(n));
  EXPECT_EQ(fixed.steps[0], N);
  EXPECT_EQ(fixed.steps[1], N + I * (T + 2));
  for (int i = 2; i < n; ++i) EXPECT_EQ(fixed.steps[i], I * (T + 2)) << i;
  // fixed with headway 3: three tokens per step once freezing starts.
  DiffusionOptions h3 = plain(F::kFixed, I);
  h3.headway = 3;
  SamplerStats hs;
  run(h3, &hs);
  EXPECT_EQ(hs.rounds, T + 1 + (n - 1 + 2) / 3);
  // latent-diff with a threshold every state meets: step 0 freezes nothing new (only the last
  // frozen position's state had a predecessor), then one token per step from a state of 2·I.
  DiffusionOptions all = plain(F::kLatentDiff, I);
  all.exit_t = 1e30;
  SamplerStats ls;
  const GenerateResult lat = run(all, &ls);
  EXPECT_EQ(ls.rounds, n);
  EXPECT_EQ(lat.steps[1], N + 2 * I);
  for (int i = 2; i < n; ++i) EXPECT_EQ(lat.steps[i], 2 * I) << i;
  // latent-diff with threshold 0 never freezes: the step limit ends it with the first token.
  DiffusionOptions none = plain(F::kLatentDiff, I);
  none.exit_t = 0;
  none.max_diffusion_steps = 7;
  SamplerStats ns;
  const GenerateResult stuck = run(none, &ns);
  EXPECT_EQ(stuck.tokens.size(), 1u);
  EXPECT_EQ(stuck.finish_reason, "diffusion_steps");
  EXPECT_EQ(ns.rounds, 7);
  // token-stability: a new token freezes only once some position was unchanged more than T
  // times, so never before step T + 1: its predictor has had at least N + I·(T + 2).
  // Without the prefill the prompt is the first window: the first token freezes at step T + 1,
  // from the prompt's last state after I·(T + 2) recurrences, then one per step (steps
  // 0 .. T + n: one more than with the prefill, whose token comes free).
  DiffusionOptions cold = plain(F::kFixed, I);
  cold.full_prefill = false;
  SamplerStats cs;
  const GenerateResult c0 = run(cold, &cs);
  EXPECT_EQ(cs.rounds, T + n + 1);
  ASSERT_EQ(c0.tokens.size(), size_t(n));
  for (int i = 0; i < n; ++i) EXPECT_EQ(c0.steps[i], I * (T + 2)) << i;
  cold.max_wavefront = 3;  // refused: the prompt is the window
  cold.freeze_strategy = F::kLatentDiff;
  EXPECT_NE(test::error_message([&] { run(cold, nullptr); }).find("--max-wavefront"), std::string::npos);
  // A prompt that fills the context: the prefill's token alone, as sequential decoding.
  // (No diffusion step runs: its window would start at the context's end.)
  GenerateOptions full = base_options(N, n);
  full.context_length = static_cast<int64_t>(prompt.size());
  Generator small(*model, *be, full);
  const DiffusionOptions fixed4 = plain(F::kFixed, I);
  SamplerStats none_run;
  const auto one = run_batch(small, {prompt}, nullptr, &fixed4, &none_run);
  EXPECT_EQ(none_run.rounds, 0);
  EXPECT_EQ(one[0].tokens.size(), 1u);
  EXPECT_EQ(one[0].finish_reason, "length");
  const GenerateResult stab = run(plain(F::kTokenStability, I), nullptr);
  EXPECT_GE(stab.steps[1], N + I * (T + 2));
  EXPECT_NE(stab.steps, lat.steps);
  EXPECT_NE(fixed.steps, lat.steps);
}

TEST(Diffusion, MaxWavefrontCutsTheWindow) {
  ThreadPool pool(1);
  auto be = make_backend("cpu", pool);
  auto model = Model::load(golden_dir("tiny-a"), *be);
  Generator g(*model, *be, base_options(8, 8));
  DiffusionOptions d = plain(DiffusionOptions::Freeze::kLatentDiff, 2);
  d.exit_t = 1e30;
  d.headway = 4;
  SamplerStats open, capped;
  run_batch(g, {{1, 2, 3}}, nullptr, &d, &open);
  d.max_wavefront = 3;
  const auto r = run_batch(g, {{1, 2, 3}}, nullptr, &d, &capped);
  EXPECT_EQ(open.standing_waves, 0);
  EXPECT_GT(capped.standing_waves, 0);
  EXPECT_LE(capped.rows_per_core_pass(), 3.0);  // one sequence: rows per pass = its window
  EXPECT_GT(open.rows_per_core_pass(), 3.0);
  EXPECT_EQ(r[0].tokens.size(), 8u);
}

// ---- both: batches, flags --------------------------------------------------------------------

TEST(Samplers, BatchGivesEachPromptWhatItGetsAlone) {
  for (const char* backend : {"cpu", "strict"}) {
    ThreadPool pool(2);
    auto be = make_backend(backend, pool);
    auto model = Model::load(golden_dir("tiny-b"), *be);
    GenerateOptions o = base_options(6, 11);
    o.init_scale = 1.0;
    o.init_seed = 3;
    o.stop_ids = {22};  // one prompt stops early: the others go on
    Generator g(*model, *be, o);
    const std::vector<std::vector<int32_t>> prompts{{4, 8, 15, 16}, {7}, {1, 2, 3, 5, 8, 13, 21}};
    const SpeculativeOptions spec{2, 3, 0.7};
    DiffusionOptions diff;  // the reference's defaults: EMA, dampened noise, latent-diff
    diff.inner_recurrence = 2;
    for (int k = 0; k < 2; ++k) {
      const auto batch = k == 0 ? run_batch(g, prompts, &spec, nullptr) : run_batch(g, prompts, nullptr, &diff);
      ASSERT_EQ(batch.size(), prompts.size());
      for (size_t i = 0; i < prompts.size(); ++i) {
        const auto alone = k == 0 ? run_batch(g, {prompts[i]}, &spec, nullptr) : run_batch(g, {prompts[i]}, nullptr, &diff);
        const std::string what = std::string(backend) + (k == 0 ? " speculative" : " diffusion") + ", prompt " + std::to_string(i);
        EXPECT_EQ(alone[0].tokens, batch[i].tokens) << what;
        EXPECT_EQ(alone[0].steps, batch[i].steps) << what;
        EXPECT_EQ(alone[0].finish_reason, batch[i].finish_reason) << what;
        EXPECT_FALSE(batch[i].tokens.empty()) << what;
      }
    }
  }
}

// Each token is streamed as the sampler commits it, with what sequential decoding would stream
// (speculative at threshold 1: the same ids, steps and logits bit for bit), and a request can
// end mid-run: on_token returning false stops it after that token, go_on returning false stops
// it before the next round or step (a diffusion run that never freezes included), while the
// other requests of the batch go on.
TEST(Samplers, TokensStreamAsCommittedAndARequestCanStop) {
  ThreadPool pool(2);
  auto be = make_backend("cpu", pool);
  auto model = Model::load(golden_dir("tiny-b"), *be);
  const std::vector<int32_t> prompt{3, 17, 5, 42, 9};
  GenerateOptions o = base_options(8, 13);
  o.init_scale = 1.0;
  o.init_seed = 5;
  Generator g(*model, *be, o);
  struct Seen {
    std::vector<int32_t> ids;
    std::vector<int> steps;
    std::vector<std::vector<float>> logits;
  };
  auto record = [](Seen& seen, int stop_after) {
    return [&seen, stop_after](const TokenEvent& ev) {
      if (ev.id < 0) return true;
      seen.ids.push_back(ev.id);
      seen.steps.push_back(ev.steps);
      seen.logits.emplace_back(ev.logits.begin(), ev.logits.end());
      return static_cast<int>(seen.ids.size()) != stop_after;
    };
  };
  Seen seq, spec, stopped, other;
  auto seq_ctx = g.new_context();
  const GenerateResult want = g.generate(*seq_ctx, prompt, record(seq, -1));
  const SpeculativeOptions so{2, 4, 1.0};
  auto run = [&](std::vector<SamplerRequest>& reqs, const SpeculativeOptions* s, const DiffusionOptions* d,
                 SamplerStats* st) {
    return s ? generate_speculative(g, reqs, *s, st) : generate_diffusion(g, reqs, *d, st);
  };
  std::vector<std::unique_ptr<GenerationContext>> ctxs;
  for (int i = 0; i < 2; ++i) ctxs.push_back(g.new_context());
  {
    std::vector<SamplerRequest> reqs(2);
    reqs[0] = {ctxs[0].get(), prompt, nullptr, record(spec, -1), {}};
    reqs[1] = {ctxs[1].get(), prompt, nullptr, record(stopped, 5), {}};
    SamplerStats st;
    const auto got = run(reqs, &so, nullptr, &st);
    EXPECT_EQ(spec.ids, want.tokens);
    EXPECT_EQ(spec.steps, want.steps);
    ASSERT_EQ(spec.logits.size(), seq.logits.size());
    for (size_t i = 0; i < seq.logits.size(); ++i)
      EXPECT_EQ(spec.logits[i], seq.logits[i]) << "token " << i << ": the verified row's logits";
    EXPECT_EQ(got[0].tokens, want.tokens);
    EXPECT_EQ(got[1].tokens, std::vector<int32_t>(want.tokens.begin(), want.tokens.begin() + 5));
    EXPECT_EQ(stopped.ids, got[1].tokens) << "no token streamed after the callback said stop";
    EXPECT_EQ(got[1].finish_reason, "callback");
    EXPECT_EQ(got[0].finish_reason, "length");
  }
  // Diffusion: fixed freeze streams its frozen tokens in order; a latent-diff run with exit_t 0
  // never freezes (up to max_diffusion_steps), and go_on ends it after its third step (asked
  // before the prefill, before each step and between its 4 inner recurrences: 1 + 3 · 4 times).
  DiffusionOptions fixed;
  fixed.inner_recurrence = 2;
  fixed.freeze_strategy = DiffusionOptions::Freeze::kFixed;
  fixed.max_wavefront = 0;
  DiffusionOptions never;
  never.exit_t = 0.0;
  never.max_diffusion_steps = 1 << 20;
  Seen diff, diff_stopped;
  int asked = 0;
  for (auto& c : ctxs) c->reset();
  std::vector<SamplerRequest> reqs(1);
  reqs[0] = {ctxs[0].get(), prompt, nullptr, record(diff, -1), {}};
  const auto fixed_out = run(reqs, nullptr, &fixed, nullptr);
  EXPECT_EQ(diff.ids, fixed_out[0].tokens);
  EXPECT_EQ(diff.steps, fixed_out[0].steps);
  EXPECT_EQ(diff.ids.size(), 13u);
  EXPECT_EQ(diff.logits[0], seq.logits[0]) << "the prefill's token comes with its logits";
  ctxs[0]->reset();
  reqs[0] = {ctxs[0].get(), prompt, nullptr, record(diff_stopped, -1), [&] { return ++asked <= 13; }};
  SamplerStats st;
  const auto cut = run(reqs, nullptr, &never, &st);
  EXPECT_EQ(cut[0].finish_reason, "callback");
  EXPECT_EQ(st.rounds, 3) << "asked before the prefill, before each step and between its recurrences";
  EXPECT_EQ(st.core_passes, 3 * 4);
  EXPECT_EQ(diff_stopped.ids, std::vector<int32_t>{want.tokens[0]}) << "only the prefill's token froze";
}

// One diffusion step is interruptible: go_on is asked before every core recurrence of a step, so
// a request stops within one core pass of its cancel — here 10 recurrences into a 40-recurrence
// step: no pass after it carries its rows, and alone no pass runs after it at all — while
// another request of the same batch runs on to the tokens it gets alone (its rows move up in the
// pass). The stopped request keeps the tokens frozen before and none of the cut step's KV entries.
TEST(Diffusion, ARequestStopsWithinOneCorePassOfItsCancel) {
  for (const char* backend : {"cpu", "strict"}) {
    ThreadPool pool(2);
    auto be = make_backend(backend, pool);
    auto model = Model::load(golden_dir("tiny-b"), *be);
    GenerateOptions o = base_options(8, 6);
    o.init_scale = 1.0;
    o.init_seed = 7;
    Generator g(*model, *be, o);
    DiffusionOptions d;
    d.inner_recurrence = 40;
    d.freeze_strategy = DiffusionOptions::Freeze::kFixed;
    d.max_wavefront = 0;
    const std::vector<int32_t> a{3, 17, 5}, b{9, 2, 44, 8};
    const auto alone = run_batch(g, {b}, nullptr, &d);
    // The passes through a core hook (a pass of our own), counted, with the sequences they carry.
    ModelPass mine(*model, *be);
    mine.set_row_exact(true);
    int passes = 0;
    bool cancelled = false;
    std::vector<int64_t> after;  // sequences carried by each pass after the cancel
    DiffusionOptions hooked = d;
    hooked.core = [&](Tensor& s, const Tensor& e, const Rows& rows) {
      ++passes;
      if (cancelled) after.push_back(rows.sequences());
      mine.core_step(s, e, 0, rows);
    };
    auto cancel_at_50 = [&] {
      cancelled = cancelled || passes >= 50;  // step 2 (passes 41-80), 10 recurrences in
      return !cancelled;
    };
    for (int both = 0; both < 2; ++both) {
      passes = 0;
      cancelled = false;
      after.clear();
      std::vector<std::unique_ptr<GenerationContext>> ctxs;
      std::vector<SamplerRequest> reqs;
      ctxs.push_back(g.new_context());
      reqs.push_back({ctxs[0].get(), a, nullptr, {}, cancel_at_50});
      if (both) {
        ctxs.push_back(g.new_context());
        reqs.push_back({ctxs[1].get(), b, nullptr, {}, {}});
      }
      const auto got = generate_diffusion(g, reqs, hooked);
      const std::string what = std::string(backend) + (both ? ", beside another request" : ", alone");
      EXPECT_TRUE(cancelled) << what;
      EXPECT_EQ(got[0].finish_reason, "callback") << what;
      EXPECT_EQ(got[0].tokens.size(), 1u) << what << ": only the prefill's token (fixed freezes from step 2 on)";
      EXPECT_EQ(ctxs[0]->cache().n_tokens(), static_cast<int32_t>(a.size())) << what << ": the cut step's entries dropped";
      if (!both) {
        EXPECT_EQ(passes, 50) << what << ": no core pass after the cancel";
        continue;
      }
      ASSERT_FALSE(after.empty()) << what;
      EXPECT_EQ(*std::max_element(after.begin(), after.end()), 1) << what << ": the stopped request's rows left at once";
      EXPECT_EQ(got[1].tokens, alone[0].tokens) << what;
      EXPECT_EQ(got[1].steps, alone[0].steps) << what;
      EXPECT_EQ(got[1].finish_reason, alone[0].finish_reason) << what;
    }
  }
}

TEST(Samplers, BadSettingsNameTheFlag) {
  const GenerateOptions o = base_options(8, 4);
  auto spec_err = [&](SpeculativeOptions s, GenerateOptions g) {
    return test::error_message([&] { s.validate(g); });
  };
  EXPECT_NE(spec_err({-1, 8, 1.0}, o).find("--draft-steps"), std::string::npos);
  EXPECT_NE(spec_err({0, 0, 1.0}, o).find("--lookahead-for-draft"), std::string::npos);
  EXPECT_NE(spec_err({0, 8, 1.5}, o).find("--verification-threshold"), std::string::npos);
  EXPECT_NE(spec_err({0, 8, -0.1}, o).find("--verification-threshold"), std::string::npos);
  EXPECT_NE(spec_err({0, 8, std::nan("")}, o).find("--verification-threshold"), std::string::npos);
  GenerateOptions ex = o;
  ex.exit = ExitSpec::parse("kl:1e-3");
  EXPECT_NE(spec_err({}, ex).find("--exit"), std::string::npos);
  GenerateOptions shared = o;
  shared.cache_strategy = KVCache::Strategy::kCompressS;
  shared.cache_slots = 2;
  EXPECT_NE(spec_err({}, shared).find("--cache-slots"), std::string::npos);
  EXPECT_EQ(spec_err({1, 1, 0.0}, o), "(no error)");
  auto diff_err = [&](auto change) {
    DiffusionOptions d;
    change(d);
    return test::error_message([&] { d.validate(o, 8); });
  };
  EXPECT_NE(diff_err([](auto& d) { d.inner_recurrence = 0; }).find("--inner-recurrence"), std::string::npos);
  EXPECT_NE(diff_err([](auto& d) { d.headway = 0; }).find("--headway"), std::string::npos);
  EXPECT_NE(diff_err([](auto& d) { d.max_wavefront = -1; }).find("--max-wavefront"), std::string::npos);
  EXPECT_NE(diff_err([](auto& d) { d.max_diffusion_steps = 0; }).find("--max-diffusion-steps"), std::string::npos);
  EXPECT_NE(diff_err([](auto& d) { d.exit_t = -1; }).find("--exit-t"), std::string::npos);
  EXPECT_NE(diff_err([](auto& d) { d.ema_embeds = 1.0; }).find("--ema-embeds"), std::string::npos);
  EXPECT_NE(diff_err([](auto& d) { d.state_noise_mixing = 1.5; }).find("--state-noise-mixing"), std::string::npos);
  // fixed settles at 1 + h·(N/I + 1) positions: a smaller cap would never advance.
  EXPECT_NE(diff_err([](auto& d) {
              d.freeze_strategy = DiffusionOptions::Freeze::kFixed;
              d.max_wavefront = 4;
            }).find("--max-wavefront"), std::string::npos);
  EXPECT_EQ(diff_err([](auto& d) {
              d.freeze_strategy = DiffusionOptions::Freeze::kFixed;
              d.max_wavefront = 5;
            }), "(no error)");
  EXPECT_NE(test::error_message([] { DiffusionOptions::parse_freeze("latent-acceleration-1"); }).find("--freeze-strategy"),
            std::string::npos);
}

// Through the binary: speculative prints sequential's tokens; several prompts as one batch;
// bad values name their flag.
TEST(SamplersCli, JsonBatchesAndFlagErrors) {
  const std::string base = std::string(HUGINN_CLI) + " generate --model " + golden_dir("tiny-b") +
                           " --steps 8 --max-new 9 --greedy --json";
  const auto json = [](const std::string& out) { return nlohmann::json::parse(out.substr(out.find('{'))); };
  std::string seq, spec, batch, diff, err;
  ASSERT_EQ(test::run_command(base + " --ids 4,8,15,16", &seq), 0) << seq;
  ASSERT_EQ(test::run_command(base + " --ids 4,8,15,16 --decode speculative --draft-steps 2 --lookahead-for-draft 3", &spec), 0) << spec;
  EXPECT_EQ(json(seq)["tokens"], json(spec)["tokens"]);
  EXPECT_GT(json(spec)["speculative"]["drafted"].get<int>(), 0);
  ASSERT_EQ(test::run_command(base + " --ids '4,8,15,16;7,7' --decode speculative --draft-steps 2", &batch), 0) << batch;
  ASSERT_EQ(json(batch)["results"].size(), 2u);
  EXPECT_EQ(json(batch)["results"][0]["tokens"], json(seq)["tokens"]);
  ASSERT_EQ(test::run_command(base + " --ids 4,8,15,16 --decode diffusion --freeze-strategy fixed --inner-recurrence 4 --max-wavefront 0", &diff), 0) << diff;
  EXPECT_EQ(json(diff)["tokens"].size(), 9u);
  EXPECT_GT(json(diff)["diffusion"]["rows_per_core_pass"].get<double>(), 1.0);
  for (const std::string bad : {"--decode speculative --verification-threshold 2", "--decode speculative --lookahead-for-draft 0",
                                "--decode diffusion --headway 0", "--decode diffusion --freeze-strategy sometimes",
                                "--decode diffusion --inner-recurrence 0"}) {
    EXPECT_EQ(test::run_command(base + " --ids 1,2 " + bad, &err), 1) << bad;
    const std::string flag = bad.substr(bad.rfind("--"), bad.rfind(' ') - bad.rfind("--"));
    EXPECT_NE(err.find(flag), std::string::npos) << bad << ": " << err;
  }
  EXPECT_NE(test::run_command(base + " --ids '1,2;3'", &err), 0);
  EXPECT_NE(err.find("--ids"), std::string::npos) << err;
}

}  // namespace
}  // namespace huginn
