// Byte-level BPE training: split texts with the pre-tokenizer regex, count words on the thread
// pool, then repeatedly merge the most frequent adjacent pair (ties: the smaller pair of ids).
// Pair counts are updated incrementally through an index from each pair to the words holding it.
// The result is written as a tokenizer.json with the same component shapes as the GPT-4-style
// tokenizers the library ships (Split + ByteLevel pre-tokenizer, ByteLevel decoder).
#include <algorithm>
#include <chrono>
#include <mutex>
#include <queue>
#include <unordered_map>
#include <unordered_set>

#include <nlohmann/json.hpp>

#include "huginn/error.h"
#include "huginn/log.h"
#include "huginn/thread_pool.h"
#include "huginn/tokenizer.h"
#include "tokenizer/regex.h"
#include "tokenizer/unicode.h"

namespace huginn {

namespace {

// cl100k_base's split pattern (GPT-4).
const char* kGpt4Pattern =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

using WordCounts = std::unordered_map<std::string, int64_t>;

// Splits `text` like the tokenizer will (valid UTF-8 runs through the regex, each invalid byte
// a word of its own) and counts the words.
void count_words(const tok::Regex& re, std::string_view text, WordCounts& counts) {
  std::vector<std::pair<size_t, size_t>> m;
  size_t i = 0;
  while (i < text.size()) {
    size_t ok = tok::utf8_valid_prefix(text.substr(i));
    std::string_view run = text.substr(i, ok);
    m.clear();
    re.find_all(run, m);
    size_t prev = 0;
    for (auto [a, b] : m) {  // Isolated: the gaps between matches are words too
      if (a > prev) ++counts[std::string(run.substr(prev, a - prev))];
      if (b > a) ++counts[std::string(run.substr(a, b - a))];
      prev = b;
    }
    if (prev < run.size()) ++counts[std::string(run.substr(prev))];
    i += ok;
    if (i < text.size()) ++counts[std::string(text.substr(i++, 1))];
  }
}

struct PairHash {
  size_t operator()(uint64_t k) const { return std::hash<uint64_t>()(k * 0x9E3779B97F4A7C15ULL); }
};
uint64_t pair_key(int32_t a, int32_t b) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
}

struct Trainer {
  std::vector<std::vector<int32_t>> words;  // symbols (token ids)
  std::vector<int64_t> freq;
  std::unordered_map<uint64_t, int64_t, PairHash> pair_count;
  std::unordered_map<uint64_t, std::unordered_set<uint32_t>, PairHash> where;
  struct Cand {
    int64_t count;
    uint64_t key;
    bool operator<(const Cand& o) const { return count != o.count ? count < o.count : key > o.key; }
  };
  std::priority_queue<Cand> heap;

  void add_pairs(uint32_t w, int64_t sign) {
    const auto& s = words[w];
    for (size_t k = 0; k + 1 < s.size(); ++k) {
      uint64_t key = pair_key(s[k], s[k + 1]);
      pair_count[key] += sign * freq[w];
      if (sign > 0) where[key].insert(w);
    }
  }

  // Replaces (a, b) by m in word w, keeping counts and the index current.
  void merge_in_word(uint32_t w, int32_t a, int32_t b, int32_t m, std::vector<uint64_t>& touched) {
    auto& s = words[w];
    // Every pair of the word changes count (decreases included), so all are re-queued.
    for (size_t k = 0; k + 1 < s.size(); ++k) touched.push_back(pair_key(s[k], s[k + 1]));
    add_pairs(w, -1);
    std::vector<int32_t> out;
    out.reserve(s.size());
    for (size_t k = 0; k < s.size(); ++k) {
      if (k + 1 < s.size() && s[k] == a && s[k + 1] == b) {
        out.push_back(m);
        ++k;
      } else {
        out.push_back(s[k]);
      }
    }
    s = std::move(out);
    add_pairs(w, +1);
    for (size_t k = 0; k + 1 < s.size(); ++k) touched.push_back(pair_key(s[k], s[k + 1]));
  }
};

}  // namespace

