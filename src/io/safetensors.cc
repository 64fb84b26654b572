// safetensors reading (validated, memory-mapped), sharded sets, and writing.
// Every check names the file and the tensor or field, what was expected and what was found:
// a malformed checkpoint is bad input, never a crash.
#include "huginn/safetensors.h"

#include <sys/stat.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <string_view>

#include "huginn/log.h"
#include "util/json.h"
#include "util/mapped_file.h"

namespace huginn {
namespace {

using json = nlohmann::json;

constexpr uint64_t kMaxHeader = 100ull << 20;  // 100 MB: far above any real header
constexpr int kMaxHeaderDepth = 8;              // a valid header needs 3 (header, entry, shape)
constexpr size_t kMaxShards = 10000;            // shards of one index (real ones: a few hundred)
constexpr const char* kMetadataKey = "__metadata__";

std::string q(const std::string& s) { return "'" + s + "'"; }

std::string known_dtypes() {
  std::string s;
  for (DType t : {DType::kF32, DType::kBF16, DType::kF16, DType::kF64, DType::kI32, DType::kI64,
                  DType::kU8}) {
    if (!s.empty()) s += ", ";
    s += dtype_name(t);
  }
  return s;
}

// A JSON value's type and a short rendering of it, for "found ..." in messages.
std::string describe(const json& v) { return json_preview(v); }

bool as_u64(const json& v, uint64_t* out) {
  if (v.is_number_unsigned()) {
    *out = v.get<uint64_t>();
    return true;
  }
  if (v.is_number_integer() && v.get<int64_t>() >= 0) {
    *out = static_cast<uint64_t>(v.get<int64_t>());
    return true;
  }
  return false;
}

std::string shape_text(const std::vector<int64_t>& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) {
    if (i) r += ", ";
    r += std::to_string(s[i]);
  }
  return r + "]";
}

// Parses the header: valid JSON that ends exactly where the length field says (trailing spaces,
// the writers' padding, allowed), nested at most kMaxHeaderDepth deep, no key twice (plain
// parsing would keep the last of two entries for one tensor).
json parse_header(const std::string& path, const char* begin, const char* end) {
  JsonLimits lim;
  lim.max_depth = kMaxHeaderDepth;
  lim.max_bytes = kMaxHeader;
  json h = parse_json(std::string_view(begin, static_cast<size_t>(end - begin)), path + ": header", lim);
  if (!h.is_object())
    throw Error(path + ": header must be a JSON object, found " + describe(h));
  return h;
}

std::map<std::string, std::string> parse_metadata(const std::string& path, const json& m) {
  if (!m.is_object())
    throw Error(path + ": " + kMetadataKey + " must be an object of strings, found " + describe(m));
  std::map<std::string, std::string> out;
  for (auto it = m.begin(); it != m.end(); ++it) {
    if (!it.value().is_string())
      throw Error(path + ": " + kMetadataKey + "[" + q(it.key()) + "] must be a string, found " +
                  describe(it.value()));
    out[it.key()] = it.value().get<std::string>();
  }
  return out;
}

SafetensorsEntry parse_entry(const std::string& path, const std::string& name, const json& v,
                             uint64_t data_size) {
  const std::string where = path + ": tensor " + q(name);
  if (!v.is_object())
    throw Error(where + ": entry must be an object {dtype, shape, data_offsets}, found " +
                describe(v));
  SafetensorsEntry e;
  e.name = name;
  auto dt = v.find("dtype");
  if (dt == v.end() || !dt->is_string())
    throw Error(where + ": 'dtype' must be a string" +
                (dt == v.end() ? std::string(", but it is missing") : ", found " + describe(*dt)));
  if (!dtype_from_name(dt->get<std::string>(), &e.dtype))
    throw Error(where + ": unknown dtype " + q(dt->get<std::string>()) + " (supported: " +
                known_dtypes() + ")");

  auto sh = v.find("shape");
  if (sh == v.end() || !sh->is_array())
    throw Error(where + ": 'shape' must be a list of non-negative integers" +
                (sh == v.end() ? std::string(", but it is missing") : ", found " + describe(*sh)));
  if (sh->size() > static_cast<size_t>(kMaxDims))
    throw Error(where + ": shape has " + std::to_string(sh->size()) + " dimensions, at most " +
                std::to_string(kMaxDims) + " are supported");
  uint64_t numel = 1;
  bool overflow = false;
  for (const json& d : *sh) {
    uint64_t n;
    if (!as_u64(d, &n) || n > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
      throw Error(where + ": 'shape' must be a list of non-negative integers, found " +
                  describe(*sh));
    e.shape.push_back(static_cast<int64_t>(n));
    if (n != 0 && numel > std::numeric_limits<uint64_t>::max() / n) overflow = true;
    numel *= n;
  }

  auto off = v.find("data_offsets");
  uint64_t b = 0, en = 0;
  if (off == v.end() || !off->is_array() || off->size() != 2 || !as_u64((*off)[0], &b) ||
      !as_u64((*off)[1], &en))
    throw Error(where + ": 'data_offsets' must be two non-negative integers [begin, end]" +
                (off == v.end() ? std::string(", but it is missing") : ", found " + describe(*off)));
  if (b > en)
    throw Error(where + ": data_offsets [" + std::to_string(b) + ", " + std::to_string(en) +
                "] has begin > end");
  if (en > data_size)
    throw Error(where + ": data_offsets [" + std::to_string(b) + ", " + std::to_string(en) +
                "] run past the end of the data section, which holds " +
                std::to_string(data_size) + " bytes (file truncated?)");
  e.begin = b;
  e.end = en;
  const uint64_t es = dtype_size(e.dtype);
  if (overflow || numel > std::numeric_limits<uint64_t>::max() / es || numel * es != en - b)
    throw Error(where + ": " + dtype_name(e.dtype) + " " + shape_text(e.shape) + " needs " +
                (overflow ? std::string("more than 2^64") : std::to_string(numel * es)) +
                " bytes, but data_offsets [" + std::to_string(b) + ", " + std::to_string(en) +
                "] hold " + std::to_string(en - b));
  return e;
}

// The tensors' byte ranges must tile the data section exactly, as the reference reader demands:
// in offset order each begins where the previous one ended, the first at 0, the last at the end
// of the file. A header length off by a byte, a lost tensor or trailing garbage all break this
// (and would otherwise shift every tensor or pass unnoticed).
void check_tiling(const std::string& path, const std::vector<SafetensorsEntry>& entries,
                  uint64_t data_size) {
  std::vector<const SafetensorsEntry*> order;
  order.reserve(entries.size());
  for (const auto& e : entries) order.push_back(&e);
  std::sort(order.begin(), order.end(), [](auto* a, auto* b) {
    if (a->begin != b->begin) return a->begin < b->begin;
    return a->end != b->end ? a->end < b->end : a->name < b->name;
  });
  auto range = [](const SafetensorsEntry* e) {
    return q(e->name) + " [" + std::to_string(e->begin) + ", " + std::to_string(e->end) + ")";
  };
  uint64_t at = 0;
  const SafetensorsEntry* prev = nullptr;
  for (const SafetensorsEntry* e : order) {
    if (e->begin < at)
      throw Error(path + ": tensors " + range(prev) + " and " + range(e) +
                  " overlap in the data section");
    if (e->begin > at)
      throw Error(path + ": bytes [" + std::to_string(at) + ", " + std::to_string(e->begin) +
                  ") of the data section belong to no tensor (" +
                  (prev ? "between tensor " + range(prev) + " and " : std::string("before ")) +
                  "tensor " + range(e) +
                  "); data_offsets must tile the data section without gaps");
    at = e->end;
    prev = e;
  }
  if (at != data_size)
    throw Error(path + ": the tensors end at byte " + std::to_string(at) +
                " of the data section" + (prev ? " (tensor " + range(prev) + ")" : std::string()) +
                ", but it holds " + std::to_string(data_size) + " bytes: " +
                std::to_string(data_size - at) +
                (data_size - at == 1 ? " byte belongs" : " bytes belong") +
                " to no tensor (header length wrong, or trailing bytes)");
}

bool is_dir(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}
bool is_file(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}
bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}
std::string dir_of(const std::string& p) {
  size_t slash = p.rfind('/');
  return slash == std::string::npos ? "." : p.substr(0, slash);
}

}  // namespace

