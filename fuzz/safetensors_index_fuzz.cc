// Sharded checkpoints: TensorStore::open on a directory whose model.safetensors.index.json is
// the input, beside two fixed shards (model-00001-of-00002.safetensors: "a" [2,3] F32 and
// "b" [4] BF16; model-00002-of-00002.safetensors: "c" [1] F64). Every tensor of an accepted store
// is read back; each must be in the shard the index names.
#include "fuzz_util.h"
#include "huginn/safetensors.h"

using namespace huginn;

namespace {

const std::string& shard_dir() {
  static const std::string dir = [] {
    const std::string d = fuzz::fresh_dir("index");
    float a[6] = {1, 2, 3, 4, 5, 6};
    uint16_t b[4] = {0x3f80, 0x4000, 0x4040, 0x4080};
    double c[1] = {7};
    SafetensorsWriter w1, w2;
    w1.add("a", Tensor::wrap(a, {2, 3}, DType::kF32));
    w1.add("b", Tensor::wrap(b, {4}, DType::kBF16));
    w2.add("c", Tensor::wrap(c, {1}, DType::kF64));
    w1.write(d + "/model-00001-of-00002.safetensors");
    w2.write(d + "/model-00002-of-00002.safetensors");
    return d;
  }();
  return dir;
}

}  // namespace

HUGINN_FUZZ_TARGET(safetensors_index) {
  const std::string& dir = shard_dir();
  fuzz::write_file(dir + "/model.safetensors.index.json", data, size);
  uint64_t sink = 0;
  fuzz::accepts([&] {
    const TensorStore store = TensorStore::open(dir);
    for (const std::string& name : store.names()) {
      fuzz::check(store.contains(name), name + ": listed but not contained");
      const Tensor t = store.as_f32(name);
      for (int64_t i = 0; i < t.numel(); ++i) sink += static_cast<uint64_t>(t.f32()[i]);
    }
  });
  asm volatile("" : : "r"(sink));
}
