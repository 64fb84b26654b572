#include "train/prepare_input.h"

#include <zlib.h>
#include <zstd.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include <cstdio>
#include <cstring>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "huginn/error.h"
#include "tokenizer/unicode.h"
#include "util/json.h"

namespace huginn::prep {

namespace {

constexpr size_t kReadChunk = 1 << 20;

class File {
 public:
  explicit File(const std::string& path) : path_(path), f_(std::fopen(path.c_str(), "rb")) {
    if (!f_) throw Error(path + ": cannot open input file: " + std::strerror(errno));
  }
  ~File() { std::fclose(f_); }
  size_t read(void* buf, size_t n) {
    size_t got = std::fread(buf, 1, n, f_);
    if (got < n && std::ferror(f_)) throw Error(path_ + ": read error");
    pos_ += got;
    return got;
  }
  uint64_t pos() const { return pos_; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  FILE* f_;
  uint64_t pos_ = 0;
};

class PlainStream : public InputStream {
 public:
  explicit PlainStream(const std::string& path) : file_(path) {}
  size_t read(char* buf, size_t n) override { return file_.read(buf, n); }
  uint64_t file_pos() const override { return file_.pos(); }
  const char* format() const override { return "text"; }

 private:
  File file_;
};

class GzipStream : public InputStream {
 public:
  explicit GzipStream(const std::string& path) : file_(path), in_(kReadChunk) {
    if (inflateInit2(&z_, 15 + 32) != Z_OK) throw Error(path + ": cannot start gzip decompression");
  }
  ~GzipStream() override { inflateEnd(&z_); }
  size_t read(char* buf, size_t n) override {
    z_.next_out = reinterpret_cast<Bytef*>(buf);
    z_.avail_out = static_cast<uInt>(n);
    while (z_.avail_out == n && !done_) {
      if (z_.avail_in == 0) {
        z_.avail_in = static_cast<uInt>(file_.read(in_.data(), in_.size()));
        z_.next_in = in_.data();
        if (z_.avail_in == 0) {
          if (!clean_end_) throw Error(file_.path() + ": truncated gzip stream");
          done_ = true;
          break;
        }
      }
      int rc = inflate(&z_, Z_NO_FLUSH);
      clean_end_ = false;
      if (rc == Z_STREAM_END) {  // another member may follow
        clean_end_ = true;
        inflateReset(&z_);
      } else if (rc != Z_OK && rc != Z_BUF_ERROR) {
        throw Error(file_.path() + ": corrupt gzip data" + (z_.msg ? std::string(": ") + z_.msg : ""));
      }
    }
    return n - z_.avail_out;
  }
  uint64_t file_pos() const override { return file_.pos() - z_.avail_in; }
  const char* format() const override { return "gzip"; }

 private:
  File file_;
  std::vector<Bytef> in_;
  z_stream z_{};
  bool done_ = false, clean_end_ = false;
};

class ZstdStream : public InputStream {
 public:
  explicit ZstdStream(const std::string& path) : file_(path), in_(ZSTD_DStreamInSize()) {
    dctx_ = ZSTD_createDCtx();
    if (!dctx_) throw Error(path + ": cannot start zstd decompression");
  }
  ~ZstdStream() override { ZSTD_freeDCtx(dctx_); }
  size_t read(char* buf, size_t n) override {
    ZSTD_outBuffer out{buf, n, 0};
    while (out.pos == 0) {
      if (input_.pos == input_.size) {
        input_.size = file_.read(in_.data(), in_.size());
        input_.src = in_.data();
        input_.pos = 0;
        if (input_.size == 0) {
          if (pending_ != 0) throw Error(file_.path() + ": truncated zstd stream");
          return 0;
        }
      }
      pending_ = ZSTD_decompressStream(dctx_, &out, &input_);
      if (ZSTD_isError(pending_))
        throw Error(file_.path() + ": corrupt zstd data: " + ZSTD_getErrorName(pending_));
    }
    return out.pos;
  }
  uint64_t file_pos() const override { return file_.pos() - (input_.size - input_.pos); }
  const char* format() const override { return "zstd"; }

