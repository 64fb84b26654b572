// Collective communication between the ranks of a data-parallel run: the interface the trainer
// talks to (it never names MPI), a single-process implementation, and one over MPI (OpenMPI from
// Debian; src/dist/comm_mpi.cc). A GPU one (NCCL) would implement the same calls.
//
// Every collective is called by every rank, in the same order, with the same sizes (the caller's
// contract; MPI cannot check it cheaply). Buffers are host memory: the trainer moves gradients
// between the backend and the host with Backend::download / copy (src/train/grad_sync.cc).
//
// Faults: the MPI implementation names a rank that does not arrive: before each collective the
// other ranks check in with rank 0, which waits for them at most `timeout_s` seconds (its maker's
// argument), then prints the missing ranks and aborts the job (src/dist/comm_mpi.cc); inside a
// collective a watchdog bounds the wait as well. A rank that dies is noticed by mpirun, which
// ends the job and names it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "huginn/error.h"

namespace huginn {

// An error every rank raises at the same point, having learnt it from a collective (the ranks'
// disagreement at start): no rank waits for another, so each may end normally; rank 0 reports it.
class CollectiveError : public Error {
 public:
  using Error::Error;
};

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual const char* name() const = 0;  // "single", "mpi"
  virtual int rank() const = 0;
  virtual int size() const = 0;

  // data = the element-wise sum of every rank's data, on every rank.
  virtual void all_reduce_sum(std::span<float> data) = 0;
  virtual void all_reduce_sum(std::span<double> data) = 0;
  // in holds size() blocks of out.size() floats; out = block rank() of the element-wise sum.
  virtual void reduce_scatter_sum(std::span<const float> in, std::span<float> out) = 0;
  // all = the concatenation of every rank's `mine` (all equal in size), in rank order.
  virtual void all_gather(std::span<const std::byte> mine, std::span<std::byte> all) = 0;
  // On root: all = the concatenation of every rank's `mine` (all equal in size), in rank order;
  // on the other ranks `all` is not touched (and may be empty).
  virtual void gather(std::span<const std::byte> mine, std::span<std::byte> all, int root) = 0;
  // data = root's data, on every rank.
  virtual void broadcast(std::span<std::byte> data, int root) = 0;
  virtual void barrier() = 0;
  // Ends every rank of the job with `code` (after a rank-local error the others cannot know of).
  [[noreturn]] virtual void abort(int code) = 0;

  // Payload bytes this rank has passed to collectives since it was made (a ring all-reduce moves
  // about 2·(size−1)/size of that over each rank's link).
  uint64_t bytes() const { return bytes_; }

 protected:
  uint64_t bytes_ = 0;
};

// One process: every collective is the identity (size() == 1).
std::unique_ptr<Communicator> make_single_communicator();

// MPI_COMM_WORLD (MPI_Init_thread on first use, MPI_Finalize when the last one is destroyed).
// Throws huginn::Error when this build has no MPI. timeout_s > 0: the longest wait for one
// collective before the job is aborted.
std::unique_ptr<Communicator> make_mpi_communicator(double timeout_s);

// Whether this process was started by an MPI launcher (mpirun / mpiexec / srun with PMIx): the
// launcher's environment variables (OMPI_COMM_WORLD_SIZE, PMIX_RANK, PMI_RANK).
bool launched_by_mpi();

// Whether this build has the MPI implementation.
bool have_mpi();

// Utilities over any communicator.
// Rank 0's string on every rank (its length first, then its bytes).
std::string broadcast_string(Communicator& comm, const std::string& s);
// Every rank's `mine` cut or padded to `width` bytes, in rank order.
std::vector<std::string> all_gather_strings(Communicator& comm, const std::string& mine,
                                            size_t width);

}  // namespace huginn
