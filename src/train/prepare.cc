// `huginn data prepare`: documents -> tokens (on a thread pool) -> train/val shards.
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "huginn/data.h"
#include "huginn/error.h"
#include "huginn/log.h"
#include "huginn/thread_pool.h"
#include "huginn/tokenizer.h"
#include "util/json.h"
#include "util/mapped_file.h"

namespace huginn {
namespace fs = std::filesystem;

namespace {

constexpr size_t kBatchBytes = 16u << 20;  // text per tokenization batch
constexpr size_t kBatchDocs = 8192;

int32_t find_eot(const Tokenizer& tok, const PrepareOptions& o) {
  if (!o.eot_token.empty()) {
    const int32_t id = tok.token_to_id(o.eot_token);
    if (id < 0)
      throw Error(o.tokenizer + ": --eot-token '" + o.eot_token + "' is not in the vocabulary");
    return id;
  }
  if (tok.eos_id() >= 0) return tok.eos_id();
  for (const char* name : {"<|endoftext|>", "<|end_of_text|>", "</s>", "<|end_turn|>"})
    if (int32_t id = tok.token_to_id(name); id >= 0) return id;
  throw Error(o.tokenizer + ": no end-of-text token found (no eos, <|endoftext|> or </s>); "
              "name one with --eot-token");
}

// Writes numbered shards of one split as tokens arrive.
class ShardWriter {
 public:
  ShardWriter(std::string dir, std::string split, const PrepareResult& r, uint64_t hash,
              uint64_t shard_tokens)
      : dir_(std::move(dir)), split_(std::move(split)), r_(r), hash_(hash), cap_(shard_tokens) {}
  void add(const uint32_t* t, size_t n) {
    while (n > 0) {
      const size_t take = std::min<size_t>(n, cap_ - buf_.size());
      buf_.insert(buf_.end(), t, t + take);
      t += take;
      n -= take;
      if (buf_.size() == cap_) flush();
    }
  }
  void flush() {
    if (buf_.empty()) return;
    char name[64];
    std::snprintf(name, sizeof name, "/%s-%05d.bin", split_.c_str(), count_++);
    write_shard(dir_ + name, buf_, r_.vocab_size, r_.eot_id, hash_);
    total_ += buf_.size();
    buf_.clear();
  }
  int count() const { return count_; }
  uint64_t total() const { return total_; }

 private:
  std::string dir_, split_;
  const PrepareResult& r_;
  uint64_t hash_, cap_;
  std::vector<uint32_t> buf_;
  int count_ = 0;
  uint64_t total_ = 0;
};

bool is_jsonl(const std::string& path) {
  return path.size() >= 6 && path.compare(path.size() - 6, 6, ".jsonl") == 0;
}

std::string read_all(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error(path + ": cannot read input file");
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

}  // namespace

PrepareResult prepare_data(const PrepareOptions& o) {
  if (o.inputs.empty()) throw Error("data prepare: no --input files");
  if (!(o.val_fraction >= 0.0 && o.val_fraction < 1.0))
    throw Error("--val-fraction must be in [0, 1), got " + std::to_string(o.val_fraction));
  if (o.shard_tokens == 0) throw Error("--shard-tokens must be positive");
  for (const auto& in : o.inputs)
    if (!fs::is_regular_file(in)) throw Error(in + ": input file not found");
  auto tok = Tokenizer::load(o.tokenizer);
  const std::string tok_bytes = read_all(o.tokenizer);
  const uint64_t hash = fnv1a64(tok_bytes.data(), tok_bytes.size());

  std::error_code ec;
  fs::create_directories(o.out, ec);
  if (ec || !fs::is_directory(o.out))
    throw Error(o.out + ": cannot create the output directory" + (ec ? ": " + ec.message() : ""));
  for (const char* split : {"train", "val"})
    if (!ShardSet::open(o.out, split, false).empty())
      throw Error(o.out + ": already holds " + split + " shards; choose an empty --out");

  PrepareResult r;
  r.vocab_size = static_cast<uint32_t>(tok->id_limit());
  r.eot_id = find_eot(*tok, o);
  ThreadPool pool(o.threads);
  ShardWriter train(o.out, "train", r, hash, o.shard_tokens), val(o.out, "val", r, hash, o.shard_tokens);

  std::vector<std::string> batch;
  size_t batch_bytes = 0;
  std::vector<uint32_t> stream;
  uint64_t tokens = 0;
  auto encode = [&] {
    if (batch.empty()) return;
    const auto ids = tok->encode_batch(batch, /*add_special=*/false, pool);
    stream.clear();
    for (const auto& doc : ids) {
      for (int32_t id : doc) stream.push_back(static_cast<uint32_t>(id));
      stream.push_back(static_cast<uint32_t>(r.eot_id));
    }
    const size_t n_val = static_cast<size_t>(std::llround(o.val_fraction * stream.size()));
    train.add(stream.data(), stream.size() - n_val);
    val.add(stream.data() + stream.size() - n_val, n_val);
    r.documents += batch.size();
    tokens += stream.size();
    batch.clear();
    batch_bytes = 0;
    if (!o.quiet)
      HUGINN_LOG_INFO("data prepare: %llu documents, %llu tokens", (unsigned long long)r.documents,
                      (unsigned long long)tokens);
  };
  auto add_doc = [&](std::string text) {
    batch_bytes += text.size();
    batch.push_back(std::move(text));
    if (batch_bytes >= kBatchBytes || batch.size() >= kBatchDocs) encode();
  };
  for (const auto& in : o.inputs) {
    if (!is_jsonl(in)) {
      add_doc(read_all(in));
      continue;
    }
    std::ifstream f(in);
    if (!f) throw Error(in + ": cannot read input file");
    std::string line;
    for (int64_t ln = 1; std::getline(f, line); ++ln) {
      if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
      nlohmann::json j = parse_json(line, in + ":" + std::to_string(ln));
      if (!j.is_object() || !j.contains("text") || !j["text"].is_string())
        throw Error(in + ":" + std::to_string(ln) + ": expected an object with a string field \"text\"");
      add_doc(j["text"].get<std::string>());
    }
  }
  encode();
  train.flush();
  val.flush();
  r.train_tokens = train.total();
  r.val_tokens = val.total();
  r.train_shards = train.count();
  r.val_shards = val.count();
  return r;
}

}  // namespace huginn
