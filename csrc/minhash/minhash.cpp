// Shingling, hashing and MinHash signatures (see minhash.h for the exact definition).
//
// Per text: the shingler scans words (16 bytes at a time with SSE2 for CPython's 1-byte strings), keeps the last
// ngram words normalized in a small buffer and hands each shingle's span to the signature sink; the sink hashes
// spans four at a time (MurmurHash3, interleaved so the four dependency chains overlap) and applies each batch of
// hashes to the signature. The min kernel holds 32 permutations' a, b and running minimum in AVX2 registers:
// value = a*h + b (mod 2^32), 3 instructions per 8 permutations per shingle. AVX2 is chosen at run time
// (__builtin_cpu_supports), so the build needs no -march and runs on any x86-64; elsewhere the generic loop is what
// the compiler can vectorize.
#include "minhash.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <cstring>
#include <memory>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define SEEDCODER_MINHASH_X86 1
#endif
#if defined(__SSE2__)  // part of x86-64 itself: no run-time check needed
#include <emmintrin.h>
#endif

namespace seedcoder::minhash {

namespace {

// ---------------------------------------------------------------------------------------------- hashing
inline uint32_t rotl32(uint32_t x, int r) { return (x << r) | (x >> (32 - r)); }

inline uint32_t load_le32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
  v = __builtin_bswap32(v);
#endif
  return v;
}

inline uint32_t fmix32_inline(uint32_t h) {  // the MurmurHash3 finalizer
  h ^= h >> 16;
  h *= 0x85EBCA6Bu;
  h ^= h >> 13;
  h *= 0xC2B2AE35u;
  h ^= h >> 16;
  return h;
}

// MurmurHash3_x86_32 in two pieces, so that several shingles can be hashed interleaved.
inline uint32_t murmur_block(uint32_t h, uint32_t k) {
  k *= 0xCC9E2D51u;
  k = rotl32(k, 15);
  k *= 0x1B873593u;
  h ^= k;
  h = rotl32(h, 13);
  return h * 5 + 0xE6546B64u;
}

// The hash of data[0, length) from the state h after its first `done` 4-byte blocks.
inline uint32_t murmur_finish(uint32_t h, const uint8_t* data, size_t length, size_t done) {
  const size_t blocks = length / 4;
  for (size_t i = done; i < blocks; ++i) h = murmur_block(h, load_le32(data + 4 * i));
  const uint8_t* tail = data + 4 * blocks;
  uint32_t k = 0;
  switch (length & 3) {
    case 3: k ^= static_cast<uint32_t>(tail[2]) << 16; [[fallthrough]];
    case 2: k ^= static_cast<uint32_t>(tail[1]) << 8; [[fallthrough]];
    case 1:
      k ^= tail[0];
      k *= 0xCC9E2D51u;
      k = rotl32(k, 15);
      k *= 0x1B873593u;
      h ^= k;
  }
  h ^= static_cast<uint32_t>(length);  // the reference takes the length as a 32-bit int
  return fmix32_inline(h);
}

struct Span {
  size_t offset;
  size_t length;
};

// out[s] = fmix32(murmur3_32(base + spans[s])) (the outer fmix32 is datasketch's pre-mix): four shingles at a time
// through their common blocks, then each one's rest.
void hash_spans(const uint8_t* base, const Span* spans, size_t count, uint32_t* out) {
  size_t s = 0;
  for (; s + 4 <= count; s += 4) {
    const uint8_t* p0 = base + spans[s].offset;
    const uint8_t* p1 = base + spans[s + 1].offset;
    const uint8_t* p2 = base + spans[s + 2].offset;
    const uint8_t* p3 = base + spans[s + 3].offset;
    const size_t common = std::min(std::min(spans[s].length, spans[s + 1].length),
                                   std::min(spans[s + 2].length, spans[s + 3].length)) / 4;
    uint32_t h0 = 0, h1 = 0, h2 = 0, h3 = 0;
    for (size_t i = 0; i < common; ++i) {
      h0 = murmur_block(h0, load_le32(p0 + 4 * i));
      h1 = murmur_block(h1, load_le32(p1 + 4 * i));
      h2 = murmur_block(h2, load_le32(p2 + 4 * i));
      h3 = murmur_block(h3, load_le32(p3 + 4 * i));
    }
    out[s] = fmix32_inline(murmur_finish(h0, p0, spans[s].length, common));
    out[s + 1] = fmix32_inline(murmur_finish(h1, p1, spans[s + 1].length, common));
    out[s + 2] = fmix32_inline(murmur_finish(h2, p2, spans[s + 2].length, common));
    out[s + 3] = fmix32_inline(murmur_finish(h3, p3, spans[s + 3].length, common));
  }
  for (; s < count; ++s) out[s] = fmix32_inline(murmur_finish(0, base + spans[s].offset, spans[s].length, 0));
}

// ---------------------------------------------------------------------------------------------- words
// ASCII character -> its normalized byte if it is a word character ([0-9A-Za-z_], lower-cased), else 0 (a
// separator). Every non-ASCII character is a word character.
constexpr std::array<uint8_t, 128> make_word_table() {
  std::array<uint8_t, 128> table{};
  for (int c = '0'; c <= '9'; ++c) table[c] = static_cast<uint8_t>(c);
  for (int c = 'a'; c <= 'z'; ++c) table[c] = static_cast<uint8_t>(c);
  for (int c = 'A'; c <= 'Z'; ++c) table[c] = static_cast<uint8_t>(c - 'A' + 'a');
  table['_'] = '_';
  return table;
}
constexpr std::array<uint8_t, 128> kWordByte = make_word_table();

template <typename Unit>
inline bool is_separator(Unit unit) {
  const uint32_t c = static_cast<uint32_t>(unit);
  return c < 0x80 && kWordByte[c] == 0;
}

// Normalized UTF-8 of a word of code units (surrogates as 3 bytes, like Python's "surrogatepass"); returns the
// bytes written, at most 4 per unit.
template <typename Unit>
size_t write_utf8(const Unit* word, size_t length, uint8_t* out) {
  uint8_t* p = out;
  for (size_t i = 0; i < length; ++i) {
    const uint32_t c = static_cast<uint32_t>(word[i]);
    if (c < 0x80) {
      *p++ = kWordByte[c];
    } else if (c < 0x800) {
      *p++ = static_cast<uint8_t>(0xC0 | (c >> 6));
      *p++ = static_cast<uint8_t>(0x80 | (c & 0x3F));
    } else if (c < 0x10000) {
      *p++ = static_cast<uint8_t>(0xE0 | (c >> 12));
      *p++ = static_cast<uint8_t>(0x80 | ((c >> 6) & 0x3F));
      *p++ = static_cast<uint8_t>(0x80 | (c & 0x3F));
    } else {
      *p++ = static_cast<uint8_t>(0xF0 | (c >> 18));
      *p++ = static_cast<uint8_t>(0x80 | ((c >> 12) & 0x3F));
      *p++ = static_cast<uint8_t>(0x80 | ((c >> 6) & 0x3F));
      *p++ = static_cast<uint8_t>(0x80 | (c & 0x3F));
    }
  }
  return static_cast<size_t>(p - out);
}

// The three scanning steps, generic over the code unit; 1-byte strings get SSE2 versions below.
// skip_separators: index of the first word character at or after i (n if none); skip_word: of the first separator.
template <typename Unit>
inline size_t skip_separators(const Unit* text, size_t i, size_t n) {
  while (i < n && is_separator(text[i])) ++i;
  return i;
}
template <typename Unit>
inline size_t skip_word(const Unit* text, size_t i, size_t n) {
  while (i < n && !is_separator(text[i])) ++i;
  return i;
}
// UTF-8 bytes per code unit at most: Latin-1 2, UCS-2 3 (surrogates included), UCS-4 4.
template <typename Unit>
constexpr size_t kMaxUtf8 = sizeof(Unit) == 1 ? 2 : sizeof(Unit) == 2 ? 3 : 4;

// Normalized bytes of the word text[i, j) of a text of n units; `out` has room for (j - i) * kMaxUtf8 + 16 bytes.
template <typename Unit>
inline size_t write_word(const Unit* text, size_t i, size_t j, size_t /*n*/, uint8_t* out) {
  return write_utf8(text + i, j - i, out);
}

#if defined(__SSE2__)
inline __m128i in_range(__m128i v, char low, char high) {  // signed: bytes >= 0x80 are never in an ASCII range
  return _mm_and_si128(_mm_cmpgt_epi8(v, _mm_set1_epi8(static_cast<char>(low - 1))),
                       _mm_cmplt_epi8(v, _mm_set1_epi8(static_cast<char>(high + 1))));
}

inline uint32_t word_mask16(const uint8_t* p) {  // bit j set: p[j] is a word character
  const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  const __m128i letter = in_range(_mm_or_si128(v, _mm_set1_epi8(0x20)), 'a', 'z');  // | 0x20 folds 'A'-'Z'
  const __m128i digit = in_range(v, '0', '9');
  const __m128i underscore = _mm_cmpeq_epi8(v, _mm_set1_epi8('_'));
  const __m128i non_ascii = _mm_cmplt_epi8(v, _mm_setzero_si128());
  const __m128i word = _mm_or_si128(_mm_or_si128(letter, digit), _mm_or_si128(underscore, non_ascii));
  return static_cast<uint32_t>(_mm_movemask_epi8(word));
}

template <>
inline size_t skip_separators<uint8_t>(const uint8_t* text, size_t i, size_t n) {
  for (; i + 16 <= n; i += 16) {
    const uint32_t mask = word_mask16(text + i);
    if (mask != 0) return i + static_cast<size_t>(__builtin_ctz(mask));
  }
  while (i < n && is_separator(text[i])) ++i;
  return i;
}

template <>
inline size_t skip_word<uint8_t>(const uint8_t* text, size_t i, size_t n) {
  for (; i + 16 <= n; i += 16) {
    const uint32_t mask = ~word_mask16(text + i) & 0xFFFFu;
    if (mask != 0) return i + static_cast<size_t>(__builtin_ctz(mask));
  }
  while (i < n && !is_separator(text[i])) ++i;
  return i;
}

// Lower-cases 16 bytes at a time while they are ASCII (Latin-1 >= 0x80 takes 2 UTF-8 bytes: the generic loop).
// The 16-byte loads stay inside the text; the 16-byte stores may run past the word, into the room `out` has.
template <>
inline size_t write_word<uint8_t>(const uint8_t* text, size_t i, size_t j, size_t n, uint8_t* out) {
  uint8_t* p = out;
  while (i < j && i + 16 <= n) {
    __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(text + i));
    const size_t chunk = std::min<size_t>(16, j - i);
    if (static_cast<uint32_t>(_mm_movemask_epi8(v)) & ((1u << chunk) - 1)) break;
    v = _mm_add_epi8(v, _mm_and_si128(in_range(v, 'A', 'Z'), _mm_set1_epi8(0x20)));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p), v);
    p += chunk;
    i += chunk;
  }
  return static_cast<size_t>(p - out) + write_utf8(text + i, j - i, p);
}
#endif

