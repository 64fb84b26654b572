// Tokenizer throughput: encode MB/s and tokens/s, single-threaded (one call, and ~64 KiB
// pieces) and batched over threads, on ~10 MB of mixed text (code + prose + multilingual).
//
//   bench_tokenizer [--corpus FILE] [--tokenizers DIR] [--runs N] [--mb SIZE] [--only NAME]
//                   [--write DIR]
// --write saves the corpus (DIR/corpus.txt) and each tokenizer's ids of one encode call
// (DIR/NAME.ids, uint32 little-endian) so another implementation can be compared id for id.
//
// The default corpus mixes, like the golden README's speed anchor: Python standard-library
// source (/usr/lib/python3.11, else this repository's sources), the tokenizers' license prose,
// and the golden corpus strings shuffled deterministically. For reference the README measured
// Hugging Face's Rust library on this machine kind at 1.5-2.0 MB/s (byte-level tokenizers, one
// thread); its best runs are printed beside ours.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "huginn/thread_pool.h"
#include "huginn/tokenizer.h"

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

std::string slurp(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
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

int main(int argc, char** argv) {
  std::string corpus_path;
  // The golden tokenizers, beside this source file in the repository.
  std::string tok_dir = (fs::path(__FILE__).parent_path() / "../tests/data/tokenizers").lexically_normal().string();
  int runs = 3;
  std::string only, write_dir;  // --write DIR: the corpus and each tokenizer's ids, for oracles
  double mb = 10.0;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--corpus") corpus_path = next();
    else if (a == "--tokenizers") tok_dir = next();
    else if (a == "--runs") runs = std::max(1, std::stoi(next()));
    else if (a == "--mb") mb = std::stod(next());
    else if (a == "--only") only = next();
    else if (a == "--write") write_dir = next();
    else {
      std::fprintf(stderr, "usage: %s [--corpus FILE] [--tokenizers DIR] [--runs N] [--mb SIZE] [--only NAME] [--write DIR]\n", argv[0]);
      return a == "--help" ? 0 : 2;
    }
  }
  std::string text = corpus_path.empty() ? build_corpus(tok_dir, static_cast<size_t>(mb * 1e6))
                                         : slurp(corpus_path);
  const double megabytes = text.size() / 1e6;
  std::printf("corpus: %.2f MB%s, best of %d runs, %d hardware threads\n", megabytes,
              corpus_path.empty() ? " (python source + license prose + golden strings)" : "", runs,
              huginn::ThreadPool::hardware_threads());
  const std::vector<std::string> chunks = pieces(text, 64 * 1024);
  if (!write_dir.empty()) {
    fs::create_directories(write_dir);
    std::ofstream(fs::path(write_dir) / "corpus.txt", std::ios::binary) << text;
  }
  struct Ref {
    const char* name;
    double hf_one, hf_chunked;
  };
  const Ref refs[] = {{"cl100k", 1.89, 2.02}, {"gpt-oss", 1.90, 1.78}, {"qwen3", 1.52, 1.69}, {"mistral-7b", 1.13, 3.51}};
  std::printf("single-thread columns: MB/s by thread CPU time (by wall time); batch: wall time\n");
  std::printf("%-11s %6s %9s | %-26s | %-17s | %-10s %-10s | %s\n", "tokenizer", "load s", "tokens",
              "one call MB/s (Mtok/s)", "64 KiB pieces", "batch 1 th", "batch 2 th", "HF Rust one / pieces");
  for (const Ref& ref : refs) {
    if (!only.empty() && only != ref.name) continue;
    double t0 = now();
    auto tok = Tokenizer::load(tok_dir + "/" + ref.name + "/tokenizer.json");
    double load = now() - t0;
    double best_one = 1e30, best_chunk = 1e30, wall_one = 1e30, wall_chunk = 1e30;
    size_t n_tokens = 0;
    for (int r = 0; r < runs; ++r) {
      t0 = now();
      double c0 = thread_cpu();
      std::vector<int32_t> ids = tok->encode(text);
      n_tokens = ids.size();
      if (r == 0 && !write_dir.empty())
        std::ofstream(fs::path(write_dir) / (std::string(ref.name) + ".ids"), std::ios::binary)
            .write(reinterpret_cast<const char*>(ids.data()), ids.size() * sizeof(int32_t));
      best_one = std::min(best_one, thread_cpu() - c0);
      wall_one = std::min(wall_one, now() - t0);
      t0 = now();
      c0 = thread_cpu();
      size_t n = 0;
      for (const auto& c : chunks) n += tok->encode(c).size();
      best_chunk = std::min(best_chunk, thread_cpu() - c0);
      wall_chunk = std::min(wall_chunk, now() - t0);
    }
    double batch[2];
    for (int th = 1; th <= 2; ++th) {
      huginn::ThreadPool pool(th);
      double best = 1e30;
      for (int r = 0; r < runs; ++r) {
        t0 = now();
        auto out = tok->encode_batch(chunks, false, pool);
        best = std::min(best, now() - t0);
      }
      batch[th - 1] = megabytes / best;
    }
    std::printf("%-11s %6.2f %9zu | %6.2f (%5.2f) (wall %6.2f) | %6.2f (wall %6.2f) | %6.2f MB/s %6.2f MB/s | %.2f / %.2f MB/s\n",
                ref.name, load, n_tokens, megabytes / best_one, n_tokens / best_one / 1e6,
                megabytes / wall_one, megabytes / best_chunk, megabytes / wall_chunk, batch[0],
                batch[1], ref.hf_one, ref.hf_chunked);
    std::fflush(stdout);
  }
  return 0;
}
