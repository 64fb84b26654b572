// JSON from files and requests, parsed with bounds: nesting depth, size and duplicate keys are
// checked while parsing, so a hostile document is an Error naming its source, never a stack
// overflow (nlohmann's dump, copy and compare recurse once per level) or a silent choice between
// two values of one key. Every JSON the project reads from outside should come through here.
#pragma once

#include <cstddef>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace huginn {

struct JsonLimits {
  // Deepest nesting accepted: the top-level value is depth 1, `{"a": [1]}` is depth 2. Real model
  // files need 3 to 5; 64 leaves room for any sane config and keeps recursive code safe.
  int max_depth = 64;
  // Largest text accepted by read_json_file (parse_json takes what it is given).
  size_t max_bytes = size_t{64} << 20;
  // Two values for one key in one object are an error (nlohmann alone keeps the last one).
  bool reject_duplicate_keys = true;
};

// Parses `text`. Throws huginn::Error starting "<source>: " when it is not valid JSON, nests
// deeper than limits.max_depth, or repeats a key; the message says which bound and where.
nlohmann::json parse_json(std::string_view text, const std::string& source,
                          const JsonLimits& limits = {});

// Reads and parses the file at `path` (at most limits.max_bytes bytes).
nlohmann::json read_json_file(const std::string& path, const JsonLimits& limits = {});

// "type text" for "found ..." in error messages: the value's type name and at most `max_chars`
// characters of its compact JSON text ("..." marks a cut). Bounded in time, memory and recursion
// whatever the value (deep levels print as [...] / {...}).
std::string json_preview(const nlohmann::json& v, size_t max_chars = 60);

}  // namespace huginn
