# Included by ctest after the discovered tests (gtest_discover_tests lists them in
# <target>_TESTS): each tokenizer_hostile_test case gets 120 s instead of the suite's 600 s.
foreach(_t IN LISTS tokenizer_hostile_test_TESTS)
  set_tests_properties("${_t}" PROPERTIES TIMEOUT 120)
endforeach()
