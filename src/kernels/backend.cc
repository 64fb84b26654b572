#include "huginn/backend.h"

namespace huginn {

std::unique_ptr<Backend> make_backend(const std::string& name, ThreadPool& pool) {
  if (name == "ref") return make_ref_backend();
  if (name == "cpu") return make_cpu_backend(pool);
  if (name == "strict") return make_strict_backend(pool);
  throw Error("unknown backend '" + name + "' (expected 'cpu', 'ref' or 'strict')");
}

}  // namespace huginn
