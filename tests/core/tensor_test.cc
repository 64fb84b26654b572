// Tensor::empty: the byte size of a shape is checked in every build type. Shapes reach it from
// files and flags; a wrapped product (block_size 2^58 in config.json) once allocated 64 bytes
// that the RoPE table then wrote far past.
#include "huginn/tensor.h"

#include <gtest/gtest.h>

#include <string>

#include "huginn/error.h"
#include "huginn/model.h"

namespace huginn {
namespace {

std::string error_of(std::initializer_list<int64_t> shape, DType dt) {
  try {
    Tensor::empty(shape, dt);
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "no huginn::Error";
  return {};
}

TEST(TensorEmpty, OverflowingShapesAreErrors) {
  const int64_t big = int64_t{1} << 58;
  EXPECT_NE(error_of({big, 8, 2}, DType::kF32).find("more than 2^63 bytes"), std::string::npos);
  EXPECT_NE(error_of({big, 8, 2}, DType::kF32).find("[288230376151711744, 8, 2]"), std::string::npos);
  // 2^62 elements fit in int64, their 4-byte size does not.
  EXPECT_NE(error_of({int64_t{1} << 31, int64_t{1} << 31}, DType::kF32).find("2^63"), std::string::npos);
  EXPECT_NE(error_of({int64_t{1} << 62}, DType::kQ8).find("2^63"), std::string::npos);
  EXPECT_NE(error_of({int64_t{1} << 62}, DType::kQ4).find("2^63"), std::string::npos);
  EXPECT_NE(error_of({3, -1}, DType::kF32).find("negative dimension"), std::string::npos);
  EXPECT_NE(error_of({1, 1, 1, 1, 1, 1}, DType::kF32).find("5 dimensions"), std::string::npos);
}

TEST(TensorEmpty, OrdinaryShapes) {
  Tensor t = Tensor::empty({3, 0, 5});
  EXPECT_EQ(t.numel(), 0);
  Tensor u = Tensor::empty({7, 9}, DType::kBF16);
  EXPECT_EQ(u.nbytes(), 7u * 9u * 2u);
  for (int64_t i = 0; i < u.numel(); ++i) EXPECT_EQ(u.data<uint16_t>()[i], 0);
}

TEST(RopeTable, BoundedAndChecked) {
  auto err = [](int64_t n, int64_t d) -> std::string {
    try {
      rope_table(n, d, 50000.0);
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  };
  EXPECT_NE(err(int64_t{1} << 58, 16).find("1048576"), std::string::npos);
  EXPECT_NE(err(0, 16).find("positions"), std::string::npos);
  EXPECT_NE(err(16, 7).find("even"), std::string::npos);
  EXPECT_NE(err(int64_t{1} << 20, 512).find("limit"), std::string::npos);  // 2 GiB
  Tensor t = rope_table(5, 4, 10000.0);
  EXPECT_EQ(t.dim(0), 5);
  EXPECT_EQ(t.f32()[0], 1.0f);  // cos(0)
}

}  // namespace
}  // namespace huginn
