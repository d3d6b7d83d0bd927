// A minimal test harness for the loader's C++ unit tests (ctest runs each executable; exit status = verdict).
#pragma once

#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

namespace seedcoder::test {

struct TestCase {
  const char* name;
  std::function<void()> body;
};

inline std::vector<TestCase>& registry() {
  static std::vector<TestCase> tests;
  return tests;
}

inline int& failures() {
  static int count = 0;
  return count;
}

struct Register {
  Register(const char* name, std::function<void()> body) { registry().push_back({name, std::move(body)}); }
};

inline int run_all() {
  int failed_tests = 0;
  for (const auto& test : registry()) {
    const int before = failures();
    try {
      test.body();
    } catch (const std::exception& error) {
      std::printf("  unexpected exception: %s\n", error.what());
      ++failures();
    }
    const bool ok = failures() == before;
    failed_tests += ok ? 0 : 1;
    std::printf("%s %s\n", ok ? "PASS" : "FAIL", test.name);
  }
  std::printf("%zu passed, %d failed\n", registry().size() - failed_tests, failed_tests);
  return failed_tests ? 1 : 0;
}

}  // namespace seedcoder::test

#define TEST_CASE(name)                                                     \
  static void name();                                                       \
  static seedcoder::test::Register register_##name(#name, name);            \
  static void name()

#define CHECK(condition)                                                               \
  do {                                                                                 \
    if (!(condition)) {                                                                \
      std::printf("  %s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #condition);      \
      ++seedcoder::test::failures();                                                   \
    }                                                                                  \
  } while (0)

#define CHECK_EQ(a, b)                                                                                          \
  do {                                                                                                          \
    const auto value_a = (a);                                                                                   \
    const auto value_b = (b);                                                                                   \
    if (!(value_a == value_b)) {                                                                                \
      std::printf("  %s:%d: CHECK_EQ(%s, %s) failed: %s vs %s\n", __FILE__, __LINE__, #a, #b,                   \
                  std::to_string(value_a).c_str(), std::to_string(value_b).c_str());                            \
      ++seedcoder::test::failures();                                                                            \
    }                                                                                                           \
  } while (0)

// The body must throw an exception whose what() contains `fragment`.
#define CHECK_THROWS_WITH(body, fragment)                                                                       \
  do {                                                                                                          \
    bool threw = false;                                                                                         \
    try {                                                                                                       \
      body;                                                                                                     \
    } catch (const std::exception& error) {                                                                     \
      threw = true;                                                                                             \
      if (std::string(error.what()).find(fragment) == std::string::npos) {                                      \
        std::printf("  %s:%d: expected an error with '%s', got '%s'\n", __FILE__, __LINE__, fragment, error.what()); \
        ++seedcoder::test::failures();                                                                          \
      }                                                                                                         \
    }                                                                                                           \
    if (!threw) {                                                                                               \
      std::printf("  %s:%d: expected an exception with '%s'\n", __FILE__, __LINE__, fragment);                  \
      ++seedcoder::test::failures();                                                                            \
    }                                                                                                           \
  } while (0)

#define TEST_MAIN() \
  int main() { return seedcoder::test::run_all(); }
