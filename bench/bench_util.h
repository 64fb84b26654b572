// Helpers shared by the benchmark programs: the random-weight model presets and list flags.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "huginn/config.h"

namespace huginn::bench {

// The random-weight configs the benches default to (2 / 4 / 2 layers, V 32768, head_dim 64):
// "bench-m" (E 1024, 16 heads, I 2816, tied; the config of issue 6, as `huginn bench` builds
// it), "bench-768" (E 768, 12 heads, I 2048) and "bench-512" (E 512, 8 heads, I 1536).
inline ModelConfig preset_config(const std::string& name) {
  ModelConfig c;
  c.name = name;
  c.head_dim = 64;
  c.vocab_size = 32768;
  c.block_size = 4096;
  c.n_prelude = 2;
  c.n_core = 4;
  c.n_coda = 2;
  if (name == "bench-m") {
    c.n_embd = 1024, c.n_heads = 16, c.intermediate_size = 2816, c.tie_embeddings = true;
  } else if (name == "bench-768") {
    c.n_embd = 768, c.n_heads = 12, c.intermediate_size = 2048;
  } else if (name == "bench-512") {
    c.n_embd = 512, c.n_heads = 8, c.intermediate_size = 1536;
  } else {
    std::fprintf(stderr, "error: no preset config '%s'\n", name.c_str());
    std::exit(2);
  }
  return c;
}

// The value after flag argv[i] (advancing i); exits with a message when there is none.
inline const char* next_arg(int argc, char** argv, int& i) {
  if (i + 1 >= argc) {
    std::fprintf(stderr, "%s needs a value\n", argv[i]);
    std::exit(2);
  }
  return argv[++i];
}

// The integer after flag argv[i] (advancing i); exits with a message naming the flag on
// anything that is not a whole integer.
inline int int_arg(int argc, char** argv, int& i) {
  const char* flag = argv[i];
  const char* s = next_arg(argc, argv, i);
  char* end = nullptr;
  const long x = std::strtol(s, &end, 10);
  if (end == s || *end != '\0') {
    std::fprintf(stderr, "error: %s: expected an integer, got '%s'\n", flag, s);
    std::exit(2);
  }
  return static_cast<int>(x);
}

// The number after flag argv[i] (advancing i); exits with a message naming the flag on anything
// that is not a whole number.
inline double double_arg(int argc, char** argv, int& i) {
  const char* flag = argv[i];
  const char* s = next_arg(argc, argv, i);
  char* end = nullptr;
  const double x = std::strtod(s, &end);
  if (end == s || *end != '\0') {
    std::fprintf(stderr, "error: %s: expected a number, got '%s'\n", flag, s);
    std::exit(2);
  }
  return x;
}

// "1,2,4" -> {1, 2, 4}; exits with a message naming `flag` on anything else.
inline std::vector<int> int_list(const char* s, const char* flag) {
  std::vector<int> v;
  for (const char* p = s;;) {
    char* end = nullptr;
    const long x = std::strtol(p, &end, 10);
    if (end == p || (*end != ',' && *end != '\0')) {
      std::fprintf(stderr, "error: %s: expected comma-separated integers, got '%s'\n", flag, s);
      std::exit(2);
    }
    v.push_back(static_cast<int>(x));
    if (*end == '\0') return v;
    p = end + 1;
  }
}

}  // namespace huginn::bench
