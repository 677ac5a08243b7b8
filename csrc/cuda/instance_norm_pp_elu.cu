// CUDA kernels of ncsn_fast::instance_norm_pp_elu (forward and backward), fp32/fp16/bf16/fp64 inputs with fp32
// (fp64) accumulation, on the current stream. Passes:
//   forward:  statistics per (n, c) plane -> coefficients per sample (one block per n, across channels)
//             -> elementwise apply y = ELU(a (x - mu) + b)
//   backward: plane sums S_g, S_gx -> coefficients per sample
//             -> elementwise dx = k1 (g - gbar) + k2 (x - mu) + k3, gbar = S_g / hw
// The formulas are derived in ncsn_fast/ops/instance_norm_pp_elu.py. NCHW planes are reduced by one block each;
// channels-last tensors by tiles of 32 channels x 8 rows so that loads stay coalesced, H·W split across blocks
// when N is small (launch_config.h); the elementwise passes index either layout directly (no layout copy).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <string>
#include <tuple>

#include "../build_info.h"
#include "../instance_norm_pp_elu.h"
#include "launch_config.h"

namespace ncsn_fast {
namespace {

constexpr int kThreads = 256;

#define NCSN_CU_STR2(...) #__VA_ARGS__
#define NCSN_CU_STR(...) NCSN_CU_STR2(__VA_ARGS__)
// The architectures nvcc compiled this file for (TORCH_CUDA_ARCH_LIST), e.g. "800,900"; PTX for the last one is
// JIT-compiled by the driver on newer GPUs when the list ends in +PTX.
const BuildFact cuda_archs_fact("cuda archs", [] {
#ifdef __CUDA_ARCH_LIST__
  return std::string(NCSN_CU_STR(__CUDA_ARCH_LIST__));
#else
  return std::string("unknown (nvcc < 11.5)");
#endif
});
const BuildFact cuda_runtime_fact("cuda runtime (compiled)", [] { return std::to_string(CUDART_VERSION); });

template <typename A>
__device__ __forceinline__ A warp_sum(A v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  return v;
}

// Sum over the block; every thread gets the result. `shared` holds >= 32 values.
template <typename A>
__device__ A block_sum(A v, A* shared) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = (blockDim.x + 31) / 32;
  v = warp_sum(v);
  __syncthreads();  // `shared` may still be read by a previous call
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  v = threadIdx.x < warps ? shared[threadIdx.x] : A(0);
  if (warp == 0) v = warp_sum(v);
  if (threadIdx.x == 0) shared[0] = v;
  __syncthreads();
  return shared[0];
}

template <typename A>
__device__ __forceinline__ A elu_fwd(A z) {
  return z > A(0) ? z : expm1(z);
}
template <typename A>
__device__ __forceinline__ A elu_grad_from_output(A y) {
  return y > A(0) ? A(1) : y + A(1);
}
template <typename T, typename A>
__device__ __forceinline__ A grad_z(const T* dy, const T* y, int64_t i, bool apply_elu) {
  const A g = static_cast<A>(dy[i]);
  return apply_elu ? g * elu_grad_from_output<A>(static_cast<A>(y[i])) : g;
}

// ------------------------------------------------------------------------------------------- plane reductions
// NCHW: one block per (n, c) plane of hw contiguous elements. Mode 0: mean and rstd of x. Mode 1: S_g and S_gx.
template <typename T, typename A>
__global__ void stats_nchw_kernel(const T* __restrict__ x, int64_t hw, A eps, A* __restrict__ mean,
                                  A* __restrict__ rstd) {
  __shared__ A shared[32];
  const int64_t plane = blockIdx.x;
  const T* xp = x + plane * hw;
  A s = 0;
  for (int64_t i = threadIdx.x; i < hw; i += blockDim.x) s += static_cast<A>(xp[i]);
  const A mu = block_sum(s, shared) / static_cast<A>(hw);
  A ss = 0;  // second pass (from L2): exact where sum-of-squares would cancel
  for (int64_t i = threadIdx.x; i < hw; i += blockDim.x) {
    const A d = static_cast<A>(xp[i]) - mu;
    ss += d * d;
  }
  const A var = block_sum(ss, shared) / static_cast<A>(hw);
  if (threadIdx.x == 0) {
    mean[plane] = mu;
    rstd[plane] = A(1) / sqrt(var + eps);
  }
}

template <typename T, typename A>
__global__ void grad_sums_nchw_kernel(const T* __restrict__ dy, const T* __restrict__ y, const T* __restrict__ x,
                                      int64_t hw, const A* __restrict__ mean, const A* __restrict__ rstd,
                                      bool apply_elu, A* __restrict__ sg, A* __restrict__ sgx) {
  __shared__ A shared[32];
  const int64_t plane = blockIdx.x, off = plane * hw;
  const A mu = mean[plane];
  A s = 0, sx = 0;
  for (int64_t i = threadIdx.x; i < hw; i += blockDim.x) {
    const A g = grad_z<T, A>(dy, y, off + i, apply_elu);
    s += g;
    sx += g * (static_cast<A>(x[off + i]) - mu);
  }
  s = block_sum(s, shared);
  sx = block_sum(sx, shared);
  if (threadIdx.x == 0) {
    sg[plane] = s;
    sgx[plane] = sx * rstd[plane];
  }
}

// Channels-last: block (32, 8) covers 32 channels x one chunk of rows of one sample (launch_config.h: every block on
// gridDim.x, H·W split into chunks when N is small); threadIdx.y strides over the chunk's rows. Reduction over
// threadIdx.y in shared memory; partial results per (n, chunk, c), combined by a one-thread-per-(n, c) kernel.
template <typename A>
__device__ A tile_sum(A v, A (*tile)[33]) {
  tile[threadIdx.y][threadIdx.x] = v;
  __syncthreads();
  A s = 0;
  for (int j = 0; j < blockDim.y; ++j) s += tile[j][threadIdx.x];
  __syncthreads();
  return s;
}

// Partial (n, chunk, c) results: the chunk's mean and sum of squared deviations from it (two passes, as NCHW).
template <typename T, typename A>
__global__ void stats_nhwc_partial_kernel(const T* __restrict__ x, int64_t hw, int64_t C, int64_t tiles,
                                          int64_t chunks, int64_t rows, A* __restrict__ pmean, A* __restrict__ pm2) {
  __shared__ A tile[8][33];
  const NhwcBlock k = nhwc_block(blockIdx.x, tiles, chunks);
  const int64_t n = k.n, c = k.tile * 32 + threadIdx.x;
  const int64_t r0 = k.chunk * rows, r1 = std::min(hw, r0 + rows);  // r0 < r1: no chunk is empty
  const bool valid = c < C;
  const T* xn = x + n * hw * C;
  A s = 0;
  if (valid)
    for (int64_t p = r0 + threadIdx.y; p < r1; p += blockDim.y) s += static_cast<A>(xn[p * C + c]);
  const A mu = tile_sum(s, tile) / static_cast<A>(r1 - r0);
  A ss = 0;
  if (valid)
    for (int64_t p = r0 + threadIdx.y; p < r1; p += blockDim.y) {
      const A d = static_cast<A>(xn[p * C + c]) - mu;
      ss += d * d;
    }
  ss = tile_sum(ss, tile);
  if (valid && threadIdx.y == 0) {
    pmean[(n * chunks + k.chunk) * C + c] = mu;
    pm2[(n * chunks + k.chunk) * C + c] = ss;
  }
}

// mean and rstd per (n, c) from the chunks' (count, mean, M2), merged in order (Chan, Golub, LeVeque): with one
// chunk, mean = its mean and M2 = its M2 exactly.
template <typename A>
__global__ void stats_nhwc_combine_kernel(const A* __restrict__ pmean, const A* __restrict__ pm2, int64_t N,
                                          int64_t C, int64_t hw, int64_t chunks, int64_t rows, A eps,
                                          A* __restrict__ mean, A* __restrict__ rstd) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= N * C) return;
  const int64_t n = i / C, c = i % C;
  A cnt = 0, mu = 0, m2 = 0;
  for (int64_t k = 0; k < chunks; ++k) {
    const A nk = static_cast<A>(std::min(hw, (k + 1) * rows) - k * rows);
    const A mk = pmean[(n * chunks + k) * C + c], d = mk - mu, tot = cnt + nk;
    mu += d * (nk / tot);
    m2 += pm2[(n * chunks + k) * C + c] + d * d * (cnt * nk / tot);
    cnt = tot;
  }
  mean[i] = mu;
  rstd[i] = A(1) / sqrt(m2 / static_cast<A>(hw) + eps);
}

