// seedcoder._webtext: the code counts of a web page's main content (seedcoder.curate.web_ingest.code_stats) in one
// C++ pass, because in Python they cost a quarter of what fastwarc + resiliparse cost for the whole page. The
// specification is the Python reference `web_ingest.code_stats_reference`; tests/test_web_code_stats.py holds the
// two equal on real pages and on adversarial HTML. Plain CPython API, like seedcoder._minhash.
//
// What the reference does, step by step, and how it is done here:
//   1. elements: re.findall(r"<pre\b[^>]*>(.*?)</pre\s*>|<code\b[^>]*>(.*?)</code\s*>", html, re.S | re.I):
//      a scan for '<' that tries <pre then <code at each one, leftmost-first like the regex engine. Once a search
//      for a closing tag (or for any '>') fails, it fails from every later position too, so it is not repeated.
//   2. element text: tags r"<[^>]*>" removed (a '<' without a later '>' stays), NULs dropped, then html.unescape
//      (the same charref grammar; the entity tables are Python's own, handed over once by set_tables).
//   3. counts: a <pre> (stripped of '\n') or a multi-line <code> (stripped) is a block when it occurs in the main
//      text, or its whitespace-normalised form in the whitespace-normalised text; an inline <code> counts when
//      each of its words (split at ASCII whitespace and punctuation) is a word of the text.
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace {

using U32 = std::u32string;
using U32View = std::u32string_view;

struct Tables {
  std::unordered_map<U32, U32> named;            // html.entities.html5: "amp;" -> "&", "amp" -> "&", ...
  std::unordered_map<uint32_t, U32> invalid_refs;  // html._invalid_charrefs: 0x80 -> "\u20ac", ...
  std::unordered_set<uint32_t> invalid_points;   // html._invalid_codepoints: dropped
  bool ready = false;
};
Tables tables;

bool is_space(uint32_t c) { return Py_UNICODE_ISSPACE(static_cast<Py_UCS4>(c)); }  // str.split() / str.strip()
bool is_word_char(uint32_t c) { return c == '_' || Py_UNICODE_ISALNUM(static_cast<Py_UCS4>(c)); }  // re's \w

// The separators of web_ingest._words: ASCII whitespace (bytes.split()) and _PUNCTUATION, as a table.
struct Separators {
  bool table[128] = {};
  Separators() {
    for (char c : std::string_view(" \t\n\r\x0b\x0c.,;:!?()[]{}<>\"'`=+-*/\\|&^%$#@~")) table[static_cast<int>(c)] = true;
  }
};
const Separators separators;
bool is_separator(uint32_t c) { return c < 128 && separators.table[c]; }

uint32_t lower_ascii(uint32_t c) { return c >= 'A' && c <= 'Z' ? c + 32 : c; }

bool to_u32(PyObject* object, const char* name, U32* out) {
  if (!PyUnicode_Check(object)) {
    PyErr_Format(PyExc_TypeError, "%s must be str, got %s", name, Py_TYPE(object)->tp_name);
    return false;
  }
#if PY_VERSION_HEX < 0x030C0000
  if (PyUnicode_READY(object) != 0) return false;
#endif
  Py_ssize_t length = PyUnicode_GET_LENGTH(object);
  out->resize(static_cast<size_t>(length));
  if (length && PyUnicode_AsUCS4(object, reinterpret_cast<Py_UCS4*>(out->data()), length, 0) == nullptr) return false;
  return true;
}

// A view of a str's characters in its own width (1, 2 or 4 bytes), read without a copy.
template <typename C>
struct Chars {
  const C* data;
  size_t size;
  uint32_t operator[](size_t i) const { return data[i]; }
};

// Case-insensitive ASCII `word` at position i.
template <typename C>
bool at(const Chars<C>& s, size_t i, std::string_view word) {
  if (i + word.size() > s.size) return false;
  for (size_t k = 0; k < word.size(); ++k)
    if (lower_ascii(s[i + k]) != static_cast<uint32_t>(word[k])) return false;
  return true;
}

template <typename C>
size_t find_char(const Chars<C>& s, size_t from, uint32_t c) {
  if (from >= s.size) return std::string::npos;
  if constexpr (sizeof(C) == 1) {
    const void* hit = std::memchr(s.data + from, static_cast<int>(c), s.size - from);
    return hit ? static_cast<const C*>(hit) - s.data : std::string::npos;
  }
#if defined(__SSE2__)
  if constexpr (sizeof(C) == 2) {  // pages with a character beyond Latin-1 are stored 2 bytes wide: 8 at a time
    const __m128i needle = _mm_set1_epi16(static_cast<short>(c));
    size_t i = from;
    for (; i + 8 <= s.size; i += 8) {
      __m128i chunk = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s.data + i));
      int mask = _mm_movemask_epi8(_mm_cmpeq_epi16(chunk, needle));
      if (mask) return i + __builtin_ctz(static_cast<unsigned>(mask)) / 2;
    }
    from = i;
  }
