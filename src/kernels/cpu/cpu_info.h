// What the fast CPU backend finds out about the machine at run time, instead of assuming one:
// the data-cache sizes (the GEMM's blocking is derived from them) and, in cpu_backend.cc, the
// instruction sets the CPU runs. Sizes in bytes per cache instance.
#pragma once

#include <cstdint>
#include <string>

namespace huginn::cpu {

struct CpuCaches {
  int64_t l1d = 0, l2 = 0, l3 = 0;  // 0: not reported (a default is used for blocking)
  int l2_shared_by = 1, l3_shared_by = 1;  // logical CPUs sharing one instance
  std::string source;                      // where the sizes came from: "sysfs", "sysconf", "default"

  // The part of the last-level cache one thread can count on when every sharer is busy.
  int64_t l3_per_thread() const { return l3 / (l3_shared_by > 0 ? l3_shared_by : 1); }
};

// This machine's caches, detected once: /sys/devices/system/cpu/cpu0/cache (level, type, size,
// shared_cpu_list) first, then sysconf(_SC_LEVEL*_CACHE_SIZE), then defaults for whatever is
// still unknown (32 KiB L1d, 1 MiB L2, 8 MiB L3, noted in `source`). The environment variables
// HUGINN_L1D, HUGINN_L2, HUGINN_L3 (bytes, or with a K / M suffix) override a size, to try
// another machine's blocking here.
const CpuCaches& cpu_caches();

// The same from a sysfs-like directory (cpu0/cache/indexN/{level,type,size,shared_cpu_list}
// under `cpu_dir`), without sysconf, defaults or the environment; for tests.
CpuCaches read_sysfs_caches(const std::string& cpu_dir);

// "1K", "32K", "1024K", "32M", "1048576" -> bytes; -1 when malformed.
int64_t parse_cache_size(const std::string& s);

// Blocking of a packed GEMM (gemm_packed.h) with an MR x NR register tile of 4-byte elements:
//   kc  the k extent of a block: an A micro-panel (kc x MR) and a B micro-panel (kc x NR) within
//       a quarter of L2, clamped to 256..768;
//   mc  rows of A packed at a time: an mc x kc block stays in half of L2, re-read for every B
//       micro-panel;
//   nc  columns of B packed at a time: a kc x nc block fits half the per-thread share of L3.
// Every value is rounded to whole tiles and clamped to sane ranges; results of the GEMM do not
// depend on the blocking (each output is one FMA chain over k in order).
struct GemmBlocking {
  int64_t kc, mc, nc;
};
GemmBlocking gemm_blocking(const CpuCaches& c, int MR, int NR);

// `b`, or the blocking the environment variable HUGINN_GEMM_BLOCKING="kc,mc,nc" gives (to try
// others on a machine; kc is rounded to a multiple of 64).
GemmBlocking gemm_blocking_from_env(GemmBlocking b);

// For tests: every GEMM uses `b` instead (kc a positive multiple of 64, mc and nc >= 1) until
// called again with nullptr. Results must not change (see above): tests check exactly that,
// with blocks small enough for every loop of the GEMM to run several times on small shapes.
void set_gemm_blocking_override(const GemmBlocking* b);
// Whether an override is set (then *b receives it).
bool gemm_blocking_override(GemmBlocking* b);

}  // namespace huginn::cpu
