// The server's prefix cache: KV entries of earlier prompts, reused by later prompts that begin
// with the same tokens under the same prefix key (Generator::prefix_key: the depth and initial
// state), so a long shared system prompt or few-shot preamble is computed once. Bounded in
// bytes; the least recently used entries go first. Thread-safe; entries are immutable snapshots
// (their own backend memory), shared with the requests copying from them.
#pragma once

#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "huginn/forward.h"

namespace huginn::server {

class PrefixCache {
 public:
  struct Entry {
    std::string key;
    std::vector<int32_t> tokens;  // the prompt whose entries these are
    std::unique_ptr<KVCache> cache;
    size_t bytes = 0;
  };
  struct Hit {
    std::shared_ptr<const Entry> entry;  // null: none shares a token with the prompt
    int32_t shared = 0;                  // leading tokens the prompt shares with it
  };
  struct Stats {
    uint64_t lookups = 0, hits = 0, evictions = 0;
    size_t bytes = 0, entries = 0;
  };

  PrefixCache(const ModelConfig& config, Backend& backend, size_t max_bytes);

  // The entry under `key` sharing the longest prefix with `prompt` (now the most recently used).
  Hit find(const std::string& key, std::span<const int32_t> prompt);
  // Keeps a snapshot of src's entries for the first prompt.size() positions, unless an entry
  // already holds all of them; entries whose tokens the prompt extends go (it covers them).
  // The least recently used entries make room; a snapshot larger than the bound is not kept.
  void insert(const std::string& key, std::span<const int32_t> prompt, const KVCache& src);
  Stats stats() const;

 private:
  static int32_t common(std::span<const int32_t> a, std::span<const int32_t> b);
  void drop(std::list<std::shared_ptr<const Entry>>::iterator it);

  const ModelConfig& config_;
  Backend& be_;
  const size_t max_bytes_;
  mutable std::mutex mu_;
  std::list<std::shared_ptr<const Entry>> lru_;  // most recently used first
  Stats stats_;
};

}  // namespace huginn::server