#endif
  for (size_t i = from; i < s.size; ++i)
    if (s[i] == c) return i;
  return std::string::npos;
}

// The first "</name\s*>" at or after `from`: (start, end) or (npos, npos).
template <typename C>
std::pair<size_t, size_t> find_close(const Chars<C>& s, size_t from, std::string_view name) {
  for (size_t i = find_char(s, from, '<'); i != std::string::npos; i = find_char(s, i + 1, '<')) {
    if (i + 1 < s.size && s[i + 1] == '/' && at(s, i + 2, name)) {
      size_t j = i + 2 + name.size();
      while (j < s.size && is_space(s[j])) ++j;
      if (j < s.size && s[j] == '>') return {i, j + 1};
    }
  }
  return {std::string::npos, std::string::npos};
}

struct Element {
  bool pre;
  size_t begin, end;  // the inner HTML
};

template <typename C>
std::vector<Element> find_elements(const Chars<C>& s) {
  std::vector<Element> found;
  bool open_ends = true;                      // false once no '>' is left after a position
  bool closes[2] = {true, true};              // false once no </pre> (</code>) is left after a position
  static const std::string_view kNames[2] = {"pre", "code"};
  size_t i = find_char(s, 0, '<');
  while (i != std::string::npos && open_ends) {
    bool matched = false;
    for (int kind = 0; kind < 2 && !matched; ++kind) {
      std::string_view name = kNames[kind];
      if (!closes[kind] || !at(s, i + 1, name)) continue;
      size_t after = i + 1 + name.size();
      if (after < s.size && is_word_char(s[after])) continue;  // \b
      size_t open_end = find_char(s, after, '>');
      if (open_end == std::string::npos) {
        open_ends = false;
        break;
      }
      auto [close_start, close_end] = find_close(s, open_end + 1, name);
      if (close_start == std::string::npos) {
        closes[kind] = false;
        continue;
      }
      found.push_back({kind == 0, open_end + 1, close_start});
      i = find_char(s, close_end, '<');
      matched = true;
    }
    if (!matched && open_ends) i = find_char(s, i + 1, '<');
  }
  return found;
}

