// safetensors files: reading (memory-mapped, validated), sharded sets, and atomic writing.
//
// Format: u64 little-endian header length N, N bytes of JSON header
// {name: {"dtype", "shape", "data_offsets": [begin, end)}, "__metadata__": {str: str}},
// then the packed tensor bytes; offsets count from the first data byte.
// Every malformed input raises huginn::Error naming the file and the tensor or field at fault.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <span>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "huginn/tensor.h"

namespace huginn {

struct SafetensorsEntry {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;  // byte range within the data section
  int64_t numel() const;
};

class SafetensorsFile {
 public:
  // Maps and validates the whole header: header length within the file (at most 100 MB), JSON
  // (nested at most 8 deep, no key twice), known dtypes, shapes of non-negative ints, offsets in
  // range, sizes matching dtype x shape, no overlaps.
  static std::shared_ptr<SafetensorsFile> open(const std::string& path);
  // The same from bytes in memory (the file's whole contents); `name` stands for the path in
  // messages. For fuzzing and for tests.
  static std::shared_ptr<SafetensorsFile> from_bytes(std::string bytes, const std::string& name);

  const std::string& path() const { return path_; }
  const std::vector<SafetensorsEntry>& entries() const { return entries_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const SafetensorsEntry* find(const std::string& name) const;  // nullptr when absent

  // A view of the stored bytes in their stored dtype (no copy; keeps the mapping alive).
  // Throws when the tensor is absent.
  Tensor raw(const std::string& name) const;
  // The tensor as F32: the mapped bytes themselves when stored F32 and 4-byte aligned,
  // otherwise a converted copy (BF16, F16, F64 are converted; other dtypes throw).
  Tensor as_f32(const std::string& name) const;

 private:
  static std::shared_ptr<SafetensorsFile> from_buffer(std::shared_ptr<const void> owner,
                                                      const uint8_t* data, uint64_t size,
                                                      const std::string& path);
  std::string path_;
  std::shared_ptr<const void> owner_;  // the mapping or buffer that data_ points into
  const uint8_t* data_ = nullptr;  // first data byte
  uint64_t data_size_ = 0;
  std::vector<SafetensorsEntry> entries_;
  std::map<std::string, size_t> index_;
  std::map<std::string, std::string> metadata_;
};

// A checkpoint's tensors across one file or several shards:
//  - DIR/model.safetensors.index.json ({"weight_map": {tensor: shard file}}) when present,
//  - else DIR/model.safetensors,
//  - or a path that is itself a .safetensors file.
// Shards named in the index must exist and must hold the tensors the index says they hold.
class TensorStore {
 public:
  static TensorStore open(const std::string& path);

  bool contains(const std::string& name) const { return where_.count(name) != 0; }
  std::vector<std::string> names() const;  // sorted
  const SafetensorsEntry& entry(const std::string& name) const;  // throws when absent
  const std::string& file_of(const std::string& name) const;     // throws when absent
  Tensor raw(const std::string& name) const;
  Tensor as_f32(const std::string& name) const;
  // The __metadata__ of the file holding `name` (throws when absent).
  const std::map<std::string, std::string>& metadata_of(const std::string& name) const;
  const std::string& source() const { return source_; }  // what was opened, for messages

 private:
  std::string source_;
  std::vector<std::shared_ptr<SafetensorsFile>> files_;
  std::map<std::string, size_t> where_;  // tensor name -> index into files_
};

// The tensor -> shard file map of a model.safetensors.index.json's text ({"weight_map": {...}}),
// validated: non-empty, shard names plain file names, at most 10,000 shards. `index_path` names
// the file in messages.
std::map<std::string, std::string> parse_safetensors_index(std::string_view text,
                                                           const std::string& index_path);

// Collects tensors and writes one safetensors file atomically (temp file + rename). Layout as the
// reference writer's: tensors packed in name order, header padded with spaces to a multiple of 8,
// __metadata__ last and only when non-empty, so re-writing a file's tensors reproduces its bytes.
class SafetensorsWriter {
 public:
  // Stores a copy of `t`'s elements (any strides) in t's dtype, or converted to `as` when given
  // (float dtypes only). Throws huginn::Error at once on a name already added.
  void add(const std::string& name, const Tensor& t);
  void add(const std::string& name, const Tensor& t, DType as);
  void add_metadata(const std::string& key, const std::string& value);
  // Throws huginn::Error on duplicate names or I/O failure; never leaves a partial file.
  void write(const std::string& path) const;

 private:
  struct Item {
    std::string name;
    DType dtype;
    std::vector<int64_t> shape;
    std::vector<uint8_t> bytes;
  };
  std::vector<Item> items_;
  std::map<std::string, std::string> metadata_;
};

// One tensor of a file written in pieces: name, dtype, shape.
struct SafetensorsSpec {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  int64_t nbytes() const;
};
using SafetensorsAppend = std::function<void(const void* bytes, size_t n)>;
using SafetensorsFill = std::function<void(const SafetensorsSpec&, const SafetensorsAppend&)>;
// Writes a safetensors file whose tensors are produced one at a time, for checkpoints larger
// than memory: the header first (the same layout as SafetensorsWriter's), then fill(spec, append)
// for each tensor in name order, which must append exactly spec.nbytes() bytes. Atomic (temp
// file + rename); throws huginn::Error naming the file and tensor on a size mismatch or I/O error.
void write_safetensors_streaming(const std::string& path, std::vector<SafetensorsSpec> specs,
                                 const std::map<std::string, std::string>& metadata,
                                 const SafetensorsFill& fill);
// For a SafetensorsFill: appends the elements of contiguous `t` stored as `as`, its bytes as
// they are when `as` is its dtype, else converted 1 Mi elements at a time (through F32 unless t
// is F32), so no whole converted copy is held. Float dtypes only; throws huginn::Error otherwise.
void append_as(const Tensor& t, DType as, const SafetensorsAppend& append);

}  // namespace huginn
