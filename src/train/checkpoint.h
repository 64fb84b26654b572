// Checkpoint integrity and run-directory hygiene for the training loop (trainer.cc):
// checksums.json, reading train-state metadata with named errors, the run-directory lock,
// stale temporaries of killed writes, and metrics.jsonl cut back to a checkpoint's step.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace huginn::ckpt {

// The files of a checkpoint folder that checksums.json covers (in that order).
inline constexpr const char* kChecksumFile = "checksums.json";
inline constexpr const char* kConfigFile = "config.json";
inline constexpr const char* kModelFile = "model.safetensors";
inline constexpr const char* kStateFile = "train_state.safetensors";

// A value from a file, rendered for an error message: at most `max` characters, quoted.
std::string quote(const std::string& s, size_t max = 40);

// Typed access to a safetensors __metadata__ map; every failure names the file and the key and
// says what was expected (never a bare "stoll").
class Fields {
 public:
  Fields(std::string path, const std::map<std::string, std::string>& meta)
      : path_(std::move(path)), meta_(meta) {}
  bool has(const std::string& key) const { return meta_.count(key) != 0; }
  const std::string& str(const std::string& key) const;
  // A decimal integer in [lo, hi]; `why` is appended to the range error (may be empty).
  int64_t integer(const std::string& key, int64_t lo, int64_t hi, const std::string& why = {}) const;
  uint64_t u64(const std::string& key) const;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  const std::map<std::string, std::string>& meta_;
};

// Exclusive lock on RUN_DIR/.lock for the life of the object (released by the kernel when the
// process dies, so a kill -9 never leaves a stale lock). Throws when another process holds it.
class RunLock {
 public:
  explicit RunLock(const std::string& run_dir);
  ~RunLock();
  RunLock(const RunLock&) = delete;
  RunLock& operator=(const RunLock&) = delete;

 private:
  int fd_ = -1;
};

// Removes what killed writes leave in a run directory: `.step-NNNNNNNN.tmp-PID/` checkpoint
// folders and `metrics.jsonl.tmp.PID` / `.write-probe.tmp.PID` files. Only those exact name
// patterns; a completed checkpoint (step-NNNNNNNN/) is never touched. Call with the RunLock held.
// Returns the names removed.
std::vector<std::string> remove_stale_temporaries(const std::string& run_dir);

// Rewrites PATH (metrics.jsonl) atomically keeping only the records of steps <= `step`, in order,
// so that a resumed run appends each later step exactly once. Lines that are not a JSON object
// with an integer "step" (a line cut by a kill) are dropped. Returns the number of lines dropped;
// nothing is written when none is.
size_t truncate_metrics(const std::string& path, int64_t step);

}  // namespace huginn::ckpt
