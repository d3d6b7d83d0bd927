// Loader: plan cache, position arithmetic over epochs, the worker threads and the ring of ready batches.
#include "loader.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <stdexcept>

#include "random.h"

namespace seedcoder::loader {
namespace {

uint64_t double_bits(double value) {
  uint64_t bits;
  std::memcpy(&bits, &value, 8);
  return bits;
}

constexpr size_t kPlansKept = 3;

}  // namespace

// Recycles batch buffers: a buffer goes back to the free list when the last tensor viewing it is freed.
class Loader::BufferPool : public std::enable_shared_from_this<BufferPool> {
 public:
  BufferPool(Allocator allocate, size_t bytes, size_t max_free) : allocate_(std::move(allocate)), bytes_(bytes), max_free_(max_free) {}

  std::shared_ptr<uint8_t> acquire() {
    std::shared_ptr<uint8_t> storage;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (!free_.empty()) {
        storage = std::move(free_.back());
        free_.pop_back();
      }
    }
    if (!storage) storage = allocate_(bytes_);
    if (!storage) throw std::bad_alloc();
    std::weak_ptr<BufferPool> pool = weak_from_this();
    uint8_t* data = storage.get();
    return std::shared_ptr<uint8_t>(data, [pool, storage](uint8_t*) mutable {
      if (auto alive = pool.lock()) alive->release(std::move(storage));
    });
  }

 private:
  void release(std::shared_ptr<uint8_t> storage) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (free_.size() < max_free_) free_.push_back(std::move(storage));
  }
  Allocator allocate_;
  size_t bytes_, max_free_;
  std::mutex mutex_;
  std::vector<std::shared_ptr<uint8_t>> free_;
};

Loader::Loader(std::shared_ptr<const Dataset> dataset, LoaderConfig config, Allocator allocate)
    : dataset_(std::move(dataset)), config_(std::move(config)) {
  if (!dataset_) throw std::invalid_argument("no dataset");
  if (config_.batch_size == 0) throw std::invalid_argument("batch_size must be positive");
  if (config_.world_size == 0 || config_.rank >= config_.world_size)
    throw std::invalid_argument("rank " + std::to_string(config_.rank) + " is not in [0, world_size " + std::to_string(config_.world_size) + ")");
  if (config_.plan.seq_len == 0 || config_.plan.seq_len > (1u << 30)) throw std::invalid_argument("seq_len must be in [1, 2^30]");
  if (uint64_t{config_.batch_size} * config_.plan.seq_len >= (uint64_t{1} << 31))
    throw std::invalid_argument("batch_size * seq_len must stay below 2^31 (cu_seqlens are int32)");
  if (config_.index_type == IndexType::kInt32 && (config_.packer.pad_id > INT32_MAX || dataset_->vocab_size() > (1u << 31)))
    throw std::invalid_argument("int32 outputs need token ids and pad_id below 2^31");
  if (config_.packer.pad_id < 0) throw std::invalid_argument("pad_id must be >= 0");
  if (config_.plan.eos_id >= static_cast<int64_t>(dataset_->vocab_size()))
    throw std::invalid_argument("eos_id " + std::to_string(config_.plan.eos_id) + " is not below the vocab size " + std::to_string(dataset_->vocab_size()));
  config_.packer.eos_id = config_.plan.eos_id;
  config_.packer.fim_eos_id = config_.plan.fim_eos_id;
  if (config_.prefetch == 0) config_.prefetch = 1;

  kept_ = select_documents(*dataset_, config_.plan);
  if (kept_.document_count == 0) throw std::invalid_argument("no document is left after the mixture and the score policy");

  // Everything that changes the global row stream, and nothing that does not (batch, ranks, threads).
  const PlanConfig& p = config_.plan;
  std::vector<uint64_t> parts = {0x5EEDC0DEull, p.seed, p.seq_len, static_cast<uint64_t>(p.mode), p.best_fit_window, double_bits(p.min_score),
                                 double_bits(p.drop_bottom_fraction), double_bits(p.score_temperature), p.tokens_per_epoch,
                                 static_cast<uint64_t>(p.eos_id), static_cast<uint64_t>(config_.packer.pad_id), config_.fim_fingerprint};
  for (const auto& group : p.mixture)
    parts.insert(parts.end(), {static_cast<uint64_t>(group.source), static_cast<uint64_t>(group.language), double_bits(group.weight)});
  for (size_t s = 0; s < dataset_->shard_count(); ++s)
    parts.insert(parts.end(), {dataset_->shard(s).header_crc32c(), dataset_->shard(s).document_count()});
  fingerprint_ = 0;
  for (uint64_t part : parts) fingerprint_ = hash_key({fingerprint_, part});
  fingerprint_ >>= 1;  // fits an int64 (Python side, JSON)

  layout_ = BatchLayout::make(config_.batch_size, config_.plan.seq_len, config_.index_type);
  if (!allocate)
    allocate = [](size_t bytes) {
      void* memory = std::aligned_alloc(64, (bytes + 63) & ~size_t{63});
      return std::shared_ptr<uint8_t>(static_cast<uint8_t*>(memory), [](uint8_t* p) { std::free(p); });
    };
  pool_ = std::make_shared<BufferPool>(std::move(allocate), layout_.bytes, config_.prefetch + config_.threads + 2);
  slots_.resize(config_.prefetch);
}

