// Raw-pointer loops of the CPU Langevin step, included twice by langevin_step.cpp (generic and AVX2+FMA, namespace
// NCSN_NS), like instance_norm_pp_elu_impl.h. No include guard on purpose.
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

// x += a s + b z over n elements; sums += (sum s^2, sum z^2, sum x_new^2).
template <typename S>
void update(float* __restrict x, const S* __restrict s, const float* __restrict z, int64_t n, float a, float b,
            double* sums) {
  float ss = 0, zz = 0, xx = 0;
#pragma omp simd reduction(+ : ss, zz, xx)
  for (int64_t i = 0; i < n; ++i) {
    const float sv = static_cast<float>(s[i]);
    const float xv = x[i] + a * sv + b * z[i];
    x[i] = xv;
    ss += sv * sv;
    zz += z[i] * z[i];
    xx += xv * xv;
  }
  sums[0] += ss;
  sums[1] += zz;
  sums[2] += xx;
}

}  // namespace NCSN_NS
