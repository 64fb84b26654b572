// The build is what it says: HUGINN_DASSERT compiled in exactly when configured (Debug or
// -DHUGINN_DASSERT=ON, as the sanitizer builds are), and the sanitizer named by HUGINN_SANITIZE
// really active, catching a heap overflow and undefined behaviour fatally (make test-asan).
#include <gtest/gtest.h>

#include <cstring>
#include <memory>
#include <string>

#include "huginn/error.h"

namespace huginn {
namespace {

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/common_interface_defs.h>
constexpr const char* kActive = "address";
#elif defined(__SANITIZE_THREAD__)
constexpr const char* kActive = "thread";
#else
constexpr const char* kActive = "";
#endif

TEST(BuildConfig, DassertIsCompiledInExactlyWhenConfigured) {
  int evaluated = 0;
  auto failing = [&] { HUGINN_DASSERT((++evaluated, false), "a debug assertion fired"); };
#if HUGINN_EXPECT_DASSERT
  EXPECT_DEATH(failing(), "a debug assertion fired");
  HUGINN_DASSERT((++evaluated, true), "never");
  EXPECT_EQ(evaluated, 1);  // evaluated here, in this process (the death ran in a child)
#else
  failing();
  HUGINN_DASSERT((++evaluated, true), "never");
  EXPECT_EQ(evaluated, 0);  // compiled out: the condition is not even evaluated
#endif
}

// Volatile, so that the compiler cannot see through the bad accesses below.
volatile int g_index = 8;
volatile int g_big = 0x7fffffff;

// make test-asan sends every report to a file (log_path; any file fails the run): the deaths
// below report to stderr instead, where EXPECT_DEATH looks for them.
void report_to_stderr() {
#if defined(__SANITIZE_ADDRESS__)
  __sanitizer_set_report_path("stderr");
#endif
}

TEST(BuildConfig, TheConfiguredSanitizerIsActiveAndFatal) {
  std::string want = HUGINN_EXPECT_SANITIZE;
  if (want == "ON") want = "address";
  if (want == "OFF") want = "";
  ASSERT_EQ(std::string(kActive), want) << "HUGINN_SANITIZE=" << HUGINN_EXPECT_SANITIZE;
  if (want == "address") {
    EXPECT_DEATH(
        {
          report_to_stderr();
          std::unique_ptr<char[]> p(new char[8]);
          std::memset(p.get(), 0, 8);
          volatile char c = p[g_index];  // one past the end
          (void)c;
        },
        "heap-buffer-overflow");
    EXPECT_DEATH(
        {
          report_to_stderr();
          volatile int x = g_big + g_index;  // signed overflow: UBSan, not recovered
          (void)x;
        },
        "signed integer overflow");
  }
}

}  // namespace
}  // namespace huginn
