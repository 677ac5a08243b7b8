// C++ tests of the CPU kernels, run by ctest (CMakeLists.txt). The truth is independent of the kernels:
// InstanceNorm++ written as a naive loop in double precision, and central finite differences for the backward.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include "../../csrc/philox.h"

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

// Philox4x32-10 against Random123's known answers (../shared/reference/README.md).
void test_philox_known_answers() {
  struct Case {
    uint32_t c[4], k[2], want[4];
  };
  const Case cases[] = {
      {{0, 0, 0, 0}, {0, 0}, {0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}},
      {{0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff},
       {0xffffffff, 0xffffffff},
       {0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}},
      {{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344},
       {0xa4093822, 0x299f31d0},
       {0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}},
  };
  int wrong = 0;
  for (const Case& t : cases) {
    const auto r = ncsn_fast::philox::philox4x32_10(t.c[0], t.c[1], t.c[2], t.c[3], t.k[0], t.k[1]);
    for (int j = 0; j < 4; ++j) wrong += r.x[j] != t.want[j];
  }
  check(wrong == 0, "Philox4x32-10 known answers (wrong words)", wrong, 0);
}

// The Langevin op: z = (x_new - x - s/2) with step 1/2, against Box-Muller in double with libm's log/cos/sin on
// the same Philox words (checks the polynomial ln/sin/cos and the counter layout of philox.h).
void test_langevin_noise() {
  const int64_t n = 3, d = 37;  // 37: samples split Philox groups
  const at::Tensor x = at::randn({n, d}), s = at::randn({n, d});
  at::Tensor out = x.clone();
  using Step = void(const at::Tensor&, const at::Tensor&, double, int64_t, int64_t, const std::optional<at::Tensor>&);
  c10::Dispatcher::singleton().findSchemaOrThrow("ncsn_fast::langevin_step_", "").typed<Step>().call(
      out, s, 0.5, 987654321, 42, std::nullopt);
  const at::Tensor z = (out - x - 0.5 * s).contiguous();
  double worst = 0;
  for (int64_t i = 0; i < n * d; ++i) {
    const uint64_t g = i / 4;
    const auto r = ncsn_fast::philox::philox4x32_10(static_cast<uint32_t>(g), static_cast<uint32_t>(g >> 32), 42, 0,
                                                    987654321u, 0);
    const int lane = i % 4, a = lane < 2 ? 0 : 2;
    const double u1 = ((r.x[a] >> 8) + 0.5) / 16777216.0, u2 = ((r.x[a + 1] >> 8) + 0.5) / 16777216.0;
    const double rad = std::sqrt(-2 * std::log(u1)), th = 2 * M_PI * u2;
    const double want = lane % 2 == 0 ? rad * std::cos(th) : rad * std::sin(th);
    worst = std::max(worst, std::abs(z.data_ptr<float>()[i] - want));
  }
  check(worst <= 2e-6, "langevin_step_ noise vs libm Box-Muller (max abs)", worst, 2e-6);
}

// sde_step_ runs langevin_step_'s kernel: (c, a, b) = (1, alpha, sqrt(2 alpha)) gives the same x bit for bit;
// (0, 0, 1) leaves x = z exactly (0 x + 0 d + z), the z that langevin_step_ with step 1/2 adds; b = 0 adds no
// noise. 37 elements per sample: samples split Philox groups.
void test_sde_step() {
  const int64_t n = 3, d = 37;
  const at::Tensor x = at::randn({n, d}), s = at::randn({n, d});
  using Lang = void(const at::Tensor&, const at::Tensor&, double, int64_t, int64_t, const std::optional<at::Tensor>&);
  using Sde = void(const at::Tensor&, const at::Tensor&, double, double, double, int64_t, int64_t,
                   const std::optional<at::Tensor>&);
  const auto lang = c10::Dispatcher::singleton().findSchemaOrThrow("ncsn_fast::langevin_step_", "").typed<Lang>();
  const auto sde = c10::Dispatcher::singleton().findSchemaOrThrow("ncsn_fast::sde_step_", "").typed<Sde>();
  const double alpha = 0.0137;
  at::Tensor by_lang = x.clone(), by_sde = x.clone();
  lang.call(by_lang, s, alpha, 987654321, 42, std::nullopt);
  sde.call(by_sde, s, 1.0, alpha, std::sqrt(2 * alpha), 987654321, 42, std::nullopt);
  const int64_t differ = by_lang.ne(by_sde).sum().item<int64_t>();
  check(differ == 0, "sde_step_ (1, a, sqrt(2a)) vs langevin_step_: differing", differ, 0);
  at::Tensor z = x.clone(), half = x.clone();
  sde.call(z, s, 0.0, 0.0, 1.0, 987654321, 42, std::nullopt);
  lang.call(half, s, 0.5, 987654321, 42, std::nullopt);
  const double worst = (half - x - 0.5 * s - z).abs().max().item<double>();
  check(worst <= 2e-6, "sde_step_(0, 0, 1) = z of langevin_step_ (max abs, rounding)", worst, 2e-6);
  at::Tensor drift_only = x.clone();
  sde.call(drift_only, s, 0.7, -0.4, 0.0, 987654321, 42, std::nullopt);
  const double off = (drift_only - (0.7 * x - 0.4 * s)).abs().max().item<double>();
  check(off <= 1e-6, "sde_step_(0.7, -0.4, 0) = 0.7 x - 0.4 s (max abs)", off, 1e-6);
}

}  // namespace

int main() {
  test_philox_known_answers();
  test_langevin_noise();
  test_sde_step();
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
