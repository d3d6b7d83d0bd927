// Deterministic randomness for plans: splitmix64 to hash (seed, epoch, group, ...) into a key, xoshiro256**
// streams seeded from that key. Everything random in a plan is a pure function of those inputs.
#pragma once

#include <cstdint>
#include <initializer_list>

namespace seedcoder::loader {

inline uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// Order-sensitive hash of a few integers (domain tags go first so streams for different purposes never meet).
inline uint64_t hash_key(std::initializer_list<uint64_t> values) {
  uint64_t h = 0x6A09E667F3BCC908ull;
  for (uint64_t v : values) h = splitmix64(h ^ splitmix64(v));
  return h;
}

class Rng {
 public:
  explicit Rng(uint64_t key) {
    for (auto& word : state_) word = key = splitmix64(key);
  }
  uint64_t next() {
    const uint64_t result = rotl(state_[1] * 5, 7) * 9;
    const uint64_t t = state_[1] << 17;
    state_[2] ^= state_[0];
    state_[3] ^= state_[1];
    state_[1] ^= state_[2];
    state_[0] ^= state_[3];
    state_[2] ^= t;
    state_[3] = rotl(state_[3], 45);
    return result;
  }
  // Uniform in [0, bound), bound > 0 (Lemire's multiply-and-reject: unbiased).
  uint64_t below(uint64_t bound) {
    unsigned __int128 product = static_cast<unsigned __int128>(next()) * bound;
    uint64_t low = static_cast<uint64_t>(product);
    if (low < bound) {
      const uint64_t threshold = -bound % bound;
      while (low < threshold) {
        product = static_cast<unsigned __int128>(next()) * bound;
        low = static_cast<uint64_t>(product);
      }
    }
    return static_cast<uint64_t>(product >> 64);
  }
  double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }  // [0, 1)

 private:
  static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  uint64_t state_[4];
};

}  // namespace seedcoder::loader
