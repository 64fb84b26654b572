// The hand-written pre-tokenizer scanners (src/tokenizer/scanner.h) against PCRE2 on arbitrary
// text: byte 0 picks a pattern, the rest (made valid UTF-8 by utf8_lossy, as the pipeline's input
// is) is the text. Patterns: the Split regexes of the real tokenizers of tests/data/tokenizers
// (cl100k, qwen3: the cl100k scanner with 3 and 1 digits; gpt-oss: o200k), GPT-2's, and the
// Huginn-0125 tokenizer's "aeolian" (tests/data/aeolian/aeolian.regex) and its "ascra" variant.
// Property: every match (start, end) the scanner finds equals PCRE2's, in order.
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>

#include "fuzz_util.h"
#include "tokenizer/regex.h"
#include "tokenizer/scanner.h"
#include "tokenizer/unicode.h"

using namespace huginn;

namespace {

struct Pair {
  std::string name;
  std::unique_ptr<tok::Regex> scanned, pcre;
};

std::string split_regex(const std::string& tokenizer) {
  std::ifstream f(fuzz::test_data("tokenizers/" + tokenizer + "/tokenizer.json"));
  return nlohmann::json::parse(f)["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"].get<std::string>();
}

std::vector<Pair>& pairs() {
  static std::vector<Pair> all = [] {
    std::ifstream f(fuzz::test_data("aeolian/aeolian.regex"), std::ios::binary);
    const std::string aeolian{std::istreambuf_iterator<char>(f), {}};
    const std::string last = "[\\p{P}\\p{S}])";  // ascra repeats the last class
    const size_t at = aeolian.find(last);
    const std::string ascra =
        aeolian.substr(0, at) + "[\\p{P}\\p{S}]+)" + aeolian.substr(at + last.size());
    const std::vector<std::pair<std::string, std::string>> patterns = {
        {"cl100k", split_regex("cl100k")},
        {"qwen3", split_regex("qwen3")},
        {"gpt-oss", split_regex("gpt-oss")},
        {"gpt2", "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+"},
        {"aeolian", aeolian},
        {"ascra", ascra}};
    std::vector<Pair> v;
    for (const auto& [name, pattern] : patterns) {
      Pair p{name, std::make_unique<tok::Regex>(pattern, name),
             std::make_unique<tok::Regex>(pattern, name, /*allow_scanner=*/false)};
      fuzz::check(p.scanned->scanner() != nullptr, name + ": no scanner recognises the pattern");
      v.push_back(std::move(p));
    }
    return v;
  }();
  return all;
}

const fuzz::Setup setup([] { pairs(); });

}  // namespace

HUGINN_FUZZ_TARGET(pretokenizer_scanner) {
  if (size == 0) return;
  const Pair& p = pairs()[data[0] % pairs().size()];
  const std::string text =
      tok::utf8_lossy(std::string_view(reinterpret_cast<const char*>(data + 1), size - 1));
  std::vector<std::pair<size_t, size_t>> got, want;
  p.scanned->find_all(text, got);
  p.pcre->find_all(text, want);
  if (got == want) return;
  size_t i = 0;
  while (i < got.size() && i < want.size() && got[i] == want[i]) ++i;
  auto at = [](const std::vector<std::pair<size_t, size_t>>& m, size_t i) {
    if (i >= m.size()) return std::string("none");
    char buf[64];
    std::snprintf(buf, sizeof buf, "[%zu, %zu)", m[i].first, m[i].second);
    return std::string(buf);
  };
  fuzz::check(false, p.name + ": match " + std::to_string(i) + " is " + at(got, i) +
                         " with the scanner, " + at(want, i) + " with PCRE2");
}
