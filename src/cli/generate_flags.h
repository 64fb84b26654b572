// Flags shared by `huginn generate` and `huginn chat`: model, tokenizer, recurrence, exit,
// cache, warm start and sampling options, turned into GenerateOptions.
#pragma once

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "cli/command.h"
#include "huginn/generate.h"
#ifdef HUGINN_HAVE_TOKENIZER
#include "huginn/tokenizer.h"
#endif

namespace huginn::cli {

struct GenFlags {
  std::string model, tokenizer;
  int steps = -1, max_steps = -1, min_steps = 0, check_every = 1;
  std::string exit = "none";
  int cache_slots = 0;
  std::string cache_rule = "s";
  bool warm = false;
  std::string warm_state = "auto";
  double init_scale = 1.0;  // the released generators' default: a random state per call
  uint64_t seed = 0;
  bool greedy = false;
  float temperature = -1.0f, top_p = 1.0f, min_p = 0.0f, repetition_penalty = 1.0f;
  int top_k = 0, max_new = 256;
  std::vector<std::string> stop_strings;
  std::vector<int> stop_ids;
  std::string truncate = "none";
  int64_t context = 0;
};

inline void add_gen_flags(CLI::App* sub, GenFlags& f) {
  sub->add_option("--model", f.model, "model directory (config.json + safetensors)")->required();
  sub->add_option("--tokenizer", f.tokenizer,
                  "tokenizer.json (default: MODEL/tokenizer.json when present)");
  sub->add_option("--steps", f.steps,
                  "recurrences per token (default: the config's mean_recurrence); with --exit, "
                  "the maximum");
  sub->add_option("--exit", f.exit,
                  "adaptive exit CRITERION[:THRESHOLD]: kl, minp-kl, entropy-diff, latent-diff, "
                  "cosine, argmax-stability or none (threshold 'auto' or omitted: the reference's)");
  sub->add_option("--max-steps", f.max_steps, "maximum recurrences per token with --exit");
  sub->add_option("--min-steps", f.min_steps, "no exit check before this many recurrences");
  sub->add_option("--check-every", f.check_every, "check the exit criterion every n-th recurrence");
  sub->add_option("--cache-slots", f.cache_slots,
                  "share the KV cache of the core recurrences in K slots (0 = full cache)");
  sub->add_option("--cache-rule", f.cache_rule,
                  "slot rule with --cache-slots: s = the reference's compress-s (offset 2), "
                  "r = compress-r, prelude = compress-s offset by the model's prelude depth")
      ->check(CLI::IsMember({"s", "r", "prelude"}));
  sub->add_flag("--warm-start", f.warm,
                "continuous chain-of-thought: each token starts from the previous token's state");
  sub->add_option("--warm-state", f.warm_state,
                  "the state --warm-start passes: auto = as the reference (ln_f(s) with fixed "
                  "steps, raw s with --exit), latent = ln_f(s), raw = s")
      ->check(CLI::IsMember({"auto", "latent", "raw"}));
  sub->add_option("--init-scale", f.init_scale,
                  "initial state: 0 = zeros, S = truncated normal scaled by S (default 1, as the "
                  "released generators)");
  sub->add_option("--seed", f.seed, "seed of the initial states and the sampler");
  sub->add_flag("--greedy", f.greedy, "argmax decoding (the default without --temperature)");
  sub->add_option("--temperature", f.temperature, "sample at this temperature, in [1e-5, 1e4]");
  sub->add_option("--top-k", f.top_k, "keep the k most likely tokens (0 = off)");
  sub->add_option("--top-p", f.top_p, "nucleus sampling mass in (0, 1] (1 = off)");
  sub->add_option("--min-p", f.min_p, "drop tokens below min-p times the top probability");
  sub->add_option("--repetition-penalty", f.repetition_penalty, "penalty in [1e-3, 100] (1 = off)");
  sub->add_option("--max-new", f.max_new, "maximum new tokens");
  sub->add_option("--stop", f.stop_strings, "stop string (repeatable; matched across tokens)");
  sub->add_option("--stop-id", f.stop_ids, "extra stop token id (repeatable)");
  sub->add_option("--truncate", f.truncate,
                  "a prompt too long for the context: none = error, left = keep its last tokens")
      ->check(CLI::IsMember({"none", "left"}));
  sub->add_option("--context", f.context, "context length in tokens (default: the model's)");
}

// `tok` (may be null): the tokenizer whose stop markers count (huginn::model_stop_ids).
inline GenerateOptions make_gen_options(const GenFlags& f, const std::string& model_dir,
                                        const Tokenizer* tok) {
  GenerateOptions o;
  o.exit = ExitSpec::parse(f.exit);
  const bool adaptive = o.exit.criterion != ExitCriterion::kNone;
  if (f.steps != -1 && f.steps < 1)
    throw Error("--steps must be >= 1, got " + std::to_string(f.steps));
  if (f.max_steps != -1 && f.max_steps < 1)
    throw Error("--max-steps must be >= 1, got " + std::to_string(f.max_steps));
  if (f.max_steps != -1 && !adaptive) throw Error("--max-steps needs --exit CRITERION");
  if (f.max_steps != -1 && f.steps != -1 && f.max_steps != f.steps)
    throw Error("--steps and --max-steps disagree; with --exit give --max-steps only");
  o.steps = f.max_steps != -1 ? f.max_steps : (f.steps != -1 ? f.steps : 0);
  o.min_steps = f.min_steps;
  o.check_every = f.check_every;
  if (f.cache_slots < 0) throw Error("--cache-slots must be >= 0");
  if (f.cache_slots > 0) {
    o.cache_slots = f.cache_slots;
    o.cache_strategy = f.cache_rule == "r"         ? KVCache::Strategy::kCompressR
                       : f.cache_rule == "prelude" ? KVCache::Strategy::kCompressSPrelude
                                                   : KVCache::Strategy::kCompressS;
  }
  if (!f.warm && f.warm_state != "auto") throw Error("--warm-state needs --warm-start");
  o.warm_start = !f.warm                        ? WarmStart::kOff
                 : f.warm_state == "latent"     ? WarmStart::kLatent
                 : f.warm_state == "raw"        ? WarmStart::kRaw
                                                : WarmStart::kAuto;
  o.init_scale = f.init_scale;
  o.init_seed = f.seed;
  o.max_new_tokens = f.max_new;
  o.sampling.greedy = f.greedy || f.temperature <= 0.0f;
  if (f.greedy && f.temperature > 0.0f) throw Error("--greedy and --temperature exclude each other");
  o.sampling.temperature = f.temperature > 0.0f ? f.temperature : 1.0f;
  o.sampling.top_k = f.top_k;
  o.sampling.top_p = f.top_p;
  o.sampling.min_p = f.min_p;
  o.sampling.repetition_penalty = f.repetition_penalty;
  o.sampling.seed = f.seed;
  o.stop_strings = f.stop_strings;
  o.stop_ids.assign(f.stop_ids.begin(), f.stop_ids.end());
  for (int32_t id : model_stop_ids(model_dir, tok)) o.stop_ids.push_back(id);
  o.truncate_left = f.truncate == "left";
  o.context_length = f.context;
  return o;
}

// The tokenizer path to use: --tokenizer, else MODEL/tokenizer.json when it exists, else "".
inline std::string tokenizer_path(const GenFlags& f) {
  if (!f.tokenizer.empty()) return f.tokenizer;
  const std::string p = f.model + "/tokenizer.json";
  return std::filesystem::exists(p) ? p : std::string();
}


}  // namespace huginn::cli
