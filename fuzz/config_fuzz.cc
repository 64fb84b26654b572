// config.json: ModelConfig::from_json on arbitrary text; an accepted config must survive
// to_json -> from_json unchanged, and is then loaded as DIR/config.json beside tiny-a's weights
// through Model::load (the load path: shapes checked against the config, the RoPE table of
// max(block_size, 4096) positions built).
#include <filesystem>

#include "fuzz_util.h"
#include "huginn/backend.h"
#include "huginn/config.h"
#include "huginn/model.h"
#include "huginn/thread_pool.h"

using namespace huginn;

namespace {

const std::string& model_dir() {
  static const std::string dir = [] {
    const std::string d = fuzz::fresh_dir("config_model");
    std::filesystem::create_symlink(fuzz::test_data("golden/tiny-a/model.safetensors"),
                                    d + "/model.safetensors");
    return d;
  }();
  return dir;
}

Backend& backend() {
  static ThreadPool pool(1);
  static std::unique_ptr<Backend> be = make_backend("cpu", pool);
  return *be;
}

const fuzz::Setup setup([] {
  model_dir();
  backend();
});

}  // namespace

HUGINN_FUZZ_TARGET(config) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  ModelConfig c;
  if (!fuzz::accepts([&] { c = ModelConfig::from_json(text, "config.json"); })) return;
  const std::string out = c.to_json();
  ModelConfig back;
  fuzz::check(fuzz::accepts([&] { back = ModelConfig::from_json(out, "to_json()"); }),
              "an accepted config's to_json() is rejected: " + out);
  fuzz::check(back.to_json() == out, "to_json -> from_json changes the config: " + out);
  fuzz::write_file(model_dir() + "/config.json", text);
  fuzz::accepts([&] { Model::load(model_dir(), backend()); });
}
