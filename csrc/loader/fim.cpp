// Fill-in-the-middle in SPM order: the counter-based decision and split points, locating the split
// tokens with the per-token character table, and assembling the sample. Semantics are in fim.h.
#include "fim.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>
#include <string_view>

namespace seedcoder::fim {
namespace {

constexpr uint64_t kGolden = 0x9E3779B97F4A7C15ull;
constexpr uint64_t kFimDomain = 0x46494D2D53504D31ull;  // "FIM-SPM1": keeps FIM draws apart from other uses of the seed

inline uint64_t splitmix64(uint64_t x) {
  x += kGolden;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// One key per (seed, epoch, document); draw k of that document is splitmix64(key + k * odd constant).
inline uint64_t document_key(uint64_t seed, uint64_t epoch, uint64_t doc_id) {
  return splitmix64(splitmix64(splitmix64(seed ^ kFimDomain) ^ epoch) ^ doc_id);
}
inline uint64_t draw(uint64_t key, uint64_t k) { return splitmix64(key + k * 0xD1B54A32D192ED03ull); }

enum Draw : uint64_t { kDecision = 0, kFirstSplit = 1, kSecondSplit = 2 };

inline bool decide(uint64_t key, double rate) {
  const double uniform = static_cast<double>(draw(key, kDecision) >> 11) * 0x1p-53;  // [0, 1)
  return uniform < rate;  // rate 0: never; rate 1: always
}

// Uniform integer in [0, length] by multiply-shift (bias below length / 2^64).
inline uint64_t uniform_position(uint64_t key, uint64_t k, uint64_t length) {
  return static_cast<uint64_t>((static_cast<unsigned __int128>(draw(key, k)) * (static_cast<unsigned __int128>(length) + 1)) >> 64);
}

inline size_t strip_trailing_eos(const uint32_t* tokens, size_t n, uint32_t eos_id) {
  return (n > 0 && tokens[n - 1] == eos_id) ? n - 1 : n;
}

[[noreturn]] void throw_bad_token(const uint32_t* tokens, size_t n, uint32_t vocab) {
  for (size_t i = 0; i < n; ++i) {
    if (tokens[i] >= vocab)
      throw std::invalid_argument("FIM: token " + std::to_string(i) + " of the document has id " + std::to_string(tokens[i]) +
                                  ", not < vocabulary size " + std::to_string(vocab));
  }
  throw std::logic_error("FIM: bad token vanished");
}

// Tokens per block of the character index: locating a split scans one block, not the document.
constexpr size_t kIndexBlock = 256;

// Characters in tokens[0, n), checking every id, and the index block_starts[k] = characters before token
// k * kIndexBlock. Branch-free: an out-of-range id reads entry 0 and sets `bad`. Count is the table's type.
template <typename Count>
uint64_t count_chars(const uint32_t* tokens, size_t n, const Count* counts, uint32_t vocab, std::vector<uint64_t>& block_starts) {
  block_starts.clear();
  uint64_t total = 0;
  uint32_t bad = 0;
  for (size_t block = 0; block < n; block += kIndexBlock) {
    block_starts.push_back(total);
    const uint32_t* in = tokens + block;
    const size_t size = std::min(kIndexBlock, n - block);
    uint32_t sum0 = 0, sum1 = 0, sum2 = 0, sum3 = 0;  // a block sums to < 2^32 (256 tokens of < 2^16 characters)
    size_t i = 0;
    for (; i + 4 <= size; i += 4) {
      const uint32_t t0 = in[i], t1 = in[i + 1], t2 = in[i + 2], t3 = in[i + 3];
      const bool ok0 = t0 < vocab, ok1 = t1 < vocab, ok2 = t2 < vocab, ok3 = t3 < vocab;
      bad |= !ok0 | !ok1 | !ok2 | !ok3;
      sum0 += counts[ok0 ? t0 : 0];
      sum1 += counts[ok1 ? t1 : 0];
      sum2 += counts[ok2 ? t2 : 0];
      sum3 += counts[ok3 ? t3 : 0];
    }
    for (; i < size; ++i) {
      const bool ok = in[i] < vocab;
      bad |= !ok;
      sum0 += counts[ok ? in[i] : 0];
    }
    total += uint64_t{sum0} + sum1 + sum2 + sum3;
  }
  if (bad) throw_bad_token(tokens, n, vocab);
  return total;
}

uint64_t count_chars(const uint32_t* tokens, size_t n, const ByteLevelBPE& bpe, std::vector<uint64_t>& block_starts) {
  if (bpe.vocab_size() == 0) {  // no table to read: every id is bad
    if (n > 0) throw_bad_token(tokens, n, 0);
    block_starts.clear();
    return 0;
  }
  if (const uint8_t* narrow = bpe.narrow_char_counts()) return count_chars(tokens, n, narrow, bpe.vocab_size(), block_starts);
  return count_chars(tokens, n, bpe.char_counts(), bpe.vocab_size(), block_starts);
}

void check_token_ids(const uint32_t* tokens, size_t n, const ByteLevelBPE& bpe) {
  uint32_t max_id = 0;
  for (size_t i = 0; i < n; ++i) max_id = std::max(max_id, tokens[i]);  // vectorizes
  if (n > 0 && max_id >= bpe.vocab_size()) throw_bad_token(tokens, n, bpe.vocab_size());
}

// A split point: the cut is before byte `offset` of token `token` (offset < that token's length), or the
// end of the document when token == n.
struct Cut {
  size_t token;
  size_t offset;
};

// The cut before character `position` (< total characters): the index gives the block, a scan the token.
Cut locate_char(const uint32_t* tokens, size_t n, const ByteLevelBPE& bpe, const std::vector<uint64_t>& block_starts,
                uint64_t position) {
  // Last block starting at or before `position`: the character lies in it (the next one starts after it).
  const size_t block = static_cast<size_t>(std::upper_bound(block_starts.begin(), block_starts.end(), position) - block_starts.begin()) - 1;
  const uint16_t* counts = bpe.char_counts();
  size_t i = block * kIndexBlock;
  uint64_t before = block_starts[block];
  while (i < n && before + counts[tokens[i]] <= position) before += counts[tokens[i++]];
  if (i >= n) throw std::logic_error("FIM: character index out of sync");  // unreachable: position < total
  return Cut{i, bpe.char_byte_offset(tokens[i], static_cast<uint32_t>(position - before))};
}

// Appends the tokens for the bytes between two cuts (from <= to): copies of whole tokens, BPE for pieces.
void emit_between(const uint32_t* tokens, size_t n, const ByteLevelBPE& bpe, Cut from, Cut to, std::vector<uint32_t>& out) {
  if (from.token == to.token) {
    if (from.token < n && to.offset > from.offset) {
      const std::string& bytes = bpe.token_bytes(tokens[from.token]);
      bpe.encode(std::string_view(bytes).substr(from.offset, to.offset - from.offset), out);
    }
    return;
  }
  size_t first_whole = from.token;
  if (from.offset > 0) {
    bpe.encode(std::string_view(bpe.token_bytes(tokens[from.token])).substr(from.offset), out);
    ++first_whole;
  }
  out.insert(out.end(), tokens + first_whole, tokens + to.token);
  if (to.token < n && to.offset > 0) bpe.encode(std::string_view(bpe.token_bytes(tokens[to.token])).substr(0, to.offset), out);
}

struct Split {
  SpmPlan plan;
  Cut middle_begin, middle_end;
};

// Decision and cuts for a document (tokens already without the trailing eos).
Split split_document(const uint32_t* tokens, size_t n, const ByteLevelBPE& bpe, const FimSpec& spec, uint64_t key) {
  Split split;
  thread_local std::vector<uint64_t> block_starts;  // reused: no allocation per document
  if (spec.token_level) {
    check_token_ids(tokens, n, bpe);
    split.plan.length = n;
  } else {
    split.plan.length = count_chars(tokens, n, bpe, block_starts);
  }
  uint64_t first = uniform_position(key, kFirstSplit, split.plan.length);
  uint64_t second = uniform_position(key, kSecondSplit, split.plan.length);
  if (first > second) std::swap(first, second);
  split.plan.apply = true;
  split.plan.middle_begin = first;
  split.plan.middle_end = second;
  if (spec.token_level) {
    split.middle_begin = Cut{first, 0};
    split.middle_end = Cut{second, 0};
    return split;
  }
  const uint64_t total = split.plan.length;
  split.middle_begin = first < total ? locate_char(tokens, n, bpe, block_starts, first) : Cut{n, 0};
  split.middle_end = second < total ? locate_char(tokens, n, bpe, block_starts, second) : Cut{n, 0};
  return split;
}

}  // namespace

void check_fim_spec(const FimSpec& spec, const ByteLevelBPE& bpe) {
  const uint32_t vocab = bpe.vocab_size();
  const std::pair<const char*, uint32_t> markers[] = {
      {"suffix_id", spec.suffix_id}, {"prefix_id", spec.prefix_id}, {"middle_id", spec.middle_id}, {"eos_id", spec.eos_id}};
  for (const auto& [name, id] : markers) {
    if (id >= vocab)
      throw std::invalid_argument(std::string("FimSpec.") + name + " = " + std::to_string(id) + " is not < vocabulary size " +
                                  std::to_string(vocab));
  }
  if (!(spec.rate >= 0.0 && spec.rate <= 1.0))  // also rejects NaN
    throw std::invalid_argument("FimSpec.rate = " + std::to_string(spec.rate) + " is not in [0, 1]");
}

bool fim_decision(double rate, uint64_t seed, uint64_t epoch, uint64_t doc_id) {
  return decide(document_key(seed, epoch, doc_id), rate);
}

SpmPlan plan_spm(const uint32_t* tokens, size_t n, const ByteLevelBPE& bpe, const FimSpec& spec, uint64_t seed,
                 uint64_t epoch, uint64_t doc_id) {
  check_fim_spec(spec, bpe);
  if (tokens == nullptr && n > 0) throw std::invalid_argument("FIM: null token pointer with a non-empty document");
  const uint64_t key = document_key(seed, epoch, doc_id);
  if (!decide(key, spec.rate)) return SpmPlan{};
  return split_document(tokens, strip_trailing_eos(tokens, n, spec.eos_id), bpe, spec, key).plan;
}

bool apply_spm(const uint32_t* tokens, size_t n, const ByteLevelBPE& bpe, const FimSpec& spec, uint64_t seed,
               uint64_t epoch, uint64_t doc_id, std::vector<uint32_t>& out) {
  check_fim_spec(spec, bpe);
  if (tokens == nullptr && n > 0) throw std::invalid_argument("FIM: null token pointer with a non-empty document");
  const uint64_t key = document_key(seed, epoch, doc_id);
  if (!decide(key, spec.rate)) return false;
  n = strip_trailing_eos(tokens, n, spec.eos_id);
  const Split split = split_document(tokens, n, bpe, spec, key);  // validates every id before `out` changes

  const size_t old_size = out.size();
  try {
    const size_t needed = old_size + n + 8;  // 4 markers + a few extra tokens from cutting tokens in pieces
    if (out.capacity() < needed) out.reserve(std::max(needed, 2 * out.capacity()));  // keep growth geometric
    const Cut start{0, 0}, end{n, 0};
    out.push_back(spec.suffix_id);
    emit_between(tokens, n, bpe, split.middle_end, end, out);
    out.push_back(spec.prefix_id);
    emit_between(tokens, n, bpe, start, split.middle_begin, out);
    out.push_back(spec.middle_id);
    emit_between(tokens, n, bpe, split.middle_begin, split.middle_end, out);
    out.push_back(spec.eos_id);
  } catch (...) {
    out.resize(old_size);  // e.g. a byte without a token: leave `out` as it was
    throw;
  }
  return true;
}

}  // namespace seedcoder::fim
