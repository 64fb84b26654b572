// PrefixCache: a list of snapshots in recency order; lookups scan it (a handful of entries).
#include "server/prefix_cache.h"

#include <algorithm>

namespace huginn::server {

PrefixCache::PrefixCache(const ModelConfig& config, Backend& backend, size_t max_bytes)
    : config_(config), be_(backend), max_bytes_(max_bytes) {}

int32_t PrefixCache::common(std::span<const int32_t> a, std::span<const int32_t> b) {
  const size_t n = std::min(a.size(), b.size());
  size_t i = 0;
  while (i < n && a[i] == b[i]) ++i;
  return static_cast<int32_t>(i);
}

PrefixCache::Hit PrefixCache::find(const std::string& key, std::span<const int32_t> prompt) {
  std::lock_guard<std::mutex> lock(mu_);
  ++stats_.lookups;
  Hit best;
  auto best_it = lru_.end();
  for (auto it = lru_.begin(); it != lru_.end(); ++it) {
    if ((*it)->key != key) continue;
    const int32_t n = common((*it)->tokens, prompt);
    if (n > best.shared) {
      best = Hit{*it, n};
      best_it = it;
    }
  }
  if (best.entry) {
    ++stats_.hits;
    lru_.splice(lru_.begin(), lru_, best_it);
  }
  return best;
}

void PrefixCache::drop(std::list<std::shared_ptr<const Entry>>::iterator it) {
  stats_.bytes -= (*it)->bytes;
  lru_.erase(it);
}

void PrefixCache::insert(const std::string& key, std::span<const int32_t> prompt, const KVCache& src) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& e : lru_)
      if (e->key == key && common(e->tokens, prompt) == static_cast<int32_t>(prompt.size())) return;
  }
  // The snapshot is copied outside the lock (backend work; requests may be copying from others).
  auto e = std::make_shared<Entry>();
  e->key = key;
  e->tokens.assign(prompt.begin(), prompt.end());
  e->cache = std::make_unique<KVCache>(config_, be_, src.strategy());
  e->cache->assign_prefix(src, static_cast<int32_t>(prompt.size()));
  e->bytes = e->cache->bytes();
  if (e->bytes > max_bytes_) return;
  std::lock_guard<std::mutex> lock(mu_);
  for (auto it = lru_.begin(); it != lru_.end();) {
    const auto next = std::next(it);
    const Entry& o = **it;
    if (o.key == key && common(o.tokens, prompt) == static_cast<int32_t>(o.tokens.size())) drop(it);
    it = next;
  }
  while (!lru_.empty() && stats_.bytes + e->bytes > max_bytes_) {
    drop(std::prev(lru_.end()));
    ++stats_.evictions;
  }
  stats_.bytes += e->bytes;
  lru_.push_front(std::move(e));
}

PrefixCache::Stats PrefixCache::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  Stats s = stats_;
  s.entries = lru_.size();
  return s;
}

}  // namespace huginn::server
