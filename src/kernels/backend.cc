#include "huginn/backend.h"

namespace huginn {

std::unique_ptr<Backend> make_backend(const std::string& name, ThreadPool& pool) {
  if (name == "ref") return make_ref_backend();
  if (name == "cpu") return make_cpu_backend(pool);
  throw Error("unknown backend '" + name + "' (expected 'cpu' or 'ref')");
}

}  // namespace huginn
