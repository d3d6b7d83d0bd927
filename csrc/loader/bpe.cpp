// Byte-level BPE for fragments of one pre-token: vocabulary tables, the merge hash table and the encoder.
// See bpe.h for what the tables mean.
#include "bpe.h"

#include <algorithm>
#include <limits>
#include <stdexcept>
#include <tuple>

namespace seedcoder::fim {
namespace {

inline uint64_t pair_key(uint32_t left, uint32_t right) { return (uint64_t{left} << 32) | right; }

// Mixes all 64 bits of the pair key into the low bits used to index the power-of-two table (a plain
// multiply would leave the low bits depending on `right` alone and cluster the probes).
inline uint64_t pair_hash(uint64_t key) {
  key = (key ^ (key >> 31)) * 0x9E3779B97F4A7C15ull;
  return key ^ (key >> 32);
}

inline bool is_utf8_lead(unsigned char byte) { return (byte & 0xC0) != 0x80; }

}  // namespace

ByteLevelBPE::ByteLevelBPE(std::vector<std::string> id_to_bytes, const std::vector<std::pair<uint32_t, uint32_t>>& merges,
                           bool ignore_merges)
    : id_to_bytes_(std::move(id_to_bytes)), ignore_merges_(ignore_merges) {
  const size_t vocab = id_to_bytes_.size();
  if (vocab >= (size_t{1} << 32)) throw std::invalid_argument("ByteLevelBPE: vocabulary of 2^32 ids or more");

  // Base byte tokens: the lowest id whose bytes are that single byte.
  for (auto& id : byte_to_id_) id = -1;
  for (size_t id = 0; id < vocab; ++id) {
    const std::string& bytes = id_to_bytes_[id];
    if (bytes.size() == 1 && byte_to_id_[static_cast<unsigned char>(bytes[0])] < 0)
      byte_to_id_[static_cast<unsigned char>(bytes[0])] = static_cast<int64_t>(id);
  }

  // Merge results are found by their bytes; with duplicate bytes the lowest id wins (HF gives an added
  // token whose content is already in the vocabulary that vocabulary id, so duplicates are rare).
  std::unordered_map<std::string_view, uint32_t> id_by_bytes;
  id_by_bytes.reserve(vocab * 2);
  for (size_t id = 0; id < vocab; ++id) id_by_bytes.emplace(id_to_bytes_[id], static_cast<uint32_t>(id));

  size_t slots = 16;
  while (slots < merges.size() * 2) slots <<= 1;
  merge_slots_.assign(slots, MergeSlot{kEmptyKey, kNoMerge, 0});
  merge_slot_mask_ = slots - 1;
  std::vector<uint8_t> produced(vocab, 0);
  std::string merged_bytes;
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const auto [left, right] = merges[rank];
    if (left >= vocab || right >= vocab)
      throw std::invalid_argument("ByteLevelBPE: merge " + std::to_string(rank) + " refers to an id out of range (" +
                                  std::to_string(left) + ", " + std::to_string(right) + "), vocabulary size " +
                                  std::to_string(vocab));
    merged_bytes = id_to_bytes_[left];
    merged_bytes += id_to_bytes_[right];
    const auto found = id_by_bytes.find(merged_bytes);
    if (found == id_by_bytes.end())
      throw std::invalid_argument("ByteLevelBPE: the result of merge " + std::to_string(rank) + " (" + std::to_string(left) +
                                  ", " + std::to_string(right) + ") is not in the vocabulary");
    const uint64_t key = pair_key(left, right);
    uint64_t slot = pair_hash(key) & merge_slot_mask_;
    while (merge_slots_[slot].pair_key != kEmptyKey && merge_slots_[slot].pair_key != key) slot = (slot + 1) & merge_slot_mask_;
    if (merge_slots_[slot].pair_key == key) continue;  // a repeated pair keeps its first (lowest) rank
    merge_slots_[slot] = MergeSlot{key, static_cast<uint32_t>(rank), found->second};
    produced[found->second] = 1;
    ++merge_count_;
  }

  char_counts_.resize(vocab);
  atomic_.resize(vocab);
  for (size_t id = 0; id < vocab; ++id) {
    const std::string& bytes = id_to_bytes_[id];
    const bool is_base = bytes.size() == 1 && byte_to_id_[static_cast<unsigned char>(bytes[0])] == static_cast<int64_t>(id);
    atomic_[id] = !(is_base || produced[id]);
    size_t chars = 0;
    if (atomic_[id]) {
      chars = bytes.empty() ? 0 : 1;
    } else {
      for (unsigned char byte : bytes) chars += is_utf8_lead(byte);
    }
    if (chars > std::numeric_limits<uint16_t>::max())
      throw std::invalid_argument("ByteLevelBPE: token " + std::to_string(id) + " has more than 65535 characters");
    char_counts_[id] = static_cast<uint16_t>(chars);
    if (ignore_merges_ && !atomic_[id]) non_atomic_ids_by_bytes_.emplace(bytes, static_cast<uint32_t>(id));
  }
  if (std::all_of(char_counts_.begin(), char_counts_.end(), [](uint16_t chars) { return chars <= 255; }))
    narrow_char_counts_.assign(char_counts_.begin(), char_counts_.end());
}

