// Per-sequence attention cache with the reference's step indexing and slot sharing.
// E = n_embd; a slot holds rows [S, E] for the S positions written to it, in position order.
#include <algorithm>

#include "huginn/forward.h"

namespace huginn {

KVCache::KVCache(const ModelConfig& config, Backend& backend, Strategy strategy, int k)
    : config_(config), be_(backend), strategy_(strategy), k_(k) {
  if (strategy != Strategy::kFull && k < 1)
    throw Error("cache slots: k must be >= 1 for a compressed cache, got " + std::to_string(k));
}

int KVCache::slot_of(int i) const {
  // The offset 2 is hard-wired in the reference (it is the released model's prelude depth).
  if (strategy_ == Strategy::kFull) return i;
  if (strategy_ == Strategy::kCompressSPrelude) {
    const int p = config_.n_prelude;
    return i < p ? i : (i - p) % k_ + p;
  }
  if (i <= 1) return i;
  if (strategy_ == Strategy::kCompressS) return (i - 2) % k_ + 2;
  return (i - 2) / k_ + 2;
}

// Geometric growth, keeping the first n rows of both.
void reserve_row_pair(Backend& be, Tensor& k, Tensor& v, int64_t n, int64_t need, int64_t E) {
  if (k.defined() && need <= k.dim(0)) return;
  const int64_t cap = std::max<int64_t>({16, 2 * n, need});
  Tensor nk = be.alloc({cap, E}), nv = be.alloc({cap, E});
  if (n > 0) {
    Tensor dk = nk.rows(0, n), dv = nv.rows(0, n);
    be.copy(k.rows(0, n), dk);
    be.copy(v.rows(0, n), dv);
  }
  k = nk;
  v = nv;
}

KVCache::Slot& KVCache::slot(int step_index) {
  const int id = slot_of(step_index);
  for (auto& [sid, s] : slots_)
    if (sid == id) return s;
  slots_.emplace_back(id, Slot{});
  return slots_.back().second;
}

void KVCache::update(int step_index, std::span<const int32_t> positions, const Tensor& k,
                     const Tensor& v, Tensor* k_out, Tensor* v_out) {
  const int64_t E = config_.n_embd;
  Slot& s = slot(step_index);
  // The usual case (a prompt, then one token at a time): increasing positions after the last
  // one held, appended with one copy of all T rows.
  bool append = true;
  for (size_t t = 0; t < positions.size() && append; ++t)
    append = t > 0 ? positions[t] > positions[t - 1] : s.pos.empty() || positions[0] > s.pos.back();
  if (append && !positions.empty()) {
    const int64_t n = static_cast<int64_t>(s.pos.size()), T = static_cast<int64_t>(positions.size());
    reserve_row_pair(be_, s.k, s.v, n, n + T, E);
    Tensor dk = s.k.rows(n, n + T), dv = s.v.rows(n, n + T);
    be_.copy(k, dk);
    be_.copy(v, dv);
    s.pos.insert(s.pos.end(), positions.begin(), positions.end());
  }
  // Otherwise row by row: overwrite a position held, or insert it in order.
  for (size_t t = 0; !append && t < positions.size(); ++t) {
    const int32_t p = positions[t];
    auto it = std::lower_bound(s.pos.begin(), s.pos.end(), p);
    int64_t row = it - s.pos.begin();
    if (it == s.pos.end() || *it != p) {
      const int64_t n = static_cast<int64_t>(s.pos.size());
      reserve_row_pair(be_, s.k, s.v, n, n + 1, E);
      for (int64_t r = n; r > row; --r) {  // positions arrive in order; this rarely moves rows
        Tensor dk = s.k.rows(r, r + 1), dv = s.v.rows(r, r + 1);
        be_.copy(s.k.rows(r - 1, r), dk);
        be_.copy(s.v.rows(r - 1, r), dv);
      }
      s.pos.insert(s.pos.begin() + row, p);
    }
    Tensor dk = s.k.rows(row, row + 1), dv = s.v.rows(row, row + 1);
    be_.copy(k.rows(static_cast<int64_t>(t), static_cast<int64_t>(t) + 1), dk);
    be_.copy(v.rows(static_cast<int64_t>(t), static_cast<int64_t>(t) + 1), dv);
  }
  if (step_index == 0 && !positions.empty())
    n_tokens_ = std::max(n_tokens_, *std::max_element(positions.begin(), positions.end()) + 1);
  const int64_t S = static_cast<int64_t>(s.pos.size());
  *k_out = s.k.rows(0, S);
  *v_out = s.v.rows(0, S);
}

void KVCache::drop_from(int32_t position, std::span<const int> step_indices) {
  auto drop = [&](Slot& s) {  // positions are held in order: drop the tail
    s.pos.erase(std::lower_bound(s.pos.begin(), s.pos.end(), position), s.pos.end());
  };
  if (step_indices.empty()) {
    for (auto& [sid, s] : slots_) drop(s);
    n_tokens_ = std::min(n_tokens_, position);
    return;
  }
  for (int i : step_indices) {
    const int id = slot_of(i);
    for (auto& [sid, s] : slots_)
      if (sid == id) drop(s);
    if (i == 0) n_tokens_ = std::min(n_tokens_, position);
  }
}

std::vector<int32_t> KVCache::positions(int step_index) const {
  const int id = slot_of(step_index);
  for (const auto& [sid, s] : slots_)
    if (sid == id) return s.pos;
  return {};
}

size_t KVCache::bytes() const {
  size_t b = 0;
  for (const auto& [sid, s] : slots_)
    if (s.k.defined()) b += s.k.nbytes() + s.v.nbytes();
  return b;
}

int KVCache::n_slots() const { return static_cast<int>(slots_.size()); }

void KVCache::assign_prefix(const KVCache& src, int32_t n) {
  HUGINN_ASSERT(&src != this && src.strategy_ == strategy_ && src.k_ == k_ &&
                    src.config_.n_embd == config_.n_embd,
                "KVCache::assign_prefix: a cache of another layout");
  clear();
  const int64_t E = config_.n_embd;
  for (const auto& [sid, from] : src.slots_) {
    // Positions are held in order: those below n are the slot's first rows.
    const int64_t rows = std::lower_bound(from.pos.begin(), from.pos.end(), n) - from.pos.begin();
    if (rows == 0) continue;
    Slot s;
    reserve_row_pair(be_, s.k, s.v, 0, rows, E);
    Tensor dk = s.k.rows(0, rows), dv = s.v.rows(0, rows);
    be_.copy(from.k.rows(0, rows), dk);
    be_.copy(from.v.rows(0, rows), dv);
    s.pos.assign(from.pos.begin(), from.pos.begin() + rows);
    slots_.emplace_back(sid, std::move(s));
  }
  n_tokens_ = std::min(src.n_tokens_, n);
}

void KVCache::clear() {
  slots_.clear();
  n_tokens_ = 0;
}

}  // namespace huginn