 private:
  File file_;
  std::vector<char> in_;
  ZSTD_inBuffer input_{nullptr, 0, 0};
  ZSTD_DCtx* dctx_ = nullptr;
  size_t pending_ = 0;
};

}  // namespace

std::unique_ptr<InputStream> InputStream::open(const std::string& path) {
  unsigned char magic[4] = {0, 0, 0, 0};
  {
    File probe(path);
    probe.read(magic, 4);
  }
  if (magic[0] == 0x28 && magic[1] == 0xB5 && magic[2] == 0x2F && magic[3] == 0xFD)
    return std::make_unique<ZstdStream>(path);
  if (magic[0] == 0x1F && magic[1] == 0x8B) return std::make_unique<GzipStream>(path);
  return std::make_unique<PlainStream>(path);
}

bool is_jsonl_name(const std::string& path) {
  std::string p = path;
  for (const char* ext : {".zst", ".zstd", ".gz"})
    if (p.size() > std::strlen(ext) && p.compare(p.size() - std::strlen(ext), std::string::npos, ext) == 0)
      p.resize(p.size() - std::strlen(ext));
  return p.size() >= 6 && p.compare(p.size() - 6, 6, ".jsonl") == 0;
}

// ---------------------------------------------------------------------------------------------
// JSONL: a validating scanner for the usual line, the library for everything else.

namespace {

struct JsonScan {
  std::string_view s;
  size_t i = 0;
  int depth = 0;

  void ws() {
    while (i < s.size() && (s[i] == ' ' || s[i] == '\t' || s[i] == '\r' || s[i] == '\n')) ++i;
  }
  static int hex(char c) {
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
  }
  bool hex4(uint32_t* v) {
    if (i + 4 > s.size()) return false;
    *v = 0;
    for (int k = 0; k < 4; ++k) {
      int h = hex(s[i + k]);
      if (h < 0) return false;
      *v = *v * 16 + static_cast<uint32_t>(h);
    }
    i += 4;
    return true;
  }
  // Past plain string bytes: up to a quote, a backslash or a control character (or the end),
  // sixteen (SSE2) or eight bytes at a time. Returns whether a byte >= 0x80 may be among them
  // (UTF-8 to check).
  bool plain_run() {
    constexpr uint64_t kOnes = 0x0101010101010101ULL, kHigh = 0x8080808080808080ULL;
    uint64_t seen = 0;
#if defined(__SSE2__)  // every x86-64: sixteen bytes at a time
    const __m128i quote = _mm_set1_epi8('"'), slash = _mm_set1_epi8('\\'), ctl = _mm_set1_epi8(0x1F);
    while (i + 16 <= s.size()) {
      const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s.data() + i));
      const __m128i stop = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, slash)),
                                        _mm_cmpeq_epi8(_mm_min_epu8(v, ctl), v));  // v <= 0x1F
      const unsigned m = static_cast<unsigned>(_mm_movemask_epi8(stop));
      const unsigned high = static_cast<unsigned>(_mm_movemask_epi8(v));  // bytes >= 0x80
      if (m) {
        const unsigned k = static_cast<unsigned>(__builtin_ctz(m));
        i += k;
        return seen != 0 || (high & ((1u << k) - 1)) != 0;
      }
      if (high) seen = kHigh;  // (as the word loop below marks it)
      i += 16;
    }
