// The generation API beyond the golden cases: cached decoding equals an uncached forward pass,
// cache sharing bounds memory, every exit criterion behaves as documented, contexts are
// independent, stop ids / strings, bad input, and the CLI end to end.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "huginn/generate.h"
#include "huginn/thread_pool.h"
#include "test_util.h"

namespace huginn {
namespace {

using test::golden_dir;

struct Fixture {
  explicit Fixture(const std::string& set = "tiny-a")
      : pool(1), be(make_backend("cpu", pool)), model(Model::load(golden_dir(set), *be)) {}
  ThreadPool pool;
  std::unique_ptr<Backend> be;
  std::shared_ptr<const Model> model;
};

const std::vector<int32_t> kPrompt = {3, 141, 59, 26, 53};

double rel(std::span<const float> got, const float* want) {
  double num = 0, den = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    num = std::max(num, double(std::fabs(got[i] - want[i])));
    den = std::max(den, double(std::fabs(want[i])));
  }
  return num / den;
}

TEST(Generate, CachedDecodeEqualsUncachedForward) {
  for (const char* set : {"tiny-a", "tiny-b"}) {
    Fixture f(set);
    GenerateOptions o;
    o.steps = 6;
    o.max_new_tokens = 10;
    Generator gen(*f.model, *f.be, o);
    auto ctx = gen.new_context();
    std::vector<std::vector<float>> rows;
    GenerateResult r = gen.generate(*ctx, kPrompt, [&](const TokenEvent& ev) {
      rows.emplace_back(ev.logits.begin(), ev.logits.end());
      return true;
    });
    ASSERT_EQ(r.tokens.size(), 10u);
    std::vector<int32_t> seq = kPrompt;
    seq.insert(seq.end(), r.tokens.begin(), r.tokens.end() - 1);
    Runner runner(*f.model, *f.be);
    ForwardOutput out = runner.forward(seq, 6, InitState{});
    const int64_t V = f.model->config().vocab_size;
    Tensor logits = Tensor::empty({static_cast<int64_t>(seq.size()), V});
    f.be->download(out.logits, logits.f32());
    for (size_t i = 0; i < rows.size(); ++i)
      EXPECT_LE(rel(rows[i], logits.row(static_cast<int64_t>(kPrompt.size() - 1 + i))), 1e-4)
          << set << " token " << i;
  }
}

// tiny-a with room for long prompts (block_size sets only the RoPE table's length).
std::string long_context_tiny_a() {
  const std::string dir = test::make_temp_dir("prefix");
  std::ifstream in(golden_dir("tiny-a") + "/config.json");
  nlohmann::json c = nlohmann::json::parse(in);
  c["block_size"] = 512;
  std::ofstream(dir + "/config.json") << c.dump();
  std::filesystem::copy_file(golden_dir("tiny-a") + "/model.safetensors", dir + "/model.safetensors");
  return dir;
}

// Prefix reuse: a prompt run after another prompt's cached entries for their shared first
// tokens gives the bits of a run over the whole prompt (random s_0 included: the rest of the
// draw), and reports the reused tokens; the split follows the attention kernel's blocks; options
// whose prompt pass has no fixed depth or shares cache slots have no key.
TEST(Generate, PromptAfterAReusedPrefixEqualsTheWholePrompt) {
  ThreadPool pool(2);
  auto be = make_backend("cpu", pool);
  auto model = Model::load(long_context_tiny_a(), *be);
  GenerateOptions o;
  o.steps = 4;
  o.init_scale = 1.0;
  o.init_seed = 5;
  o.sampling.greedy = false;
  o.sampling.temperature = 0.8f;
  o.sampling.repetition_penalty = 1.3f;
  o.sampling.seed = 9;
  o.max_new_tokens = 6;
  o.default_stop_ids = false;
  Generator gen(*model, *be, o);
  ASSERT_FALSE(gen.prefix_key().empty());
  const int32_t g = static_cast<int32_t>(be->attention_split_rows());
  ASSERT_GT(g, 0);
  std::vector<int32_t> first, second;
  for (int i = 0; i < 5 * g; ++i) first.push_back((i * 37 + 11) % static_cast<int32_t>(model->config().vocab_size));
  second.assign(first.begin(), first.begin() + 3 * g + 5);
  for (int i = 0; i < g / 2; ++i) second.push_back((i * 53 + 2) % 200);
  const int32_t L = static_cast<int32_t>(second.size());
  EXPECT_EQ(gen.prefix_split(3 * g + 5, L), 2 * g) << "at least g rows must be left to run";
  EXPECT_EQ(gen.prefix_split(g - 1, L), 0);
  std::vector<std::vector<float>> want_logits;
  auto solo = gen.new_context();
  const GenerateResult want = gen.generate(*solo, second, [&](const TokenEvent& ev) {
    want_logits.emplace_back(ev.logits.begin(), ev.logits.end());
    return true;
  });
  EXPECT_EQ(want.cached_tokens, 0);
  auto earlier = gen.new_context();
  gen.generate(*earlier, first);
  for (int32_t n : {g, 2 * g}) {
    auto ctx = gen.new_context();
    gen.reuse_prefix(*ctx, earlier->cache(), second, n);
    std::vector<std::vector<float>> logits;
    const GenerateResult got = gen.generate(*ctx, second, [&](const TokenEvent& ev) {
      logits.emplace_back(ev.logits.begin(), ev.logits.end());
      return true;
    });
    EXPECT_EQ(got.cached_tokens, n);
    EXPECT_EQ(got.prompt_tokens, L);
    EXPECT_EQ(got.tokens, want.tokens) << "prefix of " << n;
    EXPECT_EQ(got.steps, want.steps);
    EXPECT_TRUE(logits == want_logits) << "prefix of " << n;
  }
  // A reused prefix that is not the prompt's is dropped: the whole prompt runs.
  auto other = gen.new_context();
  std::vector<int32_t> third = second;
  third[5] = (third[5] + 1) % 200;
  gen.reuse_prefix(*other, earlier->cache(), third, g);
  const GenerateResult whole = gen.generate(*other, second);
  EXPECT_EQ(whole.cached_tokens, 0);
  EXPECT_EQ(whole.tokens, want.tokens);

  GenerateOptions kl = o;
  kl.exit = ExitSpec::parse("kl:1e-3");
  EXPECT_TRUE(Generator(*model, *be, kl).prefix_key().empty());
  GenerateOptions shared = o;
  shared.cache_strategy = KVCache::Strategy::kCompressS;
  shared.cache_slots = 2;
  EXPECT_TRUE(Generator(*model, *be, shared).prefix_key().empty());
  GenerateOptions deeper = o;
  deeper.steps = 5;
  EXPECT_NE(Generator(*model, *be, deeper).prefix_key(), gen.prefix_key());
  auto strict = make_backend("strict", pool);
  EXPECT_TRUE(Generator(*model, *strict, o).prefix_key().empty()) << "strict claims no exact split";
}

TEST(Generate, SharedCacheAtR32IsAtMostASixthOfFull) {
  for (const char* set : {"tiny-a", "tiny-b"}) {
    Fixture f(set);
    size_t bytes[2];
    for (int shared = 0; shared < 2; ++shared) {
      GenerateOptions o;
      o.steps = 32;
      o.max_new_tokens = 12;
      if (shared) {
        o.cache_strategy = KVCache::Strategy::kCompressS;
        o.cache_slots = 4;
      }
      Generator gen(*f.model, *f.be, o);
      auto ctx = gen.new_context();
      GenerateResult r = gen.generate(*ctx, kPrompt);
      EXPECT_EQ(r.cache_bytes, ctx->cache().bytes());
      bytes[shared] = r.cache_bytes;
    }
    std::printf("%s r=32: full cache %zu bytes, --cache-slots 4 %zu bytes (ratio %.4f)\n", set,
                bytes[0], bytes[1], double(bytes[1]) / double(bytes[0]));
    EXPECT_LE(bytes[1] * 6, bytes[0]) << set;
  }
}

TEST(Generate, PreludeAwareSlotsGiveEachCoreLayerItsShare) {
  Fixture f("tiny-a");  // P = 1, C = 2
  KVCache c(f.model->config(), *f.be, KVCache::Strategy::kCompressSPrelude, 2);
  EXPECT_EQ(c.slot_of(0), 0);
  for (int t = 0; t < 8; ++t) {
    EXPECT_EQ(c.slot_of(1 + 2 * t), 1);
    EXPECT_EQ(c.slot_of(2 + 2 * t), 2);
  }
  EXPECT_EQ(c.slot_of(-1), -1);
}

// Runs a generation and returns (result, exit values per call).
std::pair<GenerateResult, std::vector<std::vector<double>>> run(Fixture& f, GenerateOptions o,
                                                                GenerationContext** keep = nullptr) {
  Generator gen(*f.model, *f.be, o);
  static std::unique_ptr<GenerationContext> last;
  last = gen.new_context();
  std::vector<std::vector<double>> vals;
  GenerateResult r = gen.generate(*last, kPrompt, [&](const TokenEvent& ev) {
    vals.emplace_back(ev.exit_values.begin(), ev.exit_values.end());
    return true;
  });
  if (keep) *keep = last.get();
  return {r, vals};
}

TEST(Generate, EveryCriterionExitsAtItsFirstPassingCheck) {
  Fixture f;
  const char* specs[] = {"kl:0.01", "minp-kl:0.05", "entropy-diff:0.02", "latent-diff:0.2",
                         "cosine:0.02", "argmax-stability:2"};
  for (const char* s : specs) {
    GenerateOptions o;
    o.steps = 16;
    o.max_new_tokens = 6;
    o.exit = ExitSpec::parse(s);
    auto [r, vals] = run(f, o);
    auto policy = make_exit_policy(o.exit);
    int below_limit = 0;
    for (size_t c = 0; c < r.steps.size(); ++c) {
      ASSERT_EQ(vals[c].size(), static_cast<size_t>(r.steps[c])) << s;
      for (int j = 0; j + 1 < r.steps[c]; ++j)
        EXPECT_FALSE(policy->should_exit(vals[c][j])) << s << " call " << c << " check " << j;
      if (r.steps[c] < 16) {
        ++below_limit;
        EXPECT_TRUE(policy->should_exit(vals[c].back())) << s;
      }
    }
    EXPECT_GT(below_limit, 0) << s << ": thresholds chosen so that some token exits early";
  }
}

TEST(Generate, MinStepsAndCheckEverySkipChecks) {
  Fixture f;
  GenerateOptions o;
  o.steps = 16;
  o.max_new_tokens = 4;
  o.exit = ExitSpec::parse("kl:1e9");  // exits at the first performed check
  o.min_steps = 5;
  o.check_every = 3;
  auto [r, vals] = run(f, o);
  for (size_t c = 0; c < r.steps.size(); ++c) {
    EXPECT_EQ(r.steps[c], 6) << "first check: n >= 5 and n % 3 == 0";
    EXPECT_EQ(vals[c].size(), 1u);
  }
}

// Why prefix reuse (and chunked prefill) stays off under an exit criterion: the whole prompt
// exits at the step its last token decides (golden README item 15), so the core KV entries of
// the same first 128 tokens reach different depths when different tokens follow them; no cached
// prefix can serve both prompts, and a chunk run before the prompt's end cannot know its depth.
TEST(Generate, UnderAnExitAPrefixsEntriesDependOnTheTokensAfterIt) {
  ThreadPool pool(1);
  auto be = make_backend("cpu", pool);
  auto model = Model::load(long_context_tiny_a(), *be);
  const ModelConfig& c = model->config();
  GenerateOptions o;
  o.steps = 16;
  o.exit = ExitSpec::parse("kl:0.01");
  Generator gen(*model, *be, o);
  EXPECT_FALSE(gen.splits_calls());
  const int32_t V = static_cast<int32_t>(c.vocab_size), n = 128;
  std::vector<int32_t> prefix;
  for (int32_t i = 0; i < n; ++i) prefix.push_back((i * 37 + 11) % V);
  // Prompts with the prefix and different last tokens, until two exit at different depths.
  std::map<int, std::unique_ptr<GenerationContext>> by_depth;
  for (int32_t last = 0; last < V && by_depth.size() < 2; ++last) {
    std::vector<int32_t> prompt = prefix;
    prompt.push_back(last);
    auto ctx = gen.new_context();
    const int steps = gen.prefill(*ctx, prompt).steps;
    by_depth.emplace(steps, std::move(ctx));
  }
  ASSERT_EQ(by_depth.size(), 2u) << "every last token gave the same depth";
  const auto& [shallow, a] = *by_depth.begin();
  const auto& [deep, b] = *by_depth.rbegin();
  // The deeper prompt's last core layer: entries for all its prefix positions; the shallower's none.
  const int idx = c.n_prelude + (deep - 1) * c.n_core + c.n_core - 1;
  EXPECT_EQ(b->cache().positions(idx).size(), static_cast<size_t>(n + 1)) << deep;
  EXPECT_TRUE(a->cache().positions(idx).empty()) << shallow;
}

TEST(Generate, EarlyExitLeavesNoDeeperCoreEntries) {
  Fixture f;  // P = 1, C = 2
  GenerateOptions o;
  o.steps = 16;
  o.max_new_tokens = 8;
  o.exit = ExitSpec::parse("kl:0.01");
  GenerationContext* ctx = nullptr;
  auto [r, vals] = run(f, o, &ctx);
  const ModelConfig& c = f.model->config();
  // Call k ran positions [start_k, end_k); its last core layer wrote step index
  // P + (steps-1)·C + C-1 and nothing deeper.
  int32_t start = 0;
  for (size_t k = 0; k + 1 < r.steps.size(); ++k) {
    const int32_t end = k == 0 ? static_cast<int32_t>(kPrompt.size()) : start + 1;
    const int last = c.n_prelude + (r.steps[k] - 1) * c.n_core + c.n_core - 1;
    const auto have = ctx->cache().positions(last);
    const auto deeper = ctx->cache().positions(last + 1);
    for (int32_t p = start; p < end; ++p) {
      EXPECT_TRUE(std::count(have.begin(), have.end(), p)) << "call " << k << " pos " << p;
      EXPECT_FALSE(std::count(deeper.begin(), deeper.end(), p)) << "call " << k << " pos " << p;
    }
    start = end;
  }
}

TEST(Generate, ContextsOnOneModelAreIndependent) {
  Fixture f;
  GenerateOptions o;
  o.steps = 8;
  o.max_new_tokens = 6;
  o.warm_start = WarmStart::kAuto;
  o.sampling.greedy = false;
  o.sampling.seed = 5;
  o.init_scale = 1.0;
  o.init_seed = 9;
  Generator gen(*f.model, *f.be, o);
  auto a = gen.new_context(), b = gen.new_context();
  const GenerateResult ra = gen.generate(*a, kPrompt);
  // Interleave two fresh contexts call by call: each must reproduce ra.
  auto c1 = gen.new_context(), c2 = gen.new_context();
  CallResult x = gen.prefill(*c1, kPrompt), y = gen.prefill(*c2, kPrompt);
  std::vector<int32_t> t1, t2;
  for (int i = 0; i < 6; ++i) {
    t1.push_back(gen.sample(*c1, x.logits));
    t2.push_back(gen.sample(*c2, y.logits));
    if (i < 5) {
      x = gen.decode(*c1, t1.back());
      y = gen.decode(*c2, t2.back());
    }
  }
  (void)b;
  EXPECT_EQ(t1, ra.tokens);
  EXPECT_EQ(t2, ra.tokens);
  a->reset();
  EXPECT_EQ(gen.generate(*a, kPrompt).tokens, ra.tokens);  // reset = fresh
}

TEST(Generate, WarmStateChoicesDiffer) {
  Fixture f;
  std::vector<std::vector<float>> call1;
  for (WarmStart w : {WarmStart::kOff, WarmStart::kLatent, WarmStart::kRaw}) {
    GenerateOptions o;
    o.steps = 8;
    o.max_new_tokens = 2;
    o.warm_start = w;
    Generator gen(*f.model, *f.be, o);
    auto ctx = gen.new_context();
    int call = 0;
    gen.generate(*ctx, kPrompt, [&](const TokenEvent& ev) {
      if (call++ == 1) call1.emplace_back(ev.logits.begin(), ev.logits.end());
      return true;
    });
  }
  ASSERT_EQ(call1.size(), 3u);
  for (int a = 0; a < 3; ++a)
    for (int b = a + 1; b < 3; ++b) {
      double d = 0;
      for (size_t i = 0; i < call1[a].size(); ++i)
        d = std::max(d, double(std::fabs(call1[a][i] - call1[b][i])));
      EXPECT_GT(d, 1e-3) << a << " vs " << b;
    }
}

TEST(Generate, StopIdEndsGenerationAndIsReturned) {
  Fixture f;
  GenerateOptions o;
  o.steps = 8;
  o.max_new_tokens = 12;
  o.init_scale = 0.0;
  auto [full, v1] = run(f, o);
  ASSERT_EQ(full.tokens.size(), 12u);
  o.stop_ids = {full.tokens[3]};
  auto [r, v2] = run(f, o);
  const size_t first = std::find(full.tokens.begin(), full.tokens.end(), full.tokens[3]) -
                       full.tokens.begin();
  EXPECT_EQ(r.finish_reason, "stop");
  EXPECT_EQ(r.tokens, std::vector<int32_t>(full.tokens.begin(), full.tokens.begin() + first + 1));
}

// Token id -> "<id>" text.
class IdText : public TextStream {
 public:
  std::string push(int32_t id) override { return "<" + std::to_string(id) + ">"; }
};

TEST(Generate, StopStringMatchesAcrossTokens) {
  Fixture f;
  GenerateOptions o;
  o.steps = 8;
  o.max_new_tokens = 12;
  IdText text;
  Generator g0(*f.model, *f.be, o);
  auto c0 = g0.new_context();
  const GenerateResult full = g0.generate(*c0, kPrompt, {}, &text);
  ASSERT_EQ(full.tokens.size(), 12u);
  // A stop string spanning the end of token 2 and the start of token 3.
  const std::string t2 = "<" + std::to_string(full.tokens[2]) + ">";
  const std::string stop = t2.substr(1) + "<" + std::to_string(full.tokens[3]).substr(0, 1);
  o.stop_strings = {stop};
  Generator g(*f.model, *f.be, o);
  auto ctx = g.new_context();
  std::string streamed;
  const GenerateResult r = g.generate(*ctx, kPrompt, [&](const TokenEvent& ev) {
    streamed += ev.text;
    return true;
  }, &text);
  EXPECT_EQ(r.finish_reason, "stop_string");
  EXPECT_EQ(r.tokens.size(), 4u);
  const std::string want = full.text.substr(0, full.text.find(stop));
  EXPECT_EQ(r.text, want);
  EXPECT_EQ(streamed, want);
}

TEST(StopStrings, HoldsBackPossiblePrefixes) {
  StopStringMatcher m({"lo w", "xyz"});
  EXPECT_EQ(m.push("he"), "he");
  EXPECT_EQ(m.push("l"), "");  // could begin "lo w"
  EXPECT_EQ(m.push("lo"), "l");
  EXPECT_FALSE(m.matched());
  EXPECT_EQ(m.push(" wor"), "");
  EXPECT_TRUE(m.matched());
  EXPECT_EQ(m.push("ld"), "");
  StopStringMatcher n({"xyz"});
  EXPECT_EQ(n.push("abx"), "ab");
  EXPECT_EQ(n.push("y"), "");
  EXPECT_EQ(n.flush(), "xy");
}

TEST(ExitPolicies, ValuesFollowTheReferenceFormulas) {
  const std::vector<float> a = {1.0f, 2.0f, 0.0f, -1.0f}, b = {2.0f, 0.5f, 0.0f, -1.0f};
  auto lsm = [](const std::vector<float>& x) {
    double m = -1e9, s = 0;
    for (float v : x) m = std::max(m, double(v));
    for (float v : x) s += std::exp(v - m);
    std::vector<double> o;
    for (float v : x) o.push_back(v - m - std::log(s));
    return o;
  };
  ExitObservation obs;
  // kl: first against uniform, then against the previous distribution.
  auto kl = make_exit_policy(ExitSpec::parse("kl"));
  kl->begin({}, 1, 0, 4);
  obs.logits = a;
  double want = 0;
  for (double v : lsm(a)) want += 0.25 * (std::log(0.25) - v);
  EXPECT_NEAR(kl->measure(obs), want, 1e-9);
  obs.logits = b;
  want = 0;
  const auto la = lsm(a), lb = lsm(b);
  for (size_t i = 0; i < 4; ++i) want += std::exp(la[i]) * (la[i] - lb[i]);
  EXPECT_NEAR(kl->measure(obs), want, 1e-9);
  // entropy-diff: |H - 100| at the first check.
  auto ent = make_exit_policy(ExitSpec::parse("entropy-diff"));
  ent->begin({}, 1, 0, 4);
  obs.logits = a;
  double h = 0;
  for (double v : la) h -= std::exp(v) * std::log(std::exp(v) + 1e-10);
  EXPECT_NEAR(ent->measure(obs), 100.0 - h, 1e-9);
  // minp-kl: entries below 0.1·max become 1/V before renormalising.
  auto mk = make_exit_policy(ExitSpec::parse("minp-kl"));
  mk->begin({}, 1, 0, 4);
  const std::vector<float> sharp = {5.0f, 0.0f, 0.0f, 4.0f};
  obs.logits = sharp;
  auto ls = lsm(sharp);
  std::vector<double> p;
  double mx = 0, sum = 0;
  for (double v : ls) mx = std::max(mx, std::exp(v));
  for (double v : ls) p.push_back(std::exp(v) < 0.1 * mx ? 0.25 : std::exp(v));
  for (double v : p) sum += v;
  want = 0;
  for (double v : p) want += 0.25 * (std::log(0.25) - std::log(v / sum));
  EXPECT_NEAR(mk->measure(obs), want, 1e-9);
  // argmax-stability counts repeats.
  auto am = make_exit_policy(ExitSpec::parse("argmax-stability:2"));
  am->begin({}, 1, 0, 4);
  obs.logits = a;
  EXPECT_EQ(am->measure(obs), 0.0);
  EXPECT_EQ(am->measure(obs), 1.0);
  EXPECT_FALSE(am->should_exit(1.0));
  EXPECT_EQ(am->measure(obs), 2.0);
  EXPECT_TRUE(am->should_exit(2.0));
  obs.logits = b;
  EXPECT_EQ(am->measure(obs), 0.0);
  // latent-diff and cosine over two positions of width 2.
  const std::vector<float> s0 = {1, 0, 0, 1}, s1 = {1, 1, 0, 2};
  ExitObservation so;
  so.rows = 2;
  so.width = 2;
  so.state = s1;
  auto ld = make_exit_policy(ExitSpec::parse("latent-diff"));
  ld->begin(s0, 2, 2, 4);
  EXPECT_NEAR(ld->measure(so), (1 / std::sqrt(2.0) + 1 / 2.0) / 2, 1e-9);
  auto cs = make_exit_policy(ExitSpec::parse("cosine"));
  cs->begin(s0, 2, 2, 4);
  EXPECT_NEAR(cs->measure(so), 1 - (1 / std::sqrt(2.0) + 1.0) / 2, 1e-9);
  const std::vector<float> zero(4, 0.0f);
  cs->begin(zero, 2, 2, 4);
  const double v = cs->measure(so);
  EXPECT_TRUE(std::isnan(v));
  EXPECT_FALSE(cs->should_exit(v));  // a zero initial state never exits at the first check
}

TEST(BadInput, ExitSpecs) {
  EXPECT_THROW(ExitSpec::parse("klx:0.1"), Error);
  EXPECT_THROW(ExitSpec::parse("kl:"), Error);
  EXPECT_THROW(ExitSpec::parse("kl:abc"), Error);
  EXPECT_THROW(ExitSpec::parse("kl:1e-3x"), Error);
  EXPECT_THROW(ExitSpec::parse("kl:-1"), Error);
  EXPECT_THROW(ExitSpec::parse("kl:nan"), Error);
  EXPECT_THROW(ExitSpec::parse("argmax-stability:2.5"), Error);
  EXPECT_THROW(ExitSpec::parse("none:3"), Error);
  EXPECT_EQ(ExitSpec::parse("kl").threshold, 1e-3);
  EXPECT_EQ(ExitSpec::parse("latent-diff:auto").threshold, 0.03);
  EXPECT_EQ(ExitSpec::parse("cosine:0.5").threshold, 0.5);
  try {
    ExitSpec::parse("entropy");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("unknown criterion 'entropy'"), std::string::npos);
  }
}

