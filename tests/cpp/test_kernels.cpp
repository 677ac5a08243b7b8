// C++ tests of the CPU kernels, run by ctest (CMakeLists.txt). The truth is independent of the kernels:
// InstanceNorm++ written as a naive loop in double precision, and central finite differences for the backward.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <cmath>
#include <cstdio>
#include <tuple>
#include <vector>

namespace {

int failures = 0;

void check(bool ok, const char* what, double value, double bound) {
  std::printf("%-60s %.3e (bound %.1e) %s\n", what, value, bound, ok ? "ok" : "FAIL");
  if (!ok) ++failures;
}

using Forward = std::tuple<at::Tensor, at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&,
                                                               const at::Tensor&, const std::optional<at::Tensor>&,
                                                               double, bool);
using Backward = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>(
    const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
    const at::Tensor&, double, bool);

auto forward_op() {
  return c10::Dispatcher::singleton().findSchemaOrThrow("ncsn_fast::instance_norm_pp_elu", "").typed<Forward>();
}
auto backward_op() {
  return c10::Dispatcher::singleton()
      .findSchemaOrThrow("ncsn_fast::instance_norm_pp_elu_backward", "")
      .typed<Backward>();
}

// Naive InstanceNorm++ (+ ELU), double precision, NCHW, parameters (C,).
std::vector<double> naive(const at::Tensor& x_in, const at::Tensor& a_in, const at::Tensor& g_in,
                          const at::Tensor& b_in, double eps, bool elu) {
  const at::Tensor x = x_in.to(at::kDouble).contiguous();
  const at::Tensor a = a_in.to(at::kDouble), g = g_in.to(at::kDouble), b = b_in.to(at::kDouble);
  const int64_t N = x.size(0), C = x.size(1), HW = x.size(2) * x.size(3);
  const double* xp = x.data_ptr<double>();
  std::vector<double> out(N * C * HW);
  for (int64_t n = 0; n < N; ++n) {
    std::vector<double> mu(C), var(C);
    for (int64_t c = 0; c < C; ++c) {
      double s = 0, ss = 0;
      for (int64_t i = 0; i < HW; ++i) s += xp[(n * C + c) * HW + i];
      mu[c] = s / HW;
      for (int64_t i = 0; i < HW; ++i) ss += std::pow(xp[(n * C + c) * HW + i] - mu[c], 2);
      var[c] = ss / HW;
    }
    double m = 0, v = 0;
    for (double u : mu) m += u;
    m /= C;
    for (double u : mu) v += (u - m) * (u - m);
    v /= (C - 1);  // unbiased, as torch.var in the official code
    for (int64_t c = 0; c < C; ++c)
      for (int64_t i = 0; i < HW; ++i) {
        const int64_t k = (n * C + c) * HW + i;
        const double h = (xp[k] - mu[c]) / std::sqrt(var[c] + eps) +
                         a[c].item<double>() * (mu[c] - m) / std::sqrt(v + eps);
        const double z = g[c].item<double>() * h + b[c].item<double>();
        out[k] = elu ? (z > 0 ? z : std::expm1(z)) : z;
      }
  }
  return out;
}

double max_rel(const at::Tensor& got_in, const std::vector<double>& want) {
  const at::Tensor got = got_in.to(at::kDouble).contiguous();
  const double* p = got.data_ptr<double>();
  double num = 0, den = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    num += (p[i] - want[i]) * (p[i] - want[i]);
    den += want[i] * want[i];
  }
  return std::sqrt(num / den);
}

void test_forward(at::ScalarType dtype, bool channels_last, bool elu, int64_t n, int64_t c, int64_t h, int64_t w) {
  const auto opts = at::TensorOptions().dtype(dtype);
  at::Tensor x = at::randn({n, c, h, w}, opts) * 2 + at::randn({1, c, 1, 1}, opts);
  const at::Tensor a = at::randn({c}, opts), g = at::randn({c}, opts), b = at::randn({c}, opts);
  const std::vector<double> want = naive(x, a, g, b, 1e-5, elu);
  if (channels_last) x = x.contiguous(at::MemoryFormat::ChannelsLast);
  const at::Tensor out = std::get<0>(forward_op().call(x, a, g, b, 1e-5, elu));
  char what[160];
  std::snprintf(what, sizeof what, "forward %s %s elu=%d (%lld,%lld,%lld,%lld)",
                dtype == at::kDouble ? "f64" : "f32", channels_last ? "NHWC" : "NCHW", elu, (long long)n,
                (long long)c, (long long)h, (long long)w);
  const double bound = dtype == at::kDouble ? 1e-12 : 1e-5;
  const double err = max_rel(out, want);
  check(err <= bound, what, err, bound);
}

// Directional derivative of L = sum(w * y) along random directions, against central differences in double.
void test_backward(bool channels_last, bool elu) {
  const auto opts = at::TensorOptions().dtype(at::kDouble);
  const int64_t n = 2, c = 5, h = 4, w = 3;
  at::Tensor x = at::randn({n, c, h, w}, opts);
  if (channels_last) x = x.contiguous(at::MemoryFormat::ChannelsLast);
  const at::Tensor a = at::randn({c}, opts), g = at::randn({c}, opts), b = at::randn({c}, opts);
  const at::Tensor wt = at::randn({n, c, h, w}, opts);
  auto loss = [&](const at::Tensor& xx, const at::Tensor& aa, const at::Tensor& gg, const at::Tensor& bb) {
    return (std::get<0>(forward_op().call(xx, aa, gg, bb, 1e-5, elu)) * wt).sum().item<double>();
  };
  auto [y, mean, rstd] = forward_op().call(x, a, g, b, 1e-5, elu);
  auto [dx, da, dg, db] = backward_op().call(wt, y, x, mean, rstd, a, g, 1e-5, elu);
  const double eps = 1e-6;
  const at::Tensor vx = at::randn_like(x), va = at::randn_like(a), vg = at::randn_like(g), vb = at::randn_like(b);
  const double fd = (loss(x + eps * vx, a + eps * va, g + eps * vg, b + eps * vb) -
                     loss(x - eps * vx, a - eps * va, g - eps * vg, b - eps * vb)) /
                    (2 * eps);
  const double an = (dx * vx).sum().item<double>() + (da * va).sum().item<double>() +
                    (dg * vg).sum().item<double>() + (db * vb).sum().item<double>();
  char what[160];
  std::snprintf(what, sizeof what, "backward f64 %s elu=%d: directional derivative vs central difference",
                channels_last ? "NHWC" : "NCHW", elu);
  const double err = std::abs(fd - an) / std::max(1.0, std::abs(fd));
  check(err <= 1e-6, what, err, 1e-6);
}

}  // namespace

int main() {
  at::manual_seed(1234);
  for (bool cl : {false, true})
    for (bool elu : {true, false}) {
      test_forward(at::kFloat, cl, elu, 2, 7, 33, 33);
      test_forward(at::kFloat, cl, elu, 1, 3, 5, 9);
      test_forward(at::kFloat, cl, elu, 16, 64, 8, 8);  // one sample per task (N >= threads)
      test_forward(at::kDouble, cl, elu, 3, 4, 1, 1);
      test_backward(cl, elu);
    }
  std::printf("%s (%d failure%s)\n", failures ? "FAILED" : "PASSED", failures, failures == 1 ? "" : "s");
  return failures ? 1 : 0;
}
