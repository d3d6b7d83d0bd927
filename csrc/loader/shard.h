// Scored code shards (.scs) opened for the loader: memory-mapped read-only and validated on open exactly as
// docs/shard_format.md ("What a reader checks on open") says, in the same order and with the same messages as
// the Python ShardReader. Any problem throws ShardError(path, problem); no header value is trusted before it
// is checked, and every size is compared against the file size before it is multiplied, so garbage cannot
// overflow arithmetic or send a read outside the mapping. A Dataset is an ordered list of shards with global
// document ids (shard bases).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace seedcoder::loader {

namespace scs {
inline constexpr uint8_t kMagic[8] = {0x89, 'S', 'C', 'S', '\r', '\n', 0x1A, '\n'};
inline constexpr uint32_t kVersion = 1, kHeaderSize = 256, kHeaderCrcOffset = 252, kSectionCount = 6;
inline constexpr uint64_t kAlignment = 4096;
enum Section : uint32_t { kDocOffsets = 0, kDocuments = 1, kLossMask = 2, kMetadataOffsets = 3, kMetadata = 4, kTokens = 5 };
inline constexpr uint32_t kShardHasLossMask = 1;
inline constexpr uint8_t kDocHasLossMask = 1, kDocRepoLevel = 2, kKnownDocFlags = 3;
inline constexpr const char* kSectionNames[6] = {"doc_offsets", "documents", "loss_mask", "metadata_offsets", "metadata", "tokens"};

struct SectionEntry {
  uint64_t offset;
  uint64_t length;
  uint32_t crc32c;
  uint32_t reserved;
};
struct Header {
  uint8_t magic[8];
  uint32_t version;
  uint32_t header_size;
  uint32_t token_width;
  uint32_t vocab_size;
  uint64_t document_count;
  uint64_t token_count;
  uint64_t file_size;
  uint32_t shard_flags;
  uint32_t section_count;
  uint8_t tokenizer_sha256[32];
  SectionEntry sections[6];
  uint8_t reserved[20];
  uint32_t header_crc32c;
};
struct DocumentRecord {
  float score;
  uint16_t language;
  uint8_t source;
  uint8_t flags;
  uint64_t content_hash;
};
static_assert(sizeof(SectionEntry) == 24 && sizeof(Header) == 256 && offsetof(Header, sections) == 88);
static_assert(offsetof(Header, header_crc32c) == 252 && sizeof(DocumentRecord) == 16);
}  // namespace scs

// "<path>: <problem>"; the bindings turn it into seedcoder.data.shards.ShardError(path, problem).
class ShardError : public std::runtime_error {
 public:
  ShardError(std::string path, std::string problem)
      : std::runtime_error(path + ": " + problem), path_(std::move(path)), problem_(std::move(problem)) {}
  const std::string& path() const { return path_; }
  const std::string& problem() const { return problem_; }

 private:
  std::string path_, problem_;
};

struct OpenOptions {
  std::optional<std::array<uint8_t, 32>> expected_tokenizer_sha256;
  bool verify_checksums = true;  // section CRCs + token ids < vocab + mask bytes in {0, 1}: one pass over the file
  // Sizes of the append-only enumerations this build knows (the Python side passes len(Language), len(Source)).
  uint32_t language_count = 66;
  uint32_t source_count = 6;  // file, repo, commit, web, sft, hq (seedcoder.data.shards.Source)
};

class Shard {
 public:
  // Maps and validates; throws ShardError.
  static std::unique_ptr<Shard> open(const std::string& path, const OpenOptions& options);
  ~Shard();
  Shard(const Shard&) = delete;
  Shard& operator=(const Shard&) = delete;

  const std::string& path() const { return path_; }
  uint64_t document_count() const { return document_count_; }
  uint64_t token_count() const { return token_count_; }
  uint32_t token_width() const { return token_width_; }
  uint32_t vocab_size() const { return vocab_size_; }
  uint32_t header_crc32c() const { return header_crc32c_; }
  bool has_loss_mask() const { return loss_mask_ != nullptr; }
  const std::array<uint8_t, 32>& tokenizer_sha256() const { return tokenizer_sha256_; }

  // Unchecked accessors for hot loops; `document` < document_count() is the caller's promise.
  uint64_t document_begin(uint64_t document) const { return doc_offsets_[document]; }
  uint64_t document_length(uint64_t document) const { return doc_offsets_[document + 1] - doc_offsets_[document]; }
  const scs::DocumentRecord& record(uint64_t document) const { return documents_[document]; }
  const uint8_t* token_bytes() const { return tokens_; }  // token_count() tokens of token_width() bytes
  const uint8_t* loss_mask() const { return loss_mask_; }  // nullptr when the shard has no mask section
  uint32_t token(uint64_t index) const {
    if (token_width_ == 2) return reinterpret_cast<const uint16_t*>(tokens_)[index];
    return reinterpret_cast<const uint32_t*>(tokens_)[index];
  }

 private:
  Shard() = default;
  std::string path_;
  void* map_ = nullptr;
  size_t map_size_ = 0;
  uint64_t document_count_ = 0, token_count_ = 0;
  uint32_t token_width_ = 0, vocab_size_ = 0, header_crc32c_ = 0;
  std::array<uint8_t, 32> tokenizer_sha256_{};
  const uint64_t* doc_offsets_ = nullptr;
  const scs::DocumentRecord* documents_ = nullptr;
  const uint8_t* loss_mask_ = nullptr;
  const uint8_t* tokens_ = nullptr;
};

// Shards in a fixed order; global document id = shard base + local index (bases are prefix sums of counts).
class Dataset {
 public:
  // Opens every shard (on up to `threads` threads: the CRC pass dominates); the first failure (in path order)
  // is rethrown. All shards must share one tokenizer SHA-256 and vocab size.
  Dataset(const std::vector<std::string>& paths, const OpenOptions& options, unsigned threads = 1);

  size_t shard_count() const { return shards_.size(); }
  const Shard& shard(size_t index) const { return *shards_.at(index); }
  uint64_t document_count() const { return shard_bases_.back(); }
  uint64_t token_count() const { return token_count_; }
  uint32_t vocab_size() const { return shards_.front()->vocab_size(); }

  struct Location {
    const Shard* shard;
    uint32_t shard_index;
    uint64_t document;  // local index in the shard
  };
  // O(log shards). Throws std::out_of_range for an id >= document_count().
  Location locate(uint64_t global_document) const;
  uint64_t shard_base(size_t index) const { return shard_bases_.at(index); }

 private:
  std::vector<std::unique_ptr<Shard>> shards_;
  std::vector<uint64_t> shard_bases_;  // shard_count + 1
  uint64_t token_count_ = 0;
};

}  // namespace seedcoder::loader
