// CUDA kernel of ncsn_fast::sde_step_ (x <- c x + a d + b z) and of ncsn_fast::langevin_step_, its
// (1, alpha, sqrt(2 alpha)) case: one thread per Philox group of four elements, the noise computed in registers
// (csrc/philox.h: the same functions as the CPU kernel), x updated in place, optional per-sample statistics reduced
// per block and added atomically. Grid (blocks per sample, N): a block never spans two samples; a group straddling
// a sample boundary is computed by both blocks, each writing only its own elements.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../philox.h"
#include "../sde_step.h"

namespace ncsn_fast {
namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  return v;
}

template <typename D>
__global__ void sde_step_kernel(float* __restrict__ x, const D* __restrict__ drift, float* __restrict__ stats,
                                int64_t len, float c, float a, float b, uint64_t seed, uint64_t offset) {
  const int64_t n = blockIdx.y;
  const int64_t lo = n * len, hi = lo + len;
  const int64_t g = lo / 4 + static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  float dd = 0.f, zz = 0.f, xx = 0.f;
  if (4 * g < hi) {
    float z[4];
    philox::normal4(seed, offset, static_cast<uint64_t>(g), &z[0], &z[1], &z[2], &z[3]);
#pragma unroll
    for (int lane = 0; lane < 4; ++lane) {
      const int64_t i = 4 * g + lane;
      if (i >= lo && i < hi) {
        const float dv = static_cast<float>(drift[i]);
        // The FMAs spelled out: nvcc contracts the former Langevin update x + a s + b z (the only way it can) to
        // fmaf(b, z, fmaf(a, s, x)); with c x in x's place and c = 1 (c x is x exactly) it rounds as before,
        // where c x + a d left to nvcc could become either fmaf(c, x, a d) or fmaf(a, d, c x).
        const float v = fmaf(b, z[lane], fmaf(a, dv, c * x[i]));
        x[i] = v;
        dd += dv * dv;
        zz += z[lane] * z[lane];
        xx += v * v;
      }
    }
  }
  if (stats == nullptr) return;
  __shared__ float shared[3][32];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  dd = warp_sum(dd);
  zz = warp_sum(zz);
  xx = warp_sum(xx);
  if (lane == 0) {
    shared[0][warp] = dd;
    shared[1][warp] = zz;
    shared[2][warp] = xx;
  }
  __syncthreads();
  if (warp == 0) {
    const int warps = blockDim.x / 32;
    float t0 = lane < warps ? shared[0][lane] : 0.f, t1 = lane < warps ? shared[1][lane] : 0.f,
          t2 = lane < warps ? shared[2][lane] : 0.f;
    t0 = warp_sum(t0);
    t1 = warp_sum(t1);
    t2 = warp_sum(t2);
    if (lane == 0) {
      atomicAdd(stats + 3 * n, t0);
      atomicAdd(stats + 3 * n + 1, t1);
      atomicAdd(stats + 3 * n + 2, t2);
    }
  }
}

// The one CUDA implementation of both ops (arguments already checked; `op` names errors).
void sde_step_cuda_impl(const char* op, const at::Tensor& x, const at::Tensor& drift, SdeCoeffs k, int64_t seed,
                        int64_t offset, const std::optional<at::Tensor>& stats) {
  TORCH_CHECK(x.is_cuda(), op, " (CUDA): x must be a CUDA tensor");
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t N = x.size(0), len = x.numel() / N;
  TORCH_CHECK(N <= 65535, op, " (CUDA): at most 65535 samples per call, got ", N);
  const bool want_stats = stats.has_value() && stats->defined();
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  if (want_stats) C10_CUDA_CHECK(cudaMemsetAsync(stats->mutable_data_ptr<float>(), 0, N * 3 * sizeof(float), stream));
  const int64_t groups = len / 4 + 2;  // groups a sample can touch
  const dim3 grid(static_cast<unsigned>((groups + kThreads - 1) / kThreads), static_cast<unsigned>(N));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, drift.scalar_type(), "sde_step_cuda", [&] {
    sde_step_kernel<scalar_t><<<grid, kThreads, 0, stream>>>(
        x.mutable_data_ptr<float>(), drift.const_data_ptr<scalar_t>(),
        want_stats ? stats->mutable_data_ptr<float>() : nullptr, len, k.c, k.a, k.b, static_cast<uint64_t>(seed),
        static_cast<uint64_t>(offset));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

void sde_step_cuda(const at::Tensor& x, const at::Tensor& drift, double c, double a, double b, int64_t seed,
                   int64_t offset, const std::optional<at::Tensor>& stats) {
  const SdeCoeffs k = check_sde_args(x, drift, c, a, b, seed, offset, stats);
  sde_step_cuda_impl("sde_step_", x, drift, k, seed, offset, stats);
}

void langevin_step_cuda(const at::Tensor& x, const at::Tensor& score, double step_size, int64_t seed, int64_t offset,
                        const std::optional<at::Tensor>& stats) {
  check_langevin_args(x, score, step_size, seed, offset, stats);
  sde_step_cuda_impl("langevin_step_", x, score, langevin_coeffs(step_size), seed, offset, stats);
}

}  // namespace

TORCH_LIBRARY_IMPL(ncsn_fast, CUDA, m) {
  m.impl("sde_step_", &sde_step_cuda);
  m.impl("langevin_step_", &langevin_step_cuda);
}

}  // namespace ncsn_fast
