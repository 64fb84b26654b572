// Token sampling as a chain of small samplers (llama.cpp style: apply / accept / reset; a chain
// is itself a sampler). V = vocabulary.
//
// The default chain follows the released Huginn sampler (`_sample_next_token` of
// raven_modeling_minimal.py), in its order and with its semantics:
//   repetition penalty (on logits, HF rule: logit > 0 ? logit / penalty : logit * penalty, over
//   every token seen, prompt included) -> temperature -> softmax -> top-k (keeps every
//   probability >= the k-th largest, ties included) -> top-p (sorted by probability, drops each
//   token whose cumulative probability, itself included, exceeds p; the top token always stays)
//   -> min-p (drops p < min_p · max p) -> draw from the survivors renormalised.
// Filters do not renormalise between themselves (as the reference); the final draw does.
// Greedy is argmax over the logits, a tie going to the lowest id.
#pragma once

#include <cstdint>
#include <memory>
#include <random>
#include <span>
#include <string>
#include <vector>

namespace huginn {

struct Candidate {
  int32_t id;
  float logit;
  float p;  // valid when Candidates::has_probs
};

// The working set a chain transforms: all V tokens at first; filters remove entries, the last
// sampler sets `selected`.
struct Candidates {
  std::vector<Candidate> data;
  bool has_probs = false;  // p = softmax of the logits as they were when it was computed
  int selected = -1;       // index into data

  void reset(std::span<const float> logits);
  // p = softmax(logit) over the current entries (double accumulation).
  void softmax();
  void ensure_probs() {
    if (!has_probs) softmax();
  }
  int32_t selected_id() const { return selected < 0 ? -1 : data[static_cast<size_t>(selected)].id; }
};

class Sampler {
 public:
  virtual ~Sampler() = default;
  virtual std::string name() const = 0;
  virtual void apply(Candidates& c) = 0;
  // The token chosen this step (the prompt's tokens are accepted too, for penalties).
  virtual void accept(int32_t token) {}
  // Back to the state after construction (history cleared, RNG reseeded).
  virtual void reset() {}
  // An independent copy in its construction state (one per sequence).
  virtual std::unique_ptr<Sampler> clone() const = 0;
};

std::unique_ptr<Sampler> make_greedy_sampler();
std::unique_ptr<Sampler> make_temperature_sampler(float temperature);  // > 0
std::unique_ptr<Sampler> make_top_k_sampler(int k);                    // k >= 1
std::unique_ptr<Sampler> make_top_p_sampler(float p);                  // (0, 1]
std::unique_ptr<Sampler> make_min_p_sampler(float p);                  // [0, 1]
// penalty > 0; last_n = 0: the whole history (the reference), else the last n tokens.
std::unique_ptr<Sampler> make_repetition_penalty_sampler(float penalty, int last_n = 0);
// Draws from the current probabilities renormalised over the survivors (a seeded 64-bit
// Mersenne Twister, the same stream on every platform).
std::unique_ptr<Sampler> make_dist_sampler(uint64_t seed);

class SamplerChain : public Sampler {
 public:
  SamplerChain() = default;
  void add(std::unique_ptr<Sampler> s) { samplers_.push_back(std::move(s)); }
  size_t size() const { return samplers_.size(); }
  std::string name() const override;  // "penalty -> temperature -> ... -> dist"
  void apply(Candidates& c) override;
  void accept(int32_t token) override;
  void reset() override;
  std::unique_ptr<Sampler> clone() const override;
  // Runs the chain on logits [V] and returns the selected id (the chain must end in a selector).
  int32_t sample(std::span<const float> logits);

 private:
  std::vector<std::unique_ptr<Sampler>> samplers_;
  Candidates work_;
};

struct SamplingParams {
  bool greedy = true;         // argmax; the other fields except the penalty are then unused
  float temperature = 1.0f;   // <= 0 means greedy
  int top_k = 0;              // 0 = off
  float top_p = 1.0f;         // 1 = off
  float min_p = 0.0f;         // 0 = off
  float repetition_penalty = 1.0f;  // 1 = off
  int penalty_last_n = 0;     // 0 = whole history
  uint64_t seed = 0;

  // Throws huginn::Error naming the field for values out of range.
  void validate() const;
};

// The reference's chain for these parameters.
std::unique_ptr<SamplerChain> make_sampler_chain(const SamplingParams& params);

}  // namespace huginn
