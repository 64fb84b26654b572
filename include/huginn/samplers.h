// The reference's two depth-parallel samplers, for several prompts at once (the reference runs
// one; README "Speculative and diffusion-forcing decoding" has the semantics read from
// seal-rg/recurrent-pretraining recpre/raven_modeling_minimal.py, and where we differ):
//
// Speculative (generate_speculative): each round drafts `lookahead_for_draft` tokens one after
// another at `draft_steps` recurrences, drops their KV entries, then verifies them in one pass
// at the full depth (--steps) over [last token, draft 1 .. draft L-1]; the drafts are accepted
// up to the first whose verified logits fail the threshold (>= 1: the draft is the argmax; in
// [0, 1): p(draft) >= threshold · max p); at a failure the token is sampled from that
// position's verified logits. With threshold 1 and greedy sampling the tokens are those of
// sequential decoding at --steps, bit for bit (each verified row runs as its own one-row
// sequence against the cache, as a sequential decode call does).
//
// Diffusion forcing (generate_diffusion_style): a window of positions, from the last frozen
// token on, iterates `inner_recurrence` core steps per diffusion step (step indices 0..I-1 each
// time, the states carried over), every window row predicts the next token, the window grows
// by `headway` positions per step (capped by `max_wavefront`), and a freeze strategy decides
// how much of the front becomes final: latent-diff (the last position whose state moved less
// than exit_t relative to its norm, and everything before it), token-stability (the last
// position whose token was unchanged more than steps / inner_recurrence times), fixed (headway
// tokens per step once steps / inner_recurrence steps have run). Noise is mixed into the states
// before each step and the prelude outputs are an EMA across steps.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "huginn/generate.h"
#include "huginn/wavefront.h"

namespace huginn {

struct SpeculativeOptions {
  int draft_steps = 0;           // recurrences of a draft; 0 = steps / 4 (at least 1)
  int lookahead_for_draft = 8;   // drafts per round
  double verification_threshold = 1.0;
  // Where the passes run (empty: on the sampler's own pass): `core` runs each batched core
  // recurrence, `prefill` each prompt's call, e.g. both in the server's depth batch beside
  // other requests (DecodeBatcher::Member::core / call). The bits are the same either way;
  // prelude and coda passes stay on the sampler's pass.
  CoreFn core{};
  CallFn prefill{};
  // Throws huginn::Error naming --draft-steps / --lookahead-for-draft /
  // --verification-threshold / --exit / --cache-slots / --warm-start.
  void validate(const GenerateOptions& g) const;
};

struct DiffusionOptions {
  enum class Freeze { kLatentDiff, kTokenStability, kFixed };
  Freeze freeze_strategy = Freeze::kLatentDiff;
  int inner_recurrence = 4;
  int headway = 1;
  int max_wavefront = 128;       // positions in the window at most; 0 = no limit
  int max_diffusion_steps = 4096;
  double exit_t = 0.03;          // latent-diff threshold
  double ema_embeds = 0.1;       // weight of the previous step's prelude outputs
  double state_noise_mixing = 0.5;
  bool dampened_state_mixer = true;  // noise weight / (1 + recurrences the position has had)
  bool sqrt_mixer = false;
  bool continuous_compute = false;   // new positions start from the window's last states
  bool full_prefill = true;          // the prompt runs once at --steps; else it joins the window
  CoreFn core{};                     // as SpeculativeOptions::core / prefill
  CallFn prefill{};
  static Freeze parse_freeze(const std::string& name);  // throws naming --freeze-strategy
  static std::string freeze_name(Freeze f);
  // Throws huginn::Error naming the flag (--inner-recurrence, --headway, --max-wavefront, ...).
  void validate(const GenerateOptions& g, int steps) const;
};

struct SamplerStats {
  int64_t core_passes = 0;  // batched core recurrences (each one pass over the core weights)
  int64_t core_rows = 0;    // (position, depth) rows they carried
  int64_t rounds = 0;       // speculative rounds / diffusion steps (summed over sequences)
  int64_t drafted = 0, accepted = 0;  // speculative drafts verified / accepted
  int64_t standing_waves = 0;         // diffusion steps whose window hit max_wavefront
  int64_t tokens = 0;
  double rows_per_core_pass() const { return core_passes ? double(core_rows) / core_passes : 0.0; }
  double acceptance() const { return drafted ? double(accepted) / double(drafted) : 0.0; }
  SamplerStats& operator+=(const SamplerStats& o);
};

// One prompt of a batch: its own fresh context (of `generator`) and, optionally, a text stream
// for the result text and stop strings, a token callback and a stop predicate.
struct SamplerRequest {
  GenerationContext* ctx = nullptr;
  std::span<const int32_t> prompt;
  TextStream* text = nullptr;
  // Streamed as Generator::generate streams, each token as it is committed (speculative: as a
  // round accepts it; diffusion: as it freezes): id, steps, the text that became final, and
  // the logits the token was chosen from where the sampler has them (speculative: always, the
  // verified row's; diffusion: the prefill's first token only, empty after). Then one id = -1
  // event with the trailing text, when there is some. Returning false ends this request
  // (finish_reason "callback"); the others go on.
  TokenCallback on_token{};
  // Asked before each speculative round and each diffusion step (a step may freeze nothing):
  // false ends this request with finish_reason "callback" (e.g. a server's cancel or deadline).
  std::function<bool()> go_on{};
};

// Each request's result as Generator::generate reports it (tokens, steps of the call that chose
// each token, finish_reason "stop" / "stop_string" / "length" / "callback", plus
// "diffusion_steps" when the diffusion sampler hit max_diffusion_steps). Prompts run through the batch together; a bad
// prompt throws huginn::Error before any runs.
std::vector<GenerateResult> generate_speculative(const Generator& generator,
                                                 std::span<const SamplerRequest> requests,
                                                 const SpeculativeOptions& options,
                                                 SamplerStats* stats = nullptr);
std::vector<GenerateResult> generate_diffusion(const Generator& generator,
                                               std::span<const SamplerRequest> requests,
                                               const DiffusionOptions& options,
                                               SamplerStats* stats = nullptr);

// One prompt's generation on `ctx` (fresh) by the decoder named `decode`: sequential,
// wavefront, speculative or diffusion, with that decoder's options, for callers that pick one by
// name (eval, bench). What it shared and drafted is added to *stats when given (wavefront's core
// passes and rows, its drafts as verified / accepted; sequential adds nothing). Throws
// huginn::Error on another name.
GenerateResult generate_decoded(const Generator& generator, GenerationContext& ctx,
                                std::span<const int32_t> prompt, const std::string& decode,
                                const WavefrontOptions& wavefront,
                                const SpeculativeOptions& speculative,
                                const DiffusionOptions& diffusion, SamplerStats* stats = nullptr);

}  // namespace huginn
