// CPU kernel of ncsn_fast::sde_step_ (x <- c x + a d + b z) and of ncsn_fast::langevin_step_, its
// (1, alpha, sqrt(2 alpha)) case: one pass over x and the drift, the Philox noise generated in cache (never written
// to memory as a tensor), optional per-sample statistics in the same pass. Work is split into chunks of one sample
// each (at::parallel_for); the loops (sde_step_impl.h) are compiled generic, AVX2+FMA and AVX-512, chosen at run
// time.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include <string>
#include <vector>

#include "../build_info.h"
#include "../philox.h"
#include "../sde_step.h"

#define NCSN_NS generic_sde
#define NCSN_FMA 0
#include "sde_step_impl.h"
#undef NCSN_FMA
#undef NCSN_NS

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define NCSN_SDE_X86 1
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#define NCSN_NS avx2_sde
#define NCSN_FMA 1
#include "sde_step_impl.h"
#undef NCSN_FMA
#undef NCSN_NS
#pragma GCC pop_options
// Philox's 32x32->64 multiplies and the Box-Muller polynomials run ~2x faster in 16 lanes.
#pragma GCC push_options
#pragma GCC target("avx512f,avx512dq,avx512vl,avx2,fma")
#define NCSN_NS avx512_sde
#define NCSN_FMA 1
#include "sde_step_impl.h"
#undef NCSN_FMA
#undef NCSN_NS
#pragma GCC pop_options
#endif

namespace ncsn_fast {
namespace {

// 0: generic, 1: AVX2+FMA, 2: AVX-512 (F, DQ, VL).
int isa_level() {
#ifdef NCSN_SDE_X86
  static const int level = (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
                            __builtin_cpu_supports("avx512vl"))
                               ? 2
                           : (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) ? 1
                                                                                                : 0;
  return level;
#else
  return 0;
#endif
}

const BuildFact isa_fact("sde_step_ cpu isa", [] {
  const int level = isa_level();
  return std::string(level == 2 ? "avx512f+dq+vl" : level == 1 ? "avx2+fma" : "generic");
});

constexpr int64_t kChunk = 4096;  // elements per task (a multiple of 4: chunks start on group boundaries)

// The one CPU implementation of both ops (arguments already checked).
void sde_step_cpu_impl(const at::Tensor& x, const at::Tensor& drift, SdeCoeffs k, int64_t seed, int64_t offset,
                       const std::optional<at::Tensor>& stats) {
  const int64_t total = x.numel(), N = x.size(0), D = total / N;
  const int64_t chunks_per_sample = (D + kChunk - 1) / kChunk, tasks = N * chunks_per_sample;
  const bool want_stats = stats.has_value() && stats->defined();
  std::vector<double> sums(want_stats ? 3 * tasks : 0);
  float* xp = x.mutable_data_ptr<float>();

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, drift.scalar_type(), "sde_step_cpu", [&] {
    const scalar_t* dp = drift.const_data_ptr<scalar_t>();
    at::parallel_for(0, tasks, 1, [&](int64_t begin, int64_t end) {
      std::vector<float> z(kChunk + 8);
      double local[3];
      for (int64_t t = begin; t < end; ++t) {
        const int64_t n = t / chunks_per_sample, j = t % chunks_per_sample;
        const int64_t i0 = n * D + j * kChunk, i1 = std::min(i0 + kChunk, (n + 1) * D);
        const int64_t g0 = i0 / 4, g1 = (i1 - 1) / 4;  // groups touched by [i0, i1)
        double* out = want_stats ? sums.data() + 3 * t : local;
        out[0] = out[1] = out[2] = 0;
        const int isa = isa_level();
        if (isa == 2) {
#ifdef NCSN_SDE_X86
          avx512_sde::fill_normals(seed, offset, g0, g1 - g0 + 1, z.data());
          avx512_sde::update(xp + i0, dp + i0, z.data() + (i0 - 4 * g0), i1 - i0, k.c, k.a, k.b, out);
#endif
        } else if (isa == 1) {
#ifdef NCSN_SDE_X86
          avx2_sde::fill_normals(seed, offset, g0, g1 - g0 + 1, z.data());
          avx2_sde::update(xp + i0, dp + i0, z.data() + (i0 - 4 * g0), i1 - i0, k.c, k.a, k.b, out);
#endif
        } else {
          generic_sde::fill_normals(seed, offset, g0, g1 - g0 + 1, z.data());
          generic_sde::update(xp + i0, dp + i0, z.data() + (i0 - 4 * g0), i1 - i0, k.c, k.a, k.b, out);
        }
      }
    });
  });
  if (want_stats) {
    float* st = stats->mutable_data_ptr<float>();
    for (int64_t n = 0; n < N; ++n) {
      double acc[3] = {0, 0, 0};
      for (int64_t j = 0; j < chunks_per_sample; ++j)
        for (int q = 0; q < 3; ++q) acc[q] += sums[3 * (n * chunks_per_sample + j) + q];
      for (int q = 0; q < 3; ++q) st[3 * n + q] = static_cast<float>(acc[q]);
    }
  }
}

void sde_step_cpu(const at::Tensor& x, const at::Tensor& drift, double c, double a, double b, int64_t seed,
                  int64_t offset, const std::optional<at::Tensor>& stats) {
  const SdeCoeffs k = check_sde_args(x, drift, c, a, b, seed, offset, stats);
  sde_step_cpu_impl(x, drift, k, seed, offset, stats);
}

void langevin_step_cpu(const at::Tensor& x, const at::Tensor& score, double step_size, int64_t seed, int64_t offset,
                       const std::optional<at::Tensor>& stats) {
  check_langevin_args(x, score, step_size, seed, offset, stats);
  sde_step_cpu_impl(x, score, langevin_coeffs(step_size), seed, offset, stats);
}

}  // namespace

TORCH_LIBRARY_IMPL(ncsn_fast, CPU, m) {
  m.impl("sde_step_", &sde_step_cpu);
  m.impl("langevin_step_", &langevin_step_cpu);
}

}  // namespace ncsn_fast
