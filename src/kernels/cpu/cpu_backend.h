// The fast CPU backend's knobs, for tests and benchmarks; the program uses make_cpu_backend(pool)
// from huginn/backend.h, which takes the best instruction set of this machine and default split.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "huginn/backend.h"
#include "kernels/cpu/cpu_info.h"

namespace huginn {

enum class CpuIsa { kGeneric, kAvx2, kAvx512 };

struct CpuOptions {
  CpuIsa isa = CpuIsa::kGeneric;
  // Least work (about one flop or element each) worth giving a thread; smaller ops run on the
  // calling thread alone. Tests set 1 so that every op is really split.
  int64_t min_work_per_thread = 1 << 15;
};

const char* cpu_isa_name(CpuIsa isa);
// The instruction sets compiled into this build that this CPU runs, best last.
std::vector<CpuIsa> available_cpu_isas();
// The last of those, or the one the environment variable HUGINN_CPU_ISA names (generic, avx2,
// avx512: to run or test a slower path on a faster CPU); decided once per process. Throws
// huginn::Error naming the variable when HUGINN_CPU_ISA is not a set's name or names a set this
// build or CPU lacks. Every kernel of a backend runs on its one set: forward, decode and the
// backward's GEMMs (matmul_backward, attention_backward); the other backward ops, the loss and
// the optimizer are plain C++ with no per-set variants.
CpuIsa best_cpu_isa();
// What HUGINN_CPU_ISA=value selects among `available` (best last): empty or null, the best.
CpuIsa cpu_isa_from_env(const char* value, const std::vector<CpuIsa>& available);
// Calls taken so far by the GEMM entry points (matmul, matmul_lowp, gemm_f32) of one set, for
// tests that check which set an op really ran on.
uint64_t cpu_gemm_calls(CpuIsa isa);

// What the kernels of an instruction set run with on this machine, for reports (huginn bench).
struct CpuKernelInfo {
  CpuIsa isa = CpuIsa::kGeneric;
  bool cpu_has_avx512_bf16 = false;
  bool bf16_dot = false;  // gemm_bf16 (training --precision bf16) runs on vdpbf16ps
  double bf16_dot_gflops = 0, bf16_fma_gflops = 0;  // its start-up probe (one tile, from L1)
  int gemm_mr = 0, gemm_nr = 0;  // register tile: rows of x by weight rows
  cpu::GemmBlocking blocking{};
  cpu::CpuCaches caches;
};
CpuKernelInfo cpu_kernel_info(CpuIsa isa);
// One line: "isa avx512 (AVX512_BF16 present, ...), GEMM tile 12x32, blocking kc .. mc .. nc ..,
// caches L1d 32 KiB, L2 1024 KiB, L3 32768 KiB shared by 2 (sysfs)".
std::string describe(const CpuKernelInfo& k);

std::unique_ptr<Backend> make_cpu_backend(ThreadPool& pool, const CpuOptions& options);

}  // namespace huginn
