// `huginn data prepare` end to end: compressed inputs (zstd, gzip) give the shards of the plain
// ones, thread count changes nothing, every token lands in its place, a run killed with SIGKILL at any point resumes to the
// shards of an uninterrupted run, peak memory does not grow with the input, bad inputs name the
// file; and the JSONL fast scanner agrees with the JSON library.
#include <gtest/gtest.h>

#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>
#include <zstd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <thread>

#include "huginn/data.h"
#include "huginn/error.h"
#include "huginn/tokenizer.h"
#include "test_util.h"
#include "train/prepare_input.h"

namespace huginn {
namespace {
namespace fs = std::filesystem;
using json = nlohmann::json;

const std::string kTok = std::string(HUGINN_TEST_DATA) + "/tokenizers/cl100k/tokenizer.json";

std::string slurp(const std::string& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}
void spit(const std::string& p, const std::string& s) { std::ofstream(p, std::ios::binary) << s; }

std::string zstd_of(const std::string& s) {
  std::string out(ZSTD_compressBound(s.size()), '\0');
  out.resize(ZSTD_compress(out.data(), out.size(), s.data(), s.size(), 3));
  return out;
}
std::string gzip_of(const std::string& s) {
  z_stream z{};
  deflateInit2(&z, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY);
  std::string out(deflateBound(&z, s.size()) + 64, '\0');
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(s.data()));
  z.avail_in = static_cast<uInt>(s.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = static_cast<uInt>(out.size());
  deflate(&z, Z_FINISH);
  out.resize(z.total_out);
  deflateEnd(&z);
  return out;
}

// Text of the golden corpus strings, as JSONL documents and as one text file.
struct Corpus {
  std::string jsonl, text;
};
Corpus make_corpus(size_t min_bytes) {
  std::vector<std::string> texts;
  std::ifstream f(std::string(HUGINN_TEST_DATA) + "/tokenizers/cl100k/cases.jsonl");
  std::string line;
  while (std::getline(f, line)) texts.push_back(json::parse(line)["text"].get<std::string>());
  Corpus c;
  std::mt19937 rng(3);
  while (c.jsonl.size() < min_bytes) {
    std::shuffle(texts.begin(), texts.end(), rng);
    for (const std::string& t : texts) {
      c.jsonl += json{{"meta", {{"n", 1.5e3}, {"tags", {"a", nullptr, true}}}}, {"text", t}}.dump() + "\n";
      c.text += t + "\n";
    }
  }
  return c;
}

std::string prepare_cmd(const std::string& inputs, const std::string& out, const std::string& extra) {
  return std::string(HUGINN_CLI) + " data prepare --tokenizer " + kTok + " --input " + inputs +
         " --out " + out + " --shard-tokens 50000 --val-fraction 0.05 " + extra;
}

// Every shard file of a data directory, by name.
std::map<std::string, std::string> shards_of(const std::string& dir) {
  std::map<std::string, std::string> m;
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    if (name.size() > 4 && name.compare(name.size() - 4, 4, ".bin") == 0) m[name] = slurp(e.path().string());
  }
  return m;
}

TEST(DataPrepare, CompressedInputsAndThreadCountsGiveTheSameShards) {
  const std::string dir = test::make_temp_dir("prepare_z");
  const Corpus c = make_corpus(1 << 20);
  spit(dir + "/a.jsonl", c.jsonl);
  spit(dir + "/b.txt", c.text);
  spit(dir + "/a.jsonl.zst", zstd_of(c.jsonl));
  spit(dir + "/b.txt.gz", gzip_of(c.text) + gzip_of("and a second gzip member\n"));
  spit(dir + "/b2.txt", c.text + "and a second gzip member\n");
  std::string log;
  ASSERT_EQ(test::run_command(prepare_cmd(dir + "/a.jsonl " + dir + "/b2.txt", dir + "/plain", "--threads 1 --batch-mb 1"), &log), 0) << log;
  ASSERT_EQ(test::run_command(prepare_cmd(dir + "/a.jsonl.zst " + dir + "/b.txt.gz", dir + "/z", "--threads 2 --batch-mb 1"), &log), 0) << log;
  EXPECT_NE(log.find("ETA"), std::string::npos) << log;  // progress
  const auto plain = shards_of(dir + "/plain"), z = shards_of(dir + "/z");
  EXPECT_GT(plain.size(), 4u);
  EXPECT_EQ(plain, z);
  // One document per JSONL line and one for the text file.
  const std::string docs = std::to_string(std::count(c.jsonl.begin(), c.jsonl.end(), '\n') + 1) + " documents:";
  EXPECT_NE(log.find(docs), std::string::npos) << docs << "\n" << log;
  // The tokens of a document are the tokenizer's, then the end-of-text id.
  ShardSet train = ShardSet::open(dir + "/z", "train");
  std::vector<int32_t> first(train.shards()[0].size());
  train.shards()[0].read(0, first);
  auto tok = Tokenizer::load(kTok);
  const std::string text0 = json::parse(c.jsonl.substr(0, c.jsonl.find('\n')))["text"].get<std::string>();
  std::vector<int32_t> want = tok->encode(text0);
  want.push_back(train.shards()[0].info().eot_id);
  ASSERT_GE(first.size(), want.size());
  EXPECT_EQ(std::vector<int32_t>(first.begin(), first.begin() + want.size()), want);
  fs::remove_all(dir);
}

// The tokens of all shards of a split, in order.
std::vector<int32_t> split_tokens(const std::string& dir, const std::string& split) {
  std::vector<int32_t> all;
  const ShardSet set = ShardSet::open(dir, split);
  for (const Shard& sh : set.shards()) {
    std::vector<int32_t> t(sh.size());
    sh.read(0, t);
    all.insert(all.end(), t.begin(), t.end());
  }
  return all;
}

// Every token in its place: a batch (documents up to 1 MiB of JSONL lines or 8192 documents)
// contributes each document's encoding and the end-of-text id, in document order, its last
// round(0.05 x n) tokens to val and the rest to train, whatever the encoding threads and the
// writer thread overlap. (The token bytes are those of the single-threaded writer before it.)
TEST(DataPrepare, ShardsHoldEveryBatchsTokensInOrderWithItsValTail) {
  const std::string dir = test::make_temp_dir("prepare_order");
  const Corpus c = make_corpus(3 << 20);
  spit(dir + "/a.jsonl", c.jsonl);
  std::string log;
  ASSERT_EQ(test::run_command(prepare_cmd(dir + "/a.jsonl", dir + "/o", "--threads 2 --batch-mb 1"), &log), 0) << log;

  auto tok = Tokenizer::load(kTok);
  const int32_t eot = tok->token_to_id("<|endoftext|>");
  std::vector<int32_t> train, val, batch;
  size_t bytes = 0, docs = 0;
  auto close_batch = [&] {
    const size_t n_val = static_cast<size_t>(std::llround(0.05 * batch.size()));
    train.insert(train.end(), batch.begin(), batch.end() - n_val);
    val.insert(val.end(), batch.end() - n_val, batch.end());
    batch.clear();
    bytes = docs = 0;
  };
  std::istringstream lines(c.jsonl);
  for (std::string line; std::getline(lines, line);) {
    for (int32_t id : tok->encode(json::parse(line)["text"].get<std::string>())) batch.push_back(id);
    batch.push_back(eot);
    bytes += line.size();
    if (++docs >= 8192 || bytes >= (1u << 20)) close_batch();
  }
  close_batch();
  EXPECT_GT(val.size(), 1000u);
  const std::vector<int32_t> got_train = split_tokens(dir + "/o", "train");
  const std::vector<int32_t> got_val = split_tokens(dir + "/o", "val");
  ASSERT_EQ(got_train.size(), train.size());
  ASSERT_EQ(got_val.size(), val.size());
  EXPECT_TRUE(got_train == train);
  EXPECT_TRUE(got_val == val);
  fs::remove_all(dir);
}

// Starts the command, returns its pid.
pid_t spawn(const std::string& cmd) {
  pid_t pid = fork();
  if (pid == 0) {
    execl("/bin/sh", "sh", "-c", ("exec " + cmd + " >/dev/null 2>&1").c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  return pid;
}

TEST(DataPrepare, KilledWithSigkillResumesToTheSameShards) {
  const std::string dir = test::make_temp_dir("prepare_kill");
  const Corpus c = make_corpus(6 << 20);
  spit(dir + "/a.jsonl.zst", zstd_of(c.jsonl));
  spit(dir + "/b.txt", c.text);
  const std::string inputs = dir + "/a.jsonl.zst " + dir + "/b.txt";
  std::string log;
  ASSERT_EQ(test::run_command(prepare_cmd(inputs, dir + "/whole", "--batch-mb 1 --max-doc-mb 2"), &log), 0) << log;
  const auto whole = shards_of(dir + "/whole");

  // Kill a run (and then each resumed run) as soon as it has checkpointed once more.
  const std::string out = dir + "/killed", state = out + "/prepare-state.json";
  int kills_mid_run = 0;
  for (int attempt = 0; attempt < 6; ++attempt) {
    const std::string before = fs::exists(state) ? slurp(state) : "";
    if (before.find("\"done\": true") != std::string::npos) break;
    pid_t pid = spawn(prepare_cmd(inputs, out, std::string("--batch-mb 1 --max-doc-mb 2") +
                                                   (before.empty() ? "" : " --resume")));
    const auto t0 = std::chrono::steady_clock::now();
    while (std::chrono::steady_clock::now() - t0 < std::chrono::seconds(120)) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
      if (fs::exists(state) && slurp(state) != before) break;
    }
    kill(pid, SIGKILL);
    int status = 0;
    waitpid(pid, &status, 0);
    if (WIFSIGNALED(status) && slurp(state).find("\"done\": false") != std::string::npos) ++kills_mid_run;
  }
  EXPECT_GE(kills_mid_run, 2) << "the kills came too late to test a resume";
  ASSERT_EQ(test::run_command(prepare_cmd(inputs, out, "--batch-mb 1 --max-doc-mb 2 --resume"), &log), 0) << log;
  EXPECT_EQ(shards_of(out), whole);
  for (const auto& e : fs::directory_iterator(out))
    EXPECT_NE(e.path().extension(), ".partial") << e.path();
  // Done: a further --resume changes nothing; a changed command is refused.
  ASSERT_EQ(test::run_command(prepare_cmd(inputs, out, "--batch-mb 1 --max-doc-mb 2 --resume"), &log), 0) << log;
  EXPECT_EQ(shards_of(out), whole);
  EXPECT_EQ(test::run_command(prepare_cmd(inputs, out, "--batch-mb 2 --max-doc-mb 2 --resume"), &log), 1);
  EXPECT_NE(log.find("batch_bytes differs from the stopped run's"), std::string::npos) << log;
  EXPECT_EQ(test::run_command(prepare_cmd(inputs, out, "--batch-mb 1"), &log), 1);
  EXPECT_NE(log.find("already holds train shards"), std::string::npos) << log;
  fs::remove_all(dir);
}

// Peak memory (max RSS of the child) with a 4x larger input (the same text again, so the word
// caches fill alike) grows by far less than the input: beyond a few batches nothing is kept.
// Both inputs are past the pipeline's warm-up (reader queue, pool, caches: the peak still rises
// from 6 to 24 MB of this text, 79 -> 85 MB, and then stays within 4 MB up to 96 MB), and the
// test process holds none of the text when it forks the child, whose RSS would count it. Under
// AddressSanitizer the child runs without its quarantine (the freed memory it holds back to catch
// use-after-free grows with the work done, up to 256 MB: not the program's memory; with it the
// ASan build measured 447 -> 470 MB, without 196.5 -> 197.6); other builds ignore the variable.
long peak_rss_kb(const std::string& cmd) {
  const char* asan = std::getenv("ASAN_OPTIONS");
  const std::string opts = std::string(asan && *asan ? std::string(asan) + ":" : "") + "quarantine_size_mb=0";
  pid_t pid = spawn("env ASAN_OPTIONS='" + opts + "' " + cmd);
  int status = 0;
  rusage ru{};
  wait4(pid, &status, 0, &ru);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << cmd;
  return ru.ru_maxrss;
}

TEST(DataPrepare, PeakMemoryDoesNotGrowWithTheInput) {
  const std::string dir = test::make_temp_dir("prepare_mem");
  {
    std::string text;
    while (text.size() < (6u << 20)) text += make_corpus(1 << 20).text;
    for (const auto& [name, copies] : {std::pair{"small.txt", 4}, std::pair{"big.txt", 16}}) {
      std::ofstream f(dir + "/" + name, std::ios::binary);
      for (int k = 0; k < copies; ++k) f.write(text.data(), static_cast<std::streamsize>(text.size()));
    }
  }
  const std::string opts = "--batch-mb 1 --max-doc-mb 1 --threads 2";
  const long small = peak_rss_kb(prepare_cmd(dir + "/small.txt", dir + "/s", opts));
  const long large = peak_rss_kb(prepare_cmd(dir + "/big.txt", dir + "/b", opts));
  std::printf("peak RSS: %ld KiB for %ju MB of text, %ld KiB for %ju MB\n", small,
              static_cast<uintmax_t>(fs::file_size(dir + "/small.txt") >> 20), large,
              static_cast<uintmax_t>(fs::file_size(dir + "/big.txt") >> 20));
  EXPECT_LT(large - small, 8 << 10) << "peak memory grew with the input";
  fs::remove_all(dir);
}

TEST(DataPrepare, BadInputsNameTheFile) {
  const std::string dir = test::make_temp_dir("prepare_bad");
  std::string log;
  std::string gz = gzip_of(std::string(100000, 'x'));
  spit(dir + "/cut.txt.gz", gz.substr(0, gz.size() / 2));
  EXPECT_EQ(test::run_command(prepare_cmd(dir + "/cut.txt.gz", dir + "/o1", ""), &log), 1);
  EXPECT_NE(log.find("cut.txt.gz: truncated gzip stream"), std::string::npos) << log;
  std::string zs = zstd_of(std::string(100000, 'y'));
  zs[zs.size() / 2] ^= 0x5A;
  zs[zs.size() / 2 + 1] ^= 0x5A;
  spit(dir + "/bad.jsonl.zst", zs);
  EXPECT_EQ(test::run_command(prepare_cmd(dir + "/bad.jsonl.zst", dir + "/o2", ""), &log), 1);
  EXPECT_NE(log.find("bad.jsonl.zst: "), std::string::npos) << log;
  spit(dir + "/long.jsonl", "{\"text\": \"" + std::string(3 << 20, 'a') + "\"}\n");
  EXPECT_EQ(test::run_command(prepare_cmd(dir + "/long.jsonl", dir + "/o3", "--max-doc-mb 1"), &log), 1);
  EXPECT_NE(log.find("long.jsonl:1: a line of more than 1048576 bytes"), std::string::npos) << log;
  EXPECT_EQ(test::run_command(prepare_cmd(dir + "/long.jsonl", dir + "/o4", "--resume"), &log), 1);
  EXPECT_NE(log.find("no prepare-state.json to resume from"), std::string::npos) << log;
  // A run stopped by a huginn that wrote version-1 shards (FNV-1a) is not continued in version 2.
  fs::create_directories(dir + "/o5");
  spit(dir + "/o5/prepare-state.json", R"({"version": 1, "run": {}, "done": false})");
  EXPECT_EQ(test::run_command(prepare_cmd(dir + "/long.jsonl", dir + "/o5", "--resume"), &log), 1);
  EXPECT_NE(log.find("prepare-state.json: version 1, expected 2 (an older huginn"), std::string::npos) << log;
  fs::remove_all(dir);
}

// The JSONL fast scanner decodes what the JSON library decodes, and declines what it rejects.
TEST(DataPrepare, JsonlFastScannerAgreesWithTheLibrary) {
  const std::vector<std::string> lines = {
      R"({"text": "plain"})", R"({"id": 3, "text": "a\nb\t\"q\"\\ \/ \u00e9 \ud83d\ude00"})",
      R"(  {"a": [1, -2.5e-3, {"b": null}], "text": "x", "c": false}  )", R"({"text": ""})",
      R"({"text": "x", "text": "y"})", R"({"text": 1})", R"({"txt": "x"})", R"([{"text": "x"}])",
      R"({"text": "\ud800"})", R"({"text": "\udc00x"})", R"({"text": "a)" "\x01" R"("})",
      R"({"text": "x",})", R"({"text": "x"} x)", R"({"a": 01, "text": "x"})", R"({"a": 1., "text": "x"})",
      R"({"a": tru, "text": "x"})", "{\"text\": \"\xff\"}", R"({"text": "\q"})", R"({"text": "x")",
      R"({"a": [1 2], "text": "x"})", R"({"a": {"b" 1}, "text": "x"})", R"({"text": "\u12"})",
  };
  for (const std::string& line : lines) {
    std::string fast;
    const bool ok = prep::jsonl_text_fast(line, fast);
    std::string lib;
    bool lib_ok = false;
    try {
      json j = json::parse(line);
      lib_ok = j.is_object() && j.contains("text") && j["text"].is_string();
      if (lib_ok) lib = j["text"].get<std::string>();
    } catch (const json::exception&) {
    }
    if (ok) {
      EXPECT_TRUE(lib_ok) << line;
      EXPECT_EQ(fast, lib) << line;
    }
    if (lib_ok && !ok) {
      EXPECT_NE(line.find("\"text\": \"x\", \"text\""), std::string::npos) << line;
    }
  }
}

