// huginn eval: accuracy, steps per token and tokens/s of a model on a task at several
// recurrence settings (fixed r, and exit criteria with a maximum); table, JSON, CSV, plots.
#include <cstdio>
#include <memory>

#include "cli/command.h"
#include "cli/sampler_flags.h"
#include "huginn/eval.h"

namespace huginn::cli {
namespace {

struct EvalArgs {
  EvalOptions o;
  SamplerFlags sf;
  std::string steps = "1,2,4,8,16,32,64", exits;
};

// "kl:1e-3,kl:1e-4" -> {"kl:1e-3", "kl:1e-4"} (a threshold may hold commas only in lists of
// criteria, so split on commas).
std::vector<std::string> split_list(const std::string& s) {
  std::vector<std::string> out;
  size_t i = 0;
  while (i <= s.size() && !s.empty()) {
    size_t j = s.find(',', i);
    if (j == std::string::npos) j = s.size();
    if (j > i) out.push_back(s.substr(i, j - i));
    i = j + 1;
  }
  return out;
}

Registrar reg(71, [](CLI::App& app, Common& common) {
  auto a = std::make_shared<EvalArgs>();
  CLI::App* sub = app.add_subcommand("eval", "Evaluate a model on a task across recurrence settings");
  sub->add_option("--model", a->o.model, "model directory")->required()->check(CLI::ExistingDirectory);
  sub->add_option("--task", a->o.task,
                  "built-in task (chain[:hops=N], parity[:bits=N], add|mul[:digits=N], ops|swap|trace|affine[:ops=N], sum[:terms=N]) or FILE.jsonl "
                  "(prompt/answer[/regex] or context/choices/gold lines)")
      ->required();
  sub->add_option("--steps", a->steps, "fixed recurrences to evaluate, comma-separated");
  sub->add_option("--exit", a->exits, "exit criteria, e.g. kl:1e-3,kl:1e-4 (max steps: --exit-max-steps)");
  sub->add_option("--exit-max-steps", a->o.exit_max_steps, "maximum recurrences with an exit (default: largest --steps)")
      ->check(CLI::NonNegativeNumber);
  sub->add_flag("--warm-start", a->o.warm_start, "start each token's recurrence from the previous token's state");
  sub->add_option("--warm-state", a->o.warm_state,
                  "the state --warm-start passes: auto = as the reference (ln_f(s) with fixed "
                  "steps, raw s with --exit), latent = ln_f(s), raw = s")
      ->check(CLI::IsMember({"auto", "latent", "raw"}));
  sub->add_flag("--prompt-by-token", a->o.prompt_by_token,
                "feed the prompt one token per call, as if the model had written it: each prompt "
                "token runs its own recurrence (exit, warm start), and the intermediate answers of "
                "stepwise tasks (swap, affine) are scored (results: step_answers, "
                "mean_prompt_steps_per_token)");
  sub->add_option("--cache-slots", a->o.cache_slots, "share K KV slots per token across recurrences (0: full cache). "
                  "With --exit use K = the core's layer count: with a full cache a later token sees "
                  "only the recurrences an earlier token ran (the reference's behaviour), which "
                  "costs accuracy")
      ->check(CLI::NonNegativeNumber);
  sub->add_option("--limit", a->o.limit, "examples to evaluate")->check(CLI::PositiveNumber);
  sub->add_option("--seed", a->o.seed, "seed of a built-in task's test examples");
  sub->add_option("--max-new-tokens", a->o.max_new_tokens, "generation limit (default: longest answer + 2)")
      ->check(CLI::NonNegativeNumber);
  sub->add_option("--out", a->o.out_dir, "directory for results.json, results.csv and the plots");
  auto no_plots = std::make_shared<bool>(false);
  sub->add_flag("--no-plots", *no_plots, "skip the PNG/SVG plots");
  sub->add_option("--show", a->o.show_examples, "example generations to print per setting (largest r and exits)")
      ->check(CLI::NonNegativeNumber);
  sub->add_option("--decode", a->o.decode,
                  "how each example is generated: sequential, wavefront (lossless), or the "
                  "reference's speculative / diffusion samplers (their flags below), so accuracy "
                  "vs speed can be swept")
      ->check(CLI::IsMember({"sequential", "wavefront", "speculative", "diffusion"}));
  add_wavefront_flags(sub, a->o.wavefront);
  add_sampler_flags(sub, a->sf);
  add_common_options(sub, common);
  add_dtype_option(sub, common);
  sub->callback([a, no_plots, &common] {
    a->o.steps = a->steps.empty() ? std::vector<int>{} : parse_int_list(a->steps, "--steps");
    a->o.exits = split_list(a->exits);
    a->o.plots = !*no_plots;
    a->o.speculative = a->sf.spec;
    a->o.diffusion = diffusion_options(a->sf);
    a->o.threads = common.threads;
    a->o.weight_dtype = common.dtype;
    a->o.backend = common.backend;
    a->o.quiet = common.quiet;
    if (!a->o.exits.empty() && a->o.cache_slots == 0 && !common.quiet)
      std::fprintf(stderr,
                   "note: --exit with a full KV cache: a token that exits early leaves no entries "
                   "for later recurrences, so later tokens cannot see it there; --cache-slots "
                   "(the core's layer count) shares one slot per layer instead\n");
    const EvalReport rep = run_eval(a->o);
    std::printf("%s", rep.table().c_str());
    if (!rep.examples.empty()) {
      std::printf("\nexample generations (each generated token with its recurrence steps):\n");
      for (const auto& e : rep.examples) {
        std::printf("  [%s] %s  ->", e.setting.c_str(), e.prompt.c_str());
        for (size_t i = 0; i < e.pieces.size(); ++i) {
          std::string p = e.pieces[i] == "\n" ? "\\n" : e.pieces[i];
          std::printf(" %s(%d)", p.c_str(), e.steps[i]);
        }
        std::printf("   %s (answer %s)\n", e.correct ? "correct" : "WRONG", e.answer.c_str());
      }
    }
    if (!a->o.out_dir.empty()) std::printf("\nwrote %s/results.json, results.csv%s\n", a->o.out_dir.c_str(),
                                           a->o.plots ? " and plots" : "");
  });
});

}  // namespace
}  // namespace huginn::cli
