// huginn convert: rewrites a checkpoint's tensors in another dtype and/or split into N shards
// (HF layout: model-00001-of-0000N.safetensors + model.safetensors.index.json), copying
// config.json. TensorStore in, SafetensorsWriter out, one shard at a time.
// --dtype q8 quantizes the big matrices only (names::is_matrix) into NAME (I8) +
// NAME.q8_scales (F16), with __metadata__ huginn.weight_format = q8_0; everything else is kept
// as stored. Model::load reads such files back (--dtype auto keeps them Q8 in memory).
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>

#include "cli/command.h"
#include "huginn/config.h"
#include "huginn/error.h"
#include "huginn/model.h"
#include "huginn/safetensors.h"
#include "util/mapped_file.h"

namespace huginn::cli {
namespace {

namespace fs = std::filesystem;

struct ConvertArgs {
  std::string model, out, dtype = "keep";
  int shards = 1;
};

bool is_float(DType t) {
  return t == DType::kF32 || t == DType::kBF16 || t == DType::kF16 || t == DType::kF64;
}

std::string shard_name(int i, int n) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "model-%05d-of-%05d.safetensors", i + 1, n);
  return buf;
}

// Splits `names` (sorted) into `n` contiguous, non-empty groups of roughly equal bytes.
std::vector<std::vector<std::string>> split(const std::vector<std::string>& names,
                                            const std::vector<uint64_t>& bytes, int n) {
  uint64_t total = 0;
  for (uint64_t b : bytes) total += b;
  std::vector<std::vector<std::string>> groups(static_cast<size_t>(n));
  uint64_t cum = 0;
  size_t s = 0;
  for (size_t i = 0; i < names.size(); ++i) {
    groups[s].push_back(names[i]);
    cum += bytes[i];
    const size_t left_tensors = names.size() - i - 1, left_shards = groups.size() - s - 1;
    if (left_shards > 0 &&
        (left_tensors == left_shards || cum * static_cast<uint64_t>(n) >= total * (s + 1)))
      ++s;
  }
  return groups;
}

void copy_file(const std::string& from, const std::string& to) {
  auto f = MappedFile::open(from);
  write_file_atomic(to, f->data(), f->size());
}

// NAME as I8 values and NAME.q8_scales as F16 (see huginn/tensor.h, "Q8 weights").
void add_q8(SafetensorsWriter& w, const std::string& name, const TensorStore& store) {
  const SafetensorsEntry& e = store.entry(name);
  if (e.shape.size() != 2)
    throw Error(store.file_of(name) + ": tensor '" + name + "' has " +
                std::to_string(e.shape.size()) + " dimensions, expected a 2-D matrix for q8");
  Tensor q;
  try {
    q = quantize_q8(store.as_f32(name).reshape({e.shape[0], e.shape[1]}));
  } catch (const Error& err) {
    throw Error(store.file_of(name) + ": tensor '" + name + "': " + err.what());
  }
  const int64_t N = e.shape[0], K = e.shape[1];
  w.add(name, Tensor::wrap(const_cast<int8_t*>(q.q8_values()), {N, K}, DType::kI8));
  w.add(name + names::kQ8ScalesSuffix,
        Tensor::wrap(const_cast<uint16_t*>(q.q8_scales()), {N, K / kQ8Block}, DType::kF16));
}

