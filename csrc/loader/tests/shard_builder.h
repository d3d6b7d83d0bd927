// Writes valid .scs shards for the C++ tests (the canonical layout of docs/shard_format.md), so the tests do
// not depend on Python. Documents are given as token vectors with their record fields.
#pragma once

#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "crc32c.h"
#include "shard.h"

namespace seedcoder::test {

struct TestDocument {
  std::vector<uint32_t> tokens;
  float score = 5.0f;
  uint16_t language = 2;  // python
  uint8_t source = 0;     // file
  uint8_t flags = 0;
  std::vector<uint8_t> loss_mask;  // empty: none (flags gets HAS_LOSS_MASK otherwise)
};

inline std::string temp_directory() {
  static std::string directory;
  if (directory.empty()) {
    char pattern[] = "/tmp/seedcoder-loader-test-XXXXXX";
    directory = mkdtemp(pattern);
  }
  return directory;
}

inline std::vector<uint8_t> build_shard(const std::vector<TestDocument>& documents, uint32_t vocab_size, uint8_t sha_byte = 0xAB) {
  using namespace seedcoder::loader;
  const uint32_t width = vocab_size <= 65536 ? 2 : 4;
  bool has_mask = false;
  for (const auto& d : documents) has_mask = has_mask || !d.loss_mask.empty();
  std::vector<uint8_t> sections[6];
  auto append = [](std::vector<uint8_t>& out, const void* data, size_t bytes) {
    out.insert(out.end(), static_cast<const uint8_t*>(data), static_cast<const uint8_t*>(data) + bytes);
  };
  uint64_t offset = 0, metadata_offset = 0;
  append(sections[0], &offset, 8);
  append(sections[3], &metadata_offset, 8);
  for (size_t i = 0; i < documents.size(); ++i) {
    const auto& d = documents[i];
    offset += d.tokens.size();
    append(sections[0], &offset, 8);
    scs::DocumentRecord record{d.score, d.language, d.source, static_cast<uint8_t>(d.flags | (d.loss_mask.empty() ? 0 : 1)), 1000 + i};
    append(sections[1], &record, sizeof record);
    if (has_mask) {
      if (d.loss_mask.empty()) sections[2].insert(sections[2].end(), d.tokens.size(), 1);
      else append(sections[2], d.loss_mask.data(), d.loss_mask.size());
    }
    const std::string metadata = "{\"id\":\"doc-" + std::to_string(i) + "\"}";
    append(sections[4], metadata.data(), metadata.size());
    metadata_offset += metadata.size();
    append(sections[3], &metadata_offset, 8);
    for (uint32_t token : d.tokens) {
      if (width == 2) {
        const auto narrow = static_cast<uint16_t>(token);
        append(sections[5], &narrow, 2);
      } else {
        append(sections[5], &token, 4);
      }
    }
  }
  scs::Header header{};
  std::memcpy(header.magic, scs::kMagic, 8);
  header.version = 1;
  header.header_size = 256;
  header.token_width = width;
  header.vocab_size = vocab_size;
  header.document_count = documents.size();
  header.token_count = offset;
  header.shard_flags = has_mask ? 1 : 0;
  header.section_count = 6;
  std::memset(header.tokenizer_sha256, sha_byte, 32);
  uint64_t position = 4096;
  for (int s = 0; s < 6; ++s) {
    header.sections[s] = {position, sections[s].size(), crc32c(sections[s].data(), sections[s].size()), 0};
    position = (position + sections[s].size() + 4095) / 4096 * 4096;
  }
  header.file_size = position;
  std::vector<uint8_t> file(position, 0);
  std::memcpy(file.data(), &header, sizeof header);
  const uint32_t header_crc = crc32c(file.data(), 252);
  std::memcpy(file.data() + 252, &header_crc, 4);
  for (int s = 0; s < 6; ++s)
    if (!sections[s].empty()) std::memcpy(file.data() + header.sections[s].offset, sections[s].data(), sections[s].size());
  return file;
}

inline std::string write_file(const std::string& name, const std::vector<uint8_t>& bytes) {
  const std::string path = temp_directory() + "/" + name;
  FILE* file = std::fopen(path.c_str(), "wb");
  if (!file) throw std::runtime_error("cannot write " + path);
  if (!bytes.empty()) std::fwrite(bytes.data(), 1, bytes.size(), file);
  std::fclose(file);
  return path;
}

// `count` documents of random lengths in [1, max_length] whose tokens encode (document, position), so a test
// can tell where every output token came from: token = (document * 1000 + position) % vocab, with vocab large.
inline std::vector<TestDocument> numbered_documents(size_t count, uint32_t max_length, uint32_t seed, uint32_t vocab = 1u << 24) {
  std::mt19937 rng(seed);
  std::vector<TestDocument> documents(count);
  for (size_t i = 0; i < count; ++i) {
    const uint32_t length = 1 + rng() % max_length;
    for (uint32_t p = 0; p < length; ++p) documents[i].tokens.push_back(static_cast<uint32_t>((i * 1000 + p) % vocab));
    documents[i].score = static_cast<float>(rng() % 1000) / 100.0f;
    documents[i].language = static_cast<uint16_t>(2 + rng() % 3);
    documents[i].source = static_cast<uint8_t>(rng() % 3);
  }
  return documents;
}

}  // namespace seedcoder::test
