// Torch bindings of the CUDA rotary kernel (rotary.cu): torch.ops.seedcoder_cuda.rotary (new contiguous
// outputs) and torch.ops.seedcoder_cuda.rotary_inplace (rotates q and k in place). Same arguments and checks
// as kernels/rotary.py: q (B, S, Hq, D) or packed (T, Hq, D), k with the same leading dims, any strides of
// the leading dims, contiguous head dim; either position_ids ((B or 1, S) / (T,), int32/int64, or None for
// arange) with theta, or cos/sin tables ((B or 1, S, D) / (T, D) / (1, T, D), fp32 or q's dtype). Autograd and
// the fake (meta) impls are added in Python (kernels/rotary.py).
//
// The current stream and the device guard come from c10's device-generic interfaces (c10::Stream::native_handle
// is the cudaStream_t of at::cuda::getCurrentCUDAStream()): the c10/cuda headers need a generated header that a
// CPU torch wheel lacks, and this file must pass a syntax check against one (tests/test_cuda_sources.py).
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/core/DeviceGuard.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>
#include <torch/library.h>

#include <optional>
#include <tuple>

#include "rotary.h"

namespace {

seedcoder::DType to_dtype(at::ScalarType t, const char* name) {
  switch (t) {
    case at::kFloat: return seedcoder::DType::F32;
    case at::kHalf: return seedcoder::DType::F16;
    case at::kBFloat16: return seedcoder::DType::BF16;
    default: TORCH_CHECK(false, name, ": dtype ", t, " is not supported (expected float32, bfloat16 or float16)");
  }
}

// A view with batch dim 1 for the packed layouts, so the rest sees (B, S, ...) only.
at::Tensor batched(const at::Tensor& t, int64_t packed_dim) { return t.dim() == packed_dim ? t.unsqueeze(0) : t; }

void check_operand(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.is_cuda(), name, ": expected a CUDA tensor, got one on ", t.device());
  TORCH_CHECK(t.dim() == 3 || t.dim() == 4, name, ": expected 3 or 4 dimensions, got shape ", t.sizes());
  TORCH_CHECK(t.size(-1) <= 1 || t.stride(-1) == 1, name, ": the last dimension must be contiguous (stride 1), got strides ",
              t.strides());
}

struct Angles {
  std::optional<at::Tensor> position_ids, cos, sin;  // batched views
};

Angles check_args(const at::Tensor& q, const at::Tensor& k, const std::optional<at::Tensor>& position_ids,
                  const std::optional<at::Tensor>& cos, const std::optional<at::Tensor>& sin) {
  check_operand(q, "q");
  check_operand(k, "k");
  TORCH_CHECK(k.device() == q.device(), "k: is on ", k.device(), ", expected ", q.device());
  TORCH_CHECK(q.scalar_type() == k.scalar_type(), "dtype mismatch: q=", q.scalar_type(), ", k=", k.scalar_type());
  to_dtype(q.scalar_type(), "q");
  const int64_t d = q.size(-1);
  TORCH_CHECK(d > 0 && d % 2 == 0, "q: the head dim must be even (rotate_half pairs i with i + D/2), got D=", d);
  TORCH_CHECK(d <= 256, "q: head dim D=", d, " exceeds the supported maximum 256");
  TORCH_CHECK(k.size(-1) == d, "k: head dim ", k.size(-1), " != q's head dim ", d);
  TORCH_CHECK(k.dim() == q.dim() && k.sizes().slice(0, q.dim() - 2) == q.sizes().slice(0, q.dim() - 2),
              "q and k must agree on the leading dims ((B, S) or packed (T,)): q ", q.sizes(), ", k ", k.sizes());
  const bool packed = q.dim() == 3;
  const int64_t batch = packed ? 1 : q.size(0), seqlen = packed ? q.size(0) : q.size(1);
  Angles a;
  if (position_ids.has_value()) {
    const at::Tensor& p = *position_ids;
    TORCH_CHECK(!cos.has_value() && !sin.has_value(), "give either position_ids (angles from theta) or cos/sin tables, not both");
    TORCH_CHECK(p.scalar_type() == at::kInt || p.scalar_type() == at::kLong, "position_ids: dtype ", p.scalar_type(),
                " is not supported (expected int32 or int64)");
    TORCH_CHECK(p.device() == q.device(), "position_ids: is on ", p.device(), ", expected ", q.device());
    const bool ok = packed ? (p.dim() == 1 && p.size(0) == seqlen)
                           : (p.dim() == 2 && p.size(1) == seqlen && (p.size(0) == 1 || p.size(0) == batch));
    TORCH_CHECK(ok, "position_ids: shape ", p.sizes(), " does not match q ", q.sizes());
    a.position_ids = batched(p, 1);
  }
  TORCH_CHECK(cos.has_value() == sin.has_value(), "cos and sin tables must be given together");
  if (cos.has_value()) {
    for (const auto* table : {&*cos, &*sin}) {
      const char* name = table == &*cos ? "cos" : "sin";
      TORCH_CHECK(table->device() == q.device(), name, ": is on ", table->device(), ", expected ", q.device());
      TORCH_CHECK(table->scalar_type() == at::kFloat || table->scalar_type() == q.scalar_type(), name, ": dtype ",
                  table->scalar_type(), " is not supported (expected float32 or q's dtype ", q.scalar_type(), ")");
      TORCH_CHECK(table->size(-1) <= 1 || table->stride(-1) == 1, name, ": the last dimension must be contiguous");
      const bool ok = (table->dim() == 3 || (packed && table->dim() == 2)) && table->size(-1) == d &&
                      table->size(-2) == seqlen && (table->dim() == 2 || table->size(0) == 1 || table->size(0) == batch);
      TORCH_CHECK(ok, name, ": shape ", table->sizes(), " does not match q ", q.sizes());
    }
    TORCH_CHECK(cos->sizes() == sin->sizes() && cos->scalar_type() == sin->scalar_type(),
                "cos and sin must have the same shape and dtype");
    a.cos = batched(*cos, 2);
    a.sin = batched(*sin, 2);
    if (a.cos->strides() != a.sin->strides()) {  // the kernel takes one set of table strides
      a.cos = a.cos->contiguous();
      a.sin = a.sin->contiguous();
    }
  }
  return a;
}

