// generation_config.json (and config.json, its fallback): read_eos_ids on a model directory
// whose generation_config.json is the first part of the input and config.json the second
// (parts split at "\n--\n"; an input without the separator has no config.json).
#include "fuzz_util.h"
#include "huginn/generate.h"

using namespace huginn;

HUGINN_FUZZ_TARGET(generation_config) {
  const auto parts =
      fuzz::split_parts(std::string_view(reinterpret_cast<const char*>(data), size), 2);
  const std::string dir = fuzz::fresh_dir("generation_config");
  fuzz::write_file(dir + "/generation_config.json", parts[0]);
  if (parts.size() > 1) fuzz::write_file(dir + "/config.json", parts[1]);
  fuzz::accepts([&] { read_eos_ids(dir); });
}