// `s` with html.unescape's named and numeric character references decoded, appended to `out`.
void unescape_into(const U32& s, U32* out) {
  size_t i = 0, n = s.size();
  while (i < n) {
    size_t amp = s.find(U'&', i);
    if (amp == U32::npos) {
      out->append(s, i, n - i);
      return;
    }
    out->append(s, i, amp - i);
    size_t j = amp + 1;
    if (j < n && s[j] == '#') {  // &#[0-9]+;?  or  &#[xX][0-9a-fA-F]+;?
      bool hex = j + 1 < n && (s[j + 1] == 'x' || s[j + 1] == 'X');
      size_t k = j + (hex ? 2 : 1), digits_start = k;
      uint64_t number = 0;
      for (; k < n; ++k) {
        uint32_t c = s[k];
        int digit = c >= '0' && c <= '9' ? int(c - '0')
                    : hex && lower_ascii(c) >= 'a' && lower_ascii(c) <= 'f' ? int(lower_ascii(c) - 'a' + 10)
                                                                           : -1;
        if (digit < 0) break;
        number = number > 0x10FFFF ? number : number * (hex ? 16 : 10) + digit;  // saturates above U+10FFFF
      }
      if (k == digits_start) {  // "&#" or "&#x" without digits: literal
        out->push_back(U'&');
        i = j;
        continue;
      }
      if (k < n && s[k] == ';') ++k;
      auto invalid = tables.invalid_refs.find(static_cast<uint32_t>(number));
      if (number <= 0x10FFFF && invalid != tables.invalid_refs.end()) {
        out->append(invalid->second);
      } else if ((number >= 0xD800 && number <= 0xDFFF) || number > 0x10FFFF) {
        out->push_back(U'\uFFFD');
      } else if (!tables.invalid_points.count(static_cast<uint32_t>(number))) {
        out->push_back(static_cast<char32_t>(number));
      }
      i = k;
      continue;
    }
    // [^\t\n\f <&#;]{1,32};?
    size_t k = j;
    while (k < n && k - j < 32) {
      uint32_t c = s[k];
      if (c == '\t' || c == '\n' || c == '\f' || c == ' ' || c == '<' || c == '&' || c == '#' || c == ';') break;
      ++k;
    }
    if (k == j) {
      out->push_back(U'&');
      i = j;
      continue;
    }
    if (k < n && s[k] == ';') ++k;
    U32 name(s, j, k - j);
    auto whole = tables.named.find(name);
    if (whole != tables.named.end()) {
      out->append(whole->second);
    } else {
      size_t x = name.size() - 1;
      for (; x > 1; --x) {
        auto prefix = tables.named.find(name.substr(0, x));
        if (prefix != tables.named.end()) {
          out->append(prefix->second);
          out->append(name, x, U32::npos);
          break;
        }
      }
      if (x <= 1) {
        out->push_back(U'&');
        out->append(name);
      }
    }
    i = k;
  }
}

// Appends the text of an element's inner HTML to `out`: tags removed, NULs dropped, character references decoded
// (through `scratch`, only when the element has a '&').
template <typename C>
void append_element_text(const Chars<C>& s, const Element& element, U32* out, U32* scratch) {
  size_t start = out->size();
  size_t i = element.begin;
  bool has_amp = false;
  while (i < element.end) {
    uint32_t c = s[i];
    if (c == '<') {
      size_t close = i + 1;
      while (close < element.end && s[close] != '>') ++close;
      if (close < element.end) {
        i = close + 1;
        continue;
      }
    }
    if (c != 0) out->push_back(static_cast<char32_t>(c));
    has_amp |= c == '&';
    ++i;
  }
  if (has_amp) {
    scratch->assign(*out, start, U32::npos);
    out->resize(start);
    unescape_into(*scratch, out);
  }
}

U32View strip(U32View s, bool newlines_only) {
  size_t a = 0, b = s.size();
  auto drop = [&](uint32_t c) { return newlines_only ? c == '\n' : is_space(c); };
  while (a < b && drop(s[a])) ++a;
  while (b > a && drop(s[b - 1])) --b;
  return s.substr(a, b - a);
}

// " ".join(s.split())
U32 normalise_space(U32View s) {
  U32 out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    while (i < s.size() && is_space(s[i])) ++i;
    size_t start = i;
    while (i < s.size() && !is_space(s[i])) ++i;
    if (i > start) {
      if (!out.empty()) out.push_back(U' ');
      out.append(s.substr(start, i - start));
    }
  }
  return out;
}

// Whether `needle` occurs in `hay`, searched first from `cursor` on: a page's blocks come in the main text in
// document order, so each search usually ends near where the previous one did (the cursor moves past a find).
bool occurs(U32View hay, U32View needle, size_t* cursor) {
  size_t at = hay.find(needle, *cursor);
  if (at != U32View::npos) {
    *cursor = at + needle.size();
    return true;
  }
  return hay.substr(0, std::min(hay.size(), *cursor + needle.size() - 1)).find(needle) != U32View::npos;
}

