// The portable build's safety net (simd.h): the kernel objects of an AVX instruction set may only
// define names that carry that set (its vector type VecAvx2 / VecAvx512, or the namespace
// isa_avx2 / isa_avx512). Any other externally visible function defined there is one the linker
// may pick for the whole program, so it must hold no AVX instruction, or a CPU without that set
// would run into it (SIGILL) from generic code. The check reads the objects with nm and objdump
// (binutils, present wherever the compiler is); a planted object proves it can fail.
#include <gtest/gtest.h>

#include <cstdio>
#include <memory>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

namespace {

std::string run(const std::string& cmd) {
  std::unique_ptr<FILE, int (*)(FILE*)> p(popen(cmd.c_str(), "r"), &pclose);
  if (!p) return {};
  std::string out;
  char buf[4096];
  for (size_t n; (n = fread(buf, 1, sizeof buf, p.get())) > 0;) out.append(buf, n);
  return out;
}

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  for (std::string item; std::getline(ss, item, sep);)
    if (!item.empty()) out.push_back(item);
  return out;
}

// "file: symbol uses AVX" for each externally visible function of `obj` whose demangled name
// lacks every marker and whose code uses a VEX/EVEX instruction.
std::vector<std::string> violations(const std::string& obj, const std::vector<std::string>& markers) {
  std::vector<std::string> out;
  // Defined, externally visible (strong T or weak W) text symbols, mangled.
  for (const std::string& line : split(run("nm --defined-only -g '" + obj + "'"), '\n')) {
    const std::vector<std::string> f = split(line, ' ');
    if (f.size() != 3 || (f[1] != "T" && f[1] != "W")) continue;
    const std::string demangled = run("c++filt '" + f[2] + "'");
    bool marked = false;
    for (const std::string& m : markers) marked |= demangled.find(m) != std::string::npos;
    if (marked) continue;
    const std::string code =
        run("objdump -d --no-show-raw-insn --disassemble='" + f[2] + "' '" + obj + "'");
    static const std::regex avx(R"(\t(v[a-z0-9]+|k(mov|and|or|xor|not|shift)[a-z]*)\s|%[yz]mm)");
    if (std::regex_search(code, avx)) out.push_back(obj + ": " + demangled);
  }
  return out;
}

TEST(IsaObjects, ToolsArePresent) {
  ASSERT_NE(run("nm --version").find("GNU nm"), std::string::npos) << "nm (binutils) missing";
  ASSERT_NE(run("objdump --version").find("GNU objdump"), std::string::npos)
      << "objdump (binutils) missing";
}

TEST(IsaObjects, AvxObjectsDefineOnlyTheirOwnNames) {
  const std::vector<std::pair<std::string, std::string>> sets = {
      {HUGINN_ISA_OBJECTS_AVX2, "avx2"}, {HUGINN_ISA_OBJECTS_AVX512, "avx512"}};
  int objects = 0;
  for (const auto& [list, isa] : sets) {
    const std::string vec = isa == "avx2" ? "VecAvx2" : "VecAvx512";
    for (const std::string& obj : split(list, ':')) {
      ++objects;
      for (const std::string& v : violations(obj, {vec, "isa_" + isa}))
        ADD_FAILURE() << "uses " << isa << " but is not named for it: " << v;
    }
  }
#if defined(HUGINN_HAVE_AVX2)
  EXPECT_GT(objects, 0) << "no AVX objects were handed to the test";
#endif
}

// An object that includes simd.h for AVX-512 and then defines a shared inline function (a
// standard-library-like name) with vector code: exactly what the rule forbids.
TEST(IsaObjects, CheckFindsAPlantedViolation) {
  const std::vector<std::string> v = violations(HUGINN_ISA_PLANTED_OBJECT, {"VecAvx512", "isa_avx512"});
  ASSERT_EQ(v.size(), 1u) << "the planted shared function was not found";
  EXPECT_NE(v[0].find("planted_shared_sum"), std::string::npos) << v[0];
}

}  // namespace