int64_t SafetensorsEntry::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

// ---------------------------------------------------------------------------------------------
// SafetensorsFile

std::shared_ptr<SafetensorsFile> SafetensorsFile::open(const std::string& path) {
  auto file = MappedFile::open(path);
  const uint8_t* p = file->data();
  const uint64_t size = file->size();
  return from_buffer(std::move(file), p, size, path);
}

std::shared_ptr<SafetensorsFile> SafetensorsFile::from_bytes(std::string bytes,
                                                             const std::string& name) {
  auto owner = std::make_shared<std::string>(std::move(bytes));
  const auto* p = reinterpret_cast<const uint8_t*>(owner->data());
  const uint64_t size = owner->size();
  return from_buffer(std::move(owner), p, size, name);
}

std::shared_ptr<SafetensorsFile> SafetensorsFile::from_buffer(std::shared_ptr<const void> owner,
                                                              const uint8_t* p, uint64_t size,
                                                              const std::string& path) {
  auto f = std::make_shared<SafetensorsFile>();
  f->path_ = path;
  f->owner_ = std::move(owner);
  if (size < 8)
    throw Error(path + ": truncated: the file is " + std::to_string(size) +
                " bytes, shorter than the 8-byte header length field");
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = n << 8 | p[i];  // little-endian
  if (n > kMaxHeader)
    throw Error(path + ": header length " + std::to_string(n) + " is absurdly large (limit " +
                std::to_string(kMaxHeader) + " bytes; the file is " + std::to_string(size) +
                " bytes): not a safetensors file, or a corrupt one");
  if (n > size - 8)
    throw Error(path + ": truncated: header length " + std::to_string(n) + " is larger than the " +
                std::to_string(size - 8) + " bytes that follow it");
  const char* hb = reinterpret_cast<const char*>(p + 8);
  json h = parse_header(path, hb, hb + n);
  f->data_ = p + 8 + n;
  f->data_size_ = size - 8 - n;
  f->entries_.reserve(h.size());
  for (auto it = h.begin(); it != h.end(); ++it) {
    if (it.key() == kMetadataKey) {
      f->metadata_ = parse_metadata(path, it.value());
      continue;
    }
    f->entries_.push_back(parse_entry(path, it.key(), it.value(), f->data_size_));
  }
  check_tiling(path, f->entries_, f->data_size_);
  for (size_t i = 0; i < f->entries_.size(); ++i) f->index_[f->entries_[i].name] = i;
  return f;
}