// Partial (n, chunk, c) sums of g and g (x - mu); the combine kernel adds the chunks and applies rstd.
template <typename T, typename A>
__global__ void grad_sums_nhwc_partial_kernel(const T* __restrict__ dy, const T* __restrict__ y,
                                              const T* __restrict__ x, int64_t hw, int64_t C, int64_t tiles,
                                              int64_t chunks, int64_t rows, const A* __restrict__ mean,
                                              bool apply_elu, A* __restrict__ psg, A* __restrict__ psgx) {
  __shared__ A tile[8][33];
  const NhwcBlock k = nhwc_block(blockIdx.x, tiles, chunks);
  const int64_t n = k.n, c = k.tile * 32 + threadIdx.x;
  const int64_t r0 = k.chunk * rows, r1 = std::min(hw, r0 + rows);
  const bool valid = c < C;
  const A mu = valid ? mean[n * C + c] : A(0);
  A s = 0, sx = 0;
  if (valid)
    for (int64_t p = r0 + threadIdx.y; p < r1; p += blockDim.y) {
      const int64_t i = (n * hw + p) * C + c;
      const A g = grad_z<T, A>(dy, y, i, apply_elu);
      s += g;
      sx += g * (static_cast<A>(x[i]) - mu);
    }
  s = tile_sum(s, tile);
  sx = tile_sum(sx, tile);
  if (valid && threadIdx.y == 0) {
    psg[(n * chunks + k.chunk) * C + c] = s;
    psgx[(n * chunks + k.chunk) * C + c] = sx;
  }
}

