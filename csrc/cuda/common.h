// Shared by the CUDA C++ kernels in csrc/cuda. The .cu files include no torch header, so CMake can
// compile them with plain nvcc as a compile gate (registers/spills via -Xptxas -v); the torch bindings
// live in <op>_ops.cpp files that setup.py compiles into the extension seedcoder._cuda.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace seedcoder {

// The element types our kernels accept; the bindings map torch dtypes to these.
enum class DType : int { F32 = 0, F16 = 1, BF16 = 2 };

template <typename T> __device__ __forceinline__ float to_float(T v);
template <> __device__ __forceinline__ float to_float<float>(float v) { return v; }
template <> __device__ __forceinline__ float to_float<__half>(__half v) { return __half2float(v); }
template <> __device__ __forceinline__ float to_float<__nv_bfloat16>(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T> __device__ __forceinline__ T from_float(float v);
template <> __device__ __forceinline__ float from_float<float>(float v) { return v; }
template <> __device__ __forceinline__ __half from_float<__half>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

}  // namespace seedcoder

// Dispatch a DType to a C++ type alias `scalar_t` inside the body.
#define SEEDCODER_DISPATCH_DTYPE(dtype, ...)                                        \
  switch (dtype) {                                                                  \
    case ::seedcoder::DType::F32: { using scalar_t = float; __VA_ARGS__; break; }   \
    case ::seedcoder::DType::F16: { using scalar_t = __half; __VA_ARGS__; break; }  \
    case ::seedcoder::DType::BF16: { using scalar_t = __nv_bfloat16; __VA_ARGS__; break; } \
  }
