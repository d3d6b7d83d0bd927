// Sampling plans: determinism, exactly-once, score policy, mixture blending, group passes, weighted draws,
// best-fit packing invariants.
#include <algorithm>
#include <cmath>
#include <map>
#include <set>

#include "check.h"
#include "plan.h"
#include "shard_builder.h"

using namespace seedcoder::loader;
using namespace seedcoder::test;

namespace {
struct Fixture {
  std::vector<TestDocument> documents;
  std::unique_ptr<Dataset> dataset;
  Fixture(size_t count = 400, uint32_t max_length = 600) {
    documents = numbered_documents(count, max_length, 17);
    const size_t half = count / 2;
    std::vector<TestDocument> first(documents.begin(), documents.begin() + half), second(documents.begin() + half, documents.end());
    dataset = std::make_unique<Dataset>(std::vector<std::string>{write_file("plan-a.scs", build_shard(first, 1u << 24)),
                                                                 write_file("plan-b.scs", build_shard(second, 1u << 24))},
                                        OpenOptions{}, 1);
  }
};

PlanConfig base_config() {
  PlanConfig config;
  config.seed = 1234;
  config.seq_len = 256;
  return config;
}

std::vector<uint32_t> plan_documents(const Plan& plan) {
  std::vector<uint32_t> out;
  for (const auto& entry : plan.entries) out.push_back(entry.document);
  return out;
}
}  // namespace

TEST_CASE(plain_plan_is_a_deterministic_permutation) {
  Fixture f;
  const PlanConfig config = base_config();
  const KeptSet kept = select_documents(*f.dataset, config);
  CHECK_EQ(kept.document_count, f.documents.size());
  const Plan a = build_plan(*f.dataset, kept, config, 0), b = build_plan(*f.dataset, kept, config, 0), c = build_plan(*f.dataset, kept, config, 1);
  CHECK(plan_documents(a) == plan_documents(b));
  CHECK(plan_documents(a) != plan_documents(c));
  auto sorted = plan_documents(a);
  std::sort(sorted.begin(), sorted.end());
  for (size_t i = 0; i < sorted.size(); ++i) CHECK_EQ(sorted[i], i);
  uint64_t tokens = 0;
  for (const auto& d : f.documents) tokens += d.tokens.size();
  CHECK_EQ(a.stream_begin.back(), tokens);
  CHECK_EQ(a.row_count, (tokens + 255) / 256);
}

TEST_CASE(score_policy) {
  Fixture f;
  PlanConfig config = base_config();
  config.min_score = 3.0;
  KeptSet kept = select_documents(*f.dataset, config);
  size_t expected = 0;
  for (const auto& d : f.documents) expected += d.score >= 3.0f;
  CHECK_EQ(kept.document_count, expected);
  for (uint32_t id : kept.groups[0].documents) CHECK(f.documents[id].score >= 3.0f);

  config.drop_bottom_fraction = 0.25;
  kept = select_documents(*f.dataset, config);
  CHECK_EQ(kept.document_count, expected - static_cast<size_t>(std::floor(0.25 * expected)));
  std::set<uint32_t> kept_ids(kept.groups[0].documents.begin(), kept.groups[0].documents.end());
  float lowest_kept = 1e9f, highest_dropped = -1e9f;
  for (uint32_t id = 0; id < f.documents.size(); ++id) {
    if (f.documents[id].score < 3.0f) continue;
    if (kept_ids.count(id)) lowest_kept = std::min(lowest_kept, f.documents[id].score);
    else highest_dropped = std::max(highest_dropped, f.documents[id].score);
  }
  CHECK(highest_dropped <= lowest_kept);
}

