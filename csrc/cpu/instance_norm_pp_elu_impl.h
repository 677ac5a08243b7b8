// Raw-pointer loops of the CPU InstanceNorm++ + ELU kernels. No include guard on purpose: instance_norm_pp_elu.cpp
// includes this file twice, once plainly and once under `#pragma GCC target("avx2,fma")`, each time in another
// namespace (NCSN_NS), and picks one at run time. `#pragma omp simd` (with -fopenmp-simd) lets the compiler
// vectorize the float reductions, which strict IEEE order would otherwise forbid.
//
// Layouts: "plane" functions take one (n, c) plane of an NCHW tensor, hw contiguous elements; "nhwc" functions take
// one sample n of a channels-last tensor, hw rows of C contiguous channels. A is the accumulation type (float for
// float/bf16/fp16 inputs, double for double).

namespace NCSN_NS {

// Loads and stores between the storage type and the accumulation type, written with integer and float arithmetic
// only (no branches, no calls) so that the loops around them vectorize: c10's own BFloat16/Half conversions are
// scalar here (a NaN branch, or F16C one element at a time), which made the bf16 kernels 5x and the fp16 ones 7x
// slower than float32. Same results as c10: bf16 rounds to nearest even (NaN -> 0x7FC0); fp16 is the FP16
// library's branch-free IEEE conversion (c10's fallback), denormals and inf/NaN included.
static inline float f32_from_u32(uint32_t u) {
  float f;
  __builtin_memcpy(&f, &u, sizeof(f));
  return f;
}
static inline uint32_t u32_from_f32(float f) {
  uint32_t u;
  __builtin_memcpy(&u, &f, sizeof(u));
  return u;
}
static inline float widen(float v) { return v; }
static inline double widen(double v) { return v; }
static inline float widen(c10::BFloat16 v) { return f32_from_u32(static_cast<uint32_t>(v.x) << 16); }
#if defined(__F16C__) && defined(__FLT16_MAX__)
// F16C (the AVX2 instantiation): _Float16 conversions compile to vcvtph2ps / vcvtps2ph, 8 at a time.
static inline float widen(c10::Half v) {
  _Float16 h;
  __builtin_memcpy(&h, &v.x, sizeof(h));
  return static_cast<float>(h);
}
#else
static inline float widen(c10::Half v) {
  const uint32_t w = static_cast<uint32_t>(v.x) << 16;
  const uint32_t sign = w & 0x80000000u, two_w = w + w;
  const float normalized = f32_from_u32((two_w >> 4) + (0xE0u << 23)) * 0x1.0p-112f;
  const float denormalized = f32_from_u32((two_w >> 17) | (126u << 23)) - 0.5f;
  return f32_from_u32(sign | (two_w < (1u << 27) ? u32_from_f32(denormalized) : u32_from_f32(normalized)));
}
#endif
template <typename A, typename T>
static inline A ld(T v) {
  return static_cast<A>(widen(v));
}
static inline void put(float* p, float v) { *p = v; }
static inline void put(double* p, double v) { *p = v; }
static inline void put(c10::BFloat16* p, float v) {
  const uint32_t u = u32_from_f32(v);
  const uint32_t rounded = (u + ((u >> 16) & 1u) + 0x7FFFu) >> 16;
  p->x = static_cast<uint16_t>(v != v ? 0x7FC0u : rounded);
}
#if defined(__F16C__) && defined(__FLT16_MAX__)
static inline void put(c10::Half* p, float v) {
  const _Float16 h = static_cast<_Float16>(v);
  __builtin_memcpy(&p->x, &h, sizeof(h));
}
#else
static inline void put(c10::Half* p, float v) {
  const uint32_t w = u32_from_f32(v), shl1_w = w + w, sign = w & 0x80000000u;
  uint32_t bias = shl1_w & 0xFF000000u;
  bias = bias < 0x71000000u ? 0x71000000u : bias;
  const float base = f32_from_u32((bias >> 1) + 0x07800000u) + (__builtin_fabsf(v) * 0x1.0p+112f) * 0x1.0p-110f;
  const uint32_t bits = u32_from_f32(base);
  const uint32_t nonsign = ((bits >> 13) & 0x00007C00u) + (bits & 0x00000FFFu);
  p->x = static_cast<uint16_t>((sign >> 16) | (shl1_w > 0xFF000000u ? 0x7E00u : nonsign));
}
#endif

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
  for (int64_t i = 0; i < hw; ++i) s += ld<A>(x[i]);
  const A mu = s / static_cast<A>(hw);
  A ss = 0;  // second pass over a plane that is still in cache: exact where sum-of-squares would cancel
#pragma omp simd reduction(+ : ss)
  for (int64_t i = 0; i < hw; ++i) {
    const A d = ld<A>(x[i]) - mu;
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
    for (int64_t i = 0; i < hw; ++i) put(y + i, elu<A>(a * (ld<A>(x[i]) - mu) + b));
  } else {
#pragma omp simd
    for (int64_t i = 0; i < hw; ++i) put(y + i, a * (ld<A>(x[i]) - mu) + b);
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
      const A g = ld<A>(dy[i]) * elu_grad_from_output<A>(ld<A>(y[i]));
      s += g;
      sx += g * (ld<A>(x[i]) - mu);
    }
  } else {
#pragma omp simd reduction(+ : s, sx)
    for (int64_t i = 0; i < hw; ++i) {
      const A g = ld<A>(dy[i]);
      s += g;
      sx += g * (ld<A>(x[i]) - mu);
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
      const A g = ld<A>(dy[i]) * elu_grad_from_output<A>(ld<A>(y[i]));
      put(dx + i, k1 * (g - gbar) + k2 * (ld<A>(x[i]) - mu) + k3);
    }
  } else {
#pragma omp simd
    for (int64_t i = 0; i < hw; ++i)
      put(dx + i, k1 * (ld<A>(dy[i]) - gbar) + k2 * (ld<A>(x[i]) - mu) + k3);
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
    for (int64_t c = 0; c < C; ++c) acc[c] += ld<A>(row[c]);
  }
  for (int64_t c = 0; c < C; ++c) {
    mean[c] = acc[c] / static_cast<A>(hw);
    acc[c] = 0;
  }
  for (int64_t p = 0; p < hw; ++p) {
    const T* row = x + p * C;
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) {
      const A d = ld<A>(row[c]) - mean[c];
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
      for (int64_t c = 0; c < C; ++c) put(yr + c, elu<A>(a[c] * (ld<A>(xr[c]) - mu[c]) + b[c]));
    } else {
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) put(yr + c, a[c] * (ld<A>(xr[c]) - mu[c]) + b[c]);
    }
  }
}

