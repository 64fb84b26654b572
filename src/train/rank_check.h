// The start of a data-parallel run: every rank must train the same model on the same data with
// the same flags from the same step and weights, or the sum of their gradients means nothing.
#pragma once

#include <nlohmann/json.hpp>

namespace huginn {
class Communicator;

// Rank 0's `mine` is sent to every rank, each compares its own with it, and the verdicts are
// gathered: when any rank differs, every rank throws huginn::CollectiveError naming the first such
// rank and the first differing field ("rank 1 differs from rank 0: 'run.batch' is 4 on rank 0, 8 on
// rank 1"). `mine` is a JSON object; objects are compared key by key (the field's path is named).
void check_ranks_agree(Communicator& comm, const nlohmann::ordered_json& mine);

// The first field where `here` differs from `ref`, as "'a.b' is X on rank 0, Y on rank R", or "".
std::string json_difference(const nlohmann::ordered_json& ref, const nlohmann::ordered_json& here,
                            int rank, const std::string& path = "");

}  // namespace huginn
