// Errors, in two tiers: huginn::Error for bad input (files, configs, flags, requests), thrown and
// handled at the boundary with a message naming the file/field/tensor, what was expected and
// what was found; HUGINN_ASSERT for internal invariants, which may abort.
#pragma once

#include <stdexcept>
#include <string>

namespace huginn {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

// Work stopped on request (a caller's stop predicate said no: a server's cancel or deadline),
// not a fault of the input.
class Cancelled : public Error {
 public:
  explicit Cancelled(const std::string& what) : Error(what) {}
};

[[noreturn]] void assert_fail(const char* expr, const char* file, int line, const char* msg);

}  // namespace huginn

#define HUGINN_ASSERT(cond, msg)                                  \
  do {                                                            \
    if (!(cond)) ::huginn::assert_fail(#cond, __FILE__, __LINE__, msg); \
  } while (0)

#ifdef NDEBUG
#define HUGINN_DASSERT(cond, msg) ((void)0)
#else
#define HUGINN_DASSERT(cond, msg) HUGINN_ASSERT(cond, msg)
#endif