template <typename F>
void for_each_word(U32View s, F&& visit) {
  size_t i = 0;
  while (i < s.size()) {
    while (i < s.size() && is_separator(s[i])) ++i;
    size_t start = i;
    while (i < s.size() && !is_separator(s[i])) ++i;
    if (i > start && !visit(s.substr(start, i - start))) return;
  }
}

struct Stats {
  long blocks = 0, inline_count = 0, chars = 0;
};

// The words of inline code, and which of them the main text has: a small open-addressing table of FNV-1a hashes.
// The scan of the text hashes a word only when its length and first character could be a needed word's, looks it
// up only when its bit of a 4096-bit filter is set, and stops once every word is found.
class NeededWords {
 public:
  static uint64_t next(uint64_t hash, uint32_t c) { return (hash ^ c) * 0x100000001b3ULL; }
  static constexpr uint64_t kSeed = 0xcbf29ce484222325ULL;

  void add(U32View word) {
    uint64_t hash = kSeed;
    for (char32_t c : word) hash = next(hash, c);
    if (find(word, hash) != nullptr) return;
    if ((entries_.size() + 1) * 2 > slots_.size()) grow();
    entries_.push_back({word, hash, false});
    insert(entries_.size() - 1);
    filter_[hash >> 52 & 63] |= uint64_t(1) << (hash >> 46 & 63);
    lengths_ |= uint64_t(1) << std::min<size_t>(word.size(), 63);
    uint32_t first = word[0];
    firsts_[first < 128 ? first / 64 : 2] |= uint64_t(1) << (first < 128 ? first % 64 : 0);
  }

  void find_in(U32View text) {
    size_t missing = entries_.size();
    for (size_t i = 0, n = text.size(); i < n;) {
      while (i < n && is_separator(text[i])) ++i;
      size_t start = i;
      while (i < n && !is_separator(text[i])) ++i;
      size_t length = i - start;
      if (length == 0 || !(lengths_ >> std::min<size_t>(length, 63) & 1) || !first_may_be(text[start])) continue;
      uint64_t hash = kSeed;  // hashed only when its length and first character could be a needed word's
      for (size_t k = start; k < i; ++k) hash = next(hash, text[k]);
      if (!(filter_[hash >> 52 & 63] >> (hash >> 46 & 63) & 1)) continue;
      Entry* entry = find(text.substr(start, length), hash);
      if (entry != nullptr && !entry->found) {
        entry->found = true;
        if (--missing == 0) return;
      }
    }
  }

  bool found(U32View word) const {
    uint64_t hash = kSeed;
    for (char32_t c : word) hash = next(hash, c);
    const Entry* entry = find(word, hash);
    return entry != nullptr && entry->found;
  }
  bool empty() const { return entries_.empty(); }

 private:
  struct Entry {
    U32View word;
    uint64_t hash;
    bool found;
  };

  Entry* find(U32View word, uint64_t hash) {
    return const_cast<Entry*>(static_cast<const NeededWords*>(this)->find(word, hash));
  }
  const Entry* find(U32View word, uint64_t hash) const {
    if (slots_.empty()) return nullptr;
    for (size_t slot = hash & (slots_.size() - 1);; slot = (slot + 1) & (slots_.size() - 1)) {
      int32_t index = slots_[slot];
      if (index < 0) return nullptr;
      if (entries_[index].hash == hash && entries_[index].word == word) return &entries_[index];
    }
  }
  void insert(size_t index) {
    size_t slot = entries_[index].hash & (slots_.size() - 1);
    while (slots_[slot] >= 0) slot = (slot + 1) & (slots_.size() - 1);
    slots_[slot] = static_cast<int32_t>(index);
  }
  void grow() {
    slots_.assign(std::max<size_t>(64, slots_.size() * 2), -1);
    for (size_t index = 0; index < entries_.size(); ++index) insert(index);
  }

