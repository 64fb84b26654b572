#include "fuzz_util.h"

#include <cxxabi.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <typeinfo>

#include "huginn/error.h"

namespace huginn::fuzz {

namespace fs = std::filesystem;

void check(bool cond, const std::string& what) {
  if (!cond) throw Violation(what);
}

std::vector<Target>& targets() {
  static std::vector<Target> all;
  return all;
}

Registrar::Registrar(const char* name, Body body) { targets().push_back({name, body}); }

namespace {
std::vector<void (*)()>& setups() {
  static std::vector<void (*)()> all;
  return all;
}
}  // namespace

Setup::Setup(void (*fn)()) { setups().push_back(fn); }

void run_setups() {
  try {
    for (auto* fn : setups()) fn();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fuzz: setup failed: %s\n", e.what());
    std::abort();
  }
}

namespace {

struct Scratch {
  std::string path;
  Scratch() {
    const char* tmp = std::getenv("TMPDIR");
    std::string base = tmp && *tmp ? tmp : (fs::is_directory("/dev/shm") ? "/dev/shm" : "/tmp");
    std::string tmpl = base + "/huginn_fuzz_XXXXXX";
    if (!mkdtemp(tmpl.data())) {
      std::fprintf(stderr, "fuzz: cannot create a scratch directory under %s\n", base.c_str());
      std::abort();
    }
    path = tmpl;
  }
  ~Scratch() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

}  // namespace

const std::string& scratch_dir() {
  static Scratch s;
  return s.path;
}

std::string fresh_dir(const std::string& name) {
  const std::string d = scratch_dir() + "/" + name;
  std::error_code ec;
  fs::remove_all(d, ec);
  fs::create_directories(d);
  return d;
}

void write_file(const std::string& path, const void* data, size_t size) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(static_cast<const char*>(data), static_cast<std::streamsize>(size));
  if (!f) {
    std::fprintf(stderr, "fuzz: cannot write %s\n", path.c_str());
    std::abort();
  }
}

void write_file(const std::string& path, std::string_view text) {
  write_file(path, text.data(), text.size());
}

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) {
    std::fprintf(stderr, "fuzz: cannot read %s\n", path.c_str());
    std::abort();
  }
  return std::string(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

std::string test_data(const std::string& rel) { return std::string(HUGINN_TEST_DATA) + "/" + rel; }

bool accepts(const std::function<void()>& f) {
  try {
    f();
    return true;
  } catch (const huginn::Error&) {
    return false;
  }
}

std::string type_name(const std::exception& e) {
  int status = 0;
  char* d = abi::__cxa_demangle(typeid(e).name(), nullptr, nullptr, &status);
  std::string out = status == 0 && d ? d : typeid(e).name();
  std::free(d);
  return out;
}

void run_or_abort(Body body, const uint8_t* data, size_t size) {
  try {
    body(data, size);
  } catch (const Violation& e) {
    std::fprintf(stderr, "fuzz: property violated: %s\n", e.what());
    std::abort();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fuzz: %s escaped (not huginn::Error): %s\n", type_name(e).c_str(),
                 e.what());
    std::abort();
  } catch (...) {
    std::fprintf(stderr, "fuzz: a non-std exception escaped\n");
    std::abort();
  }
}

std::vector<std::string_view> split_parts(std::string_view data, size_t max_parts) {
  std::vector<std::string_view> parts;
  constexpr std::string_view kSep = "\n--\n";
  while (parts.size() + 1 < max_parts) {
    const size_t at = data.find(kSep);
    if (at == std::string_view::npos) break;
    parts.push_back(data.substr(0, at));
    data.remove_prefix(at + kSep.size());
  }
  parts.push_back(data);
  return parts;
}

}  // namespace huginn::fuzz
