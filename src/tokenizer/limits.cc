#include "tokenizer/limits.h"

#include "huginn/error.h"

namespace huginn::tok {

void throw_growth(const std::string& stage, size_t input_bytes, size_t would_bytes) {
  throw Error(stage + ": the text would grow from " + std::to_string(input_bytes) + " to " +
              (would_bytes == SIZE_MAX ? std::string("more than 2^64") : std::to_string(would_bytes)) +
              " bytes, more than the bound of " + std::to_string(kGrowthFactor) + " x input + " +
              std::to_string(kGrowthSlack) + " = " + std::to_string(growth_bound(input_bytes)) +
              " bytes");
}

std::string quote(std::string_view s) {
  constexpr size_t kMax = 64;
  if (s.size() <= kMax) return std::string(s);
  size_t cut = kMax;
  while (cut > 0 && (static_cast<unsigned char>(s[cut]) & 0xC0) == 0x80) --cut;
  return std::string(s.substr(0, cut)) + "... (" + std::to_string(s.size()) + " bytes)";
}

}  // namespace huginn::tok
