// Unit tests and a throughput measurement for the byte-level BPE and SPM fill-in-the-middle.
// Plain C++: every check failure prints where and the program exits non-zero. Built by ctest (see
// csrc/loader/tests/CMakeLists.txt) or by hand:
//   g++ -O3 -std=c++17 -I csrc/loader csrc/loader/bpe.cpp csrc/loader/fim.cpp csrc/loader/tests/test_bpe_fim.cpp -o test_bpe_fim
// Arguments: none = the checks plus a short throughput run (ctest); --bench = the full throughput
// measurement (16M tokens, best of 5); --no-bench = checks only (e.g. under sanitizers); --vocab N = the
// vocabulary size of the throughput run (default 155136, Seed-Coder's).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <functional>
#include <map>
#include <random>
#include <set>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "bpe.h"
#include "fim.h"

using seedcoder::fim::apply_spm;
using seedcoder::fim::ByteLevelBPE;
using seedcoder::fim::FimSpec;
using seedcoder::fim::plan_spm;
using seedcoder::fim::SpmPlan;

namespace {

int g_failures = 0;

#define CHECK(condition)                                                            \
  do {                                                                              \
    if (!(condition)) {                                                             \
      std::fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #condition); \
      ++g_failures;                                                                 \
    }                                                                               \
  } while (0)

template <typename Exception>
bool throws(const std::function<void()>& body) {
  try {
    body();
  } catch (const Exception&) {
    return true;
  } catch (...) {
    return false;
  }
  return false;
}

using Merges = std::vector<std::pair<uint32_t, uint32_t>>;

// A vocabulary builder: 256 byte tokens, then merged tokens, then atomic specials at the end.
struct Vocab {
  std::vector<std::string> id_to_bytes;
  Merges merges;
  std::unordered_map<std::string, uint32_t> ids;