// g = dL/dz of one element: dy ELU'(z) (from the output y) with the ELU, dy without. ELU is a template parameter so
// that the channel loops below have no branch in them (which stopped the fp16 loops from vectorizing).
template <bool ELU, typename T, typename A>
static inline A grad_z(T dy, T y) {
  return ELU ? ld<A>(dy) * elu_grad_from_output<A>(ld<A>(y)) : ld<A>(dy);
}

// sg, sgx: (C,) outputs (sgx already multiplied by rstd).
template <bool ELU, typename T, typename A>
void grad_sums_nhwc_rows(const T* __restrict dy, const T* __restrict y, const T* __restrict x, int64_t hw, int64_t C,
                         const A* __restrict mu, A* __restrict sg, A* __restrict sgx) {
  for (int64_t p = 0; p < hw; ++p) {
    const T* dyr = dy + p * C;
    const T* yr = y + p * C;
    const T* xr = x + p * C;
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) {
      const A g = grad_z<ELU, T, A>(dyr[c], yr[c]);
      sg[c] += g;
      sgx[c] += g * (ld<A>(xr[c]) - mu[c]);
    }
  }
}

template <typename T, typename A>
void grad_sums_nhwc(const T* __restrict dy, const T* __restrict y, const T* __restrict x, int64_t hw, int64_t C,
                    const A* __restrict mu, const A* __restrict r, bool apply_elu, A* __restrict sg,
                    A* __restrict sgx) {
  for (int64_t c = 0; c < C; ++c) sg[c] = sgx[c] = 0;
  if (apply_elu) {
    grad_sums_nhwc_rows<true>(dy, y, x, hw, C, mu, sg, sgx);
  } else {
    grad_sums_nhwc_rows<false>(dy, y, x, hw, C, mu, sg, sgx);
  }
  for (int64_t c = 0; c < C; ++c) sgx[c] *= r[c];
}

template <bool ELU, typename T, typename A>
void grad_apply_nhwc_rows(const T* __restrict dy, const T* __restrict y, const T* __restrict x, T* __restrict dx,
                          int64_t hw, int64_t C, const A* __restrict mu, const A* __restrict gbar,
                          const A* __restrict k1, const A* __restrict k2, const A* __restrict k3) {
  for (int64_t p = 0; p < hw; ++p) {
    const T* dyr = dy + p * C;
    const T* yr = y + p * C;
    const T* xr = x + p * C;
    T* dxr = dx + p * C;
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) {
      const A g = grad_z<ELU, T, A>(dyr[c], yr[c]);
      put(dxr + c, k1[c] * (g - gbar[c]) + k2[c] * (ld<A>(xr[c]) - mu[c]) + k3[c]);
    }
  }
}

template <typename T, typename A>
void grad_apply_nhwc(const T* __restrict dy, const T* __restrict y, const T* __restrict x, T* __restrict dx,
                     int64_t hw, int64_t C, const A* __restrict mu, const A* __restrict gbar, const A* __restrict k1,
                     const A* __restrict k2, const A* __restrict k3, bool apply_elu) {
  if (apply_elu) {
    grad_apply_nhwc_rows<true>(dy, y, x, dx, hw, C, mu, gbar, k1, k2, k3);
  } else {
    grad_apply_nhwc_rows<false>(dy, y, x, dx, hw, C, mu, gbar, k1, k2, k3);
  }
}

}  // namespace NCSN_NS
