// Shard open: a valid shard reads back; every kind of damage is a ShardError naming the file and the problem.
#include <cstring>

#include "check.h"
#include "shard.h"
#include "shard_builder.h"

using namespace seedcoder::loader;
using namespace seedcoder::test;

namespace {
std::vector<uint8_t> valid_shard(bool masks = false) {
  auto documents = numbered_documents(20, 300, 3);
  if (masks) documents[4].loss_mask.assign(documents[4].tokens.size(), 1), documents[4].loss_mask[0] = 0;
  return build_shard(documents, 1u << 24);
}

void rewrite_header_crc(std::vector<uint8_t>& file) {
  const uint32_t crc = crc32c(file.data(), 252);
  std::memcpy(file.data() + 252, &crc, 4);
}

scs::Header header_of(const std::vector<uint8_t>& file) {
  scs::Header header;
  std::memcpy(&header, file.data(), sizeof header);
  return header;
}

void expect_error(const std::string& name, const std::vector<uint8_t>& file, const char* fragment, OpenOptions options = {}) {
  const std::string path = write_file(name, file);
  CHECK_THROWS_WITH(Shard::open(path, options), fragment);
  try {
    Shard::open(path, options);
  } catch (const ShardError& error) {
    CHECK(error.path() == path);
  } catch (...) {
    CHECK(false);  // must be a ShardError
  }
}
}  // namespace

TEST_CASE(valid_shard_reads_back) {
  const auto documents = numbered_documents(20, 300, 3);
  const std::string path = write_file("valid.scs", build_shard(documents, 1u << 24));
  auto shard = Shard::open(path, {});
  CHECK_EQ(shard->document_count(), 20u);
  CHECK_EQ(shard->token_width(), 4u);
  for (size_t d = 0; d < documents.size(); ++d) {
    CHECK_EQ(shard->document_length(d), documents[d].tokens.size());
    for (size_t p = 0; p < documents[d].tokens.size(); ++p) CHECK_EQ(shard->token(shard->document_begin(d) + p), documents[d].tokens[p]);
  }
  auto narrow = Shard::open(write_file("narrow.scs", build_shard(numbered_documents(5, 50, 1, 60000), 60000)), {});
  CHECK_EQ(narrow->token_width(), 2u);
  auto masked = Shard::open(write_file("masked.scs", valid_shard(true)), {});
  CHECK(masked->has_loss_mask());
}

TEST_CASE(damage_is_named) {
  const auto good = valid_shard(true);
  expect_error("tiny.scs", std::vector<uint8_t>(good.begin(), good.begin() + 100), "truncated: the file is 100 bytes");
  auto bad_magic = good;
  bad_magic[1] = 'X';
  expect_error("magic.scs", bad_magic, "not a shard: bad magic");
  auto version = good;
  version[8] = 2;
  expect_error("version.scs", version, "unsupported format version 2");
  auto header_flip = good;
  header_flip[30] ^= 1;
  expect_error("header.scs", header_flip, "header checksum mismatch");
  auto width = good;
  width[16] = 2;  // u16 with a 2^24 vocab
  rewrite_header_crc(width);
  expect_error("width.scs", width, "bad header: token_width 2");
  auto count = good;
  const uint64_t huge = ~uint64_t{0} / 3;
  std::memcpy(count.data() + 24, &huge, 8);  // document_count: products would overflow 64 bits
  rewrite_header_crc(count);
  expect_error("count.scs", count, "bad header: token_count");
  const scs::Header header = header_of(good);
  for (int s = 0; s < 6; ++s) {
    const uint64_t end = header.sections[s].offset + header.sections[s].length;
    if (header.sections[s].length == 0) continue;
    expect_error("cut" + std::to_string(s) + ".scs", std::vector<uint8_t>(good.begin(), good.begin() + (end - 1)),
                 (std::string("truncated inside section '") + scs::kSectionNames[s] + "'").c_str());
  }
  auto longer = good;
  longer.resize(longer.size() + 4096);
  expect_error("long.scs", longer, "size mismatch");
  for (int s = 0; s < 6; ++s) {
    if (header.sections[s].length == 0) continue;
    auto flipped = good;
    flipped[header.sections[s].offset + header.sections[s].length / 2] ^= 0x40;
    expect_error("flip" + std::to_string(s) + ".scs", flipped, (std::string("checksum mismatch in section '") + scs::kSectionNames[s]).c_str());
  }
  OpenOptions wrong_tokenizer;
  wrong_tokenizer.expected_tokenizer_sha256 = std::array<uint8_t, 32>{};
  expect_error("tokenizer.scs", good, "tokenizer mismatch", wrong_tokenizer);
  expect_error("missing.scs", {}, "truncated");
  CHECK_THROWS_WITH(Shard::open(temp_directory() + "/does-not-exist.scs", {}), "cannot open");
}

TEST_CASE(bad_contents_with_valid_checksums) {
  auto documents = numbered_documents(6, 40, 5);
  documents[3].language = 200;
  expect_error("language.scs", build_shard(documents, 1u << 24), "document 3 has an unknown language id (200)");
  documents = numbered_documents(6, 40, 5);
  documents[2].score = std::numeric_limits<float>::infinity();
  expect_error("score.scs", build_shard(documents, 1u << 24), "document 2 has a score that is not finite");
  documents = numbered_documents(6, 40, 5, 4000);
  documents[1].tokens[0] = 5000;
  expect_error("vocab.scs", build_shard(documents, 4000), "token id 5000 >= vocab_size 4000");
}

TEST_CASE(fuzzed_headers_never_crash) {
  const auto good = valid_shard();
  std::mt19937 rng(11);
  int rejected = 0;
  for (int trial = 0; trial < 400; ++trial) {
    auto file = good;
    const int flips = 1 + static_cast<int>(rng() % 4);
    for (int f = 0; f < flips; ++f) file[rng() % 252] = static_cast<uint8_t>(rng());
    if (trial % 2) rewrite_header_crc(file);  // half pass the header CRC, so the field checks get exercised
    const std::string path = write_file("fuzz.scs", file);
    try {
      auto shard = Shard::open(path, {});
      (void)shard;
    } catch (const ShardError&) {
      ++rejected;
    }
  }
  CHECK(rejected > 300);
}

TEST_CASE(dataset_locates_documents) {
  const std::string a = write_file("a.scs", build_shard(numbered_documents(7, 20, 1), 1u << 24));
  const std::string b = write_file("b.scs", build_shard(numbered_documents(5, 20, 2), 1u << 24));
  Dataset dataset({a, b}, {}, 2);
  CHECK_EQ(dataset.document_count(), 12u);
  CHECK_EQ(dataset.locate(6).shard_index, 0u);
  CHECK_EQ(dataset.locate(7).shard_index, 1u);
  CHECK_EQ(dataset.locate(11).document, 4u);
  CHECK_THROWS_WITH(dataset.locate(12), "out of range");
  const std::string other = write_file("other.scs", build_shard(numbered_documents(5, 20, 2), 1u << 24, 0xCD));
  CHECK_THROWS_WITH(Dataset({a, other}, {}, 1), "tokenizer mismatch");
}

TEST_MAIN()
