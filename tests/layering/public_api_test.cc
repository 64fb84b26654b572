// A user of the libraries sees include/huginn and nothing of src/: every public header compiles
// on its own (it includes what it needs, and no private header), and the private headers are not
// on the include path (the #error: this file does not compile if src/ leaks into a library's
// public include directories).
#include <gtest/gtest.h>

#include "huginn/backend.h"
#include "huginn/backward.h"
#include "huginn/comm.h"
#include "huginn/config.h"
#include "huginn/data.h"
#include "huginn/decode_batcher.h"
#include "huginn/error.h"
#include "huginn/eval.h"
#include "huginn/exit.h"
#include "huginn/forward.h"
#include "huginn/forward_batch.h"
#include "huginn/generate.h"
#include "huginn/host_math.h"
#include "huginn/log.h"
#include "huginn/model.h"
#include "huginn/plot.h"
#include "huginn/safetensors.h"
#include "huginn/sampler.h"
#include "huginn/server.h"
#include "huginn/tensor.h"
#include "huginn/thread_pool.h"
#include "huginn/tokenizer.h"
#include "huginn/train.h"
#include "huginn/trajectory.h"

#if __has_include("util/json.h") || __has_include("kernels/device_access.h") || \
    __has_include("kernels/cpu/cpu_backend.h") || __has_include("train/checkpoint.h")
#error "src/ is an include path of the libraries' users: a private header is reachable"
#endif

namespace huginn {
namespace {

// The public API is enough to run the model on a backend.
TEST(PublicApi, RunsTheModelThroughPublicHeadersOnly) {
  ThreadPool pool(1);
  auto be = make_backend("strict", pool);
  Tensor t = be->upload(Tensor::empty({2, 3}));
  std::vector<float> back(6, 1.0f);
  be->download(t, back.data());
  EXPECT_EQ(back, std::vector<float>(6, 0.0f));
  EXPECT_THROW((void)t.f32(), Error);  // backend memory, refused to the host
}

}  // namespace
}  // namespace huginn
