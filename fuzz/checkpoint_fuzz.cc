// Checkpoints and training state: `train --resume` (huginn::train with resume) from a run
// directory whose newest checkpoint is a real one of a tiny model (made once per process by
// training it one step), with parts of the input replacing parts of it (split at "\n--\n"):
//   part 0: the JSON header of step-00000001/train_state.safetensors (the AdamW moments' entries
//           and the metadata: format, step, adam_t, bad_in_row, seed, run, tokenizer_hash, ...);
//           empty = the real header. The file is rebuilt as u64 length + header + the real data.
//   part 1: step-00000001/config.json (absent = the real one)
//   part 2: bytes written over the start of train_state's data section (NaN moments, ...)
// The unchanged checkpoint ends in "nothing left to train" (the run asks for 1 step); a mutated one
// must end in a huginn::Error too, or resume and train (a step < 1 trains one tiny step).
// HUGINN_FUZZ_SEED_OUT=DIR writes the real header and config as seed inputs there.
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "fuzz_util.h"
#include "huginn/data.h"
#include "huginn/train.h"

using namespace huginn;
namespace fs = std::filesystem;

namespace {

constexpr const char* kConfig = R"({"n_embd": 8, "num_attention_heads": 2, "intermediate_size": 8,
  "vocab_size": 16, "block_size": 8, "n_layers_in_prelude": 1, "n_layers_in_recurrent_block": 1,
  "n_layers_in_coda": 1, "mean_recurrence": 2, "mean_backprop_depth": 1})";

struct Run {
  std::string base;                 // a finished 1-step run: data/, model.json, run/
  std::string header, state_data;  // train_state.safetensors split
  std::string config;               // step-00000001/config.json
};

TrainOptions options(const std::string& base, const std::string& out) {
  TrainOptions o;
  o.model_config = base + "/model.json";
  o.data = base + "/data";
  o.out = out;
  o.steps = 1;
  o.batch = 1;
  o.seq_len = 4;
  o.threads = 1;
  o.seed = 3;
  o.quiet = true;
  o.val_depths = {1};
  o.val_windows = 1;
  return o;
}

const Run& run() {
  static const Run r = [] {
    Run r;
    r.base = fuzz::fresh_dir("checkpoint_base");
    fs::create_directories(r.base + "/data");
    fuzz::write_file(r.base + "/model.json", kConfig);
    std::vector<uint32_t> tokens(200);
    for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = (i * 7 + i / 5) % 16;
    write_shard(r.base + "/data/train-00000.bin", tokens, 16, 15, 42);
    train(options(r.base, r.base + "/run"));
    const std::string ckpt = r.base + "/run/" + checkpoint_name(1);
    const std::string state = fuzz::read_file(ckpt + "/train_state.safetensors");
    uint64_t n = 0;
    std::memcpy(&n, state.data(), 8);
    r.header = state.substr(8, n);
    r.state_data = state.substr(8 + n);
    r.config = fuzz::read_file(ckpt + "/config.json");
    if (const char* out = std::getenv("HUGINN_FUZZ_SEED_OUT")) {
      fuzz::write_file(std::string(out) + "/real_header", r.header);
      fuzz::write_file(std::string(out) + "/real_header_and_config", r.header + "\n--\n" + r.config);
    }
    return r;
  }();
  return r;
}

const fuzz::Setup setup([] {
  run();
});

}  // namespace

HUGINN_FUZZ_TARGET(checkpoint) {
  const Run& r = run();
  const auto parts =
      fuzz::split_parts(std::string_view(reinterpret_cast<const char*>(data), size), 3);
  const std::string out = fuzz::fresh_dir("checkpoint_run");
  fs::copy(r.base + "/run", out, fs::copy_options::recursive);
  const std::string ckpt = out + "/" + checkpoint_name(1);
  const std::string header = parts[0].empty() ? r.header : std::string(parts[0]);
  std::string state_data = r.state_data;
  if (parts.size() > 2)
    std::memcpy(state_data.data(), parts[2].data(), std::min(parts[2].size(), state_data.size()));
  const uint64_t n = header.size();
  std::string file(reinterpret_cast<const char*>(&n), 8);
  file += header;
  file += state_data;
  fuzz::write_file(ckpt + "/train_state.safetensors", file);
  if (parts.size() > 1) fuzz::write_file(ckpt + "/config.json", parts[1]);
  // Even input lengths get a matching checksums.json, so the mutation reaches the value checks
  // behind the checksum (odd ones test the checksum itself). A header too broken to checksum
  // keeps the old manifest.
  if (size % 2 == 0) {
    try {
      write_checkpoint_checksums(ckpt);
    } catch (const std::exception&) {  // not what this target tests
    }
  }
  TrainOptions o = options(r.base, out);
  o.resume = true;
  o.model_config.clear();  // the checkpoint's own config.json
  fuzz::accepts([&] { train(o); });
}
