// safetensors files: SafetensorsFile::open (header length, JSON header, dtypes, shapes, offsets,
// overlaps) and every tensor of an accepted file read back raw and as F32, through
// SafetensorsFile and TensorStore. Properties: an accepted entry's byte range lies in the data
// section and holds exactly numel x dtype bytes; raw() views exactly those bytes.
#include <cstring>

#include "fuzz_util.h"
#include "huginn/safetensors.h"

using namespace huginn;

namespace {

// Touches every byte of a tensor so ASan sees an out-of-range view.
uint64_t touch(const Tensor& t) {
  const auto* p = static_cast<const uint8_t*>(t.raw());
  uint64_t h = 0;
  for (size_t i = 0; i < t.nbytes(); ++i) h = h * 31 + p[i];
  return h;
}

bool f32_convertible(DType d) {
  return d == DType::kF32 || d == DType::kBF16 || d == DType::kF16 || d == DType::kF64;
}

}  // namespace

HUGINN_FUZZ_TARGET(safetensors) {
  const std::string path = fuzz::scratch_dir() + "/in.safetensors";
  fuzz::write_file(path, data, size);
  uint64_t sink = 0;
  std::vector<std::string> names;  // of the file as opened, when it opens
  const bool opened = fuzz::accepts([&] {
    auto f = SafetensorsFile::open(path);
    for (const SafetensorsEntry& e : f->entries()) names.push_back(e.name);
    for (const SafetensorsEntry& e : f->entries()) {
      fuzz::check(e.begin <= e.end && e.end <= size, e.name + ": byte range outside the file");
      fuzz::check(e.end - e.begin == storage_bytes(e.dtype, e.numel()),
                  e.name + ": byte range does not match dtype x shape");
      fuzz::check(f->find(e.name) == &e, e.name + ": find() does not return the entry");
      const Tensor raw = f->raw(e.name);
      fuzz::check(raw.nbytes() == e.end - e.begin, e.name + ": raw() has another size");
      sink += touch(raw);
      if (f32_convertible(e.dtype)) sink += touch(f->as_f32(e.name));
    }
  });
  // The in-memory reader must agree with the file reader.
  std::vector<std::string> from_bytes;
  const bool parsed = fuzz::accepts([&] {
    auto f = SafetensorsFile::from_bytes(std::string(reinterpret_cast<const char*>(data), size),
                                         "in.safetensors");
    for (const SafetensorsEntry& e : f->entries()) from_bytes.push_back(e.name);
  });
  fuzz::check(parsed == opened && from_bytes == names,
              "SafetensorsFile::from_bytes and ::open disagree on the same bytes");
  fuzz::accepts([&] {
    const TensorStore store = TensorStore::open(path);
    for (const std::string& name : store.names()) {
      sink += touch(store.raw(name));
      if (f32_convertible(store.entry(name).dtype)) sink += touch(store.as_f32(name));
    }
  });
  asm volatile("" : : "r"(sink));
}
