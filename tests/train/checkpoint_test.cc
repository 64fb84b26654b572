// `--resume` from damaged or inconsistent checkpoints: every corruption class is refused with an
// error naming the file and the field or tensor; kill-then-resume leaves no temporaries and logs
// each step once; a checkpoint of the older format without checksums still resumes exactly.
#include <gtest/gtest.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <fcntl.h>
#include <unistd.h>

#include <csignal>
#include <cstring>
#include <set>

#include "huginn/safetensors.h"
#include "train_fixture.h"

namespace huginn {
namespace {
using namespace train_test;  // NOLINT: the shared fixture

constexpr const char* kCkpt = "step-00000010";

// A run saved at steps 5 and 10 of a 20-step schedule, and the straight 20-step run to compare.
struct Saved {
  Fixture f{"ckpt-corrupt"};
  TrainOptions o = f.options("base");
  std::string straight_model;
  Saved() {
    o.save_every = 5;
    o.stop_at = 10;
    train(o);
  }
  // A copy of the run directory to damage; the resume options for it.
  TrainOptions copy(const std::string& name) const {
    TrainOptions r = o;
    r.out = f.dir + "/" + name;
    fs::copy(o.out, r.out, fs::copy_options::recursive);
    r.stop_at = 0;
    r.resume = true;
    return r;
  }
  static std::string ckpt(const TrainOptions& r) { return r.out + "/" + kCkpt; }
};

Saved& saved() {
  static Saved s;  // one base run for the whole binary, removed at exit
  return s;
}

void flip_byte(const std::string& path, uint64_t offset) {
  std::fstream s(path, std::ios::in | std::ios::out | std::ios::binary);
  s.seekg(static_cast<std::streamoff>(offset));
  const char c = static_cast<char>(s.get() ^ 0x10);
  s.seekp(static_cast<std::streamoff>(offset));
  s.put(c);
  ASSERT_TRUE(s.good()) << path;
}

// File offset of the middle of tensor `name`'s bytes.
uint64_t middle_of(const std::string& path, const std::string& name) {
  const std::string head = read_file(path).substr(0, 8);
  uint64_t n = 0;
  std::memcpy(&n, head.data(), 8);
  // The entry lives in the file object: keep it open while the entry is read (ASan finding: the
  // temporary was destroyed at the end of the statement that found the entry).
  const auto file = SafetensorsFile::open(path);
  const SafetensorsEntry* e = file->find(name);
  if (e == nullptr) {
    ADD_FAILURE() << path << ": no tensor " << name;
    return 0;
  }
  return 8 + n + (e->begin + e->end) / 2;
}

// Rewrites a safetensors file with edited metadata and tensors, then re-seals the checkpoint's
// checksums.json: the file is then consistent byte-wise and wrong in value, as a buggy writer or
// a deliberate edit would leave it, so only the range checks can catch it.
void rewrite(const std::string& path,
             const std::function<void(std::map<std::string, std::string>&,
                                      std::map<std::string, Tensor>&)>& edit,
             bool reseal = true) {
  std::map<std::string, std::string> meta;
  std::map<std::string, Tensor> tensors;
  {
    auto f = SafetensorsFile::open(path);
    meta = f->metadata();
    for (const auto& e : f->entries()) tensors.emplace(e.name, f->as_f32(e.name).clone());
  }
  edit(meta, tensors);
  SafetensorsWriter w;
  for (const auto& [k, t] : tensors) w.add(k, t);
  for (const auto& [k, v] : meta) w.add_metadata(k, v);
  w.write(path);
  if (reseal) write_checkpoint_checksums(fs::path(path).parent_path().string());
}

void edit_meta(const TrainOptions& r, const std::string& key, const std::string& value) {
  rewrite(Saved::ckpt(r) + "/train_state.safetensors",
          [&](auto& meta, auto&) { meta[key] = value; });
}

// The resume fails; its error names every one of `parts`; nothing saved changed and no step ran.
void expect_refused(const TrainOptions& r, std::initializer_list<std::string> parts) {
  const auto before = snapshot(r.out);
  const std::string metrics = read_file(r.out + "/metrics.jsonl");
  const std::string e = error_of([&] { train(r); });
  for (const auto& p : parts) EXPECT_NE(e.find(p), std::string::npos) << "missing '" << p << "' in: " << e;
  EXPECT_EQ(e.find("stoll"), std::string::npos) << e;
  EXPECT_EQ(snapshot(r.out), before);
  EXPECT_EQ(read_file(r.out + "/metrics.jsonl"), metrics);  // not a single step was trained
}

TEST(CheckpointVerify, ByteFlipInWeightsNamesTheTensor) {
  TrainOptions r = saved().copy("flip-weights");
  const std::string file = Saved::ckpt(r) + "/model.safetensors";
  flip_byte(file, middle_of(file, "transformer.core_block.0.mlp.fc.weight"));
  expect_refused(r, {file, "tensor 'transformer.core_block.0.mlp.fc.weight'", "CRC-32", "corrupt"});
}

TEST(CheckpointVerify, ByteFlipInOptimizerStateNamesTheTensor) {
  TrainOptions r = saved().copy("flip-adam");
  const std::string file = Saved::ckpt(r) + "/train_state.safetensors";
  const std::string name = "adam.v.transformer.prelude.0.attn.Wqkv.weight";
  flip_byte(file, middle_of(file, name));
  expect_refused(r, {file, "tensor '" + name + "'", "CRC-32"});
}

TEST(CheckpointVerify, ByteFlipInAHeaderOrTheConfig) {
  TrainOptions r = saved().copy("flip-header");
  flip_byte(Saved::ckpt(r) + "/train_state.safetensors", 40);
  expect_refused(r, {Saved::ckpt(r) + "/train_state.safetensors", "the header", "CRC-32"});
  TrainOptions c = saved().copy("flip-config");
  flip_byte(Saved::ckpt(c) + "/config.json", 5);
  expect_refused(c, {Saved::ckpt(c) + "/config.json", "CRC-32"});
}

TEST(CheckpointVerify, TruncatedFile) {
  TrainOptions r = saved().copy("truncated");
  const std::string file = Saved::ckpt(r) + "/model.safetensors";
  fs::resize_file(file, fs::file_size(file) / 2);
  expect_refused(r, {file, "bytes", "truncated"});
}

TEST(CheckpointVerify, DamagedOrMissingManifest) {
  TrainOptions r = saved().copy("manifest");
  const std::string m = Saved::ckpt(r) + "/checksums.json";
  std::string text = read_file(m);
  const size_t at = text.find("\"bytes\": ") + 9;
  text[at] = text[at] == '9' ? '8' : '9';  // a record edited: the manifest's own CRC catches it
  std::ofstream(m, std::ios::binary) << text;
  expect_refused(r, {m, "self_crc32"});
  fs::remove(m);
  expect_refused(r, {m, "missing", "huginn-train-state-2"});
}

TEST(CheckpointVerify, NonFiniteOrNegativeMoments) {
  TrainOptions r = saved().copy("nan-m");
  const std::string file = Saved::ckpt(r) + "/train_state.safetensors";
  const std::string m = "adam.m.transformer.wte.weight", v = "adam.v.transformer.ln_f.weight";
  rewrite(file, [&](auto&, auto& t) { t.at(m).f32()[3] = NAN; });
  expect_refused(r, {file, "'" + m + "'", "nan", "element 3", "expected finite"});
  TrainOptions q = saved().copy("neg-v");
  rewrite(Saved::ckpt(q) + "/train_state.safetensors", [&](auto&, auto& t) { t.at(v).f32()[0] = -1; });
  expect_refused(q, {"'" + v + "'", "-1", ">= 0"});
}

TEST(CheckpointVerify, NonFiniteWeights) {
  TrainOptions r = saved().copy("nan-w");
  const std::string file = Saved::ckpt(r) + "/model.safetensors";
  rewrite(file, [](auto&, auto& t) { t.at("transformer.ln_f.weight").f32()[1] = INFINITY; });
  expect_refused(r, {file, "'transformer.ln_f.weight'", "inf", "expected finite weights"});
}

TEST(CheckpointVerify, OutOfRangeCounters) {
  const std::string state = "train_state.safetensors: metadata ";
  TrainOptions r = saved().copy("step");
  edit_meta(r, "step", "-5");
  expect_refused(r, {state + "'step' is -5, expected 0..20"});
  TrainOptions a = saved().copy("adam-t");
  edit_meta(a, "adam_t", "-1");
  expect_refused(a, {state + "'adam_t' is -1, expected 0..10"});
  TrainOptions k = saved().copy("skipped");
  edit_meta(k, "skipped_steps", "3");
  expect_refused(k, {state + "'adam_t' is 10 and 'skipped_steps' 3", "add up to 'step' 10"});
  TrainOptions b = saved().copy("bad-in-row");
  edit_meta(b, "bad_in_row", "2");
  expect_refused(b, {state + "'bad_in_row' is 2, expected 0..0"});
  TrainOptions w = saved().copy("step-folder");
  edit_meta(w, "step", "5");
  expect_refused(w, {state + "'step' is 5, but the folder is step-00000010"});
  TrainOptions n = saved().copy("windows");
  edit_meta(n, "next_window_index", "7");
  expect_refused(n, {state + "'next_window_index' is 7, expected 20"});
}

TEST(CheckpointVerify, ChangedSeed) {
  TrainOptions r = saved().copy("seed");
  edit_meta(r, "seed", "7");
  expect_refused(r, {"train_state.safetensors: metadata 'seed' is 7, expected 0"});
  // The seed of the run itself, against this run's --seed.
  TrainOptions s = saved().copy("seed-flag");
  s.seed = 7;
  expect_refused(s, {"was trained with seed = 0, this run has 7"});
}

TEST(CheckpointVerify, MissingFieldAndWrongType) {
  TrainOptions r = saved().copy("missing");
  rewrite(Saved::ckpt(r) + "/train_state.safetensors", [](auto& meta, auto&) { meta.erase("adam_t"); });
  expect_refused(r, {"train_state.safetensors: missing metadata 'adam_t'"});
  TrainOptions t = saved().copy("type");
  edit_meta(t, "step", "ten");
  expect_refused(t, {"train_state.safetensors: metadata 'step' is 'ten', expected a decimal integer"});
  TrainOptions j = saved().copy("run-type");
  auto run = nlohmann::json::parse(
      SafetensorsFile::open(Saved::ckpt(j) + "/train_state.safetensors")->metadata().at("run"));
  run["batch"] = "2";
  edit_meta(j, "run", run.dump());
  expect_refused(j, {"metadata 'run.batch' is string \"2\", expected an integer"});
  // A deeply nested value is refused by the bounded parser, never printed (printing recurses).
  run["batch"] = 0;
  std::string deep = run.dump();
  deep.replace(deep.find("\"batch\":0"), 9, "\"batch\":" + std::string(50000, '[') + std::string(50000, ']'));
  edit_meta(j, "run", deep);
  expect_refused(j, {"train_state.safetensors: metadata 'run': JSON nested deeper than 64"});
  edit_meta(j, "run", "{\"steps\": 20");
  expect_refused(j, {"train_state.safetensors: metadata 'run': not valid JSON"});
  edit_meta(j, "run", "[20]");
  expect_refused(j, {"metadata 'run' is array", "expected a JSON object"});
}

TEST(CheckpointVerify, CliErrorNamesFileAndField) {
  TrainOptions r = saved().copy("cli");
  edit_meta(r, "adam_t", "1e3");
  std::string log;
  const std::string cmd = std::string(HUGINN_CLI) + " train --resume --data " + r.data + " --out " +
                          r.out + " --steps 20 --batch 2 --seq-len 16 --lr 3e-3 --warmup 3" +
                          " --threads 2 --val-depths 2 --val-windows 2";
  EXPECT_EQ(test::run_command(cmd, &log), 1) << log;
  EXPECT_NE(log.find("error: " + Saved::ckpt(r) +
                     "/train_state.safetensors: metadata 'adam_t' is '1e3', expected a decimal integer"),
            std::string::npos)
      << log;
}

// The older format (no checksums.json, no skipped_steps) is accepted with a warning: its values
// are still range-checked, and the resumed run is exact.
TEST(CheckpointVerify, OlderFormatWithoutChecksumsResumesExactly) {
  TrainOptions r = saved().copy("v1");
  rewrite(Saved::ckpt(r) + "/train_state.safetensors", [](auto& meta, auto&) {
    meta["format"] = "huginn-train-state-1";
    meta.erase("skipped_steps");
  }, /*reseal=*/false);
  fs::remove(Saved::ckpt(r) + "/checksums.json");
  EXPECT_EQ(train(r).final_step, 20);
  TrainOptions straight = saved().o;
  straight.out = saved().f.dir + "/straight-v1";
  straight.stop_at = 0;
  train(straight);
  EXPECT_TRUE(read_file(straight.out + "/step-00000020/model.safetensors") ==
              read_file(r.out + "/step-00000020/model.safetensors"));
  EXPECT_TRUE(fs::exists(r.out + "/step-00000020/checksums.json"));  // new saves have them
}

TEST(CheckpointVerify, ARunDirectoryInUseIsRefused) {
  TrainOptions r = saved().copy("locked");
  const int fd = ::open((r.out + "/.lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::flock(fd, LOCK_EX | LOCK_NB), 0);
  expect_refused(r, {r.out + ": another huginn train is using this run directory"});
  ::close(fd);
  EXPECT_EQ(train(r).final_step, 20);  // the lock went with its holder
}

// ---- kill, then resume ---------------------------------------------------------------------------

// Runs `o` in a child process that SIGKILLs itself while computing 0-based step `kill_at`.
void train_killed_at(TrainOptions o, int64_t kill_at) {
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    o.after_backward = [kill_at](int64_t step, std::vector<NamedParam>&, Backend&) {
      if (step == kill_at) ::raise(SIGKILL);
    };
    try {
      train(o);
    } catch (...) {
    }
    ::_exit(3);  // not killed: the test fails below
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << "status " << status;
}

// Step numbers of metrics.jsonl: the per-step records and the validation records, in order.
void read_steps(const std::string& path, std::vector<int64_t>* steps, std::vector<int64_t>* vals) {
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    const auto j = nlohmann::json::parse(line);  // every line is a whole record
    (j.contains("val_loss") ? vals : steps)->push_back(j["step"].get<int64_t>());
  }
}

// Temporaries and hidden entries of a run directory, but its lock file.
std::vector<std::string> leftovers(const std::string& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string n = e.path().filename().string();
    if ((n[0] == '.' || n.find(".tmp") != std::string::npos) && n != ".lock") out.push_back(n);
  }
  return out;
}

TEST(CheckpointKill, KillThenResumeLeavesNoTemporariesAndLogsEachStepOnce) {
  Fixture f("ckpt-kill");
  TrainOptions o = f.options("run");
  o.save_every = 5;
  o.eval_every = 5;
  TrainOptions straight = o;
  straight.out = f.dir + "/straight";
  train(straight);

  train_killed_at(o, 12);  // after checkpoint 10 and the records of steps 11 and 12
  std::vector<int64_t> steps, vals;
  read_steps(o.out + "/metrics.jsonl", &steps, &vals);
  ASSERT_EQ(steps.size(), 12u);
  // What a kill during a later save, and during a metrics write, leaves behind.
  const std::string tmp = o.out + "/.step-00000015.tmp-4194305";
  fs::create_directories(tmp);
  std::ofstream(tmp + "/model.safetensors") << "partial";
  std::ofstream(o.out + "/metrics.jsonl.tmp.4194305") << "{\"step\": 1";
  std::ofstream(o.out + "/metrics.jsonl", std::ios::app) << "{\"step\": 13, \"loss\": 2.";
  const auto kept5 = snapshot(o.out + "/step-00000005"), kept10 = snapshot(o.out + "/step-00000010");

  TrainOptions r = o;
  r.resume = true;
  EXPECT_EQ(train(r).final_step, 20);
  EXPECT_EQ(leftovers(o.out), std::vector<std::string>{});
  EXPECT_EQ(snapshot(o.out + "/step-00000005"), kept5);  // completed checkpoints untouched
  EXPECT_EQ(snapshot(o.out + "/step-00000010"), kept10);
  steps.clear();
  vals.clear();
  read_steps(o.out + "/metrics.jsonl", &steps, &vals);
  std::vector<int64_t> want(20);
  for (int i = 0; i < 20; ++i) want[i] = i + 1;
  EXPECT_EQ(steps, want);  // unique and contiguous
  EXPECT_EQ(vals, (std::vector<int64_t>{5, 10, 15, 20}));
  // The records match the straight run's, step for step (tok/s and the step's time split aside).
  std::ifstream a(straight.out + "/metrics.jsonl"), b(o.out + "/metrics.jsonl");
  std::string la, lb;
  while (std::getline(a, la) && std::getline(b, lb)) {
    auto ja = nlohmann::json::parse(la), jb = nlohmann::json::parse(lb);
    for (const char* timing : {"tok_s", "time_s"}) {
      ja.erase(timing);
      jb.erase(timing);
    }
    EXPECT_EQ(ja, jb);
  }
  EXPECT_TRUE(read_file(straight.out + "/step-00000020/model.safetensors") ==
              read_file(o.out + "/step-00000020/model.safetensors"));
}

TEST(CheckpointKill, KilledBeforeTheFirstCheckpointThenStartedAgain) {
  Fixture f("ckpt-kill0");
  TrainOptions o = f.options("run");
  o.steps = 8;
  o.save_every = 5;
  train_killed_at(o, 3);
  EXPECT_EQ(latest_checkpoint(o.out), "");
  train(o);  // no checkpoint: a fresh start, which replaces the killed run's records
  std::vector<int64_t> steps, vals;
  read_steps(o.out + "/metrics.jsonl", &steps, &vals);
  EXPECT_EQ(steps, (std::vector<int64_t>{1, 2, 3, 4, 5, 6, 7, 8}));
}

}  // namespace
}  // namespace huginn
