// The sampler chain: each sampler narrows or reweights the candidate set, the last one selects.
// V = vocabulary.
#include "huginn/sampler.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <deque>
#include <unordered_map>

#include "huginn/error.h"

namespace huginn {

void Candidates::reset(std::span<const float> logits) {
  data.resize(logits.size());
  for (size_t i = 0; i < logits.size(); ++i)
    data[i] = Candidate{static_cast<int32_t>(i), logits[i], 0.0f};
  has_probs = false;
  selected = -1;
}

void Candidates::softmax() {
  if (data.empty()) return;
  float mx = -INFINITY;
  for (const Candidate& c : data) mx = std::max(mx, c.logit);
  double sum = 0.0;
  for (const Candidate& c : data) sum += std::exp(double(c.logit) - mx);
  for (Candidate& c : data) c.p = static_cast<float>(std::exp(double(c.logit) - mx) / sum);
  has_probs = true;
}

namespace {

bool by_prob_desc(const Candidate& a, const Candidate& b) {
  return a.p != b.p ? a.p > b.p : a.id < b.id;
}

class Greedy : public Sampler {
 public:
  std::string name() const override { return "greedy"; }
  void apply(Candidates& c) override {
    int best = -1;
    for (size_t i = 0; i < c.data.size(); ++i)  // strict '>' keeps the lowest id on a tie
      if (best < 0 || c.data[i].logit > c.data[static_cast<size_t>(best)].logit ||
          (c.data[i].logit == c.data[static_cast<size_t>(best)].logit &&
           c.data[i].id < c.data[static_cast<size_t>(best)].id))
        best = static_cast<int>(i);
    c.selected = best;
  }
  std::unique_ptr<Sampler> clone() const override { return std::make_unique<Greedy>(); }
};

class Temperature : public Sampler {
 public:
  explicit Temperature(float t) : t_(t) {}
  std::string name() const override { return "temperature"; }
  void apply(Candidates& c) override {
    for (Candidate& x : c.data) x.logit /= t_;
    c.has_probs = false;
  }
  std::unique_ptr<Sampler> clone() const override { return std::make_unique<Temperature>(t_); }

 private:
  float t_;
};

class TopK : public Sampler {
 public:
  explicit TopK(int k) : k_(k) {}
  std::string name() const override { return "top-k"; }
  void apply(Candidates& c) override {
    if (k_ >= static_cast<int>(c.data.size())) return;
    c.ensure_probs();
    std::vector<float> ps(c.data.size());
    for (size_t i = 0; i < ps.size(); ++i) ps[i] = c.data[i].p;
    std::nth_element(ps.begin(), ps.begin() + (k_ - 1), ps.end(), std::greater<float>());
    const float kth = ps[static_cast<size_t>(k_ - 1)];
    std::erase_if(c.data, [&](const Candidate& x) { return x.p < kth; });  // ties at kth stay
  }
  std::unique_ptr<Sampler> clone() const override { return std::make_unique<TopK>(k_); }

 private:
  int k_;
};

class TopP : public Sampler {
 public:
  explicit TopP(float p) : p_(p) {}
  std::string name() const override { return "top-p"; }
  void apply(Candidates& c) override {
    if (p_ >= 1.0f || c.data.empty()) return;
    c.ensure_probs();
    std::stable_sort(c.data.begin(), c.data.end(), by_prob_desc);
    float cum = 0.0f;  // float32 cumulative sum, as torch.cumsum on float32 probabilities
    size_t keep = 0;
    for (size_t i = 0; i < c.data.size(); ++i) {
      cum += c.data[i].p;
      if (i == 0 || cum <= p_) keep = i + 1;
      else break;
    }
    c.data.resize(keep);
  }
  std::unique_ptr<Sampler> clone() const override { return std::make_unique<TopP>(p_); }

