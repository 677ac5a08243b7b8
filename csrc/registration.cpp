// The one TORCH_LIBRARY block of ncsn_fast: every op schema, defined once. Implementations register per device
// (csrc/cpu/*.cpp: CPU, csrc/cuda/*.cu: CUDA); fake (meta) kernels and autograd are registered from Python
// (ncsn_fast/ops/*.py). Importing ncsn_fast._C loads this library; it has no Python bindings of its own.
#include <torch/library.h>
#include <torch/version.h>

#include <string>

#include "build_info.h"

#ifndef NCSN_FAST_NO_PYTHON  // the CMake build (C++ tests) has no Python module
#include <Python.h>

extern "C" {
// An empty module: `import ncsn_fast._C` only needs to dlopen the library so that the registrations run.
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
}
#endif

namespace ncsn_fast {

BuildFacts& build_facts() {
  static BuildFacts facts;  // a function-local static: initialised before the first fact registers itself
  return facts;
}

namespace {

#define NCSN_STR2(x) #x
#define NCSN_STR(x) NCSN_STR2(x)

const BuildFact torch_fact("torch", [] {
  return std::string(NCSN_STR(TORCH_VERSION_MAJOR) "." NCSN_STR(TORCH_VERSION_MINOR) "." NCSN_STR(TORCH_VERSION_PATCH));
});
const BuildFact compiler_fact("compiler", [] {
#if defined(__clang__)
  return std::string("clang ") + __clang_version__;
#elif defined(__GNUC__)
  return std::string("gcc ") + __VERSION__;
#else
  return std::string("unknown");
#endif
});
const BuildFact openmp_fact("openmp", [] {
#ifdef _OPENMP
  return std::string(NCSN_STR(_OPENMP));
#else
  return std::string("no");
#endif
});

// "key: value" lines, one per fact.
std::string build_info() {
  std::string out;
  for (const auto& [key, value] : build_facts()) out += key + ": " + value() + "\n";
  return out;
}

}  // namespace
}  // namespace ncsn_fast

TORCH_LIBRARY(ncsn_fast, m) {
  // How this library was built and which code paths it takes here ("key: value" lines): compiler, torch, OpenMP,
  // the CPU instruction set each kernel chose at run time, the CUDA architectures compiled (ncsn-fast doctor).
  m.def("build_info() -> str", &ncsn_fast::build_info);
  // InstanceNorm++ then ELU (apply_elu) in one statistics pass and one apply pass. Returns the output and, for the
  // backward, the per-(n, c) spatial mean and 1/sqrt(var + eps) in float32 (float64 for float64 inputs).
  m.def(
      "instance_norm_pp_elu(Tensor x, Tensor alpha, Tensor gamma, Tensor? beta, float eps, bool apply_elu)"
      " -> (Tensor out, Tensor mean, Tensor rstd)");
  // Gradients for x, alpha, gamma, beta (beta's has gamma's shape; ignore it when there is no beta).
  m.def(
      "instance_norm_pp_elu_backward(Tensor grad_out, Tensor out, Tensor x, Tensor mean, Tensor rstd, Tensor alpha,"
      " Tensor gamma, float eps, bool apply_elu) -> (Tensor grad_x, Tensor grad_alpha, Tensor grad_gamma,"
      " Tensor grad_beta)");
  // One Langevin update in place, x <- x + step_size * score + sqrt(2 step_size) * z, z ~ N(0, I) from
  // Philox4x32-10 keyed by seed at counter (element group, offset) (csrc/philox.h); x float32, score float32 or
  // bf16/fp16; stats, when given, receives per sample (sum score^2, sum z^2, sum x^2 after the update).
  m.def("langevin_step_(Tensor(a!) x, Tensor score, float step_size, int seed, int offset, Tensor(b!)? stats) -> ()");
  // The general stochastic update in place, x <- c x + a drift + b z, z drawn exactly as langevin_step_ draws it
  // (langevin_step_ is the case (c, a, b) = (1, step_size, sqrt(2 step_size)); both share one kernel per device).
  // x float32, drift float32 or bf16/fp16, c, a, b finite; stats, when given, receives per sample (sum drift^2,
  // sum z^2, sum x^2 after the update); sum z^2 reports the drawn z also when b = 0.
  m.def(
      "sde_step_(Tensor(a!) x, Tensor drift, float c, float a, float b, int seed, int offset, Tensor(b!)? stats)"
      " -> ()");
}