// A growable byte buffer that does not zero what it is about to overwrite (std::string::resize would).
class ByteBuffer {
 public:
  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  const uint8_t* data() const { return data_.get(); }
  void clear() { size_ = 0; }

  // Room for `extra` more bytes after the end; commit(n) then keeps the first n of them.
  uint8_t* room(size_t extra) {
    if (size_ + extra > capacity_) {
      const size_t capacity = std::max(size_ + extra, 2 * capacity_ + 4096);
      std::unique_ptr<uint8_t[]> grown(new uint8_t[capacity]);
      if (size_ > 0) std::memcpy(grown.get(), data_.get(), size_);
      data_ = std::move(grown);
      capacity_ = capacity;
    }
    return data_.get() + size_;
  }
  void commit(size_t n) { size_ += n; }
  void push_back(uint8_t byte) { *room(1) = byte, ++size_; }
  void erase_front(size_t n) {
    std::memmove(data_.get(), data_.get() + n, size_ - n);
    size_ -= n;
  }

 private:
  std::unique_ptr<uint8_t[]> data_;
  size_t size_ = 0;
  size_t capacity_ = 0;
};

// Once the buffer holds this many bytes, words that can no longer start a shingle are dropped from its front.
constexpr size_t kCompactBytes = 1 << 16;

