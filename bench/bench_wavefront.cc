// Sequential vs wavefront (huginn/wavefront.h) vs the reference's speculative and diffusion
// samplers (huginn/samplers.h) in the same run: decode tokens/s of each, the speed-up over
// sequential, mean positions per core weight pass, draft acceptance, the share of tokens equal to
// sequential's and (pattern model) the share that follow the pattern — one row per r and
// method. Greedy, fixed r, zero initial state, no stop ids.
//
//   bench_wavefront --model DIR [--dtype bf16|q8|f32|auto] [--steps 8,32] [--new N]
//                   [--prompt L] [--draft-depth D] [--lanes K] [--threads N]
//                   [--lookahead L] [--threshold T] [--inner I] [--headway H]
//                   [--freeze latent-diff|token-stability|fixed] [--exit-t X] [--ema A]
//                   [--noise M] [--methods seq,wave,spec,diff]
//     speculative drafts at --draft-depth (0 = r/4) recurrences, --lookahead drafts per round
//   bench_wavefront --train-pattern DIR [--train-steps S] ...
//     trains a small model (E 128, 1/2/1 layers, r 8, vocab 32) on a learnable token pattern
//     (random start, then a fixed permutation cycle), saves it to DIR, benchmarks it with
//     prompts from the pattern (--model DIR --pattern: a model it trained before).
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "bench_util.h"
#include "huginn/data.h"
#include "huginn/model.h"
#include "huginn/samplers.h"
#include "huginn/thread_pool.h"
#include "huginn/train.h"
#include "huginn/wavefront.h"

using namespace huginn;

namespace {

constexpr uint32_t kPatternVocab = 32;

// Token -> next token of the pattern's permutation cycle over 1..31 (0 ends a document).
std::vector<uint32_t> pattern_next() {
  std::mt19937_64 rng(7);
  std::vector<uint32_t> perm(kPatternVocab - 1), next(kPatternVocab, 0);
  for (uint32_t i = 0; i < perm.size(); ++i) perm[i] = i + 1;
  std::shuffle(perm.begin(), perm.end(), rng);
  for (size_t i = 0; i < perm.size(); ++i) next[perm[i]] = perm[(i + 1) % perm.size()];
  return next;
}

std::vector<uint32_t> pattern_stream(size_t n, uint64_t seed) {
  const std::vector<uint32_t> next = pattern_next();
  std::mt19937_64 rng(seed);
  std::vector<uint32_t> out;
  while (out.size() < n) {
    uint32_t t = 1 + rng() % (kPatternVocab - 1);
    const int len = 8 + static_cast<int>(rng() % 32);
    for (int i = 0; i < len; ++i, t = next[t]) out.push_back(t);
    out.push_back(0);
  }
  out.resize(n);
  return out;
}

std::string train_pattern_model(const std::string& dir, int steps) {
  namespace fs = std::filesystem;
  fs::create_directories(dir + "/data");
  const std::vector<uint32_t> tr = pattern_stream(200000, 1), va = pattern_stream(4000, 2);
  write_shard(dir + "/data/train-00000.bin", tr, kPatternVocab, 0);
  write_shard(dir + "/data/val-00000.bin", va, kPatternVocab, 0);
  std::ofstream(dir + "/config.json")
      << R"({"n_embd": 128, "num_attention_heads": 4, "intermediate_size": 256, "vocab_size": 32,
 "block_size": 128, "n_layers_in_prelude": 1, "n_layers_in_recurrent_block": 2,
 "n_layers_in_coda": 1, "mean_recurrence": 8, "mean_backprop_depth": 4,
 "tie_embeddings": true, "qk_bias": true})";
  TrainOptions o;
  o.model_config = dir + "/config.json";
  o.data = dir + "/data";
  o.out = dir + "/run";
  o.steps = steps;
  o.batch = 8;
  o.seq_len = 64;
  o.lr = 3e-3;
  o.warmup = 20;
  o.val_depths = {8};
  o.val_windows = 4;
  o.quiet = true;
  std::fprintf(stderr, "training the pattern model: %d steps ...\n", steps);
  const TrainResult r = train(o);
  std::fprintf(stderr, "trained: last loss %.3f, checkpoint %s\n", r.last_loss, r.last_checkpoint.c_str());
  return r.last_checkpoint;
}

