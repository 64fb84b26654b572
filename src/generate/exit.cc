// Adaptive-exit policies, each computing its value as the released code does (see exit.h).
// T = tokens of the call, E = n_embd, V = vocabulary. Values are computed in double from the
// float32 logits / states; every golden KL value sits >= 2.7% away from its threshold, far
// beyond the difference this makes.
#include "huginn/exit.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <vector>

#include "huginn/error.h"
#include "huginn/host_math.h"

namespace huginn {

namespace {

struct Named {
  const char* name;
  ExitCriterion c;
};
constexpr Named kNames[] = {
    {"none", ExitCriterion::kNone},
    {"kl", ExitCriterion::kKL},
    {"minp-kl", ExitCriterion::kMinpKL},
    {"entropy-diff", ExitCriterion::kEntropyDiff},
    {"latent-diff", ExitCriterion::kLatentDiff},
    {"cosine", ExitCriterion::kCosine},
    {"argmax-stability", ExitCriterion::kArgmaxStability},
};

std::string known_names() {
  std::string s;
  for (const Named& n : kNames) s += (s.empty() ? "" : ", ") + std::string(n.name);
  return s;
}

class KLPolicy : public ExitPolicy {
 public:
  KLPolicy(double thr, bool minp) : ExitPolicy(thr), minp_(minp) {}
  ExitCriterion criterion() const override {
    return minp_ ? ExitCriterion::kMinpKL : ExitCriterion::kKL;
  }
  bool uses_logits() const override { return true; }
  void begin(std::span<const float>, int64_t, int64_t, int64_t vocab) override {
    prev_.assign(static_cast<size_t>(vocab), std::log(1.0 / double(vocab)));
  }
  double measure(const ExitObservation& o) override {
    log_softmax_f64(o.logits, cur_);
    if (minp_) smooth(cur_);
    const double v = kl_divergence(prev_, cur_);  // F.kl_div(cur, prev, log_target=True).sum()
    prev_.swap(cur_);
    return v;
  }
  bool should_exit(double v) const override { return v < threshold_; }
  std::unique_ptr<ExitPolicy> clone() const override {
    return std::make_unique<KLPolicy>(threshold_, minp_);
  }

 private:
  // p < 0.1 · max p -> 1/V, renormalise, back to log space.
  static void smooth(std::vector<double>& lp) {
    const double V = static_cast<double>(lp.size());
    double mx = 0.0;
    for (double v : lp) mx = std::max(mx, std::exp(v));
    double sum = 0.0;
    for (double& v : lp) {
      double p = std::exp(v);
      if (p < 0.1 * mx) p = 1.0 / V;
      v = p;
      sum += p;
    }
    for (double& v : lp) v = std::log(v / sum);
  }
  bool minp_;
  std::vector<double> prev_, cur_;
};

class EntropyDiffPolicy : public ExitPolicy {
 public:
  explicit EntropyDiffPolicy(double thr) : ExitPolicy(thr) {}
  ExitCriterion criterion() const override { return ExitCriterion::kEntropyDiff; }
  bool uses_logits() const override { return true; }
  void begin(std::span<const float>, int64_t, int64_t, int64_t) override { prev_ = 100.0; }
  double measure(const ExitObservation& o) override {
    log_softmax_f64(o.logits, lp_);
    double h = 0.0;
    for (double v : lp_) {
      const double p = std::exp(v);
      h -= p * std::log(p + 1e-10);
    }
    const double d = std::fabs(h - prev_);
    prev_ = h;
    return d;
  }
  bool should_exit(double v) const override { return v < threshold_; }
  std::unique_ptr<ExitPolicy> clone() const override {
    return std::make_unique<EntropyDiffPolicy>(threshold_);
  }

 private:
  double prev_ = 100.0;
  std::vector<double> lp_;
};

class ArgmaxStabilityPolicy : public ExitPolicy {
 public:
  explicit ArgmaxStabilityPolicy(double thr) : ExitPolicy(thr) {}
  ExitCriterion criterion() const override { return ExitCriterion::kArgmaxStability; }
  bool uses_logits() const override { return true; }
  void begin(std::span<const float>, int64_t, int64_t, int64_t) override {
    prev_ = -1;
    stable_ = 0;
  }
  double measure(const ExitObservation& o) override {
    int64_t best = 0;  // torch.argmax: the first maximum
    for (size_t i = 1; i < o.logits.size(); ++i)
      if (o.logits[i] > o.logits[static_cast<size_t>(best)]) best = static_cast<int64_t>(i);
    stable_ = best == prev_ ? stable_ + 1 : 0;
    prev_ = best;
    return static_cast<double>(stable_);
  }
  bool should_exit(double v) const override { return v >= threshold_; }
  std::unique_ptr<ExitPolicy> clone() const override {
    return std::make_unique<ArgmaxStabilityPolicy>(threshold_);
  }