const SafetensorsEntry* SafetensorsFile::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &entries_[it->second];
}

Tensor SafetensorsFile::raw(const std::string& name) const {
  const SafetensorsEntry* e = find(name);
  if (!e) throw Error(path_ + ": no tensor " + q(name));
  // The mapping is read-only: this view must not be written through.
  void* ptr = const_cast<uint8_t*>(data_ + e->begin);
  std::shared_ptr<void> owner(std::const_pointer_cast<void>(owner_), ptr);  // keeps the bytes alive
  return Tensor::wrap(ptr, std::span<const int64_t>(e->shape), e->dtype, std::move(owner));
}

Tensor SafetensorsFile::as_f32(const std::string& name) const {
  Tensor r = raw(name);
  const bool aligned = reinterpret_cast<uintptr_t>(r.raw()) % alignof(float) == 0;
  if (r.dtype() == DType::kF32 && aligned) return r;
  switch (r.dtype()) {
    case DType::kF32:
    case DType::kBF16:
    case DType::kF16:
    case DType::kF64: {
      Tensor out = Tensor::empty(r.shape(), DType::kF32);
      if (r.dtype() == DType::kF32) {
        std::memcpy(out.raw(), r.raw(), r.nbytes());
      } else if (r.dtype() == DType::kF64 &&
                 reinterpret_cast<uintptr_t>(r.raw()) % alignof(double) != 0) {
        Tensor tmp = r.clone();  // aligned copy before reading doubles
        convert_to_f32(tmp.raw(), DType::kF64, out.f32(), r.numel());
      } else {
        // 2-byte types: data offsets are even in any file whose header length is even; copy
        // otherwise so that uint16 loads stay aligned.
        if (reinterpret_cast<uintptr_t>(r.raw()) % 2 != 0) r = r.clone();
        convert_to_f32(r.raw(), r.dtype(), out.f32(), r.numel());
      }
      return out;
    }
    default:
      throw Error(path_ + ": tensor " + q(name) + " is " + dtype_name(r.dtype()) +
                  ", expected a floating-point dtype (F32, BF16, F16 or F64)");
  }
}

// ---------------------------------------------------------------------------------------------
// TensorStore