template <typename A>
__global__ void grad_sums_nhwc_combine_kernel(const A* __restrict__ psg, const A* __restrict__ psgx, int64_t N,
                                              int64_t C, int64_t chunks, const A* __restrict__ rstd,
                                              A* __restrict__ sg, A* __restrict__ sgx) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= N * C) return;
  const int64_t n = i / C, c = i % C;
  A s = 0, sx = 0;
  for (int64_t k = 0; k < chunks; ++k) {
    s += psg[(n * chunks + k) * C + c];
    sx += psgx[(n * chunks + k) * C + c];
  }
  sg[i] = s;
  sgx[i] = sx * rstd[i];
}

// ------------------------------------------------------------------------------- per-sample coefficient blocks
// One block per sample n, threads over channels. Parameters are (C,) (pstride 0) or (N, C) (pstride C), in the
// accumulation type A (float64 for float64 inputs: a float32 copy of alpha, gamma, beta would cap a float64 run
// at float32 accuracy, as the CPU kernel avoids too).

// m = mean_c mu and q = 1 / sqrt(unbiased var_c mu + eps) of one sample, for every thread of the block.
template <typename A>
__device__ void channel_stats(const A* mu, int64_t C, A eps, A* shared, A* m_out, A* q_out) {
  A s = 0;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) s += mu[c];
  const A m = block_sum(s, shared) / static_cast<A>(C);
  A v = 0;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) v += (mu[c] - m) * (mu[c] - m);
  *m_out = m;
  *q_out = A(1) / sqrt(block_sum(v, shared) / static_cast<A>(C - 1) + eps);
}
template <typename A>
__global__ void forward_coefficients_kernel(const A* __restrict__ mean, const A* __restrict__ rstd,
                                            const A* __restrict__ alpha, const A* __restrict__ gamma,
                                            const A* __restrict__ beta, int64_t C, int64_t pstride, A eps,
                                            A* __restrict__ a, A* __restrict__ b) {
  __shared__ A shared[32];
  const int64_t n = blockIdx.x;
  const A* mu = mean + n * C;
  A m, q;
  channel_stats(mu, C, eps, shared, &m, &q);
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
    const int64_t pc = n * pstride + c;
    const A g = gamma[pc];
    a[n * C + c] = g * rstd[n * C + c];
    b[n * C + c] = g * static_cast<A>(alpha[pc]) * (mu[c] - m) * q + (beta ? static_cast<A>(beta[pc]) : A(0));
  }
}