#endif
    while (i + 8 <= s.size()) {
      uint64_t w;
      std::memcpy(&w, s.data() + i, 8);
      // High bit of each byte that is '"', '\\' or < 0x20. Borrows can only mark bytes above
      // a marked one, so the lowest mark is exact (the format and every host are little-endian).
      const uint64_t q = w ^ (kOnes * '"'), b = w ^ (kOnes * '\\');
      const uint64_t m = (((q - kOnes) & ~q) | ((b - kOnes) & ~b) | ((w - kOnes * 0x20) & ~w)) & kHigh;
      if (m) {
        const size_t k = static_cast<size_t>(__builtin_ctzll(m)) / 8;
        seen |= k ? w << (64 - 8 * k) : 0;  // only the k plain bytes
        i += k;
        return seen & kHigh;
      }
      seen |= w;
      i += 8;
    }
    while (i < s.size() && s[i] != '"' && s[i] != '\\' && static_cast<uint8_t>(s[i]) >= 0x20)
      seen |= static_cast<uint8_t>(s[i++]);
    return seen & kHigh;
  }
  // A string at s[i] == '"'; decoded into *out when out is given.
  bool string(std::string* out) {
    ++i;
    size_t run = i;
    for (;;) {
      const bool non_ascii = plain_run();
      if (i >= s.size() || static_cast<uint8_t>(s[i]) < 0x20) return false;
      if (non_ascii && !tok::utf8_valid(s.substr(run, i - run))) return false;
      if (out) out->append(s.data() + run, i - run);
      if (s[i] == '"') {
        ++i;
        return true;
      }
      if (++i >= s.size()) return false;
      char e = s[i++];
      char c;
      switch (e) {
        case '"': c = '"'; break;
        case '\\': c = '\\'; break;
        case '/': c = '/'; break;
        case 'b': c = '\b'; break;
        case 'f': c = '\f'; break;
        case 'n': c = '\n'; break;
        case 'r': c = '\r'; break;
        case 't': c = '\t'; break;
        case 'u': {
          uint32_t cp;
          if (!hex4(&cp)) return false;
          if (cp >= 0xDC00 && cp <= 0xDFFF) return false;
          if (cp >= 0xD800 && cp <= 0xDBFF) {
            uint32_t lo;
            if (i + 2 > s.size() || s[i] != '\\' || s[i + 1] != 'u') return false;
            i += 2;
            if (!hex4(&lo) || lo < 0xDC00 || lo > 0xDFFF) return false;
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
          }
          if (out) tok::utf8_append(*out, static_cast<int32_t>(cp));
          run = i;
          continue;
        }
        default: return false;
      }
      if (out) out->push_back(c);
      run = i;
    }
  }
  bool number() {
    size_t start = i;
    if (i < s.size() && s[i] == '-') ++i;
    if (i >= s.size()) return false;
    if (s[i] == '0') {
      ++i;
    } else if (s[i] >= '1' && s[i] <= '9') {
      while (i < s.size() && s[i] >= '0' && s[i] <= '9') ++i;
    } else {
      return false;
    }
    if (i < s.size() && s[i] == '.') {
      if (++i >= s.size() || s[i] < '0' || s[i] > '9') return false;
      while (i < s.size() && s[i] >= '0' && s[i] <= '9') ++i;
    }
    if (i < s.size() && (s[i] == 'e' || s[i] == 'E')) {
      ++i;
      if (i < s.size() && (s[i] == '+' || s[i] == '-')) ++i;
      if (i >= s.size() || s[i] < '0' || s[i] > '9') return false;
      while (i < s.size() && s[i] >= '0' && s[i] <= '9') ++i;
    }
    return i > start;
  }
  bool literal(std::string_view w) {
    if (s.substr(i, w.size()) != w) return false;
    i += w.size();
    return true;
  }
  // Any value (skipped); nesting within the bounded parser's depth.
  bool value() {
    ws();
    if (i >= s.size()) return false;
    switch (s[i]) {
      case '"': return string(nullptr);
      case 't': return literal("true");
      case 'f': return literal("false");
      case 'n': return literal("null");
      case '{':
      case '[': {
        if (++depth > 32) return false;
        const char close = s[i] == '{' ? '}' : ']';
        const bool object = close == '}';
        ++i;
        ws();
        if (i < s.size() && s[i] == close) {
          ++i;
          --depth;
          return true;
        }
        for (;;) {
          if (object) {
            ws();
            if (i >= s.size() || s[i] != '"' || !string(nullptr)) return false;
            ws();
            if (i >= s.size() || s[i++] != ':') return false;
          }
          if (!value()) return false;
          ws();
          if (i >= s.size()) return false;
          if (s[i] == ',') {
            ++i;
            continue;
          }
          if (s[i++] != close) return false;
          --depth;
          return true;
        }
      }
      default: return number();
    }
  }
};

}  // namespace

