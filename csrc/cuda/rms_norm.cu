// RMSNorm forward/backward kernels (see rms_norm.h for the semantics).
//
// Forward: one thread block per row. Each thread owns the vectors tid, tid + T, ... of the row (16-byte
// vectors when every pointer and row stride allows it, else scalars). Rows up to kFwdCacheElems * T
// elements stay in registers (one read of x, one write of y); wider rows take two passes, the second
// re-reading h (an L2 hit) — that includes the residual case, which re-reads the h it just stored.
//
// Backward: a persistent 2-D grid (row programs x column chunks). A block keeps its column chunk of weight
// and of its fp32 dweight partial in registers while it walks its range of rows, so dweight needs no atomics:
// each row program writes one fp32 partial row to the workspace and rms_norm_dw_reduce_kernel sums them.
// When the whole row fits one chunk (n_cols <= kBwdCacheElems * 512) the per-row dot product mean(dy*w*h)
// is a block reduction inside the same kernel; wider rows get it from rms_norm_bwd_coef_kernel first.
#include <algorithm>

#include "rms_norm.h"

namespace seedcoder {
namespace {

constexpr int kMaxThreads = 512;
constexpr int kFwdCacheElems = 32;  // per thread: the forward holds h (fp32) for up to this many elements
constexpr int kFwdCacheElemsScalar = 16;  // the same without 16-byte vectors (misaligned rows)
constexpr int kBwdCacheElems = 16;  // per thread: the backward holds dy, h, weight, dweight for this many
constexpr int kCoefThreads = 256;
constexpr int kReduceCols = 32, kReduceRows = 8;

template <typename T, int N>
struct alignas(sizeof(T) * N) Pack {
  T v[N];
};

template <int VEC, typename T>
__device__ __forceinline__ void load_floats(const T* p, float (&out)[VEC]) {
  const Pack<T, VEC> pack = *reinterpret_cast<const Pack<T, VEC>*>(p);
#pragma unroll
  for (int i = 0; i < VEC; ++i) out[i] = to_float<T>(pack.v[i]);
}

template <int VEC, typename T>
__device__ __forceinline__ void store_floats(T* p, const float (&in)[VEC]) {
  Pack<T, VEC> pack;
#pragma unroll
  for (int i = 0; i < VEC; ++i) pack.v[i] = from_float<T>(in[i]);
  *reinterpret_cast<Pack<T, VEC>*>(p) = pack;
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

// Sum over the block (blockDim.x a multiple of 32); every thread gets the total. Safe to call repeatedly.
__device__ __forceinline__ float block_sum(float v) {
  __shared__ float warp_totals[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  v = warp_sum(v);
  if (lane == 0) warp_totals[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < static_cast<int>(blockDim.x >> 5) ? warp_totals[lane] : 0.f;
    v = warp_sum(v);
    if (lane == 0) warp_totals[0] = v;
  }
  __syncthreads();
  const float total = warp_totals[0];
  __syncthreads();  // the next call may overwrite warp_totals
  return total;
}

// ------------------------------------------------------------------------------------------- forward
template <typename T, typename W, int VEC, bool HAS_RES>
__global__ void __launch_bounds__(kMaxThreads, 1)  // (min blocks 1: without it ptxas spills a few bytes at 40 registers)
rms_norm_fwd_kernel(const T* __restrict__ x, int64_t x_stride, const T* __restrict__ residual, int64_t r_stride,
                    const W* __restrict__ weight, T* __restrict__ y, int64_t y_stride, T* __restrict__ residual_out,
                    int64_t ro_stride, float* __restrict__ rstd_out, int64_t n_cols, float eps) {
  // scalar (unaligned) rows: fewer cached slots, each costs its own address arithmetic
  constexpr int kSlots = VEC == 1 ? kFwdCacheElemsScalar : kFwdCacheElems / VEC;
  const int64_t row = blockIdx.x;
  x += row * x_stride;
  y += row * y_stride;
  if constexpr (HAS_RES) {
    residual += row * r_stride;
    residual_out += row * ro_stride;
  }
  const int n_vecs = static_cast<int>(n_cols / VEC);
  const int threads = blockDim.x;

  // h of one vector: x (+ residual, rounded to T and stored as residual_out)
  auto load_h = [&](int v, float (&h)[VEC]) {
    load_floats<VEC>(x + v * VEC, h);
    if constexpr (HAS_RES) {
      float r[VEC];
      load_floats<VEC>(residual + v * VEC, r);
      Pack<T, VEC> rounded;
#pragma unroll
      for (int i = 0; i < VEC; ++i) {
        rounded.v[i] = from_float<T>(h[i] + r[i]);
        h[i] = to_float<T>(rounded.v[i]);
      }
      *reinterpret_cast<Pack<T, VEC>*>(residual_out + v * VEC) = rounded;
    }
  };
  auto store_y = [&](int v, const float (&h)[VEC], float rstd) {
    float w[VEC], out[VEC];
    load_floats<VEC>(weight + v * VEC, w);
#pragma unroll
    for (int i = 0; i < VEC; ++i) out[i] = h[i] * rstd * w[i];
    store_floats<VEC>(y + v * VEC, out);
  };

  float sum_sq = 0.f, rstd;
  if (n_vecs <= static_cast<int64_t>(kSlots) * threads) {  // the row fits in registers
    float h[kSlots][VEC];
#pragma unroll
    for (int s = 0; s < kSlots; ++s) {
      const int v = threadIdx.x + s * threads;
      if (v < n_vecs) {
        load_h(v, h[s]);
#pragma unroll
        for (int i = 0; i < VEC; ++i) sum_sq += h[s][i] * h[s][i];
      }
    }
    rstd = rsqrtf(block_sum(sum_sq) / static_cast<float>(n_cols) + eps);
#pragma unroll
    for (int s = 0; s < kSlots; ++s) {
      const int v = threadIdx.x + s * threads;
      if (v < n_vecs) store_y(v, h[s], rstd);
    }
  } else {  // two passes; each thread re-reads only the elements it wrote itself
    for (int v = threadIdx.x; v < n_vecs; v += threads) {
      float h[VEC];
      load_h(v, h);
#pragma unroll
      for (int i = 0; i < VEC; ++i) sum_sq += h[i] * h[i];
    }
    rstd = rsqrtf(block_sum(sum_sq) / static_cast<float>(n_cols) + eps);
    const T* h_src = HAS_RES ? residual_out : x;
    for (int v = threadIdx.x; v < n_vecs; v += threads) {
      float h[VEC];
      load_floats<VEC>(h_src + v * VEC, h);
      store_y(v, h, rstd);
    }
  }
  if (threadIdx.x == 0) rstd_out[row] = rstd;
}

// ------------------------------------------------------------------------------------------ backward
// coef[row] = rstd^3 * mean(dy * w * h), for rows too wide for one chunk of the main backward kernel.
template <typename T, typename W, int VEC>
__global__ void __launch_bounds__(kCoefThreads)
rms_norm_bwd_coef_kernel(const T* __restrict__ dy, int64_t dy_stride, const T* __restrict__ h, int64_t h_stride,
                         const W* __restrict__ weight, const float* __restrict__ rstd, float* __restrict__ coef,
                         int64_t n_cols) {
  const int64_t row = blockIdx.x;
  dy += row * dy_stride;
  h += row * h_stride;
  const int n_vecs = static_cast<int>(n_cols / VEC);
  float dot = 0.f;
  for (int v = threadIdx.x; v < n_vecs; v += blockDim.x) {
    float g[VEC], hv[VEC], w[VEC];
    load_floats<VEC>(dy + v * VEC, g);
    load_floats<VEC>(h + v * VEC, hv);
    load_floats<VEC>(weight + v * VEC, w);
#pragma unroll
    for (int i = 0; i < VEC; ++i) dot += g[i] * w[i] * hv[i];
  }
  dot = block_sum(dot);
  if (threadIdx.x == 0) {
    const float r = rstd[row];
    coef[row] = r * r * r * dot / static_cast<float>(n_cols);
  }
}

// Block (p, c): rows [p * rows_per_program, ...) x column chunk c (kBwdCacheElems * blockDim.x columns).
// coef == nullptr: the chunk is the whole row and the block computes each row's coefficient itself.
template <typename T, typename W, int VEC, bool HAS_DRES>
__global__ void __launch_bounds__(kMaxThreads)
rms_norm_bwd_kernel(const T* __restrict__ dy, int64_t dy_stride, const T* __restrict__ h, int64_t h_stride,
                    const W* __restrict__ weight, const float* __restrict__ rstd, const float* __restrict__ coef,
                    const T* __restrict__ dres, int64_t dres_stride, T* __restrict__ dx, int64_t dx_stride,
                    float* __restrict__ dw_partial, int64_t n_rows, int64_t n_cols, int64_t rows_per_program) {
  constexpr int kSlots = kBwdCacheElems / VEC;
  const int threads = blockDim.x;
  const int n_vecs = static_cast<int>(n_cols / VEC);
  const int vec_base = blockIdx.y * kSlots * threads + threadIdx.x;
  const float inv_n = 1.f / static_cast<float>(n_cols);

  float w[kSlots][VEC], dw[kSlots][VEC];
#pragma unroll
  for (int s = 0; s < kSlots; ++s) {
    const int v = vec_base + s * threads;
#pragma unroll
    for (int i = 0; i < VEC; ++i) w[s][i] = dw[s][i] = 0.f;
    if (v < n_vecs) load_floats<VEC>(weight + v * VEC, w[s]);
  }

  const int64_t row_begin = static_cast<int64_t>(blockIdx.x) * rows_per_program;
  const int64_t row_end = row_begin + rows_per_program < n_rows ? row_begin + rows_per_program : n_rows;
  for (int64_t row = row_begin; row < row_end; ++row) {
    const T* dy_row = dy + row * dy_stride;
    const T* h_row = h + row * h_stride;
    float g[kSlots][VEC], hv[kSlots][VEC];
#pragma unroll
    for (int s = 0; s < kSlots; ++s) {
      const int v = vec_base + s * threads;
#pragma unroll
      for (int i = 0; i < VEC; ++i) g[s][i] = hv[s][i] = 0.f;
      if (v < n_vecs) {
        load_floats<VEC>(dy_row + v * VEC, g[s]);
        load_floats<VEC>(h_row + v * VEC, hv[s]);
      }
    }
    const float r = rstd[row];
    T* dx_row = dx + row * dx_stride;
    const T* dres_row = HAS_DRES ? dres + row * dres_stride : nullptr;
    float c;
    if (coef == nullptr) {  // uniform over the block: the whole row is in this block's registers
      float dot = 0.f;
#pragma unroll
      for (int s = 0; s < kSlots; ++s)
#pragma unroll
        for (int i = 0; i < VEC; ++i) dot += g[s][i] * w[s][i] * hv[s][i];
      c = r * r * r * block_sum(dot) * inv_n;
    } else {
      c = coef[row];
    }
#pragma unroll
    for (int s = 0; s < kSlots; ++s) {
      const int v = vec_base + s * threads;
      if (v < n_vecs) {
        float out[VEC];
        if constexpr (HAS_DRES) load_floats<VEC>(dres_row + v * VEC, out);
#pragma unroll
        for (int i = 0; i < VEC; ++i) {
          const float d = r * g[s][i] * w[s][i] - c * hv[s][i];
          out[i] = HAS_DRES ? out[i] + d : d;
          dw[s][i] += g[s][i] * hv[s][i] * r;
        }
        store_floats<VEC>(dx_row + v * VEC, out);
      }
    }
  }
  float* partial = dw_partial + static_cast<int64_t>(blockIdx.x) * n_cols;
#pragma unroll
  for (int s = 0; s < kSlots; ++s) {
    const int v = vec_base + s * threads;
    if (v < n_vecs) store_floats<VEC>(partial + v * VEC, dw[s]);
  }
}

// dweight[c] = sum_p dw_partial[p, c]: 32 columns x 8 partial rows per block, coalesced along columns.
template <typename W>
__global__ void __launch_bounds__(kReduceCols * kReduceRows)
rms_norm_dw_reduce_kernel(const float* __restrict__ dw_partial, W* __restrict__ dweight, int64_t n_partials,
                          int64_t n_cols) {
  __shared__ float sums[kReduceRows][kReduceCols + 1];
  const int64_t col = static_cast<int64_t>(blockIdx.x) * kReduceCols + threadIdx.x;
  float acc = 0.f;
  if (col < n_cols)
    for (int64_t p = threadIdx.y; p < n_partials; p += kReduceRows) acc += dw_partial[p * n_cols + col];
  sums[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y == 0 && col < n_cols) {
#pragma unroll
    for (int i = 1; i < kReduceRows; ++i) acc += sums[i][threadIdx.x];
    dweight[col] = from_float<W>(acc);
  }
}

// ---------------------------------------------------------------------------------------- host side
// Calls f(T{}, W{}) with the element types of dtype and weight_dtype.
template <typename F>
cudaError_t dispatch_types(DType dtype, DType weight_dtype, F&& f) {
  auto with_weight = [&](auto t) -> cudaError_t {
    switch (weight_dtype) {
      case DType::F32: return f(t, float{});
      case DType::F16: return f(t, __half{});
      case DType::BF16: return f(t, __nv_bfloat16{});
    }
    return cudaErrorInvalidValue;
  };
  switch (dtype) {
    case DType::F32: return with_weight(float{});
    case DType::F16: return with_weight(__half{});
    case DType::BF16: return with_weight(__nv_bfloat16{});
  }
  return cudaErrorInvalidValue;
}

bool aligned(const void* p, size_t bytes) { return p == nullptr || reinterpret_cast<uintptr_t>(p) % bytes == 0; }

int64_t cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

int pow2_threads(int64_t work_items) {  // smallest power of two >= work_items, clamped to [32, kMaxThreads]
  int t = 32;
  while (t < kMaxThreads && t < work_items) t <<= 1;
  return t;
}

struct BwdPlan {
  int threads;
  int64_t col_chunks, row_programs, rows_per_program;
  bool fused;  // the whole row in one chunk: no coefficient kernel
};

BwdPlan plan_bwd(int64_t n_rows, int64_t n_cols, int num_sms) {
  BwdPlan p;
  p.fused = n_cols <= static_cast<int64_t>(kBwdCacheElems) * kMaxThreads;
  p.threads = p.fused ? pow2_threads(cdiv(n_cols, kBwdCacheElems)) : 256;
  p.col_chunks = cdiv(n_cols, static_cast<int64_t>(kBwdCacheElems) * p.threads);
  // as many blocks as fit one wave, assuming the ~128 registers per thread the cached path can take
  const int64_t blocks_per_sm = std::max(1, std::min(8, 65536 / (p.threads * 128)));
  const int64_t target = std::max<int64_t>(1, static_cast<int64_t>(std::max(num_sms, 1)) * blocks_per_sm / p.col_chunks);
  p.row_programs = std::max<int64_t>(1, std::min(n_rows, target));
  p.rows_per_program = cdiv(n_rows, p.row_programs);
  p.row_programs = cdiv(n_rows, p.rows_per_program);  // every program gets at least one row
  return p;
}

}  // namespace

cudaError_t rms_norm_fwd(const void* x, int64_t x_row_stride, const void* residual, int64_t residual_row_stride,
                         const void* weight, void* y, int64_t y_row_stride, void* residual_out,
                         int64_t residual_out_row_stride, float* rstd, int64_t n_rows, int64_t n_cols, float eps,
                         DType dtype, DType weight_dtype, cudaStream_t stream) {
  if (n_rows < 0 || n_cols <= 0 || n_rows > 0x7fffffff || n_cols > 0x7fffffff ||
      (residual == nullptr) != (residual_out == nullptr))
    return cudaErrorInvalidValue;
  if (n_rows == 0) return cudaSuccess;
  return dispatch_types(dtype, weight_dtype, [&](auto t, auto wt) -> cudaError_t {
    using T = decltype(t);
    using W = decltype(wt);
    constexpr int kVec = 16 / sizeof(T);
    const bool vec = n_cols % kVec == 0 && x_row_stride % kVec == 0 && y_row_stride % kVec == 0 &&
                     (residual == nullptr || (residual_row_stride % kVec == 0 && residual_out_row_stride % kVec == 0)) &&
                     aligned(x, 16) && aligned(y, 16) && aligned(residual, 16) && aligned(residual_out, 16) &&
                     aligned(weight, kVec * sizeof(W));
    const int threads = pow2_threads(cdiv(n_cols, kFwdCacheElems / 2));  // ~16 elements per thread, room for 32
    auto launch = [&](auto vec_tag, auto res_tag) {
      constexpr int VEC = decltype(vec_tag)::value;
      constexpr bool HAS_RES = decltype(res_tag)::value;
      rms_norm_fwd_kernel<T, W, VEC, HAS_RES><<<static_cast<unsigned>(n_rows), threads, 0, stream>>>(
          static_cast<const T*>(x), x_row_stride, static_cast<const T*>(residual), residual_row_stride,
          static_cast<const W*>(weight), static_cast<T*>(y), y_row_stride, static_cast<T*>(residual_out),
          residual_out_row_stride, rstd, n_cols, eps);
    };
    using V1 = std::integral_constant<int, 1>;
    using VN = std::integral_constant<int, kVec>;
    using NoRes = std::false_type;
    using Res = std::true_type;
    if (residual != nullptr) {
      vec ? launch(VN{}, Res{}) : launch(V1{}, Res{});
    } else {
      vec ? launch(VN{}, NoRes{}) : launch(V1{}, NoRes{});
    }
    return cudaGetLastError();
  });
}

size_t rms_norm_bwd_workspace_bytes(int64_t n_rows, int64_t n_cols, int num_sms) {
  if (n_rows <= 0 || n_cols <= 0) return 0;
  const BwdPlan p = plan_bwd(n_rows, n_cols, num_sms);
  const size_t partial_bytes = static_cast<size_t>(p.row_programs) * static_cast<size_t>(n_cols) * sizeof(float);
  const size_t coef_bytes = p.fused ? 0 : static_cast<size_t>(n_rows) * sizeof(float);
  return cdiv(static_cast<int64_t>(partial_bytes), 16) * 16 + coef_bytes;
}

cudaError_t rms_norm_bwd(const void* dy, int64_t dy_row_stride, const void* h, int64_t h_row_stride,
                         const void* weight, const float* rstd, const void* dresidual_out,
                         int64_t dresidual_out_row_stride, void* dx, int64_t dx_row_stride, void* dweight,
                         void* workspace, int64_t n_rows, int64_t n_cols, int num_sms, DType dtype,
                         DType weight_dtype, cudaStream_t stream) {
  if (n_rows < 0 || n_cols <= 0 || n_rows > 0x7fffffff || n_cols > 0x7fffffff) return cudaErrorInvalidValue;
  if (n_rows == 0) {  // no rows: dweight is zero
    const size_t wbytes = weight_dtype == DType::F32 ? 4 : 2;
    return cudaMemsetAsync(dweight, 0, static_cast<size_t>(n_cols) * wbytes, stream);
  }
  const BwdPlan p = plan_bwd(n_rows, n_cols, num_sms);
  if (p.col_chunks > 65535) return cudaErrorInvalidValue;
  float* dw_partial = static_cast<float*>(workspace);
  const size_t partial_bytes = static_cast<size_t>(p.row_programs) * static_cast<size_t>(n_cols) * sizeof(float);
  float* coef = p.fused ? nullptr
                        : reinterpret_cast<float*>(static_cast<char*>(workspace) + cdiv(static_cast<int64_t>(partial_bytes), 16) * 16);
  return dispatch_types(dtype, weight_dtype, [&](auto t, auto wt) -> cudaError_t {
    using T = decltype(t);
    using W = decltype(wt);
    constexpr int kVec = 16 / sizeof(T);
    const bool vec = n_cols % kVec == 0 && dy_row_stride % kVec == 0 && h_row_stride % kVec == 0 &&
                     dx_row_stride % kVec == 0 && (dresidual_out == nullptr || dresidual_out_row_stride % kVec == 0) &&
                     aligned(dy, 16) && aligned(h, 16) && aligned(dx, 16) && aligned(dresidual_out, 16) &&
                     aligned(weight, kVec * sizeof(W)) && aligned(workspace, kVec * sizeof(float));
    auto launch = [&](auto vec_tag, auto dres_tag) -> cudaError_t {
      constexpr int VEC = decltype(vec_tag)::value;
      constexpr bool HAS_DRES = decltype(dres_tag)::value;
      if (!p.fused) {
        rms_norm_bwd_coef_kernel<T, W, VEC><<<static_cast<unsigned>(n_rows), kCoefThreads, 0, stream>>>(
            static_cast<const T*>(dy), dy_row_stride, static_cast<const T*>(h), h_row_stride,
            static_cast<const W*>(weight), rstd, coef, n_cols);
      }
      const dim3 grid(static_cast<unsigned>(p.row_programs), static_cast<unsigned>(p.col_chunks));
      rms_norm_bwd_kernel<T, W, VEC, HAS_DRES><<<grid, p.threads, 0, stream>>>(
          static_cast<const T*>(dy), dy_row_stride, static_cast<const T*>(h), h_row_stride,
          static_cast<const W*>(weight), rstd, coef, static_cast<const T*>(dresidual_out), dresidual_out_row_stride,
          static_cast<T*>(dx), dx_row_stride, dw_partial, n_rows, n_cols, p.rows_per_program);
      const dim3 reduce_block(kReduceCols, kReduceRows);
      rms_norm_dw_reduce_kernel<W><<<static_cast<unsigned>(cdiv(n_cols, kReduceCols)), reduce_block, 0, stream>>>(
          dw_partial, static_cast<W*>(dweight), p.row_programs, n_cols);
      return cudaGetLastError();
    };
    using V1 = std::integral_constant<int, 1>;
    using VN = std::integral_constant<int, kVec>;
    if (dresidual_out != nullptr) return vec ? launch(VN{}, std::true_type{}) : launch(V1{}, std::true_type{});
    return vec ? launch(VN{}, std::false_type{}) : launch(V1{}, std::false_type{});
  });
}

}  // namespace seedcoder
