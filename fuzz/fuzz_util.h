// Fuzz harness support. Each fuzz/<target>_fuzz.cc defines one target body with
// HUGINN_FUZZ_TARGET(name); the same body is built two ways:
//  - with -DHUGINN_FUZZ=ON (clang, libFuzzer + ASan + UBSan): one fuzzer binary per target
//    (build-fuzz/fuzz/<name>_fuzz), its body the LLVMFuzzerTestOneInput;
//  - in the normal build: linked into fuzz_corpus_test, a gtest that replays every committed input
//    (fuzz/corpus/<name>/ and fuzz/regressions/<name>/) through every body, so the corpus is a
//    regression suite of `make test` without clang.
//
// The contract of a body: bad input ends in huginn::Error (what the project promises for
// malformed files and requests; server::ApiError for request bodies) and the body returns
// normally. Anything else is a finding: a crash or sanitizer report, an internal assertion, a
// foreign exception escaping (std::invalid_argument from std::stoll, nlohmann::json's, bad_alloc:
// messages that name neither file nor field), or a violated property (fuzz::Violation).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace huginn::fuzz {

// A property the code under test promised and broke (not an input error).
struct Violation : std::logic_error {
  explicit Violation(const std::string& what) : std::logic_error(what) {}
};
// Throws Violation(what) unless cond.
void check(bool cond, const std::string& what);

using Body = void (*)(const uint8_t* data, size_t size);
struct Target {
  std::string name;
  Body body;
};
// Every target linked into this binary (one in a fuzzer, all in fuzz_corpus_test).
std::vector<Target>& targets();
struct Registrar {
  Registrar(const char* name, Body body);
};
// Slow one-time setup (loading tokenizers, training a tiny model) registered by a target file:
//   static fuzz::Setup setup([] { tokenizers(); });
// The fuzzer runs every setup in LLVMFuzzerInitialize, before the per-input timeout is armed, so a
// 10 s load is not reported as a hang of the first input. Registering does no work.
struct Setup {
  explicit Setup(void (*fn)());
};
void run_setups();

// A private scratch directory for this process (under $TMPDIR, or /dev/shm when it exists,
// since fuzzers rewrite files at every input), removed at exit.
const std::string& scratch_dir();
// A fresh empty directory scratch_dir()/name (removed and re-created).
std::string fresh_dir(const std::string& name);
void write_file(const std::string& path, const void* data, size_t size);
void write_file(const std::string& path, std::string_view text);
std::string read_file(const std::string& path);
// tests/data (HUGINN_TEST_DATA): the golden checkpoints and the real tokenizers.
std::string test_data(const std::string& rel);

// Runs f; returns true when it completed, false when it threw huginn::Error (a clean rejection).
// Any other exception propagates: the body fails.
bool accepts(const std::function<void()>& f);

// The demangled dynamic type of e (for messages).
std::string type_name(const std::exception& e);
// The fuzzer's entry: runs body; an exception escaping it is printed and aborts (a finding).
void run_or_abort(Body body, const uint8_t* data, size_t size);

// Splits an input into parts at the 4-byte separator "\n--\n" (for targets that need several
// files: a config.json and a safetensors, a shard and its options).
std::vector<std::string_view> split_parts(std::string_view data, size_t max_parts);

}  // namespace huginn::fuzz

#define HUGINN_FUZZ_CAT2(a, b) a##b
#define HUGINN_FUZZ_CAT(a, b) HUGINN_FUZZ_CAT2(a, b)

#ifdef HUGINN_LIBFUZZER
#define HUGINN_FUZZ_ENTRY(name)                                                   \
  extern "C" int LLVMFuzzerInitialize(int*, char***) {                            \
    ::huginn::fuzz::run_setups();                                                 \
    return 0;                                                                     \
  }                                                                               \
  extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {       \
    ::huginn::fuzz::run_or_abort(&HUGINN_FUZZ_CAT(fuzz_body_, name), data, size); \
    return 0;                                                                     \
  }
#else
#define HUGINN_FUZZ_ENTRY(name) \
  static ::huginn::fuzz::Registrar HUGINN_FUZZ_CAT(fuzz_registrar_, name)(#name, &HUGINN_FUZZ_CAT(fuzz_body_, name));
#endif

// HUGINN_FUZZ_TARGET(safetensors) { ... uses data, size ... }
#define HUGINN_FUZZ_TARGET(name)                                                   \
  static void HUGINN_FUZZ_CAT(fuzz_body_, name)(const uint8_t* data, size_t size); \
  HUGINN_FUZZ_ENTRY(name)                                                          \
  static void HUGINN_FUZZ_CAT(fuzz_body_, name)(const uint8_t* data, size_t size)
