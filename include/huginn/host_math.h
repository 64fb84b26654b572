// Host-side numerics on logits that have been downloaded (exit policies, the trajectory
// analysis, the server's logprobs, eval's log-likelihood scoring): the one log-softmax and the
// one KL divergence, in double, so that no two layers compute them differently.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace huginn {

// log Σ exp(x) in double: max-subtracted, one sum.
double log_sum_exp(std::span<const float> x);
// out = log_softmax(x) = x − log_sum_exp(x), in double.
void log_softmax_f64(std::span<const float> x, std::vector<double>& out);
// log_softmax(x)[id].
double log_prob(std::span<const float> x, int64_t id);
// KL(p || q) = Σ exp(p_v)(p_v − q_v) of two log-probability vectors (torch's
// F.kl_div(q, p, log_target=True).sum(), the reference's exit rule).
double kl_divergence(std::span<const double> log_p, std::span<const double> log_q);
// Entropy −Σ exp(l_v)·l_v of a log-probability vector.
double entropy(std::span<const double> log_p);

}  // namespace huginn
