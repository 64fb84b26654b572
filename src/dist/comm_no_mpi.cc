// A build without MPI (HUGINN_MPI=OFF): the MPI communicator is missing and says so.
#include "huginn/comm.h"
#include "huginn/error.h"

namespace huginn {

bool have_mpi() {
  return false;
}

std::unique_ptr<Communicator> make_mpi_communicator(double) {
  throw Error(
      "this huginn was built without MPI (HUGINN_MPI=OFF): it cannot run under mpirun; "
      "install libopenmpi-dev (scripts/install-deps.sh) and rebuild");
}

}  // namespace huginn