template <typename A>
__global__ void backward_coefficients_kernel(const A* __restrict__ mean, const A* __restrict__ rstd,
                                             const A* __restrict__ alpha, const A* __restrict__ gamma,
                                             const A* __restrict__ sg, const A* __restrict__ sgx, int64_t C,
                                             int64_t hw, int64_t pstride, A eps, A* __restrict__ dalpha,
                                             A* __restrict__ dgamma, A* __restrict__ k1, A* __restrict__ k2,
                                             A* __restrict__ k3) {
  __shared__ A shared[32];
  const int64_t n = blockIdx.x;
  const A* mu = mean + n * C;
  A m, q;
  channel_stats(mu, C, eps, shared, &m, &q);
  // sum_c alpha_c A_c u_c, with A = gamma S_g and u = (mu - m) q
  A gu = 0;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
    const int64_t i = n * C + c, pc = n * pstride + c;
    gu += static_cast<A>(alpha[pc]) * static_cast<A>(gamma[pc]) * sg[i] * (mu[c] - m) * q;
  }
  gu = block_sum(gu, shared);
  // dL/du_c = q (alpha_c A_c - u_c gu / (C - 1)); its mean over c
  A du_sum = 0;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
    const int64_t i = n * C + c, pc = n * pstride + c;
    const A u = (mu[c] - m) * q;
    du_sum += q * (static_cast<A>(alpha[pc]) * static_cast<A>(gamma[pc]) * sg[i] - u * gu / static_cast<A>(C - 1));
  }
  const A du_mean = block_sum(du_sum, shared) / static_cast<A>(C);
  const A inv_hw = A(1) / static_cast<A>(hw);
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
    const int64_t i = n * C + c, pc = n * pstride + c;
    const A al = alpha[pc], ga = gamma[pc], r = rstd[i];
    const A u = (mu[c] - m) * q, big_a = ga * sg[i], big_b = ga * sgx[i];  // A, B of the derivation
    const A du = q * (al * big_a - u * gu / static_cast<A>(C - 1));
    dalpha[i] = u * big_a;
    dgamma[i] = sgx[i] + al * u * sg[i];
    k1[i] = r * ga;
    k2[i] = -r * r * big_b * inv_hw;
    k3[i] = (du - du_mean) * inv_hw;
  }
}

// ------------------------------------------------------------------------------------------ elementwise passes
// Plane index of element i: NCHW i / hw; NHWC (i / (hw C)) C + i % C.
template <bool CL>
__device__ __forceinline__ int64_t plane_of(int64_t i, int64_t hw, int64_t C) {
  return CL ? (i / (hw * C)) * C + i % C : i / hw;
}

