# -DHUGINN_FUZZ=ON: everything is compiled with libFuzzer's coverage instrumentation, ASan and
# UBSan (-fno-sanitize-recover: the first report is a crash the fuzzer keeps), and only the fuzzers
# of fuzz/ are built. Included by the top-level CMakeLists.txt before src/ so the libraries under
# test are instrumented too. `make fuzz` / `make fuzz-ci` configure build-fuzz/ this way.
if(NOT CMAKE_CXX_COMPILER_ID MATCHES "Clang")
  message(FATAL_ERROR "HUGINN_FUZZ needs clang (libFuzzer): configure with "
                      "CC=clang CXX=clang++, or run `make fuzz`")
endif()
add_compile_options(-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=all
                    -fno-omit-frame-pointer -g -O1)
add_link_options(-fsanitize=address,undefined)
set(HUGINN_TESTS OFF)
set(HUGINN_BENCH OFF)
