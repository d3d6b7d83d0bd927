// Rotary position embedding (RoPE, Llama/HF rotate_half layout), q and k in one launch. No torch header:
// the bindings (rotary_ops.cpp) fill RotaryParams from tensors. Semantics match kernels/rotary.py:
//   out[i]       = x[i] * cos_a[i] - x[i + D/2] * sin_a[i]
//   out[i + D/2] = x[i + D/2] * cos_b[i] + x[i] * sin_b[i]
// forward: cos_a = cos[i], cos_b = cos[i + D/2], sin_a = sin[i], sin_b = sin[i + D/2] (HF's formula for any
// table; with theta the halves are equal), inverse (backward, the transpose = rotation by -angle):
// sin_a = -sin[i + D/2], sin_b = -sin[i].
#pragma once

#include "common.h"

namespace seedcoder {

// One rotated operand (q or k) of shape (batch, seqlen, heads, head_dim). `out` may equal `in` (in place).
// Strides are in elements for the (batch, seq, head) dims; the head dim is contiguous.
struct RotaryOperand {
  const void* in = nullptr;
  void* out = nullptr;
  int64_t heads = 0;
  int64_t in_stride_b = 0, in_stride_s = 0, in_stride_h = 0;
  int64_t out_stride_b = 0, out_stride_s = 0, out_stride_h = 0;
};

struct RotaryParams {
  RotaryOperand q, k;
  int64_t batch = 0, seqlen = 0, head_dim = 0;  // head_dim even, <= 256
  DType dtype = DType::BF16;                     // of q and k, inputs and outputs

  // Angles, either from tables (cos != nullptr): cos/sin of shape (batch or 1, seqlen, head_dim), HF format ...
  const void* cos = nullptr;
  const void* sin = nullptr;
  DType table_dtype = DType::F32;
  int64_t table_stride_b = 0, table_stride_s = 0;  // stride_b = 0 broadcasts one table over the batch
  // ... or from theta: angle = fp32(pos) * inv_freq[i], inv_freq[i] = fp32(1 / fp32(theta ** fp32(2i / D))),
  // pos = position_ids[b, s] (int32 or int64; nullptr: pos = s).
  const void* position_ids = nullptr;
  bool position_ids_int64 = true;
  int64_t pos_stride_b = 0, pos_stride_s = 0;
  float theta = 500000.0f;

  bool inverse = false;  // rotate by -angle (the backward pass)
};

// Launch on `stream`; returns the launch error (cudaSuccess for empty inputs).
cudaError_t rotary(const RotaryParams& params, cudaStream_t stream);

}  // namespace seedcoder
