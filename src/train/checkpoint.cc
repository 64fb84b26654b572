// Checkpoint integrity (checksums.json, CRC-32) and run-directory hygiene. See checkpoint.h.
//
// checksums.json:
//   {"format": "huginn-checksums-1", "algorithm": "crc32",
//    "files": {"config.json": {"bytes": N, "crc32": "89abcdef", "parts": [...]}, ...},
//    "self_crc32": "<crc32 of files.dump()>"}
// where parts (safetensors files only) are {"name", "begin", "end", "crc32"} for the header and
// for each tensor's byte range, so a damaged byte is reported as "tensor 'X'" rather than just
// "the file". The whole-file CRC is what is checked; parts are only read to name the culprit.
// CRC-32 (zlib's, the one of gzip and PNG) detects every burst error up to 32 bits and any
// random corruption with probability 1 - 2^-32; it is not a defence against a forger, who could
// rewrite checksums.json too. The range checks in trainer.cc are that second line.
#include "train/checkpoint.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>
#include <zlib.h>

#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "huginn/error.h"
#include "huginn/log.h"
#include "huginn/safetensors.h"
#include "huginn/train.h"
#include "util/json.h"
#include "util/mapped_file.h"

namespace huginn {
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace ckpt {

std::string quote(const std::string& s, size_t max) {
  std::string out = "'";
  for (size_t i = 0; i < s.size() && i < max; ++i) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c < 0x20 || c == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  out += s.size() > max ? "'... (" + std::to_string(s.size()) + " bytes)" : "'";
  return out;
}

const std::string& Fields::str(const std::string& key) const {
  auto it = meta_.find(key);
  if (it == meta_.end())
    throw Error(path_ + ": missing metadata '" + key + "' (not a complete training state file?)");
  return it->second;
}

int64_t Fields::integer(const std::string& key, int64_t lo, int64_t hi, const std::string& why) const {
  const std::string& s = str(key);
  int64_t v = 0;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || ec != std::errc() || end != s.data() + s.size())
    throw Error(path_ + ": metadata '" + key + "' is " + quote(s) + ", expected a decimal integer");
  if (v < lo || v > hi)
    throw Error(path_ + ": metadata '" + key + "' is " + s + ", expected " + std::to_string(lo) +
                ".." + std::to_string(hi) + (why.empty() ? "" : " (" + why + ")"));
  return v;
}

uint64_t Fields::u64(const std::string& key) const {
  const std::string& s = str(key);
  uint64_t v = 0;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || ec != std::errc() || end != s.data() + s.size())
    throw Error(path_ + ": metadata '" + key + "' is " + quote(s) +
                ", expected a decimal integer in 0..2^64-1");
  return v;
}

RunLock::RunLock(const std::string& run_dir) {
  const std::string path = run_dir + "/.lock";
  fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd_ < 0) throw Error(path + ": cannot open the run directory's lock file: " + std::strerror(errno));
  if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
    const int e = errno;
    ::close(fd_);
    fd_ = -1;
    if (e == EWOULDBLOCK)
      throw Error(run_dir + ": another huginn train is using this run directory (it holds " + path +
                  "); wait for it to finish or choose another --out");
    throw Error(path + ": cannot lock the run directory: " + std::strerror(e));
  }
}

RunLock::~RunLock() {
  if (fd_ >= 0) ::close(fd_);  // closing releases the flock
}

namespace {

bool all_digits(const std::string& s, size_t from, size_t to) {
  if (from >= to || to > s.size()) return false;
  for (size_t i = from; i < to; ++i)
    if (s[i] < '0' || s[i] > '9') return false;
  return true;
}

// ".step-NNNNNNNN.tmp-PID" (a folder Trainer::save had not yet renamed into place).
bool is_checkpoint_temp(const std::string& n) {
  return n.size() > 19 && n.compare(0, 6, ".step-") == 0 && all_digits(n, 6, 14) &&
         n.compare(14, 5, ".tmp-") == 0 && all_digits(n, 19, n.size());
}

// "<base>.tmp.PID" as write_file_atomic names its temporary, for the files a run dir holds.
bool is_file_temp(const std::string& n) {
  for (const std::string base : {"metrics.jsonl", ".write-probe"}) {
    const std::string prefix = base + ".tmp.";
    if (n.size() > prefix.size() && n.compare(0, prefix.size(), prefix) == 0 &&
        all_digits(n, prefix.size(), n.size()))
      return true;
  }
  return false;
}

}  // namespace

