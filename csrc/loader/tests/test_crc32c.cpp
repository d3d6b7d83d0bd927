// CRC32C: the check values, hardware path == table path on random buffers of every alignment/length, chaining.
#include <random>
#include <string>
#include <vector>

#include "check.h"
#include "crc32c.h"

using namespace seedcoder::loader;

TEST_CASE(check_values) {
  const std::string digits = "123456789";
  CHECK_EQ(crc32c(digits.data(), digits.size()), 0xE3069283u);
  CHECK_EQ(crc32c_portable(digits.data(), digits.size()), 0xE3069283u);
  CHECK_EQ(crc32c("", 0), 0u);
  const std::vector<uint8_t> zeros(32, 0);
  CHECK_EQ(crc32c(zeros.data(), zeros.size()), 0x8A9136AAu);  // RFC 3720 B.4: 32 bytes of zeros
}

TEST_CASE(hardware_matches_tables) {
  std::mt19937 rng(7);
  std::vector<uint8_t> buffer(5000);
  for (auto& b : buffer) b = static_cast<uint8_t>(rng());
  for (size_t start = 0; start < 9; ++start)
    for (size_t length : {0, 1, 7, 8, 9, 31, 32, 33, 100, 4095, 4990})
      CHECK_EQ(crc32c(buffer.data() + start, length), crc32c_portable(buffer.data() + start, length));
}

TEST_CASE(chaining) {
  std::vector<uint8_t> buffer(1000);
  for (size_t i = 0; i < buffer.size(); ++i) buffer[i] = static_cast<uint8_t>(i * 31);
  const uint32_t whole = crc32c(buffer.data(), buffer.size());
  for (size_t cut : {0, 1, 13, 500, 999, 1000}) {
    CHECK_EQ(crc32c(buffer.data() + cut, buffer.size() - cut, crc32c(buffer.data(), cut)), whole);
    CHECK_EQ(crc32c_portable(buffer.data() + cut, buffer.size() - cut, crc32c_portable(buffer.data(), cut)), whole);
  }
}

TEST_MAIN()
