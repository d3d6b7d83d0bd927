// The sampling plan of one epoch: which documents, in which order, and how they are cut into rows of seq_len
// tokens. A pure function of (dataset, config, epoch); see seedcoder/data/loader.py for the full contract.
//
//  * select_documents (once per loader): the kept set. Each document goes to the most specific mixture group
//    that matches it (source+language > language > source > "*"); no match or weight 0 drops it. Then the
//    score policy: score >= min_score, then the lowest floor(p * kept) scores are dropped (ties: lower
//    document id dropped first).
//  * build_plan (once per epoch): documents are emitted until the epoch's token budget is met (default: the
//    kept set's stream tokens). Groups are interleaved by largest error on tokens (Megatron's blending rule,
//    counted in tokens): the next document comes from the group g maximizing w_g * T - t_g. Within a group,
//    plain policy walks a seeded permutation and starts a fresh permutation when the group runs out (pass
//    p + 1); score-weighted policy draws with replacement with p(doc) ∝ exp(score / T) (alias table).
//    With one group and no weighting, every kept document appears exactly once per epoch.
//  * Stream of a document: its stored tokens, plus <eos> when eos_id >= 0 and it does not end with it; a
//    document FIM selects (fim_select) is <fim_suffix> S <fim_prefix> P <fim_middle> M <eos>, counted here as
//    text tokens + 4 (the packer fixes the exact length to that; see packer.h).
//  * Rows: concat mode cuts the concatenated stream every seq_len tokens (last row padded); best-fit mode
//    splits documents longer than seq_len into seq_len chunks and packs each window of `best_fit_window`
//    chunks by best-fit decreasing (no chunk is cut), then shuffles that window's rows.
#pragma once

#include <cstdint>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "shard.h"

namespace seedcoder::loader {

enum class PackMode : uint32_t { kConcat = 0, kBestFit = 1 };

struct MixtureGroup {
  std::string name;       // as the user wrote it, for messages
  int32_t source = -1;    // -1: any
  int32_t language = -1;  // -1: any
  double weight = 0;
};

struct PlanConfig {
  uint64_t seed = 0;
  uint32_t seq_len = 0;
  PackMode mode = PackMode::kConcat;
  uint32_t best_fit_window = 8192;  // chunks per best-fit window
  std::vector<MixtureGroup> mixture;  // empty: one group holding every document
  double min_score = -std::numeric_limits<double>::infinity();
  double drop_bottom_fraction = 0;   // in [0, 1)
  double score_temperature = 0;      // > 0: score-weighted sampling with replacement
  uint64_t tokens_per_epoch = 0;     // 0: the kept set's stream tokens
  int64_t eos_id = -1;               // >= 0: append <eos> to documents that do not end with it
  // FIM: the decision for (epoch, key) with key = (occurrence << 32) | document; empty = no FIM. Only documents
  // without REPO_LEVEL and HAS_LOSS_MASK flags are asked.
  std::function<bool(uint64_t epoch, uint64_t key)> fim_select;
  int64_t fim_eos_id = -1;           // the FIM terminator: a trailing one is not text
};

// Documents kept by the mixture and the score policy, per group (epoch-independent).
struct KeptSet {
  struct Group {
    std::string name;
    double weight = 0;                    // normalized over the kept groups
    std::vector<uint32_t> documents;      // global ids, ascending
    uint64_t stream_tokens = 0;
    std::vector<double> alias_probability;  // score-weighted sampling only
    std::vector<uint32_t> alias_index;
  };
  std::vector<Group> groups;
  std::vector<uint32_t> stored_length;  // per global document: token count in the shard (0: not kept)
  std::vector<uint8_t> traits;          // per global document: kEndsWithEos | kFimEligible
  uint64_t document_count = 0, stream_tokens = 0;
  static constexpr uint8_t kEndsWithEos = 1, kFimEligible = 2, kEndsWithFimEos = 4;

  uint32_t base_stream_length(uint32_t document, int64_t eos_id) const {
    return stored_length[document] + ((eos_id >= 0 && !(traits[document] & kEndsWithEos)) ? 1 : 0);
  }
};

KeptSet select_documents(const Dataset& dataset, const PlanConfig& config);

struct PlanEntry {
  uint32_t document;
  uint32_t occurrence;  // pass number (plain) or draw number within the group (weighted)
};
struct RowItem {
  uint32_t entry;   // index into Plan::entries
  uint32_t offset;  // into that entry's stream
  uint32_t length;
};

struct Plan {
  uint64_t epoch = 0;
  PackMode mode = PackMode::kConcat;
  uint32_t seq_len = 0;
  std::vector<PlanEntry> entries;
  std::vector<uint64_t> stream_begin;  // entries + 1 prefix sums of the entries' stream lengths
  std::vector<uint8_t> fim;            // per entry: 1 when FIM applies
  std::vector<uint64_t> row_begin;     // best-fit: rows + 1 offsets into items
  std::vector<RowItem> items;
  uint64_t row_count = 0;

  uint64_t stream_length(size_t entry) const { return stream_begin[entry + 1] - stream_begin[entry]; }
};

Plan build_plan(const Dataset& dataset, const KeptSet& kept, const PlanConfig& config, uint64_t epoch);

// One piece of a row: `length` tokens of entry `entry`'s stream from `offset`. The row's remaining
// seq_len - sum(lengths) tokens are padding.
struct Segment {
  uint32_t entry;
  uint64_t offset;
  uint32_t length;
};
// O(log entries) in concat mode, O(items in the row) in best-fit mode. `segments` is cleared first.
void row_segments(const Plan& plan, uint64_t row, std::vector<Segment>& segments);

}  // namespace seedcoder::loader
