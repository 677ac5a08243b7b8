"""What this machine is, how ``ncsn_fast._C`` was built, and whether every kernel present computes correctly here:
the library of ``ncsn-fast doctor`` (the pattern of ``python -m xformers.info`` and ``torch.utils.collect_env``).

Each check is a function returning :class:`Row` s; :func:`run` runs them all.

- :func:`environment_rows`: Python, torch (and its CUDA, cuDNN), the GPUs and driver, Triton, the extension's build
  (compiler, OpenMP, the CPU instruction set each kernel chose at run time, the CUDA architectures compiled), the
  CPU's vector and matrix units and whether bf16/fp16 have hardware support
  (:func:`~ncsn_fast.precision.hardware_half`).
- :func:`op_rows`: each op × every backend present × fp32/bf16/fp16 × NCHW/channels-last on small odd shapes — the
  relative error ‖out − truth‖/‖truth‖ against the float64 evaluation of the op's definition
  (:mod:`ncsn_fast.ops.reference`) on the same (rounded) inputs, pass when within the dtype's :data:`TOLERANCE`, and
  the median time of a call. InstanceNorm++ is checked forward and backward (all four gradients; parameters in the
  input's dtype, as in a bf16 network); ``sde_step_``/``langevin_step_`` update a float32 state from a drift in the
  dtype and layout, and their per-sample statistics are checked too.
- :func:`model_rows`: the bundled digits model's forward on every backend against the reference backend (the
  official computation), and in bf16/fp16 (:func:`~ncsn_fast.precision.half_network`).
- :func:`compile_rows` (opt-in: a compile takes 10–60 s on a small CPU): a tiny NCSNv2 through
  :func:`~ncsn_fast.inference.inference_network` compiled against eager in fp32 (tolerance 1e-5), each path's
  median time, and which path is fastest here.
"""

from __future__ import annotations

import math
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ncsn_fast.ops import _backend, reference
from ncsn_fast.precision import PRECISIONS, hardware_half

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
LAYOUTS = ("nchw", "channels_last")
OPS = ("instance_norm_pp_elu", "sde_step_", "langevin_step_")

