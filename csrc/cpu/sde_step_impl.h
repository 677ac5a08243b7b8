// Raw-pointer loops of the CPU SDE step (sde_step_, and langevin_step_ as its (1, alpha, sqrt(2 alpha)) case),
// included three times by sde_step.cpp (generic, AVX2+FMA, AVX-512; namespace NCSN_NS, NCSN_FMA 0 or 1), like
// instance_norm_pp_elu_impl.h. No include guard on purpose.
namespace NCSN_NS {

// The normals of groups g0 .. g0 + ngroups - 1 into z[4 * k + lane] (philox.h has the counter layout).
inline void fill_normals(uint64_t seed, uint64_t offset, uint64_t g0, int64_t ngroups, float* __restrict z) {
#pragma omp simd
  for (int64_t k = 0; k < ngroups; ++k) {
    float v0, v1, v2, v3;
    ncsn_fast::philox::normal4(seed, offset, g0 + static_cast<uint64_t>(k), &v0, &v1, &v2, &v3);
    z[4 * k] = v0;
    z[4 * k + 1] = v1;
    z[4 * k + 2] = v2;
    z[4 * k + 3] = v3;
  }
}

// x = c x + a d + b z over n elements; sums += (sum d^2, sum z^2, sum x_new^2).
// In the FMA variants (NCSN_FMA = 1, set by the includer: GCC does not define __FMA__ under a target pragma) the
// update is spelled fma(b, z, fma(a, d, c x)). GCC contracts the former Langevin update x + a s + b z (C++ is not
// held to -ffp-contract=off in ISO mode) to fma(b, z, fma(a, s, x)); with c x in x's place and c = 1 (c x is x
// exactly) the spelled-out form rounds the same, bit for bit, where c x + a d left to the compiler becomes
// fma(c, x, a d). It is also the CUDA and Triton kernels' formula. Without FMA: multiplies and adds, left to right.
template <typename D>
void update(float* __restrict x, const D* __restrict d, const float* __restrict z, int64_t n, float c, float a,
            float b, double* sums) {
  float dd = 0, zz = 0, xx = 0;
#pragma omp simd reduction(+ : dd, zz, xx)
  for (int64_t i = 0; i < n; ++i) {
    const float dv = static_cast<float>(d[i]);
#if NCSN_FMA
    const float xv = __builtin_fmaf(b, z[i], __builtin_fmaf(a, dv, c * x[i]));
#else
    const float xv = c * x[i] + a * dv + b * z[i];
#endif
    x[i] = xv;
    dd += dv * dv;
    zz += z[i] * z[i];
    xx += xv * xv;
  }
  sums[0] += dd;
  sums[1] += zz;
  sums[2] += xx;
}

}  // namespace NCSN_NS
