// Packing and the loader: every token once per epoch (concat), labels / positions / cu_seqlens agree, best-fit
// rows hold whole documents, loss masks and <eos>, threads == caller, resume and world-size changes.
#include <algorithm>
#include <chrono>
#include <map>

#include "check.h"
#include "loader.h"
#include "shard_builder.h"

using namespace seedcoder::loader;
using namespace seedcoder::test;

namespace {
constexpr uint32_t kVocab = 1u << 24;
constexpr int64_t kPad = kVocab - 1;  // numbered tokens never reach it

std::shared_ptr<Dataset> make_dataset(const std::vector<TestDocument>& documents, const std::string& name) {
  return std::make_shared<Dataset>(std::vector<std::string>{write_file(name, build_shard(documents, kVocab))}, OpenOptions{}, 1);
}

LoaderConfig loader_config(uint32_t seq_len, uint32_t batch, PackMode mode = PackMode::kConcat) {
  LoaderConfig config;
  config.plan.seed = 99;
  config.plan.seq_len = seq_len;
  config.plan.mode = mode;
  config.batch_size = batch;
  config.packer.pad_id = kPad;
  config.threads = 0;
  config.epochs = 1;
  return config;
}

struct Rows {  // a batch copied out as plain vectors
  uint32_t rows = 0, seq_len = 0;
  std::vector<int64_t> input, labels, positions, row_index;
  std::vector<uint8_t> loss_mask;
  std::vector<int32_t> cu_seqlens;
  uint32_t max_seqlen = 0;
};

Rows copy_batch(const Batch& batch) {
  Rows out;
  const auto& layout = batch.layout;
  out.rows = layout.rows;
  out.seq_len = layout.seq_len;
  const size_t n = size_t{layout.rows} * layout.seq_len;
  const uint8_t* base = batch.memory.get();
  auto as64 = [&](size_t offset) { return reinterpret_cast<const int64_t*>(base + offset); };
  out.input.assign(as64(layout.input_ids), as64(layout.input_ids) + n);
  out.labels.assign(as64(layout.labels), as64(layout.labels) + n);
  out.positions.assign(as64(layout.position_ids), as64(layout.position_ids) + n);
  out.row_index.assign(as64(layout.row_index), as64(layout.row_index) + layout.rows);
  out.loss_mask.assign(base + layout.loss_mask, base + layout.loss_mask + n);
  const auto* cu = reinterpret_cast<const int32_t*>(base + layout.cu_seqlens);
  out.cu_seqlens.assign(cu, cu + batch.segments + 1);
  out.max_seqlen = batch.max_seqlen;
  return out;
}

// The structural invariants every batch satisfies.
void check_structure(const Rows& rows) {
  CHECK_EQ(rows.cu_seqlens.front(), 0);
  CHECK_EQ(static_cast<uint64_t>(rows.cu_seqlens.back()), uint64_t{rows.rows} * rows.seq_len);
  uint32_t longest = 0;
  for (size_t s = 0; s + 1 < rows.cu_seqlens.size(); ++s) {
    const int32_t begin = rows.cu_seqlens[s], end = rows.cu_seqlens[s + 1];
    CHECK(end > begin);
    CHECK(begin / rows.seq_len == (end - 1) / rows.seq_len);  // a sequence never crosses a row
    longest = std::max<uint32_t>(longest, end - begin);
    for (int32_t i = begin; i < end; ++i) CHECK_EQ(rows.positions[i], i - begin);
  }
  CHECK_EQ(rows.max_seqlen, longest);
  for (size_t i = 0; i < rows.labels.size(); ++i) CHECK_EQ(rows.loss_mask[i], rows.labels[i] != -100 ? 1 : 0);
}

std::vector<Rows> drain(Loader& loader) {
  std::vector<Rows> out;
  bool timed_out = false;
  while (auto batch = loader.next(std::chrono::milliseconds(10000), timed_out)) out.push_back(copy_batch(*batch));
  CHECK(!timed_out);
  return out;
}
}  // namespace

TEST_CASE(concat_every_token_once_with_correct_labels) {
  const auto documents = numbered_documents(120, 700, 5);
  auto dataset = make_dataset(documents, "pack-concat.scs");
  Loader loader(dataset, loader_config(256, 4), nullptr);
  std::map<int64_t, int> seen;
  const auto batches = drain(loader);
  CHECK(!batches.empty());
  for (const auto& rows : batches) {
    check_structure(rows);
    for (size_t i = 0; i < rows.input.size(); ++i) {
      const int64_t token = rows.input[i];
      if (token == kPad) {
        CHECK_EQ(rows.labels[i], -100);
        continue;
      }
      ++seen[token];
      const int64_t document = token / 1000, position = token % 1000;
      const bool last = position + 1 == static_cast<int64_t>(documents[document].tokens.size());
      CHECK_EQ(rows.labels[i], last ? -100 : token + 1);
    }
  }
  size_t expected = 0;
  for (const auto& d : documents) expected += d.tokens.size();
  CHECK_EQ(seen.size(), expected);
  for (const auto& [token, count] : seen) CHECK_EQ(count, 1);
}

