// The decoders by name (huginn/samplers.h, generate_decoded): one place that maps
// sequential / wavefront / speculative / diffusion to their calls and their statistics.
#include "huginn/error.h"
#include "huginn/samplers.h"
#include "huginn/wavefront.h"

namespace huginn {

SamplerStats& SamplerStats::operator+=(const SamplerStats& o) {
  core_passes += o.core_passes;
  core_rows += o.core_rows;
  rounds += o.rounds;
  drafted += o.drafted;
  accepted += o.accepted;
  standing_waves += o.standing_waves;
  tokens += o.tokens;
  return *this;
}

GenerateResult generate_decoded(const Generator& generator, GenerationContext& ctx,
                                std::span<const int32_t> prompt, const std::string& decode,
                                const WavefrontOptions& wavefront,
                                const SpeculativeOptions& speculative,
                                const DiffusionOptions& diffusion, SamplerStats* stats) {
  if (decode == "sequential") return generator.generate(ctx, prompt);
  SamplerStats st;
  GenerateResult r;
  if (decode == "wavefront") {
    WavefrontStats w;
    r = generate_wavefront(generator, ctx, prompt, wavefront, {}, nullptr, &w);
    st.core_passes = w.core_passes;
    st.core_rows = w.core_rows;
    st.drafted = w.accepted + w.rejected;
    st.accepted = w.accepted;
    st.tokens = w.tokens;
  } else {
    const SamplerRequest req{&ctx, prompt, nullptr};
    const std::span<const SamplerRequest> one(&req, 1);
    if (decode == "speculative") r = generate_speculative(generator, one, speculative, &st)[0];
    else if (decode == "diffusion") r = generate_diffusion(generator, one, diffusion, &st)[0];
    else
      throw Error("--decode must be sequential, wavefront, speculative or diffusion, got '" +
                  decode + "'");
  }
  if (stats) *stats += st;
  return r;
}

}  // namespace huginn