namespace {

// A shard is a file beside the index: no directories, so an index cannot point elsewhere.
bool is_plain_file_name(const std::string& s) {
  return !s.empty() && s != "." && s != ".." && s.find('/') == std::string::npos &&
         s.find('\0') == std::string::npos;
}

std::map<std::string, std::string> weight_map_of(const json& j, const std::string& index_path) {
  if (!j.is_object()) throw Error(index_path + ": expected a JSON object, found " + describe(j));
  auto wm = j.find("weight_map");
  if (wm == j.end())
    throw Error(index_path + ": missing 'weight_map' (expected {\"weight_map\": {tensor: shard}})");
  if (!wm->is_object())
    throw Error(index_path + ": 'weight_map' must be an object {tensor: shard file}, found " +
                describe(*wm));
  std::map<std::string, std::string> out;
  std::set<std::string> shards;
  for (auto it = wm->begin(); it != wm->end(); ++it) {
    if (!it.value().is_string() || !is_plain_file_name(it.value().get<std::string>()))
      throw Error(index_path + ": weight_map[" + q(it.key()) +
                  "] must be a shard file name (in the index's directory), found " +
                  describe(it.value()));
    out[it.key()] = it.value().get<std::string>();
    if (shards.insert(it.value().get<std::string>()).second && shards.size() > kMaxShards)
      throw Error(index_path + ": 'weight_map' names more than " + std::to_string(kMaxShards) +
                  " shard files (the limit)");
  }
  if (out.empty()) throw Error(index_path + ": 'weight_map' is empty");
  return out;
}

JsonLimits index_limits() {
  JsonLimits lim;
  lim.max_depth = kMaxHeaderDepth;
  lim.max_bytes = kMaxHeader;
  return lim;
}

}  // namespace

std::map<std::string, std::string> parse_safetensors_index(std::string_view text,
                                                           const std::string& index_path) {
  return weight_map_of(parse_json(text, index_path, index_limits()), index_path);
}

TensorStore TensorStore::open(const std::string& path) {
  TensorStore s;
  s.source_ = path;
  std::string index_path, single;
  if (is_dir(path)) {
    if (is_file(path + "/model.safetensors.index.json")) {
      index_path = path + "/model.safetensors.index.json";
    } else if (is_file(path + "/model.safetensors")) {
      single = path + "/model.safetensors";
    } else {
      throw Error(path + ": no checkpoint found (expected model.safetensors.index.json or "
                         "model.safetensors in this directory)");
    }
  } else if (is_file(path)) {
    (ends_with(path, ".index.json") ? index_path : single) = path;
  } else {
    throw Error(path + ": no such file or directory (expected a checkpoint directory or a "
                       ".safetensors file)");
  }

  if (!single.empty()) {
    s.files_.push_back(SafetensorsFile::open(single));
    for (const auto& e : s.files_[0]->entries()) s.where_[e.name] = 0;
    return s;
  }

  const std::map<std::string, std::string> wm =
      weight_map_of(read_json_file(index_path, index_limits()), index_path);
  const std::string dir = dir_of(index_path);
  std::map<std::string, size_t> shard_index;  // shard file name -> index into files_
  for (const auto& [tensor, shard] : wm) {
    if (shard_index.count(shard)) continue;
    const std::string sp = dir + "/" + shard;
    if (!is_file(sp))
      throw Error(index_path + ": shard " + q(shard) + " (which holds tensor " + q(tensor) +
                  ") does not exist at " + sp);
    shard_index[shard] = s.files_.size();
    s.files_.push_back(SafetensorsFile::open(sp));
  }
  for (const auto& [tensor, shard] : wm) {
    const size_t i = shard_index[shard];
    if (!s.files_[i]->find(tensor))
      throw Error(index_path + ": places tensor " + q(tensor) + " in shard " + q(shard) +
                  ", but " + s.files_[i]->path() + " does not contain it");
    s.where_[tensor] = i;
  }
  // A tensor stored in two shards is ambiguous even when the index picks one.
  std::map<std::string, size_t> holder;
  for (size_t i = 0; i < s.files_.size(); ++i) {
    for (const auto& e : s.files_[i]->entries()) {
      auto [it, fresh] = holder.emplace(e.name, i);
      if (!fresh)
        throw Error(index_path + ": tensor " + q(e.name) + " is present in two shards, " +
                    s.files_[it->second]->path() + " and " + s.files_[i]->path());
      if (!wm.count(e.name))
        HUGINN_LOG_WARN("%s: tensor '%s' in %s is not in the index weight_map; ignored",
                        index_path.c_str(), e.name.c_str(), s.files_[i]->path().c_str());
    }
  }
  return s;
}