// Share of generated tokens (after the first) that follow the pattern: the cycle's next token,
// or 0 (a document may end anywhere after its 8th token; 0 may be followed by anything).
double pattern_accuracy(const std::vector<int32_t>& t) {
  static const std::vector<uint32_t> next = pattern_next();
  int ok = 0, n = 0;
  for (size_t i = 1; i < t.size(); ++i, ++n)
    ok += t[i - 1] == 0 || t[i] == 0 || static_cast<uint32_t>(t[i]) == next[static_cast<size_t>(t[i - 1])];
  return n ? double(ok) / n : 1.0;
}

double same_share(const std::vector<int32_t>& a, const std::vector<int32_t>& b) {
  size_t same = 0;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) same += a[i] == b[i];
  return a.empty() ? 1.0 : double(same) / double(a.size());
}

std::string load_average() {
  std::ifstream f("/proc/loadavg");
  std::string a, b, c;
  f >> a >> b >> c;
  return a + " " + b + " " + c;
}

}  // namespace

int main(int argc, char** argv) {
  std::string model_dir, train_dir, dtype = "bf16";
  std::vector<int> steps = {8, 32};
  int n_new = 8, prompt_len = 8, draft_depth = 0, lanes = 8, threads = 1, train_steps = 300;
  SpeculativeOptions spec;
  DiffusionOptions diff;
  std::string methods = "seq,wave,spec,diff";
  bool pattern_given = false;  // --model is a model --train-pattern trained
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&] { return bench::next_arg(argc, argv, i); };
    auto next_int = [&] { return bench::int_arg(argc, argv, i); };
    if (a == "--model") model_dir = next();
    else if (a == "--train-pattern") train_dir = next();
    else if (a == "--train-steps") train_steps = next_int();
    else if (a == "--pattern") pattern_given = true;
    else if (a == "--dtype") dtype = next();
    else if (a == "--steps") steps = bench::int_list(next(), "--steps");
    else if (a == "--new") n_new = next_int();
    else if (a == "--prompt") prompt_len = next_int();
    else if (a == "--draft-depth") draft_depth = next_int();
    else if (a == "--lanes") lanes = next_int();
    else if (a == "--threads") threads = next_int();
    else if (a == "--lookahead") spec.lookahead_for_draft = next_int();
    else if (a == "--threshold") spec.verification_threshold = bench::double_arg(argc, argv, i);
    else if (a == "--inner") diff.inner_recurrence = next_int();
    else if (a == "--headway") diff.headway = next_int();
    else if (a == "--freeze") diff.freeze_strategy = DiffusionOptions::parse_freeze(next());
    else if (a == "--exit-t") diff.exit_t = bench::double_arg(argc, argv, i);
    else if (a == "--ema") diff.ema_embeds = bench::double_arg(argc, argv, i);
    else if (a == "--noise") diff.state_noise_mixing = bench::double_arg(argc, argv, i);
    else if (a == "--methods") methods = next();
    else {
      std::fprintf(stderr,
                   "usage: bench_wavefront (--model DIR [--pattern] | --train-pattern DIR [--train-steps S])\n"
                   "       [--dtype bf16|q8|f32|auto] [--steps 8,32] [--new N] [--prompt L]\n"
                   "       [--draft-depth D (0 = r/4)] [--lanes K] [--threads N (default 1)]\n"
                   "       [--lookahead L] [--threshold T] [--inner I] [--headway H]\n"
                   "       [--freeze latent-diff|token-stability|fixed] [--exit-t X] [--ema A]\n"
                   "       [--noise M] [--methods seq,wave,spec,diff]\n");
      return a == "--help" ? 0 : 2;
    }
  }
  if (model_dir.empty() == train_dir.empty()) {
    std::fprintf(stderr, "give exactly one of --model and --train-pattern\n");
    return 2;
  }
  try {
    const bool pattern = !train_dir.empty() || pattern_given;
    if (!train_dir.empty()) model_dir = train_pattern_model(train_dir, train_steps);
    ThreadPool pool(threads);
    auto be = make_backend("cpu", pool);
    Model::LoadOptions lo;
    lo.weight_dtype = parse_weight_dtype(dtype);
    const auto t0 = std::chrono::steady_clock::now();
    auto model = Model::load(model_dir, *be, lo);
    const double load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::vector<int32_t> prompt;
    if (pattern) {
      for (uint32_t t : pattern_stream(static_cast<size_t>(prompt_len), 11)) prompt.push_back(static_cast<int32_t>(t));
    } else {
      for (int i = 0; i < prompt_len; ++i) prompt.push_back(1 + (i * 7919) % static_cast<int>(model->config().vocab_size - 1));
    }
    std::printf("model %s (--dtype %s), load %.1f s, %d thread(s), prompt %d, %d new tokens, load average %s\n",
                model_dir.c_str(), dtype.c_str(), load_s, threads, prompt_len, n_new, load_average().c_str());
    std::printf("%4s %-12s %10s %8s %10s %12s %8s %8s\n", "r", "method", "tok/s", "speedup",
                "rows/pass", "acceptance", "same", "pattern");
    auto has = [&](const char* m) { return ("," + methods + ",").find("," + std::string(m) + ",") != std::string::npos; };
    WavefrontOptions wo;
    wo.draft_depth = draft_depth;
    wo.max_lanes = lanes;
    spec.draft_steps = draft_depth;
    // The decoders as `huginn eval` and `bench` run them (generate_decoded), sequential first.
    const struct {
      const char* flag;
      const char* decode;
    } kMethods[] = {{"seq", "sequential"}, {"wave", "wavefront"}, {"spec", "speculative"}, {"diff", "diffusion"}};
    for (int r : steps) {
      GenerateOptions o;
      o.steps = r;
      o.max_new_tokens = n_new;
      o.default_stop_ids = false;
      o.init_scale = 0.0;
      Generator g(*model, *be, o);
      GenerateResult seq;
      for (const auto& m : kMethods) {
        const bool first = std::strcmp(m.flag, "seq") == 0;
        if (!first && !has(m.flag)) continue;
        auto ctx = g.new_context();
        SamplerStats st;
        const GenerateResult res = generate_decoded(g, *ctx, prompt, m.decode, wo, spec, diff, &st);
        if (first) seq = res;
        char acc[48] = "-";
        if (std::strcmp(m.flag, "diff") == 0) std::snprintf(acc, sizeof acc, "%lld steps", (long long)st.rounds);
        else if (!first) std::snprintf(acc, sizeof acc, "%lld/%lld", (long long)st.accepted, (long long)st.drafted);
        std::printf("%4d %-12s %10.3f %7.2fx %10.2f %12s %7.1f%% %7s\n", r, m.decode, res.decode_tok_s(),
                    res.decode_tok_s() / std::max(seq.decode_tok_s(), 1e-12), first ? 1.0 : st.rows_per_core_pass(),
                    acc, 100.0 * same_share(seq.tokens, res.tokens),
                    pattern ? (std::to_string(static_cast<int>(100.0 * pattern_accuracy(res.tokens) + 0.5)) + "%").c_str() : "-");
        std::fflush(stdout);
        if (std::strcmp(m.flag, "wave") == 0 && (seq.tokens != res.tokens || seq.steps != res.steps)) {
          std::fprintf(stderr, "wavefront output differs from sequential\n");
          return 1;
        }
      }
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
