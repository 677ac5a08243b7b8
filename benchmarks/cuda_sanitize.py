"""Both CUDA ops, forward and backward, on small odd shapes: the workload gpu_check.sh runs under
``compute-sanitizer --tool memcheck`` and ``--tool racecheck`` (out-of-bounds and misaligned accesses, shared-memory
races in the block reductions). Every dtype and layout the kernels dispatch on, (C,) and (N, C) parameters, C not
a multiple of the 32-channel tiles, H·W of 1 and not a multiple of the block, numel not a multiple of 4 (Philox
groups). Prints one line per case and a relative error against the CPU/reference result (a sanity check, not the
tolerance tests: those are `pytest -m cuda` and `ncsn-fast doctor`). Exit 1 when a GPU is there but ncsn_fast._C
has no CUDA kernels (a CPU-only build), 2 without a GPU (nothing checked).

    export PYTORCH_NO_CUDA_MEMORY_CACHING=1  # every tensor its own allocation: overruns are seen
    compute-sanitizer --tool memcheck --error-exitcode 1 python benchmarks/cuda_sanitize.py
"""

from __future__ import annotations

import sys

import torch


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double().cpu() - b.double().cpu()).norm() / b.double().cpu().norm().clamp_min(1e-30))


def main() -> int:
    from ncsn_fast.ops import _backend, instance_norm_pp_elu, langevin_step_, reference, sde_step_

    if not torch.cuda.is_available():
        print("cuda_sanitize: no CUDA GPU; nothing was checked")
        return 2
    missing = _backend.missing_cuda_kernels()
    if missing:  # a GPU but a CPU-only _C: nothing below would run a .cu kernel, so this is a failure, not a pass
        print(f"cuda_sanitize: FAILED: a CUDA GPU but no CUDA kernel in ncsn_fast._C for {', '.join(missing)}")
        return 1
    dev = "cuda"
    torch.manual_seed(0)
    worst = 0.0
    # (1, 33, 40, 37): channels-last H·W split into several chunks, the last one short (launch_config.h)
    for shape in [(3, 7, 5, 9), (2, 33, 1, 1), (1, 65, 17, 3), (1, 33, 40, 37)]:
        n, c = shape[:2]
        for dtype in (torch.float32, torch.bfloat16, torch.float16, torch.float64):
            for channels_last in (False, True):
                for pshape in ((c,), (n, c)):
                    x = torch.randn(shape, device=dev, dtype=dtype)
                    if channels_last:
                        x = x.contiguous(memory_format=torch.channels_last)
                    params = [torch.randn(pshape, device=dev, dtype=dtype) * 0.3 + 1 for _ in range(3)]
                    ins = [x.requires_grad_()] + [p.requires_grad_() for p in params]
                    out = instance_norm_pp_elu(*ins, backend="cuda")
                    dy = torch.randn_like(out)
                    grads = torch.autograd.grad(out, ins, dy)
                    truth_in = [t.detach().double().cpu().requires_grad_() for t in ins]
                    truth = reference.instance_norm_pp_elu(*truth_in, 1e-5, apply_elu=True)
                    truth_grads = torch.autograd.grad(truth, truth_in, dy.double().cpu())
                    err = max([rel(out, truth)] + [rel(g, t) for g, t in zip(grads, truth_grads, strict=True)])
                    worst = max(worst, err if dtype in (torch.float32, torch.float64) else 0.0)
                    print(f"instance_norm_pp_elu {tuple(shape)} {dtype} cl={channels_last} params={pshape}: {err:.1e}")
    for shape in [(3, 3, 9, 11), (1, 5, 7, 7), (2, 1, 1, 1)]:
        for dtype in (torch.float32, torch.bfloat16, torch.float16):
            x = torch.randn(shape, device=dev)
            drift = torch.randn(shape, device=dev, dtype=dtype)
            stats = torch.empty(shape[0], 3, device=dev)
            want = x.clone().cpu()
            reference.sde_step_(want, drift.cpu(), 0.9, 0.1, 0.3, 5, 7)
            out = sde_step_(x.clone(), drift, 0.9, 0.1, 0.3, 5, 7, stats, backend="cuda")
            lang = langevin_step_(x.clone(), drift, 0.01, 5, 8, stats, backend="cuda")
            err = rel(out, want)
            worst = max(worst, err)
            finite = bool(lang.isfinite().all())
            print(f"sde_step_/langevin_step_ {tuple(shape)} drift {dtype}: {err:.1e} (langevin finite: {finite})")
    torch.cuda.synchronize()
    print(f"cuda_sanitize: done; worst fp32/fp64 relative error {worst:.1e}")
    return 0 if worst < 1e-4 else 1


if __name__ == "__main__":
    sys.exit(main())
