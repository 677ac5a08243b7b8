// Raw-pointer loops of the CPU InstanceNorm++ + ELU kernels. No include guard on purpose: instance_norm_pp_elu.cpp
// includes this file twice, once plainly and once under `#pragma GCC target("avx2,fma")`, each time in another
// namespace (NCSN_NS), and picks one at run time. `#pragma omp simd` (with -fopenmp-simd) lets the compiler
// vectorize the float reductions, which strict IEEE order would otherwise forbid.
//
// Layouts: "plane" functions take one (n, c) plane of an NCHW tensor, hw contiguous elements; "nhwc" functions take
// one sample n of a channels-last tensor, hw rows of C contiguous channels. A is the accumulation type (float for
// float/bf16/fp16 inputs, double for double).

namespace NCSN_NS {

// exp(z) - 1 for z <= 0 with plain arithmetic only, so that the loops around it vectorize: z = k ln2 + r with
// |r| <= ln2/2 (+ rounding), exp(r) - 1 = r q(r) by Taylor to r^7 (truncation < 2e-8 relative), then 2^k (r q + 1) - 1 written
// as 2^k r q + (2^k - 1) so that small |z| keeps full relative precision (no cancellation when k = 0).
static inline float expm1_nonpos(float z) {
  z = z < -87.0f ? -87.0f : z;
  // Round to nearest by adding and subtracting 1.5 * 2^23 (no floor call, which would stop vectorization).
  const float kf = (z * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  const float r = (z - kf * 0.693359375f) - kf * -2.12194440e-4f;
  const float q =
      1.0f + r * (0.5f + r * (1.0f / 6 + r * (1.0f / 24 + r * (1.0f / 120 + r * (1.0f / 720 + r * (1.0f / 5040))))));
  const int ki = static_cast<int>(kf);
  const unsigned bits = static_cast<unsigned>(ki + 127) << 23;
  float s;
  __builtin_memcpy(&s, &bits, sizeof(float));
  return s * (r * q) + (s - 1.0f);
}
static inline double expm1_nonpos(double z) { return std::expm1(z); }

template <typename A>
static inline A elu(A z) {
  const A e = expm1_nonpos(z > A(0) ? A(0) : z);
  return z > A(0) ? z : e;
}

// d ELU / dz from the output y = ELU(z): 1 for z > 0, else exp(z) = y + 1.
template <typename A>
static inline A elu_grad_from_output(A y) {
  return y > A(0) ? A(1) : y + A(1);
}

// ---------------------------------------------------------------------------------------------------------- NCHW
template <typename T, typename A>
void stats_plane(const T* __restrict x, int64_t hw, A eps, A* mean, A* rstd) {
  A s = 0;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < hw; ++i) s += static_cast<A>(x[i]);
  const A mu = s / static_cast<A>(hw);
  A ss = 0;  // second pass over a plane that is still in cache: exact where sum-of-squares would cancel
#pragma omp simd reduction(+ : ss)
  for (int64_t i = 0; i < hw; ++i) {
    const A d = static_cast<A>(x[i]) - mu;
    ss += d * d;
  }
  *mean = mu;
  *rstd = A(1) / std::sqrt(ss / static_cast<A>(hw) + eps);
}

// y = ELU(a (x - mu) + b): a = gamma rstd, b = gamma alpha (mu - m) / sqrt(v + eps) + beta.
template <typename T, typename A>
void apply_plane(const T* __restrict x, T* __restrict y, int64_t hw, A mu, A a, A b, bool apply_elu) {
  if (apply_elu) {
#pragma omp simd
    for (int64_t i = 0; i < hw; ++i) y[i] = static_cast<T>(elu<A>(a * (static_cast<A>(x[i]) - mu) + b));
  } else {
#pragma omp simd
    for (int64_t i = 0; i < hw; ++i) y[i] = static_cast<T>(a * (static_cast<A>(x[i]) - mu) + b);
  }
}

// Backward sums over a plane: sg = sum g, sgx = sum g (x - mu) rstd, with g = dL/dz.
template <typename T, typename A>
void grad_sums_plane(const T* __restrict dy, const T* __restrict y, const T* __restrict x, int64_t hw, A mu, A r,
                     bool apply_elu, A* sg, A* sgx) {
  A s = 0, sx = 0;
  if (apply_elu) {
#pragma omp simd reduction(+ : s, sx)
    for (int64_t i = 0; i < hw; ++i) {
      const A g = static_cast<A>(dy[i]) * elu_grad_from_output<A>(static_cast<A>(y[i]));
      s += g;
      sx += g * (static_cast<A>(x[i]) - mu);
    }
  } else {
#pragma omp simd reduction(+ : s, sx)
    for (int64_t i = 0; i < hw; ++i) {
      const A g = static_cast<A>(dy[i]);
      s += g;
      sx += g * (static_cast<A>(x[i]) - mu);
    }
  }
  *sg = s;
  *sgx = sx * r;
}

// dx = k1 (g - gbar) + k2 (x - mu) + k3, gbar the plane mean of g (subtracted per element: no cancellation
// between two large terms when the plane is nearly constant, e.g. H = W = 1).
template <typename T, typename A>
void grad_apply_plane(const T* __restrict dy, const T* __restrict y, const T* __restrict x, T* __restrict dx,
                      int64_t hw, A mu, A gbar, A k1, A k2, A k3, bool apply_elu) {
  if (apply_elu) {
#pragma omp simd
    for (int64_t i = 0; i < hw; ++i) {
      const A g = static_cast<A>(dy[i]) * elu_grad_from_output<A>(static_cast<A>(y[i]));
      dx[i] = static_cast<T>(k1 * (g - gbar) + k2 * (static_cast<A>(x[i]) - mu) + k3);
    }
  } else {
#pragma omp simd
    for (int64_t i = 0; i < hw; ++i)
      dx[i] = static_cast<T>(k1 * (static_cast<A>(dy[i]) - gbar) + k2 * (static_cast<A>(x[i]) - mu) + k3);
  }
}

// ---------------------------------------------------------------------------------------------------------- NHWC
// One sample: x is (hw, C). mean/rstd are (C,); acc is (C,) scratch.
template <typename T, typename A>
void stats_nhwc(const T* __restrict x, int64_t hw, int64_t C, A eps, A* __restrict mean, A* __restrict rstd,
                A* __restrict acc) {
  for (int64_t c = 0; c < C; ++c) acc[c] = 0;
  for (int64_t p = 0; p < hw; ++p) {
    const T* row = x + p * C;
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) acc[c] += static_cast<A>(row[c]);
  }
  for (int64_t c = 0; c < C; ++c) {
    mean[c] = acc[c] / static_cast<A>(hw);
    acc[c] = 0;
  }
  for (int64_t p = 0; p < hw; ++p) {
    const T* row = x + p * C;
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) {
      const A d = static_cast<A>(row[c]) - mean[c];
      acc[c] += d * d;
    }
  }
  for (int64_t c = 0; c < C; ++c) rstd[c] = A(1) / std::sqrt(acc[c] / static_cast<A>(hw) + eps);
}

