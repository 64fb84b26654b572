#include "tokenizer/bpe.h"

#include <algorithm>
#include <atomic>
#include <climits>
#include <cstring>
#include <memory>
#include <queue>

#include "huginn/error.h"
#include "tokenizer/limits.h"
#include "tokenizer/unicode.h"

namespace huginn::tok {

uint64_t hash_bytes(std::string_view s) {
  uint64_t h = 0x9E3779B97F4A7C15ULL ^ (s.size() * 0xC2B2AE3D27D4EB4FULL);
  const char* p = s.data();
  size_t n = s.size();
  while (n >= 8) {
    uint64_t v;
    std::memcpy(&v, p, 8);
    h = (h ^ v) * 0xFF51AFD7ED558CCDULL;
    h ^= h >> 32;
    p += 8;
    n -= 8;
  }
  uint64_t v = 0;
  std::memcpy(&v, p, n);
  h = (h ^ v) * 0xC4CEB9FE1A85EC53ULL;
  h ^= h >> 29;
  return h;
}

// ---------------------------------------------------------------------------------------------
// StringMap / PairMap

void StringMap::reserve(size_t n) {
  size_t cap = 16;
  while (cap < n * 2) cap <<= 1;
  if (cap <= slots_.size()) return;
  std::vector<Slot> old = std::move(slots_);
  slots_.assign(cap, Slot{});
  for (const Slot& s : old) {
    if (s.value < 0) continue;
    for (size_t i = s.hash & (cap - 1);; i = (i + 1) & (cap - 1))
      if (slots_[i].value < 0) {
        slots_[i] = s;
        break;
      }
  }
}

void StringMap::grow() { reserve(std::max<size_t>(16, count_ * 2 + 2)); }

void StringMap::set(std::string_view key, int32_t value) {
  HUGINN_ASSERT(value >= 0, "StringMap values are non-negative");
  if ((count_ + 1) * 2 > slots_.size()) grow();
  uint64_t h = hash_bytes(key);
  size_t mask = slots_.size() - 1;
  for (size_t i = h & mask;; i = (i + 1) & mask) {
    Slot& s = slots_[i];
    if (s.value < 0) {
      if (keys_.size() + key.size() > UINT32_MAX)
        throw Error("tokenizer vocabulary: more than 4 GiB of token text");
      s.hash = h;
      s.offset = static_cast<uint32_t>(keys_.size());
      s.len = static_cast<uint32_t>(key.size());
      s.value = value;
      keys_.append(key);
      ++count_;
      return;
    }
    if (s.hash == h && std::string_view(keys_.data() + s.offset, s.len) == key) {
      s.value = value;
      return;
    }
  }
}

int32_t StringMap::get(std::string_view key) const {
  if (slots_.empty()) return -1;
  uint64_t h = hash_bytes(key);
  size_t mask = slots_.size() - 1;
  for (size_t i = h & mask;; i = (i + 1) & mask) {
    const Slot& s = slots_[i];
    if (s.value < 0) return -1;
    if (s.hash == h && s.len == key.size() &&
        std::memcmp(keys_.data() + s.offset, key.data(), key.size()) == 0)
      return s.value;
  }
}

void PairMap::reserve(size_t n) {
  size_t cap = 16;
  while (cap < n * 2) cap <<= 1;
  slots_.assign(cap, Slot{});
  count_ = 0;
}

void PairMap::set(int32_t a, int32_t b, int32_t rank, int32_t merged) {
  HUGINN_ASSERT(count_ * 2 < slots_.size(), "PairMap::reserve must be called first");
  uint64_t key = (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  size_t mask = slots_.size() - 1;
  for (size_t i = mix(key) & mask;; i = (i + 1) & mask) {
    Slot& s = slots_[i];
    if (s.rank < 0 || s.key == key) {
      if (s.rank < 0) ++count_;
      s = Slot{key, rank, merged};
      return;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Per-thread word cache: direct-mapped tables, so a lookup is one hash and one compare. Most
// words are short: those of at most 24 bytes and 8 ids live inline in one 64-byte line of the
// first table (no pointer to follow). Words up to kMaxWord bytes live in the second, whose
// entries keep their buffers' capacity (a miss allocates only while the cache warms up). Longer
// words go to a third, smaller table whose entries are freed when replaced, within a budget of
// bytes per thread (long runs of spaces, digits or punctuation repeat in real text, and merging
// them is the slowest part of BPE).
struct alignas(64) SmallEntry {
  static constexpr size_t kMaxKey = 24, kMaxIds = 8;
  uint32_t check;  // high half of the hash
  uint8_t len;     // key bytes; 0: unused
  uint8_t flag;    // the raw flag
  uint8_t n;       // ids
  uint8_t unused;
  char key[kMaxKey];
  int32_t ids[kMaxIds];
};
static_assert(sizeof(SmallEntry) == 64);

struct WordCache {
  static constexpr size_t kSmallSlots = 1 << 16;
  static constexpr size_t kSlots = 1 << 14;
  static constexpr size_t kMaxWord = 256;
  static constexpr size_t kLongSlots = 1 << 10;
  static constexpr size_t kMaxLongWord = 1 << 16;   // longer words are merged every time
  static constexpr size_t kLongBudget = 16u << 20;  // bytes of keys and ids in the long table
  struct Entry {
    std::string key;  // the word plus one byte for the raw flag; empty: unused
    std::vector<int32_t> ids;
    size_t bytes() const { return key.capacity() + ids.capacity() * sizeof(int32_t); }
  };
  uint64_t uid = 0;
  std::vector<SmallEntry> small = std::vector<SmallEntry>(kSmallSlots, SmallEntry{});
  std::vector<Entry> entries = std::vector<Entry>(kSlots);
  std::vector<Entry> long_entries = std::vector<Entry>(kLongSlots);
  size_t long_bytes = 0;
};

namespace {

WordCache& cache_for(uint64_t uid) {
  thread_local std::vector<std::unique_ptr<WordCache>> caches;  // most recently used last
  for (size_t i = caches.size(); i-- > 0;) {
    if (caches[i]->uid == uid) {
      if (i + 1 != caches.size()) std::swap(caches[i], caches.back());
      return *caches.back();
    }
  }
  if (caches.size() >= 4) caches.erase(caches.begin());
  caches.push_back(std::make_unique<WordCache>());
  caches.back()->uid = uid;
  return *caches.back();
}

std::atomic<uint64_t> g_next_uid{1};

}  // namespace

// ---------------------------------------------------------------------------------------------
// BpeModel

BpeModel::BpeModel(std::vector<std::string> vocab,
                   const std::vector<std::pair<std::string, std::string>>& merges,
                   BpeOptions options, const std::string& where)
    : tokens_(std::move(vocab)), opt_(std::move(options)), uid_(g_next_uid++) {
  present_.assign(tokens_.size(), false);
  vocab_.reserve(tokens_.size());
  raw_vocab_.reserve(tokens_.size());
  for (size_t id = 0; id < tokens_.size(); ++id) {
    if (tokens_[id].empty()) continue;
    present_[id] = true;
    vocab_.set(tokens_[id], static_cast<int32_t>(id));
    // The raw bytes this token stands for, when every character is a byte-level character.
    std::string raw;
    bool all_bytes = true;
    const std::string& t = tokens_[id];
    for (size_t i = 0; i < t.size();) {
      int len;
      int b = byte_of_char(utf8_decode(t, i, &len));
      if (b < 0) {
        all_bytes = false;
        break;
      }
      raw.push_back(static_cast<char>(b));
      i += len;
    }
    if (all_bytes) raw_vocab_.set(raw, static_cast<int32_t>(id));
  }
  for (int b = 0; b < 256; ++b) {
    std::string ch;
    utf8_append(ch, byte_char(static_cast<uint8_t>(b)));
    byte_ids_[b] = vocab_.get(ch);
    char buf[8];
    std::snprintf(buf, sizeof buf, "<0x%02X>", b);
    fallback_ids_[b] = vocab_.get(buf);
  }
  if (opt_.has_unk) {
    unk_id_ = vocab_.get(opt_.unk_token);
    if (unk_id_ < 0) throw Error(where + ": unk_token '" + quote(opt_.unk_token) + "' is not in the vocabulary");
  }
  size_t prefix_len = opt_.continuing_subword_prefix.size();
  merges_.reserve(merges.size());
  for (size_t r = 0; r < merges.size(); ++r) {
    const auto& [a, b] = merges[r];
    int32_t ia = vocab_.get(a), ib = vocab_.get(b);
    if (ia < 0 || ib < 0)
      throw Error(where + ".merges[" + std::to_string(r) + "]: token '" + quote(ia < 0 ? a : b) +
                  "' is not in the vocabulary");
    if (b.size() < prefix_len)
      throw Error(where + ".merges[" + std::to_string(r) + "]: '" + quote(b) +
                  "' lacks the continuing_subword_prefix");
    std::string merged = a + b.substr(prefix_len);
    int32_t im = vocab_.get(merged);
    if (im < 0)
      throw Error(where + ".merges[" + std::to_string(r) + "]: merged token '" + quote(merged) +
                  "' is not in the vocabulary");
    merges_.set(ia, ib, static_cast<int32_t>(r), im);  // a repeated pair keeps its last rank
  }
}

void BpeModel::initial_symbols(std::string_view word, bool raw_bytes, std::vector<int32_t>& ids,
                               std::vector<uint32_t>& /*lens*/) const {
  const bool affixes = !opt_.continuing_subword_prefix.empty() || !opt_.end_of_word_suffix.empty();
  if (raw_bytes && !affixes) {
    bool all = true;
    for (char c : word) {
      int32_t id = byte_ids_[static_cast<uint8_t>(c)];
      if (id < 0) {
        all = false;
        break;
      }
      ids.push_back(id);
    }
    if (all) return;
    ids.clear();
  }
  std::string mapped;
  if (raw_bytes) {
    mapped = bytes_to_byte_level(word);
    word = mapped;
  }
  // The library's BPE::merge_word: one symbol per character, with prefix/suffix, byte fallback
  // and (fused) unknown tokens.
  int32_t pending_unk = -1;  // an unknown token not yet emitted (fuse_unk grows it)
  std::string s;
  for (size_t i = 0; i < word.size();) {
    int len;
    utf8_decode(word, i, &len);
    bool first = i == 0, last = i + len == word.size();
    std::string_view ch = word.substr(i, len);
    i += len;
    int32_t id;
    if (affixes) {
      s.clear();
      if (!first) s += opt_.continuing_subword_prefix;
      s += ch;
      if (last) s += opt_.end_of_word_suffix;
      id = vocab_.get(s);
    } else {
      id = vocab_.get(ch);
    }
    if (id >= 0) {
      if (pending_unk >= 0) ids.push_back(pending_unk), pending_unk = -1;
      ids.push_back(id);
      continue;
    }
    std::string_view sv = affixes ? std::string_view(s) : ch;
    if (opt_.byte_fallback) {
      bool all = true;
      for (char c : sv) all = all && fallback_ids_[static_cast<uint8_t>(c)] >= 0;
      if (all) {  // (the library emits these before a pending unknown token; so do we)
        for (char c : sv) ids.push_back(fallback_ids_[static_cast<uint8_t>(c)]);
        continue;
      }
    }
    if (opt_.has_unk) {
      if (pending_unk >= 0 && !opt_.fuse_unk) ids.push_back(pending_unk);
      pending_unk = unk_id_;
    }
  }
  if (pending_unk >= 0) ids.push_back(pending_unk);
}

// Lowest rank first, leftmost among equal ranks: a linear scan over the pairs' ranks, fast for
// short words (O(n^2) in the symbols, n <= kSmallWord).
void BpeModel::merge_small(std::vector<int32_t>& ids) const {
  size_t n = ids.size();
  if (n < 2) return;
  constexpr int32_t kNone = INT32_MAX;
  int32_t ranks[kSmallWord], merged[kSmallWord];
  for (size_t i = 0; i + 1 < n; ++i)
    if (!merges_.get(ids[i], ids[i + 1], &ranks[i], &merged[i])) ranks[i] = kNone;
  while (n > 1) {
    size_t best = 0;
    for (size_t i = 1; i + 1 < n; ++i)
      if (ranks[i] < ranks[best]) best = i;
    if (ranks[best] == kNone) break;
    ids[best] = merged[best];
    // Remove symbol best+1 and the pair that started there.
    for (size_t i = best + 1; i + 1 < n; ++i) {
      ids[i] = ids[i + 1];
      ranks[i] = ranks[i + 1];
      merged[i] = merged[i + 1];
    }
    --n;
    if (best > 0 && !merges_.get(ids[best - 1], ids[best], &ranks[best - 1], &merged[best - 1]))
      ranks[best - 1] = kNone;
    if (best + 1 < n && !merges_.get(ids[best], ids[best + 1], &ranks[best], &merged[best]))
      ranks[best] = kNone;
  }
  ids.resize(n);
}

// The library's Word::merge_all, O(n log n): a heap of candidate merges over a linked list of
// symbols. A candidate is one integer, rank << 32 | position, so the heap orders by rank, then
// position; it is stale when the pair now at its position has another rank (a rank names one
// pair). The buffers are per thread: no allocation per word once they have grown.
void BpeModel::merge_large(std::vector<int32_t>& ids) const {
  struct Sym {
    int32_t id;  // -1: merged into its left neighbour
    int32_t prev, next;
  };
  thread_local std::vector<Sym> sym;
  thread_local std::vector<uint64_t> heap;
  const int32_t n = static_cast<int32_t>(ids.size());
  sym.resize(n);
  heap.clear();
  for (int32_t i = 0; i < n; ++i) sym[i] = {ids[i], i - 1, i + 1 < n ? i + 1 : -1};
  auto key = [](int32_t rank, int32_t pos) {
    return (static_cast<uint64_t>(rank) << 32) | static_cast<uint32_t>(pos);
  };
  int32_t r, m;
  for (int32_t i = 0; i + 1 < n; ++i)
    if (merges_.get(ids[i], ids[i + 1], &r, &m)) heap.push_back(key(r, i));
  std::make_heap(heap.begin(), heap.end(), std::greater<uint64_t>());
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), std::greater<uint64_t>());
    uint64_t top = heap.back();
    heap.pop_back();
    const int32_t rank = static_cast<int32_t>(top >> 32), pos = static_cast<int32_t>(top & 0xFFFFFFFF);
    Sym& left = sym[pos];
    if (left.id < 0 || left.next < 0) continue;
    Sym& right = sym[left.next];
    if (!merges_.get(left.id, right.id, &r, &m) || r != rank) continue;  // stale
    left.id = m;
    right.id = -1;
    left.next = right.next;
    if (right.next >= 0) sym[right.next].prev = pos;
    if (left.prev >= 0 && merges_.get(sym[left.prev].id, left.id, &r, &m)) {
      heap.push_back(key(r, left.prev));
      std::push_heap(heap.begin(), heap.end(), std::greater<uint64_t>());
    }
    if (left.next >= 0 && merges_.get(left.id, sym[left.next].id, &r, &m)) {
      heap.push_back(key(r, pos));
      std::push_heap(heap.begin(), heap.end(), std::greater<uint64_t>());
    }
  }
  ids.clear();
  for (int32_t i = 0; i >= 0 && i < n; i = sym[i].next) ids.push_back(sym[i].id);
}

void BpeModel::merge_word(std::string_view word, bool raw_bytes, std::vector<int32_t>& out) const {
  thread_local std::vector<int32_t> ids;
  thread_local std::vector<uint32_t> lens;
  ids.clear();
  initial_symbols(word, raw_bytes, ids, lens);
  if (ids.size() >= static_cast<size_t>(INT32_MAX))  // merge_large's positions are int32
    throw Error("tokenizer: a pre-token of " + std::to_string(word.size()) +
                " bytes, more than the bound of 2^31 - 1 symbols");
  if (ids.size() <= kSmallWord)
    merge_small(ids);
  else
    merge_large(ids);
  out.insert(out.end(), ids.begin(), ids.end());
}

WordCache* BpeModel::thread_cache() const { return &cache_for(uid_); }

namespace {

bool cache_hit(const WordCache::Entry& e, std::string_view word, char flag) {
  return e.key.size() == word.size() + 1 && e.key.back() == flag &&
         std::memcmp(e.key.data(), word.data(), word.size()) == 0;
}

void cache_store(WordCache::Entry& e, std::string_view word, char flag, const int32_t* ids, size_t n) {
  e.key.assign(word);
  e.key.push_back(flag);
  e.ids.assign(ids, ids + n);
}

}  // namespace

void BpeModel::encode_word(std::string_view word, bool raw_bytes, std::vector<int32_t>& out,
                           WordCache* cache) const {
  if (word.empty()) return;
  if (opt_.ignore_merges) {
    int32_t id = raw_bytes ? raw_vocab_.get(word) : vocab_.get(word);
    if (id >= 0) {
      out.push_back(id);
      return;
    }
  }
  if (word.size() > WordCache::kMaxLongWord) {
    merge_word(word, raw_bytes, out);
    return;
  }
  if (!cache) cache = thread_cache();
  // raw and mapped words of the same bytes differ in meaning: keep them apart in the hash.
  const uint64_t h = hash_bytes(word) ^ (raw_bytes ? 0x5555555555555555ULL : 0);
  const char flag = raw_bytes ? '\1' : '\0';
  if (word.size() <= SmallEntry::kMaxKey) {
    SmallEntry& se = cache->small[(h >> 7) & (WordCache::kSmallSlots - 1)];
    const uint32_t check = static_cast<uint32_t>(h >> 32);
    if (se.len == word.size() && se.check == check && se.flag == flag &&
        std::memcmp(se.key, word.data(), word.size()) == 0) {
      if (se.n == 1)
        out.push_back(se.ids[0]);
      else
        out.insert(out.end(), se.ids, se.ids + se.n);
      return;
    }
    const size_t start = out.size();
    merge_word(word, raw_bytes, out);
    const size_t n = out.size() - start;
    if (n > SmallEntry::kMaxIds) return;
    se.check = check;
    se.len = static_cast<uint8_t>(word.size());
    se.flag = flag;
    se.n = static_cast<uint8_t>(n);
    std::memcpy(se.key, word.data(), word.size());
    std::memcpy(se.ids, out.data() + start, n * sizeof(int32_t));
    return;
  }
  const bool is_long = word.size() > WordCache::kMaxWord;
  WordCache::Entry& e = is_long ? cache->long_entries[h & (WordCache::kLongSlots - 1)]
                                : cache->entries[h & (WordCache::kSlots - 1)];
  if (cache_hit(e, word, flag)) {
    out.insert(out.end(), e.ids.begin(), e.ids.end());
    return;
  }
  const size_t start = out.size();
  merge_word(word, raw_bytes, out);
  const size_t n = out.size() - start;
  if (!is_long) {
    cache_store(e, word, flag, out.data() + start, n);
    return;
  }
  cache->long_bytes -= e.bytes();
  e = WordCache::Entry{};  // freed, not kept at its old capacity
  const size_t need = word.size() + 1 + n * sizeof(int32_t);
  if (cache->long_bytes + need > WordCache::kLongBudget) return;
  cache_store(e, word, flag, out.data() + start, n);
  cache->long_bytes += e.bytes();
}

}  // namespace huginn::tok
