// Shard open + validation (the checks of docs/shard_format.md, in order) and the Dataset of shards.
#include "shard.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <exception>
#include <thread>

#include "crc32c.h"

namespace seedcoder::loader {
namespace {

using u128 = unsigned __int128;

std::string to_string_u128(u128 value) {
  if (value == 0) return "0";
  std::string digits;
  while (value) {
    digits.push_back(static_cast<char>('0' + static_cast<int>(value % 10)));
    value /= 10;
  }
  std::reverse(digits.begin(), digits.end());
  return digits;
}

std::string hex32(uint32_t value) {
  char text[16];
  std::snprintf(text, sizeof text, "0x%08x", value);
  return text;
}

std::string hex_bytes(const uint8_t* bytes, size_t count, bool spaced) {
  static const char* digits = "0123456789abcdef";
  std::string text;
  for (size_t i = 0; i < count; ++i) {
    if (spaced && i) text.push_back(' ');
    text.push_back(digits[bytes[i] >> 4]);
    text.push_back(digits[bytes[i] & 15]);
  }
  return text;
}

// Python's repr of a float32 score widened to double, close enough for an error message.
std::string float_repr(float value) {
  if (std::isnan(value)) return "nan";
  if (std::isinf(value)) return value > 0 ? "inf" : "-inf";
  char text[32];
  std::snprintf(text, sizeof text, "%.9g", static_cast<double>(value));
  return text;
}

uint64_t align_up(uint64_t value) { return (value + scs::kAlignment - 1) / scs::kAlignment * scs::kAlignment; }

// Owns the fd until the map exists (the map outlives the fd).
struct FileDescriptor {
  int fd = -1;
  ~FileDescriptor() {
    if (fd >= 0) ::close(fd);
  }
};

template <typename T>
uint64_t max_of(const T* values, uint64_t count) {
  T largest = 0;
  for (uint64_t i = 0; i < count; ++i) largest = values[i] > largest ? values[i] : largest;  // vectorizes
  return largest;
}

}  // namespace

std::unique_ptr<Shard> Shard::open(const std::string& path, const OpenOptions& options) {
  auto fail = [&](const std::string& problem) { return ShardError(path, problem); };

  FileDescriptor file;
  file.fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (file.fd < 0) throw fail(std::string("cannot open: ") + std::strerror(errno));
  struct stat status {};
  if (::fstat(file.fd, &status) != 0) throw fail(std::string("cannot stat: ") + std::strerror(errno));
  if (!S_ISREG(status.st_mode)) throw fail("cannot open: not a regular file");
  const uint64_t actual_size = static_cast<uint64_t>(status.st_size);

  // 1. big enough for the header
  if (actual_size < scs::kHeaderSize)
    throw fail("truncated: the file is " + std::to_string(actual_size) + " bytes, smaller than the 256-byte header");

  std::unique_ptr<Shard> shard(new Shard());
  shard->path_ = path;
  void* map = ::mmap(nullptr, actual_size, PROT_READ, MAP_SHARED, file.fd, 0);
  if (map == MAP_FAILED) throw fail(std::string("cannot memory-map: ") + std::strerror(errno));
  shard->map_ = map;
  shard->map_size_ = actual_size;
  const auto* base = static_cast<const uint8_t*>(map);

  scs::Header header;
  std::memcpy(&header, base, sizeof header);

  // 2. magic, 3. version (before the CRC: a newer header may differ), 4. header CRC
  if (std::memcmp(header.magic, scs::kMagic, 8) != 0)
    throw fail("not a shard: bad magic " + hex_bytes(header.magic, 8, true) + " (expected " + hex_bytes(scs::kMagic, 8, true) + ")");
  if (header.version != scs::kVersion)
    throw fail("unsupported format version " + std::to_string(header.version) + " (this reader reads version 1)");
  const uint32_t computed_header_crc = crc32c(base, scs::kHeaderCrcOffset);
  if (header.header_crc32c != computed_header_crc)
    throw fail("header checksum mismatch (stored " + hex32(header.header_crc32c) + ", computed " + hex32(computed_header_crc) +
               "): corrupted header");

  // 5. fields
  auto bad = [&](const std::string& problem) { return fail("bad header: " + problem); };
  if (header.header_size != scs::kHeaderSize) throw bad("header_size " + std::to_string(header.header_size) + " (expected 256)");
  if (header.section_count != scs::kSectionCount)
    throw bad("section_count " + std::to_string(header.section_count) + " (expected 6)");
  bool reserved_zero = std::all_of(std::begin(header.reserved), std::end(header.reserved), [](uint8_t b) { return b == 0; });
  for (const auto& entry : header.sections) reserved_zero = reserved_zero && entry.reserved == 0;
  if (!reserved_zero) throw bad("reserved bytes are not zero");
  if (header.vocab_size == 0) throw bad("vocab_size is 0");
  const uint32_t expected_width = header.vocab_size <= 65536u ? 2 : 4;
  if (header.token_width != expected_width)
    throw bad("token_width " + std::to_string(header.token_width) + " for vocab_size " + std::to_string(header.vocab_size) +
              " (expected " + std::to_string(expected_width) + ")");
  if (header.shard_flags & ~scs::kShardHasLossMask) {
    char text[32];
    std::snprintf(text, sizeof text, "%#x", header.shard_flags & ~scs::kShardHasLossMask);
    throw bad(std::string("unknown shard_flags bits ") + text);
  }
  const bool has_mask = header.shard_flags & scs::kShardHasLossMask;
  const uint64_t n = header.document_count, tokens = header.token_count, file_size = header.file_size;
  if (n == 0) throw bad("document_count is 0 (a shard holds at least one document)");
  if (tokens < n)
    throw bad("token_count " + std::to_string(tokens) + " < document_count " + std::to_string(n) + " (documents are never empty)");
  if (file_size % scs::kAlignment) throw bad("file_size " + std::to_string(file_size) + " is not a multiple of 4096");

  // Expected lengths in 128 bits: the counts are untrusted, the products cannot overflow there.
  const u128 expected_length[6] = {
      (u128(n) + 1) * 8, u128(n) * sizeof(scs::DocumentRecord), has_mask ? u128(tokens) : u128(0), (u128(n) + 1) * 8, 0,
      u128(tokens) * header.token_width};
  const bool length_fixed[6] = {true, true, true, true, false, true};
  u128 previous_end = scs::kAlignment;  // the header page
  for (uint32_t s = 0; s < scs::kSectionCount; ++s) {
    const auto& entry = header.sections[s];
    const std::string name = scs::kSectionNames[s];
    if (length_fixed[s] && u128(entry.length) != expected_length[s])
      throw bad("section '" + name + "' has length " + std::to_string(entry.length) + " (expected " +
                to_string_u128(expected_length[s]) + " from the counts)");
    if (entry.offset % scs::kAlignment)
      throw bad("section '" + name + "' offset " + std::to_string(entry.offset) + " is not a multiple of 4096");
    if (u128(entry.offset) < previous_end)
      throw bad("section '" + name + "' at offset " + std::to_string(entry.offset) +
                " overlaps the header or the section before (ending at " + to_string_u128(previous_end) + ")");
    const u128 end = u128(entry.offset) + entry.length;
    if (end > file_size)
      throw bad("section '" + name + "' [" + std::to_string(entry.offset) + ", " + to_string_u128(end) + ") runs past file_size " +
                std::to_string(file_size));
    previous_end = end;
  }
  // Every section now lies inside [4096, file_size], file_size < 2^64: plain u64 arithmetic is safe below.
  if (file_size != align_up(static_cast<uint64_t>(previous_end)))
    throw bad("file_size " + std::to_string(file_size) + " does not end the last section (expected " +
              std::to_string(align_up(static_cast<uint64_t>(previous_end))) + ")");

  // 6. the real size
  if (actual_size != file_size) {
    if (actual_size > file_size)
      throw fail("size mismatch: the file is " + std::to_string(actual_size) + " bytes, the header says " + std::to_string(file_size));
    std::string where;
    for (uint32_t s = 0; s < scs::kSectionCount; ++s)
      if (header.sections[s].offset + header.sections[s].length > actual_size) {
        where = std::string(" inside section '") + scs::kSectionNames[s] + "'";
        break;
      }
    throw fail("truncated" + where + ": the file is " + std::to_string(actual_size) + " bytes, the header says " +
               std::to_string(file_size));
  }

  // 7. tokenizer
  if (options.expected_tokenizer_sha256 &&
      std::memcmp(options.expected_tokenizer_sha256->data(), header.tokenizer_sha256, 32) != 0)
    throw fail("tokenizer mismatch: the shard was tokenized with a tokenizer of SHA-256 " + hex_bytes(header.tokenizer_sha256, 32, false) +
               ", expected " + hex_bytes(options.expected_tokenizer_sha256->data(), 32, false));

  // 8. section checksums
  const uint8_t* section[6];
  for (uint32_t s = 0; s < scs::kSectionCount; ++s) section[s] = base + header.sections[s].offset;
  if (options.verify_checksums)
    for (uint32_t s = 0; s < scs::kSectionCount; ++s) {
      const uint32_t computed = crc32c(section[s], header.sections[s].length);
      if (computed != header.sections[s].crc32c)
        throw fail(std::string("checksum mismatch in section '") + scs::kSectionNames[s] + "' (stored " +
                   hex32(header.sections[s].crc32c) + ", computed " + hex32(computed) + "): corrupted data");
    }

  // 9. contents
  const auto* doc_offsets = reinterpret_cast<const uint64_t*>(section[scs::kDocOffsets]);
  if (doc_offsets[0] != 0 || doc_offsets[n] != tokens)
    throw fail("document offsets run [" + std::to_string(doc_offsets[0]) + ", " + std::to_string(doc_offsets[n]) +
               "], expected [0, " + std::to_string(tokens) + "]");
  for (uint64_t i = 0; i < n; ++i)
    if (doc_offsets[i + 1] <= doc_offsets[i])
      throw fail("document offsets are not strictly increasing at document " + std::to_string(i) + " (empty or negative length)");
  const auto* metadata_offsets = reinterpret_cast<const uint64_t*>(section[scs::kMetadataOffsets]);
  const uint64_t metadata_length = header.sections[scs::kMetadata].length;
  if (metadata_offsets[0] != 0 || metadata_offsets[n] != metadata_length)
    throw fail("metadata offsets run [" + std::to_string(metadata_offsets[0]) + ", " + std::to_string(metadata_offsets[n]) +
               "], expected [0, " + std::to_string(metadata_length) + "] (the metadata section's length)");
  for (uint64_t i = 0; i < n; ++i)
    if (metadata_offsets[i + 1] < metadata_offsets[i]) throw fail("metadata offsets decrease at document " + std::to_string(i));
  const auto* records = reinterpret_cast<const scs::DocumentRecord*>(section[scs::kDocuments]);
  for (uint64_t i = 0; i < n; ++i)
    if (!std::isfinite(records[i].score))
      throw fail("document " + std::to_string(i) + " has a score that is not finite (" + float_repr(records[i].score) + ")");
  for (uint64_t i = 0; i < n; ++i)
    if (records[i].language >= options.language_count)
      throw fail("document " + std::to_string(i) + " has an unknown language id (" + std::to_string(records[i].language) + ")");
  for (uint64_t i = 0; i < n; ++i)
    if (records[i].source >= options.source_count)
      throw fail("document " + std::to_string(i) + " has an unknown source id (" + std::to_string(records[i].source) + ")");
  for (uint64_t i = 0; i < n; ++i)
    if (records[i].flags & ~scs::kKnownDocFlags)
      throw fail("document " + std::to_string(i) + " has unknown flag bits (" + std::to_string(records[i].flags) + ")");
  if (!has_mask)
    for (uint64_t i = 0; i < n; ++i)
      if (records[i].flags & scs::kDocHasLossMask)
        throw fail("document " + std::to_string(i) + " is flagged HAS_LOSS_MASK but the shard has no loss mask section");
  if (options.verify_checksums) {
    const uint64_t largest = header.token_width == 2 ? max_of(reinterpret_cast<const uint16_t*>(section[scs::kTokens]), tokens)
                                                     : max_of(reinterpret_cast<const uint32_t*>(section[scs::kTokens]), tokens);
    if (largest >= header.vocab_size)
      throw fail("token id " + std::to_string(largest) + " >= vocab_size " + std::to_string(header.vocab_size));
    if (has_mask && max_of(section[scs::kLossMask], tokens) > 1) throw fail("loss mask holds values other than 0 and 1");
  }

  shard->document_count_ = n;
  shard->token_count_ = tokens;
  shard->token_width_ = header.token_width;
  shard->vocab_size_ = header.vocab_size;
  shard->header_crc32c_ = header.header_crc32c;
  std::memcpy(shard->tokenizer_sha256_.data(), header.tokenizer_sha256, 32);
  shard->doc_offsets_ = doc_offsets;
  shard->documents_ = records;
  shard->loss_mask_ = has_mask ? section[scs::kLossMask] : nullptr;
  shard->tokens_ = section[scs::kTokens];
  return shard;
}

Shard::~Shard() {
  if (map_) ::munmap(map_, map_size_);
}

Dataset::Dataset(const std::vector<std::string>& paths, const OpenOptions& options, unsigned threads) {
  if (paths.empty()) throw std::invalid_argument("Dataset: no shards given");
  shards_.resize(paths.size());
  std::vector<std::exception_ptr> errors(paths.size());
  std::atomic<size_t> next{0};
  auto open_some = [&] {
    for (size_t i; (i = next.fetch_add(1)) < paths.size();) {
      try {
        shards_[i] = Shard::open(paths[i], options);
      } catch (...) {
        errors[i] = std::current_exception();
      }
    }
  };
  const unsigned workers = std::max(1u, std::min<unsigned>(threads, static_cast<unsigned>(paths.size())));
  std::vector<std::thread> pool;
  for (unsigned t = 1; t < workers; ++t) pool.emplace_back(open_some);
  open_some();
  for (auto& thread : pool) thread.join();
  for (const auto& error : errors)
    if (error) std::rethrow_exception(error);

  shard_bases_.assign(1, 0);
  const Shard& first = *shards_.front();
  for (const auto& shard : shards_) {
    if (shard->tokenizer_sha256() != first.tokenizer_sha256() || shard->vocab_size() != first.vocab_size())
      throw ShardError(shard->path(), "tokenizer mismatch: this shard and " + first.path() +
                                          " were made with different tokenizers (SHA-256 or vocab size differ)");
    shard_bases_.push_back(shard_bases_.back() + shard->document_count());
    token_count_ += shard->token_count();
  }
  if (shard_bases_.back() >= (uint64_t{1} << 32))
    throw std::invalid_argument("Dataset: " + std::to_string(shard_bases_.back()) +
                                " documents; the loader addresses at most 2^32 - 1 per dataset (open several loaders)");
}

Dataset::Location Dataset::locate(uint64_t global_document) const {
  if (global_document >= document_count())
    throw std::out_of_range("document " + std::to_string(global_document) + " out of range (the dataset holds " +
                            std::to_string(document_count()) + ")");
  const auto it = std::upper_bound(shard_bases_.begin(), shard_bases_.end(), global_document);
  const auto shard_index = static_cast<uint32_t>(it - shard_bases_.begin() - 1);
  return {shards_[shard_index].get(), shard_index, global_document - shard_bases_[shard_index]};
}

}  // namespace seedcoder::loader