TEST_CASE(best_fit_rows_hold_whole_documents) {
  const auto documents = numbered_documents(150, 400, 8);
  auto dataset = make_dataset(documents, "pack-bestfit.scs");
  Loader loader(dataset, loader_config(512, 3, PackMode::kBestFit), nullptr);
  std::map<int64_t, int> seen_documents;
  for (const auto& rows : drain(loader)) {
    check_structure(rows);
    for (size_t s = 0; s + 1 < rows.cu_seqlens.size(); ++s) {
      const int32_t begin = rows.cu_seqlens[s], end = rows.cu_seqlens[s + 1];
      if (rows.input[begin] == kPad) continue;
      const int64_t document = rows.input[begin] / 1000;
      CHECK_EQ(rows.input[begin] % 1000, 0);  // documents (<= 400 tokens < seq_len) start whole
      CHECK_EQ(static_cast<size_t>(end - begin), documents[document].tokens.size());  // the whole document, uncut
      ++seen_documents[document];
    }
  }
  CHECK_EQ(seen_documents.size(), documents.size());
}

TEST_CASE(loss_mask_and_eos) {
  auto documents = numbered_documents(10, 50, 9);
  documents[2].loss_mask.assign(documents[2].tokens.size(), 1);
  documents[2].loss_mask[1] = 0;  // token 1 of document 2 is not a target
  const uint32_t eos = kVocab - 2;  // no numbered token
  auto dataset = make_dataset(documents, "pack-mask.scs");
  LoaderConfig config = loader_config(64, 2);
  config.plan.eos_id = eos;
  Loader loader(dataset, config, nullptr);
  size_t eos_seen = 0;
  for (const auto& rows : drain(loader)) {
    check_structure(rows);
    for (size_t i = 0; i < rows.input.size(); ++i) {
      if (rows.input[i] == eos) {
        ++eos_seen;
        CHECK_EQ(rows.labels[i], -100);
      }
      if (rows.input[i] == static_cast<int64_t>(documents[2].tokens[0])) CHECK_EQ(rows.labels[i], -100);  // masked target
      if (i + 1 < rows.input.size() && rows.input[i + 1] == eos && (i + 1) % 64 != 0) CHECK_EQ(rows.labels[i], eos);
    }
  }
  CHECK_EQ(eos_seen, documents.size());
}

TEST_CASE(threads_resume_and_world_size_changes) {
  const auto documents = numbered_documents(200, 500, 12);
  auto dataset = make_dataset(documents, "pack-resume.scs");
  auto global_stream = [&](std::vector<uint32_t> world_sizes_per_phase, std::vector<int> steps_per_phase, uint32_t threads) {
    // Runs phases with different world sizes from the state the previous phase ended at; returns rows in global order.
    std::vector<int64_t> stream;
    Position position;
    for (size_t phase = 0; phase < world_sizes_per_phase.size(); ++phase) {
      const uint32_t world = world_sizes_per_phase[phase];
      std::vector<std::unique_ptr<Loader>> ranks;
      for (uint32_t r = 0; r < world; ++r) {
        LoaderConfig config = loader_config(128, 2);
        config.epochs = 3;
        config.rank = r;
        config.world_size = world;
        config.threads = threads;
        ranks.push_back(std::make_unique<Loader>(dataset, config, nullptr));
        ranks.back()->seek(position);
      }
      for (int step = 0; step < steps_per_phase[phase]; ++step) {
        Position after;
        for (uint32_t r = 0; r < world; ++r) {
          bool timed_out = false;
          auto batch = ranks[r]->next(std::chrono::milliseconds(10000), timed_out);
          if (!batch) return stream;
          const Rows rows = copy_batch(*batch);
          stream.insert(stream.end(), rows.input.begin(), rows.input.end());
          after = ranks[r]->position();
        }
        for (uint32_t r = 0; r < world; ++r) CHECK(ranks[r]->position() == after);  // one state for all ranks
        position = after;
      }
    }
    return stream;
  };
  const auto reference = global_stream({1}, {100000}, 0);
  CHECK(!reference.empty());
  const auto threaded = global_stream({1}, {100000}, 3);
  CHECK(threaded == reference);
  const auto changed = global_stream({2, 3, 1}, {5, 4, 100000}, 2);
  // After the last full global step the stream may end in padding rows: compare the common prefix.
  const size_t common = std::min(changed.size(), reference.size());
  CHECK(common > reference.size() * 9 / 10);
  CHECK(std::equal(changed.begin(), changed.begin() + common, reference.begin()));
}

TEST_CASE(finite_epochs_end_with_padding_rows) {
  const auto documents = numbered_documents(30, 100, 4);
  auto dataset = make_dataset(documents, "pack-end.scs");
  LoaderConfig config = loader_config(64, 5);
  config.threads = 2;
  Loader loader(dataset, config, nullptr);
  const auto rows_total = loader.row_count(0);
  const auto batches = drain(loader);
  CHECK_EQ(batches.size(), (rows_total + 4) / 5);
  const auto& last = batches.back();
  const uint64_t missing = batches.size() * 5 - rows_total;
  for (uint64_t r = 5 - missing; r < 5; ++r) CHECK_EQ(last.row_index[r], -1);
  CHECK(loader.position() == (Position{1, 0}));
  bool timed_out = false;
  CHECK(loader.next(std::chrono::milliseconds(100), timed_out) == nullptr);
}

TEST_MAIN()