TEST_CASE(mixture_tracks_weights_in_tokens) {
  Fixture f;
  PlanConfig config = base_config();
  config.mixture = {{"file", 0, -1, 0.6}, {"repo", 1, -1, 0.3}, {"commit", 2, -1, 0.1}};
  const KeptSet kept = select_documents(*f.dataset, config);
  const Plan plan = build_plan(*f.dataset, kept, config, 0);
  std::vector<double> emitted(3, 0);
  double total = 0;
  for (size_t e = 0; e < plan.entries.size(); ++e) {
    const uint32_t id = plan.entries[e].document;
    emitted[f.documents[id].source] += static_cast<double>(plan.stream_length(e));
    total += static_cast<double>(plan.stream_length(e));
    for (int g = 0; g < 3; ++g) CHECK(std::fabs(emitted[g] - kept.groups[g].weight * total) <= 2 * 600);  // within a document or two
  }
  CHECK(total >= static_cast<double>(kept.stream_tokens));
  // The over-weighted group ran out and started fresh permutations: each pass holds every document once.
  std::map<uint32_t, std::vector<uint32_t>> passes;
  for (const auto& entry : plan.entries)
    if (f.documents[entry.document].source == 0) passes[entry.occurrence].push_back(entry.document);
  CHECK(passes.size() >= 2);
  auto first_pass = passes[0];
  std::sort(first_pass.begin(), first_pass.end());
  CHECK(first_pass == kept.groups[0].documents);
  CHECK(passes[0] != passes[1] || passes[1].size() < 5);
}

TEST_CASE(most_specific_group_wins) {
  Fixture f;
  PlanConfig config = base_config();
  config.mixture = {{"*", -1, -1, 0.5}, {"*/python", -1, 2, 0.3}, {"file/python", 0, 2, 0.2}};
  const KeptSet kept = select_documents(*f.dataset, config);
  for (uint32_t id : kept.groups[2].documents) CHECK(f.documents[id].source == 0 && f.documents[id].language == 2);
  for (uint32_t id : kept.groups[1].documents) CHECK(f.documents[id].source != 0 && f.documents[id].language == 2);
  for (uint32_t id : kept.groups[0].documents) CHECK(f.documents[id].language != 2);
  CHECK_EQ(kept.document_count, f.documents.size());
  config.mixture = {{"file", 0, -1, 1.0}, {"repo", 1, -1, 0.0}};
  CHECK(select_documents(*f.dataset, config).document_count < f.documents.size());  // commit matches nothing, repo has weight 0
  config.mixture = {{"web", 3, -1, 1.0}};
  CHECK_THROWS_WITH(select_documents(*f.dataset, config), "no document is left");
}

TEST_CASE(score_weighted_sampling_prefers_high_scores) {
  Fixture f;
  PlanConfig config = base_config();
  config.score_temperature = 1.0;
  const KeptSet kept = select_documents(*f.dataset, config);
  const Plan a = build_plan(*f.dataset, kept, config, 0), b = build_plan(*f.dataset, kept, config, 0);
  CHECK(plan_documents(a) == plan_documents(b));
  double drawn = 0, natural = 0;
  for (const auto& entry : a.entries) drawn += f.documents[entry.document].score;
  for (const auto& d : f.documents) natural += d.score;
  CHECK(drawn / a.entries.size() > natural / f.documents.size() + 2.0);  // scores uniform in [0, 10): T = 1 shifts the mean a lot
  const auto drawn_documents = plan_documents(a);
  const std::set<uint32_t> distinct(drawn_documents.begin(), drawn_documents.end());
  CHECK(distinct.size() < a.entries.size());  // with replacement
}

TEST_CASE(best_fit_never_cuts_short_documents) {
  Fixture f(300, 700);
  PlanConfig config = base_config();
  config.mode = PackMode::kBestFit;
  config.seq_len = 512;
  config.best_fit_window = 64;
  const KeptSet kept = select_documents(*f.dataset, config);
  const Plan plan = build_plan(*f.dataset, kept, config, 0);
  std::vector<uint64_t> covered(plan.entries.size(), 0);
  uint64_t padding = 0;
  for (uint64_t row = 0; row < plan.row_count; ++row) {
    uint64_t used = 0;
    for (uint64_t i = plan.row_begin[row]; i < plan.row_begin[row + 1]; ++i) {
      const RowItem& item = plan.items[i];
      const uint64_t length = plan.stream_length(item.entry);
      CHECK(item.offset % 512 == 0);  // chunks start at multiples of seq_len: a document <= seq_len is one piece
      CHECK_EQ(item.length, std::min<uint64_t>(512, length - item.offset));
      covered[item.entry] += item.length;
      used += item.length;
    }
    CHECK(used <= 512);
    padding += 512 - used;
  }
  for (size_t e = 0; e < plan.entries.size(); ++e) CHECK_EQ(covered[e], plan.stream_length(e));
  CHECK(padding < plan.row_count * 512 / 10);  // best-fit keeps padding small
}

TEST_MAIN()
