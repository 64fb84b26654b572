// huginn grad: loss and every parameter gradient with truncated backprop (the gradient-check
// contract of issue 4): writes `loss` (F32 scalar) and `grad.<parameter name>` (F32).
#include <memory>

#include "cli/command.h"
#include "huginn/backward.h"
#include "huginn/log.h"
#include "huginn/safetensors.h"
#include "huginn/thread_pool.h"

namespace huginn::cli {
namespace {

struct GradArgs {
  std::string model, ids, labels, out;
  int steps_no_grad = 0, steps_with_grad = 1;
  double init_scale = 0.0;
  uint64_t seed = 0;
};

void run(const GradArgs& a, const Common& common) {
  std::vector<int> ids_int = parse_int_list(a.ids, "--ids");
  std::vector<int> labels_int = parse_int_list(a.labels, "--labels");
  std::vector<int32_t> ids(ids_int.begin(), ids_int.end());
  std::vector<int32_t> labels(labels_int.begin(), labels_int.end());
  if (labels.size() != ids.size())
    throw Error("--labels: " + std::to_string(labels.size()) + " labels for " +
                std::to_string(ids.size()) + " ids (need one per id; -100 = ignored)");
  ThreadPool pool(common.threads);
  auto backend = make_backend(common.backend, pool);
  auto model = Model::load(a.model, *backend);
  Grads grads = Grads::zeros_like(*model, *backend);
  LossOptions opt;
  opt.n_no_grad = a.steps_no_grad;
  opt.n_with_grad = a.steps_with_grad;
  opt.init.scale = a.init_scale;
  opt.init.seed = a.seed;
  BackwardRunner runner(*model, *backend);
  const float loss = runner.loss_and_grad(ids, labels, opt, grads);

  SafetensorsWriter w;
  Tensor l = Tensor::empty(std::span<const int64_t>{});
  l.f32()[0] = loss;
  w.add("loss", l);
  const auto params = named_params(*model, grads);
  for (const NamedParam& p : params) {
    Tensor host = Tensor::empty(p.grad.shape());
    backend->download(p.grad, host.f32());
    w.add("grad." + p.name, host);
  }
  w.add_metadata("steps_no_grad", std::to_string(a.steps_no_grad));
  w.add_metadata("steps_with_grad", std::to_string(a.steps_with_grad));
  w.add_metadata("model", a.model);
  w.write(a.out);
  if (!common.quiet)
    HUGINN_LOG_INFO("wrote %s: loss %.6f and %zu gradients (%d + %d recurrences)", a.out.c_str(),
                    loss, params.size(), a.steps_no_grad, a.steps_with_grad);
}

Registrar reg(45, [](CLI::App& app, Common& common) {
  auto a = std::make_shared<GradArgs>();
  CLI::App* sub = app.add_subcommand(
      "grad", "Loss and every parameter gradient (truncated backprop); write them as safetensors");
  sub->add_option("--model", a->model, "model directory (config.json + safetensors)")->required();
  sub->add_option("--ids", a->ids, "token ids, comma-separated")->required();
  sub->add_option("--labels", a->labels,
                  "target per position, comma-separated, already shifted; -100 = ignored")
      ->required();
  sub->add_option("--steps-no-grad", a->steps_no_grad, "recurrences run without gradient")
      ->check(CLI::NonNegativeNumber);
  sub->add_option("--steps-with-grad", a->steps_with_grad,
                  "recurrences backpropagated through (default 1)")
      ->check(CLI::NonNegativeNumber);
  sub->add_option("--init-scale", a->init_scale,
                  "initial state: 0 = zeros (default), S = truncated normal scaled by S")
      ->check(CLI::NonNegativeNumber);
  sub->add_option("--seed", a->seed, "seed of the random initial state");
  sub->add_option("--out", a->out, "output .safetensors: loss, grad.<parameter name>")->required();
  add_common_options(sub, common);
  sub->callback([a, &common] { run(*a, common); });
});

}  // namespace
}  // namespace huginn::cli
