// Read-only memory mapping of a whole file; the mapping lives as long as any shared_ptr to it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace huginn {

class MappedFile {
 public:
  // Throws huginn::Error naming the path when the file cannot be opened or mapped.
  static std::shared_ptr<MappedFile> open(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  MappedFile() = default;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  std::string path_;
};

// Writes a file in pieces, atomically: a temporary file in the same directory, appended to, then
// fsync and rename on commit(); destroyed uncommitted, it removes the temporary file. For files
// too large to hold in memory (a multi-GB checkpoint shard). Throws huginn::Error naming `path`.
class AtomicFileWriter {
 public:
  explicit AtomicFileWriter(std::string path);
  ~AtomicFileWriter();
  AtomicFileWriter(const AtomicFileWriter&) = delete;
  AtomicFileWriter& operator=(const AtomicFileWriter&) = delete;
  void append(const void* bytes, size_t n);
  void commit();

 private:
  void abandon();
  std::string path_, tmp_;
  int fd_ = -1;
};

// Writes `bytes` to `path` atomically: a temporary file in the same directory, fsync, rename.
void write_file_atomic(const std::string& path, const void* bytes, size_t n);

}  // namespace huginn