TEST(BadInput, OptionsPromptsAndIds) {
  Fixture f;
  GenerateOptions o;
  o.steps = -1;
  EXPECT_THROW(Generator(*f.model, *f.be, o), Error);
  o.steps = 4;
  o.check_every = 0;
  EXPECT_THROW(Generator(*f.model, *f.be, o), Error);
  o.check_every = 1;
  o.cache_strategy = KVCache::Strategy::kCompressS;
  EXPECT_THROW(Generator(*f.model, *f.be, o), Error);  // no slots
  o.cache_strategy = KVCache::Strategy::kFull;
  o.context_length = 8;
  o.max_new_tokens = 3;
  Generator gen(*f.model, *f.be, o);
  auto ctx = gen.new_context();
  const std::vector<int32_t> long_prompt = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
  try {
    gen.generate(*ctx, long_prompt);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("does not fit the context of 8"), std::string::npos);
  }
  EXPECT_THROW(gen.generate(*ctx, std::vector<int32_t>{}), Error);
  EXPECT_THROW(gen.generate(*ctx, std::vector<int32_t>{1, 256}), Error);
  EXPECT_THROW(gen.generate(*ctx, std::vector<int32_t>{-1}), Error);
  EXPECT_EQ(ctx->n_past(), 0);
  o.truncate_left = true;
  Generator tr(*f.model, *f.be, o);
  auto c2 = tr.new_context();
  const GenerateResult r = tr.generate(*c2, long_prompt);
  EXPECT_EQ(r.prompt_tokens, 6);  // 8 positions - (3 - 1) fed back
  EXPECT_EQ(c2->history().front(), 5);
  EXPECT_EQ(r.tokens.size(), 3u);
  EXPECT_EQ(c2->n_past(), 8);
}

