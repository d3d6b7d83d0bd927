// Kept set (mixture groups + score policy) and the per-epoch plan (blending, passes, weighted draws, best-fit).
#include "plan.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <stdexcept>

#include "random.h"

namespace seedcoder::loader {
namespace {

// Domain tags for the random streams of a plan (never reuse one for another purpose).
enum : uint64_t { kTagPermutation = 1, kTagWeightedDraw = 2, kTagBestFitRows = 3 };

int specificity(const MixtureGroup& group) { return (group.language >= 0 ? 2 : 0) + (group.source >= 0 ? 1 : 0); }

// Vose's alias method: O(n) build, O(1) draws.
void build_alias(const std::vector<double>& weights, std::vector<double>& probability, std::vector<uint32_t>& alias) {
  const size_t n = weights.size();
  probability.assign(n, 0);
  alias.assign(n, 0);
  const double total = std::accumulate(weights.begin(), weights.end(), 0.0);
  std::vector<uint32_t> small, large;
  std::vector<double> scaled(n);
  for (size_t i = 0; i < n; ++i) {
    scaled[i] = weights[i] * static_cast<double>(n) / total;
    (scaled[i] < 1.0 ? small : large).push_back(static_cast<uint32_t>(i));
  }
  while (!small.empty() && !large.empty()) {
    const uint32_t s = small.back(), l = large.back();
    small.pop_back();
    probability[s] = scaled[s];
    alias[s] = l;
    scaled[l] = (scaled[l] + scaled[s]) - 1.0;
    if (scaled[l] < 1.0) {
      large.pop_back();
      small.push_back(l);
    }
  }
  for (uint32_t i : large) probability[i] = 1.0, alias[i] = i;
  for (uint32_t i : small) probability[i] = 1.0, alias[i] = i;  // rounding leftovers
}

}  // namespace

KeptSet select_documents(const Dataset& dataset, const PlanConfig& config) {
  if (config.seq_len == 0) throw std::invalid_argument("seq_len must be positive");
  if (!(config.drop_bottom_fraction >= 0 && config.drop_bottom_fraction < 1))
    throw std::invalid_argument("drop_bottom_fraction must be in [0, 1)");
  if (!(config.score_temperature >= 0) || std::isinf(config.score_temperature))
    throw std::invalid_argument("score_temperature must be finite and >= 0 (0 = no score weighting)");
  if (std::isnan(config.min_score)) throw std::invalid_argument("min_score is NaN");

  std::vector<MixtureGroup> groups = config.mixture;
  if (groups.empty()) groups.push_back({"*", -1, -1, 1.0});
  double weight_sum = 0;
  for (const auto& group : groups) {
    if (!(group.weight >= 0) || std::isinf(group.weight))
      throw std::invalid_argument("mixture weight of '" + group.name + "' must be finite and >= 0");
    weight_sum += group.weight;
  }
  if (!(weight_sum > 0)) throw std::invalid_argument("mixture weights sum to 0");
  // Most specific group first, then input order: the first match is the most specific.
  std::vector<size_t> order(groups.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return specificity(groups[a]) > specificity(groups[b]); });

