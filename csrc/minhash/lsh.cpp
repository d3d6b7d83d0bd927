// LSH banding and union-find clustering of MinHash signatures (see minhash.h).
//
// Per band: a 64-bit key of the band's values for every non-empty row, one sort by (key, row), then each run of
// equal keys split by exact band content (a key collision joins nothing): the rows of one content are an LSH bucket,
// the candidates datasketch's MinHashLSH would return for each other. Without verification every bucket is joined
// to its first row. With verification the bucket is split into groups of rows linked by verified pairs: a row joins
// each earlier group it is already connected to or that holds a row it is similar to (scanning that group until
// the first hit), which yields exactly the components of all verified pairs of the bucket at O(rows x groups)
// comparisons instead of O(rows^2) for buckets of near-identical rows.
#include <algorithm>
#include <cstring>
#include <numeric>
#include <utility>

#include "minhash.h"

namespace seedcoder::minhash {

namespace {

class UnionFind {
 public:
  explicit UnionFind(size_t n) : parent_(n) { std::iota(parent_.begin(), parent_.end(), size_t{0}); }

  size_t find(size_t x) {
    while (parent_[x] != x) {
      parent_[x] = parent_[parent_[x]];  // path halving
      x = parent_[x];
    }
    return x;
  }

  // The smaller root becomes the parent, so every root is the lowest row index of its component.
  void unite(size_t x, size_t y) {
    x = find(x);
    y = find(y);
    if (x < y) parent_[y] = x;
    else if (y < x) parent_[x] = y;
  }

 private:
  std::vector<size_t> parent_;
};

uint64_t band_key(const uint32_t* values, size_t rows) {
  uint64_t h = 0x9E3779B97F4A7C15ull ^ rows;
  for (size_t i = 0; i < rows; ++i) {
    h = (h ^ values[i]) * 0xFF51AFD7ED558CCDull;
    h ^= h >> 32;
  }
  return h;
}

}  // namespace

void cluster(const uint32_t* signatures, size_t count, size_t num_perm, size_t bands, size_t rows, bool verify,
             double threshold, int64_t* out) {
  auto row_of = [&](size_t i) { return signatures + i * num_perm; };
  auto similar = [&](size_t x, size_t y) {
    const uint32_t* p = row_of(x);
    const uint32_t* q = row_of(y);
    size_t equal = 0;
    for (size_t k = 0; k < num_perm; ++k) equal += p[k] == q[k];
    // the same float64 arithmetic as datasketch's MinHash.jaccard, so both decide borderline pairs alike
    return static_cast<double>(equal) / static_cast<double>(num_perm) >= threshold;
  };

  std::vector<size_t> live;  // rows with at least one shingle
  live.reserve(count);
  for (size_t i = 0; i < count; ++i) {
    const uint32_t* p = row_of(i);
    if (!std::all_of(p, p + num_perm, [](uint32_t v) { return v == kEmptyValue; })) live.push_back(i);
  }

  UnionFind components(count);
  std::vector<std::pair<uint64_t, size_t>> entries(live.size());
  std::vector<std::vector<size_t>> buckets;  // rows of one exact band content within a run of equal keys
  std::vector<std::vector<size_t>> groups;   // verification: rows of a bucket linked by verified pairs

  auto join_bucket = [&](const std::vector<size_t>& bucket) {
    if (!verify) {
      for (size_t i = 1; i < bucket.size(); ++i) components.unite(bucket[0], bucket[i]);
      return;
    }
    groups.clear();
    for (size_t row : bucket) {
      size_t target = groups.size();  // the group the row joins (none yet)
      for (size_t g = 0; g < groups.size(); ++g) {
        bool linked = components.find(row) == components.find(groups[g][0]);
        if (!linked) {
          for (size_t member : groups[g]) {
            if (similar(row, member)) {
              components.unite(row, member);
              linked = true;
              break;
            }
          }
        }
        if (!linked) continue;
        if (target == groups.size()) {
          target = g;
        } else {  // the row links two groups: merge them
          groups[target].insert(groups[target].end(), groups[g].begin(), groups[g].end());
          groups[g].clear();
        }
      }
      if (target == groups.size()) groups.push_back({row});
      else groups[target].push_back(row);
      groups.erase(std::remove_if(groups.begin(), groups.end(), [](const auto& g) { return g.empty(); }), groups.end());
    }
  };

  for (size_t band = 0; band < bands; ++band) {
    const size_t offset = band * rows;
    for (size_t j = 0; j < live.size(); ++j) entries[j] = {band_key(row_of(live[j]) + offset, rows), live[j]};
    std::sort(entries.begin(), entries.end());
    for (size_t start = 0; start < entries.size();) {
      size_t end = start + 1;
      while (end < entries.size() && entries[end].first == entries[start].first) ++end;
      if (end - start >= 2) {
        buckets.clear();
        for (size_t j = start; j < end; ++j) {
          const size_t row = entries[j].second;
          auto same = std::find_if(buckets.begin(), buckets.end(), [&](const std::vector<size_t>& bucket) {
            return std::memcmp(row_of(bucket[0]) + offset, row_of(row) + offset, rows * sizeof(uint32_t)) == 0;
          });
          if (same == buckets.end()) buckets.push_back({row});
          else same->push_back(row);
        }
        for (const auto& bucket : buckets) {
          if (bucket.size() >= 2) join_bucket(bucket);
        }
      }
      start = end;
    }
  }
  for (size_t i = 0; i < count; ++i) out[i] = static_cast<int64_t>(components.find(i));
}

}  // namespace seedcoder::minhash
