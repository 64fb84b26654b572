// Eval outputs: results.json, results.csv and the two plots (accuracy vs r; accuracy vs mean
// steps per token across exit thresholds, with the fixed-r curve for reference).
#include <cmath>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include "huginn/error.h"
#include "huginn/eval.h"
#include "huginn/log.h"
#include "util/mapped_file.h"
#ifdef HUGINN_EVAL_HAVE_PLOT
#include "huginn/plot.h"
#endif

namespace huginn {
namespace {

// A plot series with every other field at its default (aggregate initialisation would have to
// spell them all out).
plot::Series series(std::string title, std::string style, std::vector<double> x = {},
                    std::vector<double> y = {}) {
  plot::Series s;
  s.title = std::move(title);
  s.style = std::move(style);
  s.x = std::move(x);
  s.y = std::move(y);
  return s;
}

}  // namespace

void write_eval_outputs(const EvalReport& rep, const std::string& dir, bool plots) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec || !std::filesystem::is_directory(dir))
    throw Error(dir + ": cannot create the output directory");
  const std::string js = rep.to_json(), csv = rep.to_csv();
  write_file_atomic(dir + "/results.json", js.data(), js.size());
  write_file_atomic(dir + "/results.csv", csv.data(), csv.size());
  if (!plots) return;
#ifdef HUGINN_EVAL_HAVE_PLOT
  if (plot::find_gnuplot().empty()) {
    HUGINN_LOG_WARN("gnuplot not found: skipping the plots (install gnuplot-nox)");
    return;
  }
  plot::Series fixed = series("fixed r", "linespoints"), lo = series("95% CI", "lines"),
               hi = series("", "lines");
  lo.line_width = hi.line_width = 0.8;
  lo.color = hi.color = "#9ecae1";
  fixed.color = "#1f77b4";
  plot::Series exits = series("KL exit (thresholds)", "linespoints");
  exits.color = "#d62728";
  for (const auto& r : rep.rows) {
    if (r.setting.exit.criterion == ExitCriterion::kNone) {
      fixed.x.push_back(r.setting.steps);
      fixed.y.push_back(100 * r.accuracy);
      lo.x.push_back(r.setting.steps);
      lo.y.push_back(100 * r.ci_low);
      hi.x.push_back(r.setting.steps);
      hi.y.push_back(100 * r.ci_high);
    } else {
      exits.x.push_back(r.mean_steps);
      exits.y.push_back(100 * r.accuracy);
    }
  }
  const std::string task = rep.task;
  if (!fixed.x.empty()) {
    plot::Figure f;
    plot::Axes a;
    a.title = "accuracy vs recurrence r (" + task + ")";
    a.xlabel = "recurrences r at test time";
    a.ylabel = "accuracy (%)";
    a.log_x = true;
    a.series = {fixed, lo, hi};
    if (rep.chance > 0) {
      plot::Series ch = series("chance", "lines", {fixed.x.front(), fixed.x.back()},
                               {100 * rep.chance, 100 * rep.chance});
      ch.color = "#888888";
      ch.line_width = 1;
      a.series.push_back(ch);
    }
    f.panels = {a};
    for (const char* ext : {".png", ".svg"}) plot::save(f, dir + "/accuracy_vs_steps" + ext);
  }
  if (!exits.x.empty()) {
    plot::Figure f;
    plot::Axes a;
    a.title = "accuracy vs compute: exit thresholds against fixed r (" + task + ")";
    a.xlabel = "mean recurrences per generated token";
    a.ylabel = "accuracy (%)";
    a.log_x = true;
    plot::Series fixed_steps = series("fixed r", "linespoints");
    fixed_steps.color = "#1f77b4";
    for (const auto& r : rep.rows)
      if (r.setting.exit.criterion == ExitCriterion::kNone) {
        fixed_steps.x.push_back(r.mean_steps);
        fixed_steps.y.push_back(100 * r.accuracy);
      }
    a.series = {fixed_steps, exits};
    f.panels = {a};
    for (const char* ext : {".png", ".svg"}) plot::save(f, dir + "/accuracy_vs_compute" + ext);
  }
#endif
}

}  // namespace huginn
