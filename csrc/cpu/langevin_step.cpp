// CPU kernel of ncsn_fast::langevin_step_: one pass over x and the score, the Philox noise generated in cache
// (never written to memory as a tensor), optional per-sample statistics in the same pass. Work is split into
// chunks of one sample each (at::parallel_for); the loops are compiled generic, AVX2+FMA and AVX-512, chosen at
// run time.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include <vector>

#include "../langevin_step.h"
#include "../philox.h"

#define NCSN_NS generic_ld
#include "langevin_step_impl.h"
#undef NCSN_NS

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define NCSN_LD_AVX2 1
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#define NCSN_NS avx2_ld
#include "langevin_step_impl.h"
#undef NCSN_NS
#pragma GCC pop_options
// Philox's 32x32->64 multiplies and the Box-Muller polynomials run ~2x faster in 16 lanes.
#pragma GCC push_options
#pragma GCC target("avx512f,avx512dq,avx512vl,avx2,fma")
#define NCSN_NS avx512_ld
#include "langevin_step_impl.h"
#undef NCSN_NS
#pragma GCC pop_options
#endif

namespace ncsn_fast {
namespace {

// 0: generic, 1: AVX2+FMA, 2: AVX-512 (F, DQ, VL).
int isa_level() {
#ifdef NCSN_LD_AVX2
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

constexpr int64_t kChunk = 4096;  // elements per task (a multiple of 4: chunks start on group boundaries)

void langevin_step_cpu(const at::Tensor& x, const at::Tensor& score, double step_size, int64_t seed, int64_t offset,
                       const std::optional<at::Tensor>& stats) {
  check_langevin_args(x, score, step_size, seed, offset, stats);
  const int64_t total = x.numel(), N = x.size(0), D = total / N;
  const int64_t chunks_per_sample = (D + kChunk - 1) / kChunk, tasks = N * chunks_per_sample;
  const float a = static_cast<float>(step_size), b = static_cast<float>(std::sqrt(2.0 * step_size));
  const bool want_stats = stats.has_value() && stats->defined();
  std::vector<double> sums(want_stats ? 3 * tasks : 0);
  float* xp = x.mutable_data_ptr<float>();

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, score.scalar_type(), "langevin_step_cpu", [&] {
    const scalar_t* sp = score.const_data_ptr<scalar_t>();
    at::parallel_for(0, tasks, 1, [&](int64_t begin, int64_t end) {
      std::vector<float> z(kChunk + 8);
      double local[3];
      for (int64_t t = begin; t < end; ++t) {
        const int64_t n = t / chunks_per_sample, k = t % chunks_per_sample;
        const int64_t i0 = n * D + k * kChunk, i1 = std::min(i0 + kChunk, (n + 1) * D);
        const int64_t g0 = i0 / 4, g1 = (i1 - 1) / 4;  // groups touched by [i0, i1)
        double* out = want_stats ? sums.data() + 3 * t : local;
        out[0] = out[1] = out[2] = 0;
        const int isa = isa_level();
        if (isa == 2) {
#ifdef NCSN_LD_AVX2
          avx512_ld::fill_normals(seed, offset, g0, g1 - g0 + 1, z.data());
          avx512_ld::update(xp + i0, sp + i0, z.data() + (i0 - 4 * g0), i1 - i0, a, b, out);
#endif
        } else if (isa == 1) {
#ifdef NCSN_LD_AVX2
          avx2_ld::fill_normals(seed, offset, g0, g1 - g0 + 1, z.data());
          avx2_ld::update(xp + i0, sp + i0, z.data() + (i0 - 4 * g0), i1 - i0, a, b, out);
#endif
        } else {
          generic_ld::fill_normals(seed, offset, g0, g1 - g0 + 1, z.data());
          generic_ld::update(xp + i0, sp + i0, z.data() + (i0 - 4 * g0), i1 - i0, a, b, out);
        }
      }
    });
  });
  if (want_stats) {
    float* st = stats->mutable_data_ptr<float>();
    for (int64_t n = 0; n < N; ++n) {
      double acc[3] = {0, 0, 0};
      for (int64_t k = 0; k < chunks_per_sample; ++k)
        for (int j = 0; j < 3; ++j) acc[j] += sums[3 * (n * chunks_per_sample + k) + j];
      for (int j = 0; j < 3; ++j) st[3 * n + j] = static_cast<float>(acc[j]);
    }
  }
}

}  // namespace

TORCH_LIBRARY_IMPL(ncsn_fast, CPU, m) { m.impl("langevin_step_", &langevin_step_cpu); }

}  // namespace ncsn_fast