TEST(BadInput, Utf8) {
  EXPECT_NO_THROW(validate_utf8("h\xc3\xa9llo \xe2\x82\xac \xf0\x9f\x98\x80", "prompt"));
  for (const char* bad : {"\xff", "a\xc3", "\xc0\xaf", "\xe0\x80\xaf", "\xed\xa0\x80",
                          "\xf4\x90\x80\x80", "\xe2\x82"})
    EXPECT_THROW(validate_utf8(bad, "prompt"), Error) << bad;
}

// --- the CLI --------------------------------------------------------------------------------

nlohmann::json cli_json(const std::string& args, int* rc = nullptr) {
  std::string out;
  const int code = test::run_command(std::string(HUGINN_CLI) + " generate " + args +
                                         " --json 2>/dev/null",
                                     &out);
  if (rc) *rc = code;
  return code == 0 ? nlohmann::json::parse(out) : nlohmann::json();
}

std::string ids_arg(const std::vector<int32_t>& ids) {
  std::string s;
  for (int32_t v : ids) s += (s.empty() ? "" : ",") + std::to_string(v);
  return s;
}

TEST(Cli, GenerateJsonMatchesGolden) {
  const std::string dir = golden_dir("tiny-a");
  const std::string file = dir + "/gen_klexit_max16.safetensors";
  const std::vector<int32_t> prompt = test::load_ids(file, "prompt");
  const std::vector<int32_t> tokens = test::load_ids(file, "tokens");
  int rc = 0;
  nlohmann::json j = cli_json("--model " + dir + " --ids " + ids_arg(prompt) +
                                  " --init-scale 0 --exit kl:0.01 --max-steps 16 --max-new 12",
                              &rc);
  ASSERT_EQ(rc, 0);
  const std::vector<int32_t> got = j["tokens"].get<std::vector<int32_t>>();
  EXPECT_EQ(got, std::vector<int32_t>(tokens.begin() + 5, tokens.end()));
  EXPECT_EQ(j["steps"].get<std::vector<int>>(),
            (std::vector<int>{5, 8, 6, 6, 6, 7, 6, 6, 6, 6, 5, 7}));  // the case's steps_per_call
  EXPECT_TRUE(j.contains("text"));

  const std::vector<int32_t> greedy =
      test::load_ids(dir + "/gen_greedy_compress-s4_s8.safetensors", "tokens");
  j = cli_json("--model " + dir + " --ids " + ids_arg(prompt) +
                   " --init-scale 0 --steps 8 --cache-slots 4 --max-new 12 --greedy",
               &rc);
  ASSERT_EQ(rc, 0);
  EXPECT_EQ(j["tokens"].get<std::vector<int32_t>>(),
            std::vector<int32_t>(greedy.begin() + 5, greedy.end()));

  // Warm start: the fixed-step generator passes ln_f(s), the adaptive one the raw s.
  const std::vector<int32_t> cont =
      test::load_ids(dir + "/gen_greedy_continuous_s8.safetensors", "tokens");
  j = cli_json("--model " + dir + " --ids " + ids_arg(prompt) +
                   " --init-scale 0 --steps 8 --max-new 12 --warm-start",
               &rc);
  ASSERT_EQ(rc, 0);
  EXPECT_EQ(j["tokens"].get<std::vector<int32_t>>(),
            std::vector<int32_t>(cont.begin() + 5, cont.end()));
  const std::vector<int32_t> klc =
      test::load_ids(dir + "/gen_klexit_continuous_max16.safetensors", "tokens");
  j = cli_json("--model " + dir + " --ids " + ids_arg(prompt) +
                   " --init-scale 0 --exit kl:0.003 --max-steps 16 --max-new 12 --warm-start",
               &rc);
  ASSERT_EQ(rc, 0);
  EXPECT_EQ(j["tokens"].get<std::vector<int32_t>>(),
            std::vector<int32_t>(klc.begin() + 5, klc.end()));
  EXPECT_EQ(j["steps"].get<std::vector<int>>(),
            (std::vector<int>{7, 8, 9, 8, 7, 8, 7, 6, 8, 6, 6, 8}));
}

