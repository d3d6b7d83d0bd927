// RMSNorm with an optional fused residual add, CUDA C++ (the backend="cuda" of kernels/rms_norm.py).
// Same semantics as the Triton kernels: h = x or h = round_to_dtype(x + residual) (also written out as
// residual_out), rstd = rsqrt(mean(h^2) + eps) in fp32 per row, y = h * rstd * weight rounded once to x's
// dtype. Backward: dx = rstd*dy*w - rstd^3*mean(dy*w*h)*h (+ dresidual_out); dweight = sum_rows dy*h*rstd
// accumulated in fp32 per program (partials in a workspace) and reduced by a second kernel.
//
// Raw pointers only (no torch headers): tensors are rows of n_cols elements with a unit column stride and
// the given row strides (in elements). dtype is the element type of the activations (x, residual, y,
// residual_out, dy, h, dx, dresidual_out); weight_dtype that of weight and dweight. rstd is fp32, one per row.
#pragma once

#include <cstddef>
#include <cstdint>

#include "common.h"

namespace seedcoder {

// residual and residual_out are both null (plain RMSNorm) or both non-null (fused add).
cudaError_t rms_norm_fwd(const void* x, int64_t x_row_stride, const void* residual, int64_t residual_row_stride,
                         const void* weight, void* y, int64_t y_row_stride, void* residual_out,
                         int64_t residual_out_row_stride, float* rstd, int64_t n_rows, int64_t n_cols, float eps,
                         DType dtype, DType weight_dtype, cudaStream_t stream);

// Bytes of scratch memory rms_norm_bwd needs (fp32 dweight partials, and row coefficients for wide rows).
size_t rms_norm_bwd_workspace_bytes(int64_t n_rows, int64_t n_cols, int num_sms);

// h is the normalized input saved by the forward (x, or residual_out when the add was fused).
// dresidual_out (the incoming gradient of residual_out) may be null; dx = dh + dresidual_out.
// workspace: at least rms_norm_bwd_workspace_bytes(n_rows, n_cols, num_sms) bytes (32-byte aligned for the
// vectorized path; torch's allocations are).
cudaError_t rms_norm_bwd(const void* dy, int64_t dy_row_stride, const void* h, int64_t h_row_stride,
                         const void* weight, const float* rstd, const void* dresidual_out,
                         int64_t dresidual_out_row_stride, void* dx, int64_t dx_row_stride, void* dweight,
                         void* workspace, int64_t n_rows, int64_t n_cols, int num_sms, DType dtype,
                         DType weight_dtype, cudaStream_t stream);

}  // namespace seedcoder