  const uint64_t documents = dataset.document_count();
  KeptSet kept;
  kept.stored_length.assign(documents, 0);
  kept.traits.assign(documents, 0);
  std::vector<int32_t> group_of(documents, -1);
  std::vector<std::pair<float, uint32_t>> candidates;  // (score, id) for drop_bottom
  for (size_t s = 0; s < dataset.shard_count(); ++s) {
    const Shard& shard = dataset.shard(s);
    const uint64_t base = dataset.shard_base(s);
    for (uint64_t d = 0; d < shard.document_count(); ++d) {
      const auto& record = shard.record(d);
      if (!(static_cast<double>(record.score) >= config.min_score)) continue;
      int32_t chosen = -1;
      for (size_t g : order) {
        const auto& group = groups[g];
        if ((group.source < 0 || group.source == record.source) && (group.language < 0 || group.language == record.language)) {
          chosen = static_cast<int32_t>(g);
          break;
        }
      }
      if (chosen < 0 || groups[chosen].weight == 0) continue;
      const uint64_t length = shard.document_length(d);
      if (length >= (uint64_t{1} << 32) - 8)
        throw ShardError(shard.path(), "document " + std::to_string(d) + " has " + std::to_string(length) +
                                           " tokens; the loader handles documents below 2^32 tokens");
      const auto id = static_cast<uint32_t>(base + d);
      group_of[id] = chosen;
      kept.stored_length[id] = static_cast<uint32_t>(length);
      const uint32_t last = shard.token(shard.document_begin(d) + length - 1);
      uint8_t traits = 0;
      if (config.eos_id >= 0 && last == static_cast<uint64_t>(config.eos_id)) traits |= KeptSet::kEndsWithEos;
      if (config.fim_eos_id >= 0 && last == static_cast<uint64_t>(config.fim_eos_id)) traits |= KeptSet::kEndsWithFimEos;
      if (!(record.flags & (scs::kDocRepoLevel | scs::kDocHasLossMask))) traits |= KeptSet::kFimEligible;
      kept.traits[id] = traits;
      candidates.emplace_back(record.score, id);
    }
  }
  if (config.drop_bottom_fraction > 0) {
    const auto drop = static_cast<size_t>(std::floor(config.drop_bottom_fraction * static_cast<double>(candidates.size())));
    if (drop > 0) {
      std::nth_element(candidates.begin(), candidates.begin() + (drop - 1), candidates.end());
      for (size_t i = 0; i < drop; ++i) group_of[candidates[i].second] = -1;  // the drop lowest (score, id) pairs
    }
  }
  candidates.clear();
  candidates.shrink_to_fit();

  kept.groups.resize(groups.size());
  for (size_t g = 0; g < groups.size(); ++g) kept.groups[g].name = groups[g].name, kept.groups[g].weight = groups[g].weight;
  for (uint64_t id = 0; id < documents; ++id) {
    if (group_of[id] < 0) {
      kept.stored_length[id] = 0;
      continue;
    }
    auto& group = kept.groups[group_of[id]];
    group.documents.push_back(static_cast<uint32_t>(id));
    group.stream_tokens += kept.base_stream_length(static_cast<uint32_t>(id), config.eos_id);
  }
  double kept_weight = 0;
  for (auto& group : kept.groups) {
    if (group.weight > 0 && group.documents.empty())
      throw std::invalid_argument("mixture group '" + group.name + "' has weight " + std::to_string(group.weight) +
                                  " but no document is left in it after the score policy");
    kept_weight += group.weight;
    kept.document_count += group.documents.size();
    kept.stream_tokens += group.stream_tokens;
  }
  for (auto& group : kept.groups) group.weight /= kept_weight;

  if (config.score_temperature > 0) {
    std::vector<double> weights;
    for (auto& group : kept.groups) {
      if (group.documents.empty()) continue;
      weights.resize(group.documents.size());
      double top = -std::numeric_limits<double>::infinity();
      for (size_t i = 0; i < weights.size(); ++i) {
        const auto location = dataset.locate(group.documents[i]);
        weights[i] = location.shard->record(location.document).score / config.score_temperature;
        top = std::max(top, weights[i]);
      }
      for (auto& w : weights) w = std::exp(w - top);  // in (0, 1], the top document has 1: no overflow
      build_alias(weights, group.alias_probability, group.alias_index);
    }
  }
  return kept;
}

