// Cache sizes found at run time and the GEMM blocking derived from them (kernels/cpu/cpu_info.h):
// sysfs parsing on made-up machines (a 2-core VM like the development one, a 36 MB-L3 Xeon),
// size strings, the blocking's invariants, and this machine's detection.
#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "kernels/cpu/cpu_info.h"
#include "test_util.h"

namespace huginn {
namespace {

namespace fs = std::filesystem;

// cpu0/cache/index<i>/{level,type,size,shared_cpu_list} under a fresh directory.
struct FakeSysfs {
  fs::path root;
  FakeSysfs() {
    root = fs::temp_directory_path() / ("huginn_cpu_info_test_" + std::to_string(::getpid()));
    fs::remove_all(root);
  }
  ~FakeSysfs() { fs::remove_all(root); }
  void add(int index, const std::string& level, const std::string& type, const std::string& size,
           const std::string& shared) {
    const fs::path d = root / "cpu0" / "cache" / ("index" + std::to_string(index));
    fs::create_directories(d);
    std::ofstream(d / "level") << level << "\n";
    std::ofstream(d / "type") << type << "\n";
    std::ofstream(d / "size") << size << "\n";
    std::ofstream(d / "shared_cpu_list") << shared << "\n";
  }
};

TEST(CpuInfo, ParsesCacheSizes) {
  EXPECT_EQ(cpu::parse_cache_size("32K"), 32 << 10);
  EXPECT_EQ(cpu::parse_cache_size("1024K"), 1 << 20);
  EXPECT_EQ(cpu::parse_cache_size("36M"), int64_t{36} << 20);
  EXPECT_EQ(cpu::parse_cache_size("65536"), 65536);
  EXPECT_EQ(cpu::parse_cache_size(""), -1);
  EXPECT_EQ(cpu::parse_cache_size("K"), -1);
  EXPECT_EQ(cpu::parse_cache_size("12X"), -1);
}

TEST(CpuInfo, ReadsSysfsOfAXeon) {
  FakeSysfs s;
  s.add(0, "1", "Data", "48K", "0,32");
  s.add(1, "1", "Instruction", "32K", "0,32");
  s.add(2, "2", "Unified", "2048K", "0,32");
  s.add(3, "3", "Unified", "36608K", "0-31,64-95");
  const cpu::CpuCaches c = cpu::read_sysfs_caches(s.root.string());
  EXPECT_EQ(c.l1d, 48 << 10);
  EXPECT_EQ(c.l2, 2048 << 10);
  EXPECT_EQ(c.l2_shared_by, 2);
  EXPECT_EQ(c.l3, int64_t{36608} << 10);
  EXPECT_EQ(c.l3_shared_by, 64);
  EXPECT_EQ(c.l3_per_thread(), (int64_t{36608} << 10) / 64);
}

TEST(CpuInfo, SparseIndicesAndMissingLevels) {
  FakeSysfs s;
  s.add(0, "1", "Data", "32K", "0");
  s.add(3, "2", "Unified", "1024K", "0");  // index 1 and 2 absent, no L3
  const cpu::CpuCaches c = cpu::read_sysfs_caches(s.root.string());
  EXPECT_EQ(c.l1d, 32 << 10);
  EXPECT_EQ(c.l2, 1 << 20);
  EXPECT_EQ(c.l3, 0);
  const cpu::CpuCaches none = cpu::read_sysfs_caches((s.root / "nothing").string());
  EXPECT_EQ(none.l1d, 0);
  EXPECT_EQ(none.l2, 0);
}

TEST(CpuInfo, BlockingFollowsTheCaches) {
  auto check = [](const cpu::CpuCaches& c, int MR, int NR) {
    const cpu::GemmBlocking b = cpu::gemm_blocking(c, MR, NR);
    EXPECT_EQ(b.kc % 64, 0);
    EXPECT_GE(b.kc, 256);
    EXPECT_LE(b.kc, 768);
    EXPECT_EQ(b.mc % MR, 0);
    EXPECT_EQ(b.nc % NR, 0);
    // The A block in half of L2, the B block in half of this thread's L3 share (when they can).
    const int64_t l2 = c.l2 / c.l2_shared_by;
    if (b.mc > MR) {
      EXPECT_LE(b.mc * b.kc * 4, l2 / 2);
    }
    const int64_t l3 = c.l3 > 0 ? c.l3_per_thread() : l2;  // no L3: L2 holds the B block
    if (b.nc > NR && b.nc < 8192) {
      EXPECT_LE(b.nc * b.kc * 4, l3 / 2);
    }
    return b;
  };
  cpu::CpuCaches zen4;  // the development VM: 32 KiB L1d, 1 MiB L2, 32 MiB L3 for 2 threads
  zen4.l1d = 32 << 10, zen4.l2 = 1 << 20, zen4.l3 = int64_t{32} << 20, zen4.l3_shared_by = 2;
  cpu::CpuCaches xeon;  // 48 KiB L1d, 2 MiB L2 per 2 threads, 36 MiB L3 for 64 threads
  xeon.l1d = 48 << 10, xeon.l2 = 2 << 20, xeon.l2_shared_by = 2, xeon.l3 = int64_t{36} << 20,
  xeon.l3_shared_by = 64;
  const cpu::GemmBlocking a = check(zen4, 12, 32), b = check(xeon, 12, 32);
  check(zen4, 6, 16);
  check(xeon, 6, 16);
  EXPECT_GT(a.nc, b.nc) << "a larger L3 share per thread holds a wider B block";
  cpu::CpuCaches small;  // tiny caches still give a usable blocking
  small.l1d = 16 << 10, small.l2 = 128 << 10, small.l3 = 0;
  check(small, 12, 32);
}

TEST(CpuInfo, ThisMachineHasCaches) {
  const cpu::CpuCaches& c = cpu::cpu_caches();
  EXPECT_GT(c.l1d, 0);
  EXPECT_GT(c.l2, 0);
  EXPECT_GT(c.l3, 0);
  EXPECT_FALSE(c.source.empty());
}

}  // namespace
}  // namespace huginn