// Streams the shingles of a text to a sink, keeping only the current window of words in memory. The sink gets
// sink.add(buffer, offset, length) per shingle and sink.flush(buffer) before the buffer's offsets change
// (compaction) and at the end of the text: the spans it keeps are valid until then.
class Shingler {
 public:
  explicit Shingler(size_t ngram) : ngram_(ngram), starts_(ngram, 0) {}

  template <typename Unit, typename Sink>
  void run(const Unit* text, size_t length, Sink& sink) {
    buffer_.clear();
    words_ = 0;
    next_ = 0;
    size_t i = 0;
    while (true) {
      i = skip_separators(text, i, length);
      if (i == length) break;
      const size_t j = skip_word(text, i + 1, length);
      begin_word(sink);
      buffer_.commit(write_word(text, i, j, length, buffer_.room((j - i) * kMaxUtf8<Unit> + 16)));
      finish_word(sink);
      i = j;
    }
    // 1..ngram-1 words: one shingle of them all (no compaction can have happened: it needs >= ngram words)
    if (words_ > 0 && words_ < ngram_) sink.add(buffer_.data(), 0, buffer_.size());
    sink.flush(buffer_.data());
  }

 private:
  template <typename Sink>
  void begin_word(Sink& sink) {
    if (buffer_.size() >= kCompactBytes && words_ >= ngram_) {
      sink.flush(buffer_.data());
      // keep the last ngram-1 finished words: the only ones the next shingles still need
      const size_t keep_from = ngram_ == 1 ? buffer_.size() : starts_[next_slot(next_)];
      buffer_.erase_front(keep_from);
      for (size_t& start : starts_) start = start >= keep_from ? start - keep_from : 0;  // stale slots are unused
    }
    if (!buffer_.empty()) buffer_.push_back(' ');
    starts_[next_] = buffer_.size();
  }

