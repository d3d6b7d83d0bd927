// Writes rows of a plan into a batch buffer: input_ids, labels, position_ids, loss_mask, cu_seqlens, max_seqlen.
//
// Conventions (seedcoder/data/loader.py documents them for users):
//  * A row is a list of segments (pieces of document streams) followed by padding up to seq_len. Every
//    segment and the padding (when there is any) are one varlen sequence each: cu_seqlens (int32, flattened
//    over the batch, starting at 0 and ending at rows * seq_len) marks them, position_ids restart at 0 in each,
//    max_seqlen is the longest.
//  * labels[i] = the stream's next token of the same document (also across a row end: a document cut by
//    concat mode still predicts its next token), -100 at a document's last token, on padding, and where the
//    shard's loss mask is 0 for the target token. loss_mask = labels != -100. Padding tokens are pad_id.
//  * FIM documents are transformed once per (epoch, entry) and cached per thread, so a long document cut
//    over consecutive rows is transformed once per thread. The transformed stream is made exactly as long as
//    the plan says (text + 4): extra tokens (a split inside a token re-encodes into several) are cut from the
//    end of the suffix S, then from the start of the prefix P (context only), and only when both are used up
//    from the end of the middle M; a shorter one is padded (never happens with apply_spm).
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "plan.h"

namespace seedcoder::loader {

enum class IndexType : uint32_t { kInt64 = 0, kInt32 = 1 };

// Where each output lives in one batch buffer (regions 64-byte aligned).
struct BatchLayout {
  uint32_t rows = 0, seq_len = 0;
  IndexType index_type = IndexType::kInt64;
  size_t input_ids = 0, labels = 0, position_ids = 0, row_epoch = 0, row_index = 0, cu_seqlens = 0, loss_mask = 0, bytes = 0;
  size_t index_size() const { return index_type == IndexType::kInt64 ? 8 : 4; }
  static BatchLayout make(uint32_t rows, uint32_t seq_len, IndexType index_type);
};

// FIM transform of one document (see fim.h apply_spm): returns false when it did not apply.
using FimTransform = std::function<bool(const uint32_t* tokens, size_t n, uint64_t epoch, uint64_t key, std::vector<uint32_t>& out)>;

struct PackerConfig {
  int64_t pad_id = 0;
  int64_t eos_id = -1;         // appended to documents that do not end with it (-1: nothing appended)
  FimTransform fim;            // empty: no FIM
  uint32_t fim_prefix_id = 0;  // to find where S ends and P starts in a FIM stream
  uint32_t fim_middle_id = 0;
  int64_t fim_eos_id = -1;
};

// Per-thread scratch.
struct PackContext {
  std::vector<Segment> segments;
  std::vector<uint32_t> widened;  // u16 documents as u32 for the FIM transform
  std::vector<uint32_t> fim_tokens;
  uint64_t fim_epoch = ~uint64_t{0};
  uint32_t fim_entry = ~uint32_t{0};
  uint64_t fim_valid = 0;          // tokens of fim_tokens that are real (the rest is padding)
};

// Sums over the rows written so far into one batch.
struct BatchCursor {
  uint8_t* buffer = nullptr;
  const BatchLayout* layout = nullptr;
  uint32_t segments = 0;  // cu_seqlens entries written after the leading 0
  uint32_t max_seqlen = 0;
};

// Writes plan row `row` into batch row `slot`; row < 0 writes a padding row (a finite run's last step).
void write_row(const Dataset& dataset, const KeptSet& kept, const Plan* plan, int64_t row, uint32_t slot, const PackerConfig& config,
               PackContext& context, BatchCursor& cursor);

}  // namespace seedcoder::loader
