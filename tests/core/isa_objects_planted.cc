// For isa_objects_test only (never linked into anything): an AVX-512 kernel object that breaks
// simd.h's rule, a function defined after simd.h whose name does not carry the instruction set.
#include "kernels/cpu/simd.h"

namespace huginn::test {

// Weak and external like an inline function of a shared header: the linker could keep this copy.
__attribute__((weak, noinline)) float planted_shared_sum(const float* p, int n) {
  float s = 0;
  for (int i = 0; i < n; ++i) s += p[i] * p[i];
  return s;
}

}  // namespace huginn::test
HUGINN_KERNELS_END