template <typename T, typename A, bool CL>
__global__ void apply_kernel(const T* __restrict__ x, T* __restrict__ y, int64_t total, int64_t hw, int64_t C,
                             const A* __restrict__ mean, const A* __restrict__ a, const A* __restrict__ b,
                             bool apply_elu) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t p = plane_of<CL>(i, hw, C);
    const A z = a[p] * (static_cast<A>(x[i]) - mean[p]) + b[p];
    y[i] = static_cast<T>(apply_elu ? elu_fwd(z) : z);
  }
}

template <typename T, typename A, bool CL>
__global__ void grad_apply_kernel(const T* __restrict__ dy, const T* __restrict__ y, const T* __restrict__ x,
                                  T* __restrict__ dx, int64_t total, int64_t hw, int64_t C, const A* __restrict__ mean,
                                  const A* __restrict__ sg, const A* __restrict__ k1, const A* __restrict__ k2,
                                  const A* __restrict__ k3, bool apply_elu) {
  const A inv_hw = A(1) / static_cast<A>(hw);
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t p = plane_of<CL>(i, hw, C);
    const A g = grad_z<T, A>(dy, y, i, apply_elu);
    dx[i] = static_cast<T>(k1[p] * (g - sg[p] * inv_hw) + k2[p] * (static_cast<A>(x[i]) - mean[p]) + k3[p]);
  }
}

unsigned elementwise_blocks(int64_t total) {
  const int64_t want = (total + kThreads - 1) / kThreads;
  return static_cast<unsigned>(std::min<int64_t>(want, 65535 * 8));
}

// The channels-last reductions' launch shape on the current GPU: a few blocks per SM before H·W is split.
NhwcLaunch nhwc_launch_here(int64_t N, int64_t C, int64_t HW, c10::DeviceIndex device) {
  int sms = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  const NhwcLaunch l = nhwc_launch(N, C, HW, 8 * static_cast<int64_t>(sms));
  TORCH_CHECK(fits_grid_x(l), "instance_norm_pp_elu (CUDA): channels-last grid of ", l.blocks,
              " blocks exceeds gridDim.x's ", kMaxGridX, " (N = ", N, ", C = ", C, ")");
  return l;
}

unsigned combine_blocks(int64_t NC) { return static_cast<unsigned>((NC + kThreads - 1) / kThreads); }

// Parameters as contiguous (N or 1, C) in the accumulation type (as the CPU kernel's param_as).
at::Tensor param_as(const at::Tensor& p, at::ScalarType acc) { return p.to(acc).contiguous(); }