  bool first_may_be(uint32_t c) const { return c < 128 ? firsts_[c / 64] >> (c % 64) & 1 : firsts_[2] & 1; }

  std::vector<Entry> entries_;
  std::vector<int32_t> slots_;  // indices into entries_, -1: empty; a power of two, at most half full
  uint64_t filter_[64] = {};
  uint64_t lengths_ = 0;  // bit n: a word of n characters (63: 63 or more)
  uint64_t firsts_[3] = {0, 0, 0};  // ASCII first characters, and bit 0 of [2]: any other
};

template <typename C>
Stats count(const Chars<C>& html, const U32& text) {
  Stats stats;
  std::vector<Element> elements = find_elements(html);
  size_t inner = 0;
  for (const Element& element : elements) inner += element.end - element.begin;
  U32 all, scratch;  // every element's text, one after the other; `spans` says where each one's code is
  all.reserve(inner);
  struct Span { size_t begin, size; bool block; };
  std::vector<Span> spans;
  for (const Element& element : elements) {
    size_t start = all.size();
    append_element_text(html, element, &all, &scratch);
    U32View code = strip(U32View(all).substr(start), element.pre);
    if (strip(code, false).empty()) continue;
    spans.push_back({static_cast<size_t>(code.data() - all.data()), code.size(),
                     element.pre || code.find(U'\n') != U32View::npos});
  }
  auto view = [&](size_t i) { return U32View(all).substr(spans[i].begin, spans[i].size); };
  NeededWords needed;
  for (size_t i = 0; i < spans.size(); ++i)
    if (!spans[i].block) for_each_word(view(i), [&](U32View word) { needed.add(word); return true; });
  if (!needed.empty()) needed.find_in(text);
  size_t text_cursor = 0, flat_cursor = 0;
  bool have_flat = false;
  U32 flat;
  for (size_t i = 0; i < spans.size(); ++i) {
    U32View code = view(i);
    if (spans[i].block) {
      if (!occurs(text, code, &text_cursor)) {  // the extractor keeps a block's lines; its spacing may differ
        if (!have_flat) {
          flat = normalise_space(text);
          have_flat = true;
        }
        if (!occurs(flat, normalise_space(code), &flat_cursor)) continue;
      }
      ++stats.blocks;
    } else {
      bool all_found = true;
      for_each_word(code, [&](U32View word) { return all_found = needed.found(word); });
      if (!all_found) continue;
      ++stats.inline_count;
    }
    stats.chars += static_cast<long>(code.size());
  }
  return stats;
}

PyObject* py_code_stats(PyObject*, PyObject* args) {
  PyObject *html, *text_object;
  if (!PyArg_ParseTuple(args, "UU:code_stats", &html, &text_object)) return nullptr;
  if (!tables.ready) {
    PyErr_SetString(PyExc_RuntimeError, "seedcoder._webtext: set_tables() was not called (import it through "
                                        "seedcoder.curate.web_ingest)");
    return nullptr;
  }
  U32 text;
  if (!to_u32(text_object, "text", &text)) return nullptr;
#if PY_VERSION_HEX < 0x030C0000
  if (PyUnicode_READY(html) != 0) return nullptr;
#endif
  size_t size = static_cast<size_t>(PyUnicode_GET_LENGTH(html));
  Stats stats;
  switch (PyUnicode_KIND(html)) {
    case PyUnicode_1BYTE_KIND:
      stats = count(Chars<Py_UCS1>{PyUnicode_1BYTE_DATA(html), size}, text);
      break;
    case PyUnicode_2BYTE_KIND:
      stats = count(Chars<Py_UCS2>{PyUnicode_2BYTE_DATA(html), size}, text);
      break;
    default:
      stats = count(Chars<Py_UCS4>{PyUnicode_4BYTE_DATA(html), size}, text);
  }
  return Py_BuildValue("(Oll)", (stats.blocks > 0 || stats.inline_count > 0) ? Py_True : Py_False, stats.blocks,
                       stats.chars);
}

