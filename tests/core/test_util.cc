#include "test_util.h"

#include <array>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <sys/wait.h>

#include "huginn/safetensors.h"

namespace huginn::test {

std::string golden_dir(const std::string& set) { return std::string(HUGINN_TEST_DATA) + "/golden/" + set; }

std::map<std::string, Tensor> load_tensors(const std::string& path) {
  auto f = SafetensorsFile::open(path);
  std::map<std::string, Tensor> out;
  for (const auto& e : f->entries()) {
    if (e.dtype == DType::kI64) {
      Tensor raw = f->raw(e.name);
      Tensor t = Tensor::empty(raw.shape());
      for (int64_t i = 0; i < raw.numel(); ++i) t.f32()[i] = static_cast<float>(raw.data<int64_t>()[i]);
      out[e.name] = t;
    } else {
      out[e.name] = f->as_f32(e.name).clone();
    }
  }
  return out;
}

std::vector<int32_t> load_ids(const std::string& path, const std::string& name) {
  auto f = SafetensorsFile::open(path);
  Tensor raw = f->raw(name);
  std::vector<int32_t> ids(static_cast<size_t>(raw.numel()));
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int32_t>(raw.data<int64_t>()[i]);
  return ids;
}

std::string error_message(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

Tensor to_host(Backend& be, const Tensor& t) {
  Tensor h = Tensor::empty(t.shape());
  be.download(t, h.f32());
  return h;
}

double rel_err(const Tensor& got, const Tensor& want) {
  if (got.numel() != want.numel()) return INFINITY;
  Tensor g = got.is_contiguous() ? got : got.clone();
  Tensor w = want.is_contiguous() ? want : want.clone();
  double max_diff = 0, max_want = 0;
  for (int64_t i = 0; i < w.numel(); ++i) {
    double d = std::fabs(static_cast<double>(g.f32()[i]) - w.f32()[i]);
    if (std::isnan(d)) return INFINITY;
    max_diff = std::max(max_diff, d);
    max_want = std::max(max_want, std::fabs(static_cast<double>(w.f32()[i])));
  }
  return max_want > 0 ? max_diff / max_want : max_diff;
}

std::string make_temp_dir(const std::string& tag) {
  std::string tmpl = (std::filesystem::temp_directory_path() / ("huginn-" + tag + "-XXXXXX")).string();
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back('\0');
  if (!mkdtemp(buf.data())) std::abort();
  return std::string(buf.data());
}

int run_command(const std::string& cmd, std::string* output) {
  std::string full = cmd + " 2>&1";
  FILE* p = popen(full.c_str(), "r");
  if (!p) return -1;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0)
    if (output) output->append(buf.data(), n);
  int status = pclose(p);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

}  // namespace huginn::test
