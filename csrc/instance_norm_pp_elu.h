// Shared by the CPU and CUDA implementations of ncsn_fast::instance_norm_pp_elu: input checks and the parameter
// layout. Semantics (NCSNv2 Appendix B.1, official code): per sample n and channel c
//   mu = spatial mean, var = biased spatial variance, m_n = mean_c mu, v_n = unbiased var_c mu,
//   h = (x - mu) / sqrt(var + eps) + alpha * (mu - m_n) / sqrt(v_n + eps);   y = ELU(gamma * h + beta).
// alpha, gamma, beta are (C,) or (N, C) (CondInstanceNorm++ of NCSN gathers them per sample by noise label).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

namespace ncsn_fast {

// Checks the arguments and returns the stride between samples of the parameters: 0 for (C,), C for (N, C).
inline int64_t check_instance_norm_pp_args(const at::Tensor& x, const at::Tensor& alpha, const at::Tensor& gamma,
                                           const std::optional<at::Tensor>& beta) {
  TORCH_CHECK(x.dim() == 4, "instance_norm_pp_elu: x must be 4-D (N, C, H, W), got shape ", x.sizes());
  TORCH_CHECK(at::isFloatingType(x.scalar_type()), "instance_norm_pp_elu: x must be floating point, got ",
              x.scalar_type());
  const int64_t N = x.size(0), C = x.size(1);
  TORCH_CHECK(N > 0, "instance_norm_pp_elu: x has N = 0 samples, shape ", x.sizes());
  TORCH_CHECK(C >= 2, "instance_norm_pp_elu: x needs C >= 2 channels (the across-channel variance is unbiased), got C = ",
              C);
  TORCH_CHECK(x.size(2) * x.size(3) > 0, "instance_norm_pp_elu: x has an empty spatial size, shape ", x.sizes());
  const int64_t pdim = alpha.dim();
  auto check_param = [&](const at::Tensor& p, const char* name) {
    TORCH_CHECK(p.dim() == pdim, "instance_norm_pp_elu: ", name, " must have the same rank as alpha (", pdim,
                "), got shape ", p.sizes());
    TORCH_CHECK(at::isFloatingType(p.scalar_type()), "instance_norm_pp_elu: ", name, " must be floating point, got ",
                p.scalar_type());
    TORCH_CHECK(p.device() == x.device(), "instance_norm_pp_elu: ", name, " is on ", p.device(), " but x is on ",
                x.device());
    if (pdim == 1) {
      TORCH_CHECK(p.size(0) == C, "instance_norm_pp_elu: ", name, " must have shape (C,) = (", C, ",), got ",
                  p.sizes());
    } else {
      TORCH_CHECK(pdim == 2 && p.size(0) == N && p.size(1) == C, "instance_norm_pp_elu: ", name,
                  " must have shape (C,) or (N, C) = (", N, ", ", C, "), got ", p.sizes());
    }
  };
  check_param(alpha, "alpha");
  check_param(gamma, "gamma");
  if (beta.has_value() && beta->defined()) check_param(*beta, "beta");
  return pdim == 2 ? C : 0;
}

// Channels-last inputs are computed in that layout (NHWC kernels); anything else is made NCHW-contiguous.
inline bool use_channels_last(const at::Tensor& x) {
  return !x.is_contiguous() && x.is_contiguous(at::MemoryFormat::ChannelsLast);
}
inline at::MemoryFormat kernel_layout(const at::Tensor& x) {
  return use_channels_last(x) ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
}

// The backward's own arguments, one check for every device (the kernels index mean and rstd as (N, C)).
inline void check_backward_args(const at::Tensor& grad_out, const at::Tensor& out, const at::Tensor& x,
                                const at::Tensor& mean, const at::Tensor& rstd) {
  TORCH_CHECK(grad_out.sizes() == x.sizes() && out.sizes() == x.sizes(), "instance_norm_pp_elu_backward: grad_out ",
              grad_out.sizes(), " and out ", out.sizes(), " must have the shape of x ", x.sizes());
  const int64_t NC = x.size(0) * x.size(1);
  TORCH_CHECK(mean.numel() == NC && rstd.numel() == NC, "instance_norm_pp_elu_backward: mean and rstd must be (N, C)",
              " = ", NC, " values, got ", mean.sizes(), " and ", rstd.sizes());
}

// A parameter gradient computed per (n, c): summed over samples for (C,) parameters, in the parameter's dtype.
inline at::Tensor reduce_param_grad(const at::Tensor& per_sample, int64_t pstride, const at::Tensor& like) {
  return (pstride == 0 ? per_sample.sum(0) : per_sample).to(like.scalar_type());
}

}  // namespace ncsn_fast