std::vector<std::string> TensorStore::names() const {
  std::vector<std::string> out;
  out.reserve(where_.size());
  for (const auto& kv : where_) out.push_back(kv.first);
  return out;
}

const SafetensorsEntry& TensorStore::entry(const std::string& name) const {
  auto it = where_.find(name);
  if (it == where_.end()) throw Error(source_ + ": no tensor " + q(name));
  return *files_[it->second]->find(name);
}

const std::string& TensorStore::file_of(const std::string& name) const {
  auto it = where_.find(name);
  if (it == where_.end()) throw Error(source_ + ": no tensor " + q(name));
  return files_[it->second]->path();
}

const std::map<std::string, std::string>& TensorStore::metadata_of(const std::string& name) const {
  auto it = where_.find(name);
  if (it == where_.end()) throw Error(source_ + ": no tensor " + q(name));
  return files_[it->second]->metadata();
}

Tensor TensorStore::raw(const std::string& name) const {
  auto it = where_.find(name);
  if (it == where_.end()) throw Error(source_ + ": no tensor " + q(name));
  return files_[it->second]->raw(name);
}

Tensor TensorStore::as_f32(const std::string& name) const {
  auto it = where_.find(name);
  if (it == where_.end()) throw Error(source_ + ": no tensor " + q(name));
  return files_[it->second]->as_f32(name);
}

// ---------------------------------------------------------------------------------------------
// SafetensorsWriter

namespace {

std::string json_string(const std::string& s, const std::string& what) {
  try {
    return json(s).dump();
  } catch (const json::exception&) {
    throw Error("safetensors writer: " + what + " is not valid UTF-8");
  }
}

}  // namespace

void SafetensorsWriter::add(const std::string& name, const Tensor& t) { add(name, t, t.dtype()); }

void SafetensorsWriter::add(const std::string& name, const Tensor& t, DType as) {
  if (name.empty() || name == kMetadataKey)
    throw Error("safetensors writer: invalid tensor name " + q(name));
  for (const Item& it : items_)
    if (it.name == name) throw Error("safetensors writer: tensor " + q(name) + " added twice");
  Item item;
  item.name = name;
  item.dtype = as;
  item.shape.assign(t.shape().begin(), t.shape().end());
  const Tensor src = t.is_contiguous() ? t : t.clone();
  item.bytes.reserve(static_cast<size_t>(src.numel()) * dtype_size(as));
  try {
    append_as(src, as, [&](const void* b, size_t n) {
      const auto* p = static_cast<const uint8_t*>(b);
      item.bytes.insert(item.bytes.end(), p, p + n);
    });
  } catch (const Error& e) {
    throw Error("safetensors writer: tensor " + q(name) + ": " + e.what());
  }
  items_.push_back(std::move(item));
}

void SafetensorsWriter::add_metadata(const std::string& key, const std::string& value) {
  metadata_[key] = value;
}

namespace {

// The header of a file holding `specs` packed in the given order (the data offsets follow from
// it), __metadata__ last and only when non-empty, padded with spaces so that the data section is
// 8-byte aligned; returned with its u64 length in front.
std::string header_bytes(std::span<const SafetensorsSpec> specs,
                         const std::map<std::string, std::string>& metadata) {
  std::string h = "{";
  uint64_t off = 0;
  for (const SafetensorsSpec& it : specs) {
    if (h.size() > 1) h += ',';
    h += json_string(it.name, "tensor name " + q(it.name));
    h += ":{\"dtype\":\"";
    h += dtype_name(it.dtype);
    h += "\",\"shape\":[";
    for (size_t d = 0; d < it.shape.size(); ++d) {
      if (d) h += ',';
      h += std::to_string(it.shape[d]);
    }
    h += "],\"data_offsets\":[" + std::to_string(off) + ",";
    off += it.nbytes();
    h += std::to_string(off) + "]}";
  }
  if (!metadata.empty()) {
    if (h.size() > 1) h += ',';
    h += std::string("\"") + kMetadataKey + "\":{";
    bool first = true;
    for (const auto& [k, v] : metadata) {
      if (!first) h += ',';
      first = false;
      h += json_string(k, "metadata key " + q(k)) + ":" + json_string(v, "metadata " + q(k));
    }
    h += '}';
  }
  h += '}';
  h.append((8 - h.size() % 8) % 8, ' ');  // keeps the data section 8-byte aligned
  std::string out(8, '\0');
  const uint64_t n = h.size();
  for (int i = 0; i < 8; ++i) out[static_cast<size_t>(i)] = static_cast<char>(n >> (8 * i));
  return out + h;
}

// Sorted by name (the reference writer's order); a name twice is an error naming `path`.
template <class T>
void sort_by_name(std::vector<T>& v, const std::string& path, auto name_of) {
  std::sort(v.begin(), v.end(), [&](const T& a, const T& b) { return name_of(a) < name_of(b); });
  for (size_t i = 1; i < v.size(); ++i)
    if (name_of(v[i]) == name_of(v[i - 1]))
      throw Error(path + ": tensor " + q(name_of(v[i])) + " added twice");
}

}  // namespace

