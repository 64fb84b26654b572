// huginn tokenizer train: trains a byte-level BPE tokenizer and writes its tokenizer.json.
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "cli/command.h"
#include "huginn/error.h"
#include "huginn/log.h"
#include "huginn/thread_pool.h"
#include "huginn/tokenizer.h"
#include "util/mapped_file.h"

namespace huginn::cli {
namespace {

struct Options {
  std::vector<std::string> inputs;
  std::string out, regex;
  std::vector<std::string> specials;
  int vocab_size = 0;
  int min_frequency = 2;
};

// Files are cut into ~1 MB pieces at line ends so that counting spreads over threads; a word
// never spans a line end with the default pattern, so the counts are the same.
void read_chunks(const std::string& path, std::vector<std::string>& out) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error(path + ": cannot open input file");
  std::ostringstream ss;
  ss << f.rdbuf();
  std::string all = ss.str();
  size_t i = 0;
  while (i < all.size()) {
    size_t end = std::min(all.size(), i + (1 << 20));
    size_t nl = all.find('\n', end);
    end = nl == std::string::npos ? all.size() : nl + 1;
    out.push_back(all.substr(i, end - i));
    i = end;
  }
}

void run(const Options& o, const Common& common) {
  std::vector<std::string> texts;
  for (const auto& p : o.inputs) read_chunks(p, texts);
  if (texts.empty()) throw Error("tokenizer train: the input files are empty");
  ThreadPool pool(common.threads);
  BpeTrainOptions opt;
  opt.vocab_size = o.vocab_size;
  opt.special_tokens = o.specials;
  opt.split_regex = o.regex;
  opt.min_frequency = o.min_frequency;
  opt.progress = !common.quiet;
  std::string json = train_bpe(texts, opt, pool);
  auto check = Tokenizer::from_json(json, o.out);  // what we write must load
  write_file_atomic(o.out, json.data(), json.size());
  if (!common.quiet)
    HUGINN_LOG_INFO("wrote %s: vocabulary %d", o.out.c_str(), check->vocab_size(true));
}

Registrar reg(41, [](CLI::App& app, Common& common) {
  auto o = std::make_shared<Options>();
  CLI::App* group = app.add_subcommand("tokenizer", "Tokenizer tools");
  group->require_subcommand(1);
  CLI::App* sub = group->add_subcommand("train", "Train a byte-level BPE tokenizer (tokenizer.json)");
  sub->add_option("--vocab-size", o->vocab_size, "vocabulary size, including 256 bytes and specials")
      ->required()
      ->check(CLI::PositiveNumber);
  sub->add_option("--input", o->inputs, "training text files")->required()->expected(1, -1);
  sub->add_option("--out", o->out, "output tokenizer.json")->required();
  sub->add_option("--special", o->specials, "special tokens, given ids 0, 1, ... in order")
      ->expected(0, -1);
  sub->add_option("--regex", o->regex, "pre-tokenizer split regex (default: GPT-4's)");
  sub->add_option("--min-frequency", o->min_frequency, "never merge a pair seen fewer times")
      ->check(CLI::PositiveNumber);
  sub->add_flag("--quiet", common.quiet, "no progress output");
  sub->add_option("--threads", common.threads, "worker threads for counting (default: one per core)")
      ->check(CLI::NonNegativeNumber);
  sub->callback([o, &common] { run(*o, common); });
});

}  // namespace
}  // namespace huginn::cli