// len(text.split()): words between runs of Unicode whitespace, read in the str's own width.
template <typename C>
Py_ssize_t word_count(const C* data, Py_ssize_t size) {
  Py_ssize_t words = 0;
  bool in_word = false;
  for (Py_ssize_t i = 0; i < size; ++i) {
    bool space = is_space(data[i]);
    words += !space && !in_word;
    in_word = !space;
  }
  return words;
}

PyObject* py_word_count(PyObject*, PyObject* args) {
  PyObject* text;
  if (!PyArg_ParseTuple(args, "U:word_count", &text)) return nullptr;
#if PY_VERSION_HEX < 0x030C0000
  if (PyUnicode_READY(text) != 0) return nullptr;
#endif
  Py_ssize_t size = PyUnicode_GET_LENGTH(text);
  switch (PyUnicode_KIND(text)) {
    case PyUnicode_1BYTE_KIND:
      return PyLong_FromSsize_t(word_count(PyUnicode_1BYTE_DATA(text), size));
    case PyUnicode_2BYTE_KIND:
      return PyLong_FromSsize_t(word_count(PyUnicode_2BYTE_DATA(text), size));
    default:
      return PyLong_FromSsize_t(word_count(PyUnicode_4BYTE_DATA(text), size));
  }
}

// How common a character is in HTML (higher: more common), to anchor a search on a needle's rarest character.
int commonness(uint32_t c) {
  static const std::string_view kByFrequency = " e<>=\"/tainosrlcdhmpu.-_:;f#gy'wb0v12k()x3jq+z!?[]{}|~^`@$%&*";
  if (c >= 'A' && c <= 'Z') c += 32;
  size_t at = c < 128 ? kByFrequency.find(static_cast<char>(c)) : std::string_view::npos;
  return at == std::string_view::npos ? 0 : static_cast<int>(kByFrequency.size() - at);
}

// str.count(needle) (non-overlapping, left to right) for an ASCII needle: the text's occurrences of the needle's
// rarest character are found with memchr (1-byte strs) and the needle checked around each.
template <typename C>
Py_ssize_t count_occurrences(const Chars<C>& s, std::string_view needle) {
  if (needle.empty()) return static_cast<Py_ssize_t>(s.size) + 1;
  size_t anchor = 0;
  for (size_t k = 1; k < needle.size(); ++k)
    if (commonness(static_cast<unsigned char>(needle[k])) < commonness(static_cast<unsigned char>(needle[anchor])))
      anchor = k;
  Py_ssize_t found = 0;
  size_t start = 0;  // the next occurrence may begin here (non-overlapping)
  size_t at = find_char(s, anchor, static_cast<unsigned char>(needle[anchor]));
  while (at != std::string::npos) {
    size_t begin = at - anchor;
    if (begin >= start && begin + needle.size() <= s.size) {
      size_t k = 0;
      while (k < needle.size() && s[begin + k] == static_cast<unsigned char>(needle[k])) ++k;
      if (k == needle.size()) {
        ++found;
        start = begin + needle.size();
      }
    }
    at = find_char(s, std::max(at + 1, start + anchor), static_cast<unsigned char>(needle[anchor]));
  }
  return found;
}

