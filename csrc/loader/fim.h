// Fill-in-the-middle (FIM) in SPM order, as Seed-Coder pretrains with it:
//
//     <fim_suffix> S <fim_prefix> P <fim_middle> M <eos>        (document = P M S)
//
// * Decision and split points are a pure function of (seed, epoch, doc_id): counter-based splitmix64
//   hashing, no RNG state, so a resumed run makes the same samples. FIM is applied with probability
//   `rate` (Bernoulli); the two split points are independent uniform character positions in [0, C]
//   (C = characters in the document), sorted: P = [0, a), M = [a, b), S = [b, C).
// * Characters are UTF-8 code points of the document's bytes: a character starts at every byte that is
//   not a continuation byte (10xxxxxx), so a cut never falls inside a multi-byte character. Invalid UTF-8
//   degrades safely with the same rule: stray continuation bytes stay glued to the character before them
//   (at the very start of a document, to the prefix); nothing is dropped or duplicated.
//   Atomic tokens (special tokens, see ByteLevelBPE::is_atomic) count as one character and are never cut.
// * A token that a split point falls inside is cut into its two byte strings and each is re-encoded with
//   the byte-level BPE (a token whose inside holds both split points is cut in three). Every other token is
//   copied untouched.
// * End of document: a trailing <eos> (tokens[n-1] == eos_id) is not document text: it is dropped before
//   splitting, and the FIM sample always ends with exactly one <eos> (the SPM terminator). So the loader
//   appends its own <eos> only to documents that did not get FIM (apply_spm returned false).
// * Token-boundary mode (FimSpec::token_level): split points are uniform token positions in [0, n]
//   instead; no character table and no re-encoding, so it is just three copies. A faster, coarser option.
//
// Cost of a FIM document: one pass over its tokens summing a table lookup (characters per token, one byte
// per id) that also records the running count every 256 tokens, so finding a split token scans at most 256
// tokens; then three memcpy-like copies and BPE encodes of the pieces of the (at most two) cut tokens.
// Documents without FIM cost nothing here (O(1) decision). Throughput: tests/test_bpe_fim.cpp --bench.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "bpe.h"

namespace seedcoder::fim {

struct FimSpec {
  uint32_t suffix_id, prefix_id, middle_id, eos_id;
  double rate;               // probability of applying FIM to a document, in [0, 1]
  bool token_level = false;  // split at uniform token positions instead of character positions
};

// Where apply_spm would cut a document. Positions are in characters (token_level: in tokens) of the
// document without its trailing eos: prefix = [0, middle_begin), middle = [middle_begin, middle_end),
// suffix = [middle_end, length).
struct SpmPlan {
  bool apply = false;
  uint64_t length = 0;
  uint64_t middle_begin = 0;
  uint64_t middle_end = 0;
};

// Throws std::invalid_argument when a marker id is not < bpe.vocab_size() or rate is not in [0, 1].
void check_fim_spec(const FimSpec& spec, const ByteLevelBPE& bpe);

// The Bernoulli(rate) decision alone: O(1), touches no token. apply_spm makes the same decision.
bool fim_decision(double rate, uint64_t seed, uint64_t epoch, uint64_t doc_id);

// The plan apply_spm follows (for tests and tools). Throws like apply_spm.
SpmPlan plan_spm(const uint32_t* tokens, size_t n, const ByteLevelBPE& bpe, const FimSpec& spec, uint64_t seed,
                 uint64_t epoch, uint64_t doc_id);

// When the decision for (seed, epoch, doc_id) is FIM: appends the SPM sample of tokens[0, n) to `out`
// and returns true. Otherwise returns false and leaves `out` as it was (the caller copies the document
// itself). Throws std::invalid_argument for a bad spec, a null `tokens` with n > 0, or (FIM documents
// only: others are not read) a token id >= bpe.vocab_size(); `out` is then unchanged. `tokens` must not
// point into `out`. The sample has n' + 4 tokens plus what cutting adds (a token cut in two re-encodes to
// two or more tokens; usually 0 to 4 extra), n' = n without a trailing eos. Thread-safe: const tables only.
bool apply_spm(const uint32_t* tokens, size_t n, const ByteLevelBPE& bpe, const FimSpec& spec, uint64_t seed,
               uint64_t epoch, uint64_t doc_id, std::vector<uint32_t>& out);

}  // namespace seedcoder::fim
