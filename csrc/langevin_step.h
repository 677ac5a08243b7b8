// Shared by the CPU and CUDA implementations of ncsn_fast::langevin_step_: input checks.
// x <- x + a s + sqrt(2 a) z in place, z from Philox4x32-10 (philox.h has the counter layout); optional per-sample
// statistics (sum s^2, sum z^2, sum x^2 after the update) in stats (N, 3).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

namespace ncsn_fast {

inline void check_langevin_args(const at::Tensor& x, const at::Tensor& score, double step_size, int64_t seed,
                                int64_t offset, const std::optional<at::Tensor>& stats) {
  TORCH_CHECK(x.scalar_type() == at::kFloat, "langevin_step_: x must be float32 (the sampler state), got ",
              x.scalar_type());
  TORCH_CHECK(x.is_contiguous(), "langevin_step_: x must be contiguous (NCHW order defines the noise counter)");
  TORCH_CHECK(x.dim() >= 1 && x.size(0) > 0, "langevin_step_: x needs a non-empty batch dimension, shape ",
              x.sizes());
  TORCH_CHECK(score.sizes() == x.sizes(), "langevin_step_: score shape ", score.sizes(), " != x shape ", x.sizes());
  TORCH_CHECK(score.is_contiguous(), "langevin_step_: score must be contiguous");
  TORCH_CHECK(score.device() == x.device(), "langevin_step_: score is on ", score.device(), ", x on ", x.device());
  TORCH_CHECK(score.scalar_type() == at::kFloat || score.scalar_type() == at::kBFloat16 ||
                  score.scalar_type() == at::kHalf,
              "langevin_step_: score must be float32, bfloat16 or float16, got ", score.scalar_type());
  TORCH_CHECK(step_size >= 0, "langevin_step_: step_size must be >= 0, got ", step_size);
  TORCH_CHECK(seed >= 0, "langevin_step_: seed must be in [0, 2^63), got ", seed);
  TORCH_CHECK(offset >= 0, "langevin_step_: offset must be in [0, 2^63), got ", offset);
  if (stats.has_value() && stats->defined()) {
    TORCH_CHECK(stats->scalar_type() == at::kFloat && stats->is_contiguous() && stats->dim() == 2 &&
                    stats->size(0) == x.size(0) && stats->size(1) == 3 && stats->device() == x.device(),
                "langevin_step_: stats must be a contiguous float32 (N, 3) tensor on x's device, got ",
                stats->sizes(), " ", stats->scalar_type());
  }
}

}  // namespace ncsn_fast