  Vocab() {
    for (int byte = 0; byte < 256; ++byte) add(std::string(1, static_cast<char>(byte)));
  }
  uint32_t add(const std::string& bytes) {
    const uint32_t id = static_cast<uint32_t>(id_to_bytes.size());
    id_to_bytes.push_back(bytes);
    ids.emplace(bytes, id);
    return id;
  }
  // Adds the merge (left, right) unless its result exists already; returns the result's id.
  uint32_t merge(uint32_t left, uint32_t right) {
    const std::string bytes = id_to_bytes[left] + id_to_bytes[right];
    const auto found = ids.find(bytes);
    if (found != ids.end()) return found->second;
    merges.emplace_back(left, right);
    return add(bytes);
  }
  uint32_t merge(const std::string& left, const std::string& right) { return merge(ids.at(left), ids.at(right)); }
};

// Independent reference: whole-sequence scan for the lowest-rank pair, leftmost first.
std::vector<uint32_t> reference_encode(const Vocab& vocab, const std::string& bytes) {
  std::map<std::pair<uint32_t, uint32_t>, std::pair<size_t, uint32_t>> rank_of;
  for (size_t rank = 0; rank < vocab.merges.size(); ++rank) {
    const auto& merge = vocab.merges[rank];
    if (!rank_of.count(merge)) rank_of[merge] = {rank, vocab.ids.at(vocab.id_to_bytes[merge.first] + vocab.id_to_bytes[merge.second])};
  }
  std::vector<uint32_t> symbols;
  for (unsigned char byte : bytes) symbols.push_back(byte);
  for (;;) {
    size_t best = symbols.size();
    size_t best_rank = SIZE_MAX;
    for (size_t i = 0; i + 1 < symbols.size(); ++i) {
      const auto found = rank_of.find({symbols[i], symbols[i + 1]});
      if (found != rank_of.end() && found->second.first < best_rank) best_rank = found->second.first, best = i;
    }
    if (best == symbols.size()) return symbols;
    symbols[best] = rank_of[{symbols[best], symbols[best + 1]}].second;
    symbols.erase(symbols.begin() + static_cast<long>(best) + 1);
  }
}

std::string concat_bytes(const ByteLevelBPE& bpe, const uint32_t* tokens, size_t n) {
  std::string bytes;
  for (size_t i = 0; i < n; ++i) bytes += bpe.token_bytes(tokens[i]);
  return bytes;
}

void test_encode_small() {
  Vocab vocab;
  const uint32_t ab = vocab.merge("a", "b");
  const uint32_t abc = vocab.merge("ab", "c");
  const uint32_t aa = vocab.merge("a", "a");
  const uint32_t bc = vocab.merge("b", "c");  // rank after "ab": "abc" must win over "a"+"bc"
  const uint32_t special = vocab.add("<eos>");
  ByteLevelBPE bpe(vocab.id_to_bytes, vocab.merges);
  std::vector<uint32_t> out;
  bpe.encode("abc", out);
  CHECK((out == std::vector<uint32_t>{abc}));
  out.clear();
  bpe.encode("aaa", out);  // leftmost first: (aa) a
  CHECK((out == std::vector<uint32_t>{aa, 'a'}));
  out.clear();
  bpe.encode("xbc", out);
  CHECK((out == std::vector<uint32_t>{'x', bc}));
  out = {7};
  bpe.encode("", out);  // appends nothing
  CHECK((out == std::vector<uint32_t>{7}));
  out.clear();
  bpe.encode("ab", out);
  CHECK((out == std::vector<uint32_t>{ab}));
  CHECK(bpe.token_bytes(special) == "<eos>");
  CHECK(bpe.is_atomic(special) && !bpe.is_atomic(ab) && !bpe.is_atomic('a'));
  CHECK(bpe.char_counts()[special] == 1 && bpe.char_counts()[abc] == 3);
  CHECK(bpe.merge_count() == 4);
  CHECK(throws<std::out_of_range>([&] { bpe.token_bytes(bpe.vocab_size()); }));
  CHECK(throws<std::out_of_range>([&] { bpe.char_byte_offset(abc, 3); }));
  CHECK(bpe.char_byte_offset(abc, 2) == 2);

  // A long fragment takes the heap path.
  std::string long_text;
  for (int i = 0; i < 100; ++i) long_text += "abcaa";
  out.clear();
  bpe.encode(long_text, out);
  CHECK(out == reference_encode(vocab, long_text));

  // ignore_merges: a fragment that is a vocabulary token is that token even when merges would not make it.
  Vocab odd;
  odd.merge("b", "c");
  const uint32_t ab_odd = odd.merge("a", "b");
  const uint32_t abc_odd = odd.merge(ab_odd, odd.ids.at("c"));  // "abc" = (ab, c), but BPE makes a + bc
  ByteLevelBPE plain(odd.id_to_bytes, odd.merges, false), whole(odd.id_to_bytes, odd.merges, true);
  out.clear();
  plain.encode("abc", out);
  CHECK((out == std::vector<uint32_t>{'a', odd.ids.at("bc")}));
  out.clear();
  whole.encode("abc", out);
  CHECK((out == std::vector<uint32_t>{abc_odd}));
}

void test_constructor_errors() {
  Vocab vocab;
  vocab.merge("a", "b");
  Merges bad_id = vocab.merges;
  bad_id.emplace_back(5, 100000);
  CHECK(throws<std::invalid_argument>([&] { ByteLevelBPE(vocab.id_to_bytes, bad_id); }));
  Merges missing_result = vocab.merges;
  missing_result.emplace_back('x', 'y');  // "xy" is not in the vocabulary
  CHECK(throws<std::invalid_argument>([&] { ByteLevelBPE(vocab.id_to_bytes, missing_result); }));
  // A vocabulary without some byte: encoding that byte is an error, not a crash.
  std::vector<std::string> no_z;
  for (int byte = 0; byte < 256; ++byte)
    if (byte != 'z') no_z.emplace_back(1, static_cast<char>(byte));
  ByteLevelBPE partial(no_z, {});
  std::vector<uint32_t> out;
  CHECK(throws<std::invalid_argument>([&] { partial.encode("az", out); }));
  ByteLevelBPE empty({}, {});
  CHECK(empty.vocab_size() == 0);
  CHECK(throws<std::invalid_argument>([&] { empty.encode("a", out); }));
}

// A token of more than 255 characters: the wide character table is used, cuts still land exactly.
void test_long_token() {
  Vocab vocab;
  uint32_t power[10];
  power[0] = 'a';
  for (int k = 1; k < 10; ++k) power[k] = vocab.merge(power[k - 1], power[k - 1]);  // "a" * 2^k
  const uint32_t long_token = vocab.merge(vocab.merge(vocab.merge(power[8], power[5]), power[3]), power[2]);  // 300 chars
  const uint32_t eos = vocab.add("<eos>");
  const ByteLevelBPE bpe(vocab.id_to_bytes, vocab.merges);
  CHECK(bpe.narrow_char_counts() == nullptr && bpe.char_counts()[long_token] == 300);
  const FimSpec spec{eos, eos, eos, eos, 1.0};
  const std::vector<uint32_t> doc = {'x', long_token, 'y', power[9]};
  for (uint64_t doc_id = 0; doc_id < 200; ++doc_id) {
    std::vector<uint32_t> out;
    CHECK(apply_spm(doc.data(), doc.size(), bpe, spec, 0, 0, doc_id, out));
    const SpmPlan plan = plan_spm(doc.data(), doc.size(), bpe, spec, 0, 0, doc_id);
    CHECK(plan.length == 814);
    // All markers are the same id here: concatenating everything but them gives S P M.
    std::string joined;
    for (uint32_t t : out)
      if (t != eos) joined += bpe.token_bytes(t);
    const std::string text = concat_bytes(bpe, doc.data(), doc.size());
    CHECK(joined == text.substr(plan.middle_end) + text.substr(0, plan.middle_begin) +
                        text.substr(plan.middle_begin, plan.middle_end - plan.middle_begin));
  }
}

// The characters the random vocabulary is made of: ASCII, 2-, 3- and 4-byte UTF-8.
const std::vector<std::string>& alphabet() {
  static const std::vector<std::string> chars = [] {
    std::vector<std::string> all;
    for (char c = ' '; c <= '~'; ++c) all.emplace_back(1, c);
    all.emplace_back("\n");
    all.emplace_back("\t");
    for (const char* c : {"é", "ü", "ñ", "ß", "ж", "λ", "中", "文", "字", "符", "€", "→", "😀", "🚀", "𝔘"}) all.emplace_back(c);
    return all;
  }();
  return chars;
}

struct RandomVocab {
  Vocab vocab;
  std::vector<uint32_t> whole_char_tokens;  // tokens whose bytes are complete UTF-8 characters
  uint32_t eos, suffix, prefix, middle, bos;
};

// Byte tokens, merges that build each multi-byte character byte by byte, then random merges of
// complete-character tokens (up to max_bytes long) until the vocabulary has `size` ids.
RandomVocab make_random_vocab(size_t size, size_t max_bytes, uint64_t seed) {
  RandomVocab result;
  Vocab& vocab = result.vocab;
  for (const std::string& c : alphabet()) {
    uint32_t id = static_cast<unsigned char>(c[0]);
    for (size_t i = 1; i < c.size(); ++i) id = vocab.merge(id, static_cast<unsigned char>(c[i]));
    result.whole_char_tokens.push_back(id);
  }
  std::mt19937_64 rng(seed);
  while (vocab.id_to_bytes.size() + 5 < size) {
    const uint32_t left = result.whole_char_tokens[rng() % result.whole_char_tokens.size()];
    const uint32_t right = result.whole_char_tokens[rng() % result.whole_char_tokens.size()];
    if (vocab.id_to_bytes[left].size() + vocab.id_to_bytes[right].size() > max_bytes) continue;
    const size_t before = vocab.id_to_bytes.size();
    const uint32_t id = vocab.merge(left, right);
    if (vocab.id_to_bytes.size() > before) result.whole_char_tokens.push_back(id);
  }
  result.eos = vocab.add("<eos>");
  result.suffix = vocab.add("<fim_suffix>");
  result.prefix = vocab.add("<fim_prefix>");
  result.middle = vocab.add("<fim_middle>");
  result.bos = vocab.add("<bos>");
  return result;
}

void test_encode_random(const RandomVocab& random, const ByteLevelBPE& bpe) {
  std::mt19937_64 rng(11);
  std::vector<uint32_t> out;
  for (int trial = 0; trial < 3000; ++trial) {
    // Arbitrary bytes: pieces of characters, whole characters, runs of one character.
    std::string text;
    const int pieces = 1 + static_cast<int>(rng() % 12);
    for (int p = 0; p < pieces; ++p) {
      const std::string& c = alphabet()[rng() % alphabet().size()];
      if (rng() % 5 == 0) text += c.substr(0, 1 + rng() % c.size());
      else text.append(1 + rng() % 3, 'a') += c;
    }
    out.clear();
    bpe.encode(text, out);
    CHECK(out == reference_encode(random.vocab, text));
    CHECK(concat_bytes(bpe, out.data(), out.size()) == text);
  }
}

struct ParsedSpm {
  std::vector<uint32_t> prefix, middle, suffix;
};

bool parse_spm(const std::vector<uint32_t>& out, const FimSpec& spec, ParsedSpm* parsed) {
  if (out.size() < 4 || out.front() != spec.suffix_id || out.back() != spec.eos_id) return false;
  const auto prefix_at = std::find(out.begin(), out.end(), spec.prefix_id);
  const auto middle_at = std::find(out.begin(), out.end(), spec.middle_id);
  if (prefix_at == out.end() || middle_at == out.end() || prefix_at > middle_at) return false;
  parsed->suffix.assign(out.begin() + 1, prefix_at);
  parsed->prefix.assign(prefix_at + 1, middle_at);
  parsed->middle.assign(middle_at + 1, out.end() - 1);
  return true;
}

std::vector<uint32_t> random_document(const RandomVocab& random, std::mt19937_64& rng, size_t max_tokens) {
  std::vector<uint32_t> doc(rng() % (max_tokens + 1));
  for (auto& token : doc) {
    const uint64_t kind = rng() % 50;
    if (kind == 0) token = random.bos;             // an atomic token inside the document
    else if (kind == 1) token = 128 + rng() % 128;  // a stray byte: invalid UTF-8 on purpose
    else token = random.whole_char_tokens[rng() % random.whole_char_tokens.size()];
  }
  return doc;
}

void test_fim_round_trip(const RandomVocab& random, const ByteLevelBPE& bpe) {
  const FimSpec spec{random.suffix, random.prefix, random.middle, random.eos, 1.0};
  std::mt19937_64 rng(5);
  size_t straddles = 0;
  for (uint64_t doc_id = 0; doc_id < 4000; ++doc_id) {
    std::vector<uint32_t> doc = random_document(random, rng, doc_id % 10 == 0 ? 3 : 60);
    const bool with_eos = rng() % 2;
    std::vector<uint32_t> input = doc;
    if (with_eos) input.push_back(random.eos);
    std::vector<uint32_t> out = {42};  // apply_spm appends
    CHECK(apply_spm(input.data(), input.size(), bpe, spec, 1234, 7, doc_id, out));
    CHECK(out.front() == 42);
    out.erase(out.begin());
    ParsedSpm parts;
    if (!parse_spm(out, spec, &parts)) {
      CHECK(!"SPM structure");
      continue;
    }
    const std::string text = concat_bytes(bpe, doc.data(), doc.size());
    const std::string prefix = concat_bytes(bpe, parts.prefix.data(), parts.prefix.size());
    const std::string middle = concat_bytes(bpe, parts.middle.data(), parts.middle.size());
    const std::string suffix = concat_bytes(bpe, parts.suffix.data(), parts.suffix.size());
    CHECK(prefix + middle + suffix == text);
    const SpmPlan plan = plan_spm(input.data(), input.size(), bpe, spec, 1234, 7, doc_id);
    CHECK(plan.apply && plan.middle_begin <= plan.middle_end && plan.middle_end <= plan.length);
    // Character counts of the parts match the plan (atomic tokens count one).
    auto chars = [&](const std::vector<uint32_t>& tokens) {
      uint64_t total = 0;
      for (uint32_t t : tokens) total += bpe.char_counts()[t];
      return total;
    };
    CHECK(chars(parts.prefix) == plan.middle_begin);
    CHECK(chars(parts.middle) == plan.middle_end - plan.middle_begin);
    CHECK(chars(parts.suffix) == plan.length - plan.middle_end);
    CHECK(chars(doc) == plan.length);
    // Whole tokens before the first cut are copied: the prefix starts with the document's tokens.
    const size_t common = static_cast<size_t>(
        std::mismatch(parts.prefix.begin(), parts.prefix.end(), doc.begin(), doc.end()).first - parts.prefix.begin());
    CHECK(parts.prefix.size() - common <= 16);  // at most one re-encoded piece (<= 16 bytes) at the end
    straddles += common < parts.prefix.size();
    // No atomic token is ever cut: each of the document's atomic tokens appears in the output.
    const auto atomics = std::count(doc.begin(), doc.end(), random.bos);
    CHECK(std::count(out.begin(), out.end(), random.bos) == atomics);
  }
  CHECK(straddles > 100);  // the cuts really fall inside tokens
}

void test_fim_edge_cases(const RandomVocab& random, const ByteLevelBPE& bpe) {
  FimSpec spec{random.suffix, random.prefix, random.middle, random.eos, 1.0};
  const std::vector<uint32_t> markers_only = {random.suffix, random.prefix, random.middle, random.eos};
  std::vector<uint32_t> out;
  // Empty documents: nothing, or only an eos.
  CHECK(apply_spm(nullptr, 0, bpe, spec, 1, 0, 0, out) && out == markers_only);
  out.clear();
  CHECK(apply_spm(&random.eos, 1, bpe, spec, 1, 0, 0, out) && out == markers_only);
  // A one-character document of a 4-byte character (one token or four byte tokens): never cut inside.
  const std::string rocket = "🚀";
  std::vector<uint32_t> bytes_doc;
  for (unsigned char byte : rocket) bytes_doc.push_back(byte);
  for (uint64_t doc_id = 0; doc_id < 50; ++doc_id) {
    out.clear();
    CHECK(apply_spm(bytes_doc.data(), bytes_doc.size(), bpe, spec, 3, 0, doc_id, out));
    ParsedSpm parts;
    CHECK(parse_spm(out, spec, &parts));
    for (const auto* part : {&parts.prefix, &parts.middle, &parts.suffix}) {
      const std::string bytes = concat_bytes(bpe, part->data(), part->size());
      CHECK(bytes.empty() || bytes == rocket);
    }
  }
  // Rate 0: never, and `out` untouched.
  spec.rate = 0.0;
  out = {9};
  for (uint64_t doc_id = 0; doc_id < 1000; ++doc_id) CHECK(!apply_spm(bytes_doc.data(), bytes_doc.size(), bpe, spec, 3, 0, doc_id, out));
  CHECK(out == std::vector<uint32_t>{9});
  // Statistics of the rate and determinism.
  spec.rate = 0.5;
  size_t applied = 0, epoch_changes = 0;
  std::vector<uint32_t> again;
  const std::vector<uint32_t> doc(random.whole_char_tokens.begin() + 1000, random.whole_char_tokens.begin() + 1100);
  for (uint64_t doc_id = 0; doc_id < 20000; ++doc_id) {
    out.clear();
    again.clear();
    const bool a = apply_spm(doc.data(), doc.size(), bpe, spec, 99, 3, doc_id, out);
    const bool b = apply_spm(doc.data(), doc.size(), bpe, spec, 99, 3, doc_id, again);
    CHECK(a == b && out == again);
    applied += a;
    const SpmPlan now = plan_spm(doc.data(), doc.size(), bpe, spec, 99, 3, doc_id);
    const SpmPlan next = plan_spm(doc.data(), doc.size(), bpe, spec, 99, 4, doc_id);
    epoch_changes += now.apply != next.apply || now.middle_begin != next.middle_begin || now.middle_end != next.middle_end;
  }
  CHECK(applied > 9700 && applied < 10300);  // 20000 * 0.5 +- 4 sigma (sigma ~ 71)
  CHECK(epoch_changes > 9000);
  // Bad input: errors, `out` unchanged.
  std::vector<uint32_t> bad_doc = doc;
  bad_doc[50] = bpe.vocab_size();
  spec.rate = 1.0;
  out = {1, 2};
  CHECK(throws<std::invalid_argument>([&] { apply_spm(bad_doc.data(), bad_doc.size(), bpe, spec, 0, 0, 0, out); }));
  spec.token_level = true;
  CHECK(throws<std::invalid_argument>([&] { apply_spm(bad_doc.data(), bad_doc.size(), bpe, spec, 0, 0, 0, out); }));
  spec.token_level = false;
  CHECK(throws<std::invalid_argument>([&] { apply_spm(nullptr, 3, bpe, spec, 0, 0, 0, out); }));
  for (double rate : {-0.1, 1.5, std::nan("")}) {
    FimSpec bad_rate = spec;
    bad_rate.rate = rate;
    CHECK(throws<std::invalid_argument>([&] { apply_spm(doc.data(), doc.size(), bpe, bad_rate, 0, 0, 0, out); }));
  }
  FimSpec bad_marker = spec;
  bad_marker.middle_id = bpe.vocab_size() + 3;
  CHECK(throws<std::invalid_argument>([&] { apply_spm(doc.data(), doc.size(), bpe, bad_marker, 0, 0, 0, out); }));
  CHECK((out == std::vector<uint32_t>{1, 2}));
}

void test_token_level(const RandomVocab& random, const ByteLevelBPE& bpe) {
  const FimSpec spec{random.suffix, random.prefix, random.middle, random.eos, 1.0, true};
  std::mt19937_64 rng(8);
  for (uint64_t doc_id = 0; doc_id < 1000; ++doc_id) {
    const std::vector<uint32_t> doc = random_document(random, rng, 40);
    std::vector<uint32_t> out;
    CHECK(apply_spm(doc.data(), doc.size(), bpe, spec, 5, 1, doc_id, out));
    ParsedSpm parts;
    CHECK(parse_spm(out, spec, &parts));
    std::vector<uint32_t> joined = parts.prefix;
    joined.insert(joined.end(), parts.middle.begin(), parts.middle.end());
    joined.insert(joined.end(), parts.suffix.begin(), parts.suffix.end());
    CHECK(joined == doc);  // token-level cuts copy every token untouched
    const SpmPlan plan = plan_spm(doc.data(), doc.size(), bpe, spec, 5, 1, doc_id);
    CHECK(plan.length == doc.size() && plan.middle_begin == parts.prefix.size() && plan.middle_end - plan.middle_begin == parts.middle.size());
  }
}

// CPU time of this thread: "per thread" throughput, and robust to other processes sharing the cores.
double thread_seconds() {
  timespec now{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &now);
  return static_cast<double>(now.tv_sec) + 1e-9 * static_cast<double>(now.tv_nsec);
}

// Tokens per second of a loader-like loop: documents from one big token array, appended into a batch
// buffer that is reused; documents without FIM are copied (plus eos) as the loader would.
// Token ids: Zipf-distributed (frequency ~ 1 / rank, about what code looks like: the 1000 most frequent
// tokens make ~60% of the text) over the vocabulary in a random order, or uniform (no cache locality at all).
void benchmark(const RandomVocab& random, const ByteLevelBPE& bpe, bool quick, bool zipf) {
  const size_t total_tokens = quick ? (size_t{1} << 20) : (size_t{1} << 24);
  std::mt19937_64 rng(1);
  std::vector<uint32_t> tokens(total_tokens);
  if (zipf) {
    std::vector<uint32_t> by_rank = random.whole_char_tokens;
    std::shuffle(by_rank.begin(), by_rank.end(), rng);
    std::vector<double> cumulative(by_rank.size());
    double sum = 0;
    for (size_t rank = 0; rank < by_rank.size(); ++rank) cumulative[rank] = sum += 1.0 / static_cast<double>(rank + 1);
    std::uniform_real_distribution<double> uniform(0, sum);
    for (auto& token : tokens) {
      const size_t rank = static_cast<size_t>(std::lower_bound(cumulative.begin(), cumulative.end(), uniform(rng)) - cumulative.begin());
      token = by_rank[std::min(rank, by_rank.size() - 1)];
    }
  } else {
    for (auto& token : tokens) token = random.whole_char_tokens[rng() % random.whole_char_tokens.size()];
  }
  std::vector<size_t> doc_offsets = {0};
  while (doc_offsets.back() < total_tokens) {
    // Document lengths: log-uniform 64 .. 16384 tokens (code files vary a lot).
    const size_t length = static_cast<size_t>(std::exp2(6.0 + 8.0 * std::uniform_real_distribution<double>(0, 1)(rng)));
    doc_offsets.push_back(std::min(total_tokens, doc_offsets.back() + length));
  }
  const size_t documents = doc_offsets.size() - 1;
  const size_t batch_tokens = size_t{1} << 20;
  std::vector<uint32_t> batch;
  batch.reserve(2 * batch_tokens);

  auto run = [&](const char* name, double rate, bool token_level, int repeats) {
    const FimSpec spec{random.suffix, random.prefix, random.middle, random.eos, rate, token_level};
    double best_seconds = 1e30;
    size_t fim_documents = 0, produced = 0;
    for (int repeat = 0; repeat < repeats; ++repeat) {
      const double start = thread_seconds();
      fim_documents = 0;
      produced = 0;
      batch.clear();
      for (size_t doc = 0; doc < documents; ++doc) {
        const uint32_t* begin = tokens.data() + doc_offsets[doc];
        const size_t n = doc_offsets[doc + 1] - doc_offsets[doc];
        if (apply_spm(begin, n, bpe, spec, 17, static_cast<uint64_t>(repeat), doc, batch)) {
          ++fim_documents;
        } else {
          batch.insert(batch.end(), begin, begin + n);
          batch.push_back(random.eos);
        }
        if (batch.size() >= batch_tokens) {
          produced += batch.size();
          batch.clear();
        }
      }
      produced += batch.size();
      best_seconds = std::min(best_seconds, thread_seconds() - start);
    }
    std::printf("  %-34s %8.1f M tokens/s  (%zu documents, %zu with FIM, %zu tokens out)\n", name,
                static_cast<double>(total_tokens) / best_seconds / 1e6, documents, fim_documents, produced);
  };
  std::printf("throughput (thread CPU time), vocabulary %u, %s token ids, %zu tokens in %zu documents (best of repeats):\n",
              bpe.vocab_size(), zipf ? "Zipf-distributed" : "uniformly random", total_tokens, documents);
  const int repeats = quick ? 3 : 5;  // the first repeat also pays for first-touch page faults
  run("copy only (FIM rate 0)", 0.0, false, repeats);
  run("FIM 0.5, character-level splits", 0.5, false, repeats);
  run("FIM 1.0, character-level splits", 1.0, false, repeats);
  run("FIM 0.5, token-boundary splits", 0.5, true, repeats);
  run("FIM 1.0, token-boundary splits", 1.0, true, repeats);

  // Per-document cost of the cut itself on short documents (the re-encodes dominate there).
  const FimSpec spec{random.suffix, random.prefix, random.middle, random.eos, 1.0};
  std::vector<uint32_t> out;
  const size_t short_docs = quick ? 20000 : 400000;
  const double start = thread_seconds();
  size_t sink = 0;
  for (size_t doc = 0; doc < short_docs; ++doc) {
    out.clear();
    apply_spm(tokens.data() + (doc * 64) % (total_tokens - 64), 64, bpe, spec, 3, 0, doc, out);
    sink += out.size();
  }
  const double seconds = thread_seconds() - start;
  std::printf("  FIM of a 64-token document: %.0f ns per document (%zu tokens out)\n", seconds / short_docs * 1e9, sink);
}

}  // namespace