Loader::~Loader() { close(); }

std::shared_ptr<const Plan> Loader::plan(uint64_t epoch) {
  std::lock_guard<std::mutex> lock(plan_mutex_);
  auto found = plans_.find(epoch);
  if (found != plans_.end()) return found->second;
  auto built = std::make_shared<const Plan>(build_plan(*dataset_, kept_, config_.plan, epoch));
  row_counts_[epoch] = built->row_count;
  plans_[epoch] = built;
  while (plans_.size() > kPlansKept) {  // drop the epoch farthest from this one (in-flight users keep theirs alive)
    auto farthest = plans_.begin();
    for (auto it = plans_.begin(); it != plans_.end(); ++it)
      if ((it->first > epoch ? it->first - epoch : epoch - it->first) > (farthest->first > epoch ? farthest->first - epoch : epoch - farthest->first))
        farthest = it;
    plans_.erase(farthest);
  }
  return built;
}

uint64_t Loader::row_count(uint64_t epoch) {
  {
    std::lock_guard<std::mutex> lock(plan_mutex_);
    auto found = row_counts_.find(epoch);
    if (found != row_counts_.end()) return found->second;
  }
  return plan(epoch)->row_count;
}

Position Loader::advance(Position from, uint64_t offset) {
  Position at = from;
  while (!at_end(at)) {
    const uint64_t rows = row_count(at.epoch);
    if (at.row + offset < rows) return {at.epoch, at.row + offset};
    offset -= rows - at.row;
    at = {at.epoch + 1, 0};
  }
  return {static_cast<uint64_t>(config_.epochs), 0};
}

std::shared_ptr<Batch> Loader::produce_rows(Position start, uint32_t count, uint32_t batch_rows, PackContext& context) {
  auto batch = std::make_shared<Batch>();
  batch->layout = batch_rows == layout_.rows ? layout_ : BatchLayout::make(batch_rows, config_.plan.seq_len, config_.index_type);
  if (batch_rows == layout_.rows) {
    batch->memory = pool_->acquire();
  } else {
    void* memory = std::aligned_alloc(64, (batch->layout.bytes + 63) & ~size_t{63});
    if (!memory) throw std::bad_alloc();
    batch->memory = std::shared_ptr<uint8_t>(static_cast<uint8_t*>(memory), [](uint8_t* p) { std::free(p); });
  }
  BatchCursor cursor{batch->memory.get(), &batch->layout, 0, 0};
  Position at = start;
  std::shared_ptr<const Plan> current;
  for (uint32_t slot = 0; slot < batch_rows; ++slot) {
    if (slot < count && !at_end(at)) {
      if (!current || current->epoch != at.epoch) current = plan(at.epoch);
      write_row(*dataset_, kept_, current.get(), static_cast<int64_t>(at.row), slot, config_.packer, context, cursor);
      at = at.row + 1 < current->row_count ? Position{at.epoch, at.row + 1} : Position{at.epoch + 1, 0};
    } else {
      write_row(*dataset_, kept_, nullptr, -1, slot, config_.packer, context, cursor);
    }
  }
  batch->segments = cursor.segments;
  batch->max_seqlen = cursor.max_seqlen;
  return batch;
}

std::shared_ptr<Batch> Loader::produce_step(int64_t step, PackContext& context) {
  const uint64_t global_batch = uint64_t{config_.world_size} * config_.batch_size;
  const Position step_start = advance(start_, static_cast<uint64_t>(step) * global_batch);
  if (at_end(step_start)) return nullptr;
  const Position mine = advance(step_start, uint64_t{config_.rank} * config_.batch_size);
  auto batch = produce_rows(mine, config_.batch_size, config_.batch_size, context);
  batch->next = advance(step_start, global_batch);
  return batch;
}

