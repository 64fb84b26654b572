// Hostile JSON in model files: nesting 100,000 deep (which crashed every loader that printed the
// value: nlohmann's dump recurses once per level), repeated keys, huge values in messages. Each
// loader must answer with an Error naming the file and the bound, never a crash.
#include "util/json.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <string>

#include "huginn/config.h"
#include "huginn/error.h"
#include "huginn/generate.h"
#include "huginn/safetensors.h"
#include "test_util.h"

namespace huginn {
namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

// [1,1,...,1]: shallow but long.
std::string wide_array(int n) {
  std::string s = "[";
  for (int i = 0; i < n; ++i) s += i ? ",1" : "1";
  return s + "]";
}

// 100,000 nested arrays (200 KB), the size that overflowed the stack.
std::string deep_array(int levels = 100000) {
  return std::string(static_cast<size_t>(levels), '[') + std::string(static_cast<size_t>(levels), ']');
}

template <class F>
std::string error_of(F fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "no huginn::Error thrown";
  return {};
}

void expect_parts(const std::string& msg, std::initializer_list<std::string> parts) {
  for (const auto& p : parts) EXPECT_NE(msg.find(p), std::string::npos) << "'" << p << "' not in: " << msg;
}

void write_text(const std::string& path, const std::string& text) {
  std::ofstream f(path, std::ios::binary);
  f << text;
}

std::string read_text(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

std::string st_bytes(const std::string& header) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>(header.size() >> (8 * i));
  return s + header;
}

// The golden tiny-a config with one key replaced by raw JSON text.
std::string config_with(const std::string& key, const std::string& raw_value) {
  json j = json::parse(read_text(test::golden_dir("tiny-a") + "/config.json"));
  j[key] = "@@";
  std::string text = j.dump();
  text.replace(text.find("\"@@\""), 4, raw_value);
  return text;
}

// ---- the shared parser --------------------------------------------------------------------------

TEST(JsonLimits, DepthIsBoundedAndNamed) {
  JsonLimits lim;
  lim.max_depth = 3;
  EXPECT_EQ(parse_json(R"({"a": [[1]]})", "s", lim)["a"][0][0], 1);
  expect_parts(error_of([&] { parse_json(R"({"a": [[[1]]]})", "src.json", lim); }),
               {"src.json", "nested deeper than 3 levels", "/a/0/0", "limit is 3"});
  expect_parts(error_of([&] { parse_json(deep_array(), "deep.json"); }),
               {"deep.json", "nested deeper than 64 levels"});
  // Exactly at the default bound is fine; one more is not.
  EXPECT_TRUE(parse_json(deep_array(64), "ok.json").is_array());
  expect_parts(error_of([&] { parse_json(deep_array(65), "x.json"); }), {"deeper than 64"});
}

TEST(JsonLimits, DuplicateKeysRejectedAtAnyDepth) {
  expect_parts(error_of([] { parse_json(R"({"a": 1, "b": 2, "a": 3})", "d.json"); }),
               {"d.json", "'a'", "twice", "top level"});
  expect_parts(error_of([] { parse_json(R"({"w": {"dtype": "F32", "dtype": "F16"}})", "d.json"); }),
               {"'dtype'", "twice", "/w"});
  JsonLimits lenient;
  lenient.reject_duplicate_keys = false;
  EXPECT_EQ(parse_json(R"({"a": 1, "a": 3})", "d.json", lenient)["a"], 3);
}

TEST(JsonLimits, SyntaxErrorsNameTheSourceAndStayShort) {
  expect_parts(error_of([] { parse_json("{\"a\": ", "bad.json"); }), {"bad.json: not valid JSON"});
  expect_parts(error_of([] { parse_json("{} x", "bad.json"); }), {"bad.json: not valid JSON"});
  // An unterminated 1 MB string: the message quotes a bounded piece of it.
  const std::string msg = error_of([] { parse_json("\"" + std::string(1 << 20, 'x'), "big.json"); });
  expect_parts(msg, {"big.json: not valid JSON"});
  EXPECT_LT(msg.size(), 400u);
}

TEST(JsonLimits, ValuesRoundTripThroughTheBuilder) {
  const std::string text =
      R"({"arr":[1,-2,3.5,"s",true,false,null,{"k":[]},[[]]],"big":18446744073709551615,"neg":-9223372036854775808,"o":{}})";
  EXPECT_EQ(parse_json(text, "t"), json::parse(text));
}

TEST(JsonLimits, PreviewIsBoundedWhateverTheValue) {
  // Built in code, so no parse-time bound protects it: 100,000 levels.
  json deep = json::array();
  json* at = &deep;
  for (int i = 0; i < 100000; ++i) {
    at->push_back(json::array());
    at = &at->back();
  }
  const std::string p = json_preview(deep);
  EXPECT_EQ(p.rfind("array [[[[[[", 0), 0u) << p;
  EXPECT_LE(p.size(), 6 + 60u);
  const std::string s = json_preview(json(std::string(10 << 20, 'y')));
  EXPECT_LE(s.size(), 7 + 60u);
  EXPECT_NE(s.find("..."), std::string::npos);
  EXPECT_EQ(json_preview(json::parse(R"([1,2])")), "array [1,2]");
  // Cuts never split a UTF-8 sequence: the preview stays valid UTF-8 at every length.
  std::string accents;
  for (int i = 0; i < 40; ++i) accents += "\xc3\xa9";
  for (size_t n = 4; n < 70; ++n) {
    const std::string q = json_preview(json(accents), n);
    EXPECT_NO_THROW((void)json(q).dump()) << n;
    EXPECT_LE(q.size(), 7 + n);
  }
  json wide = json::object();
  for (int i = 0; i < 100000; ++i) wide["k" + std::to_string(i)] = i;
  EXPECT_LE(json_preview(wide).size(), 7 + 60u);
}

TEST(JsonLimits, FileSizeBounded) {
  const std::string dir = test::make_temp_dir("json");
  write_text(dir + "/big.json", "[" + std::string(2000, ' ') + "]");
  JsonLimits lim;
  lim.max_bytes = 1000;
  expect_parts(error_of([&] { read_json_file(dir + "/big.json", lim); }),
               {dir + "/big.json", "2002 bytes", "limit of 1000"});
  EXPECT_TRUE(read_json_file(dir + "/big.json").is_array());
  fs::remove_all(dir);
}

// ---- every loader, 100,000 levels deep ---------------------------------------------------------

TEST(DeepJson, SafetensorsHeader) {
  const std::string header = R"({"w": )" + deep_array() + "}";
  expect_parts(error_of([&] { SafetensorsFile::from_bytes(st_bytes(header), "deep.safetensors"); }),
               {"deep.safetensors: header", "nested deeper than 8 levels"});
  // A shallow but wrong value is still printed, bounded.
  const std::string wide = R"({"w": )" + wide_array(50000) + "}";
  const std::string msg = error_of([&] { SafetensorsFile::from_bytes(st_bytes(wide), "w.safetensors"); });
  expect_parts(msg, {"w.safetensors", "'w'", "must be an object", "..."});
  EXPECT_LT(msg.size(), 300u);
  // From a file too.
  const std::string dir = test::make_temp_dir("deepst");
  write_text(dir + "/model.safetensors", st_bytes(header));
  expect_parts(error_of([&] { SafetensorsFile::open(dir + "/model.safetensors"); }),
               {dir + "/model.safetensors", "deeper than 8"});
  fs::remove_all(dir);
}

TEST(DeepJson, SafetensorsMetadata) {
  const std::string header = R"({"__metadata__": {"format": )" + deep_array() + "}}";
  expect_parts(error_of([&] { SafetensorsFile::from_bytes(st_bytes(header), "m.safetensors"); }),
               {"m.safetensors", "deeper than 8"});
}

TEST(DeepJson, ConfigKeys) {
  // A checked key (bias must be a boolean) and an ignored one (auto_map): both bounded at parse.
  for (const char* key : {"bias", "architecture_class_name", "auto_map", "n_embd"}) {
    expect_parts(error_of([&] { ModelConfig::from_json(config_with(key, deep_array()), "m/config.json"); }),
                 {"m/config.json", "nested deeper than 64 levels", std::string("/") + key});
  }
  // A value that is only long still gets a short message.
  const std::string msg = error_of(
      [&] { ModelConfig::from_json(config_with("bias", wide_array(50000)), "c.json"); });
  expect_parts(msg, {"c.json", "'bias'", "must be true or false", "..."});
  EXPECT_LT(msg.size(), 200u);
  expect_parts(error_of([&] {
                 ModelConfig::from_json(R"({"n_embd": 64, "n_embd": 65})", "dup/config.json");
               }),
               {"dup/config.json", "n_embd", "twice"});
}

TEST(DeepJson, ConfigFile) {
  const std::string dir = test::make_temp_dir("deepcfg");
  write_text(dir + "/config.json", config_with("bias", deep_array()));
  expect_parts(error_of([&] { ModelConfig::from_file(dir + "/config.json"); }),
               {dir + "/config.json", "deeper than 64"});
  fs::remove_all(dir);
}

TEST(DeepJson, IndexWeightMap) {
  expect_parts(error_of([] {
                 parse_safetensors_index(R"({"weight_map": )" + deep_array() + "}", "i.json");
               }),
               {"i.json", "deeper than 8"});
  expect_parts(error_of([] {
                 parse_safetensors_index(R"({"weight_map": {"a": )" + deep_array() + "}}", "i.json");
               }),
               {"i.json", "deeper than 8", "/weight_map/a"});
  const std::string dir = test::make_temp_dir("deepidx");
  write_text(dir + "/model.safetensors.index.json", R"({"weight_map": {"a": )" + deep_array() + "}}");
  expect_parts(error_of([&] { TensorStore::open(dir); }),
               {dir + "/model.safetensors.index.json", "deeper than 8"});
  fs::remove_all(dir);
}

TEST(IndexBad, ShardNamesAreFileNamesBesideTheIndex) {
  for (const char* shard : {"\"../x.safetensors\"", "\"a/b.safetensors\"", "\"..\"", "\"\""}) {
    expect_parts(error_of([&] {
                   parse_safetensors_index(std::string(R"({"weight_map": {"t": )") + shard + "}}", "i.json");
                 }),
                 {"i.json", "weight_map['t']", "shard file name"});
  }
  EXPECT_EQ(parse_safetensors_index(R"({"weight_map": {"t": "m-1.safetensors"}})", "i.json").at("t"),
            "m-1.safetensors");
}

TEST(DeepJson, GenerationConfigEos) {
  const std::string dir = test::make_temp_dir("deepgen");
  write_text(dir + "/generation_config.json", R"({"eos_token_id": )" + deep_array() + "}");
  expect_parts(error_of([&] { read_eos_ids(dir); }), {dir + "/generation_config.json", "deeper than 64"});
  fs::remove_all(dir);
}

TEST(EosIds, RangeAndCountBounded) {
  EXPECT_EQ(eos_ids_from_json(R"({"eos_token_id": [3, 7]})", "g.json"), (std::vector<int32_t>{3, 7}));
  EXPECT_EQ(eos_ids_from_json(R"({"eos_token_id": 0})", "g.json"), (std::vector<int32_t>{0}));
  EXPECT_TRUE(eos_ids_from_json(R"({"eos_token_id": null})", "g.json").empty());
  for (const char* bad : {"4294967296", "2147483648", "-1", "1.5", "\"2\"", "[1, [2]]"})
    expect_parts(error_of([&] {
                   eos_ids_from_json(std::string(R"({"eos_token_id": )") + bad + "}", "g.json");
                 }),
                 {"g.json", "eos_token_id", "[0, 2147483647]"});
  std::string many = "[";
  for (int i = 0; i < 2000; ++i) many += (i ? "," : "") + std::to_string(i);
  expect_parts(error_of([&] { eos_ids_from_json(R"({"eos_token_id": )" + many + "]}", "g.json"); }),
               {"g.json", "2000 ids", "1024"});
}

// `huginn generate` read generation_config.json at start and died of SIGSEGV; now it exits 1
// with the file named.
TEST(DeepJson, GenerateCliFailsCleanly) {
  const std::string dir = test::make_temp_dir("deepcli");
  const std::string golden = test::golden_dir("tiny-a");
  fs::copy_file(golden + "/config.json", dir + "/config.json");
  fs::create_symlink(golden + "/model.safetensors", dir + "/model.safetensors");
  write_text(dir + "/generation_config.json", R"({"eos_token_id": )" + deep_array() + "}");
  std::string out;
  const int rc = test::run_command(std::string(HUGINN_CLI) + " generate --model " + dir +
                                       " --ids 1,2,3 --steps 2 --max-new 2",
                                   &out);
  EXPECT_EQ(rc, 1) << out;
  expect_parts(out, {dir + "/generation_config.json", "deeper than 64"});
  fs::remove_all(dir);
}

}  // namespace
}  // namespace huginn
