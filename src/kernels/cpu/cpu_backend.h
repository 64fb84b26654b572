// The fast CPU backend's knobs, for tests and benchmarks; the program uses make_cpu_backend(pool)
// from huginn/backend.h, which takes the best instruction set of this machine and default split.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "huginn/backend.h"

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
CpuIsa best_cpu_isa();

std::unique_ptr<Backend> make_cpu_backend(ThreadPool& pool, const CpuOptions& options);

}  // namespace huginn