 private:
  float p_;
};

class MinP : public Sampler {
 public:
  explicit MinP(float p) : p_(p) {}
  std::string name() const override { return "min-p"; }
  void apply(Candidates& c) override {
    if (p_ <= 0.0f || c.data.empty()) return;
    c.ensure_probs();
    float mx = 0.0f;
    for (const Candidate& x : c.data) mx = std::max(mx, x.p);
    const float cut = p_ * mx;
    std::erase_if(c.data, [&](const Candidate& x) { return x.p < cut; });
  }
  std::unique_ptr<Sampler> clone() const override { return std::make_unique<MinP>(p_); }

 private:
  float p_;
};

class RepetitionPenalty : public Sampler {
 public:
  RepetitionPenalty(float penalty, int last_n) : penalty_(penalty), last_n_(last_n) {}
  std::string name() const override { return "repetition-penalty"; }
  void apply(Candidates& c) override {
    if (penalty_ == 1.0f || counts_.empty()) return;
    for (Candidate& x : c.data) {
      if (!counts_.count(x.id)) continue;
      x.logit = x.logit > 0 ? x.logit / penalty_ : x.logit * penalty_;  // once per distinct token
    }
    c.has_probs = false;
  }
  void accept(int32_t token) override {
    ++counts_[token];
    if (last_n_ <= 0) return;
    window_.push_back(token);
    if (static_cast<int>(window_.size()) > last_n_) {
      const int32_t old = window_.front();
      window_.pop_front();
      if (--counts_[old] == 0) counts_.erase(old);
    }
  }
  void reset() override {
    counts_.clear();
    window_.clear();
  }
  std::unique_ptr<Sampler> clone() const override {
    return std::make_unique<RepetitionPenalty>(penalty_, last_n_);
  }

 private:
  float penalty_;
  int last_n_;
  std::unordered_map<int32_t, int> counts_;
  std::deque<int32_t> window_;
};

class Dist : public Sampler {
 public:
  explicit Dist(uint64_t seed) : seed_(seed), rng_(seed) {}
  std::string name() const override { return "dist"; }
  void apply(Candidates& c) override {
    HUGINN_ASSERT(!c.data.empty(), "dist sampler: no candidates left");
    c.ensure_probs();
    double sum = 0.0;
    for (const Candidate& x : c.data) sum += x.p;
    // 53 random bits -> [0, 1), then walk the cumulative distribution.
    const double u = static_cast<double>(rng_() >> 11) * 0x1.0p-53 * sum;
    double cum = 0.0;
    c.selected = static_cast<int>(c.data.size()) - 1;
    for (size_t i = 0; i < c.data.size(); ++i) {
      cum += c.data[i].p;
      if (u < cum && c.data[i].p > 0.0f) {
        c.selected = static_cast<int>(i);
        break;
      }
    }
  }
  void reset() override { rng_.seed(seed_); }
  std::unique_ptr<Sampler> clone() const override { return std::make_unique<Dist>(seed_); }