int main(int argc, char** argv) {
  bool quick = true, bench = true;
  size_t bench_vocab = 155136;  // Seed-Coder's vocabulary size
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--bench") == 0) quick = false;
    if (std::strcmp(argv[i], "--no-bench") == 0) bench = false;
    if (std::strcmp(argv[i], "--vocab") == 0 && i + 1 < argc) bench_vocab = std::max<size_t>(1000, std::strtoull(argv[++i], nullptr, 10));
  }
  try {
    test_encode_small();
    test_constructor_errors();
    test_long_token();
    const RandomVocab small = make_random_vocab(2000, 12, 3);
    const ByteLevelBPE small_bpe(small.vocab.id_to_bytes, small.vocab.merges);
    test_encode_random(small, small_bpe);
    test_fim_round_trip(small, small_bpe);
    test_fim_edge_cases(small, small_bpe);
    test_token_level(small, small_bpe);
    if (bench) {
      // Tokens of up to 16 bytes.
      const RandomVocab large = make_random_vocab(bench_vocab, 16, 4);
      const ByteLevelBPE large_bpe(large.vocab.id_to_bytes, large.vocab.merges);
      test_fim_round_trip(large, large_bpe);
      benchmark(large, large_bpe, quick, true);
      benchmark(large, large_bpe, quick, false);
    }
  } catch (const std::exception& error) {
    std::fprintf(stderr, "unexpected exception: %s\n", error.what());
    return 1;
  }
  if (g_failures > 0) {
    std::fprintf(stderr, "%d check(s) failed\n", g_failures);
    return 1;
  }
  std::printf("test_bpe_fim: all checks passed\n");
  return 0;
}
