// Tokenizer throughput on ~10 MB of mixed text (code + prose + multilingual): encode MB/s and
// tokens/s on one thread (one call, and ~64 KiB pieces) and batched over 1 and 2 threads; decode
// and streaming decode MB/s (of decoded text); and, in the same run, the Hugging Face library
// (Rust `tokenizers` through its Node binding, the test oracle) on the same text, with its ids
// compared to ours.
//
//   bench_tokenizer [--corpus FILE] [--tokenizers DIR] [--runs N] [--mb SIZE] [--only NAME[,NAME..]]
//                   [--write DIR] [--no-hf] [--no-scanner] [--pcre2-too]
// --write saves the corpus (DIR/corpus.txt) and each tokenizer's ids of one encode call
// (DIR/NAME.ids, uint32 little-endian) so another implementation can be compared id for id.
// --no-scanner loads the tokenizers without the hand-written pre-tokenizer scanners (PCRE2 only);
// --pcre2-too measures each tokenizer both ways in the same run (the second row "NAME PCRE2").
// Besides the four golden tokenizers, "aeolian" is cl100k's vocabulary with the split pattern of
// the Huginn-0125 tokenizer ("aeolian" in its authors' script) in the layout their script writes.
// The library runs when bench/js/node_modules holds it (cd bench/js && npm ci).
//
// Single-thread figures are MB/s of input by thread CPU time (wall time in brackets): on the
// shared 2-core machine other jobs steal wall time, not CPU time. Batch figures are wall time
// (the threads' scaling), with MB per second of process CPU time beside them.
//
// The default corpus mixes, like the golden README's speed anchor: Python standard-library
// source (/usr/lib/python3.11, else this repository's sources), the tokenizers' license prose,
// and the golden corpus strings shuffled deterministically.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <memory>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "huginn/thread_pool.h"
#include "huginn/tokenizer.h"
#include "tokenizer/scanner.h"
#include "bench_util.h"

namespace fs = std::filesystem;
using huginn::Tokenizer;

namespace {

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// CPU time of the calling thread: on a shared, busy machine single-thread throughput is
// measured by it (wall time is printed too).
double thread_cpu() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

double process_cpu() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

std::string slurp(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  if (!f) throw std::runtime_error(p.string() + ": cannot read");
  return std::string(std::istreambuf_iterator<char>(f), {});
}

std::string build_corpus(const std::string& tok_dir, size_t target) {
  std::string code, prose, strings;
  std::vector<fs::path> files;
  fs::path py = "/usr/lib/python3.11";
  fs::path src = fs::path(tok_dir) / "../../../src";
  if (fs::is_directory(py)) {
    for (const auto& e : fs::directory_iterator(py))
      if (e.path().extension() == ".py") files.push_back(e.path());
  } else {
    for (const auto& e : fs::recursive_directory_iterator(src))
      if (e.path().extension() == ".cc" || e.path().extension() == ".h") files.push_back(e.path());
  }
  std::sort(files.begin(), files.end());
  const size_t code_target = target * 6 / 10;
  while (code.size() < code_target && !files.empty())
    for (const auto& f : files) {
      code += slurp(f);
      if (code.size() >= code_target) break;
    }
  for (const char* n : {"qwen3", "gpt-oss", "cl100k", "mistral-7b"}) prose += slurp(fs::path(tok_dir) / n / "LICENSE");
  std::vector<std::string> texts;
  std::ifstream cases(fs::path(tok_dir) / "qwen3/cases.jsonl");
  std::string line;
  while (std::getline(cases, line)) texts.push_back(nlohmann::json::parse(line)["text"].get<std::string>());
  if (texts.empty()) throw std::runtime_error(tok_dir + "/qwen3/cases.jsonl: no corpus strings");
  std::mt19937 rng(12345);
  while (code.size() + prose.size() + strings.size() < target) {
    std::shuffle(texts.begin(), texts.end(), rng);
    for (const auto& t : texts) strings += t + "\n";
  }
  std::string all = code + prose + strings;
  all.resize(std::min(all.size(), target));
  while (!all.empty() && (static_cast<uint8_t>(all.back()) & 0xC0) == 0x80) all.pop_back();  // whole chars
  if (!all.empty() && static_cast<uint8_t>(all.back()) >= 0xC0) all.pop_back();
  return all;
}

std::vector<std::string> pieces(const std::string& text, size_t size) {
  std::vector<std::string> out;
  size_t i = 0;
  while (i < text.size()) {
    size_t e = std::min(text.size(), i + size);
    while (e < text.size() && (static_cast<uint8_t>(text[e]) & 0xC0) == 0x80) ++e;
    out.push_back(text.substr(i, e - i));
    i = e;
  }
  return out;
}

}  // namespace