TEST(Cli, BadInputIsAClearError) {
  const std::string base = std::string(HUGINN_CLI) + " generate --model " + golden_dir("tiny-a");
  struct Case {
    std::string args, message;
  } cases[] = {
      {"--ids 1,2 --exit bogus", "unknown criterion 'bogus'"},
      {"--ids 1,2 --exit kl:1e-3e", "is not a finite non-negative number"},
      {"--ids 1,2 --steps 0", "--steps must be >= 1"},
      {"--ids 1,999", "outside the vocabulary [0, 256)"},
      {"--ids 1,x", "'x' is not an integer"},
      {"--ids 1,2,3,4,5,6 --context 4", "does not fit the context of 4"},
      {"--prompt $'\\xff\\xfehi'", "not valid UTF-8"},
      {"--ids 1,2 --stop abc", "--stop needs a tokenizer"},
      {"--ids 1,2 --cache-slots -1", "--cache-slots must be >= 0"},
  };
  for (const Case& c : cases) {
    std::string out;
    const int rc = test::run_command("bash -c \"" + base + " " + c.args + "\" 2>&1", &out);
    EXPECT_NE(rc, 0) << c.args;
    EXPECT_NE(out.find(c.message), std::string::npos) << c.args << "\n" << out;
    EXPECT_EQ(out.find("terminate"), std::string::npos) << c.args;  // no crash
  }
  std::string out;
  const int rc = test::run_command(
      base + " --ids 1,2,3,4,5,6 --context 4 --truncate left --max-new 2 --json --init-scale 0",
      &out);
  EXPECT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("\"prompt_tokens\":3"), std::string::npos) << out;
}

}  // namespace
}  // namespace huginn
