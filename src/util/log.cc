#include "huginn/log.h"

#include <atomic>
#include <cstdio>

namespace huginn {
namespace {
std::atomic<int> g_level{static_cast<int>(LogLevel::kInfo)};
const char* prefix(LogLevel l) {
  switch (l) {
    case LogLevel::kDebug: return "debug: ";
    case LogLevel::kWarn: return "warning: ";
    case LogLevel::kError: return "error: ";
    default: return "";
  }
}
}  // namespace

void set_log_level(LogLevel level) { g_level = static_cast<int>(level); }
LogLevel log_level() { return static_cast<LogLevel>(g_level.load()); }

void log(LogLevel level, const char* fmt, ...) {
  if (static_cast<int>(level) < g_level.load()) return;
  char buf[4096];
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(buf, sizeof(buf), fmt, ap);
  va_end(ap);
  std::fprintf(stderr, "%s%s\n", prefix(level), buf);
}

}  // namespace huginn
