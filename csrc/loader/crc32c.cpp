// CRC32C: runtime dispatch between the SSE4.2 instruction and slice-by-8 tables (see crc32c.h).
#include "crc32c.h"

#include <array>
#include <cstring>

#if defined(__x86_64__) || defined(_M_X64)
#include <nmmintrin.h>
#define SEEDCODER_CRC_X86 1
#endif

namespace seedcoder::loader {
namespace {

constexpr uint32_t kPolynomial = 0x82F63B78u;

struct SliceTables {
  std::array<std::array<uint32_t, 256>, 8> table{};
  SliceTables() {
    for (uint32_t byte = 0; byte < 256; ++byte) {
      uint32_t crc = byte;
      for (int bit = 0; bit < 8; ++bit) crc = (crc >> 1) ^ ((crc & 1) ? kPolynomial : 0);
      table[0][byte] = crc;
    }
    for (uint32_t byte = 0; byte < 256; ++byte)
      for (int slice = 1; slice < 8; ++slice) table[slice][byte] = (table[slice - 1][byte] >> 8) ^ table[0][table[slice - 1][byte] & 0xFF];
  }
};

const SliceTables& slice_tables() {
  static const SliceTables tables;
  return tables;
}

// Works on the raw (not inverted) register value.
uint32_t update_portable(uint32_t crc, const uint8_t* data, size_t size) {
  const auto& t = slice_tables().table;
  while (size >= 8) {
    uint64_t word;
    std::memcpy(&word, data, 8);  // little-endian host (docs/shard_format.md)
    word ^= crc;
    crc = t[7][word & 0xFF] ^ t[6][(word >> 8) & 0xFF] ^ t[5][(word >> 16) & 0xFF] ^ t[4][(word >> 24) & 0xFF] ^
          t[3][(word >> 32) & 0xFF] ^ t[2][(word >> 40) & 0xFF] ^ t[1][(word >> 48) & 0xFF] ^ t[0][word >> 56];
    data += 8;
    size -= 8;
  }
  while (size--) crc = (crc >> 8) ^ t[0][(crc ^ *data++) & 0xFF];
  return crc;
}

#ifdef SEEDCODER_CRC_X86
__attribute__((target("sse4.2"))) uint32_t update_sse42(uint32_t crc, const uint8_t* data, size_t size) {
  uint64_t crc64 = crc;
  while (size >= 32) {  // unrolled: the instruction has 3-cycle latency, one chain, so unrolling only trims loop overhead
    uint64_t w0, w1, w2, w3;
    std::memcpy(&w0, data, 8);
    std::memcpy(&w1, data + 8, 8);
    std::memcpy(&w2, data + 16, 8);
    std::memcpy(&w3, data + 24, 8);
    crc64 = _mm_crc32_u64(crc64, w0);
    crc64 = _mm_crc32_u64(crc64, w1);
    crc64 = _mm_crc32_u64(crc64, w2);
    crc64 = _mm_crc32_u64(crc64, w3);
    data += 32;
    size -= 32;
  }
  while (size >= 8) {
    uint64_t word;
    std::memcpy(&word, data, 8);
    crc64 = _mm_crc32_u64(crc64, word);
    data += 8;
    size -= 8;
  }
  uint32_t crc32 = static_cast<uint32_t>(crc64);
  while (size--) crc32 = _mm_crc32_u8(crc32, *data++);
  return crc32;
}

bool detect_sse42() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("sse4.2");
}
#endif

}  // namespace

bool crc32c_hardware_available() {
#ifdef SEEDCODER_CRC_X86
  static const bool available = detect_sse42();
  return available;
#else
  return false;
#endif
}

uint32_t crc32c_portable(const void* data, size_t size, uint32_t crc) {
  return ~update_portable(~crc, static_cast<const uint8_t*>(data), size);
}

uint32_t crc32c(const void* data, size_t size, uint32_t crc) {
#ifdef SEEDCODER_CRC_X86
  if (crc32c_hardware_available()) return ~update_sse42(~crc, static_cast<const uint8_t*>(data), size);
#endif
  return crc32c_portable(data, size, crc);
}

}  // namespace seedcoder::loader