std::string train_bpe(const std::vector<std::string>& texts, const BpeTrainOptions& opt,
                      ThreadPool& pool) {
  const std::string pattern = opt.split_regex.empty() ? kGpt4Pattern : opt.split_regex;
  tok::Regex re(pattern, "train_bpe split regex");
  const int32_t n_special = static_cast<int32_t>(opt.special_tokens.size());
  if (opt.vocab_size < n_special + 256)
    throw Error("train_bpe: vocab_size " + std::to_string(opt.vocab_size) +
                " is smaller than the 256 bytes plus " + std::to_string(n_special) + " special tokens");
  for (size_t k = 0; k < opt.special_tokens.size(); ++k) {
    if (opt.special_tokens[k].empty()) throw Error("train_bpe: special token " + std::to_string(k) + " is empty");
    for (size_t j = 0; j < k; ++j)
      if (opt.special_tokens[j] == opt.special_tokens[k])
        throw Error("train_bpe: special token '" + opt.special_tokens[k] + "' is given twice");
  }
  auto t0 = std::chrono::steady_clock::now();

  // 1. Count words, one table per thread, then merge the tables.
  std::vector<WordCounts> per_thread(pool.size());
  pool.run_on_all([&](int t) {
    for (size_t i = t; i < texts.size(); i += pool.size()) count_words(re, texts[i], per_thread[t]);
  });
  WordCounts counts = std::move(per_thread[0]);
  for (size_t t = 1; t < per_thread.size(); ++t)
    for (auto& [w, c] : per_thread[t]) counts[w] += c;
  per_thread.clear();
  int64_t total_bytes = 0;
  for (const auto& s : texts) total_bytes += static_cast<int64_t>(s.size());
  if (opt.progress)
    HUGINN_LOG_INFO("train: %.1f MB of text, %zu distinct words (%.1f s)", total_bytes / 1e6,
                    counts.size(),
                    std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());

  // 2. Initial vocabulary: the specials, then one token per byte.
  std::vector<std::string> vocab(opt.special_tokens);
  for (int b = 0; b < 256; ++b) {
    std::string ch;
    tok::utf8_append(ch, tok::byte_char(static_cast<uint8_t>(b)));
    vocab.push_back(ch);
  }
  std::unordered_map<std::string, int32_t> index;
  for (size_t k = 0; k < vocab.size(); ++k) index[vocab[k]] = static_cast<int32_t>(k);

  // Deterministic word order, whatever the thread count: sort the words.
  std::vector<std::pair<std::string, int64_t>> sorted(counts.begin(), counts.end());
  counts.clear();
  std::sort(sorted.begin(), sorted.end());
  Trainer tr;
  tr.words.reserve(sorted.size());
  for (auto& [w, c] : sorted) {
    std::vector<int32_t> syms;
    for (char ch : w) syms.push_back(n_special + static_cast<uint8_t>(ch));
    tr.words.push_back(std::move(syms));
    tr.freq.push_back(c);
  }
  for (uint32_t w = 0; w < tr.words.size(); ++w) tr.add_pairs(w, +1);
  for (auto& [key, c] : tr.pair_count) tr.heap.push({c, key});

  // 3. Merge until the vocabulary is full.
  std::vector<std::pair<std::string, std::string>> merges;
  std::vector<uint64_t> touched;
  size_t last_report = 0;
  while (static_cast<int32_t>(vocab.size()) < opt.vocab_size && !tr.heap.empty()) {
    auto top = tr.heap.top();
    tr.heap.pop();
    auto it = tr.pair_count.find(top.key);
    if (it == tr.pair_count.end() || it->second != top.count) continue;  // stale entry
    if (top.count < opt.min_frequency) break;
    int32_t a = static_cast<int32_t>(top.key >> 32), b = static_cast<int32_t>(top.key & 0xFFFFFFFF);
    std::string merged = vocab[a] + vocab[b];
    int32_t m;
    auto found = index.find(merged);
    if (found != index.end()) {
      m = found->second;
    } else {
      m = static_cast<int32_t>(vocab.size());
      vocab.push_back(merged);
      index[merged] = m;
    }
    merges.emplace_back(vocab[a], vocab[b]);
    std::vector<uint32_t> ws(tr.where[top.key].begin(), tr.where[top.key].end());
    std::sort(ws.begin(), ws.end());
    touched.clear();
    for (uint32_t w : ws) tr.merge_in_word(w, a, b, m, touched);
    tr.pair_count.erase(top.key);
    tr.where.erase(top.key);
    std::sort(touched.begin(), touched.end());
    touched.erase(std::unique(touched.begin(), touched.end()), touched.end());
    for (uint64_t key : touched) {
      auto pc = tr.pair_count.find(key);
      if (pc != tr.pair_count.end() && pc->second > 0) tr.heap.push({pc->second, key});
    }
    if (opt.progress && merges.size() - last_report >= 1000) {
      last_report = merges.size();
      HUGINN_LOG_INFO("train: %zu merges, vocabulary %zu / %d (last pair seen %lld times)",
                      merges.size(), vocab.size(), opt.vocab_size, static_cast<long long>(top.count));
    }
  }
  if (opt.progress)
    HUGINN_LOG_INFO("train: done, %zu merges, vocabulary %zu (%.1f s)", merges.size(), vocab.size(),
                    std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());

  // 4. tokenizer.json, in the layout the Hugging Face library writes.
  using ojson = nlohmann::ordered_json;
  ojson added = ojson::array();
  for (int32_t k = 0; k < n_special; ++k)
    added.push_back({{"id", k}, {"content", opt.special_tokens[k]}, {"single_word", false},
                     {"lstrip", false}, {"rstrip", false}, {"normalized", false}, {"special", true}});
  ojson v = ojson::object();
  for (size_t k = 0; k < vocab.size(); ++k) v[vocab[k]] = k;
  ojson ml = ojson::array();
  for (const auto& [x, y] : merges) ml.push_back(x + " " + y);  // byte-level tokens hold no space
  ojson bytelevel = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true},
                     {"use_regex", false}};
  ojson j = {
      {"version", "1.0"},
      {"truncation", nullptr},
      {"padding", nullptr},
      {"added_tokens", added},
      {"normalizer", nullptr},
      {"pre_tokenizer",
       {{"type", "Sequence"},
        {"pretokenizers",
         ojson::array({ojson{{"type", "Split"}, {"pattern", {{"Regex", pattern}}},
                             {"behavior", "Isolated"}, {"invert", false}},
                       bytelevel})}}},
      {"post_processor", bytelevel},
      {"decoder", bytelevel},
      {"model",
       {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", nullptr},
        {"continuing_subword_prefix", nullptr}, {"end_of_word_suffix", nullptr},
        {"fuse_unk", false}, {"byte_fallback", false}, {"ignore_merges", false},
        {"vocab", v}, {"merges", ml}}}};
  try {
    return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::strict);
  } catch (const nlohmann::json::exception& e) {
    throw Error(std::string("train_bpe: a special token is not valid UTF-8: ") + e.what());
  }
}

}  // namespace huginn
