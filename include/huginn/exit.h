// Adaptive exit from the recurrence: a pluggable policy consulted after core recurrences. Each
// criterion is computed as the released code computes it (raven_modeling_minimal.py,
// `generate_with_adaptive_compute` and its exit evaluators). T = tokens of the call, E = n_embd,
// V = vocabulary; "the state" is the raw core state s_t (before ln_f).
//
//   criterion         value after recurrence t                                  exits when  auto
//   kl                KL(prev || cur) = Σ_v exp(prev_v)(prev_v − cur_v), where      v < thr     1e-3
//                     cur = log_softmax(last position's logits) and prev starts
//                     uniform (log 1/V); then prev = cur (golden README item 15)
//   minp-kl           the same KL on min-p-smoothed distributions: p = softmax,     v < thr     1e-5
//                     every p < 0.1 · max p is replaced by 1/V, renormalised, log
//   entropy-diff      |H(cur) − H(prev)|, H = −Σ p log(p + 1e-10) of the last       v < thr     1e-3
//                     position, H(prev) starts at 100
//   latent-diff       mean over the T positions of ‖s_t − s_{t−1}‖ / ‖s_t‖          v < thr     0.03
//                     (s_0 = the initial state); needs no logits
//   cosine            1 − mean over positions of cos(s_t, s_{t−1}); needs no       v < thr     1e-3
//                     logits (a zero s_0 gives NaN at the first check: no exit)
//   argmax-stability  consecutive checks whose last-position argmax equals the     v >= thr    5
//                     previous check's (0 at the first check)
//   none              never exits (runs the maximum)                                 —          —
//
// Policies that use logits make the generator run the coda at every check (it writes the coda
// KV entries of the call's positions, overwriting the previous check's); the others decode
// only once, at the exit or at the limit. A prompt exits as a whole: logit criteria look at its
// last position, latent criteria average over its positions (as the reference does).
//
// The prompt call checks exits too, as in the golden reference (gen_klexit_*: call 0 exits at
// 5 of 16 steps). Later revisions of the released file skip the checks in the prefill call
// (`if _ > 0`); that variant is not implemented. Default thresholds are those of the released
// exit evaluators (an older inline version used 5e-4 for kl and 1e-6 for minp-kl).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>

namespace huginn {

enum class ExitCriterion { kNone, kKL, kMinpKL, kEntropyDiff, kLatentDiff, kCosine, kArgmaxStability };

struct ExitSpec {
  ExitCriterion criterion = ExitCriterion::kNone;
  double threshold = 0.0;  // argmax-stability: a step count

  // "none", "kl", "kl:1e-3", "argmax-stability:5", "latent-diff:auto". A missing threshold or
  // "auto" takes the reference's default. Throws huginn::Error for an unknown criterion or a
  // malformed / non-finite / negative threshold (argmax-stability: a non-negative integer).
  static ExitSpec parse(const std::string& text);
  std::string to_string() const;  // "kl:0.001"
};

const char* exit_criterion_name(ExitCriterion c);
double default_exit_threshold(ExitCriterion c);

// What a policy sees after a recurrence. Spans are host memory.
struct ExitObservation {
  int step = 0;                   // recurrences run so far in this call (1-based)
  std::span<const float> logits;  // last position's logits [V]; empty unless uses_logits()
  std::span<const float> state;   // raw state [T·E] row-major; empty unless uses_state()
  int64_t rows = 0, width = 0;    // T, E
};

class ExitPolicy {
 public:
  virtual ~ExitPolicy() = default;
  virtual ExitCriterion criterion() const = 0;
  virtual bool uses_logits() const = 0;
  virtual bool uses_state() const { return false; }
  // Before the first recurrence of a call: `initial_state` [T·E] (host; only read by state
  // policies), V = vocabulary.
  virtual void begin(std::span<const float> initial_state, int64_t rows, int64_t width,
                     int64_t vocab) = 0;
  // The exit value after this recurrence; updates the policy's memory (prev = cur).
  virtual double measure(const ExitObservation& obs) = 0;
  virtual bool should_exit(double value) const = 0;
  double threshold() const { return threshold_; }
  // A fresh copy (one per sequence: policies hold per-call memory).
  virtual std::unique_ptr<ExitPolicy> clone() const = 0;

 protected:
  explicit ExitPolicy(double threshold) : threshold_(threshold) {}
  double threshold_;
};

// nullptr for kNone.
std::unique_ptr<ExitPolicy> make_exit_policy(const ExitSpec& spec);

}  // namespace huginn
