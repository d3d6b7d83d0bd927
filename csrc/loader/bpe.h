// Byte-level BPE encoder for fragments of a single pre-token.
//
// Fill-in-the-middle cuts a document at character positions; the (at most two) tokens that a cut falls
// inside are re-encoded from their bytes here. A token's bytes never span a pre-token boundary, so a
// fragment of one is a fragment of one pre-token and needs no regex pre-tokenizer: plain BPE over its
// bytes (start from one token per byte, merge the lowest-rank adjacent pair, leftmost first, until no
// pair has a merge) gives what the Hugging Face `tokenizers` BPE model gives for that pre-token.
//
// The vocabulary comes from seedcoder/data/tokenizer_tables.py: the bytes of every id (special tokens:
// their UTF-8 content) and the merges in rank order as (left id, right id) pairs. Besides encoding, the
// class keeps the per-token tables FIM needs to find character positions fast: the number of characters
// in each token and whether the token is "atomic" (see is_atomic).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace seedcoder::fim {

class ByteLevelBPE {
 public:
  // id_to_bytes[id] = the bytes token `id` stands for ("" for an unused id); merges[rank] = (left, right),
  // whose result is the id whose bytes are bytes(left) + bytes(right). ignore_merges mirrors the HF BPE
  // option of that name (a fragment that is itself a vocabulary token is emitted as that token).
  // Throws std::invalid_argument on an id out of range, a merge whose result is not in the vocabulary,
  // or a vocabulary of 2^32 ids or more.
  ByteLevelBPE(std::vector<std::string> id_to_bytes, const std::vector<std::pair<uint32_t, uint32_t>>& merges,
               bool ignore_merges = false);

  // Appends the BPE encoding of `bytes` (which lie within one pre-token) to `out`. Throws
  // std::invalid_argument when a byte has no single-byte token in the vocabulary.
  void encode(std::string_view bytes, std::vector<uint32_t>& out) const;

  // The bytes of token `id`; throws std::out_of_range when id >= vocab_size().
  const std::string& token_bytes(uint32_t id) const;

  uint32_t vocab_size() const { return static_cast<uint32_t>(id_to_bytes_.size()); }
  size_t merge_count() const { return merge_count_; }
  bool ignore_merges() const { return ignore_merges_; }

  // Atomic tokens are those BPE never produces: neither a base byte token nor the result of a merge
  // (special / added tokens such as <eos>, and unused ids). FIM never cuts inside one, so each counts as
  // one character (zero when it has no bytes).
  bool is_atomic(uint32_t id) const { return atomic_.at(id) != 0; }

  // Characters in each token, indexed by id: UTF-8 lead bytes (every byte that is not 10xxxxxx), or
  // 1 for an atomic token. Unchecked table for hot loops: index it only with ids < vocab_size().
  const uint16_t* char_counts() const { return char_counts_.data(); }
  // The same table in one byte per id (half the cache footprint), or nullptr when a token has more than
  // 255 characters.
  const uint8_t* narrow_char_counts() const { return narrow_char_counts_.empty() ? nullptr : narrow_char_counts_.data(); }

  // Byte offset in token `id` where its character `k` (0 <= k < char count) starts. Throws on bad input.
  size_t char_byte_offset(uint32_t id, uint32_t k) const;

 private:
  struct MergeSlot {
    uint64_t pair_key;  // (left << 32) | right; kEmptyKey when the slot is free
    uint32_t rank;
    uint32_t merged_id;
  };
  static constexpr uint64_t kEmptyKey = ~uint64_t{0};
  static constexpr uint32_t kNoMerge = ~uint32_t{0};

  // Rank of merging (left, right) and the id it makes; rank kNoMerge when the pair has no merge.
  std::pair<uint32_t, uint32_t> find_merge(uint32_t left, uint32_t right) const;
  void prefetch_merge(uint32_t left, uint32_t right) const;

  std::vector<std::string> id_to_bytes_;
  std::vector<uint16_t> char_counts_;
  std::vector<uint8_t> narrow_char_counts_;
  std::vector<uint8_t> atomic_;
  int64_t byte_to_id_[256];
  std::vector<MergeSlot> merge_slots_;  // open addressing, linear probing, power-of-two size
  uint64_t merge_slot_mask_ = 0;
  size_t merge_count_ = 0;
  bool ignore_merges_ = false;
  std::unordered_map<std::string, uint32_t> non_atomic_ids_by_bytes_;  // only with ignore_merges; owns its keys so copies stay valid
};

}  // namespace seedcoder::fim
