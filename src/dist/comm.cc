// The single-process communicator and the helpers over any communicator (huginn/comm.h).
#include <cstdlib>
#include <cstring>

#include "huginn/comm.h"
#include "huginn/error.h"

namespace huginn {
namespace {

class SingleCommunicator : public Communicator {
 public:
  const char* name() const override { return "single"; }
  int rank() const override { return 0; }
  int size() const override { return 1; }
  void all_reduce_sum(std::span<float> data) override { bytes_ += data.size_bytes(); }
  void all_reduce_sum(std::span<double> data) override { bytes_ += data.size_bytes(); }
  void reduce_scatter_sum(std::span<const float> in, std::span<float> out) override {
    HUGINN_ASSERT(in.size() == out.size(), "reduce_scatter_sum: in must hold size() blocks of out");
    std::memcpy(out.data(), in.data(), out.size_bytes());
    bytes_ += in.size_bytes();
  }
  void all_gather(std::span<const std::byte> mine, std::span<std::byte> all) override {
    HUGINN_ASSERT(mine.size() == all.size(), "all_gather: all must hold size() blocks of mine");
    std::memcpy(all.data(), mine.data(), mine.size());
    bytes_ += mine.size();
  }
  void gather(std::span<const std::byte> mine, std::span<std::byte> all, int root) override {
    HUGINN_ASSERT(root == 0 && mine.size() == all.size(), "gather: all must hold size() blocks of mine");
    std::memcpy(all.data(), mine.data(), mine.size());
    bytes_ += mine.size();
  }
  void broadcast(std::span<std::byte> data, int root) override {
    HUGINN_ASSERT(root == 0, "broadcast: root out of range");
    bytes_ += data.size();
  }
  void barrier() override {}
  [[noreturn]] void abort(int code) override { std::_Exit(code); }
};

}  // namespace

std::unique_ptr<Communicator> make_single_communicator() {
  return std::make_unique<SingleCommunicator>();
}

bool launched_by_mpi() {
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK"})
    if (std::getenv(v)) return true;
  return false;
}

std::string broadcast_string(Communicator& comm, const std::string& s) {
  uint64_t n = s.size();
  comm.broadcast(std::as_writable_bytes(std::span<uint64_t>(&n, 1)), 0);
  std::string out = comm.rank() == 0 ? s : std::string(n, '\0');
  comm.broadcast(std::as_writable_bytes(std::span<char>(out.data(), out.size())), 0);
  return out;
}

std::vector<std::string> all_gather_strings(Communicator& comm, const std::string& mine,
                                            size_t width) {
  std::string padded = mine.substr(0, width);
  padded.resize(width, '\0');
  std::string all(width * static_cast<size_t>(comm.size()), '\0');
  comm.all_gather(std::as_bytes(std::span<const char>(padded.data(), width)),
                  std::as_writable_bytes(std::span<char>(all.data(), all.size())));
  std::vector<std::string> out;
  for (int r = 0; r < comm.size(); ++r) {
    std::string s = all.substr(static_cast<size_t>(r) * width, width);
    s.resize(std::strlen(s.c_str()));
    out.push_back(std::move(s));
  }
  return out;
}

}  // namespace huginn
