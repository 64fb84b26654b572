// `huginn data prepare`: documents -> tokens -> train/val shards, streaming.
//
// A reader thread decompresses the inputs and cuts them into batches of documents
// (prepare_input.h); the pool's threads parse JSONL lines and encode; a writer thread appends the
// tokens to shard files written as they fill (train-NNNNN.partial, renamed to .bin when full)
// while the next batch is encoded. After every batch the partial files are synced and
// prepare-state.json records where reading stands and how many tokens each partial file holds,
// so a killed run resumes (--resume) exactly where that batch ended, with the same shards as a
// run that was never stopped. Memory: a few batches of text and their tokens, whatever the input
// size.
#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <functional>
#include <mutex>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "huginn/data.h"
#include "huginn/error.h"
#include "huginn/log.h"
#include "huginn/thread_pool.h"
#include "huginn/tokenizer.h"
#include "tokenizer/pipeline.h"
#include "train/prepare_input.h"
#include "util/json.h"
#include "util/mapped_file.h"

namespace huginn {
namespace fs = std::filesystem;

namespace {

constexpr size_t kBatchDocs = 8192;
constexpr int kStateVersion = 2;  // 2: shards of format version 2 (XXH3-64 checksums)
const char* kStateFile = "prepare-state.json";

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

std::string read_all(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error(path + ": cannot read input file");
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

void fsync_path(const std::string& path, int flags) {
  int fd = ::open(path.c_str(), flags);
  if (fd < 0) return;
  ::fsync(fd);
  ::close(fd);
}

// Writes the numbered shards of one split as tokens arrive: the current shard is a .partial file
// (header, then tokens) renamed to .bin once full, with its header and checksum written then.
class ShardWriter {
 public:
  ShardWriter(std::string dir, std::string split, uint32_t vocab, int32_t eot, uint64_t hash,
              uint64_t shard_tokens)
      : dir_(std::move(dir)), split_(std::move(split)), vocab_(vocab), eot_(eot), hash_(hash),
        cap_(shard_tokens), width_(vocab <= 65536 ? 2 : 4) {}
  ~ShardWriter() {
    if (f_) std::fclose(f_);
  }

  // Continues after `shards` full shards and `partial` tokens of the next one (a resume).
  void resume(int shards, uint64_t partial) {
    count_ = shards;
    const std::string part = path(count_, ".partial"), full = path(count_, ".bin");
    if (!fs::exists(part) && fs::exists(full)) fs::rename(full, part);  // renamed after the state
    if (partial == 0 && !fs::exists(part)) return;
    if (!fs::exists(part) || fs::file_size(part) < kShardHeaderBytes + partial * width_)
      throw Error(part + ": shorter than prepare-state.json says (" + std::to_string(partial) +
                  " tokens); the output folder was changed since the run stopped");
    fs::resize_file(part, kShardHeaderBytes + partial * width_);
    f_ = std::fopen(part.c_str(), "r+b");
    if (!f_) throw Error(part + ": cannot reopen: " + std::strerror(errno));
    std::fseek(f_, kShardHeaderBytes, SEEK_SET);
    std::vector<uint8_t> buf(1 << 20);
    checksum_.reset();
    for (uint64_t left = partial * width_; left > 0;) {
      const size_t n = std::fread(buf.data(), 1, std::min<uint64_t>(left, buf.size()), f_);
      if (n == 0) throw Error(part + ": read error while resuming");
      checksum_.update(buf.data(), n);
      left -= n;
    }
    std::fseek(f_, 0, SEEK_END);
    in_shard_ = partial;
  }

  // Appends n tokens given as bytes in the shard's width (token_bytes()).
  void add(const uint8_t* t, size_t n) {
    while (n > 0) {
      if (!f_) start();
      const size_t take = std::min<uint64_t>(n, cap_ - in_shard_);
      if (std::fwrite(t, width_, take, f_) != take)
        throw Error(path(count_, ".partial") + ": write error: " + std::strerror(errno));
      checksum_.update(t, take * width_);
      in_shard_ += take;
      total_ += take;
      t += take * width_;
      n -= take;
      if (in_shard_ == cap_) finish_shard();
    }
  }
  // Makes the partial shard durable (before the state that counts its tokens is written).
  void sync() {
    if (!f_) return;
    if (std::fflush(f_) != 0) throw Error(path(count_, ".partial") + ": write error");
    ::fdatasync(fileno(f_));
  }
  void finish() {
    if (f_ && in_shard_ > 0) finish_shard();
  }
  int shards() const { return count_; }
  uint32_t token_bytes() const { return width_; }
  uint64_t partial() const { return in_shard_; }
  uint64_t total() const { return total_; }
  void set_total(uint64_t t) { total_ = t; }

 private:
  std::string path(int k, const char* ext) const {
    char name[64];
    std::snprintf(name, sizeof name, "/%s-%05d%s", split_.c_str(), k, ext);
    return dir_ + name;
  }
  void start() {
    const std::string part = path(count_, ".partial");
    f_ = std::fopen(part.c_str(), "wb");
    if (!f_) throw Error(part + ": cannot create: " + std::strerror(errno));
    const std::vector<uint8_t> zero(kShardHeaderBytes, 0);
    std::fwrite(zero.data(), 1, zero.size(), f_);
    checksum_.reset();
    in_shard_ = 0;
  }
  void finish_shard() {
    ShardInfo info;
    info.token_bytes = width_;
    info.count = in_shard_;
    info.vocab_size = vocab_;
    info.eot_id = eot_;
    info.tokenizer_hash = hash_;
    const auto header = shard_header(info, checksum_.digest());
    std::fseek(f_, 0, SEEK_SET);
    if (std::fwrite(header.data(), 1, header.size(), f_) != header.size() || std::fflush(f_) != 0)
      throw Error(path(count_, ".partial") + ": write error: " + std::strerror(errno));
    ::fsync(fileno(f_));
    std::fclose(f_);
    f_ = nullptr;
    fs::rename(path(count_, ".partial"), path(count_, ".bin"));
    ++count_;
    in_shard_ = 0;
  }

  std::string dir_, split_;
  uint32_t vocab_;
  int32_t eot_;
  uint64_t hash_, cap_;
  uint32_t width_;
  FILE* f_ = nullptr;
  ShardChecksum checksum_;
  uint64_t in_shard_ = 0, total_ = 0;
  int count_ = 0;
};

// What must match for a resume: the tokenizer, the options that shape the shards, the inputs.
nlohmann::json run_fingerprint(const PrepareOptions& o, uint64_t tok_hash, int32_t eot) {
  nlohmann::json inputs = nlohmann::json::array();
  for (const std::string& in : o.inputs)
    inputs.push_back({{"path", in}, {"bytes", fs::file_size(in)}});
  return {{"tokenizer_hash", std::to_string(tok_hash)}, {"eot_id", eot},
          {"val_fraction", o.val_fraction}, {"shard_tokens", o.shard_tokens},
          {"max_doc_bytes", o.max_doc_mb << 20}, {"batch_bytes", o.batch_mb << 20}, {"inputs", inputs}};
}

struct State {
  prep::Position pos;
  uint64_t documents = 0, file_bytes_done = 0;
  int train_shards = 0, val_shards = 0;
  uint64_t train_partial = 0, val_partial = 0, train_tokens = 0, val_tokens = 0;
  bool done = false;
};

void write_state(const std::string& dir, const nlohmann::json& fingerprint, const State& s) {
  nlohmann::json j = {{"version", kStateVersion}, {"run", fingerprint}, {"done", s.done},
                      {"input", s.pos.input}, {"offset", s.pos.offset}, {"line", s.pos.line},
                      {"documents", s.documents}, {"file_bytes_done", s.file_bytes_done},
                      {"train", {{"shards", s.train_shards}, {"partial", s.train_partial}, {"tokens", s.train_tokens}}},
                      {"val", {{"shards", s.val_shards}, {"partial", s.val_partial}, {"tokens", s.val_tokens}}}};
  const std::string text = j.dump(1) + "\n";
  write_file_atomic(dir + "/" + kStateFile, text.data(), text.size());
  fsync_path(dir, O_RDONLY | O_DIRECTORY);
}

State read_state(const std::string& dir, const nlohmann::json& fingerprint) {
  const std::string path = dir + "/" + kStateFile;
  nlohmann::json j = read_json_file(path);
  const std::string where = path;
  try {
    if (j.at("version").get<int>() != kStateVersion)
      throw Error(where + ": version " + j.at("version").dump() + ", expected " + std::to_string(kStateVersion) +
                  " (an older huginn stopped this run, and its shards have another format: start again "
                  "with a new --out)");
    const nlohmann::json& run = j.at("run");
    for (const auto& [key, value] : fingerprint.items())
      if (!run.contains(key) || run.at(key) != value)
        throw Error(where + ": this run's " + key + " differs from the stopped run's (" +
                    json_preview(run.contains(key) ? run.at(key) : nlohmann::json()) + " then, " +
                    json_preview(value) + " now); resume with the same command, or use a new --out");
    State s;
    s.done = j.at("done").get<bool>();
    s.pos.input = j.at("input").get<uint32_t>();
    s.pos.offset = j.at("offset").get<uint64_t>();
    s.pos.line = j.at("line").get<uint64_t>();
    s.documents = j.at("documents").get<uint64_t>();
    s.file_bytes_done = j.at("file_bytes_done").get<uint64_t>();
    s.train_shards = j.at("train").at("shards").get<int>();
    s.train_partial = j.at("train").at("partial").get<uint64_t>();
    s.train_tokens = j.at("train").at("tokens").get<uint64_t>();
    s.val_shards = j.at("val").at("shards").get<int>();
    s.val_partial = j.at("val").at("partial").get<uint64_t>();
    s.val_tokens = j.at("val").at("tokens").get<uint64_t>();
    if (s.pos.input > fingerprint.at("inputs").size() || s.train_shards < 0 || s.val_shards < 0)
      throw Error(where + ": input or shard counts out of range");
    return s;
  } catch (const nlohmann::json::exception& e) {
    throw Error(where + ": malformed state: " + e.what());
  }
}

// A bounded queue between the reader thread and the encoder.
class BatchQueue {
 public:
  explicit BatchQueue(size_t cap) : cap_(cap) {}
  void push(prep::Batch b) {
    std::unique_lock<std::mutex> l(m_);
    cv_.wait(l, [&] { return q_.size() < cap_ || stop_; });
    q_.push_back(std::move(b));
    cv_.notify_all();
  }
  bool pop(prep::Batch* b) {
    std::unique_lock<std::mutex> l(m_);
    cv_.wait(l, [&] { return !q_.empty() || error_ || stop_; });
    if (q_.empty()) return false;
    *b = std::move(q_.front());
    q_.pop_front();
    cv_.notify_all();
    return true;
  }
  void fail(std::exception_ptr e) {
    std::lock_guard<std::mutex> l(m_);
    error_ = e;
    cv_.notify_all();
  }
  void stop() {
    std::lock_guard<std::mutex> l(m_);
    stop_ = true;
    cv_.notify_all();
  }
  std::exception_ptr error() {
    std::lock_guard<std::mutex> l(m_);
    return error_;
  }

 private:
  size_t cap_;
  std::mutex m_;
  std::condition_variable cv_;
  std::deque<prep::Batch> q_;
  std::exception_ptr error_;
  bool stop_ = false;
};

// One batch buffer handed back from the encoder to the reader for reuse.
class Spare {
 public:
  void put(std::string s) {
    std::lock_guard<std::mutex> l(m_);
    s_ = std::move(s);
  }
  std::string take() {
    std::lock_guard<std::mutex> l(m_);
    return std::exchange(s_, std::string());
  }

 private:
  std::mutex m_;
  std::string s_;
};

// The tokens of one batch, documents in order with the end-of-text id after each document's end,
// as bytes in the shards' width, kept in the pieces the encoding threads made (no joined copy);
// and what the writer needs of the batch besides (its text is freed before writing begins).
struct Encoded {
  std::vector<std::vector<uint8_t>> parts;
  uint64_t tokens = 0, documents = 0, text_bytes = 0, file_bytes_done = 0;
  prep::Position end;
  bool last = false;
};

// Appends ids (and the end-of-text id when eot >= 0) in the shards' width.
void append_tokens(std::vector<uint8_t>& out, const std::vector<int32_t>& ids, int32_t eot,
                   uint32_t width) {
  const size_t n = ids.size() + (eot >= 0), at = out.size();
  out.resize(at + n * width);
  uint8_t* p = out.data() + at;
  if (width == 4) {
    std::memcpy(p, ids.data(), ids.size() * 4);
  } else {
    for (size_t k = 0; k < ids.size(); ++k) {
      const uint16_t v = static_cast<uint16_t>(ids[k]);
      std::memcpy(p + 2 * k, &v, 2);
    }
  }
  if (eot < 0) return;
  if (width == 4) {
    std::memcpy(p + 4 * ids.size(), &eot, 4);
  } else {
    const uint16_t v = static_cast<uint16_t>(eot);
    std::memcpy(p + 2 * ids.size(), &v, 2);
  }
}

Encoded encode_batch(const prep::Batch& b, const Tokenizer& tok, int32_t eot, uint32_t width,
                     const std::vector<std::string>& inputs, ThreadPool& pool) {
  // Ranges of documents, each encoded into its own part, so the output does not depend on which
  // thread took which. The threads take them one at a time from a counter: parallel_for's fixed
  // split (one contiguous half each on two threads) left a thread idle at every batch's end
  // whenever the other was slowed (by the reader and writer threads, or other processes).
  constexpr int64_t kRanges = 256;
  const int64_t n = static_cast<int64_t>(b.docs.size());
  Encoded e;
  e.parts.resize(kRanges);
  std::atomic<int64_t> next{0};
  pool.parallel_for(pool.size(), 1, [&](int64_t, int64_t) {
    std::string text;
    std::vector<int32_t> ids;  // reused: one allocation per thread, not per document
    for (int64_t r; (r = next.fetch_add(1, std::memory_order_relaxed)) < kRanges;) {
      std::vector<uint8_t>& out = e.parts[r];
      const int64_t d0 = n * r / kRanges, d1 = n * (r + 1) / kRanges;
      if (d0 < d1) {  // about one token per 3 bytes of text: rarely regrown, little left over
        const uint64_t bytes = b.docs[d1 - 1].offset + b.docs[d1 - 1].size - b.docs[d0].offset;
        out.reserve((bytes / 3 + 64) * width);
      }
      for (int64_t d = d0; d < d1; ++d) {
        const prep::Doc& doc = b.docs[d];
        std::string_view raw(b.bytes.data() + doc.offset, doc.size);
        if (doc.jsonl) {
          prep::jsonl_text(raw, inputs[doc.input], doc.line, text);
          raw = text;
        }
        ids.clear();
        tok.pipeline().encode(raw, false, ids);  // what tok.encode(raw) returns
        append_tokens(out, ids, doc.ends_document ? eot : -1, width);
      }
    }
  });
  for (const auto& p : e.parts) e.tokens += p.size() / width;
  for (const prep::Doc& d : b.docs) e.documents += d.ends_document;
  e.text_bytes = b.bytes.size();
  e.file_bytes_done = b.file_bytes_done;
  e.end = b.end;
  e.last = b.last;
  return e;
}

// Runs one job at a time on its own thread, so that a batch's writing (shards, fdatasync, state)
// overlaps the next batch's encoding. submit() waits for the previous job first: at most one
// batch's tokens wait or are written while the next is encoded. A job's exception comes out of
// the next submit() or wait().
class WriterThread {
 public:
  explicit WriterThread(std::function<void(Encoded&)> work)
      : work_(std::move(work)), thread_([this] { loop(); }) {}
  ~WriterThread() {
    {
      std::lock_guard<std::mutex> l(m_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  void submit(Encoded e) {
    wait();
    std::lock_guard<std::mutex> l(m_);
    job_ = std::move(e);
    busy_ = true;
    cv_.notify_all();
  }
  void wait() {
    std::unique_lock<std::mutex> l(m_);
    cv_.wait(l, [&] { return !busy_; });
    if (error_) std::rethrow_exception(std::exchange(error_, nullptr));
  }

 private:
  void loop() {
    std::unique_lock<std::mutex> l(m_);
    for (;;) {
      cv_.wait(l, [&] { return busy_ || stop_; });
      if (!busy_) return;
      l.unlock();
      std::exception_ptr error;
      try {
        work_(job_);
      } catch (...) {
        error = std::current_exception();
      }
      job_ = Encoded{};  // its tokens are freed before the next batch is handed over
      l.lock();
      if (error && !error_) error_ = error;
      busy_ = false;
      cv_.notify_all();
    }
  }

  std::function<void(Encoded&)> work_;
  std::mutex m_;
  std::condition_variable cv_;
  Encoded job_;
  bool busy_ = false, stop_ = false;
  std::exception_ptr error_;
  std::thread thread_;
};

// Adds a batch's tokens to the shards: the last round(val_fraction x tokens) go to val.
void add_tokens(const Encoded& e, double val_fraction, ShardWriter& train, ShardWriter& val) {
  const uint64_t n_val = static_cast<uint64_t>(std::llround(val_fraction * e.tokens));
  uint64_t to_train = e.tokens - n_val;
  const uint32_t width = train.token_bytes();
  for (const std::vector<uint8_t>& p : e.parts) {
    const uint64_t n = p.size() / width, here = std::min(n, to_train);
    train.add(p.data(), here);
    val.add(p.data() + here * width, n - here);
    to_train -= here;
  }
}

std::string human_bytes(double b) {
  char buf[32];
  if (b >= 1e9) std::snprintf(buf, sizeof buf, "%.2f GB", b / 1e9);
  else std::snprintf(buf, sizeof buf, "%.1f MB", b / 1e6);
  return buf;
}

std::string human_seconds(double s) {
  char buf[32];
  if (s >= 3600) std::snprintf(buf, sizeof buf, "%dh%02dm", int(s / 3600), int(s / 60) % 60);
  else if (s >= 60) std::snprintf(buf, sizeof buf, "%dm%02ds", int(s / 60), int(s) % 60);
  else std::snprintf(buf, sizeof buf, "%.0fs", s);
  return buf;
}

// Reads (on its own thread), encodes (on the pool) and writes (on the writer thread) every batch
// from st.pos on, with a checkpoint of the state after each one.
void run_batches(const PrepareOptions& o, const Tokenizer& tok, PrepareResult& r, State& st,
                 const nlohmann::json& fingerprint, ShardWriter& train, ShardWriter& val) {
  uint64_t total_file_bytes = 0;
  for (const std::string& in : o.inputs) total_file_bytes += fs::file_size(in);
  ThreadPool pool(o.threads);
  BatchQueue queue(1);  // with the batch the reader fills and the one being encoded: three
  Spare spare;
  std::thread reader([&] {
    try {
      prep::DocReader docs(o.inputs, st.pos, o.max_doc_mb << 20, o.batch_mb << 20, kBatchDocs);
      for (bool last = false; !last;) {
        prep::Batch b = docs.next(spare.take());
        last = b.last;
        queue.push(std::move(b));
      }
    } catch (...) {
      queue.fail(std::current_exception());
    }
  });
  struct Join {
    BatchQueue& q;
    std::thread& t;
    ~Join() {
      q.stop();
      t.join();
    }
  } join{queue, reader};

  using clock = std::chrono::steady_clock;
  const auto t0 = clock::now();
  auto last_log = t0;
  const uint64_t file_bytes_at_start = st.file_bytes_done;
  uint64_t text_bytes = 0, tokens = 0;
  // The writer: shards, their sync, then the state that counts them (on the writer thread).
  WriterThread writer([&](Encoded& e) {
    add_tokens(e, o.val_fraction, train, val);
    r.documents += e.documents;
    text_bytes += e.text_bytes;
    tokens += e.tokens;
    if (e.last) {
      train.finish();
      val.finish();
      st.done = true;
    } else {
      train.sync();
      val.sync();
    }
    st.pos = e.end;
    st.documents = r.documents;
    st.file_bytes_done = e.file_bytes_done;
    st.train_shards = train.shards();
    st.val_shards = val.shards();
    st.train_partial = train.partial();
    st.val_partial = val.partial();
    st.train_tokens = train.total();
    st.val_tokens = val.total();
    write_state(o.out, fingerprint, st);
    const auto now = clock::now();
    if (!o.quiet && (e.last || now - last_log >= std::chrono::seconds(2))) {
      last_log = now;
      const double secs = std::max(1e-9, std::chrono::duration<double>(now - t0).count());
      const double done = static_cast<double>(e.file_bytes_done);
      const double rate = (done - file_bytes_at_start) / secs;  // bytes of the files per second
      const double eta = rate > 0 ? (total_file_bytes - done) / rate : 0;
      HUGINN_LOG_INFO("data prepare: %s of %s (%.1f%%), text %.1f MB/s, %.2f M tokens/s, %llu tokens, "
                      "%llu documents, ETA %s", human_bytes(done).c_str(),
                      human_bytes(static_cast<double>(total_file_bytes)).c_str(),
                      total_file_bytes ? 100.0 * done / total_file_bytes : 100.0, text_bytes / secs / 1e6,
                      tokens / secs / 1e6, static_cast<unsigned long long>(st.train_tokens + st.val_tokens),
                      static_cast<unsigned long long>(r.documents), human_seconds(eta).c_str());
    }
  });
  for (;;) {
    prep::Batch b;
    if (!queue.pop(&b)) {
      if (auto e = queue.error()) std::rethrow_exception(e);
      throw Error("data prepare: the input reader stopped");
    }
    Encoded e = encode_batch(b, tok, r.eot_id, train.token_bytes(), o.inputs, pool);
    spare.put(std::move(b.bytes));  // the text is no longer needed: its memory goes back to the reader
    b = prep::Batch{};
    const bool last = e.last;
    writer.submit(std::move(e));
    if (last) break;
  }
  writer.wait();
}

}  // namespace

PrepareResult prepare_data(const PrepareOptions& o) {
  if (o.inputs.empty()) throw Error("data prepare: no --input files");
  if (!(o.val_fraction >= 0.0 && o.val_fraction < 1.0))
    throw Error("--val-fraction must be in [0, 1), got " + std::to_string(o.val_fraction));
  if (o.shard_tokens == 0) throw Error("--shard-tokens must be positive");
  if (o.max_doc_mb == 0 || o.max_doc_mb > 4096) throw Error("--max-doc-mb must be in [1, 4096]");
  if (o.batch_mb == 0 || o.batch_mb > 1024) throw Error("--batch-mb must be in [1, 1024]");
  for (const auto& in : o.inputs)
    if (!fs::is_regular_file(in)) throw Error(in + ": input file not found");
  auto tok = Tokenizer::load(o.tokenizer);
  const std::string tok_bytes = read_all(o.tokenizer);
  const uint64_t hash = fnv1a64(tok_bytes.data(), tok_bytes.size());

  std::error_code ec;
  fs::create_directories(o.out, ec);
  if (ec || !fs::is_directory(o.out))
    throw Error(o.out + ": cannot create the output directory" + (ec ? ": " + ec.message() : ""));
  PrepareResult r;
  r.vocab_size = static_cast<uint32_t>(tok->id_limit());
  r.eot_id = find_eot(*tok, o);
  const nlohmann::json fingerprint = run_fingerprint(o, hash, r.eot_id);
  const bool has_state = fs::exists(o.out + "/" + kStateFile);
  State st;
  if (o.resume) {
    if (!has_state) throw Error(o.out + ": no " + kStateFile + " to resume from (run without --resume)");
    st = read_state(o.out, fingerprint);
  } else {
    for (const char* split : {"train", "val"})
      if (!ShardSet::open(o.out, split, false).empty())
        throw Error(o.out + ": already holds " + split + " shards; choose an empty --out" +
                    (has_state ? " (or --resume, if that run was stopped)" : ""));
    if (has_state)
      throw Error(o.out + ": holds a stopped data prepare (" + kStateFile +
                  "); continue it with --resume, or choose an empty --out");
  }
  ShardWriter train(o.out, "train", r.vocab_size, r.eot_id, hash, o.shard_tokens);
  ShardWriter val(o.out, "val", r.vocab_size, r.eot_id, hash, o.shard_tokens);
  if (!st.done) {
    train.resume(st.train_shards, st.train_partial);
    val.resume(st.val_shards, st.val_partial);
  }
  train.set_total(st.train_tokens);
  val.set_total(st.val_tokens);
  r.documents = st.documents;
  if (st.done) {
    if (!o.quiet) HUGINN_LOG_INFO("data prepare: %s is already complete", o.out.c_str());
  } else {
    run_batches(o, *tok, r, st, fingerprint, train, val);
  }
  r.train_tokens = train.total();
  r.val_tokens = val.total();
  r.train_shards = st.done ? st.train_shards : train.shards();
  r.val_shards = st.done ? st.val_shards : val.shards();
  return r;
}

}  // namespace huginn
