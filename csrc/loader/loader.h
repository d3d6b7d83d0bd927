// The loader: plans per epoch, the global row order split over ranks, background threads that fill a ring of
// ready batches, and an exact, world-size-independent position (epoch, row) for resume.
//
// Global row stream: epoch 0's rows 0..R0-1, then epoch 1's, ... Global step s takes the next
// world_size * batch_size rows; rank r's batch is the r-th run of batch_size consecutive rows of it. The
// position is the first global row not yet handed out, as (epoch, row in epoch); it does not depend on the
// world size, batch size or thread count, and seeking to it is O(log n) (a plan build when the epoch's plan
// is not cached). With a finite number of epochs the last step is completed with padding rows (row_epoch and
// row_index -1), so every rank runs the same number of steps.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "packer.h"
#include "plan.h"
#include "shard.h"

namespace seedcoder::loader {

struct Position {
  uint64_t epoch = 0;
  uint64_t row = 0;
  bool operator==(const Position& other) const { return epoch == other.epoch && row == other.row; }
};

struct LoaderConfig {
  PlanConfig plan;
  PackerConfig packer;
  uint32_t batch_size = 1;
  uint32_t rank = 0, world_size = 1;
  int64_t epochs = -1;   // < 0: endless
  uint32_t threads = 2;  // 0: batches are made in next() on the caller's thread
  uint32_t prefetch = 4; // ready batches kept ahead
  IndexType index_type = IndexType::kInt64;
  uint64_t fim_fingerprint = 0;  // the FIM settings, for fingerprint()
};

// Batch memory: `allocate(bytes)` returns a buffer (pinned host memory from the bindings when CUDA is there).
using Allocator = std::function<std::shared_ptr<uint8_t>(size_t bytes)>;

struct Batch {
  std::shared_ptr<uint8_t> memory;  // returns itself to the loader's pool when the last user lets go
  BatchLayout layout;
  uint32_t segments = 0;   // cu_seqlens holds segments + 1 entries
  uint32_t max_seqlen = 0;
  Position next;           // the position after this batch (state_dict after consuming it)
};

class Loader {
 public:
  Loader(std::shared_ptr<const Dataset> dataset, LoaderConfig config, Allocator allocate);
  ~Loader();
  Loader(const Loader&) = delete;
  Loader& operator=(const Loader&) = delete;

  // The next batch of this rank, nullptr after the last epoch. Waits at most `timeout` (then returns nullptr
  // with timed_out = true, so a caller can check for signals and come back). Rethrows a worker's error.
  std::shared_ptr<Batch> next(std::chrono::milliseconds timeout, bool& timed_out);
  Position position() const;
  void seek(Position position);  // stops the threads; the next next() continues from `position`
  void close();                   // stops and joins the threads; idempotent

  // `count` consecutive global rows from `start` (no rank split), made on the caller's thread.
  std::shared_ptr<Batch> rows(Position start, uint32_t count);
  std::shared_ptr<const Plan> plan(uint64_t epoch);
  uint64_t row_count(uint64_t epoch);
  const KeptSet& kept() const { return kept_; }
  const LoaderConfig& config() const { return config_; }
  uint64_t fingerprint() const { return fingerprint_; }
  // `offset` rows after `from` in the global stream; epoch == config.epochs (row 0) means the end.
  Position advance(Position from, uint64_t offset);
  bool at_end(Position position) const { return config_.epochs >= 0 && position.epoch >= static_cast<uint64_t>(config_.epochs); }

 private:
  struct Slot {
    int64_t step = -1;
    std::shared_ptr<Batch> batch;
    std::exception_ptr error;
    bool end = false;
  };
  class BufferPool;

  std::shared_ptr<Batch> produce_step(int64_t step, PackContext& context);
  std::shared_ptr<Batch> produce_rows(Position start, uint32_t count, uint32_t batch_rows, PackContext& context);
  void start_workers();
  void stop_workers();
  void worker_loop();

  std::shared_ptr<const Dataset> dataset_;
  LoaderConfig config_;
  KeptSet kept_;
  uint64_t fingerprint_ = 0;
  BatchLayout layout_;
  std::shared_ptr<BufferPool> pool_;

  std::mutex plan_mutex_;
  std::map<uint64_t, std::shared_ptr<const Plan>> plans_;  // a few recent epochs
  std::map<uint64_t, uint64_t> row_counts_;                 // every epoch seen

  // Consumer state (guarded by mutex_).
  mutable std::mutex mutex_;
  std::condition_variable ready_cv_, space_cv_;
  std::vector<Slot> slots_;
  std::vector<std::thread> workers_;
  bool running_ = false, stop_ = false, claims_closed_ = false, finished_ = false;
  Position start_;          // where step 0 of the current run starts
  Position position_;       // the consumer's position
  int64_t consumed_ = 0;    // steps handed out since start_
  int64_t next_claim_ = 0;  // next step a worker takes
  std::exception_ptr failure_;
  PackContext caller_context_;  // threads == 0 and rows()
};

}  // namespace seedcoder::loader