template <typename T, typename A>
void apply_nhwc(const T* __restrict x, T* __restrict y, int64_t hw, int64_t C, const A* __restrict mu,
                const A* __restrict a, const A* __restrict b, bool apply_elu) {
  for (int64_t p = 0; p < hw; ++p) {
    const T* xr = x + p * C;
    T* yr = y + p * C;
    if (apply_elu) {
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) yr[c] = static_cast<T>(elu<A>(a[c] * (static_cast<A>(xr[c]) - mu[c]) + b[c]));
    } else {
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) yr[c] = static_cast<T>(a[c] * (static_cast<A>(xr[c]) - mu[c]) + b[c]);
    }
  }
}

// sg, sgx: (C,) outputs (sgx already multiplied by rstd).
template <typename T, typename A>
void grad_sums_nhwc(const T* __restrict dy, const T* __restrict y, const T* __restrict x, int64_t hw, int64_t C,
                    const A* __restrict mu, const A* __restrict r, bool apply_elu, A* __restrict sg,
                    A* __restrict sgx) {
  for (int64_t c = 0; c < C; ++c) sg[c] = sgx[c] = 0;
  for (int64_t p = 0; p < hw; ++p) {
    const T* dyr = dy + p * C;
    const T* yr = y + p * C;
    const T* xr = x + p * C;
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) {
      const A g = apply_elu ? static_cast<A>(dyr[c]) * elu_grad_from_output<A>(static_cast<A>(yr[c]))
                            : static_cast<A>(dyr[c]);
      sg[c] += g;
      sgx[c] += g * (static_cast<A>(xr[c]) - mu[c]);
    }
  }
  for (int64_t c = 0; c < C; ++c) sgx[c] *= r[c];
}

template <typename T, typename A>
void grad_apply_nhwc(const T* __restrict dy, const T* __restrict y, const T* __restrict x, T* __restrict dx,
                     int64_t hw, int64_t C, const A* __restrict mu, const A* __restrict gbar, const A* __restrict k1,
                     const A* __restrict k2, const A* __restrict k3, bool apply_elu) {
  for (int64_t p = 0; p < hw; ++p) {
    const T* dyr = dy + p * C;
    const T* yr = y + p * C;
    const T* xr = x + p * C;
    T* dxr = dx + p * C;
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) {
      const A g = apply_elu ? static_cast<A>(dyr[c]) * elu_grad_from_output<A>(static_cast<A>(yr[c]))
                            : static_cast<A>(dyr[c]);
      dxr[c] = static_cast<T>(k1[c] * (g - gbar[c]) + k2[c] * (static_cast<A>(xr[c]) - mu[c]) + k3[c]);
    }
  }
}

}  // namespace NCSN_NS
