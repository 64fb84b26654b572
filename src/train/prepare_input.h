// Inputs of `huginn data prepare`: files read as byte streams, decompressed when they are zstd
// or gzip (known by their magic bytes), and cut into documents: JSONL lines (their "text" field
// extracted later, on the encoding threads) or whole text files (cut into pieces at line ends
// when larger than the document bound, so that memory stays bounded).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace huginn::prep {

// A decompressing reader of one file.
class InputStream {
 public:
  virtual ~InputStream() = default;
  // Opens `path`: zstd (magic 28 B5 2F FD), gzip (1F 8B; concatenated members too) or plain.
  static std::unique_ptr<InputStream> open(const std::string& path);
  // Up to n decompressed bytes into buf; 0 at the end. Throws huginn::Error naming the file.
  virtual size_t read(char* buf, size_t n) = 0;
  // Bytes of the file itself consumed so far (for progress on compressed inputs).
  virtual uint64_t file_pos() const = 0;
  virtual const char* format() const = 0;
};

// "a.jsonl", "a.jsonl.zst", "a.jsonl.gz": JSONL; anything else is text.
bool is_jsonl_name(const std::string& path);

// The "text" field of line `line_no` of JSONL file `file`, into `out` (its capacity reused). A
// fast scanner validates the line as JSON and decodes the string; a line it does not handle goes
// through the JSON library, whose error names the place. Throws huginn::Error naming FILE:LINE
// for a line that is not an object with a string field "text".
void jsonl_text(std::string_view line, const std::string& file, uint64_t line_no, std::string& out);
// The fast scanner alone: false when it cannot decide (tests compare it with the library).
bool jsonl_text_fast(std::string_view line, std::string& out);

// One document or piece of one, in a batch's byte buffer.
struct Doc {
  uint64_t offset = 0, size = 0;
  uint32_t input = 0;       // index into the inputs
  uint64_t line = 0;        // JSONL line number (1-based); 0 for text
  bool jsonl = false;
  bool ends_document = true;  // false for a piece of a text file that continues
};

// Where reading stands: the next byte of the decompressed input `input`, and its line number.
struct Position {
  uint32_t input = 0;
  uint64_t offset = 0;
  uint64_t line = 0;  // lines of a JSONL input before `offset`
};

// A batch of documents: closed when it holds batch_bytes of text or batch_docs documents, at a
// document (or piece) boundary, so batches do not depend on the thread count.
struct Batch {
  std::string bytes;
  std::vector<Doc> docs;
  Position end;  // reading resumes here after this batch
  uint64_t file_bytes_done = 0;  // of all inputs, for progress
  bool last = false;
};

// Reads the inputs from a position into batches.
class DocReader {
 public:
  DocReader(std::vector<std::string> inputs, Position start, uint64_t max_doc_bytes,
            uint64_t batch_bytes, uint64_t batch_docs);
  ~DocReader();
  // The next batch; batch.last is set on the final one (which may be empty). `buffer`: the bytes
  // of a finished batch, whose memory is reused (its contents are dropped): a fresh 16 MB buffer
  // costs page faults and the kernel's zeroing of every page.
  Batch next(std::string buffer = {});

 private:
  bool open_next();
  bool fill(size_t want);  // at least `want` bytes buffered unless the input ends
  void add_jsonl(Batch& b);
  void add_text(Batch& b);

  std::vector<std::string> inputs_;
  std::vector<uint64_t> file_sizes_;
  uint64_t max_doc_, batch_bytes_, batch_docs_;
  Position pos_;
  std::unique_ptr<InputStream> in_;
  bool opened_ = false, eof_ = false;
  std::string buf_;   // decompressed bytes not yet in a batch
  size_t head_ = 0;   // first unconsumed byte of buf_
};

}  // namespace huginn::prep