const std::string& ByteLevelBPE::token_bytes(uint32_t id) const {
  if (id >= id_to_bytes_.size())
    throw std::out_of_range("token id " + std::to_string(id) + " out of range (vocabulary size " +
                            std::to_string(id_to_bytes_.size()) + ")");
  return id_to_bytes_[id];
}

size_t ByteLevelBPE::char_byte_offset(uint32_t id, uint32_t k) const {
  const std::string& bytes = token_bytes(id);
  if (k >= char_counts_[id])
    throw std::out_of_range("character " + std::to_string(k) + " out of range for token " + std::to_string(id) + " (" +
                            std::to_string(char_counts_[id]) + " characters)");
  if (atomic_[id]) return 0;
  uint32_t seen = 0;
  for (size_t pos = 0; pos < bytes.size(); ++pos) {
    if (is_utf8_lead(static_cast<unsigned char>(bytes[pos])) && seen++ == k) return pos;
  }
  throw std::logic_error("ByteLevelBPE: character table out of sync");  // unreachable: k < char count
}

void ByteLevelBPE::prefetch_merge(uint32_t left, uint32_t right) const {
  __builtin_prefetch(&merge_slots_[pair_hash(pair_key(left, right)) & merge_slot_mask_]);
}

std::pair<uint32_t, uint32_t> ByteLevelBPE::find_merge(uint32_t left, uint32_t right) const {
  const uint64_t key = pair_key(left, right);
  for (uint64_t slot = pair_hash(key) & merge_slot_mask_;; slot = (slot + 1) & merge_slot_mask_) {
    const MergeSlot& entry = merge_slots_[slot];
    if (entry.pair_key == key) return {entry.rank, entry.merged_id};
    if (entry.pair_key == kEmptyKey) return {kNoMerge, 0};
  }
}

void ByteLevelBPE::encode(std::string_view bytes, std::vector<uint32_t>& out) const {
  if (bytes.empty()) return;
  if (ignore_merges_) {
    const auto whole = non_atomic_ids_by_bytes_.find(std::string(bytes));
    if (whole != non_atomic_ids_by_bytes_.end()) {
      out.push_back(whole->second);
      return;
    }
  }
  // A linked list of symbols: symbols[i] is the token at slot i, next[i] the following live slot (n at the
  // end), ranks[i] / merged[i] describe the pair (i, next[i]). Fragments are short (a piece of one token),
  // so the arrays live on the stack; a merge unlinks one slot and looks up the two pairs it changed.
  constexpr size_t kInline = 64;
  uint32_t inline_buffer[4 * kInline];
  std::vector<uint32_t> heap_buffer;
  uint32_t* buffer = inline_buffer;
  const size_t n = bytes.size();
  if (n >= std::numeric_limits<uint32_t>::max()) throw std::invalid_argument("ByteLevelBPE: fragment of 4 GiB or more");
  if (n > kInline) {
    heap_buffer.resize(4 * n);
    buffer = heap_buffer.data();
  }
  uint32_t* symbols = buffer;
  uint32_t* next = buffer + n;
  uint32_t* ranks = buffer + 2 * n;
  uint32_t* merged = buffer + 3 * n;
  for (size_t i = 0; i < n; ++i) {
    const unsigned char byte = static_cast<unsigned char>(bytes[i]);
    if (byte_to_id_[byte] < 0) throw std::invalid_argument("ByteLevelBPE: byte " + std::to_string(byte) + " has no token");
    symbols[i] = static_cast<uint32_t>(byte_to_id_[byte]);
    next[i] = static_cast<uint32_t>(i + 1);
    if (i > 0) prefetch_merge(symbols[i - 1], symbols[i]);  // the table is large: overlap the cache misses
  }
  const uint32_t end = static_cast<uint32_t>(n);
  for (size_t i = 0; i + 1 < n; ++i) std::tie(ranks[i], merged[i]) = find_merge(symbols[i], symbols[i + 1]);
  ranks[n - 1] = kNoMerge;
  for (;;) {
    uint32_t best = 0, before_best = end;  // before_best: the slot linked to best (end when best is the head)
    for (uint32_t previous = 0, i = next[0]; i != end; previous = i, i = next[i]) {
      if (ranks[i] < ranks[best]) best = i, before_best = previous;  // strict <: leftmost wins ties
    }
    if (ranks[best] == kNoMerge) break;
    const uint32_t absorbed = next[best];
    symbols[best] = merged[best];
    next[best] = next[absorbed];
    ranks[best] = kNoMerge;
    if (next[best] != end) prefetch_merge(symbols[best], symbols[next[best]]);
    if (before_best != end) prefetch_merge(symbols[before_best], symbols[best]);
    if (next[best] != end) std::tie(ranks[best], merged[best]) = find_merge(symbols[best], symbols[next[best]]);
    if (before_best != end) std::tie(ranks[before_best], merged[before_best]) = find_merge(symbols[before_best], symbols[best]);
  }
  for (uint32_t i = 0; i != end; i = next[i]) out.push_back(symbols[i]);
}

}  // namespace seedcoder::fim