std::tuple<at::Tensor, at::Tensor, at::Tensor> instance_norm_pp_elu_cuda(const at::Tensor& x_in,
                                                                          const at::Tensor& alpha_in,
                                                                          const at::Tensor& gamma_in,
                                                                          const std::optional<at::Tensor>& beta_in,
                                                                          double eps, bool apply_elu) {
  const int64_t pstride = check_instance_norm_pp_args(x_in, alpha_in, gamma_in, beta_in);
  TORCH_CHECK(x_in.is_cuda(), "instance_norm_pp_elu (CUDA): x must be a CUDA tensor");
  const c10::cuda::CUDAGuard guard(x_in.device());
  const auto fmt = kernel_layout(x_in);
  const bool nhwc = fmt == at::MemoryFormat::ChannelsLast;
  const at::Tensor x = x_in.contiguous(fmt);
  const int64_t N = x.size(0), C = x.size(1), HW = x.size(2) * x.size(3), total = x.numel();
  const auto acc = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const bool has_beta = beta_in.has_value() && beta_in->defined();
  const at::Tensor alpha = param_as(alpha_in, acc), gamma = param_as(gamma_in, acc);
  const at::Tensor beta = has_beta ? param_as(*beta_in, acc) : at::Tensor();
  at::Tensor out = at::empty(x.sizes(), x.options(), fmt);
  at::Tensor mean = at::empty({N, C}, x.options().dtype(acc));
  at::Tensor rstd = at::empty({N, C}, x.options().dtype(acc));
  at::Tensor a = at::empty({N, C}, x.options().dtype(acc));
  at::Tensor b = at::empty({N, C}, x.options().dtype(acc));
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "instance_norm_pp_elu_cuda", [&] {
    using A = at::opmath_type<scalar_t>;
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    A* mp = mean.mutable_data_ptr<A>();
    A* rp = rstd.mutable_data_ptr<A>();
    if (nhwc) {
      const NhwcLaunch l = nhwc_launch_here(N, C, HW, x.get_device());
      at::Tensor pmean = at::empty({N, l.chunks, C}, x.options().dtype(acc));
      at::Tensor pm2 = at::empty({N, l.chunks, C}, x.options().dtype(acc));
      stats_nhwc_partial_kernel<scalar_t, A><<<static_cast<unsigned>(l.blocks), dim3(32, kNhwcBlockRows), 0, stream>>>(
          xp, HW, C, l.tiles, l.chunks, l.rows, pmean.mutable_data_ptr<A>(), pm2.mutable_data_ptr<A>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      stats_nhwc_combine_kernel<A><<<combine_blocks(N * C), kThreads, 0, stream>>>(
          pmean.const_data_ptr<A>(), pm2.const_data_ptr<A>(), N, C, HW, l.chunks, l.rows, A(eps), mp, rp);
    } else {
      stats_nchw_kernel<scalar_t, A><<<N * C, kThreads, 0, stream>>>(xp, HW, A(eps), mp, rp);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    forward_coefficients_kernel<A><<<N, kThreads, 0, stream>>>(
        mp, rp, alpha.const_data_ptr<A>(), gamma.const_data_ptr<A>(), has_beta ? beta.const_data_ptr<A>() : nullptr,
        C, pstride, A(eps), a.mutable_data_ptr<A>(),
        b.mutable_data_ptr<A>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    const unsigned blocks = elementwise_blocks(total);
    if (nhwc) {
      apply_kernel<scalar_t, A, true><<<blocks, kThreads, 0, stream>>>(
          xp, out.mutable_data_ptr<scalar_t>(), total, HW, C, mp, a.const_data_ptr<A>(), b.const_data_ptr<A>(),
          apply_elu);
    } else {
      apply_kernel<scalar_t, A, false><<<blocks, kThreads, 0, stream>>>(
          xp, out.mutable_data_ptr<scalar_t>(), total, HW, C, mp, a.const_data_ptr<A>(), b.const_data_ptr<A>(),
          apply_elu);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {out, mean, rstd};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> instance_norm_pp_elu_backward_cuda(
    const at::Tensor& grad_out, const at::Tensor& out_in, const at::Tensor& x_in, const at::Tensor& mean_in,
    const at::Tensor& rstd_in, const at::Tensor& alpha_in, const at::Tensor& gamma_in, double eps, bool apply_elu) {
  const int64_t pstride = check_instance_norm_pp_args(x_in, alpha_in, gamma_in, std::nullopt);
  check_backward_args(grad_out, out_in, x_in, mean_in, rstd_in);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const auto fmt = kernel_layout(x_in);
  const bool nhwc = fmt == at::MemoryFormat::ChannelsLast;
  const at::Tensor x = x_in.contiguous(fmt), y = out_in.contiguous(fmt);
  const at::Tensor dy = grad_out.to(x.scalar_type()).contiguous(fmt);
  const int64_t N = x.size(0), C = x.size(1), HW = x.size(2) * x.size(3), total = x.numel();
  const auto acc = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const at::Tensor mean = mean_in.to(acc).contiguous(), rstd = rstd_in.to(acc).contiguous();
  const at::Tensor alpha = param_as(alpha_in, acc), gamma = param_as(gamma_in, acc);
  auto stat = [&] { return at::empty({N, C}, x.options().dtype(acc)); };
  at::Tensor sg = stat(), sgx = stat(), dalpha = stat(), dgamma = stat(), k1 = stat(), k2 = stat(), k3 = stat();
  at::Tensor dx = at::empty(x.sizes(), x.options(), fmt);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "instance_norm_pp_elu_backward_cuda",
                                  [&] {
    using A = at::opmath_type<scalar_t>;
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    const scalar_t* yp = y.const_data_ptr<scalar_t>();
    const scalar_t* dyp = dy.const_data_ptr<scalar_t>();
    const A* mp = mean.const_data_ptr<A>();
    const A* rp = rstd.const_data_ptr<A>();
    if (nhwc) {
      const NhwcLaunch l = nhwc_launch_here(N, C, HW, x.get_device());
      at::Tensor psg = at::empty({N, l.chunks, C}, x.options().dtype(acc));
      at::Tensor psgx = at::empty({N, l.chunks, C}, x.options().dtype(acc));
      grad_sums_nhwc_partial_kernel<scalar_t, A>
          <<<static_cast<unsigned>(l.blocks), dim3(32, kNhwcBlockRows), 0, stream>>>(
              dyp, yp, xp, HW, C, l.tiles, l.chunks, l.rows, mp, apply_elu, psg.mutable_data_ptr<A>(),
              psgx.mutable_data_ptr<A>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      grad_sums_nhwc_combine_kernel<A><<<combine_blocks(N * C), kThreads, 0, stream>>>(
          psg.const_data_ptr<A>(), psgx.const_data_ptr<A>(), N, C, l.chunks, rp, sg.mutable_data_ptr<A>(),
          sgx.mutable_data_ptr<A>());
    } else {
      grad_sums_nchw_kernel<scalar_t, A><<<N * C, kThreads, 0, stream>>>(
          dyp, yp, xp, HW, mp, rp, apply_elu, sg.mutable_data_ptr<A>(), sgx.mutable_data_ptr<A>());
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    backward_coefficients_kernel<A><<<N, kThreads, 0, stream>>>(
        mp, rp, alpha.const_data_ptr<A>(), gamma.const_data_ptr<A>(), sg.const_data_ptr<A>(),
        sgx.const_data_ptr<A>(), C, HW, pstride, A(eps), dalpha.mutable_data_ptr<A>(), dgamma.mutable_data_ptr<A>(),
        k1.mutable_data_ptr<A>(), k2.mutable_data_ptr<A>(), k3.mutable_data_ptr<A>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    const unsigned blocks = elementwise_blocks(total);
    if (nhwc) {
      grad_apply_kernel<scalar_t, A, true><<<blocks, kThreads, 0, stream>>>(
          dyp, yp, xp, dx.mutable_data_ptr<scalar_t>(), total, HW, C, mp, sg.const_data_ptr<A>(), k1.const_data_ptr<A>(),
          k2.const_data_ptr<A>(), k3.const_data_ptr<A>(), apply_elu);
    } else {
      grad_apply_kernel<scalar_t, A, false><<<blocks, kThreads, 0, stream>>>(
          dyp, yp, xp, dx.mutable_data_ptr<scalar_t>(), total, HW, C, mp, sg.const_data_ptr<A>(), k1.const_data_ptr<A>(),
          k2.const_data_ptr<A>(), k3.const_data_ptr<A>(), apply_elu);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {dx, reduce_param_grad(dalpha, pstride, alpha_in), reduce_param_grad(dgamma, pstride, gamma_in),
          reduce_param_grad(sg, pstride, gamma_in)};
}

}  // namespace

TORCH_LIBRARY_IMPL(ncsn_fast, CUDA, m) {
  m.impl("instance_norm_pp_elu", &instance_norm_pp_elu_cuda);
  m.impl("instance_norm_pp_elu_backward", &instance_norm_pp_elu_backward_cuda);
}

}  // namespace ncsn_fast