bool jsonl_text_fast(std::string_view line, std::string& out) {
  JsonScan j{line};
  j.ws();
  if (j.i >= line.size() || line[j.i] != '{') return false;
  ++j.i;
  bool found = false;
  j.ws();
  if (j.i < line.size() && line[j.i] == '}') return false;  // no "text"
  for (;;) {
    j.ws();
    if (j.i >= line.size() || line[j.i] != '"') return false;
    const size_t key_start = j.i;
    if (!j.string(nullptr)) return false;
    const bool is_text = line.substr(key_start, j.i - key_start) == "\"text\"";
    j.ws();
    if (j.i >= line.size() || line[j.i++] != ':') return false;
    j.ws();
    if (is_text) {
      if (found || j.i >= line.size() || line[j.i] != '"') return false;  // (duplicates: library)
      out.clear();
      if (!j.string(&out)) return false;
      found = true;
    } else if (!j.value()) {
      return false;
    }
    j.ws();
    if (j.i >= line.size()) return false;
    if (line[j.i] == ',') {
      ++j.i;
      continue;
    }
    if (line[j.i++] != '}') return false;
    j.ws();
    return found && j.i == line.size();
  }
}

void jsonl_text(std::string_view line, const std::string& file, uint64_t line_no, std::string& out) {
  if (jsonl_text_fast(line, out)) return;
  const std::string where = file + ":" + std::to_string(line_no);
  nlohmann::json j = parse_json(std::string(line), where);
  if (!j.is_object() || !j.contains("text") || !j["text"].is_string())
    throw Error(where + ": expected an object with a string field \"text\"");
  out = j["text"].get<std::string>();
}

// ---------------------------------------------------------------------------------------------
// DocReader

DocReader::DocReader(std::vector<std::string> inputs, Position start, uint64_t max_doc_bytes,
                     uint64_t batch_bytes, uint64_t batch_docs)
    : inputs_(std::move(inputs)), max_doc_(max_doc_bytes), batch_bytes_(batch_bytes),
      batch_docs_(batch_docs), pos_(start) {
  for (const std::string& p : inputs_) file_sizes_.push_back(std::filesystem::file_size(p));
}

DocReader::~DocReader() = default;

bool DocReader::open_next() {
  if (pos_.input >= inputs_.size()) return false;
  in_ = InputStream::open(inputs_[pos_.input]);
  buf_.clear();
  head_ = 0;
  eof_ = false;
  opened_ = true;
  // Resuming inside this input: read up to the position again (compressed inputs cannot seek).
  for (uint64_t skip = pos_.offset; skip > 0;) {
    buf_.resize(std::min<uint64_t>(skip, kReadChunk));
    size_t got = in_->read(buf_.data(), buf_.size());
    if (got == 0)
      throw Error(inputs_[pos_.input] + ": shorter than when data prepare began (resume offset " +
                  std::to_string(pos_.offset) + ")");
    skip -= got;
  }
  buf_.clear();
  return true;
}

