// Replays every committed fuzz input through its target's body (the same code the fuzzers run):
// the seed corpus fuzz/corpus/<target>/ and the minimised findings fuzz/regressions/<target>/.
// An input passes when the body returns (a clean huginn::Error counts); a property violation or a
// foreign exception fails the test naming the file; a crash fails the whole binary.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>

#include "fuzz_util.h"

namespace huginn::fuzz {
namespace {

namespace fs = std::filesystem;

std::vector<std::string> inputs(const std::string& dir) {
  std::vector<std::string> out;
  if (!fs::is_directory(dir)) return out;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.is_regular_file()) out.push_back(e.path().string());
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

void PrintTo(const Target& t, std::ostream* os) { *os << t.name; }

namespace {

class FuzzCorpus : public testing::TestWithParam<Target> {};

TEST_P(FuzzCorpus, EveryInputEndsCleanly) {
  const Target& t = GetParam();
  const std::string root = HUGINN_FUZZ_DIR;
  const std::vector<std::string> seeds = inputs(root + "/corpus/" + t.name);
  ASSERT_FALSE(seeds.empty()) << "fuzz/corpus/" << t.name << "/ has no seed inputs";
  std::vector<std::string> all = seeds;
  for (const std::string& r : inputs(root + "/regressions/" + t.name)) all.push_back(r);
  for (const std::string& path : all) {
    const std::string bytes = read_file(path);
    try {
      t.body(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
    } catch (const Violation& e) {
      ADD_FAILURE() << path << ": property violated: " << e.what();
    } catch (const std::exception& e) {
      ADD_FAILURE() << path << ": " << type_name(e) << " escaped (not huginn::Error): "
                    << e.what();
    }
  }
  std::printf("%s: %zu inputs replayed\n", t.name.c_str(), all.size());
}

INSTANTIATE_TEST_SUITE_P(Targets, FuzzCorpus, testing::ValuesIn(targets()),
                         [](const testing::TestParamInfo<Target>& i) { return i.param.name; });

}  // namespace
}  // namespace huginn::fuzz
