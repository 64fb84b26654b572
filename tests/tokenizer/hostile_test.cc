// Hostile tokenizer files and texts (issue 19): each case is a defect found by an attacker's
// tests or a fuzzer, and is answered by bounded work or by an Error that names the field and the
// bound. ctest gives these cases 120 s each (hostile_timeout.cmake): every one takes well under a
// second when the work is bounded, and minutes or forever when it is not.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "huginn/error.h"
#include "huginn/tokenizer.h"
#include "tokenizer/unicode.h"

namespace huginn {
namespace {

using json = nlohmann::json;
using tok::NormForm;

std::string repeat(const std::string& s, size_t n) {
  std::string out;
  out.reserve(s.size() * n);
  for (size_t k = 0; k < n; ++k) out += s;
  return out;
}

const std::string kAcute = "\xCC\x81";      // U+0301, combining class 230
const std::string kDotBelow = "\xCC\xA3";   // U+0323, combining class 220
const std::string kADotBelow = "\xE1\xBA\xA1";  // U+1EA1 = a + U+0323

// Alternating marks of two classes are the worst case of a reordering by neighbour swaps
// (n^2 / 8 swaps): 400,000 marks took minutes; a sort takes milliseconds.
TEST(HostileText, LongRunOfOutOfOrderCombiningMarks) {
  const size_t n = 200000;
  std::string text = "a" + repeat(kAcute + kDotBelow, n) + "b";
  // Canonical order puts every U+0323 before every U+0301; NFC then composes a + U+0323.
  EXPECT_EQ(tok::normalize(text, NormForm::kNFD),
            "a" + repeat(kDotBelow, n) + repeat(kAcute, n) + "b");
  EXPECT_EQ(tok::normalize(text, NormForm::kNFC),
            kADotBelow + repeat(kDotBelow, n - 1) + repeat(kAcute, n) + "b");
  EXPECT_EQ(tok::normalize(text, NormForm::kNFKC),
            kADotBelow + repeat(kDotBelow, n - 1) + repeat(kAcute, n) + "b");
}

// The sorted reordering against utf8proc's own (the reference) on random runs of marks of many
// classes, starters that compose with them, Hangul jamo, compatibility characters and invalid
// bytes: the same text in every form.
TEST(HostileText, SortedReorderingMatchesUtf8proc) {
  const std::vector<std::string> parts = {
      "a", "e", "o", "A", "\xC3\xA9", kAcute, kDotBelow, "\xCC\x80", "\xCD\x85" /*240*/,
      "\xCC\x95" /*232*/, "\xCC\xA8" /*202*/, "\xD6\xB0" /*10*/, "\xD6\xB1" /*11*/,
      "\xE0\xA4\xBC" /*7*/, "\xE0\xA5\x8D" /*9*/, "\xE3\x82\x99" /*8*/, "\xCC\xB4" /*1*/,
      "\xE1\x84\x80", "\xE1\x85\xA1", "\xE1\x86\xA8", "\xEA\xB0\x80", "\xEF\xB7\xBA" /*U+FDFA*/,
      "\xE1\xBE\xB3", "\xCE\x90", "\xF0\x91\x84\xA7", "\xff", "\xe4\xb8", " "};
  std::mt19937 rng(19);
  for (int rep = 0; rep < 2000; ++rep) {
    std::string s;
    int n = 1 + static_cast<int>(rng() % 40);
    for (int k = 0; k < n; ++k) {
      // Mostly marks, so that runs of them are long.
      size_t pick = rng() % 3 ? 5 + rng() % 12 : rng() % parts.size();
      s += parts[pick];
    }
    for (auto form : {NormForm::kNFC, NormForm::kNFD, NormForm::kNFKC, NormForm::kNFKD})
      ASSERT_EQ(tok::normalize(s, form), tok::normalize_reference(s, form))
          << json(tok::utf8_lossy(s)).dump() << " form " << static_cast<int>(form);
  }
}

}  // namespace
}  // namespace huginn