bool DocReader::fill(size_t want) {
  while (buf_.size() - head_ < want && !eof_) {
    if (head_ > 0 && head_ * 2 >= buf_.size()) {  // drop what batches have taken
      buf_.erase(0, head_);
      head_ = 0;
    }
    const size_t old = buf_.size();
    buf_.resize(old + kReadChunk);
    const size_t got = in_->read(buf_.data() + old, kReadChunk);
    buf_.resize(old + got);
    eof_ = got == 0;
  }
  return buf_.size() - head_ >= want;
}

// One JSONL line (a blank one is skipped).
void DocReader::add_jsonl(Batch& b) {
  size_t nl, scanned = 0;  // (relative to head_: fill() may move the buffer)
  for (;;) {
    nl = buf_.find('\n', head_ + scanned);
    if (nl != std::string::npos) break;
    scanned = buf_.size() - head_;
    if (scanned > max_doc_)
      throw Error(inputs_[pos_.input] + ":" + std::to_string(pos_.line + 1) + ": a line of more than " +
                  std::to_string(max_doc_) + " bytes (the --max-doc-mb bound)");
    if (eof_) break;
    fill(scanned + kReadChunk);
  }
  const size_t end = nl == std::string::npos ? buf_.size() : nl;
  const std::string_view line(buf_.data() + head_, end - head_);
  if (line.size() > max_doc_)
    throw Error(inputs_[pos_.input] + ":" + std::to_string(pos_.line + 1) + ": a line of more than " +
                std::to_string(max_doc_) + " bytes (the --max-doc-mb bound)");
  ++pos_.line;
  if (line.find_first_not_of(" \t\r") != std::string_view::npos) {
    b.docs.push_back({b.bytes.size(), line.size(), pos_.input, pos_.line, true, true});
    b.bytes.append(line);
  }
  const size_t used = end - head_ + (nl == std::string::npos ? 0 : 1);
  head_ += used;
  pos_.offset += used;
}

// A text file is one document, taken in pieces of at most max_doc_ bytes cut after a line end
// (or at a character boundary in a line longer than that).
void DocReader::add_text(Batch& b) {
  fill(max_doc_ + 1);
  const size_t avail = buf_.size() - head_;
  size_t take = avail;
  bool ends = true;
  if (avail > max_doc_) {
    ends = false;
    const std::string_view window(buf_.data() + head_, max_doc_);
    size_t nl = window.rfind('\n');
    take = nl != std::string_view::npos ? nl + 1 : max_doc_;
    while (nl == std::string_view::npos && take > 1 &&
           (static_cast<uint8_t>(buf_[head_ + take]) & 0xC0) == 0x80)
      --take;
  }
  b.docs.push_back({b.bytes.size(), take, pos_.input, 0, false, ends});
  b.bytes.append(buf_, head_, take);
  head_ += take;
  pos_.offset += take;
  if (ends) {  // the next input: a resume at this position must not see this one again
    ++pos_.input;
    pos_.offset = pos_.line = 0;
    opened_ = false;
  }
}

Batch DocReader::next(std::string buffer) {
  Batch b;
  b.bytes = std::move(buffer);
  b.bytes.clear();
  b.bytes.reserve(batch_bytes_ + kReadChunk);  // not grown (and copied) by doubling
  for (;;) {
    if (!opened_ && !open_next()) {
      b.last = true;
      break;
    }
    const bool jsonl = is_jsonl_name(inputs_[pos_.input]);
    if (jsonl) {
      if (!fill(1)) {  // this input is done
        ++pos_.input;
        pos_.offset = pos_.line = 0;
        opened_ = false;
        continue;
      }
      add_jsonl(b);
    } else {
      add_text(b);
    }
    if (b.bytes.size() >= batch_bytes_ || b.docs.size() >= batch_docs_) break;
  }
  b.end = pos_;
  uint64_t done = 0;
  for (uint32_t k = 0; k < pos_.input && k < file_sizes_.size(); ++k) done += file_sizes_[k];
  if (opened_ && in_) done += in_->file_pos();
  b.file_bytes_done = done;
  return b;
}

}  // namespace huginn::prep
