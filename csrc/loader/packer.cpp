// Row writer: document stream pieces -> input_ids / labels / position_ids / loss_mask / cu_seqlens (see packer.h).
#include "packer.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>

namespace seedcoder::loader {
namespace {

constexpr int64_t kIgnoreIndex = -100;

size_t align64(size_t value) { return (value + 63) & ~size_t{63}; }

struct RowPointers {
  void* input;
  void* labels;
  void* positions;
  uint8_t* loss_mask;
};

// `length` tokens of a stream from `offset`. The stream is tokens[0, n) followed by stream_length - n tail tokens
// (an appended <eos>, which is a label, or padding, which is not).
template <typename TokenT, typename IndexT>
void write_piece(const TokenT* tokens, uint64_t n, const uint8_t* mask, uint64_t stream_length, int64_t tail_token, bool tail_is_label,
                 uint64_t offset, uint32_t length, IndexT* input, IndexT* labels, IndexT* positions, uint8_t* loss_mask) {
  // The bulk: input and target both inside tokens[0, n). Separate simple loops so each vectorizes.
  const uint32_t bulk = offset + 1 < n ? static_cast<uint32_t>(std::min<uint64_t>(length, n - 1 - offset)) : 0;
  const TokenT* source = tokens + offset;
  for (uint32_t j = 0; j < bulk; ++j) input[j] = static_cast<IndexT>(source[j]);
  for (uint32_t j = 0; j < bulk; ++j) labels[j] = static_cast<IndexT>(source[j + 1]);
  for (uint32_t j = 0; j < length; ++j) positions[j] = static_cast<IndexT>(j);
  if (mask) {
    const uint8_t* target_mask = mask + offset + 1;
    for (uint32_t j = 0; j < bulk; ++j) labels[j] = target_mask[j] ? labels[j] : static_cast<IndexT>(kIgnoreIndex);
    std::memcpy(loss_mask, target_mask, bulk);
  } else {
    std::memset(loss_mask, 1, bulk);
  }
  for (uint32_t j = bulk; j < length; ++j) {  // at most a few tokens: the document's end
    const uint64_t i = offset + j, next = i + 1;
    input[j] = static_cast<IndexT>(i < n ? static_cast<int64_t>(tokens[i]) : tail_token);
    int64_t label = kIgnoreIndex;
    if (next < n)
      label = (!mask || mask[next]) ? static_cast<int64_t>(tokens[next]) : kIgnoreIndex;
    else if (next < stream_length && tail_is_label)
      label = tail_token;
    labels[j] = static_cast<IndexT>(label);
    loss_mask[j] = label != kIgnoreIndex;
  }
}

template <typename IndexT>
void write_padding(int64_t pad_id, uint32_t length, IndexT* input, IndexT* labels, IndexT* positions, uint8_t* loss_mask) {
  for (uint32_t j = 0; j < length; ++j) {
    input[j] = static_cast<IndexT>(pad_id);
    labels[j] = static_cast<IndexT>(kIgnoreIndex);
    positions[j] = static_cast<IndexT>(j);
  }
  std::memset(loss_mask, 0, length);
}

template <typename IndexT>
void write_piece_dispatch(const void* tokens, uint32_t width, uint64_t n, const uint8_t* mask, uint64_t stream_length, int64_t tail_token,
                          bool tail_is_label, uint64_t offset, uint32_t length, const RowPointers& out, uint32_t at) {
  auto* input = static_cast<IndexT*>(out.input) + at;
  auto* labels = static_cast<IndexT*>(out.labels) + at;
  auto* positions = static_cast<IndexT*>(out.positions) + at;
  if (width == 2)
    write_piece(static_cast<const uint16_t*>(tokens), n, mask, stream_length, tail_token, tail_is_label, offset, length, input, labels,
                positions, out.loss_mask + at);
  else
    write_piece(static_cast<const uint32_t*>(tokens), n, mask, stream_length, tail_token, tail_is_label, offset, length, input, labels,
                positions, out.loss_mask + at);
}

// Makes context.fim_tokens the FIM stream of `entry`, exactly plan.stream_length(entry) long.
void prepare_fim(const Dataset& dataset, const Plan& plan, uint32_t entry, const PackerConfig& config, PackContext& context) {
  if (context.fim_epoch == plan.epoch && context.fim_entry == entry) return;
  const PlanEntry& planned = plan.entries[entry];
  const auto location = dataset.locate(planned.document);
  const Shard& shard = *location.shard;
  const uint64_t begin = shard.document_begin(location.document), n = shard.document_length(location.document);
  const uint32_t* tokens;
  if (shard.token_width() == 4) {
    tokens = reinterpret_cast<const uint32_t*>(shard.token_bytes()) + begin;
  } else {
    const auto* narrow = reinterpret_cast<const uint16_t*>(shard.token_bytes()) + begin;
    context.widened.assign(narrow, narrow + n);
    tokens = context.widened.data();
  }
  auto& out = context.fim_tokens;
  out.clear();
  const uint64_t key = (uint64_t{planned.occurrence} << 32) | planned.document;
  const bool applied = config.fim(tokens, n, plan.epoch, key, out);
  if (!applied) {  // the plan expected FIM: keep the document as a plain one (padding fills the difference)
    out.assign(tokens, tokens + n);
    if (config.fim_eos_id >= 0 && out.back() != static_cast<uint64_t>(config.fim_eos_id)) out.push_back(static_cast<uint32_t>(config.fim_eos_id));
  }
  const uint64_t target = plan.stream_length(entry);
  if (out.size() > target) {
    uint64_t excess = out.size() - target;
    if (applied) {
      // out = <fim_suffix> S <fim_prefix> P <fim_middle> M <eos>. Context goes first: the end of S (the
      // document's last tokens), then the start of P (its first tokens); M, what the model learns to write, last.
      auto prefix = std::find(out.begin() + 1, out.end(), config.fim_prefix_id);
      const uint64_t suffix_cut = std::min<uint64_t>(excess, static_cast<uint64_t>(prefix - out.begin()) - 1);
      prefix = out.erase(prefix - static_cast<std::ptrdiff_t>(suffix_cut), prefix);
      excess -= suffix_cut;
      if (excess && prefix != out.end()) {
        const auto middle = std::find(prefix + 1, out.end(), config.fim_middle_id);
        const uint64_t prefix_cut = std::min<uint64_t>(excess, static_cast<uint64_t>(middle - prefix) - 1);
        out.erase(prefix + 1, prefix + 1 + static_cast<std::ptrdiff_t>(prefix_cut));
        excess -= prefix_cut;
      }
    }
    if (excess)  // nothing else left to take from: shorten what precedes the final <eos>
      out.erase(out.end() - 1 - static_cast<std::ptrdiff_t>(excess), out.end() - 1);
  }
  context.fim_valid = out.size();
  out.resize(target, static_cast<uint32_t>(config.pad_id));
  context.fim_epoch = plan.epoch;
  context.fim_entry = entry;
}

}  // namespace

BatchLayout BatchLayout::make(uint32_t rows, uint32_t seq_len, IndexType index_type) {
  BatchLayout layout;
  layout.rows = rows;
  layout.seq_len = seq_len;
  layout.index_type = index_type;
  const size_t tokens = size_t{rows} * seq_len;
  size_t at = 0;
  auto take = [&](size_t bytes) {
    const size_t here = at;
    at = align64(at + bytes);
    return here;
  };
  layout.input_ids = take(tokens * layout.index_size());
  layout.labels = take(tokens * layout.index_size());
  layout.position_ids = take(tokens * layout.index_size());
  layout.row_epoch = take(rows * 8);
  layout.row_index = take(rows * 8);
  layout.cu_seqlens = take((tokens + 1) * 4);
  layout.loss_mask = take(tokens);
  layout.bytes = at;
  return layout;
}

void write_row(const Dataset& dataset, const KeptSet& kept, const Plan* plan, int64_t row, uint32_t slot, const PackerConfig& config,
               PackContext& context, BatchCursor& cursor) {
  (void)kept;
  const BatchLayout& layout = *cursor.layout;
  const uint32_t seq_len = layout.seq_len;
  if (slot >= layout.rows) throw std::out_of_range("batch row out of range");
  uint8_t* buffer = cursor.buffer;
  const size_t first = size_t{slot} * seq_len, isz = layout.index_size();
  RowPointers out{buffer + layout.input_ids + first * isz, buffer + layout.labels + first * isz, buffer + layout.position_ids + first * isz,
                  buffer + layout.loss_mask + first};
  auto* cu_seqlens = reinterpret_cast<int32_t*>(buffer + layout.cu_seqlens);
  if (slot == 0) cu_seqlens[0] = 0, cursor.segments = 0, cursor.max_seqlen = 0;
  auto close_segment = [&](uint32_t end, uint32_t length) {
    cu_seqlens[++cursor.segments] = static_cast<int32_t>(first + end);
    cursor.max_seqlen = std::max(cursor.max_seqlen, length);
  };

  auto* row_epoch = reinterpret_cast<int64_t*>(buffer + layout.row_epoch);
  auto* row_index = reinterpret_cast<int64_t*>(buffer + layout.row_index);
  uint32_t at = 0;
  if (row >= 0 && plan) {
    row_epoch[slot] = static_cast<int64_t>(plan->epoch);
    row_index[slot] = row;
    row_segments(*plan, static_cast<uint64_t>(row), context.segments);
    for (const Segment& segment : context.segments) {
      const uint64_t stream_length = plan->stream_length(segment.entry);
      if (plan->fim[segment.entry]) {
        prepare_fim(dataset, *plan, segment.entry, config, context);
        if (isz == 8)
          write_piece_dispatch<int64_t>(context.fim_tokens.data(), 4, context.fim_valid, nullptr, stream_length, config.pad_id, false,
                                        segment.offset, segment.length, out, at);
        else
          write_piece_dispatch<int32_t>(context.fim_tokens.data(), 4, context.fim_valid, nullptr, stream_length, config.pad_id, false,
                                        segment.offset, segment.length, out, at);
      } else {
        const auto location = dataset.locate(plan->entries[segment.entry].document);
        const Shard& shard = *location.shard;
        const uint64_t begin = shard.document_begin(location.document), n = shard.document_length(location.document);
        const void* tokens = shard.token_bytes() + begin * shard.token_width();
        const uint8_t* mask = shard.loss_mask() ? shard.loss_mask() + begin : nullptr;
        if (isz == 8)
          write_piece_dispatch<int64_t>(tokens, shard.token_width(), n, mask, stream_length, config.eos_id, true, segment.offset,
                                        segment.length, out, at);
        else
          write_piece_dispatch<int32_t>(tokens, shard.token_width(), n, mask, stream_length, config.eos_id, true, segment.offset,
                                        segment.length, out, at);
      }
      at += segment.length;
      close_segment(at, segment.length);
    }
  } else {
    row_epoch[slot] = -1;
    row_index[slot] = -1;
  }
  if (at < seq_len) {
    const uint32_t length = seq_len - at;
    if (isz == 8)
      write_padding(config.pad_id, length, static_cast<int64_t*>(out.input) + at, static_cast<int64_t*>(out.labels) + at,
                    static_cast<int64_t*>(out.positions) + at, out.loss_mask + at);
    else
      write_padding(config.pad_id, length, static_cast<int32_t*>(out.input) + at, static_cast<int32_t*>(out.labels) + at,
                    static_cast<int32_t*>(out.positions) + at, out.loss_mask + at);
    close_segment(seq_len, length);
  }
}

}  // namespace seedcoder::loader