std::vector<std::string> remove_stale_temporaries(const std::string& run_dir) {
  std::vector<std::string> removed;
  std::error_code ec;
  for (const auto& ent : fs::directory_iterator(run_dir, ec)) {
    const std::string name = ent.path().filename().string();
    const bool dir = ent.is_directory(ec) && !ent.is_symlink(ec);
    if (!(dir ? is_checkpoint_temp(name) : is_file_temp(name))) continue;
    std::error_code rm;
    fs::remove_all(ent.path(), rm);
    if (rm)
      throw Error(ent.path().string() + ": cannot remove a stale temporary of a killed write: " +
                  rm.message());
    removed.push_back(name);
  }
  if (ec) throw Error(run_dir + ": cannot list the run directory: " + ec.message());
  return removed;
}

size_t truncate_metrics(const std::string& path, int64_t step) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return 0;  // no log yet
  std::string line, kept;
  size_t dropped = 0, cut = 0, lineno = 0;
  while (std::getline(in, line)) {
    ++lineno;
    json j;
    try {
      j = parse_json(line, path);
    } catch (const Error&) {
      j = json();  // not a record: dropped below
    }
    if (!j.is_object() || !j.contains("step") || !j["step"].is_number_integer()) {
      HUGINN_LOG_WARN("%s: line %zu is not a metrics record (cut by a kill?); dropped", path.c_str(),
                      lineno);
      ++dropped;
      continue;
    }
    if (j["step"].get<int64_t>() > step) {
      ++cut;
      continue;
    }
    kept += line;
    kept += '\n';
  }
  if (in.bad()) throw Error(path + ": cannot read the metrics log");
  if (dropped + cut == 0) return 0;
  HUGINN_LOG_WARN("%s: dropped %zu record(s) of steps after %lld, the step this run starts from "
                  "(a killed run wrote them); this run writes those steps again",
                  path.c_str(), cut, static_cast<long long>(step));
  write_file_atomic(path, kept.data(), kept.size());
  return dropped + cut;
}

}  // namespace ckpt

namespace {

constexpr const char* kChecksumFormat = "huginn-checksums-1";

uint32_t crc32_of(const uint8_t* p, uint64_t n) {
  return static_cast<uint32_t>(::crc32_z(::crc32_z(0L, Z_NULL, 0), p, static_cast<z_size_t>(n)));
}

std::string hex32(uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "%08x", v);
  return buf;
}

// The header and each tensor of a safetensors file as named byte ranges of the file.
json safetensors_parts(const std::string& path, const MappedFile& f) {
  uint64_t header_len = 0;
  std::memcpy(&header_len, f.data(), sizeof header_len);  // open() below validated it
  const uint64_t data0 = 8 + header_len;
  json parts = json::array();
  parts.push_back({{"name", "the header"}, {"begin", 0}, {"end", data0},
                   {"crc32", hex32(crc32_of(f.data(), data0))}});
  const auto st = SafetensorsFile::open(path);
  for (const auto& e : st->entries())
    parts.push_back({{"name", "tensor '" + e.name + "'"}, {"begin", data0 + e.begin},
                     {"end", data0 + e.end},
                     {"crc32", hex32(crc32_of(f.data() + data0 + e.begin, e.end - e.begin))}});
  return parts;
}

const json& member(const json& obj, const char* key, const std::string& where) {
  if (!obj.is_object() || !obj.contains(key))
    throw Error(where + ": missing '" + key + "'");
  return obj[key];
}

uint64_t member_u64(const json& obj, const char* key, const std::string& where) {
  const json& v = member(obj, key, where);
  if (!v.is_number_unsigned()) throw Error(where + ": '" + key + "' must be a non-negative integer");
  return v.get<uint64_t>();
}

const std::string& member_str(const json& obj, const char* key, const std::string& where) {
  const json& v = member(obj, key, where);
  if (!v.is_string()) throw Error(where + ": '" + key + "' must be a string");
  return v.get_ref<const std::string&>();
}

