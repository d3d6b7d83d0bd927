// CRC32C (Castagnoli, reflected polynomial 0x82F63B78, init and xor-out 0xFFFFFFFF): the shard checksums.
// The SSE4.2 crc32 instruction when the CPU has it (detected once at run time, so one binary serves every
// x86-64 machine), else a slice-by-8 table walk. crc32c(b, crc32c(a)) == crc32c(a + b).
#pragma once

#include <cstddef>
#include <cstdint>

namespace seedcoder::loader {

uint32_t crc32c(const void* data, size_t size, uint32_t crc = 0);

// The table path alone (tests compare it with the hardware path).
uint32_t crc32c_portable(const void* data, size_t size, uint32_t crc = 0);

// Whether crc32c() uses the CPU instruction here.
bool crc32c_hardware_available();

}  // namespace seedcoder::loader