// The same on random lines: string bodies of every length around the scanner's 8-byte words,
// mixing ASCII, quotes, backslash escapes (\u surrogates and bad ones too), control characters,
// valid multi-byte UTF-8 and stray bytes >= 0x80, in the text field and in other keys' values.
TEST(DataPrepare, JsonlFastScannerAgreesWithTheLibraryOnRandomLines) {
  std::mt19937 rng(17);
  const std::vector<std::string> good = {
      "a", "Z", " ", "~", "\\\"", "\\\\", "\\n", "\\/", "\\u00e9", "\\ud83d\\ude00", "\x7f",
      "\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80"};
  const std::vector<std::string> bad = {"\\ud800", "\\udc00", "\\u12", "\\x", "\x01", "\x1f", "\t", "\"",
                                        "\xff", "\xc3", "\xe2\x82", "\x80", "\xed\xa0\x80", "\xc0\xaf"};
  auto body = [&] {
    std::string b;
    const int n = static_cast<int>(rng() % 40);
    for (int k = 0; k < n; ++k) {
      // Mostly plain ASCII, so that runs cross word boundaries at every offset.
      if (rng() % 3) b += static_cast<char>('a' + rng() % 26);
      else if (rng() % 40) b += good[rng() % good.size()];
      else b += bad[rng() % bad.size()];
    }
    return b;
  };
  int accepted = 0, declined = 0;
  for (int t = 0; t < 20000; ++t) {
    std::string line = "{";
    if (rng() % 2) line += "\"k" + body() + "\": \"" + body() + "\", ";
    line += "\"text\": \"" + body() + "\"";
    if (rng() % 2) line += ", \"" + body() + "\": [\"" + body() + "\", 1]";
    line += "}";
    std::string fast;
    const bool ok = prep::jsonl_text_fast(line, fast);
    bool lib_ok = false;
    std::string lib;
    try {
      json j = json::parse(line);
      lib_ok = j.is_object() && j.contains("text") && j["text"].is_string();
      if (lib_ok) lib = j["text"].get<std::string>();
    } catch (const json::exception&) {
    }
    // Keys are distinct here ("k..." vs "text" vs a random one that is "text" only by chance),
    // so the scanner declines exactly what the library rejects.
    const bool dup_text = line.find("\"text\"", line.find("\"text\"") + 1) != std::string::npos;
    if (!dup_text) {
      ASSERT_EQ(ok, lib_ok) << line;
    }
    if (ok) {
      ASSERT_EQ(fast, lib) << line;
    }
    (ok ? accepted : declined)++;
  }
  EXPECT_GT(accepted, 2000);
  EXPECT_GT(declined, 2000);
}

}  // namespace
}  // namespace huginn
