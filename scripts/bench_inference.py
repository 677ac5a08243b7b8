"""Eager vs compiled (jit) vs AOT package on the bundled digits model: ms per call (median), first-call costs.

    OMP_NUM_THREADS=2 python scripts/bench_inference.py --batch 36 --precision fp32 --repeats 20
    python scripts/bench_inference.py --device cuda --precision fp32,bf16 --cuda-graphs   # benchmarks/gpu_check.sh

Modes: eager, jit (Inductor + freezing), aot (a package per batch size, what ``inference_network`` builds), the
same two with ``-lowered`` (``lower_norm=True``: Inductor lowers InstanceNorm++ + ELU instead of calling the fused
kernel) and aot_dynamic (one package for every batch size: off in the library, its scores are checked here too).
Calls of the paths are interleaved (a shared machine's load falls on all alike); each row gives its relative error
against eager in the same precision. The AOT cache is a fresh temporary folder (the first call compiles), then a
second network loads the package from it (the cache-load time). ``--cuda-graphs`` adds each mode replayed from a
CUDA graph (``runtime.GraphedNetwork``, as ``ncsn-fast sample --cuda-graphs`` runs it). One block per precision,
printed as soon as it is measured (a run cut short keeps what finished).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

MODES = ("eager", "jit", "aot", "jit-lowered", "aot-lowered", "aot_dynamic")


def build(model, precision: str, mode: str, device: torch.device, cache: str):
    from ncsn_fast.inference import inference_network

    compile_ = {"eager": False, "aot_dynamic": "aot"}.get(mode, mode.removesuffix("-lowered"))
    net = inference_network(model, precision, compile_, device, cache_dir=cache, lower_norm=mode.endswith("-lowered"))
    net.dynamic_batch = mode == "aot_dynamic"
    return net


def block(model, precision: str, modes: list[str], x, sigma, args) -> None:
    from ncsn_fast.sampling.runtime import GraphedNetwork

    device = x.device
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    nets, lines = {}, {}
    with tempfile.TemporaryDirectory() as cache, torch.no_grad():
        for mode in modes:  # first calls: compile (jit), compile and write the package (aot)
            t0 = time.perf_counter()
            nets[mode] = build(model, precision, mode, device, cache)
            out = nets[mode].score(x, sigma)
            sync()
            first = time.perf_counter() - t0
            if mode == modes[0]:
                ref = out
            err = float((out - ref).norm() / ref.norm())
            lines[mode] = f"first call {first:7.2f} s, rel err vs {modes[0]} {err:.2e}"
            if mode.startswith("aot"):
                t0 = time.perf_counter()
                again = build(model, precision, mode, device, cache)
                again._fns[(again._shape(x), x.device)] = again._package(x, None)  # what its first call does first
                load = time.perf_counter() - t0
                assert again.loads == 1 and again.compiles == 0
                lines[mode] += f", from the cache: load {load:.3f} s"
        if args.cuda_graphs:
            for mode in list(nets):
                graphed = GraphedNetwork(nets[mode].score, device)
                graphed(x, sigma)
                nets[f"{mode}+graphs"] = graphed
                lines[f"{mode}+graphs"] = f"captures {graphed.captures}" + (
                    f", CAPTURE FAILED ({graphed.fallback})" if graphed.fallback else ""
                )
        calls = {m: net if isinstance(net, GraphedNetwork) else net.score for m, net in nets.items()}
        times: dict[str, list[float]] = {m: [] for m in nets}
        for _ in range(args.repeats):  # interleaved: a shared machine's load falls on every path alike
            for mode, score in calls.items():
                sync()
                t = time.perf_counter()
                score(x, sigma)
                sync()
                times[mode].append(time.perf_counter() - t)
    base = statistics.median(times[modes[0]])
    for mode, ts in times.items():
        med = statistics.median(ts)
        print(
            f"{precision:5s} {mode:20s} {1e3 * med:8.3f} ms/call ({base / med:5.2f}x {modes[0]}; median of "
            f"{args.repeats}, interleaved), {lines[mode]}",
            flush=True,
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=36)
    ap.add_argument("--precision", default="fp32", help="one or more of fp32, bf16, fp16, comma-separated")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--modes", default="eager,jit,aot", help=f"comma-separated, the first the baseline; of {MODES}")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--cuda-graphs", action="store_true", help="also each mode replayed from a CUDA graph")
    args = ap.parse_args()
    modes = args.modes.split(",")
    if unknown := [m for m in modes if m not in MODES]:
        ap.error(f"--modes: unknown {unknown}; choose from {MODES}")
    from ncsn_fast.pretrained import load_pretrained

    device = torch.device(args.device)
    model, cfg = load_pretrained("digits")
    model = model.to(device).eval().requires_grad_(False)
    g = torch.Generator().manual_seed(0)
    size = cfg.data.image_size
    x = torch.rand(args.batch, cfg.data.channels, size, size, generator=g).to(device)
    x = x.contiguous(memory_format=torch.channels_last)  # the layout generate.py samples in
    sigma = torch.full((args.batch,), 0.5, device=device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else torch.backends.cpu.get_cpu_capability()
    print(f"digits NCSNv2, batch {args.batch}, {where}, threads {torch.get_num_threads()}", flush=True)
    for precision in args.precision.split(","):
        block(model, precision, modes, x, sigma, args)


if __name__ == "__main__":
    main()
