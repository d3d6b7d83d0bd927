// MinHash signatures and LSH clustering for near-duplicate detection (seedcoder._minhash, the hot path of
// seedcoder/curate/near_dedup.py). Pure C++ with no Python types: module.cpp binds it.
//
// Signature of one text, bit-identical to datasketch 2.x `MinHash(num_perm, seed, hashfunc=murmur3_32)` (its
// default "affine32" scheme) fed with the same shingles:
//   words     maximal runs of word characters: ASCII [0-9A-Za-z_] and every non-ASCII code point; ASCII letters
//             are lower-cased, everything else is a separator. A word is kept as its UTF-8 bytes (surrogate code
//             points as their 3-byte form, like Python's "surrogatepass").
//   shingles  each run of `ngram` consecutive words joined by one space; a text of 1..ngram-1 words is one shingle
//             of all its words; a text without words has no shingles.
//   hash      h = fmix32(murmur3_x86_32(shingle, seed 0)): the MurmurHash3 finalizer pre-mix of datasketch.
//   value k   min over shingles of (a[k] * h + b[k]) mod 2^32 (a[k] odd: a bijection); 0xFFFFFFFF when empty.
// Texts are read in their Python storage (1, 2 or 4 bytes per code point) without any copy, and streamed: memory
// per text is O(longest word + ngram words), whatever the text's size.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace seedcoder::minhash {

constexpr uint32_t kEmptyValue = 0xFFFFFFFFu;  // every value of a text without shingles (datasketch's empty sketch)

// A text as CPython stores it: `length` code points of `width` bytes each (1: Latin-1, 2: UCS-2, 4: UCS-4).
struct TextView {
  const void* data = nullptr;
  size_t length = 0;
  int width = 1;
};

uint32_t murmur3_32(const uint8_t* data, size_t length, uint32_t seed);
uint32_t fmix32(uint32_t h);

// The shingles of a text as byte strings, in order of appearance (repeats kept): for tests and inspection.
std::vector<std::string> shingles(const TextView& text, size_t ngram);

// One signature per text: out[i * num_perm + k]. a and b hold num_perm permutation parameters each.
void signatures(const TextView* texts, size_t count, size_t ngram, const uint32_t* a, const uint32_t* b,
                size_t num_perm, uint32_t* out);

// LSH banding (bands x rows of the first bands*rows values) + union-find. Rows whose values are all kEmptyValue are
// never candidates. With verify, a candidate pair is joined only if its estimated Jaccard (share of equal values
// over all num_perm) is >= threshold; the components are exactly those of the verified candidate pairs. out[i] =
// the lowest row index of row i's cluster.
void cluster(const uint32_t* signatures, size_t count, size_t num_perm, size_t bands, size_t rows, bool verify,
             double threshold, int64_t* out);

// SIMD path used by signatures(): "avx2" where the CPU has it (chosen at run time, no -march needed), else
// "generic". force_generic() is for tests that check both paths give the same bits.
const char* simd_path();
void force_generic(bool generic);

}  // namespace seedcoder::minhash
