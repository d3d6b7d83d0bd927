// RoPE (Llama/HF rotate_half layout) for q and k in one launch; see rotary.h for the semantics.
//
// A block owns a tile of tokens of one sequence (tokens * D/2 <= kTilePairs) and a round-robin share of the
// Hq + Hkv heads (q heads first, then k heads; blockIdx.y = group, gridDim.y = groups). Phase 1 writes the
// tile's cos/sin (already signed for the inverse rotation) to shared memory; with theta it evaluates inv_freq
// (once per pair index) and sin/cos (per token and pair) in double and rounds to float, which gives HF's fp32
// values (correctly rounded powf, sinf, cosf) independent of --use_fast_math, whose __sinf/__cosf would be
// wrong for angles of ~1e5 rad; all heads share that cost. Phase 2 streams the heads: each thread rotates VEC
// pairs (16-byte loads of both halves when pointers and strides allow; the cos/sin come as float4 from shared
// memory), two items per step so that both items' loads are in flight before the first store.
#include "rotary.h"

#include <algorithm>

namespace seedcoder {
namespace {

constexpr int kThreads = 256;
constexpr int kTilePairs = 2048;  // (token, pair) entries per block: 4 fp32 tables = 32 KiB of shared memory
constexpr int kUnroll = 2;
constexpr int kMaxHalf = 128;  // head_dim <= 256

template <typename T, int VEC>
struct alignas(sizeof(T) * VEC) Packed {
  T v[VEC];
};

__device__ __forceinline__ float load_table(const void* table, DType dtype, int64_t i) {
  switch (dtype) {
    case DType::F16: return __half2float(static_cast<const __half*>(table)[i]);
    case DType::BF16: return __bfloat162float(static_cast<const __nv_bfloat16*>(table)[i]);
    default: return static_cast<const float*>(table)[i];
  }
}

// HF (fp32): inv_freq = 1 / theta ** (arange(0, D, 2) / D), each step rounded to fp32.
__device__ __forceinline__ float compute_inv_freq(int i, int half, float theta) {
  const float exponent = static_cast<float>(static_cast<double>(i) / static_cast<double>(half));
  const float theta_pow = static_cast<float>(pow(static_cast<double>(theta), static_cast<double>(exponent)));
  return static_cast<float>(1.0 / static_cast<double>(theta_pow));
}

// VEC consecutive floats of a shared-memory table; float4 reads when VEC allows (offset is a multiple of VEC,
// as half % VEC == 0 on the vectorized path), which keeps bank conflicts at 2-way instead of 8-way.
template <int VEC>
__device__ __forceinline__ void load_tile(const float* table, int offset, float (&out)[VEC]) {
  if constexpr (VEC % 4 == 0) {
#pragma unroll
    for (int w = 0; w < VEC / 4; ++w) {
      const float4 f = reinterpret_cast<const float4*>(table + offset)[w];
      out[4 * w] = f.x;
      out[4 * w + 1] = f.y;
      out[4 * w + 2] = f.z;
      out[4 * w + 3] = f.w;
    }
  } else {
#pragma unroll
    for (int e = 0; e < VEC; ++e) out[e] = table[offset + e];
  }
}

template <typename scalar_t, int VEC>
__global__ void __launch_bounds__(kThreads) rotary_kernel(const RotaryParams p, int tokens_per_block, int s_blocks) {
  __shared__ __align__(16) float cos_a[kTilePairs], cos_b[kTilePairs], sin_a[kTilePairs], sin_b[kTilePairs];
  __shared__ float inv_freq[kMaxHalf];
  const int half = static_cast<int>(p.head_dim / 2);
  const int64_t b = blockIdx.x / s_blocks;
  const int64_t s0 = static_cast<int64_t>(blockIdx.x % s_blocks) * tokens_per_block;
  const int tokens = static_cast<int>(min(static_cast<int64_t>(tokens_per_block), p.seqlen - s0));

  // Phase 1: cos/sin of the tile, signed for the direction of rotation.
  if (p.cos == nullptr) {  // uniform over the block
    for (int i = threadIdx.x; i < half; i += kThreads) inv_freq[i] = compute_inv_freq(i, half, p.theta);
    __syncthreads();
  }
  for (int idx = threadIdx.x; idx < tokens * half; idx += kThreads) {
    const int t = idx / half, i = idx - t * half;
    const int64_t s = s0 + t;
    float c1, c2, s1, s2;
    if (p.cos != nullptr) {
      const int64_t off = b * p.table_stride_b + s * p.table_stride_s + i;
      c1 = load_table(p.cos, p.table_dtype, off);
      c2 = load_table(p.cos, p.table_dtype, off + half);
      s1 = load_table(p.sin, p.table_dtype, off);
      s2 = load_table(p.sin, p.table_dtype, off + half);
    } else {
      int64_t pos = s;
      if (p.position_ids != nullptr) {
        const int64_t off = b * p.pos_stride_b + s * p.pos_stride_s;
        pos = p.position_ids_int64 ? static_cast<const int64_t*>(p.position_ids)[off]
                                   : static_cast<int64_t>(static_cast<const int32_t*>(p.position_ids)[off]);
      }
      const float angle = __fmul_rn(static_cast<float>(pos), inv_freq[i]);
      double sd, cd;
      sincos(static_cast<double>(angle), &sd, &cd);
      c1 = c2 = static_cast<float>(cd);
      s1 = s2 = static_cast<float>(sd);
    }
    cos_a[idx] = c1;
    cos_b[idx] = c2;
    sin_a[idx] = p.inverse ? -s2 : s1;
    sin_b[idx] = p.inverse ? -s1 : s2;
  }
  __syncthreads();

  // Phase 2: this group's heads j = group, group + groups, ... < Hq + Hkv; items (head, token, vector).
  const int64_t groups = gridDim.y, group = blockIdx.y;
  const int64_t total_heads = p.q.heads + p.k.heads;
  const int64_t my_heads = group < total_heads ? (total_heads - group + groups - 1) / groups : 0;
  const int vecs = half / VEC;
  const int64_t items = my_heads * tokens * vecs;
  using Vec = Packed<scalar_t, VEC>;

  for (int64_t first = threadIdx.x; first < items; first += kUnroll * kThreads) {
    Vec x1[kUnroll], x2[kUnroll];
    scalar_t* out[kUnroll];
    int tab[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t item = first + u * kThreads;
      out[u] = nullptr;
      if (item >= items) continue;
      const int v = static_cast<int>(item % vecs);
      const int64_t rest = item / vecs;
      const int t = static_cast<int>(rest % tokens);
      const int64_t j = group + (rest / tokens) * groups;
      const bool is_q = j < p.q.heads;
      const RotaryOperand& op = is_q ? p.q : p.k;  // fields are read through selects, no local copy
      const int64_t h = is_q ? j : j - p.q.heads;
      const int64_t s = s0 + t;
      const scalar_t* in = static_cast<const scalar_t*>(is_q ? p.q.in : p.k.in) +
                           (b * op.in_stride_b + s * op.in_stride_s + h * op.in_stride_h + v * VEC);
      out[u] = static_cast<scalar_t*>(is_q ? p.q.out : p.k.out) +
               (b * op.out_stride_b + s * op.out_stride_s + h * op.out_stride_h + v * VEC);
      tab[u] = t * half + v * VEC;
      x1[u] = *reinterpret_cast<const Vec*>(in);
      x2[u] = *reinterpret_cast<const Vec*>(in + half);
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      if (out[u] == nullptr) continue;
      float ca[VEC], cb[VEC], sa[VEC], sb[VEC];
      load_tile<VEC>(cos_a, tab[u], ca);
      load_tile<VEC>(cos_b, tab[u], cb);
      load_tile<VEC>(sin_a, tab[u], sa);
      load_tile<VEC>(sin_b, tab[u], sb);
      Vec o1, o2;
#pragma unroll
      for (int e = 0; e < VEC; ++e) {
        const float a = to_float(x1[u].v[e]), c = to_float(x2[u].v[e]);
        o1.v[e] = from_float<scalar_t>(a * ca[e] - c * sa[e]);
        o2.v[e] = from_float<scalar_t>(c * cb[e] + a * sb[e]);
      }
      *reinterpret_cast<Vec*>(out[u]) = o1;
      *reinterpret_cast<Vec*>(out[u] + half) = o2;
    }
  }
}

bool aligned(const void* ptr, int bytes) { return reinterpret_cast<uintptr_t>(ptr) % bytes == 0; }

bool operand_vectorizable(const RotaryOperand& op, int vec, int bytes) {
  return aligned(op.in, bytes) && aligned(op.out, bytes) && op.in_stride_b % vec == 0 && op.in_stride_s % vec == 0 &&
         op.in_stride_h % vec == 0 && op.out_stride_b % vec == 0 && op.out_stride_s % vec == 0 &&
         op.out_stride_h % vec == 0;
}

template <typename scalar_t>
cudaError_t launch(const RotaryParams& p, cudaStream_t stream) {
  constexpr int kVec = 16 / sizeof(scalar_t);
  const int half = static_cast<int>(p.head_dim / 2);
  const int tokens_per_block = half >= kTilePairs ? 1 : kTilePairs / half;
  const int64_t s_blocks = (p.seqlen + tokens_per_block - 1) / tokens_per_block;
  const int64_t token_blocks = p.batch * s_blocks;
  if (token_blocks > 0x7fffffff) return cudaErrorInvalidConfiguration;

  // Split the heads over blocks until the grid has ~4 blocks per SM, keeping >= ~4 heads per block so the
  // cos/sin tile is amortised.
  int device = 0, sms = 0;
  cudaError_t err = cudaGetDevice(&device);
  if (err == cudaSuccess) err = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  if (err != cudaSuccess) return err;
  const int64_t total_heads = p.q.heads + p.k.heads;
  const int64_t wanted = (4 * static_cast<int64_t>(sms) + token_blocks - 1) / token_blocks;
  const int64_t groups = std::max<int64_t>(1, std::min<int64_t>({wanted, (total_heads + 3) / 4, 65535}));

  const dim3 grid(static_cast<unsigned>(token_blocks), static_cast<unsigned>(groups));
  const bool vectorized = half % kVec == 0 && operand_vectorizable(p.q, kVec, 16) && operand_vectorizable(p.k, kVec, 16);
  if (vectorized) {
    rotary_kernel<scalar_t, kVec><<<grid, kThreads, 0, stream>>>(p, tokens_per_block, static_cast<int>(s_blocks));
  } else {
    rotary_kernel<scalar_t, 1><<<grid, kThreads, 0, stream>>>(p, tokens_per_block, static_cast<int>(s_blocks));
  }
  return cudaGetLastError();
}

}  // namespace

cudaError_t rotary(const RotaryParams& p, cudaStream_t stream) {
  if (p.head_dim <= 0 || p.head_dim % 2 != 0 || p.head_dim > 256) return cudaErrorInvalidValue;
  if (p.batch == 0 || p.seqlen == 0 || p.q.heads + p.k.heads == 0) return cudaSuccess;
  cudaError_t err = cudaSuccess;
  SEEDCODER_DISPATCH_DTYPE(p.dtype, err = launch<scalar_t>(p, stream));
  return err;
}

}  // namespace seedcoder
