// Helpers shared by the tokenizer tests: a small tokenizer.json, and the error of loading one.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "huginn/error.h"
#include "huginn/tokenizer.h"

namespace huginn::test {

// A small tokenizer.json: vocabulary of the given tokens (ids in order), merges, no components.
inline nlohmann::json tiny(std::vector<std::string> vocab, std::vector<std::string> merges = {}) {
  nlohmann::json v = nlohmann::json::object();
  for (size_t k = 0; k < vocab.size(); ++k) v[vocab[k]] = k;
  return nlohmann::json{{"version", "1.0"},
                        {"truncation", nullptr},
                        {"padding", nullptr},
                        {"added_tokens", nlohmann::json::array()},
                        {"normalizer", nullptr},
                        {"pre_tokenizer", nullptr},
                        {"post_processor", nullptr},
                        {"decoder", nullptr},
                        {"model", {{"type", "BPE"}, {"vocab", v}, {"merges", merges}}}};
}

// The error of loading `text` as "bad.json", or "" when it loads.
inline std::string error_of(const std::string& text) {
  try {
    Tokenizer::from_json(text, "bad.json");
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace huginn::test
