// CPU kernels of ncsn_fast::instance_norm_pp_elu (forward and backward). NCHW inputs are processed per (n, c)
// plane with at::parallel_for over planes; channels-last inputs per sample, vectorized across channels, without a
// layout copy. The inner loops (instance_norm_pp_elu_impl.h) are compiled twice, generic and AVX2+FMA+F16C, and
// chosen at run time (reported by ncsn_fast::build_info).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

#include <cmath>
#include <string>
#include <tuple>
#include <vector>

#include "../build_info.h"
#include "../instance_norm_pp_elu.h"

#define NCSN_NS generic
#include "instance_norm_pp_elu_impl.h"
#undef NCSN_NS

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define NCSN_HAVE_AVX2_PATH 1
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
#define NCSN_NS avx2
#include "instance_norm_pp_elu_impl.h"
#undef NCSN_NS
#pragma GCC pop_options
#endif

namespace ncsn_fast {
namespace {

bool cpu_has_avx2() {
#ifdef NCSN_HAVE_AVX2_PATH
  static const bool has =
      __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
  return has;
#else
  return false;
#endif
}

const BuildFact isa_fact("instance_norm_pp_elu cpu isa", [] {
  return std::string(cpu_has_avx2() ? "avx2+fma+f16c" : "generic");
});

// Chooses the AVX2 or the generic instantiation of an inner-loop function.
#ifdef NCSN_HAVE_AVX2_PATH
#define NCSN_CALL(fn, ...) (cpu_has_avx2() ? avx2::fn(__VA_ARGS__) : generic::fn(__VA_ARGS__))
#else
#define NCSN_CALL(fn, ...) generic::fn(__VA_ARGS__)
#endif

constexpr int64_t kPlaneGrain = 4;

// Across-channel statistics of one sample: m = mean_c mu, q = 1 / sqrt(unbiased var_c mu + eps); writes
// u[c] = (mu_c - m) q (the "centred" channel means of InstanceNorm++). Returns q.
template <typename A>
A channel_term(const A* mu, int64_t C, A eps, A* u) {
  A m = 0;
  for (int64_t c = 0; c < C; ++c) m += mu[c];
  m /= static_cast<A>(C);
  A v = 0;
  for (int64_t c = 0; c < C; ++c) v += (mu[c] - m) * (mu[c] - m);
  const A q = A(1) / std::sqrt(v / static_cast<A>(C - 1) + eps);
  for (int64_t c = 0; c < C; ++c) u[c] = (mu[c] - m) * q;
  return q;
}

// Forward coefficients of one sample: y = ELU(a (x - mu) + b).
template <typename A>
void forward_coefficients(const A* mu, const A* r, const A* alpha, const A* gamma, const A* beta, int64_t C, A eps,
                          A* a, A* b) {
  channel_term(mu, C, eps, b);  // b <- u
  for (int64_t c = 0; c < C; ++c) {
    a[c] = gamma[c] * r[c];
    b[c] = gamma[c] * alpha[c] * b[c] + (beta ? beta[c] : A(0));
  }
}

// Backward coefficients of one sample from the plane sums sg = sum g, sgx = sum g x_hat (g = dL/dz):
// parameter gradients per (n, c) and dx = k1 (g - gbar) + k2 (x - mu) + k3 (derivation in
// ncsn_fast/ops/instance_norm_pp_elu.py).
template <typename A>
void backward_coefficients(const A* mu, const A* r, const A* alpha, const A* gamma, const A* sg, const A* sgx,
                           int64_t C, int64_t hw, A eps, A* u, A* dalpha, A* dgamma, A* dbeta, A* gbar, A* k1, A* k2,
                           A* k3) {
  const A q = channel_term(mu, C, eps, u);
  const A inv_hw = A(1) / static_cast<A>(hw);
  A s = 0;  // sum_c G_c u_c with G = alpha * A
  for (int64_t c = 0; c < C; ++c) {
    const A Ac = gamma[c] * sg[c];
    dgamma[c] = sgx[c] + alpha[c] * u[c] * sg[c];
    dbeta[c] = sg[c];
    dalpha[c] = u[c] * Ac;
    s += alpha[c] * Ac * u[c];
  }
  A mean_du = 0;
  for (int64_t c = 0; c < C; ++c) {
    k3[c] = q * (alpha[c] * gamma[c] * sg[c] - u[c] * s / static_cast<A>(C - 1));  // dL/du_c, kept in k3 for now
    mean_du += k3[c];
  }
  mean_du /= static_cast<A>(C);
  for (int64_t c = 0; c < C; ++c) {
    gbar[c] = sg[c] * inv_hw;
    k1[c] = r[c] * gamma[c];
    k2[c] = -r[c] * r[c] * gamma[c] * sgx[c] * inv_hw;
    k3[c] = (k3[c] - mean_du) * inv_hw;
  }
}

// Parameters as contiguous (N or 1, C) in the accumulation type; stride 0 between samples for (C,) parameters.
at::Tensor param_as(const at::Tensor& p, at::ScalarType acc) { return p.to(acc).contiguous(); }

std::tuple<at::Tensor, at::Tensor, at::Tensor> instance_norm_pp_elu_cpu(const at::Tensor& x_in,
                                                                         const at::Tensor& alpha_in,
                                                                         const at::Tensor& gamma_in,
                                                                         const std::optional<at::Tensor>& beta_in,
                                                                         double eps, bool apply_elu) {
  const int64_t pstride = check_instance_norm_pp_args(x_in, alpha_in, gamma_in, beta_in);
  const bool nhwc = use_channels_last(x_in);
  const at::Tensor x = nhwc ? x_in : x_in.contiguous();
  const int64_t N = x.size(0), C = x.size(1), HW = x.size(2) * x.size(3);
  const auto acc = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const bool has_beta = beta_in.has_value() && beta_in->defined();
  const at::Tensor alpha = param_as(alpha_in, acc), gamma = param_as(gamma_in, acc);
  const at::Tensor beta = has_beta ? param_as(*beta_in, acc) : at::Tensor();
  at::Tensor out = at::empty_like(x);  // keeps the memory format of x
  at::Tensor mean = at::empty({N, C}, x.options().dtype(acc));
  at::Tensor rstd = at::empty({N, C}, x.options().dtype(acc));

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "instance_norm_pp_elu_cpu", [&] {
    using A = at::opmath_type<scalar_t>;
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    scalar_t* yp = out.mutable_data_ptr<scalar_t>();
    A* mp = mean.mutable_data_ptr<A>();
    A* rp = rstd.mutable_data_ptr<A>();
    const A* ap = alpha.const_data_ptr<A>();
    const A* gp = gamma.const_data_ptr<A>();
    const A* bp = has_beta ? beta.const_data_ptr<A>() : nullptr;
    const A e = static_cast<A>(eps);
    if (nhwc) {
      at::parallel_for(0, N, 1, [&](int64_t begin, int64_t end) {
        std::vector<A> scratch(3 * C);
        A *acc_c = scratch.data(), *a = acc_c + C, *b = a + C;
        for (int64_t n = begin; n < end; ++n) {
          const scalar_t* xn = xp + n * HW * C;
          NCSN_CALL(stats_nhwc, xn, HW, C, e, mp + n * C, rp + n * C, acc_c);
          forward_coefficients<A>(mp + n * C, rp + n * C, ap + n * pstride, gp + n * pstride,
                                  bp ? bp + n * pstride : nullptr, C, e, a, b);
          NCSN_CALL(apply_nhwc, xn, yp + n * HW * C, HW, C, mp + n * C, a, b, apply_elu);
        }
      });
      return;
    }
    if (N >= at::get_num_threads()) {
      // One sample per task: its C planes stay in cache between the statistics and the apply pass.
      at::parallel_for(0, N, 1, [&](int64_t begin, int64_t end) {
        std::vector<A> coef(2 * C);
        for (int64_t n = begin; n < end; ++n) {
          const int64_t p0 = n * C;
          for (int64_t c = 0; c < C; ++c) NCSN_CALL(stats_plane, xp + (p0 + c) * HW, HW, e, mp + p0 + c, rp + p0 + c);
          forward_coefficients<A>(mp + p0, rp + p0, ap + n * pstride, gp + n * pstride,
                                  bp ? bp + n * pstride : nullptr, C, e, coef.data(), coef.data() + C);
          for (int64_t c = 0; c < C; ++c)
            NCSN_CALL(apply_plane, xp + (p0 + c) * HW, yp + (p0 + c) * HW, HW, mp[p0 + c], coef[c], coef[C + c],
                      apply_elu);
        }
      });
      return;
    }
    // Few samples: parallel over planes, in three phases.
    at::parallel_for(0, N * C, kPlaneGrain, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) NCSN_CALL(stats_plane, xp + i * HW, HW, e, mp + i, rp + i);
    });
    std::vector<A> coef(2 * N * C);
    for (int64_t n = 0; n < N; ++n)
      forward_coefficients<A>(mp + n * C, rp + n * C, ap + n * pstride, gp + n * pstride,
                              bp ? bp + n * pstride : nullptr, C, e, coef.data() + n * C,
                              coef.data() + (N + n) * C);
    at::parallel_for(0, N * C, kPlaneGrain, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i)
        NCSN_CALL(apply_plane, xp + i * HW, yp + i * HW, HW, mp[i], coef[i], coef[N * C + i], apply_elu);
    });
  });
  return {out, mean, rstd};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> instance_norm_pp_elu_backward_cpu(
    const at::Tensor& grad_out, const at::Tensor& out_in, const at::Tensor& x_in, const at::Tensor& mean_in,
    const at::Tensor& rstd_in, const at::Tensor& alpha_in, const at::Tensor& gamma_in, double eps, bool apply_elu) {
  const int64_t pstride = check_instance_norm_pp_args(x_in, alpha_in, gamma_in, std::nullopt);
  check_backward_args(grad_out, out_in, x_in, mean_in, rstd_in);
  const auto fmt = kernel_layout(x_in);
  const bool nhwc = fmt == at::MemoryFormat::ChannelsLast;
  const at::Tensor x = x_in.contiguous(fmt), y = out_in.contiguous(fmt);
  const at::Tensor dy = grad_out.to(x.scalar_type()).contiguous(fmt);
  const int64_t N = x.size(0), C = x.size(1), HW = x.size(2) * x.size(3);
  const auto acc = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const at::Tensor mean = mean_in.to(acc).contiguous(), rstd = rstd_in.to(acc).contiguous();
  const at::Tensor alpha = param_as(alpha_in, acc), gamma = param_as(gamma_in, acc);
  at::Tensor dx = at::empty_like(x);
  at::Tensor dalpha = at::empty({N, C}, x.options().dtype(acc));
  at::Tensor dgamma = at::empty({N, C}, x.options().dtype(acc));
  at::Tensor dbeta = at::empty({N, C}, x.options().dtype(acc));

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "instance_norm_pp_elu_backward_cpu", [&] {
    using A = at::opmath_type<scalar_t>;
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    const scalar_t* yp = y.const_data_ptr<scalar_t>();
    const scalar_t* dyp = dy.const_data_ptr<scalar_t>();
    scalar_t* dxp = dx.mutable_data_ptr<scalar_t>();
    const A* mp = mean.const_data_ptr<A>();
    const A* rp = rstd.const_data_ptr<A>();
    const A* ap = alpha.const_data_ptr<A>();
    const A* gp = gamma.const_data_ptr<A>();
    A* dap = dalpha.mutable_data_ptr<A>();
    A* dgp = dgamma.mutable_data_ptr<A>();
    A* dbp = dbeta.mutable_data_ptr<A>();
    const A e = static_cast<A>(eps);
    auto coefficients = [&](int64_t n, const A* sg, const A* sgx, A* u, A* gbar, A* k1, A* k2, A* k3) {
      backward_coefficients<A>(mp + n * C, rp + n * C, ap + n * pstride, gp + n * pstride, sg, sgx, C, HW, e, u,
                               dap + n * C, dgp + n * C, dbp + n * C, gbar, k1, k2, k3);
    };
    if (nhwc) {
      at::parallel_for(0, N, 1, [&](int64_t begin, int64_t end) {
        std::vector<A> scratch(7 * C);
        A *sg = scratch.data(), *sgx = sg + C, *u = sgx + C, *gb = u + C, *k1 = gb + C, *k2 = k1 + C, *k3 = k2 + C;
        for (int64_t n = begin; n < end; ++n) {
          const int64_t off = n * HW * C;
          NCSN_CALL(grad_sums_nhwc, dyp + off, yp + off, xp + off, HW, C, mp + n * C, rp + n * C, apply_elu, sg, sgx);
          coefficients(n, sg, sgx, u, gb, k1, k2, k3);
          NCSN_CALL(grad_apply_nhwc, dyp + off, yp + off, xp + off, dxp + off, HW, C, mp + n * C, gb, k1, k2, k3,
                    apply_elu);
        }
      });
    } else if (N >= at::get_num_threads()) {
      at::parallel_for(0, N, 1, [&](int64_t begin, int64_t end) {
        std::vector<A> scratch(7 * C);
        A *sg = scratch.data(), *sgx = sg + C, *u = sgx + C, *gb = u + C, *k1 = gb + C, *k2 = k1 + C, *k3 = k2 + C;
        for (int64_t n = begin; n < end; ++n) {
          const int64_t p0 = n * C;
          for (int64_t c = 0; c < C; ++c) {
            const int64_t o = (p0 + c) * HW;
            NCSN_CALL(grad_sums_plane, dyp + o, yp + o, xp + o, HW, mp[p0 + c], rp[p0 + c], apply_elu, sg + c,
                      sgx + c);
          }
          coefficients(n, sg, sgx, u, gb, k1, k2, k3);
          for (int64_t c = 0; c < C; ++c) {
            const int64_t o = (p0 + c) * HW;
            NCSN_CALL(grad_apply_plane, dyp + o, yp + o, xp + o, dxp + o, HW, mp[p0 + c], gb[c], k1[c], k2[c], k3[c],
                      apply_elu);
          }
        }
      });
    } else {
      const int64_t P = N * C;
      std::vector<A> buf(7 * P);
      A *sg = buf.data(), *sgx = sg + P, *u = sgx + P, *gb = u + P, *k1 = gb + P, *k2 = k1 + P, *k3 = k2 + P;
      at::parallel_for(0, N * C, kPlaneGrain, [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i)
          NCSN_CALL(grad_sums_plane, dyp + i * HW, yp + i * HW, xp + i * HW, HW, mp[i], rp[i], apply_elu, sg + i,
                    sgx + i);
      });
      for (int64_t n = 0; n < N; ++n)
        coefficients(n, sg + n * C, sgx + n * C, u + n * C, gb + n * C, k1 + n * C, k2 + n * C, k3 + n * C);
      at::parallel_for(0, N * C, kPlaneGrain, [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i)
          NCSN_CALL(grad_apply_plane, dyp + i * HW, yp + i * HW, xp + i * HW, dxp + i * HW, HW, mp[i], gb[i], k1[i],
                    k2[i], k3[i], apply_elu);
      });
    }
  });
  return {dx, reduce_param_grad(dalpha, pstride, alpha_in), reduce_param_grad(dgamma, pstride, gamma_in),
          reduce_param_grad(dbeta, pstride, gamma_in)};
}

}  // namespace

TORCH_LIBRARY_IMPL(ncsn_fast, CPU, m) {
  m.impl("instance_norm_pp_elu", &instance_norm_pp_elu_cpu);
  m.impl("instance_norm_pp_elu_backward", &instance_norm_pp_elu_backward_cpu);
}

}  // namespace ncsn_fast