  template <typename Sink>
  void finish_word(Sink& sink) {
    ++words_;
    next_ = next_slot(next_);  // now the slot of word words_ - ngram: the first of the shingle that ends here
    if (words_ >= ngram_) {
      const size_t first = starts_[next_];
      sink.add(buffer_.data(), first, buffer_.size() - first);
    }
  }

  // ring slots without a division per word: word w lives in slot w % ngram
  size_t next_slot(size_t slot) const { return slot + 1 == ngram_ ? 0 : slot + 1; }

  size_t ngram_;
  size_t words_ = 0;
  size_t next_ = 0;             // slot of the next word: words_ % ngram_
  std::vector<size_t> starts_;  // ring: byte offset in buffer_ of word w at starts_[w % ngram_]
  ByteBuffer buffer_;           // normalized words separated by one space
};

template <typename Sink>
void for_each_shingle(Shingler& shingler, const TextView& text, Sink& sink) {
  switch (text.width) {
    case 1: shingler.run(static_cast<const uint8_t*>(text.data), text.length, sink); break;
    case 2: shingler.run(static_cast<const uint16_t*>(text.data), text.length, sink); break;
    default: shingler.run(static_cast<const uint32_t*>(text.data), text.length, sink); break;
  }
}

// ---------------------------------------------------------------------------------------------- min kernels
// sig[k] = min(sig[k], min over s of a[k] * hashes[s] + b[k]), all mod 2^32.
void update_generic(const uint32_t* hashes, size_t count, const uint32_t* a, const uint32_t* b, size_t num_perm,
                    uint32_t* sig) {
  constexpr size_t kBlock = 32;
  size_t k = 0;
  for (; k + kBlock <= num_perm; k += kBlock) {
    uint32_t la[kBlock], lb[kBlock], m[kBlock];
    std::memcpy(la, a + k, sizeof la);
    std::memcpy(lb, b + k, sizeof lb);
    std::memcpy(m, sig + k, sizeof m);
    for (size_t s = 0; s < count; ++s) {
      const uint32_t h = hashes[s];
      for (size_t j = 0; j < kBlock; ++j) {
        const uint32_t v = la[j] * h + lb[j];
        m[j] = v < m[j] ? v : m[j];
      }
    }
    std::memcpy(sig + k, m, sizeof m);
  }
  for (; k < num_perm; ++k) {
    uint32_t m = sig[k];
    for (size_t s = 0; s < count; ++s) m = std::min(m, a[k] * hashes[s] + b[k]);
    sig[k] = m;
  }
}

#ifdef SEEDCODER_MINHASH_X86
// (helpers rather than lambdas: a lambda does not inherit the target attribute of the function around it)
__attribute__((target("avx2"))) inline __m256i load8(const uint32_t* p) {
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
}
__attribute__((target("avx2"))) inline void store8(uint32_t* p, __m256i v) {
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), v);
}
__attribute__((target("avx2"))) inline __m256i min_of(__m256i m, __m256i a, __m256i h, __m256i b) {
  return _mm256_min_epu32(m, _mm256_add_epi32(_mm256_mullo_epi32(a, h), b));
}

