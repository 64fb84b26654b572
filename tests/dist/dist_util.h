// How the data-parallel tests start MPI jobs: mpirun on this machine, as root where CI is root
// (OpenMPI refuses root unless both variables are set), more ranks than cores allowed, no core
// binding (the ranks share the machine's cores with other tests). In ASan builds the ranks run
// without LeakSanitizer's exit check (every other ASan/UBSan check stays on): OpenMPI's
// components keep allocations to exit and unload themselves, so their leak stacks end in
// "<unknown module>" frames that no suppression (scripts/lsan-mpi.supp, kept for the frames it
// can name) can match. huginn's own leaks stay covered: the single-process runs these tests
// compare against run the same trainer under the full check. The ranks inherit mpirun's
// environment; popen's shell expands $ASAN_OPTIONS (log_path included).
#pragma once

#include <string>

namespace huginn::dist_test {

inline std::string mpirun(int ranks) {
  return std::string(
             "env OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 "
             "OMPI_MCA_btl_vader_single_copy_mechanism=none "
             "ASAN_OPTIONS=\"${ASAN_OPTIONS}:detect_leaks=0\" "
             "LSAN_OPTIONS=suppressions=" HUGINN_LSAN_MPI_SUPP
             ":print_suppressions=0 " HUGINN_MPIRUN " --oversubscribe --bind-to none -np ") +
         std::to_string(ranks) + " ";
}

}  // namespace huginn::dist_test
