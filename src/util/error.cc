#include "huginn/error.h"

#include <cstdio>
#include <cstdlib>

namespace huginn {

void assert_fail(const char* expr, const char* file, int line, const char* msg) {
  std::fprintf(stderr, "huginn: internal error at %s:%d: %s (%s)\n", file, line, msg, expr);
  std::abort();
}

}  // namespace huginn
