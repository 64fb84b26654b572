// AdamW, global-norm clipping and learning-rate schedules. P = elements of one parameter.
#include <algorithm>
#include <cmath>
#include <numbers>

#include "huginn/error.h"
#include "huginn/train.h"

namespace huginn {

AdamW::AdamW(std::vector<NamedParam> params, AdamWOptions options, Backend& backend)
    : params_(std::move(params)), opt_(options), be_(backend) {
  for (const auto& p : params_) {
    HUGINN_ASSERT(p.value.is_contiguous() && p.grad.is_contiguous() &&
                      p.value.numel() == p.grad.numel(),
                  "AdamW needs contiguous parameters and matching gradients");
    m_.push_back(be_.alloc({p.value.numel()}).reshape(p.value.shape()));
    v_.push_back(be_.alloc({p.value.numel()}).reshape(p.value.shape()));
  }
}

void AdamW::step(double lr) {
  ++t_;
  const double bc1 = 1.0 - std::pow(opt_.beta1, static_cast<double>(t_));
  const double bc2 = 1.0 - std::pow(opt_.beta2, static_cast<double>(t_));
  AdamWStep s;
  s.beta1 = static_cast<float>(opt_.beta1);
  s.beta2 = static_cast<float>(opt_.beta2);
  s.step_size = static_cast<float>(lr / bc1);
  s.sqrt_bc2 = static_cast<float>(std::sqrt(bc2));
  s.eps = static_cast<float>(opt_.eps);
  s.keep = static_cast<float>(1.0 - lr * opt_.weight_decay);
  for (size_t i = 0; i < params_.size(); ++i) {
    NamedParam& p = params_[i];
    s.decay = opt_.weight_decay != 0.0 && (p.decay || opt_.decay_all);
    be_.adamw_step(p.value, p.grad, m_[i], v_[i], s);
  }
}

namespace {
Tensor host_copy(Backend& be, const Tensor& t) {
  Tensor h = Tensor::empty(t.shape());
  be.download(t, h.f32());
  return h;
}
}  // namespace

std::vector<std::pair<std::string, Tensor>> AdamW::state() const {
  std::vector<std::pair<std::string, Tensor>> out;
  for (size_t i = 0; i < params_.size(); ++i) {
    out.emplace_back("adam.m." + params_[i].name, host_copy(be_, m_[i]));
    out.emplace_back("adam.v." + params_[i].name, host_copy(be_, v_[i]));
  }
  return out;
}

void AdamW::set_state(const std::map<std::string, Tensor>& state, int64_t t,
                      const std::string& source) {
  for (size_t i = 0; i < params_.size(); ++i) {
    for (int which = 0; which < 2; ++which) {
      const std::string key = (which == 0 ? "adam.m." : "adam.v.") + params_[i].name;
      auto it = state.find(key);
      if (it == state.end()) throw Error(source + ": missing optimizer tensor '" + key + "'");
      Tensor& dst = which == 0 ? m_[i] : v_[i];
      if (!std::ranges::equal(it->second.shape(), dst.shape()))
        throw Error(source + ": optimizer tensor '" + key + "' has shape " +
                    it->second.shape_str() + ", expected " + dst.shape_str());
      Tensor flat = dst.reshape({1, dst.numel()});  // one row: a single copy
      be_.copy(be_.upload(it->second.reshape({1, dst.numel()})), flat);
    }
  }
  if (state.size() != 2 * params_.size())
    throw Error(source + ": " + std::to_string(state.size()) + " optimizer tensors, expected " +
                std::to_string(2 * params_.size()) + " (a different model?)");
  t_ = t;
}

double clip_grad_norm(Backend& be, const std::vector<NamedParam>& params, double max_norm) {
  double sq = 0.0;
  for (const auto& p : params) sq = be.sum_squares(p.grad, sq);
  const double norm = std::sqrt(sq);
  if (!std::isfinite(norm) || max_norm <= 0.0 || norm <= max_norm) return norm;
  const float scale = static_cast<float>(max_norm / (norm + 1e-6));
  for (const auto& p : params) {
    Tensor g = p.grad;
    be.scale(g, scale);
  }
  return norm;
}

double Schedule::at(int64_t s) const {
  if (warmup > 0 && s < warmup) return lr * static_cast<double>(s + 1) / static_cast<double>(warmup);
  if (kind == ScheduleKind::kConstant) {
    const int64_t start = total - cooldown;
    if (cooldown <= 0 || s < start) return lr;
    const double p = static_cast<double>(s - start + 1) / static_cast<double>(cooldown);
    return lr + (min_lr - lr) * std::min(1.0, p);
  }
  const int64_t span = total - 1 - warmup;  // steps from the first post-warmup step to the last
  if (span <= 0) return lr;
  const double p = std::min(1.0, static_cast<double>(s - warmup) / static_cast<double>(span));
  if (kind == ScheduleKind::kLinear) return lr + (min_lr - lr) * p;
  return min_lr + 0.5 * (lr - min_lr) * (1.0 + std::cos(std::numbers::pi * p));
}

ScheduleKind Schedule::parse(const std::string& name) {
  if (name == "cosine") return ScheduleKind::kCosine;
  if (name == "linear") return ScheduleKind::kLinear;
  if (name == "constant" || name == "constant-with-cooldown" || name == "wsd")
    return ScheduleKind::kConstant;
  throw Error("schedule '" + name + "': expected cosine, linear or constant (with cooldown)");
}

}  // namespace huginn
