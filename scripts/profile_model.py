"""Where a network forward's time goes, per op class (torch.profiler self times), for each provider: ms per image.

python scripts/profile_model.py [--config cifar10] [--ngf N] [--batch 8] [--rounds 5] [--iters 2] [--providers a,b,...]

Providers (NCSNv2 of the config; ours = the fused ops):
  official-fp32   the official computation (``use_backend("reference")``), NCHW, float32
  fp32            ours, channels-last, float32
  bf16-autocast   ours, channels-last, float32 weights under ``torch.autocast`` (weights re-cast on every call)
  bf16-weights    ours, ``precision.half_network``: bf16 weights converted once, channels-last
  bf16-compiled   bf16-weights under ``torch.compile`` with Inductor ``freezing`` (weights folded and prepacked)
  fp32-compiled   fp32 under ``torch.compile`` with ``freezing``

Op classes: an event counts to the class of its outermost ancestor that is a compute op of one (so im2col copies
inside a slow convolution count as convolution), else to its own: conv · norm (InstanceNorm++ modules with the
ELU that follows them: the fused op, or all of the official computation's ops inside the module) · ELU (unfused:
the RefineBlocks') · pooling · upsampling · elementwise (residual adds, the mean-pool sums, Technique 3's
division) · casts/copies/reorders (autocast's weight casts) · Inductor fused kernels · other.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import time

import torch
from torch.profiler import ProfilerActivity, profile

import ncsn_fast as nf
from ncsn_fast.ops._backend import use_backend
from ncsn_fast.precision import half_network

CLASSES = ["conv", "norm", "ELU", "pooling", "upsampling", "elementwise", "casts/copies", "Inductor fused", "other"]
_COMPUTE = [  # (pattern on the op name, class): the first that matches an ancestor or the event itself wins
    (r"conv", "conv"),
    (r"instance_norm_pp_elu|ncsn::norm", "norm"),
    (r"aten::elu", "ELU"),
    (r"pool", "pooling"),
    (r"upsample|interpolate|grid_sampler", "upsampling"),
    (r"cpp_fused|triton_|graph_\d+|CompiledFunction", "Inductor fused"),
]
_COPY = r"aten::(to|_to_copy|copy_|clone|contiguous|empty_like|_reshape_alias)$|reorder|to_dense|to_mkldnn"
_ELEMENTWISE = r"aten::(add|add_|mul|mul_|div|div_|sub|sub_|rsub|neg|where|slice|select|view|expand|index)\b"


def op_class(name: str) -> str | None:
    for pattern, cls in _COMPUTE:
        if re.search(pattern, name):
            return cls
    return None


# Ops inside which a copy is part of the computation (im2col of a slow convolution, a kernel's layout copy)
_INSIDE = [(r"convolution|_slow_conv|thnn_conv", "conv"), (r"instance_norm_pp_elu", "norm"), (r"pool", "pooling"),
           (r"upsample", "upsampling")]  # fmt: skip


def classify(event) -> str:
    ancestors = []
    parent = event.cpu_parent
    while parent is not None:
        ancestors.append(parent.name)
        parent = parent.cpu_parent
    if re.search(_COPY, event.name):
        # autocast's casts run inside aten::conv2d but before aten::convolution: they count as casts
        for name in ancestors:
            for pattern, cls in _INSIDE:
                if re.search(pattern, name):
                    return cls
        return "norm" if "ncsn::norm" in ancestors else "casts/copies"
    outer = None
    for name in ancestors:
        outer = op_class(name) or outer
    if outer is not None and outer != "Inductor fused":
        return outer
    own = op_class(event.name)
    if own is not None:
        return own
    if re.search(_ELEMENTWISE, event.name):
        return "elementwise"
    return outer or "other"


def label_norms(model: torch.nn.Module) -> None:
    """Profiler ranges around every InstanceNorm++ module ("ncsn::norm"), so the official computation's many ops
    inside one count as norm (eager providers only: the compiled graphs have no modules left)."""
    from torch.autograd.profiler import record_function

    from ncsn_fast.nn import ConditionalInstanceNorm2dPlus, InstanceNorm2dPlus

    def enter(module, args):
        module._profile_range = record_function("ncsn::norm")
        module._profile_range.__enter__()

    def leave(module, args, out):
        module._profile_range.__exit__(None, None, None)

    for m in model.modules():
        if isinstance(m, (InstanceNorm2dPlus, ConditionalInstanceNorm2dPlus)):
            m.register_forward_pre_hook(enter)
            m.register_forward_hook(leave)


def build(provider: str, cfg, batch: int):
    torch.manual_seed(0)
    model = nf.build_model(cfg).eval()
    x = torch.rand(batch, cfg.data.channels, cfg.data.image_size, cfg.data.image_size)
    y = torch.randint(0, cfg.model.num_classes, (batch,))
    ctx = contextlib.nullcontext
    if provider == "official-fp32":
        label_norms(model)
        return model, x, y, lambda: use_backend("reference")
    model = model.to(memory_format=torch.channels_last)
    x = x.contiguous(memory_format=torch.channels_last)
    if provider == "bf16-autocast":
        ctx = lambda: torch.autocast("cpu", dtype=torch.bfloat16)  # noqa: E731
    elif provider in ("bf16-weights", "bf16-compiled"):
        model = half_network(model, "bf16")
    if provider.endswith("compiled"):
        import torch._inductor.config as inductor_config

        inductor_config.freezing = True
        model = torch.compile(model)
    else:
        label_norms(model)
    return model, x, y, ctx


def profile_one(model, x, y, ctx, batch: int, iters: int) -> dict[str, float]:
    """Self time per op class of ``iters`` calls, ms per image."""
    with torch.no_grad(), ctx(), profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(iters):
            model(x, y)
    per = {c: 0.0 for c in CLASSES}
    for e in prof.events():
        per[classify(e)] += e.self_cpu_time_total / 1e3  # µs -> ms
    row = {c: v / (iters * batch) for c, v in per.items()}
    row["profiled total"] = sum(row.values())
    return row


def measure(providers: list[str], cfg, batch: int, iters: int, rounds: int) -> dict[str, dict[str, float]]:
    """Build every provider (compiling where asked), time them interleaved (round r calls each provider once, so a
    change of the machine's load hits all of them alike; median per provider), then profile each."""
    built, first, times = {}, {}, {p: [] for p in providers}
    for p in providers:
        model, x, y, ctx = built[p] = build(p, cfg, batch)
        t0 = time.perf_counter()
        with torch.no_grad(), ctx():
            model(x, y)  # warm-up (and compilation)
            first[p] = time.perf_counter() - t0
            model(x, y)
        print(f"# {p}: built, first call {first[p]:.1f} s", flush=True)
    for _ in range(rounds):
        for p in providers:
            model, x, y, ctx = built[p]
            with torch.no_grad(), ctx():
                t0 = time.perf_counter()
                model(x, y)
                times[p].append(time.perf_counter() - t0)
    rows = {}
    for p in providers:
        rows[p] = profile_one(*built[p], batch, iters)
        rows[p]["wall (no profiler)"] = 1e3 * sorted(times[p])[len(times[p]) // 2] / batch
        rows[p]["first call s"] = first[p]
        print(f"# {p}: {rows[p]['wall (no profiler)']:.2f} ms/image (median of {rounds}, interleaved)", flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="cifar10")
    p.add_argument("--ngf", type=int, help="override the config's ngf")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--iters", type=int, default=2, help="profiled calls per provider")
    p.add_argument("--rounds", type=int, default=5, help="interleaved timed rounds (one call per provider each)")
    p.add_argument("--providers", default="official-fp32,fp32,bf16-autocast,bf16-weights")
    args = p.parse_args()
    cfg = nf.load_config(args.config)
    if args.ngf:
        d = cfg.to_dict()
        d["model"]["ngf"] = args.ngf
        cfg = nf.load_config(d)
    providers = [s.strip() for s in args.providers.split(",") if s.strip()]
    rows = measure(providers, cfg, args.batch, args.iters, args.rounds)
    keys = [*CLASSES, "profiled total", "wall (no profiler)", "first call s"]
    print(
        f"\nNCSNv2 ({args.config}) ngf {cfg.model.ngf}, {cfg.data.image_size} px, batch {args.batch}, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}; ms per image (first call: s); wall: median "
        f"of {args.rounds} interleaved rounds; op classes: profiler self time, {args.iters} calls"
    )
    print("| op class | " + " | ".join(providers) + " |")
    print("|---|" + "---|" * len(providers))
    for k in keys:
        if k in CLASSES and all(rows[p][k] < 0.005 for p in providers):
            continue
        print(f"| {k} | " + " | ".join(f"{rows[p][k]:.2f}" for p in providers) + " |")


if __name__ == "__main__":
    main()
