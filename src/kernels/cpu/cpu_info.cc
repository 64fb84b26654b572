// Cache sizes found at run time, and the GEMM blocking derived from them (cpu_info.h).
#include "kernels/cpu/cpu_info.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <fstream>

namespace huginn::cpu {
namespace {

std::string read_word(const std::string& path) {
  std::ifstream f(path);
  std::string s;
  f >> s;
  return s;
}

// "0-3,8,10-11" -> 7 CPUs; 0 when empty or malformed.
int count_cpu_list(const std::string& s) {
  int n = 0;
  size_t p = 0;
  while (p < s.size()) {
    const size_t q = std::min(s.find(',', p), s.size());
    const std::string part = s.substr(p, q - p);
    const size_t dash = part.find('-');
    char* end = nullptr;
    const long a = std::strtol(part.c_str(), &end, 10);
    if (end == part.c_str()) return 0;
    const long b = dash == std::string::npos ? a : std::strtol(part.c_str() + dash + 1, &end, 10);
    if (b < a) return 0;
    n += static_cast<int>(b - a + 1);
    p = q + 1;
  }
  return n;
}

void apply_env(const char* name, int64_t& v) {
  if (const char* e = std::getenv(name)) {
    const int64_t b = parse_cache_size(e);
    if (b > 0) v = b;
  }
}

CpuCaches detect() {
  CpuCaches c = read_sysfs_caches("/sys/devices/system/cpu");
  c.source = c.l1d > 0 || c.l2 > 0 || c.l3 > 0 ? "sysfs" : "";
  auto from_sysconf = [&](int64_t& v, int name) {
    if (v > 0) return;
    const long s = sysconf(name);
    if (s > 0) {
      v = s;
      if (c.source.find("sysconf") == std::string::npos)
        c.source += c.source.empty() ? "sysconf" : "+sysconf";
    }
  };
  from_sysconf(c.l1d, _SC_LEVEL1_DCACHE_SIZE);
  from_sysconf(c.l2, _SC_LEVEL2_CACHE_SIZE);
  from_sysconf(c.l3, _SC_LEVEL3_CACHE_SIZE);
  auto fallback = [&](int64_t& v, int64_t d) {
    if (v > 0) return;
    v = d;
    if (c.source.find("default") == std::string::npos)
      c.source += c.source.empty() ? "default" : "+default";
  };
  fallback(c.l1d, int64_t{32} << 10);
  fallback(c.l2, int64_t{1} << 20);
  fallback(c.l3, int64_t{8} << 20);
  apply_env("HUGINN_L1D", c.l1d);
  apply_env("HUGINN_L2", c.l2);
  apply_env("HUGINN_L3", c.l3);
  return c;
}

int64_t round_down(int64_t v, int64_t unit) { return std::max(unit, v / unit * unit); }

}  // namespace

int64_t parse_cache_size(const std::string& s) {
  if (s.empty() || !std::isdigit(static_cast<unsigned char>(s[0]))) return -1;
  char* end = nullptr;
  const long long n = std::strtoll(s.c_str(), &end, 10);
  const std::string unit(end);
  if (unit.empty()) return n;
  if (unit == "K" || unit == "k") return n << 10;
  if (unit == "M" || unit == "m") return n << 20;
  if (unit == "G" || unit == "g") return n << 30;
  return -1;
}

CpuCaches read_sysfs_caches(const std::string& cpu_dir) {
  CpuCaches c;
  for (int i = 0; i < 16; ++i) {
    const std::string dir = cpu_dir + "/cpu0/cache/index" + std::to_string(i) + "/";
    const std::string level = read_word(dir + "level");
    if (level.empty()) continue;  // indices need not be dense
    const std::string type = read_word(dir + "type");
    const int64_t size = parse_cache_size(read_word(dir + "size"));
    if (size <= 0 || type == "Instruction") continue;
    const int shared = std::max(1, count_cpu_list(read_word(dir + "shared_cpu_list")));
    if (level == "1" && type == "Data") c.l1d = size;
    if (level == "2") c.l2 = size, c.l2_shared_by = shared;
    if (level == "3") c.l3 = size, c.l3_shared_by = shared;
  }
  return c;
}

const CpuCaches& cpu_caches() {
  static const CpuCaches c = detect();
  return c;
}

namespace {
// The override: set once by a test before the GEMMs it checks run (no GEMM is in flight then).
std::atomic<bool> g_override_set{false};
GemmBlocking g_override{};
}  // namespace

GemmBlocking gemm_blocking_from_env(GemmBlocking b) {
  const char* e = std::getenv("HUGINN_GEMM_BLOCKING");
  long long kc = 0, mc = 0, nc = 0;
  if (e && std::sscanf(e, "%lld,%lld,%lld", &kc, &mc, &nc) == 3 && kc > 0 && mc > 0 && nc > 0)
    b = {round_down(kc, 64), mc, nc};
  return b;
}

void set_gemm_blocking_override(const GemmBlocking* b) {
  if (b) g_override = *b;
  g_override_set.store(b != nullptr, std::memory_order_release);
}

bool gemm_blocking_override(GemmBlocking* b) {
  if (!g_override_set.load(std::memory_order_acquire)) return false;
  *b = g_override;
  return true;
}

GemmBlocking gemm_blocking(const CpuCaches& c, int MR, int NR) {
  constexpr int64_t kElem = 4;
  // kc: an A and a B micro-panel within a quarter of L2 (they stream from there; what L1 holds
  // of them is the next few k), at least 256: measured on Zen 4 (32 KiB L1d), kc 64 and 128
  // ran at 67 % and 77 % of the FMA peak against 83-89 % for 256..1024 (the fixed cost of each
  // tile call and panel pack is paid per k block).
  const int64_t l2 = c.l2 / std::max(1, c.l2_shared_by);
  const int64_t kc = std::clamp<int64_t>(round_down(l2 / 4 / ((MR + NR) * kElem), 64), 256, 768);
  // mc: the A block in half of L2.
  const int64_t mc = std::clamp<int64_t>(round_down(l2 / 2 / (kc * kElem), MR), MR, 4096);
  // nc: the B block in half of this thread's share of L3 (or of L2 when there is no L3).
  const int64_t l3 = c.l3 > 0 ? c.l3_per_thread() : l2;
  const int64_t nc = std::clamp<int64_t>(round_down(l3 / 2 / (kc * kElem), NR), NR, 8192);
  return {kc, mc, nc};
}

}  // namespace huginn::cpu