// counts(text, needles) -> tuple of text.count(needle) for each ASCII needle.
PyObject* py_counts(PyObject*, PyObject* args) {
  PyObject *text, *needles;
  if (!PyArg_ParseTuple(args, "UO!:counts", &text, &PyTuple_Type, &needles)) return nullptr;
#if PY_VERSION_HEX < 0x030C0000
  if (PyUnicode_READY(text) != 0) return nullptr;
#endif
  size_t size = static_cast<size_t>(PyUnicode_GET_LENGTH(text));
  Py_ssize_t n = PyTuple_GET_SIZE(needles);
  PyObject* result = PyTuple_New(n);
  if (result == nullptr) return nullptr;
  for (Py_ssize_t i = 0; i < n; ++i) {
    PyObject* item = PyTuple_GET_ITEM(needles, i);
    Py_ssize_t length;
    const char* ascii = PyUnicode_Check(item) && PyUnicode_IS_ASCII(item) ? PyUnicode_AsUTF8AndSize(item, &length) : nullptr;
    if (ascii == nullptr) {
      Py_DECREF(result);
      PyErr_Format(PyExc_TypeError, "counts: needles[%zd] must be an ASCII str", i);
      return nullptr;
    }
    std::string_view needle(ascii, static_cast<size_t>(length));
    Py_ssize_t found;
    switch (PyUnicode_KIND(text)) {
      case PyUnicode_1BYTE_KIND:
        found = count_occurrences(Chars<Py_UCS1>{PyUnicode_1BYTE_DATA(text), size}, needle);
        break;
      case PyUnicode_2BYTE_KIND:
        found = count_occurrences(Chars<Py_UCS2>{PyUnicode_2BYTE_DATA(text), size}, needle);
        break;
      default:
        found = count_occurrences(Chars<Py_UCS4>{PyUnicode_4BYTE_DATA(text), size}, needle);
    }
    PyTuple_SET_ITEM(result, i, PyLong_FromSsize_t(found));
  }
  return result;
}

PyObject* py_set_tables(PyObject*, PyObject* args) {
  PyObject *named, *invalid_refs, *invalid_points;
  if (!PyArg_ParseTuple(args, "O!O!O:set_tables", &PyDict_Type, &named, &PyDict_Type, &invalid_refs, &invalid_points))
    return nullptr;
  Tables fresh;
  PyObject *key, *value;
  Py_ssize_t position = 0;
  while (PyDict_Next(named, &position, &key, &value)) {
    U32 name, replacement;
    if (!to_u32(key, "named entity", &name) || !to_u32(value, "named entity's text", &replacement)) return nullptr;
    fresh.named.emplace(std::move(name), std::move(replacement));
  }
  position = 0;
  while (PyDict_Next(invalid_refs, &position, &key, &value)) {
    unsigned long number = PyLong_AsUnsignedLong(key);
    U32 replacement;
    if (PyErr_Occurred() || !to_u32(value, "invalid charref's text", &replacement)) return nullptr;
    fresh.invalid_refs.emplace(static_cast<uint32_t>(number), std::move(replacement));
  }
  PyObject* iterator = PyObject_GetIter(invalid_points);
  if (iterator == nullptr) return nullptr;
  while (PyObject* item = PyIter_Next(iterator)) {
    unsigned long number = PyLong_AsUnsignedLong(item);
    Py_DECREF(item);
    if (PyErr_Occurred()) break;
    fresh.invalid_points.insert(static_cast<uint32_t>(number));
  }
  Py_DECREF(iterator);
  if (PyErr_Occurred()) return nullptr;
  fresh.ready = true;
  tables = std::move(fresh);
  Py_RETURN_NONE;
}

PyMethodDef kMethods[] = {
    {"code_stats", py_code_stats, METH_VARARGS,
     "code_stats(html, text) -> (has_code_tags, code_blocks, code_chars); see web_ingest.code_stats_reference."},
    {"word_count", py_word_count, METH_VARARGS, "word_count(text) -> int: len(text.split()) without the list."},
    {"counts", py_counts, METH_VARARGS, "counts(text, needles) -> tuple: text.count(n) for each ASCII needle."},
    {"set_tables", py_set_tables, METH_VARARGS,
     "set_tables(html5, invalid_charrefs, invalid_codepoints): html.unescape's tables, once before code_stats."},
    {nullptr, nullptr, 0, nullptr},
};

PyModuleDef kModule = {PyModuleDef_HEAD_INIT, "seedcoder._webtext",
                       "Code counts of web pages (C++); use seedcoder.curate.web_ingest.code_stats.", -1, kMethods,
                       nullptr, nullptr, nullptr, nullptr};

}  // namespace

PyMODINIT_FUNC PyInit__webtext() { return PyModule_Create(&kModule); }
