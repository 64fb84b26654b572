// eos ids from a model directory's generation_config.json / config.json.
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "huginn/generate.h"

namespace huginn {

namespace {

void collect(const nlohmann::json& v, const std::string& file, std::vector<int32_t>& out) {
  auto add = [&](const nlohmann::json& x) {
    if (!x.is_number_integer())
      throw Error(file + ": eos_token_id must be an integer or a list of integers, found " +
                  x.dump());
    out.push_back(x.get<int32_t>());
  };
  if (v.is_null()) return;
  if (v.is_array()) {
    for (const auto& x : v) add(x);
  } else {
    add(v);
  }
}

}  // namespace

std::vector<int32_t> read_eos_ids(const std::string& dir) {
  std::vector<int32_t> out;
  for (const char* name : {"generation_config.json", "config.json"}) {
    const std::string path = dir + "/" + name;
    if (!std::filesystem::exists(path)) continue;
    std::ifstream f(path);
    std::stringstream ss;
    ss << f.rdbuf();
    nlohmann::json j = nlohmann::json::parse(ss.str(), nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.is_object()) throw Error(path + ": not a JSON object");
    if (j.contains("eos_token_id")) collect(j["eos_token_id"], path, out);
    if (!out.empty()) return out;
  }
  return out;
}

}  // namespace huginn
