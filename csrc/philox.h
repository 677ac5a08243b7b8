// Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC 2011), one definition for the
// CPU and CUDA kernels; Triton's tl.random.philox computes the same function (ncsn_fast/ops/triton/sde_step.py).
//
// Counter layout of ncsn_fast (shared by every backend, so one (seed, offset) gives the same noise everywhere):
//   key     = (seed & 0xffffffff, seed >> 32)                       seed in [0, 2^63)
//   counter = (g & 0xffffffff, g >> 32, offset & 0xffffffff, offset >> 32)
// where g = i / 4 is the group of element i (flat index in x's logical NCHW order) and offset numbers the draw
// (the sampler uses its global step index). The four outputs of one call serve elements 4g .. 4g + 3:
// uniforms u_k = ((out_k >> 8) + 0.5) * 2^-24 computed in float; Box-Muller on the pairs (u_0, u_1) and
// (u_2, u_3):  r = sqrt(-2 ln u_a), z_a = r cos(2 pi u_b), z_b = r sin(2 pi u_b).
// The float uniform is exact for out_k >> 8 < 2^23; above, (out_k >> 8) + 0.5 needs 25 bits and rounds to even, so
// u > 1/2 moves by 2^-25 and can reach 1 (ln 1 = 0: z = 0, never NaN). The PyTorch definition
// (ncsn_fast/ops/reference.py: philox_normal) forms the uniforms the same way in float32, so it agrees with the
// kernels within 2e-6 everywhere (the polynomial ln/sin/cos against libm).
// Users: ncsn_fast::langevin_step_ and ncsn_fast::sde_step_ (csrc/sde_step.h), one kernel per device.
// ln, cos and sin are the polynomial forms below (plain float arithmetic, the same IEEE operations on CPU and GPU:
// setup.py compiles without --use_fast_math; nvcc may still contract a*b + c into one FMA, so the last bit can
// differ, not yet measured on a GPU); Triton uses its own (libdevice) versions, within 1e-6 of these.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define NCSN_HD __host__ __device__ __forceinline__
#else
#define NCSN_HD inline
#endif

namespace ncsn_fast {
namespace philox {

NCSN_HD uint32_t bits_of(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
#endif
}
NCSN_HD float float_of(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
#endif
}

struct U4 {
  uint32_t x[4];
};

NCSN_HD uint32_t mulhilo(uint32_t a, uint32_t b, uint32_t* hi) {
  const uint64_t p = static_cast<uint64_t>(a) * b;
  *hi = static_cast<uint32_t>(p >> 32);
  return static_cast<uint32_t>(p);
}

NCSN_HD U4 philox4x32_10(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0, uint32_t k1) {
  for (int round = 0; round < 10; ++round) {
    uint32_t hi0, hi1;
    const uint32_t lo0 = mulhilo(0xD2511F53u, c0, &hi0);
    const uint32_t lo1 = mulhilo(0xCD9E8D57u, c2, &hi1);
    const uint32_t n0 = hi1 ^ c1 ^ k0, n2 = hi0 ^ c3 ^ k1;
    c0 = n0;
    c1 = lo1;
    c2 = n2;
    c3 = lo0;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return U4{{c0, c1, c2, c3}};
}

// ((x >> 8) + 0.5) / 2^24 in float: never 0 (safe for ln); exact below 1/2, rounded to even above (see the top).
NCSN_HD float to_uniform(uint32_t x) { return (static_cast<float>(x >> 8) + 0.5f) * 5.9604644775390625e-8f; }

// ln(u) for u in (0, 1]: u = m 2^e with m in [sqrt(1/2), sqrt(2)), ln m = 2 atanh(s), s = (m - 1)/(m + 1),
// |s| < 0.1716, series to s^13 (truncation < 2e-11).
NCSN_HD float log_unit(float u) {
  const uint32_t bits = bits_of(u);
  int e = static_cast<int>((bits >> 23) & 0xff) - 127;
  float m = float_of((bits & 0x007fffffu) | 0x3f800000u);  // mantissa in [1, 2)
  const bool big = m > 1.41421356f;
  m = big ? 0.5f * m : m;
  e = big ? e + 1 : e;
  const float s = (m - 1.0f) / (m + 1.0f), s2 = s * s;
  const float series =
      1.0f + s2 * (1.0f / 3 + s2 * (1.0f / 5 + s2 * (1.0f / 7 + s2 * (1.0f / 9 + s2 * (1.0f / 11 + s2 * (1.0f / 13))))));
  return static_cast<float>(e) * 0.693147180559945f + 2.0f * s * series;
}

// cos(2 pi v) and sin(2 pi v) for v in [0, 1): the quadrant from 4v (exact), then Taylor polynomials on
// |phi| <= pi/4 (truncation < 4e-9).
NCSN_HD void sincos_2pi(float v, float* c, float* s) {
  const float t = 4.0f * v;                          // exact
  const float q = static_cast<float>(static_cast<int>(t + 0.5f));  // nearest quadrant 0..4
  const float phi = (t - q) * 1.57079632679490f;     // in [-pi/4, pi/4]
  const float p2 = phi * phi;
  const float sp = phi * (1.0f + p2 * (-1.0f / 6 + p2 * (1.0f / 120 + p2 * (-1.0f / 5040 + p2 * (1.0f / 362880)))));
  const float cp = 1.0f + p2 * (-0.5f + p2 * (1.0f / 24 + p2 * (-1.0f / 720 + p2 * (1.0f / 40320))));
  const int k = static_cast<int>(q) & 3;  // angle = k pi/2 + phi
  *c = k == 0 ? cp : k == 1 ? -sp : k == 2 ? -cp : sp;
  *s = k == 0 ? sp : k == 1 ? cp : k == 2 ? -sp : -cp;
}

// Box-Muller on two Philox outputs.
NCSN_HD void box_muller(uint32_t ra, uint32_t rb, float* za, float* zb) {
  const float rad = sqrtf(-2.0f * log_unit(to_uniform(ra)));
  float c, s;
  sincos_2pi(to_uniform(rb), &c, &s);
  *za = rad * c;
  *zb = rad * s;
}

// The four standard normals of group g (elements 4g .. 4g + 3) for (seed, offset).
NCSN_HD void normal4(uint64_t seed, uint64_t offset, uint64_t g, float* z0, float* z1, float* z2, float* z3) {
  const U4 r = philox4x32_10(static_cast<uint32_t>(g), static_cast<uint32_t>(g >> 32), static_cast<uint32_t>(offset),
                             static_cast<uint32_t>(offset >> 32), static_cast<uint32_t>(seed),
                             static_cast<uint32_t>(seed >> 32));
  box_muller(r.x[0], r.x[1], z0, z1);
  box_muller(r.x[2], r.x[3], z2, z3);
}

}  // namespace philox
}  // namespace ncsn_fast
