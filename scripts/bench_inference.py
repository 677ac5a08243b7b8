"""Eager vs compiled (jit) vs AOT package on the bundled digits model: ms per call (median), first-call costs.

    OMP_NUM_THREADS=2 python scripts/bench_inference.py --batch 36 --precision fp32 --repeats 20

Calls of the paths are interleaved (a shared machine's load falls on all alike); the AOT cache is a fresh temporary
folder (the first call compiles), then a second InferenceNetwork loads the package from it (the cache-load time).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=36)
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--modes", default="eager,jit,aot", help="of eager, jit, aot, aot_static (a fixed batch size)")
    args = ap.parse_args()
    from ncsn_fast.inference import inference_network
    from ncsn_fast.pretrained import load_pretrained

    model, cfg = load_pretrained("digits")
    model.eval().requires_grad_(False)
    g = torch.Generator().manual_seed(0)
    size = cfg.data.image_size
    x = torch.rand(args.batch, cfg.data.channels, size, size, generator=g).contiguous(memory_format=torch.channels_last)
    sigma = torch.full((args.batch,), 0.5)
    ref = None
    print(
        f"digits NCSNv2, batch {args.batch}, {args.precision}, threads {torch.get_num_threads()}, "
        f"ISA {torch.backends.cpu.get_cpu_capability()}"
    )
    modes = args.modes.split(",")
    nets, first, lines = {}, {}, {}
    with tempfile.TemporaryDirectory() as cache, torch.no_grad():
        for mode in modes:  # first calls: compile (jit), compile and write the package (aot)
            t0 = time.perf_counter()
            compile_ = {"eager": False, "aot_static": "aot"}.get(mode, mode)
            nets[mode] = inference_network(model, args.precision, compile_, cache_dir=cache)
            nets[mode].dynamic_batch = mode != "aot_static"  # aot_static: a package for this batch size only
            out = nets[mode].score(x, sigma)
            first[mode] = time.perf_counter() - t0
            ref = out if ref is None else ref
            lines[mode] = (
                f"first call {first[mode]:7.2f} s, rel err vs {modes[0]} {float((out - ref).norm() / ref.norm()):.2e}"
            )
            if mode == "aot":
                t0 = time.perf_counter()
                again = inference_network(model, args.precision, "aot", cache_dir=cache)
                again._fns[(tuple(x.shape), x.device)] = again._package(x, None)  # what its first call does first
                load = time.perf_counter() - t0
                again.score(x, sigma)
                lines[mode] += (
                    f", from the cache: load {load:.3f} s, load + first call {time.perf_counter() - t0:.3f} s"
                )
        times: dict[str, list[float]] = {m: [] for m in modes}
        for _ in range(args.repeats):  # interleaved: a shared machine's load falls on every path alike
            for mode in modes:
                t = time.perf_counter()
                nets[mode].score(x, sigma)
                times[mode].append(time.perf_counter() - t)
    for mode in modes:
        med = 1e3 * statistics.median(times[mode])
        print(f"{mode:6s} {med:8.2f} ms/call (median of {args.repeats}, interleaved), {lines[mode]}", flush=True)


if __name__ == "__main__":
    main()