int64_t SafetensorsSpec::nbytes() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n * static_cast<int64_t>(dtype_size(dtype));
}

void SafetensorsWriter::write(const std::string& path) const {
  // Packed in name order, as the reference writer does; the header lists them in that order.
  std::vector<const Item*> order;
  for (const Item& it : items_) order.push_back(&it);
  sort_by_name(order, path, [](const Item* it) -> const std::string& { return it->name; });
  std::vector<SafetensorsSpec> specs;
  for (const Item* it : order) specs.push_back({it->name, it->dtype, it->shape});
  const std::string h = header_bytes(specs, metadata_);
  uint64_t off = 0;
  for (const Item* it : order) off += it->bytes.size();
  std::vector<uint8_t> buf(h.size() + off);
  std::memcpy(buf.data(), h.data(), h.size());
  uint8_t* d = buf.data() + h.size();
  for (const Item* it : order) {
    if (!it->bytes.empty()) std::memcpy(d, it->bytes.data(), it->bytes.size());
    d += it->bytes.size();
  }
  write_file_atomic(path, buf.data(), buf.size());
}

void write_safetensors_streaming(const std::string& path, std::vector<SafetensorsSpec> specs,
                                 const std::map<std::string, std::string>& metadata,
                                 const SafetensorsFill& fill) {
  sort_by_name(specs, path, [](const SafetensorsSpec& s) -> const std::string& { return s.name; });
  AtomicFileWriter out(path);
  const std::string h = header_bytes(specs, metadata);
  out.append(h.data(), h.size());
  for (const SafetensorsSpec& spec : specs) {
    int64_t written = 0;
    fill(spec, [&](const void* bytes, size_t n) {
      written += static_cast<int64_t>(n);
      if (written > spec.nbytes())
        throw Error(path + ": tensor " + q(spec.name) + ": more than its " +
                    std::to_string(spec.nbytes()) + " bytes were written");
      out.append(bytes, n);
    });
    if (written != spec.nbytes())
      throw Error(path + ": tensor " + q(spec.name) + ": " + std::to_string(written) +
                  " bytes were written, expected " + std::to_string(spec.nbytes()));
  }
  out.commit();
}

void append_as(const Tensor& t, DType as, const SafetensorsAppend& append) {
  const auto* src = static_cast<const uint8_t*>(t.raw());
  if (as == t.dtype()) {
    append(src, t.nbytes());
    return;
  }
  if (!is_float(t.dtype()) || !is_float(as))
    throw Error(std::string("cannot convert ") + dtype_name(t.dtype()) + " to " + dtype_name(as));
  constexpr int64_t kSlice = int64_t{1} << 20;
  const int64_t n_all = t.numel();
  std::vector<float> f(t.dtype() == DType::kF32 ? 0 : static_cast<size_t>(std::min(kSlice, n_all)));
  std::vector<uint8_t> out(static_cast<size_t>(std::min(kSlice, n_all)) * dtype_size(as));
  for (int64_t i = 0; i < n_all; i += kSlice) {
    const int64_t n = std::min(kSlice, n_all - i);
    const float* x = reinterpret_cast<const float*>(src) + i;
    if (t.dtype() != DType::kF32) {
      convert_to_f32(src + i * dtype_size(t.dtype()), t.dtype(), f.data(), n);
      x = f.data();
    }
    convert_from_f32(x, out.data(), as, n);
    append(out.data(), static_cast<size_t>(n) * dtype_size(as));
  }
}

}  // namespace huginn