void run_convert(const ConvertArgs& a) {
  const fs::path model_dir = fs::is_directory(a.model) ? fs::path(a.model)
                                                       : fs::path(a.model).parent_path();
  const std::string config_path = (model_dir.empty() ? fs::path(".") : model_dir) / "config.json";
  TensorStore store = TensorStore::open(a.model);
  ModelConfig::from_file(config_path);  // a checkpoint we could not load is not worth converting

  std::error_code ec;
  fs::create_directories(a.out, ec);
  if (ec) throw Error(a.out + ": cannot create directory: " + ec.message());
  if (fs::equivalent(a.out, model_dir.empty() ? fs::path(".") : model_dir))
    throw Error("--out " + a.out + ": must differ from the model directory");
  for (const char* f : {"model.safetensors", "model.safetensors.index.json"})
    if (fs::exists(fs::path(a.out) / f))
      throw Error(a.out + ": already holds " + f + "; choose an empty output directory");

  const bool q8 = a.dtype == "q8";
  std::optional<DType> target;
  if (a.dtype == "f32") target = DType::kF32;
  if (a.dtype == "bf16") target = DType::kBF16;
  if (a.dtype == "f16") target = DType::kF16;
  auto out_dtype = [&](const std::string& name) {
    const DType stored = store.entry(name).dtype;
    return target && is_float(stored) ? *target : stored;  // ids and counts stay as they are
  };

  // The tensors written: Q8 splits each matrix into values + scales (same shard).
  auto q8_matrix = [&](const std::string& name) {
    return q8 && names::is_matrix(name) && is_float(store.entry(name).dtype);
  };
  const std::vector<std::string> names = store.names();
  bool src_q8 = false;  // a Q8 checkpoint: only re-sharding (keep / q8) is supported
  for (const auto& n : names) src_q8 |= names::is_matrix(n) && store.entry(n).dtype == DType::kI8;
  if (src_q8 && !q8 && a.dtype != "keep")
    throw Error(a.model + ": holds q8 matrices; converting them to " + a.dtype +
                " is not supported (convert the original checkpoint instead)");
  if (a.shards > static_cast<int>(names.size()))
    throw Error("--shards " + std::to_string(a.shards) + ": the checkpoint has only " +
                std::to_string(names.size()) + " tensors");
  std::vector<uint64_t> bytes;
  for (const auto& n : names)
    bytes.push_back(q8_matrix(n) ? storage_bytes(DType::kQ8, store.entry(n).numel())
                                 : static_cast<uint64_t>(store.entry(n).numel()) *
                                       dtype_size(out_dtype(n)));
  const auto groups = split(names, bytes, a.shards);

  nlohmann::ordered_json weight_map = nlohmann::ordered_json::object();
  uint64_t total = 0;
  for (size_t s = 0; s < groups.size(); ++s) {
    const std::string file = a.shards == 1 ? "model.safetensors" : shard_name(int(s), a.shards);
    SafetensorsWriter w;
    w.add_metadata("format", "pt");
    if (q8 || src_q8) w.add_metadata(names::kWeightFormatKey, names::kQ8Format);
    for (const auto& n : groups[s]) {
      if (q8_matrix(n)) {
        add_q8(w, n, store);
        weight_map[n + names::kQ8ScalesSuffix] = file;
      } else {
        w.add(n, store.raw(n), out_dtype(n));
      }
      weight_map[n] = file;
    }
    w.write((fs::path(a.out) / file).string());
  }
  for (uint64_t b : bytes) total += b;
  if (a.shards > 1) {
    nlohmann::ordered_json index;
    index["metadata"]["total_size"] = total;
    index["weight_map"] = weight_map;
    const std::string text = index.dump(2) + "\n";
    write_file_atomic((fs::path(a.out) / "model.safetensors.index.json").string(), text.data(),
                      text.size());
  }
  copy_file(config_path, (fs::path(a.out) / "config.json").string());
  std::printf("wrote %zu tensors (%llu bytes, %s) in %d file%s to %s\n", names.size(),
              static_cast<unsigned long long>(total), a.dtype.c_str(), a.shards,
              a.shards == 1 ? "" : "s", a.out.c_str());
}

Registrar reg(80, [](CLI::App& app, Common& common) {
  auto args = std::make_shared<ConvertArgs>();
  CLI::App* sub = app.add_subcommand(
      "convert", "Rewrite a checkpoint in another dtype and/or as N shards with an index file");
  sub->add_option("--model", args->model, "checkpoint directory (or a .safetensors file)")
      ->required();
  sub->add_option("--out", args->out, "output directory (created; must not hold a checkpoint)")
      ->required();
  sub->add_option("--dtype", args->dtype,
                  "dtype of floating-point tensors: f32, bf16, f16, keep (as stored), or q8 "
                  "(the matrices as int8 + one F16 scale per 32 values; the rest as stored)")
      ->check(CLI::IsMember({"f32", "bf16", "f16", "q8", "keep"}))
      ->capture_default_str();
  sub->add_option("--shards", args->shards,
                  "number of files; > 1 writes model-0000i-of-0000N.safetensors + index")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  sub->callback([args] { run_convert(*args); });
});

}  // namespace
}  // namespace huginn::cli
