// Flags of the speculative and diffusion samplers (huginn/samplers.h), named after the
// reference's arguments, and of wavefront decoding (huginn/wavefront.h), for every command that
// offers --decode.
#pragma once

#include <string>

#include "cli/command.h"
#include "huginn/samplers.h"
#include "huginn/wavefront.h"

namespace huginn::cli {

struct SamplerFlags {
  SpeculativeOptions spec;
  DiffusionOptions diff;
  std::string freeze = "latent-diff";
};

inline void add_sampler_flags(CLI::App* sub, SamplerFlags& f) {
  sub->add_option("--draft-steps", f.spec.draft_steps,
                  "with --decode speculative: recurrences of each draft token (0 = steps/4)");
  sub->add_option("--lookahead-for-draft", f.spec.lookahead_for_draft,
                  "with --decode speculative: drafts per round, verified in one pass (default 8)");
  sub->add_option("--verification-threshold", f.spec.verification_threshold,
                  "with --decode speculative: 1 = a draft must be the verified argmax (output = "
                  "sequential greedy); t in [0, 1): accept when p(draft) >= t * max p");
  sub->add_option("--inner-recurrence", f.diff.inner_recurrence,
                  "with --decode diffusion: core recurrences per diffusion step (default 4)");
  sub->add_option("--headway", f.diff.headway,
                  "with --decode diffusion: new positions per diffusion step (default 1)");
  sub->add_option("--freeze-strategy", f.freeze,
                  "with --decode diffusion: latent-diff (state moved < --exit-t), token-stability "
                  "(token unchanged > steps/inner-recurrence times) or fixed (headway per step)");
  sub->add_option("--exit-t", f.diff.exit_t,
                  "with --freeze-strategy latent-diff: relative state change that freezes (0.03)");
  sub->add_option("--max-wavefront", f.diff.max_wavefront,
                  "with --decode diffusion: positions in the window at most (128; 0 = no limit)");
  sub->add_option("--max-diffusion-steps", f.diff.max_diffusion_steps,
                  "with --decode diffusion: diffusion steps at most (4096)");
  sub->add_option("--ema-embeds", f.diff.ema_embeds,
                  "with --decode diffusion: weight of the previous step's prelude outputs in [0, 1) (0.1)");
  sub->add_option("--state-noise-mixing", f.diff.state_noise_mixing,
                  "with --decode diffusion: noise mixed into the states before each step, in [0, 1] (0.5)");
  sub->add_flag("--dampened-state-mixer,!--no-dampened-state-mixer", f.diff.dampened_state_mixer,
                "with --decode diffusion: noise weight / (1 + recurrences so far) (default on)");
  sub->add_flag("--sqrt-mixer", f.diff.sqrt_mixer,
                "with --decode diffusion: s*sqrt(1-w) + sqrt(w)*noise instead of s*(1-w) + w*noise");
  sub->add_flag("--continuous-compute", f.diff.continuous_compute,
                "with --decode diffusion: new positions start from the window's last states");
  sub->add_flag("--full-prefill,!--no-full-prefill", f.diff.full_prefill,
                "with --decode diffusion: run the prompt once at --steps first (default on)");
}

inline void add_wavefront_flags(CLI::App* sub, WavefrontOptions& w) {
  sub->add_option("--draft-depth", w.draft_depth,
                  "with --decode wavefront: recurrences before a token drafts the next (0 = steps/4)");
  sub->add_option("--lanes", w.max_lanes,
                  "with --decode wavefront: positions in flight at most (default 8)");
}

// The diffusion options with the parsed freeze strategy (throws naming --freeze-strategy).
inline DiffusionOptions diffusion_options(const SamplerFlags& f) {
  DiffusionOptions o = f.diff;
  o.freeze_strategy = DiffusionOptions::parse_freeze(f.freeze);
  return o;
}

}  // namespace huginn::cli