 private:
  uint64_t seed_;
  std::mt19937_64 rng_;
};

}  // namespace

std::unique_ptr<Sampler> make_greedy_sampler() { return std::make_unique<Greedy>(); }
// Below kMinTemperature, logits / t overflows to inf for ordinary logits and softmax turns the inf
// into NaN (1e-40 always sampled one token); above kMaxTemperature the distribution is uniform to
// float precision. Argmax is asked for with greedy, not with a vanishing temperature.
constexpr float kMinTemperature = 1e-5f, kMaxTemperature = 1e4f;
constexpr float kMinPenalty = 1e-3f, kMaxPenalty = 1e2f;  // the server's range too

static std::string num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

std::unique_ptr<Sampler> make_temperature_sampler(float t) {
  if (!(t >= kMinTemperature && t <= kMaxTemperature))
    throw Error("temperature must be in [" + num(kMinTemperature) + ", " + num(kMaxTemperature) +
                "] (use greedy decoding for argmax), got " + num(t));
  return std::make_unique<Temperature>(t);
}
std::unique_ptr<Sampler> make_top_k_sampler(int k) {
  if (k < 1) throw Error("top-k must be >= 1, got " + std::to_string(k));
  return std::make_unique<TopK>(k);
}
std::unique_ptr<Sampler> make_top_p_sampler(float p) {
  if (!(p > 0.0f && p <= 1.0f)) throw Error("top-p must be in (0, 1], got " + num(p));
  return std::make_unique<TopP>(p);
}
std::unique_ptr<Sampler> make_min_p_sampler(float p) {
  if (!(p >= 0.0f && p <= 1.0f)) throw Error("min-p must be in [0, 1], got " + num(p));
  return std::make_unique<MinP>(p);
}
std::unique_ptr<Sampler> make_repetition_penalty_sampler(float penalty, int last_n) {
  // A penalty near 0 (or huge) divides or multiplies logits into inf, as a tiny temperature does.
  if (!(penalty >= kMinPenalty && penalty <= kMaxPenalty))
    throw Error("repetition penalty must be in [" + num(kMinPenalty) + ", " + num(kMaxPenalty) +
                "], got " + num(penalty));
  if (last_n < 0) throw Error("penalty window must be >= 0, got " + std::to_string(last_n));
  return std::make_unique<RepetitionPenalty>(penalty, last_n);
}
std::unique_ptr<Sampler> make_dist_sampler(uint64_t seed) { return std::make_unique<Dist>(seed); }

std::string SamplerChain::name() const {
  std::string n;
  for (const auto& s : samplers_) n += (n.empty() ? "" : " -> ") + s->name();
  return n;
}

void SamplerChain::apply(Candidates& c) {
  for (auto& s : samplers_) s->apply(c);
}

void SamplerChain::accept(int32_t token) {
  for (auto& s : samplers_) s->accept(token);
}

void SamplerChain::reset() {
  for (auto& s : samplers_) s->reset();
}

std::unique_ptr<Sampler> SamplerChain::clone() const {
  auto c = std::make_unique<SamplerChain>();
  for (const auto& s : samplers_) c->add(s->clone());
  return c;
}

int32_t SamplerChain::sample(std::span<const float> logits) {
  work_.reset(logits);
  apply(work_);
  HUGINN_ASSERT(work_.selected >= 0, "sampler chain did not select a token (no greedy/dist last)");
  return work_.selected_id();
}

void SamplingParams::validate() const {
  if (!(repetition_penalty >= kMinPenalty && repetition_penalty <= kMaxPenalty))
    throw Error("repetition penalty must be in [" + num(kMinPenalty) + ", " + num(kMaxPenalty) +
                "] (1 = off), got " + num(repetition_penalty));
  if (penalty_last_n < 0) throw Error("penalty window must be >= 0");
  if (greedy || temperature <= 0.0f) return;
  if (!(temperature >= kMinTemperature && temperature <= kMaxTemperature))
    throw Error("temperature must be in [" + num(kMinTemperature) + ", " + num(kMaxTemperature) +
                "] (or <= 0 / greedy for argmax), got " + num(temperature));
  if (top_k < 0) throw Error("top-k must be >= 0 (0 = off), got " + std::to_string(top_k));
  if (!(top_p > 0.0f && top_p <= 1.0f)) throw Error("top-p must be in (0, 1], got " + num(top_p));
  if (!(min_p >= 0.0f && min_p <= 1.0f)) throw Error("min-p must be in [0, 1], got " + num(min_p));
}

std::unique_ptr<SamplerChain> make_sampler_chain(const SamplingParams& p) {
  p.validate();
  auto chain = std::make_unique<SamplerChain>();
  if (p.repetition_penalty != 1.0f)
    chain->add(make_repetition_penalty_sampler(p.repetition_penalty, p.penalty_last_n));
  if (p.greedy || p.temperature <= 0.0f) {
    chain->add(make_greedy_sampler());
    return chain;
  }
  if (p.temperature != 1.0f) chain->add(make_temperature_sampler(p.temperature));
  if (p.top_k > 0) chain->add(make_top_k_sampler(p.top_k));
  if (p.top_p < 1.0f) chain->add(make_top_p_sampler(p.top_p));
  if (p.min_p > 0.0f) chain->add(make_min_p_sampler(p.min_p));
  chain->add(make_dist_sampler(p.seed));
  return chain;
}

}  // namespace huginn
