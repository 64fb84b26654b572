// Wavefront decoding (huginn/wavefront.h) is lossless: the tokens, per-token recurrence counts,
// logits and exit values of every token, and the KV cache left behind, are bit-identical to
// sequential decoding (Generator::generate) at the same settings — fixed depth and every exit
// criterion, full and shared caches, random initial states — on the golden models and on a
// small model trained here; and rows of several positions really do share core passes.
#include <gtest/gtest.h>

#include <cstring>

#include "../train/train_fixture.h"
#include "huginn/thread_pool.h"
#include "huginn/wavefront.h"
#include "test_util.h"

namespace huginn {
namespace {

using test::golden_dir;

struct Outcome {
  GenerateResult result;
  std::vector<std::vector<float>> logits;
  std::vector<std::vector<double>> exit_values;
  std::vector<std::vector<int32_t>> cache_positions;  // per step index, after generation
  int32_t n_past = 0;
  WavefrontStats stats;
};

Outcome run(const Model& model, Backend& be, const GenerateOptions& o,
        std::span<const int32_t> prompt, const WavefrontOptions* wf) {
  Generator g(model, be, o);
  auto ctx = g.new_context();
  Outcome r;
  auto on_token = [&](const TokenEvent& ev) {
    if (ev.id < 0) return true;
    r.logits.emplace_back(ev.logits.begin(), ev.logits.end());
    r.exit_values.emplace_back(ev.exit_values.begin(), ev.exit_values.end());
    return true;
  };
  r.result = wf ? generate_wavefront(g, *ctx, prompt, *wf, on_token, nullptr, &r.stats)
                : g.generate(*ctx, prompt, on_token);
  const ModelConfig& c = model.config();
  for (int i = -c.n_coda; i < c.n_prelude + g.steps() * c.n_core; ++i)
    r.cache_positions.push_back(ctx->cache().positions(i));
  r.n_past = ctx->n_past();
  return r;
}

void expect_same(const Outcome& seq, const Outcome& wf, const std::string& what) {
  EXPECT_EQ(seq.result.tokens, wf.result.tokens) << what;
  EXPECT_EQ(seq.result.steps, wf.result.steps) << what;
  EXPECT_EQ(seq.result.finish_reason, wf.result.finish_reason) << what;
  ASSERT_EQ(seq.logits.size(), wf.logits.size()) << what;
  for (size_t t = 0; t < seq.logits.size(); ++t) {
    ASSERT_EQ(seq.logits[t].size(), wf.logits[t].size()) << what;
    EXPECT_EQ(0, std::memcmp(seq.logits[t].data(), wf.logits[t].data(), seq.logits[t].size() * 4))
        << what << ": logits of token " << t << " differ";
    ASSERT_EQ(seq.exit_values[t].size(), wf.exit_values[t].size()) << what << ", token " << t;
    if (!seq.exit_values[t].empty()) {  // memcmp: NaN included (a null pointer is UB for 0 bytes)
      EXPECT_EQ(0, std::memcmp(seq.exit_values[t].data(), wf.exit_values[t].data(),
                               seq.exit_values[t].size() * sizeof(double)))
          << what << ": exit values of token " << t;
    }
  }
  EXPECT_EQ(seq.cache_positions, wf.cache_positions) << what << ": KV cache left behind";
  EXPECT_EQ(seq.n_past, wf.n_past) << what;
}

struct Setting {
  std::string name;
  GenerateOptions o;
  WavefrontOptions wf;
};

std::vector<Setting> settings() {
  std::vector<Setting> v;
  auto base = [] {
    GenerateOptions o;
    o.default_stop_ids = false;
    o.max_new_tokens = 14;
    return o;
  };
  Setting s{"fixed r=8, draft at 2", base(), {}};
  s.o.steps = 8;
  s.wf.draft_depth = 2;
  v.push_back(s);
  s = {"fixed r=6, draft at 1, 3 lanes, random s0", base(), {}};
  s.o.steps = 6;
  s.o.init_scale = 1.0;
  s.o.init_seed = 9;
  s.wf.draft_depth = 1;
  s.wf.max_lanes = 3;
  v.push_back(s);
  s = {"fixed r=8, compress-s 3", base(), {}};
  s.o.steps = 8;
  s.o.cache_strategy = KVCache::Strategy::kCompressS;
  s.o.cache_slots = 3;
  s.wf.draft_depth = 2;
  v.push_back(s);
  s = {"fixed r=7, compress-r 2", base(), {}};
  s.o.steps = 7;
  s.o.cache_strategy = KVCache::Strategy::kCompressR;
  s.o.cache_slots = 2;
  s.wf.draft_depth = 3;
  v.push_back(s);
  s = {"fixed r=9, compress-s-prelude 4", base(), {}};
  s.o.steps = 9;
  s.o.cache_strategy = KVCache::Strategy::kCompressSPrelude;
  s.o.cache_slots = 4;
  s.wf.draft_depth = 2;
  v.push_back(s);
  s = {"kl exit, r<=16", base(), {}};
  s.o.steps = 16;
  s.o.exit = ExitSpec::parse("kl:5e-3");
  v.push_back(s);
  s = {"kl exit, min-steps 5, check every 2", base(), {}};
  s.o.steps = 16;
  s.o.exit = ExitSpec::parse("kl:1e-2");
  s.o.min_steps = 5;
  s.o.check_every = 2;
  v.push_back(s);
  s = {"latent-diff exit, compress-s 2, random s0", base(), {}};
  s.o.steps = 12;
  s.o.exit = ExitSpec::parse("latent-diff:0.3");
  s.o.cache_strategy = KVCache::Strategy::kCompressS;
  s.o.cache_slots = 2;
  s.o.init_scale = 1.0;
  s.o.init_seed = 3;
  s.wf.draft_depth = 2;
  v.push_back(s);
  s = {"cosine exit, full cache", base(), {}};
  s.o.steps = 12;
  s.o.exit = ExitSpec::parse("cosine:1e-2");
  s.wf.draft_depth = 2;
  v.push_back(s);
  s = {"argmax-stability, sparse checks", base(), {}};
  s.o.steps = 10;
  s.o.exit = ExitSpec::parse("argmax-stability:2");
  s.o.min_steps = 2;
  s.o.check_every = 2;
  v.push_back(s);
  s = {"fixed r=8, repetition penalty (drafts ignore it)", base(), {}};
  s.o.steps = 8;
  s.o.sampling.repetition_penalty = 1.5f;
  s.wf.draft_depth = 2;
  v.push_back(s);
  return v;
}

class Wavefront : public ::testing::TestWithParam<std::string> {};

TEST_P(Wavefront, GoldenModelsIdenticalToSequential) {
  ThreadPool pool(2);
  auto be = make_backend(GetParam(), pool);
  for (const char* set : {"tiny-a", "tiny-b"}) {
    auto model = Model::load(golden_dir(set), *be);
    const std::vector<int32_t> prompt{3, 17, 5, 42, 9};
    for (const Setting& s : settings()) {
      const std::string what = std::string(set) + ", " + s.name;
      const Outcome seq = run(*model, *be, s.o, prompt, nullptr);
      const Outcome wf = run(*model, *be, s.o, prompt, &s.wf);
      expect_same(seq, wf, what);
      EXPECT_EQ(wf.stats.tokens, static_cast<int64_t>(seq.result.decode_calls)) << what;
      EXPECT_EQ(wf.stats.accepted + wf.stats.rejected <= wf.stats.drafts, true) << what;
      if (s.o.exit.criterion == ExitCriterion::kNone && s.o.cache_strategy == KVCache::Strategy::kFull) {
        EXPECT_GT(wf.stats.rows_per_core_pass(), 1.2) << what << ": positions never shared a pass";
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Backends, Wavefront, ::testing::Values("cpu", "strict"));

// A model that has learnt something drafts well: most drafts are accepted, and the output is
// still sequential decoding's, bit for bit.
TEST(WavefrontTrained, IdenticalAndDraftsAccepted) {
  train_test::Fixture f("wavefront");
  TrainOptions to = f.options("run");
  to.steps = 150;
  const TrainResult tr = train(to);
  ThreadPool pool(2);
  auto be = make_backend("cpu", pool);
  auto model = Model::load(tr.last_checkpoint, *be);
  const std::vector<int32_t> prompt{5, 11};
  for (const char* exit : {"none", "kl:1e-2"}) {
    GenerateOptions o;
    o.default_stop_ids = false;
    o.max_new_tokens = 24;
    o.steps = 8;
    o.exit = ExitSpec::parse(exit);
    WavefrontOptions wf;
    wf.draft_depth = 2;
    const Outcome seq = run(*model, *be, o, prompt, nullptr);
    const Outcome got = run(*model, *be, o, prompt, &wf);
    expect_same(seq, got, std::string("trained, exit ") + exit);
    std::printf("trained %s: tokens %zu steps0 %d, %lld core passes, %.2f rows/pass, drafts %lld, acc %lld, rej %lld\n", exit, seq.result.tokens.size(), seq.result.steps[0], (long long)got.stats.core_passes, got.stats.rows_per_core_pass(), (long long)got.stats.drafts, (long long)got.stats.accepted, (long long)got.stats.rejected);
    EXPECT_GT(got.stats.accepted, got.stats.rejected) << exit;
  }
}

TEST(WavefrontOptions, BadSettingsNameTheFlag) {
  ThreadPool pool(1);
  auto be = make_backend("cpu", pool);
  auto model = Model::load(golden_dir("tiny-a"), *be);
  auto error = [&](GenerateOptions o, WavefrontOptions wf) {
    o.steps = o.steps ? o.steps : 8;
    return test::error_message([&] {
      Generator g(*model, *be, o);
      WavefrontDecoder d(g, wf);
    });
  };
  GenerateOptions sampled;
  sampled.sampling.greedy = false;
  sampled.sampling.temperature = 0.7f;
  EXPECT_NE(error(sampled, {}).find("--temperature"), std::string::npos);
  GenerateOptions warm;
  warm.warm_start = WarmStart::kAuto;
  EXPECT_NE(error(warm, {}).find("--warm-start"), std::string::npos);
  EXPECT_NE(error({}, {8, 8}).find("--draft-depth"), std::string::npos);
  EXPECT_NE(error({}, {-1, 8}).find("--draft-depth"), std::string::npos);
  EXPECT_NE(error({}, {2, 1}).find("--lanes"), std::string::npos);
  EXPECT_EQ(error({}, {7, 2}), "(no error)");  // the bounds themselves are fine
}

// Through the binary: --decode wavefront prints what sequential decoding prints (--json: tokens,
// steps), with the CLI's default random initial state per call; bad flags are named.
TEST(WavefrontCli, SameJsonAndFlagErrors) {
  const std::string base = std::string(HUGINN_CLI) + " generate --model " + golden_dir("tiny-b") +
                           " --ids 4,8,15,16 --steps 8 --max-new 10 --greedy --json";
  std::string seq, wf, err;
  ASSERT_EQ(test::run_command(base, &seq), 0) << seq;
  ASSERT_EQ(test::run_command(base + " --decode wavefront --draft-depth 2", &wf), 0) << wf;
  const auto json = [](const std::string& out) {
    return nlohmann::json::parse(out.substr(out.find('{')));
  };
  EXPECT_EQ(json(seq)["tokens"], json(wf)["tokens"]);
  EXPECT_EQ(json(seq)["steps"], json(wf)["steps"]);
  EXPECT_GT(json(wf)["wavefront"]["rows_per_core_pass"].get<double>(), 1.0);
  EXPECT_EQ(test::run_command(base + " --decode wavefront --temperature 0.7", &err), 1);
  EXPECT_NE(err.find("--temperature"), std::string::npos) << err;
  EXPECT_EQ(test::run_command(base + " --decode wavefront --draft-depth 9", &err), 1);
  EXPECT_NE(err.find("--draft-depth"), std::string::npos) << err;
  EXPECT_NE(test::run_command(base + " --decode diagonal", &err), 0);
  EXPECT_NE(err.find("--decode"), std::string::npos) << err;
}

}  // namespace
}  // namespace huginn