void verify_file(const std::string& dir, const std::string& name, const json& rec,
                 const std::string& manifest) {
  const std::string where = manifest + ": files['" + name + "']";
  const std::string path = dir + "/" + name;
  const uint64_t bytes = member_u64(rec, "bytes", where);
  const std::string& want = member_str(rec, "crc32", where);
  std::error_code ec;
  if (!fs::is_regular_file(path, ec))
    throw Error(path + ": missing, but listed in " + manifest + " (an incomplete checkpoint)");
  auto f = MappedFile::open(path);
  if (f->size() != bytes)
    throw Error(path + ": " + std::to_string(f->size()) + " bytes, but " + manifest + " records " +
                std::to_string(bytes) + " (the file was truncated or extended)");
  const std::string got = hex32(crc32_of(f->data(), f->size()));
  if (got == want) return;
  // Name the damaged part; the parts' own CRCs were recorded at save time.
  if (rec.contains("parts") && rec["parts"].is_array()) {
    for (const json& p : rec["parts"]) {
      const uint64_t b = member_u64(p, "begin", where), e = member_u64(p, "end", where);
      if (b > e || e > bytes) continue;
      const std::string pc = hex32(crc32_of(f->data() + b, e - b));
      std::string part = member_str(p, "name", where);
      if (part.size() > 200) part = part.substr(0, 200) + "...";
      if (pc != member_str(p, "crc32", where))
        throw Error(path + ": the bytes of " + part + " do not match their CRC-32 in " + manifest + " (recorded " +
                    member_str(p, "crc32", where) + ", computed " + pc + "): the file is corrupt");
    }
  }
  throw Error(path + ": CRC-32 " + got + " does not match " + want + " recorded in " + manifest +
              ": the file is corrupt");
}

}  // namespace

void write_checkpoint_checksums(const std::string& dir) {
  json files = json::object();
  for (const char* name : {ckpt::kConfigFile, ckpt::kModelFile, ckpt::kStateFile}) {
    const std::string path = dir + "/" + name;
    auto f = MappedFile::open(path);
    json rec{{"bytes", static_cast<uint64_t>(f->size())},
             {"crc32", hex32(crc32_of(f->data(), f->size()))}};
    const std::string n = name;
    if (n.size() > 12 && n.compare(n.size() - 12, 12, ".safetensors") == 0)
      rec["parts"] = safetensors_parts(path, *f);
    files[name] = std::move(rec);
  }
  const json manifest{{"format", kChecksumFormat}, {"algorithm", "crc32"}, {"files", files},
                      {"self_crc32", hex32(crc32_of(reinterpret_cast<const uint8_t*>(files.dump().data()),
                                                    files.dump().size()))}};
  const std::string text = manifest.dump(1) + "\n";
  write_file_atomic(dir + "/" + ckpt::kChecksumFile, text.data(), text.size());
}

bool verify_checkpoint_checksums(const std::string& dir) {
  const std::string manifest = dir + "/" + ckpt::kChecksumFile;
  std::error_code ec;
  if (!fs::exists(manifest, ec)) return false;
  const json m = read_json_file(manifest);
  if (!m.is_object())
    throw Error(manifest + ": not a JSON object (the checksum manifest is corrupt)");
  if (member_str(m, "format", manifest) != kChecksumFormat)
    throw Error(manifest + ": format " + ckpt::quote(member_str(m, "format", manifest)) +
                ", expected " + kChecksumFormat);
  if (member_str(m, "algorithm", manifest) != "crc32")
    throw Error(manifest + ": algorithm " + ckpt::quote(member_str(m, "algorithm", manifest)) +
                ", expected crc32");
  const json& files = member(m, "files", manifest);
  const std::string text = files.dump();
  if (hex32(crc32_of(reinterpret_cast<const uint8_t*>(text.data()), text.size())) !=
      member_str(m, "self_crc32", manifest))
    throw Error(manifest + ": its own CRC-32 ('self_crc32') does not match (the checksum manifest "
                "is corrupt)");
  if (!files.is_object()) throw Error(manifest + ": 'files' must be an object");
  for (const char* name : {ckpt::kConfigFile, ckpt::kModelFile, ckpt::kStateFile})
    if (!files.contains(name))
      throw Error(manifest + ": does not list " + name + " (every checkpoint file must be covered)");
  for (const auto& [name, rec] : files.items()) {
    if (name.empty() || name[0] == '.' || name.find('/') != std::string::npos)
      throw Error(manifest + ": lists " + ckpt::quote(name) + ", expected a file of the folder");
    verify_file(dir, name, rec, manifest);
  }
  // A shard index would make the loader read other files than the verified model.safetensors.
  if (fs::exists(dir + "/model.safetensors.index.json", ec))
    throw Error(dir + "/model.safetensors.index.json: a checkpoint written by huginn train has no "
                "shard index; refusing to load weights that " + manifest + " does not cover");
  return true;
}

}  // namespace huginn
