// huginn convert: rewrites a checkpoint's tensors in another dtype and/or split into N shards
// (HF layout: model-00001-of-0000N.safetensors + model.safetensors.index.json), copying
// config.json. TensorStore in, write_safetensors_streaming out, one tensor at a time (peak memory
// is one matrix's quantized copy, whatever the shard size).
// --dtype q8 / q4 quantizes the big matrices only (names::is_matrix) into NAME (I8 values, or
// U8 with two 4-bit codes a byte) + NAME.q8_scales / NAME.q4_scales (F16), with __metadata__
// huginn.weight_format = q8_0 / q4_32; everything else is kept as stored. Model::load reads
// such files back (--dtype auto keeps them Q8 / Q4 in memory).
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <map>
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

// The entry of a matrix to quantize to `dt`; throws naming the file and tensor when it is not 2-D.
const SafetensorsEntry& matrix_entry(const TensorStore& store, const std::string& name, DType dt) {
  const SafetensorsEntry& e = store.entry(name);
  if (e.shape.size() != 2)
    throw Error(store.file_of(name) + ": tensor '" + name + "' has " +
                std::to_string(e.shape.size()) + " dimensions, expected a 2-D matrix for " +
                (dt == DType::kQ4 ? "q4" : "q8"));
  return e;
}

// Q8: NAME as I8 values and NAME.q8_scales as F16; Q4: NAME as U8 [N, K/2] codes and
// NAME.q4_scales as F16 (see huginn/tensor.h, "Q8 weights" and "Q4 weights"). The matrix in
// memory once, quantized (convert_weight: F32 a few rows at a time, never a whole F32 copy).
Tensor quantize_matrix(const TensorStore& store, const std::string& name, DType dt) {
  const SafetensorsEntry& e = matrix_entry(store, name, dt);
  try {
    return convert_weight(store.raw(name).reshape({e.shape[0], e.shape[1]}), dt);
  } catch (const Error& err) {
    throw Error(store.file_of(name) + ": tensor '" + name + "': " + err.what());
  }
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

  // The block format the matrices are quantized to, if any.
  const std::optional<DType> quant = a.dtype == "q8"   ? std::optional(DType::kQ8)
                                     : a.dtype == "q4" ? std::optional(DType::kQ4)
                                                       : std::nullopt;
  std::optional<DType> target;
  if (a.dtype == "f32") target = DType::kF32;
  if (a.dtype == "bf16") target = DType::kBF16;
  if (a.dtype == "f16") target = DType::kF16;
  auto out_dtype = [&](const std::string& name) {
    const DType stored = store.entry(name).dtype;
    return target && is_float(stored) ? *target : stored;  // ids and counts stay as they are
  };

  // The tensors written: Q8 / Q4 split each matrix into values + scales (same shard).
  auto quant_matrix = [&](const std::string& name) {
    return quant && names::is_matrix(name) && is_float(store.entry(name).dtype);
  };
  const std::vector<std::string> names = store.names();
  // A quantized checkpoint: only re-sharding (keep, or its own format) is supported.
  std::optional<DType> src_quant;
  for (const auto& n : names) {
    if (!names::is_matrix(n)) continue;
    if (store.entry(n).dtype == DType::kI8) src_quant = DType::kQ8;
    if (store.entry(n).dtype == DType::kU8) src_quant = DType::kQ4;
  }
  if (src_quant && a.dtype != "keep" && quant != src_quant)
    throw Error(a.model + ": holds " + (*src_quant == DType::kQ4 ? "q4" : "q8") +
                " matrices; converting them to " + a.dtype +
                " is not supported (convert the original checkpoint instead)");
  const std::optional<DType> format = quant ? quant : src_quant;
  if (a.shards > static_cast<int>(names.size()))
    throw Error("--shards " + std::to_string(a.shards) + ": the checkpoint has only " +
                std::to_string(names.size()) + " tensors");
  std::vector<uint64_t> bytes;
  for (const auto& n : names)
    bytes.push_back(quant_matrix(n) ? storage_bytes(*quant, store.entry(n).numel())
                                 : static_cast<uint64_t>(store.entry(n).numel()) *
                                       dtype_size(out_dtype(n)));
  const auto groups = split(names, bytes, a.shards);

  nlohmann::ordered_json weight_map = nlohmann::ordered_json::object();
  uint64_t total = 0;
  for (size_t s = 0; s < groups.size(); ++s) {
    const std::string file = a.shards == 1 ? "model.safetensors" : shard_name(int(s), a.shards);
    std::map<std::string, std::string> metadata = {{"format", "pt"}};
    if (format)
      metadata[names::kWeightFormatKey] = *format == DType::kQ4 ? names::kQ4Format : names::kQ8Format;
    const char* suffix = quant == DType::kQ4 ? names::kQ4ScalesSuffix : names::kQ8ScalesSuffix;
    std::vector<SafetensorsSpec> specs;
    for (const auto& n : groups[s]) {
      if (quant_matrix(n)) {
        const SafetensorsEntry& e = matrix_entry(store, n, *quant);
        const int64_t N = e.shape[0], K = e.shape[1];
        specs.push_back({n, *quant == DType::kQ4 ? DType::kU8 : DType::kI8,
                         {N, *quant == DType::kQ4 ? K / 2 : K}});
        specs.push_back({n + suffix, DType::kF16, {N, K / kQ8Block}});
        weight_map[n + suffix] = file;
      } else {
        specs.push_back({n, out_dtype(n), store.entry(n).shape});
      }
      weight_map[n] = file;
    }
    // Written one tensor at a time (a shard is never held in memory): a quantized matrix's
    // values, then its scales, which follow it in name order.
    std::map<std::string, Tensor> quantized;  // NAME -> its Q8 / Q4 matrix until the scales are out
    write_safetensors_streaming(
        (fs::path(a.out) / file).string(), specs, metadata,
        [&](const SafetensorsSpec& spec, const SafetensorsAppend& append) {
          if (store.contains(spec.name) && quant_matrix(spec.name)) {
            Tensor q = quantize_matrix(store, spec.name, *quant);
            append(q.raw(), static_cast<size_t>(spec.nbytes()));
            quantized[spec.name] = std::move(q);
          } else if (store.contains(spec.name)) {
            try {
              append_as(store.raw(spec.name), spec.dtype, append);
            } catch (const Error& err) {
              throw Error(store.file_of(spec.name) + ": tensor '" + spec.name + "': " + err.what());
            }
          } else {  // NAME + suffix
            const std::string matrix = spec.name.substr(0, spec.name.size() - std::strlen(suffix));
            const Tensor& q = quantized.at(matrix);
            const int64_t values = q.dim(0) * (quant == DType::kQ4 ? q.dim(1) / 2 : q.dim(1));
            append(static_cast<const uint8_t*>(q.raw()) + values, static_cast<size_t>(spec.nbytes()));
            quantized.erase(matrix);
          }
        });
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
                  "dtype of floating-point tensors: f32, bf16, f16, keep (as stored), q8 (the "
                  "matrices as int8 + one F16 scale per 32 values; the rest as stored) or q4 "
                  "(the matrices as 4-bit codes + one F16 scale per 32 values)")
      ->check(CLI::IsMember({"f32", "bf16", "f16", "q8", "q4", "keep"}))
      ->capture_default_str();
  sub->add_option("--shards", args->shards,
                  "number of files; > 1 writes model-0000i-of-0000N.safetensors + index")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  sub->callback([args] { run_convert(*args); });
});

}  // namespace
}  // namespace huginn::cli
