// Helpers shared by the core tests: golden files, comparisons, temp dirs.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "huginn/backend.h"
#include "huginn/tensor.h"

namespace huginn::test {

// The backends every golden test runs on: the scalar reference, the fast CPU backend, and the
// strict backend (CPU kernels on memory host code cannot touch), which proves that the model,
// generator and trainer read backend memory only through backend calls.
inline const std::vector<std::string> kBackends = {"cpu", "ref", "strict"};
// The message of the huginn::Error fn throws, or "(no error)".
std::string error_message(const std::function<void()>& fn);
// A host F32 copy of a backend tensor (Backend::download).
Tensor to_host(Backend& be, const Tensor& t);

// tests/data/golden/<set>
std::string golden_dir(const std::string& set);
// Every tensor of a safetensors file, as F32 (I64 tensors converted too) — host copies.
std::map<std::string, Tensor> load_tensors(const std::string& path);
// The I64 tensor `name` of a file as int32 ids.
std::vector<int32_t> load_ids(const std::string& path, const std::string& name);
// max |got - want| / max |want| over all elements (shapes compared by element count).
double rel_err(const Tensor& got, const Tensor& want);
// A fresh empty directory under the system temp dir, removed by the caller or left behind.
std::string make_temp_dir(const std::string& tag);
// Runs a shell command, returns its exit status; stdout+stderr go to *output when given.
int run_command(const std::string& cmd, std::string* output = nullptr);

}  // namespace huginn::test
