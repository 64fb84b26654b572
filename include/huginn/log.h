// Minimal leveled logging to stderr. Progress lines for long work go through here too.
#pragma once

#include <cstdarg>

namespace huginn {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarn = 2, kError = 3, kQuiet = 4 };

void set_log_level(LogLevel level);
LogLevel log_level();
void log(LogLevel level, const char* fmt, ...) __attribute__((format(printf, 2, 3)));

#define HUGINN_LOG_INFO(...) ::huginn::log(::huginn::LogLevel::kInfo, __VA_ARGS__)
#define HUGINN_LOG_WARN(...) ::huginn::log(::huginn::LogLevel::kWarn, __VA_ARGS__)
#define HUGINN_LOG_DEBUG(...) ::huginn::log(::huginn::LogLevel::kDebug, __VA_ARGS__)

}  // namespace huginn
