// How the data-parallel tests start MPI jobs: mpirun on this machine, as root where CI is root
// (OpenMPI refuses root unless both variables are set), more ranks than cores allowed, no core
// binding (the ranks share the machine's cores with other tests), and, for ASan builds, OpenMPI's
// own allocations at exit left out of the leak check (scripts/lsan-mpi.supp: they are the
// library's, not ours). The ranks inherit mpirun's environment.
#pragma once

#include <string>

namespace huginn::dist_test {

inline std::string mpirun(int ranks) {
  return std::string(
             "env OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 "
             "OMPI_MCA_btl_vader_single_copy_mechanism=none "
             "LSAN_OPTIONS=suppressions=" HUGINN_LSAN_MPI_SUPP
             ":print_suppressions=0 " HUGINN_MPIRUN " --oversubscribe --bind-to none -np ") +
         std::to_string(ranks) + " ";
}

}  // namespace huginn::dist_test
