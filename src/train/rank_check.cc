// Agreement of the ranks at the start of a data-parallel run (rank_check.h).
#include "train/rank_check.h"

#include "huginn/comm.h"
#include "huginn/error.h"
#include "util/json.h"

namespace huginn {
namespace {

// A value as it reads in the error: its JSON text, bounded.
std::string text(const nlohmann::ordered_json& v) {
  if (!v.is_primitive()) return json_preview(nlohmann::json(v));
  std::string s = v.dump();
  return s.size() <= 60 ? s : s.substr(0, 57) + "...";
}

}  // namespace

std::string json_difference(const nlohmann::ordered_json& ref, const nlohmann::ordered_json& here,
                            int rank, const std::string& path) {
  const std::string name = path.empty() ? "(the whole record)" : path;
  const std::string there = " on rank " + std::to_string(rank);
  if (ref.is_object() && here.is_object()) {
    for (auto& [k, v] : ref.items()) {
      const std::string sub = path.empty() ? k : path + "." + k;
      if (!here.contains(k)) return "'" + sub + "' is " + text(v) + " on rank 0, absent" + there;
      if (std::string d = json_difference(v, here[k], rank, sub); !d.empty()) return d;
    }
    for (auto& [k, v] : here.items())
      if (!ref.contains(k))
        return "'" + (path.empty() ? k : path + "." + k) + "' is absent on rank 0, " + text(v) +
               there;
    return {};
  }
  if (ref == here) return {};
  return "'" + name + "' is " + text(ref) + " on rank 0, " + text(here) + there;
}

void check_ranks_agree(Communicator& comm, const nlohmann::ordered_json& mine) {
  if (comm.size() == 1) return;
  const nlohmann::ordered_json ref =
      nlohmann::ordered_json::parse(broadcast_string(comm, mine.dump()));
  const std::string d = json_difference(ref, mine, comm.rank());
  constexpr size_t kWidth = 480;  // json_preview bounds each value, so a verdict fits
  const std::vector<std::string> verdicts = all_gather_strings(comm, d, kWidth);
  for (int r = 0; r < comm.size(); ++r)
    if (!verdicts[r].empty())
      throw CollectiveError(
          "rank " + std::to_string(r) + " of " + std::to_string(comm.size()) +
          " differs from rank 0: " + verdicts[r] +
          " (every rank must run the same command on the same model, data and checkpoint)");
}

}  // namespace huginn
