// Shared by the CPU and CUDA implementations of ncsn_fast::sde_step_ and ncsn_fast::langevin_step_: the input
// checks and the coefficients. One kernel per device serves both ops:
//   sde_step_:       x <- c x + a d + b z                         (c, a, b given per call)
//   langevin_step_:  x <- x + alpha s + sqrt(2 alpha) z            = sde_step_ with (1, alpha, sqrt(2 alpha))
// in place on x, z ~ N(0, I) from Philox4x32-10 (philox.h has the counter layout); optional per-sample statistics
// (sum d^2, sum z^2, sum x^2 after the update) in stats (N, 3).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <cmath>
#include <optional>

namespace ncsn_fast {

// The update's coefficients as the kernels use them (float32: the state is float32).
struct SdeCoeffs {
  float c, a, b;
};

// Langevin as an SDE step. sqrt in double then rounded once, as the Langevin kernels always did, so that the
// coefficients (and hence the update) are bit-for-bit those of the former Langevin-only kernels.
inline SdeCoeffs langevin_coeffs(double step_size) {
  return {1.0f, static_cast<float>(step_size), static_cast<float>(std::sqrt(2.0 * step_size))};
}

// Checks common to both ops; `op` and `drift_name` ("score" for Langevin, "drift" for sde_step_) name the error.
inline void check_step_tensors(const char* op, const at::Tensor& x, const char* drift_name, const at::Tensor& drift,
                               int64_t seed, int64_t offset, const std::optional<at::Tensor>& stats) {
  TORCH_CHECK(x.scalar_type() == at::kFloat, op, ": x must be float32 (the sampler state), got ", x.scalar_type());
  TORCH_CHECK(x.is_contiguous(), op, ": x must be contiguous (NCHW order defines the noise counter)");
  TORCH_CHECK(x.dim() >= 1 && x.size(0) > 0, op, ": x needs a non-empty batch dimension, shape ", x.sizes());
  TORCH_CHECK(drift.sizes() == x.sizes(), op, ": ", drift_name, " shape ", drift.sizes(), " != x shape ",
              x.sizes());
  TORCH_CHECK(drift.is_contiguous(), op, ": ", drift_name, " must be contiguous");
  TORCH_CHECK(drift.device() == x.device(), op, ": ", drift_name, " is on ", drift.device(), ", x on ", x.device());
  TORCH_CHECK(drift.scalar_type() == at::kFloat || drift.scalar_type() == at::kBFloat16 ||
                  drift.scalar_type() == at::kHalf,
              op, ": ", drift_name, " must be float32, bfloat16 or float16, got ", drift.scalar_type());
  TORCH_CHECK(seed >= 0, op, ": seed must be in [0, 2^63), got ", seed);
  TORCH_CHECK(offset >= 0, op, ": offset must be in [0, 2^63), got ", offset);
  if (stats.has_value() && stats->defined()) {
    TORCH_CHECK(stats->scalar_type() == at::kFloat && stats->is_contiguous() && stats->dim() == 2 &&
                    stats->size(0) == x.size(0) && stats->size(1) == 3 && stats->device() == x.device(),
                op, ": stats must be a contiguous float32 (N, 3) tensor on x's device, got ", stats->sizes(), " ",
                stats->scalar_type());
  }
}

inline void check_langevin_args(const at::Tensor& x, const at::Tensor& score, double step_size, int64_t seed,
                                int64_t offset, const std::optional<at::Tensor>& stats) {
  check_step_tensors("langevin_step_", x, "score", score, seed, offset, stats);
  TORCH_CHECK(step_size >= 0, "langevin_step_: step_size must be >= 0, got ", step_size);
}

// c, a, b: any finite float32 values (b < 0 is allowed: z is symmetric). Checked after rounding to float32, the
// precision the kernels compute in, so that e.g. 1e300 is refused rather than becoming inf inside the kernel.
inline SdeCoeffs check_sde_args(const at::Tensor& x, const at::Tensor& drift, double c, double a, double b,
                                int64_t seed, int64_t offset, const std::optional<at::Tensor>& stats) {
  check_step_tensors("sde_step_", x, "drift", drift, seed, offset, stats);
  const SdeCoeffs k{static_cast<float>(c), static_cast<float>(a), static_cast<float>(b)};
  TORCH_CHECK(std::isfinite(k.c), "sde_step_: c must be finite in float32, got ", c);
  TORCH_CHECK(std::isfinite(k.a), "sde_step_: a must be finite in float32, got ", a);
  TORCH_CHECK(std::isfinite(k.b), "sde_step_: b must be finite in float32, got ", b);
  return k;
}

}  // namespace ncsn_fast