__attribute__((target("avx2"))) void update_avx2(const uint32_t* hashes, size_t count, const uint32_t* a,
                                                  const uint32_t* b, size_t num_perm, uint32_t* sig) {
  size_t k = 0;
  for (; k + 32 <= num_perm; k += 32) {  // 4 vectors of 8: a, b and the running min stay in registers
    const __m256i a0 = load8(a + k), a1 = load8(a + k + 8), a2 = load8(a + k + 16), a3 = load8(a + k + 24);
    const __m256i b0 = load8(b + k), b1 = load8(b + k + 8), b2 = load8(b + k + 16), b3 = load8(b + k + 24);
    __m256i m0 = load8(sig + k), m1 = load8(sig + k + 8), m2 = load8(sig + k + 16), m3 = load8(sig + k + 24);
    for (size_t s = 0; s < count; ++s) {
      const __m256i h = _mm256_set1_epi32(static_cast<int>(hashes[s]));
      m0 = min_of(m0, a0, h, b0);
      m1 = min_of(m1, a1, h, b1);
      m2 = min_of(m2, a2, h, b2);
      m3 = min_of(m3, a3, h, b3);
    }
    store8(sig + k, m0), store8(sig + k + 8, m1), store8(sig + k + 16, m2), store8(sig + k + 24, m3);
  }
  for (; k + 8 <= num_perm; k += 8) {
    const __m256i av = load8(a + k), bv = load8(b + k);
    __m256i m = load8(sig + k);
    for (size_t s = 0; s < count; ++s) m = min_of(m, av, _mm256_set1_epi32(static_cast<int>(hashes[s])), bv);
    store8(sig + k, m);
  }
  if (k < num_perm) update_generic(hashes, count, a + k, b + k, num_perm - k, sig + k);
}

bool cpu_has_avx2() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2");
}
#else
bool cpu_has_avx2() { return false; }
#endif

const bool kHasAvx2 = cpu_has_avx2();
std::atomic<bool> g_force_generic{false};

using UpdateFn = void (*)(const uint32_t*, size_t, const uint32_t*, const uint32_t*, size_t, uint32_t*);

UpdateFn update_function() {
#ifdef SEEDCODER_MINHASH_X86
  if (kHasAvx2 && !g_force_generic.load(std::memory_order_relaxed)) return update_avx2;
#endif
  return update_generic;
}

// ---------------------------------------------------------------------------------------------- sinks
// Sink of shingles() (tests, inspection): copies every shingle.
struct BytesSink {
  std::vector<std::string> shingles;
  void add(const uint8_t* base, size_t offset, size_t length) {
    shingles.emplace_back(reinterpret_cast<const char*>(base + offset), length);
  }
  void flush(const uint8_t*) {}
};

// Sink of signatures(): shingle spans -> hashes -> the min kernel, kBatch at a time.
class SignatureSink {
 public:
  SignatureSink(const uint32_t* a, const uint32_t* b, size_t num_perm)
      : a_(a), b_(b), num_perm_(num_perm), update_(update_function()), spans_(kBatch), hashes_(kBatch) {}

  void start(uint32_t* signature) {
    signature_ = signature;
    std::fill(signature, signature + num_perm_, kEmptyValue);
  }
  void add(const uint8_t* base, size_t offset, size_t length) {
    spans_[pending_++] = {offset, length};
    if (pending_ == kBatch) flush(base);
  }
  void flush(const uint8_t* base) {
    if (pending_ == 0) return;
    hash_spans(base, spans_.data(), pending_, hashes_.data());
    update_(hashes_.data(), pending_, a_, b_, num_perm_, signature_);
    pending_ = 0;
  }

 private:
  static constexpr size_t kBatch = 512;  // 2 KiB of hashes: in L1 with a, b and the signature
  const uint32_t* a_;
  const uint32_t* b_;
  size_t num_perm_;
  UpdateFn update_;
  uint32_t* signature_ = nullptr;
  std::vector<Span> spans_;
  std::vector<uint32_t> hashes_;
  size_t pending_ = 0;
};

}  // namespace

uint32_t fmix32(uint32_t h) { return fmix32_inline(h); }

uint32_t murmur3_32(const uint8_t* data, size_t length, uint32_t seed) { return murmur_finish(seed, data, length, 0); }

std::vector<std::string> shingles(const TextView& text, size_t ngram) {
  Shingler shingler(ngram);
  BytesSink sink;
  for_each_shingle(shingler, text, sink);
  return std::move(sink.shingles);
}

void signatures(const TextView* texts, size_t count, size_t ngram, const uint32_t* a, const uint32_t* b,
                size_t num_perm, uint32_t* out) {
  Shingler shingler(ngram);
  SignatureSink sink(a, b, num_perm);
  for (size_t i = 0; i < count; ++i) {
    sink.start(out + i * num_perm);
    for_each_shingle(shingler, texts[i], sink);  // ends with a flush: the signature is complete
  }
}

const char* simd_path() { return update_function() == update_generic ? "generic" : "avx2"; }

void force_generic(bool generic) { g_force_generic.store(generic); }

}  // namespace seedcoder::minhash
