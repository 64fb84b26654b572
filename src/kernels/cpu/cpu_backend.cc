// Placeholder: the fast CPU backend starts as the reference and overrides op by op.
#include "huginn/thread_pool.h"
#include "kernels/ref/ref_backend.h"

namespace huginn {

class CpuBackend : public RefBackend {
 public:
  explicit CpuBackend(ThreadPool& pool) : pool_(pool) {}
  const char* name() const override { return "cpu"; }

 private:
  ThreadPool& pool_;
};

std::unique_ptr<Backend> make_cpu_backend(ThreadPool& pool) {
  return std::make_unique<CpuBackend>(pool);
}

}  // namespace huginn