std::shared_ptr<Batch> Loader::rows(Position start, uint32_t count) {
  if (count == 0) throw std::invalid_argument("rows: count must be positive");
  if (uint64_t{count} * config_.plan.seq_len >= (uint64_t{1} << 31)) throw std::invalid_argument("rows: count * seq_len must stay below 2^31");
  if (!at_end(start) && start.row >= row_count(start.epoch))
    throw std::out_of_range("rows: epoch " + std::to_string(start.epoch) + " has " + std::to_string(row_count(start.epoch)) + " rows");
  PackContext context;
  auto batch = produce_rows(start, count, count, context);
  batch->next = advance(start, count);
  return batch;
}

void Loader::worker_loop() {
  PackContext context;
  while (true) {
    int64_t step;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      space_cv_.wait(lock, [&] { return stop_ || (!claims_closed_ && next_claim_ < consumed_ + static_cast<int64_t>(slots_.size())); });
      if (stop_) return;
      step = next_claim_++;
    }
    Slot result;
    result.step = step;
    try {
      result.batch = produce_step(step, context);
      result.end = !result.batch;
    } catch (...) {
      result.error = std::current_exception();
    }
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (result.end || result.error) claims_closed_ = true;
      slots_[static_cast<size_t>(step) % slots_.size()] = std::move(result);
    }
    ready_cv_.notify_all();
  }
}

void Loader::start_workers() {
  // mutex_ is held by the caller.
  stop_ = false;
  claims_closed_ = false;
  consumed_ = 0;
  next_claim_ = 0;
  start_ = position_;
  for (auto& slot : slots_) slot = Slot{};
  running_ = true;
  for (uint32_t t = 0; t < config_.threads; ++t) workers_.emplace_back([this] { worker_loop(); });
}

void Loader::stop_workers() {
  std::vector<std::thread> joining;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
    joining.swap(workers_);
  }
  space_cv_.notify_all();
  ready_cv_.notify_all();
  for (auto& thread : joining) thread.join();
  std::lock_guard<std::mutex> lock(mutex_);
  running_ = false;
  for (auto& slot : slots_) slot = Slot{};
}

std::shared_ptr<Batch> Loader::next(std::chrono::milliseconds timeout, bool& timed_out) {
  timed_out = false;
  std::unique_lock<std::mutex> lock(mutex_);
  if (failure_) std::rethrow_exception(failure_);
  if (finished_) return nullptr;
  if (config_.threads == 0) {  // made here, on the caller's thread
    if (!running_) start_workers();
    std::shared_ptr<Batch> batch;
    try {
      batch = produce_step(consumed_, caller_context_);
    } catch (...) {
      failure_ = std::current_exception();
      throw;
    }
    if (!batch) {
      finished_ = true;
      return nullptr;
    }
    ++consumed_;
    position_ = batch->next;
    return batch;
  }
  if (!running_) start_workers();
  Slot& slot = slots_[static_cast<size_t>(consumed_) % slots_.size()];
  if (!ready_cv_.wait_for(lock, timeout, [&] { return slot.step == consumed_; })) {
    timed_out = true;
    return nullptr;
  }
  Slot taken = std::move(slot);
  slot = Slot{};
  if (taken.error || taken.end) {
    if (taken.error) failure_ = taken.error;
    else finished_ = true;
    lock.unlock();
    stop_workers();
    if (taken.error) std::rethrow_exception(taken.error);
    return nullptr;
  }
  ++consumed_;
  position_ = taken.batch->next;
  lock.unlock();
  space_cv_.notify_all();
  return taken.batch;
}

Position Loader::position() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return position_;
}

void Loader::seek(Position position) {
  stop_workers();
  if (!at_end(position) && position.row >= row_count(position.epoch))
    throw std::out_of_range("epoch " + std::to_string(position.epoch) + " has " + std::to_string(row_count(position.epoch)) +
                            " rows; cannot seek to row " + std::to_string(position.row));
  std::lock_guard<std::mutex> lock(mutex_);
  position_ = position;
  consumed_ = 0;
  finished_ = false;
  failure_ = nullptr;
}

void Loader::close() { stop_workers(); }

}  // namespace seedcoder::loader