 private:
  int64_t prev_ = -1;
  int stable_ = 0;
};

// latent-diff and cosine: compare the state with the previous recurrence's, per position, then
// average over positions.
class LatentPolicy : public ExitPolicy {
 public:
  LatentPolicy(double thr, bool cosine) : ExitPolicy(thr), cosine_(cosine) {}
  ExitCriterion criterion() const override {
    return cosine_ ? ExitCriterion::kCosine : ExitCriterion::kLatentDiff;
  }
  bool uses_logits() const override { return false; }
  bool uses_state() const override { return true; }
  void begin(std::span<const float> init, int64_t, int64_t, int64_t) override {
    prev_.assign(init.begin(), init.end());
  }
  double measure(const ExitObservation& o) override {
    const int64_t T = o.rows, E = o.width;
    HUGINN_ASSERT(static_cast<int64_t>(o.state.size()) == T * E && prev_.size() == o.state.size(),
                  "latent exit policy: state size changed within a call");
    double total = 0.0;
    for (int64_t t = 0; t < T; ++t) {
      const float* s = o.state.data() + t * E;
      const float* p = prev_.data() + t * E;
      double ss = 0.0, pp = 0.0, sp = 0.0, dd = 0.0;
      for (int64_t i = 0; i < E; ++i) {
        ss += double(s[i]) * s[i];
        pp += double(p[i]) * p[i];
        sp += double(s[i]) * p[i];
        dd += (double(s[i]) - p[i]) * (double(s[i]) - p[i]);
      }
      total += cosine_ ? sp / std::sqrt(ss) / std::sqrt(pp) : std::sqrt(dd) / std::sqrt(ss);
    }
    prev_.assign(o.state.begin(), o.state.end());
    const double mean = total / static_cast<double>(T);
    return cosine_ ? 1.0 - mean : mean;
  }
  bool should_exit(double v) const override { return v < threshold_; }  // NaN never exits
  std::unique_ptr<ExitPolicy> clone() const override {
    return std::make_unique<LatentPolicy>(threshold_, cosine_);
  }

 private:
  bool cosine_;
  std::vector<float> prev_;
};

}  // namespace

const char* exit_criterion_name(ExitCriterion c) {
  for (const Named& n : kNames)
    if (n.c == c) return n.name;
  return "?";
}

double default_exit_threshold(ExitCriterion c) {
  switch (c) {
    case ExitCriterion::kKL: return 1e-3;
    case ExitCriterion::kMinpKL: return 1e-5;
    case ExitCriterion::kEntropyDiff: return 1e-3;
    case ExitCriterion::kLatentDiff: return 0.03;
    case ExitCriterion::kCosine: return 1e-3;
    case ExitCriterion::kArgmaxStability: return 5;
    case ExitCriterion::kNone: return 0.0;
  }
  return 0.0;
}

ExitSpec ExitSpec::parse(const std::string& text) {
  const size_t colon = text.find(':');
  const std::string name = text.substr(0, colon);
  ExitSpec spec;
  bool found = false;
  for (const Named& n : kNames)
    if (name == n.name) {
      spec.criterion = n.c;
      found = true;
    }
  if (!found)
    throw Error("exit criterion: unknown criterion '" + name + "' (expected one of " +
                known_names() + ", optionally followed by :THRESHOLD)");
  spec.threshold = default_exit_threshold(spec.criterion);
  if (colon == std::string::npos) return spec;
  const std::string thr = text.substr(colon + 1);
  if (thr == "auto") return spec;
  if (spec.criterion == ExitCriterion::kNone)
    throw Error("exit criterion 'none' takes no threshold, got '" + thr + "'");
  double v = 0.0;
  size_t used = 0;
  try {
    v = std::stod(thr, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (thr.empty() || used != thr.size() || !std::isfinite(v) || v < 0.0)
    throw Error("exit threshold for '" + name + "': '" + thr +
                "' is not a finite non-negative number");
  if (spec.criterion == ExitCriterion::kArgmaxStability && v != std::floor(v))
    throw Error("exit threshold for 'argmax-stability': '" + thr +
                "' is not a whole number of checks");
  spec.threshold = v;
  return spec;
}

std::string ExitSpec::to_string() const {
  if (criterion == ExitCriterion::kNone) return "none";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%s:%g", exit_criterion_name(criterion), threshold);
  return buf;
}

std::unique_ptr<ExitPolicy> make_exit_policy(const ExitSpec& s) {
  switch (s.criterion) {
    case ExitCriterion::kNone: return nullptr;
    case ExitCriterion::kKL: return std::make_unique<KLPolicy>(s.threshold, false);
    case ExitCriterion::kMinpKL: return std::make_unique<KLPolicy>(s.threshold, true);
    case ExitCriterion::kEntropyDiff: return std::make_unique<EntropyDiffPolicy>(s.threshold);
    case ExitCriterion::kLatentDiff: return std::make_unique<LatentPolicy>(s.threshold, false);
    case ExitCriterion::kCosine: return std::make_unique<LatentPolicy>(s.threshold, true);
    case ExitCriterion::kArgmaxStability: return std::make_unique<ArgmaxStabilityPolicy>(s.threshold);
  }
  return nullptr;
}

}  // namespace huginn