seedcoder::RotaryOperand operand(const at::Tensor& in, const at::Tensor& out) {
  seedcoder::RotaryOperand op;
  op.in = in.data_ptr();
  op.out = out.data_ptr();
  op.heads = in.size(2);
  op.in_stride_b = in.stride(0);
  op.in_stride_s = in.stride(1);
  op.in_stride_h = in.stride(2);
  op.out_stride_b = out.stride(0);
  op.out_stride_s = out.stride(1);
  op.out_stride_h = out.stride(2);
  return op;
}

void launch(const at::Tensor& q, const at::Tensor& k, const at::Tensor& q_out, const at::Tensor& k_out, const Angles& a,
            double theta, bool inverse) {
  if (q.numel() + k.numel() == 0) return;
  const at::Tensor q4 = batched(q, 3), k4 = batched(k, 3), q_out4 = batched(q_out, 3), k_out4 = batched(k_out, 3);
  seedcoder::RotaryParams p;
  p.q = operand(q4, q_out4);
  p.k = operand(k4, k_out4);
  p.batch = q4.size(0);
  p.seqlen = q4.size(1);
  p.head_dim = q4.size(3);
  p.dtype = to_dtype(q.scalar_type(), "q");
  if (a.cos.has_value()) {
    p.cos = a.cos->data_ptr();
    p.sin = a.sin->data_ptr();
    p.table_dtype = to_dtype(a.cos->scalar_type(), "cos");
    p.table_stride_b = a.cos->size(0) == 1 ? 0 : a.cos->stride(0);
    p.table_stride_s = a.cos->stride(1);
  } else if (a.position_ids.has_value()) {
    p.position_ids = a.position_ids->data_ptr();
    p.position_ids_int64 = a.position_ids->scalar_type() == at::kLong;
    p.pos_stride_b = a.position_ids->size(0) == 1 ? 0 : a.position_ids->stride(0);
    p.pos_stride_s = a.position_ids->stride(1);
  }
  p.theta = static_cast<float>(theta);
  p.inverse = inverse;
  const c10::DeviceGuard guard(q.device());
  const auto stream = static_cast<cudaStream_t>(
      c10::impl::getDeviceGuardImpl(c10::DeviceType::CUDA)->getStream(q.device()).native_handle());
  const cudaError_t err = seedcoder::rotary(p, stream);
  TORCH_CHECK(err == cudaSuccess, "seedcoder_cuda::rotary: launch failed: ", cudaGetErrorString(err));
}

std::tuple<at::Tensor, at::Tensor> rotary(const at::Tensor& q, const at::Tensor& k,
                                          const std::optional<at::Tensor>& position_ids,
                                          const std::optional<at::Tensor>& cos, const std::optional<at::Tensor>& sin,
                                          double theta, bool inverse) {
  const Angles a = check_args(q, k, position_ids, cos, sin);
  at::Tensor q_out = at::empty(q.sizes(), q.options());
  at::Tensor k_out = at::empty(k.sizes(), k.options());
  launch(q, k, q_out, k_out, a, theta, inverse);
  return {q_out, k_out};
}

void rotary_inplace(const at::Tensor& q, const at::Tensor& k, const std::optional<at::Tensor>& position_ids,
                    const std::optional<at::Tensor>& cos, const std::optional<at::Tensor>& sin, double theta, bool inverse) {
  const Angles a = check_args(q, k, position_ids, cos, sin);
  launch(q, k, q, k, a, theta, inverse);
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(seedcoder_cuda, m) {
  m.def("rotary(Tensor q, Tensor k, Tensor? position_ids, Tensor? cos, Tensor? sin, float theta, bool inverse) "
        "-> (Tensor, Tensor)");
  m.def("rotary_inplace(Tensor(a!) q, Tensor(b!) k, Tensor? position_ids, Tensor? cos, Tensor? sin, float theta, "
        "bool inverse) -> ()");
}

TORCH_LIBRARY_IMPL(seedcoder_cuda, CUDA, m) {
  m.impl("rotary", &rotary);
  m.impl("rotary_inplace", &rotary_inplace);
}