namespace {

// The golden tokenizers: beside the build folder in the repository (build/../tests/data), or
// beside this source file, or under the working directory.
std::string default_tokenizer_dir() {
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  std::vector<fs::path> candidates;
  if (!ec) candidates.push_back(exe.parent_path() / "../tests/data/tokenizers");
  candidates.push_back(fs::path(__FILE__).parent_path() / "../tests/data/tokenizers");
  candidates.push_back("tests/data/tokenizers");
  for (const fs::path& c : candidates)
    if (fs::is_regular_file(c / "qwen3/cases.jsonl")) return fs::absolute(c).lexically_normal().string();
  return candidates.front().string();
}

// The bench/js folder with the library installed, or "".
std::string hf_dir() {
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  for (const fs::path& c : {exe.parent_path() / "../bench/js", fs::path(__FILE__).parent_path() / "js"})
    if (fs::is_regular_file(c / "node_modules/tokenizers/package.json"))
      return fs::absolute(c).lexically_normal().string();
  return "";
}

// cl100k's tokenizer.json with the Split pattern replaced by the aeolian one. The golden cl100k file
// has the layout of the Huginn-0125 authors' export (bpeasy: Split Removed + invert, ByteLevel
// without regex, no normalizer), so this is their tokenizer's pipeline with a 100k vocabulary.
std::string aeolian_tokenizer_json(const std::string& tok_dir) {
  nlohmann::json j = nlohmann::json::parse(slurp(fs::path(tok_dir) / "cl100k/tokenizer.json"));
  j["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] =
      huginn::tok::known_pattern(huginn::tok::ScanFamily::kAeolian);
  return j.dump();
}

struct HfResult {
  bool ok = false;
  double one = 0, pieces = 0;  // MB/s by process CPU time
  std::vector<uint32_t> ids;
};

// Runs the library on the corpus file (one thread: RAYON_NUM_THREADS=1).
HfResult run_hf(const std::string& dir, const std::string& tok_json, const std::string& corpus, int runs) {
  HfResult r;
  const std::string ids_path = corpus + ".hf.ids";
  const std::string cmd = "RAYON_NUM_THREADS=1 node '" + dir + "/hf_bench.mjs' '" + tok_json + "' '" +
                          corpus + "' " + std::to_string(runs) + " '" + ids_path + "' 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return r;
  std::string out;
  char buf[4096];
  while (size_t n = fread(buf, 1, sizeof buf, p)) out.append(buf, n);
  if (pclose(p) != 0) {
    std::fprintf(stderr, "HF library run failed: %s\n", out.c_str());
    return r;
  }
  auto j = nlohmann::json::parse(out.substr(out.rfind('{')), nullptr, false);
  if (j.is_discarded()) return r;
  r.one = j.value("one_cpu_mbps", 0.0);
  r.pieces = j.value("pieces_cpu_mbps", 0.0);
  std::string raw = slurp(ids_path);
  r.ids.resize(raw.size() / 4);
  std::memcpy(r.ids.data(), raw.data(), r.ids.size() * 4);
  fs::remove(ids_path);
  r.ok = true;
  return r;
}

struct Best {
  double cpu = 1e30, wall = 1e30;
  void add(double c, double w) {
    cpu = std::min(cpu, c);
    wall = std::min(wall, w);
  }
};

// Times f() `runs` times on this thread.
template <class F>
Best time_runs(int runs, F f) {
  Best b;
  for (int r = 0; r < runs; ++r) {
    double w0 = now(), c0 = thread_cpu();
    f(r);
    b.add(thread_cpu() - c0, now() - w0);
  }
  return b;
}

}  // namespace

int main(int argc, char** argv) {
  std::string corpus_path;
  std::string tok_dir = default_tokenizer_dir();
  int runs = 3;
  std::string only, write_dir;  // --write DIR: the corpus and each tokenizer's ids, for oracles
  double mb = 10.0;
  bool hf = true, scanners_default = true, pcre2_too = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string { return huginn::bench::next_arg(argc, argv, i); };
    if (a == "--corpus") corpus_path = next();
    else if (a == "--tokenizers") tok_dir = next();
    else if (a == "--runs") runs = std::max(1, huginn::bench::int_arg(argc, argv, i));
    else if (a == "--mb") mb = huginn::bench::double_arg(argc, argv, i);
    else if (a == "--only") only = next();
    else if (a == "--write") write_dir = next();
    else if (a == "--no-hf") hf = false;
    else if (a == "--no-scanner") scanners_default = false;
    else if (a == "--pcre2-too") pcre2_too = true;
    else {
      std::fprintf(stderr, "usage: %s [--corpus FILE] [--tokenizers DIR] [--runs N] [--mb SIZE] [--only NAME[,NAME..]] "
                   "[--write DIR] [--no-hf] [--no-scanner] [--pcre2-too]\n", argv[0]);
      return a == "--help" ? 0 : 2;
    }
  }
  std::string text;
  try {
    text = corpus_path.empty() ? build_corpus(tok_dir, static_cast<size_t>(mb * 1e6)) : slurp(corpus_path);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_tokenizer: %s (--tokenizers DIR names the golden tokenizers)\n", e.what());
    return 1;
  }
  const double megabytes = text.size() / 1e6;
  std::printf("corpus: %.2f MB%s, best of %d runs, %d hardware threads, pre-tokenizer scanners %s\n",
              megabytes, corpus_path.empty() ? " (python source + license prose + golden strings)" : "",
              runs, huginn::ThreadPool::hardware_threads(), scanners_default ? "on" : "off");
  const std::vector<std::string> chunks = pieces(text, 64 * 1024);
  if (!write_dir.empty()) {
    fs::create_directories(write_dir);
    std::ofstream(fs::path(write_dir) / "corpus.txt", std::ios::binary) << text;
  }
  // The library reads the corpus from a file.
  std::string hf_js = hf ? hf_dir() : "";
  std::string corpus_file = corpus_path;
  if (!hf_js.empty() && corpus_file.empty()) {
    corpus_file = (fs::temp_directory_path() / ("bench_tokenizer_corpus_" + std::to_string(getpid()) + ".txt")).string();
    std::ofstream(corpus_file, std::ios::binary) << text;
  }
  if (hf && hf_js.empty()) std::printf("HF library: not installed (cd bench/js && npm ci), not run\n");
  std::printf("encode: MB/s of input by thread CPU time (wall); batch: wall MB/s over 1 and 2 threads "
              "[MB per CPU-second]; decode: MB/s of output text\n");
  std::printf("%-15s %5s %8s | %-20s | %-20s | %-14s %-14s | %-8s %-8s | %-19s %s\n", "tokenizer", "load",
              "tokens", "encode 1 call", "64 KiB pieces", "batch 1 th", "batch 2 th", "decode",
              "stream", "HF 1 call / pieces", "ids = HF");
  // "aeolian": cl100k's vocabulary with the Huginn-0125 tokenizer's split pattern, in its
  // authors' layout (aeolian_tokenizer_json), written beside the corpus for the library.
  std::string aeolian_json;
  auto bench_one = [&](const std::string& name, const std::string& tok_json, bool scanners) {
    huginn::tok::set_scanners_enabled(scanners);
    double t0 = now();
    auto tok = Tokenizer::load(tok_json);
    huginn::tok::set_scanners_enabled(scanners_default);
    const double load = now() - t0;
    const std::string label = scanners_default && !scanners ? name + " PCRE2" : name;
    std::vector<int32_t> ids;
    const Best one = time_runs(runs, [&](int r) {
      ids = tok->encode(text);
      if (r == 0 && !write_dir.empty() && scanners == scanners_default)
        std::ofstream(fs::path(write_dir) / (name + ".ids"), std::ios::binary)
            .write(reinterpret_cast<const char*>(ids.data()), ids.size() * sizeof(int32_t));
    });
    const Best chunked = time_runs(runs, [&](int) {
      size_t n = 0;
      for (const auto& c : chunks) n += tok->encode(c).size();
    });
    double batch_wall[2], batch_cpu[2];
    for (int th = 1; th <= 2; ++th) {
      huginn::ThreadPool pool(th);
      batch_wall[th - 1] = batch_cpu[th - 1] = 1e30;
      for (int r = 0; r < runs; ++r) {
        t0 = now();
        double c0 = process_cpu();
        auto out = tok->encode_batch(chunks, false, pool);
        batch_cpu[th - 1] = std::min(batch_cpu[th - 1], process_cpu() - c0);
        batch_wall[th - 1] = std::min(batch_wall[th - 1], now() - t0);
      }
    }
    std::string decoded;
    const Best dec = time_runs(runs, [&](int) { decoded = tok->decode(ids); });
    size_t streamed = 0;
    const Best stream = time_runs(runs, [&](int) {
      huginn::StreamDecoder sd(tok);
      streamed = 0;
      for (int32_t id : ids) streamed += sd.push(id).size();
      streamed += sd.finish().size();
    });
    HfResult h;
    if (!hf_js.empty() && scanners == scanners_default) h = run_hf(hf_js, tok_json, corpus_file, runs);
    std::string same = "-";
    if (h.ok)
      same = h.ids.size() == ids.size() && std::equal(ids.begin(), ids.end(), h.ids.begin(),
                                                      [](int32_t a, uint32_t b) { return static_cast<uint32_t>(a) == b; })
                 ? "yes" : "NO";
    const double out_mb = decoded.size() / 1e6;
    char hf_col[64] = "-";
    if (h.ok) std::snprintf(hf_col, sizeof hf_col, "%6.2f / %6.2f", h.one, h.pieces);
    std::printf("%-15s %5.2f %8zu | %6.2f (%6.2f) %5.2fMt | %6.2f (%6.2f)      | %5.1f [%5.1f] %5.1f [%5.1f] | %8.2f %8.2f | %-19s %s\n",
                label.c_str(), load, ids.size(), megabytes / one.cpu, megabytes / one.wall, ids.size() / one.cpu / 1e6,
                megabytes / chunked.cpu, megabytes / chunked.wall, megabytes / batch_wall[0],
                megabytes / batch_cpu[0], megabytes / batch_wall[1], megabytes / batch_cpu[1],
                out_mb / dec.cpu, streamed / 1e6 / stream.cpu, hf_col, same.c_str());
    std::fflush(stdout);
  };
  for (const char* n : {"cl100k", "qwen3", "gpt-oss", "mistral-7b", "aeolian"}) {
    const std::string name = n;
    if (!only.empty() && ("," + only + ",").find("," + name + ",") == std::string::npos) continue;
    std::string tok_json = tok_dir + "/" + name + "/tokenizer.json";
    if (name == "aeolian") {
      try {
        aeolian_json = (fs::temp_directory_path() /
                        ("bench_tokenizer_aeolian_" + std::to_string(getpid()) + ".json")).string();
        std::ofstream(aeolian_json, std::ios::binary) << aeolian_tokenizer_json(tok_dir);
      } catch (const std::exception& e) {
        std::fprintf(stderr, "bench_tokenizer: aeolian: %s\n", e.what());
        continue;
      }
      tok_json = aeolian_json;
    }
    bench_one(name, tok_json, scanners_default);
    if (pcre2_too && scanners_default) bench_one(name, tok_json, false);
  }
  if (!aeolian_json.empty()) fs::remove(aeolian_json);
  if (corpus_path.empty() && !corpus_file.empty()) fs::remove(corpus_file);
  return 0;
}
