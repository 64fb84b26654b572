// Small host-side numerics shared by layers that post-process logits (exit policies, trajectory
// analysis), kept in one place so they cannot drift apart.
#pragma once

#include <span>
#include <vector>

namespace huginn {

// out = log_softmax(x), computed in double (max-subtracted, one log-sum-exp).
void log_softmax_f64(std::span<const float> x, std::vector<double>& out);

}  // namespace huginn
