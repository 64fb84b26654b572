// AdamW, global-norm clipping and learning-rate schedules. P = elements of one parameter.
#include <algorithm>
#include <cmath>
#include <numbers>

#include "huginn/comm.h"
#include "huginn/error.h"
#include "huginn/train.h"

namespace huginn {

int64_t flat_size(const std::vector<NamedParam>& params) {
  int64_t n = 0;
  for (const auto& p : params) n += p.value.numel();
  return n;
}

std::vector<FlatPiece> flat_pieces(const std::vector<NamedParam>& params, int64_t lo, int64_t hi) {
  std::vector<FlatPiece> out;
  int64_t off = 0;
  for (size_t i = 0; i < params.size() && off < hi; ++i) {
    const int64_t n = params[i].value.numel();
    const int64_t b = std::max(lo, off), e = std::min(hi, off + n);
    if (b < e) out.push_back({i, b - off, e - off, b - lo});
    off += n;
  }
  return out;
}

Tensor piece_view(const Tensor& t, const FlatPiece& piece) {
  if (piece.begin == 0 && piece.end == t.numel()) return t;
  return t.reshape({1, t.numel()}).cols(piece.begin, piece.end);
}

AdamW::AdamW(std::vector<NamedParam> params, AdamWOptions options, Backend& backend, int64_t begin,
             int64_t end)
    : params_(std::move(params)), opt_(options), be_(backend) {
  for (const auto& p : params_)
    HUGINN_ASSERT(
        p.value.is_contiguous() && p.grad.is_contiguous() && p.value.numel() == p.grad.numel(),
        "AdamW needs contiguous parameters and matching gradients");
  const int64_t total = flat_size(params_);
  begin_ = begin;
  end_ = end < 0 ? total : end;
  HUGINN_ASSERT(0 <= begin_ && begin_ <= end_ && end_ <= total, "AdamW: slice out of range");
  pieces_ = flat_pieces(params_, begin_, end_);
  for (const FlatPiece& pc : pieces_) {
    // A whole parameter's moments keep its shape (as before sharding); a part is [1, n].
    const Tensor& w = params_[pc.param].value;
    const bool whole = pc.begin == 0 && pc.end == w.numel();
    m_.push_back(whole ? be_.alloc({w.numel()}).reshape(w.shape())
                       : be_.alloc({1, pc.end - pc.begin}));
    v_.push_back(whole ? be_.alloc({w.numel()}).reshape(w.shape())
                       : be_.alloc({1, pc.end - pc.begin}));
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
  for (size_t i = 0; i < pieces_.size(); ++i) {
    NamedParam& p = params_[pieces_[i].param];
    s.decay = opt_.weight_decay != 0.0 && (p.decay || opt_.decay_all);
    Tensor w = piece_view(p.value, pieces_[i]);
    be_.adamw_step(w, piece_view(p.grad, pieces_[i]), m_[i], v_[i], s);
  }
}

int64_t AdamW::state_bytes() const {
  int64_t n = 0;
  for (size_t i = 0; i < m_.size(); ++i) n += static_cast<int64_t>(m_[i].nbytes() + v_[i].nbytes());
  return n;
}

namespace {
Tensor host_copy(Backend& be, const Tensor& t) {
  Tensor h = Tensor::empty(t.shape());
  be.download(t, h.f32());
  return h;
}
}  // namespace

std::vector<std::pair<std::string, Tensor>> AdamW::state() const {
  HUGINN_ASSERT(begin_ == 0 && end_ == flat_size(params_) && pieces_.size() == params_.size(),
                "AdamW::state of a sharded optimizer: gather the slices (src/train/zero.h)");
  std::vector<std::pair<std::string, Tensor>> out;
  for (size_t i = 0; i < params_.size(); ++i) {
    out.emplace_back("adam.m." + params_[i].name, host_copy(be_, m_[i]));
    out.emplace_back("adam.v." + params_[i].name, host_copy(be_, v_[i]));
  }
  return out;
}

std::vector<float> AdamW::slice_state(bool second) const {
  std::vector<float> out(static_cast<size_t>(end_ - begin_));
  for (size_t i = 0; i < pieces_.size(); ++i)
    be_.download(second ? v_[i] : m_[i], out.data() + pieces_[i].at);
  return out;
}

void AdamW::set_state(const std::map<std::string, Tensor>& state, int64_t t,
                      const std::string& source) {
  for (size_t i = 0; i < params_.size(); ++i) {
    const Tensor& w = params_[i].value;
    for (int which = 0; which < 2; ++which) {
      const std::string key = (which == 0 ? "adam.m." : "adam.v.") + params_[i].name;
      auto it = state.find(key);
      if (it == state.end()) throw Error(source + ": missing optimizer tensor '" + key + "'");
      if (!std::ranges::equal(it->second.shape(), w.shape()))
        throw Error(source + ": optimizer tensor '" + key + "' has shape " +
                    it->second.shape_str() + ", expected " + w.shape_str());
    }
  }
  if (state.size() != 2 * params_.size())
    throw Error(source + ": " + std::to_string(state.size()) + " optimizer tensors, expected " +
                std::to_string(2 * params_.size()) + " (a different model?)");
  for (size_t i = 0; i < pieces_.size(); ++i) {
    const FlatPiece& pc = pieces_[i];
    for (int which = 0; which < 2; ++which) {
      const Tensor& host = state.at((which == 0 ? "adam.m." : "adam.v.") + params_[pc.param].name);
      // This slice's part of the whole tensor, as one row: a single copy.
      const Tensor part = host.reshape({1, host.numel()}).cols(pc.begin, pc.end);
      Tensor& dst = which == 0 ? m_[i] : v_[i];
      Tensor flat = dst.reshape({1, dst.numel()});
      be_.copy(be_.upload(part), flat);
    }
  }
  t_ = t;
}

double clip_grad_norm(Backend& be, const std::vector<NamedParam>& params, double max_norm) {
  std::vector<Tensor> grads;
  for (const auto& p : params) grads.push_back(p.grad);
  return clip_grad_norm(be, grads, max_norm, nullptr);
}

double clip_grad_norm(Backend& be, std::span<const Tensor> grads, double max_norm,
                      Communicator* sum_over) {
  double sq = 0.0;
  for (const Tensor& g : grads) sq = be.sum_squares(g, sq);
  if (sum_over) sum_over->all_reduce_sum(std::span<double>(&sq, 1));
  const double norm = std::sqrt(sq);
  if (!std::isfinite(norm) || max_norm <= 0.0 || norm <= max_norm) return norm;
  const float scale = static_cast<float>(max_norm / (norm + 1e-6));
  for (const Tensor& g : grads) {
    Tensor t = g;
    be.scale(t, scale);
  }
  return norm;
}

double Schedule::at(int64_t s) const {
  if (warmup > 0 && s < warmup)
    return lr * static_cast<double>(s + 1) / static_cast<double>(warmup);
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