TOLERANCE: dict[str, dict[str, float]] = {
    # relative error vs float64; low precision: a few times the rounding of the output itself (bf16 2^-9 RMS)
    "forward": {"fp32": 1e-5, "bf16": 1e-2, "fp16": 2e-3},
    # gradients: the backward reads the saved low-precision output (ELU' = y + 1) and dy in the dtype
    "backward": {"fp32": 1e-4, "bf16": 5e-2, "fp16": 1e-2},
    # float32 state: only the drift is in the dtype (exactly widened); the kernels' float32 noise agrees within 2e-6
    "update": {"fp32": 1e-5, "bf16": 1e-5, "fp16": 1e-5},
    # the bundled model against the reference backend in float32 (bf16: the 2e-2 bar)
    "model": {"fp32": 1e-4, "bf16": 2e-2, "fp16": 2e-2},
}
CPU_UNITS = ("avx2", "f16c", "avx512_f", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_fp16")
NORM_SHAPES = [(3, 7, 9, 11), (2, 5, 4, 3)]  # odd on purpose: C not a power of two, H·W not a vector multiple
UPDATE_SHAPES = [(3, 3, 9, 11), (1, 5, 7, 7)]  # numel not a multiple of 4 (the Philox groups)


@dataclass
class Row:
    """One line of the report. ``ok`` is None for facts, True/False for checks."""

    check: str  # "environment", an op name, or "model"
    name: str  # unique within a report, e.g. "instance_norm_pp_elu backward cpu bf16 channels_last"
    value: str = ""
    ok: bool | None = None
    error: float | None = None
    tolerance: float | None = None
    ms: float | None = None
    note: str = ""


def _fact(name: str, value: object) -> Row:
    return Row("environment", name, str(value))


def rel_err(out: torch.Tensor, truth: torch.Tensor) -> float:
    d = truth.double().norm()
    e = (out.double() - truth.double()).norm()
    return float(e / d) if d > 0 else float(e)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"[:200]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_ms(fn: Callable[[], object], device: torch.device, repeat: int = 3) -> float:
    """Median ms of ``repeat`` calls; one call when it takes over 50 ms (the Triton interpreter), to stay quick."""
    times: list[float] = []
    while len(times) < repeat and (not times or times[0] < 0.05):
        _sync(device)
        t = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t)
    return 1e3 * sorted(times)[len(times) // 2]


# ------------------------------------------------------------------------------------------------ environment
def build_facts() -> dict[str, str]:
    """``ncsn_fast::build_info`` as a dict (empty when the extension is not loaded)."""
    if _backend.extension_error() is not None or not hasattr(torch.ops.ncsn_fast, "build_info"):
        return {}
    lines = torch.ops.ncsn_fast.build_info().splitlines()
    return dict(line.split(": ", 1) for line in lines if ": " in line)


def triton_interpreted() -> bool:
    """Whether the Triton kernels were defined for the interpreter (TRITON_INTERPRET=1 before ncsn_fast's import)."""
    if not _backend.triton_importable():
        return False
    from ncsn_fast.ops.triton import instance_norm_pp_elu as tri

    return type(tri._instance_norm_pp_stats_kernel).__name__ == "InterpretedFunction"


def environment_rows() -> list[Row]:
    import ncsn_fast

    rows = [
        _fact("ncsn-fast", f"{ncsn_fast.__version__} ({ncsn_fast.__file__.rsplit('/', 1)[0]})"),
        _fact("python", f"{sys.version.split()[0]} ({platform.platform()})"),
        _fact("torch", f"{torch.__version__} (CUDA {torch.version.cuda or 'none'}, cuDNN "
              f"{torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else 'none'})"),
    ]  # fmt: skip
    if torch.cuda.is_available():
        try:
            v = torch._C._cuda_getDriverVersion()
            rows.append(_fact("CUDA driver", f"{v // 1000}.{v % 1000 // 10}"))
        except (AttributeError, RuntimeError) as exc:
            rows.append(_fact("CUDA driver", _first_line(exc)))
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            rows.append(_fact(f"cuda:{i}", f"{p.name}, sm_{p.major}{p.minor}, {p.total_memory / 2**30:.0f} GiB"))
    else:
        rows.append(_fact("CUDA", "no GPU visible to torch"))
    if _backend.triton_importable():
        import triton

        mode = "interpreter for CPU tensors (TRITON_INTERPRET=1)" if triton_interpreted() else "compiled for GPUs"
        rows.append(_fact("triton", f"{triton.__version__}, {mode}"))
    else:
        rows.append(_fact("triton", "not installed"))
    err = _backend.extension_error()
    rows.append(_fact("ncsn_fast._C", "loaded" if err is None else f"NOT usable: {err}"))
    rows += [_fact(f"ncsn_fast._C {k}", v) for k, v in sorted(build_facts().items())]
    caps = torch.cpu.get_capabilities() if hasattr(torch.cpu, "get_capabilities") else {}
    units = " ".join(k for k in CPU_UNITS if caps.get(k)) or "?"
    name = caps.get("cpu_name", platform.processor() or "?")
    kernels = torch.backends.cpu.get_cpu_capability()
    rows.append(_fact("cpu", f"{name}, {torch.get_num_threads()} threads, torch kernels {kernels}, units: {units}"))
    devices = ["cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    for dev in devices:
        for p in ("bf16", "fp16"):
            hw = hardware_half(dev, p)
            text = "hardware" if hw else "emulated: slower than fp32 here (use fp32)"
            rows.append(_fact(f"{p} matmul/conv on {dev}", text))
    return rows


# ------------------------------------------------------------------------------------------------------- ops
def _layout(t: torch.Tensor, layout: str) -> torch.Tensor:
    return t.contiguous(memory_format=torch.channels_last) if layout == "channels_last" else t.contiguous()


def _norm_inputs(shape, dtype, device, gen):
    n, c = shape[:2]
    x = torch.randn(shape, generator=gen) * 2 + torch.randn(1, c, 1, 1, generator=gen)
    alpha, gamma = (torch.randn(c, generator=gen) * 0.5 + 1 for _ in range(2))
    beta = torch.randn(c, generator=gen)
    return [t.to(device=device, dtype=dtype) for t in (x, alpha, gamma, beta)]


def _norm_case(kind: str, backend: str, dtype: torch.dtype, layout: str, shape, device, gen):
    """(relative error, a timed call) of instance_norm_pp_elu's forward or backward on one shape."""
    from ncsn_fast.ops import instance_norm_pp_elu

    x, a, g, b = _norm_inputs(shape, dtype, device, gen)
    x = _layout(x, layout)
    truth_in = [t.double().requires_grad_(kind == "backward") for t in (x, a, g, b)]
    truth = reference.instance_norm_pp_elu(*truth_in, 1e-5, apply_elu=True)
    if kind == "forward":
        out = instance_norm_pp_elu(x, a, g, b, backend=backend)
        if out.dtype != dtype or out.shape != x.shape:
            raise AssertionError(f"output {out.dtype} {tuple(out.shape)} for input {dtype} {tuple(x.shape)}")
        return rel_err(out, truth), lambda: instance_norm_pp_elu(x, a, g, b, backend=backend)
    dy = torch.randn(shape, generator=gen).to(device=device, dtype=dtype)
    truth.backward(dy.double())
    mine = [t.detach().clone().requires_grad_() for t in (x, a, g, b)]
    grads = torch.autograd.grad(instance_norm_pp_elu(*mine, backend=backend), mine, dy)
    err = max(rel_err(m, t.grad) for m, t in zip(grads, truth_in, strict=True))
    return err, lambda: torch.autograd.grad(instance_norm_pp_elu(*mine, backend=backend), mine, dy)


def _update_case(op: str, backend: str, dtype: torch.dtype, layout: str, shape, device, gen):
    """(relative error of x and of the statistics, a timed call) of sde_step_ / langevin_step_ on one shape."""
    from ncsn_fast.ops import langevin_step_, sde_step_

    x = torch.randn(shape, generator=gen).to(device)
    drift = _layout(torch.randn(shape, generator=gen).to(device=device, dtype=dtype), layout)
    seed = int(torch.randint(0, 2**62, (1,), generator=gen))
    offset = int(torch.randint(0, 2**40, (1,), generator=gen))
    if op == "sde_step_":
        c, a, b = 0.97, -0.31, 0.45

        def call(y: torch.Tensor, stats: torch.Tensor) -> None:
            sde_step_(y, drift, c, a, b, seed, offset, stats, backend=backend)
    else:
        c, a, b = 1.0, 0.013, math.sqrt(2 * 0.013)

        def call(y: torch.Tensor, stats: torch.Tensor) -> None:
            langevin_step_(y, drift, a, seed, offset, stats, backend=backend)

    z = reference.philox_normal(seed, offset, x.numel(), device).double().view(shape)
    want = c * x.double() + a * drift.double() + b * z
    want_stats = torch.stack([t.reshape(shape[0], -1).double().square().sum(1) for t in (drift, z, want)], 1)
    out, stats = x.clone(), torch.empty(shape[0], 3, device=device)
    call(out, stats)
    return max(rel_err(out, want), rel_err(stats, want_stats)), lambda: call(x.clone(), stats)


def check_op(op: str, kind: str, backend: str, precision: str, layout: str, device, gen) -> tuple[float, float]:
    """(the worst relative error over the shapes, the median ms of a call on the first) of one op row."""
    shapes, case = (NORM_SHAPES, _norm_case) if op == "instance_norm_pp_elu" else (UPDATE_SHAPES, _update_case)
    worst, ms = 0.0, 0.0
    for i, shape in enumerate(shapes):
        err, call = case(kind if case is _norm_case else op, backend, DTYPES[precision], layout, shape, device, gen)
        worst = max(worst, err) if not math.isnan(err) else err
        if i == 0:
            ms = _median_ms(call, device)
    return worst, ms


def _backends(op: str, device: torch.device, only: Sequence[str] | None) -> list[str]:
    names = _backend.available(op, device.type)
    if device.type == "cpu" and "triton" in names and not triton_interpreted():
        names.remove("triton")  # kernels compiled for a GPU cannot take CPU tensors
    return [b for b in names if only is None or b in only]


def op_rows(
    device: torch.device | str = "cpu",
    backends: Sequence[str] | None = None,
    ops: Sequence[str] = OPS,
    gen: torch.Generator | None = None,
    progress: Callable[[Row], None] | None = None,
) -> list[Row]:
    device = torch.device(device)
    gen = gen or torch.Generator().manual_seed(0)
    rows = []
    for op in ops:
        kinds = ("forward", "backward") if op == "instance_norm_pp_elu" else ("update",)
        for kind in kinds:
            for backend in _backends(op, device, backends):
                for precision in DTYPES:
                    for layout in LAYOUTS:
                        label = f"{op}{'' if kind == 'update' else ' ' + kind} {backend} {precision} {layout}"
                        row = Row(op, f"{label} ({device.type})", tolerance=TOLERANCE[kind][precision])
                        try:
                            row.error, row.ms = check_op(op, kind, backend, precision, layout, device, gen)
                            row.ok = bool(row.error <= row.tolerance)  # NaN fails
                        except Exception as exc:  # a kernel that raises is a failed check, named with its error
                            row.ok, row.note = False, _first_line(exc)
                        rows.append(row)
                        if progress:
                            progress(row)
    return rows


# ----------------------------------------------------------------------------------------------------- model
def model_rows(
    device: torch.device | str = "cpu",
    backends: Sequence[str] | None = None,
    gen: torch.Generator | None = None,
    progress: Callable[[Row], None] | None = None,
) -> list[Row]:
    """The bundled digits model (batch 2) on every backend, and in bf16/fp16, against the reference backend."""
    from ncsn_fast.precision import half_network
    from ncsn_fast.pretrained import load_pretrained

    device = torch.device(device)
    gen = gen or torch.Generator().manual_seed(0)
    model, cfg = load_pretrained("digits")
    model = model.to(device)
    c, s = cfg.data.channels, cfg.data.image_size
    x = torch.rand(2, c, s, s, generator=gen).to(device)
    y = torch.randint(0, cfg.model.num_classes, (2,), generator=gen).to(device)
    rows = []
    with torch.no_grad():
        with _backend.use_backend("reference"):
            truth = model(x, y)
        cases = [(b, "fp32") for b in _backends("instance_norm_pp_elu", device, backends)]
        if backends is None or "auto" in backends:
            cases += [("auto", p) for p in PRECISIONS if p != "fp32"]
        for backend, precision in cases:
            row = Row("model", f"digits model forward {backend} {precision} ({device.type})")
            row.tolerance = TOLERANCE["model"][precision]
            try:
                net = half_network(model, precision)
                with _backend.use_backend(backend):
                    _sync(device)
                    t = time.perf_counter()
                    out = net(x, y)
                    _sync(device)
                    first = time.perf_counter() - t
                    # the check's own call is the timing when slow (the Triton interpreter: seconds)
                    row.ms = 1e3 * first if first > 0.5 else _median_ms(lambda: net(x, y), device)  # noqa: B023
                row.error = rel_err(out, truth)
                row.ok = bool(row.error <= row.tolerance)
            except Exception as exc:
                row.ok, row.note = False, _first_line(exc)
            rows.append(row)
            if progress:
                progress(row)
    return rows


# ----------------------------------------------------------------------------------------------------- compile
def compile_rows(
    device: torch.device | str = "cpu",
    modes: Sequence[str] = ("jit",),
    gen: torch.Generator | None = None,
    progress: Callable[[Row], None] | None = None,
    cache_dir: str | None = None,
    bf16: bool | None = None,
) -> list[Row]:
    """A tiny NCSNv2 (ngf 8, 16×16, batch 8) through the inference network: each compile mode in ``modes`` against
    eager in fp32 (relative error ≤ 1e-5; the time of its first call, the compile, in the note), the median time of
    every path, then which path is fastest on this machine (for this tiny network: a hint, not a benchmark —
    ``scripts/bench_inference.py`` measures the real one). ``bf16`` (default: where the device has bf16 units) adds
    each mode in bf16, whose error against fp32 eager must be at most twice eager bf16's own (issue 23)."""
    import tempfile
    import warnings

    from ncsn_fast.config import load_config
    from ncsn_fast.inference import inference_network
    from ncsn_fast.models import build_model
    from ncsn_fast.precision import hardware_half

    device = torch.device(device)
    gen = gen or torch.Generator().manual_seed(0)
    cfg = load_config({"model": {"ngf": 8}, "data": {"image_size": 16, "channels": 3}})
    model = build_model(cfg).to(device).eval().requires_grad_(False)
    x = torch.rand(8, 3, 16, 16, generator=gen).to(device)
    sigma = (torch.rand(8, generator=gen) + 0.1).to(device)
    eager = inference_network(model)
    rows, times = [], {}
    with torch.no_grad(), tempfile.TemporaryDirectory() as tmp:
        truth = eager(x, sigma)
        times["eager"] = _median_ms(lambda: eager(x, sigma), device, repeat=5)
        name = f"tiny NCSNv2 eager fp32 ({device.type})"
        rows.append(Row("compile", name, f"{times['eager']:.2f} ms", ms=times["eager"]))
        for mode in modes:
            row = Row("compile", f"tiny NCSNv2 compiled {mode} fp32 vs eager ({device.type})", tolerance=1e-5)
            try:
                net = inference_network(model, compile=mode, cache_dir=cache_dir or tmp)
                t = time.perf_counter()
                out = net(x, sigma)
                row.note = f"first call (compile) {time.perf_counter() - t:.1f} s"
                row.error = rel_err(out, truth)
                row.ok = bool(row.error <= row.tolerance)
                row.ms = times[mode] = _median_ms(lambda: net(x, sigma), device, repeat=5)  # noqa: B023
            except Exception as exc:
                row.ok, row.note = False, _first_line(exc)
            rows.append(row)
        if hardware_half(device, "bf16") if bf16 is None else bf16:
            with warnings.catch_warnings():  # emulated bf16 says so once per network: a check, not a choice
                warnings.simplefilter("ignore", RuntimeWarning)
                half = inference_network(model, "bf16")
                floor = rel_err(half(x, sigma), truth)
                for mode in modes:
                    name = f"tiny NCSNv2 compiled {mode} bf16 vs fp32 eager ({device.type})"
                    row = Row("compile", name, tolerance=2 * floor)
                    try:
                        out = inference_network(model, "bf16", mode, cache_dir=cache_dir or tmp)(x, sigma)
                        row.error = rel_err(out, truth)
                        row.ok = bool(row.error <= row.tolerance)
                        row.note = f"eager bf16's own error {floor:.2e}; allowed twice that"
                    except Exception as exc:
                        row.ok, row.note = False, _first_line(exc)
                    rows.append(row)
    for r in rows:
        if progress:
            progress(r)
    fastest = min(times, key=times.get)
    rows.append(
        _fact(f"fastest network path here ({device.type})", f"{fastest} ({times[fastest]:.2f} ms, tiny NCSNv2)")
    )
    if progress:
        progress(rows[-1])
    return rows


def devices_present() -> list[str]:
    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def run(
    devices: Sequence[str] | None = None,
    backends: Sequence[str] | None = None,
    ops: Sequence[str] = OPS,
    model: bool = True,
    seed: int = 0,
    progress: Callable[[Row], None] | None = None,
    compile: Sequence[str] = (),
) -> list[Row]:
    """Every check: the environment, then per device the ops, (``model``) the bundled model and (``compile``: modes
    of :func:`compile_rows`) the compiled inference network. ``backends``
    restricts the backends checked (names of :data:`ncsn_fast.vocab.OP_BACKENDS`; "auto" selects the bf16/fp16
    model rows); ``seed`` draws the inputs."""
    unknown = [op for op in ops if op not in OPS]
    if unknown:
        raise ValueError(f"ops: unknown {unknown}; choose from {', '.join(OPS)}")
    for name in backends or ():
        _backend._validate(name, "backends")
    rows = environment_rows() + [_fact("doctor seed", seed)]
    if progress:
        for r in rows:
            progress(r)
    gen = torch.Generator().manual_seed(seed)
    for dev in devices or devices_present():
        rows += op_rows(dev, backends, ops, gen, progress)
        if model:
            rows += model_rows(dev, backends, gen, progress)
        if compile:
            rows += compile_rows(dev, compile, gen, progress)
    return rows


def failed(rows: Sequence[Row]) -> list[Row]:
    return [r for r in rows if r.ok is False]