Plan build_plan(const Dataset& dataset, const KeptSet& kept, const PlanConfig& config, uint64_t epoch) {
  (void)dataset;
  Plan plan;
  plan.epoch = epoch;
  plan.mode = config.mode;
  plan.seq_len = config.seq_len;
  const uint64_t budget = config.tokens_per_epoch ? config.tokens_per_epoch : kept.stream_tokens;
  const bool weighted = config.score_temperature > 0;
  const size_t group_count = kept.groups.size();

  struct GroupCursor {
    std::vector<uint32_t> permutation;
    size_t position = 0;
    uint32_t pass = 0;
    uint64_t draws = 0;
    uint64_t emitted = 0;
  };
  std::vector<GroupCursor> cursors(group_count);
  auto start_pass = [&](size_t g) {
    auto& cursor = cursors[g];
    cursor.permutation = kept.groups[g].documents;
    Rng rng(hash_key({kTagPermutation, config.seed, epoch, g, cursor.pass}));
    for (size_t i = cursor.permutation.size(); i > 1; --i) std::swap(cursor.permutation[i - 1], cursor.permutation[rng.below(i)]);
    cursor.position = 0;
  };
  std::vector<Rng> draw_rngs;
  for (size_t g = 0; g < group_count; ++g) draw_rngs.emplace_back(hash_key({kTagWeightedDraw, config.seed, epoch, g}));

  plan.stream_begin.push_back(0);
  uint64_t emitted = 0;
  while (emitted < budget) {
    size_t g = 0;
    double largest_error = -std::numeric_limits<double>::infinity();
    for (size_t c = 0; c < group_count; ++c) {
      if (kept.groups[c].weight <= 0) continue;
      const double error = kept.groups[c].weight * static_cast<double>(emitted) - static_cast<double>(cursors[c].emitted);
      if (error > largest_error) largest_error = error, g = c;
    }
    auto& cursor = cursors[g];
    const auto& group = kept.groups[g];
    PlanEntry entry;
    if (weighted) {
      auto& rng = draw_rngs[g];
      const uint64_t slot = rng.below(group.documents.size());
      const uint64_t pick = rng.uniform() < group.alias_probability[slot] ? slot : group.alias_index[slot];
      entry = {group.documents[pick], static_cast<uint32_t>(cursor.draws++)};
    } else {
      if (cursor.permutation.empty() || cursor.position == cursor.permutation.size()) {
        if (!cursor.permutation.empty()) ++cursor.pass;
        start_pass(g);
      }
      entry = {cursor.permutation[cursor.position++], cursor.pass};
    }
    const uint32_t base_length = kept.base_stream_length(entry.document, config.eos_id);
    cursor.emitted += base_length;
    emitted += base_length;
    uint64_t stream_length = base_length;
    uint8_t fim = 0;
    if (config.fim_select && (kept.traits[entry.document] & KeptSet::kFimEligible) &&
        config.fim_select(epoch, (uint64_t{entry.occurrence} << 32) | entry.document)) {
      fim = 1;
      stream_length = kept.stored_length[entry.document] - ((kept.traits[entry.document] & KeptSet::kEndsWithFimEos) ? 1 : 0) + 4;
    }
    if (plan.entries.size() >= (uint64_t{1} << 32) - 1)
      throw std::invalid_argument("the epoch plan holds 2^32 documents; lower tokens_per_epoch");
    plan.entries.push_back(entry);
    plan.fim.push_back(fim);
    plan.stream_begin.push_back(plan.stream_begin.back() + stream_length);
  }

  const uint32_t seq_len = config.seq_len;
  if (config.mode == PackMode::kConcat) {
    plan.row_count = (plan.stream_begin.back() + seq_len - 1) / seq_len;
    return plan;
  }

  // Best-fit decreasing per window of chunks.
  const uint32_t window = std::max<uint32_t>(1, config.best_fit_window);
  std::vector<RowItem> units;
  plan.row_begin.push_back(0);
  const size_t words = (seq_len + 1 + 63) / 64;
  std::vector<uint64_t> nonempty(words);
  std::vector<std::vector<uint32_t>> rows_by_capacity(seq_len + 1);
  std::vector<std::vector<RowItem>> rows;
  std::vector<uint32_t> order, capacity;
  uint64_t window_index = 0;

  auto find_capacity_at_least = [&](uint32_t length) -> int64_t {
    size_t word = length / 64;
    uint64_t bits = nonempty[word] & (~uint64_t{0} << (length % 64));
    while (true) {
      if (bits) return static_cast<int64_t>(word * 64 + __builtin_ctzll(bits));
      if (++word == words) return -1;
      bits = nonempty[word];
    }
  };
  auto flush_window = [&] {
    if (units.empty()) return;
    order.resize(units.size());
    std::iota(order.begin(), order.end(), 0u);
    std::stable_sort(order.begin(), order.end(), [&](uint32_t a, uint32_t b) { return units[a].length > units[b].length; });
    rows.clear();
    capacity.clear();
    for (uint32_t u : order) {
      const RowItem& unit = units[u];
      const int64_t found = find_capacity_at_least(unit.length);
      uint32_t row;
      if (found < 0) {
        row = static_cast<uint32_t>(rows.size());
        rows.emplace_back();
        capacity.push_back(seq_len);
      } else {
        auto& bucket = rows_by_capacity[found];
        row = bucket.back();
        bucket.pop_back();
        if (bucket.empty()) nonempty[found / 64] &= ~(uint64_t{1} << (found % 64));
      }
      rows[row].push_back(unit);
      capacity[row] -= unit.length;
      if (capacity[row] > 0) {
        rows_by_capacity[capacity[row]].push_back(row);
        nonempty[capacity[row] / 64] |= uint64_t{1} << (capacity[row] % 64);
      }
    }
    for (auto& bucket : rows_by_capacity) bucket.clear();
    std::fill(nonempty.begin(), nonempty.end(), 0);
    std::vector<uint32_t> row_order(rows.size());
    std::iota(row_order.begin(), row_order.end(), 0u);
    Rng rng(hash_key({kTagBestFitRows, config.seed, epoch, window_index++}));
    for (size_t i = row_order.size(); i > 1; --i) std::swap(row_order[i - 1], row_order[rng.below(i)]);
    for (uint32_t r : row_order) {
      plan.items.insert(plan.items.end(), rows[r].begin(), rows[r].end());
      plan.row_begin.push_back(plan.items.size());
    }
    units.clear();
  };
  for (size_t e = 0; e < plan.entries.size(); ++e) {
    const uint64_t length = plan.stream_length(e);
    for (uint64_t offset = 0; offset < length; offset += seq_len) {
      units.push_back({static_cast<uint32_t>(e), static_cast<uint32_t>(offset),
                       static_cast<uint32_t>(std::min<uint64_t>(seq_len, length - offset))});
      if (units.size() == window) flush_window();
    }
  }
  flush_window();
  plan.row_count = plan.row_begin.size() - 1;
  return plan;
}

void row_segments(const Plan& plan, uint64_t row, std::vector<Segment>& segments) {
  segments.clear();
  if (row >= plan.row_count) throw std::out_of_range("row " + std::to_string(row) + " >= the epoch's " + std::to_string(plan.row_count));
  if (plan.mode == PackMode::kBestFit) {
    for (uint64_t i = plan.row_begin[row]; i < plan.row_begin[row + 1]; ++i)
      segments.push_back({plan.items[i].entry, plan.items[i].offset, plan.items[i].length});
    return;
  }
  const uint64_t begin = row * plan.seq_len;
  const uint64_t end = std::min(begin + plan.seq_len, plan.stream_begin.back());
  size_t entry = std::upper_bound(plan.stream_begin.begin(), plan.stream_begin.end(), begin) - plan.stream_begin.begin() - 1;
  for (uint64_t position = begin; position < end; ++entry) {
    const uint64_t piece_end = std::min(end, plan.stream_begin[entry + 1]);
    segments.push_back({static_cast<uint32_t>(entry), position - plan.stream_begin[entry], static_cast<uint32_t>(piece_end - position)});
    position = piece_end;
  }
}

}  // namespace seedcoder::loader
