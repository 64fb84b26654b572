// huginn data prepare: text / JSONL documents -> token shards for training.
#include <memory>

#include "cli/command.h"
#include "huginn/data.h"
#include "huginn/log.h"

namespace huginn::cli {
namespace {

Registrar reg(61, [](CLI::App& app, Common& common) {
  CLI::App* data = app.add_subcommand("data", "Training data tools");
  data->require_subcommand(1);
  auto o = std::make_shared<PrepareOptions>();
  CLI::App* sub = data->add_subcommand(
      "prepare",
      "Tokenize text files and JSONL ('text' field), plain or zstd/gzip-compressed, into train/val "
      "token shards on all threads, with progress (rate, ETA); a killed run continues with --resume");
  sub->add_option("--tokenizer", o->tokenizer, "tokenizer.json")->required()->check(CLI::ExistingFile);
  sub->add_option("--input", o->inputs,
                  "input files: *.jsonl (one {\"text\": ...} per line) or plain text (one document "
                  "each); .zst / .gz compressed too (known by content; *.jsonl.zst is JSONL)")
      ->required();
  sub->add_option("--out", o->out, "output data directory (must not hold shards yet, unless --resume)")
      ->required();
  sub->add_flag("--resume", o->resume,
                "continue a stopped run in --out from its prepare-state.json (same command otherwise); "
                "the shards equal those of an uninterrupted run");
  sub->add_option("--max-doc-mb", o->max_doc_mb,
                  "bound on one document in memory, MiB: a longer text file is encoded in pieces cut "
                  "at line ends, a longer JSONL line is an error")
      ->check(CLI::Range(1, 4096));
  sub->add_option("--batch-mb", o->batch_mb,
                  "MiB of text per batch: the unit of the val split and of a checkpoint")
      ->check(CLI::Range(1, 1024));
  sub->add_option("--val-fraction", o->val_fraction, "fraction of tokens held out for validation")
      ->check(CLI::Range(0.0, 0.99));
  sub->add_option("--eot-token", o->eot_token,
                  "token placed after each document (default: the tokenizer's eos or <|endoftext|>)");
  sub->add_option("--shard-tokens", o->shard_tokens, "tokens per shard file")->check(CLI::PositiveNumber);
  add_common_options(sub, common);
  sub->callback([o, &common] {
    o->threads = common.threads;
    o->quiet = common.quiet;
    PrepareResult r = prepare_data(*o);
    std::printf("%llu documents: %llu train tokens in %d shard(s), %llu val tokens in %d shard(s); "
                "vocabulary %u, end-of-text id %d\n",
                (unsigned long long)r.documents, (unsigned long long)r.train_tokens, r.train_shards,
                (unsigned long long)r.val_tokens, r.val_shards, r.vocab_size, r.eot_id);
  });
});

}  // namespace
}  // namespace huginn::cli
