"""THE inference network: a model as the samplers call it — eager, compiled and frozen, or an ahead-of-time package
from a cache — in fp32/bf16/fp16, float32 in and out.

:func:`inference_network` returns an :class:`InferenceNetwork` ``net``: ``net(x, c)`` takes float32 images
(N, C, H, W) and either noise levels σ (N,) float or, as the original NCSN's ``forward``, noise-level labels (N,)
long, and returns the float32 score; ``net.score(x, σ)`` is the σ form. Samplers take ``net`` as their ``score``
and do not wrap it again for precision (it carries its own: :func:`ncsn_fast.sampling.runtime.network`).

What is compiled is the network's :meth:`~ncsn_fast.models.refinenet.RefineNetScore.features` (input casts
included); the checks of σ (read on the host) and Technique 3's division by σ (float32) run eagerly around it:

- ``compile=False``: eager, what the runtime did before (:func:`ncsn_fast.precision.half_network` for bf16/fp16);
- ``compile=True`` or ``"jit"``: ``torch.compile`` with Inductor and freezing (weights folded into the graph as
  constants), compiled at the first call of each input shape;
- ``compile="aot"``: ``torch.export`` and ``torch._inductor.aoti_compile_and_package``, with freezing, cached as a
  ``.pt2`` package under ``$NCSN_FAST_CACHE_DIR``, else ``$XDG_CACHE_HOME/ncsn-fast``, else ``~/.cache/ncsn-fast``
  (``cache_dir=`` overrides all three). The key hashes the weights, the input shape (batch size included: another
  batch size is another package; a dynamic batch is 10% slower, see ``dynamic_batch``), the precision, the
  device (and GPU architecture), the torch version, the CPU's ISA (``torch.backends.cpu.get_cpu_capability()``)
  and the ncsn-fast version. A later run loads the package (0.1 s) instead of compiling; an unreadable package is
  rebuilt with a one-line warning.

When it pays: see :func:`compile_pays` (end to end, what ``--compile`` checks) and ``scripts/bench_inference.py``
(in-process, the paths' calls interleaved). A cached package is loaded by AOTInductor's C++ loader, without
importing Inductor (1.5–2.6 s of a command's startup on a CPU): with ``torch._inductor.aoti_load_package`` the
package's gain did not survive end to end. The first call compiles: jit 20–90 s, aot 40–45 s on a 2-core CPU.

A compiled network holds a copy of the weights taken when it is built: changing the model afterwards does not
change it (an eager fp32 network is the model itself).
torch._dynamo and Inductor are imported only on the compile paths (``import ncsn_fast`` stays light).
"""

from __future__ import annotations

import copy
import hashlib
import logging
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch

from ncsn_fast.precision import check_precision, half_network, warn_if_emulated

COMPILE_MODES = ("jit", "aot")
"""What ``compile=`` takes besides False (eager) and True (``"jit"``)."""


def check_compile(name: str, value: Any) -> str | None:
    """``value`` as a compile mode: None (eager, for False/None), "jit" (True or "jit") or "aot"; a ValueError
    naming ``name`` for anything else."""
    if value is None or value is False:
        return None
    if value is True:
        return "jit"
    if isinstance(value, str) and value in COMPILE_MODES:
        return value
    raise ValueError(f"{name}: unknown compile mode {value!r}; choose False, True, {', '.join(COMPILE_MODES)}")


def compile_pays(device: torch.device | str, precision: str, mode: str = "aot") -> str | None:
    """None where a network compiled in ``mode`` ("jit" or "aot") makes a command faster than eager; else why not,
    in a few words — what ``--compile`` checks before compiling (the library's :func:`inference_network` compiles
    whenever asked).

    Measured end to end on the bundled model (AMD EPYC, AVX2, 2 cores, fresh processes, 2026-12-07; ``ncsn-fast
    sample ARGS --quiet``): from a cached AOT package ``--steps 5`` took 29.6–34.7 s against 33.1–36.4 s eager and
    ``--nfe 25`` 5.0–6.0 s against 5.2–6.6 s (the package is loaded by AOTInductor's C++ loader: no Inductor import).
    ``jit`` compiles again in every process: ``--nfe 25`` 20.0–20.7 s, ``--steps 5`` 43.0 s. So on a CPU ``aot``
    pays in fp32 and in bf16/fp16 with matrix units (AMX / AVX-512 BF16 or FP16), ``jit`` does not (a command is one
    process), and an emulated bf16/fp16 never does. On CUDA both pay (kernel launches dominate small networks)."""
    from ncsn_fast.precision import hardware_half

    device = torch.device(device)
    if device.type != "cpu":
        return None
    if precision != "fp32" and not hardware_half(device, precision):
        return f"{precision} on this CPU is emulated (no {precision} matrix units)"
    if mode == "jit":
        return "jit compiles again in every process on a CPU (20-40 s, more than it saves); --compile aot caches it"
    return None


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """Where AOT packages live: ``cache_dir``, else $NCSN_FAST_CACHE_DIR, else $XDG_CACHE_HOME/ncsn-fast, else
    ~/.cache/ncsn-fast. One package per model, input shape (batch size included), precision and device: delete the
    folder to clear them."""
    return _cache_root(cache_dir)[0]


def _cache_root(cache_dir: str | os.PathLike | None) -> tuple[Path, str]:
    """(the cache folder, the name of the setting it comes from)."""
    if cache_dir is not None:
        return Path(cache_dir), "cache_dir"
    if os.environ.get("NCSN_FAST_CACHE_DIR"):
        return Path(os.environ["NCSN_FAST_CACHE_DIR"]), "NCSN_FAST_CACHE_DIR"
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]) / "ncsn-fast", "XDG_CACHE_HOME"
    return Path(os.path.expanduser("~")) / ".cache" / "ncsn-fast", "HOME"


def check_cache_dir(cache_dir: str | os.PathLike | None = None, writable: bool = True) -> Path:
    """The AOT cache folder (:func:`cache_root`), made if missing; a ValueError naming the setting it comes from
    (``cache_dir``, ``NCSN_FAST_CACHE_DIR``, ``XDG_CACHE_HOME`` or ``HOME``) when it cannot be made, or (``writable``)
    written: a read-only folder of packages built elsewhere can still be loaded from."""
    root, name = _cache_root(cache_dir)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"{name}: cannot make the compiled-package cache {root} ({e.strerror or e})") from None
    if writable and not os.access(root, os.W_OK | os.X_OK):
        raise ValueError(f"{name}: the compiled-package cache {root} is not writable")
    return root


def weights_hash(model: torch.nn.Module) -> str:
    """sha256 of the state dict (names, dtypes, shapes and bytes, in order)."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        t = t.detach().cpu().clone(memory_format=torch.contiguous_format).reshape(-1)  # any layout: the same bytes
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def device_tag(device: torch.device) -> str:
    """The device as the package depends on it: the CPU's ISA, or the GPU's name and compute capability."""
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        return f"cuda-sm{major}{minor}-{torch.cuda.get_device_name(device).replace(' ', '_')}"
    if device.type == "cpu":
        return f"cpu-{torch.backends.cpu.get_cpu_capability()}"
    return device.type


def cache_key(
    weights: str, shape: tuple, conditional: bool, precision: str, device: torch.device, lower_norm: bool = False
) -> str:
    """The AOT cache key (hex): everything a compiled package depends on."""
    import ncsn_fast

    parts = [
        weights,
        "x".join(map(str, shape)),
        "labels" if conditional else "sigma",
        precision,
        device_tag(device),
        torch.__version__,
        ncsn_fast.__version__,
    ] + (["lower_norm"] if lower_norm else [])
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:32]


class _Features(torch.nn.Module):
    """What is compiled: the input cast to the network's dtype and layout, the features, float32 out (no σ)."""

    def __init__(self, net: torch.nn.Module, dtype: torch.dtype, memory_format: torch.memory_format) -> None:
        super().__init__()
        self.net, self.dtype, self.memory_format = net, dtype, memory_format

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        h = x.to(dtype=self.dtype, memory_format=self.memory_format)
        return self.net.features(h, y).to(dtype=torch.float32, memory_format=torch.contiguous_format)


class InferenceNetwork:
    """A score network for inference (see :func:`inference_network`): ``net(x, c)`` with c = σ (N,) float or
    labels (N,) long, ``net.score(x, σ)``; float32 in and out. ``compiles``/``loads`` count AOT packages compiled
    and loaded from the cache, ``mode`` is None (eager), "jit" or "aot"."""

    ncsn_fast_inference = True  # runtime.network passes it through as it is (its precision is its own)

    def __init__(
        self,
        model: torch.nn.Module,
        precision: str,
        mode: str | None,
        device: torch.device,
        cache_dir: Path | None,
        lower_norm: bool = False,
    ) -> None:
        self.model, self.precision, self.mode, self.device = model, precision, mode, device
        self.lower_norm = lower_norm
        self.dtype = check_precision("precision", precision) or torch.float32
        self.conditional = bool(getattr(model, "conditional", False))
        self.cache_dir = cache_dir
        self.compiles = self.loads = 0
        self.paths: dict[tuple, Path] = {}
        self._fns: dict[tuple, Any] = {}
        if mode is None:
            self.eager = half_network(model, precision)
            return
        warn_if_emulated(device, precision, ", compiled or not", stacklevel=3)
        net = copy.deepcopy(model).requires_grad_(False).eval()
        fmt = torch.channels_last if precision != "fp32" or device.type == "cpu" else torch.contiguous_format
        if precision != "fp32":
            net = net.to(dtype=self.dtype)
        net = net.to(memory_format=fmt)
        for p in net.parameters():  # (C_out, 1, k, k) weights in NCHW strides: see dynamic_batch
            if p.dim() == 4 and p.shape[1] == 1:
                p.data = p.data.clone(memory_format=torch.contiguous_format)
        self.features = _Features(net, self.dtype, fmt).eval()
        self.memory_format = fmt
        self._weights: str | None = None
        if mode == "jit" and lower_norm:
            self._jit = torch.compile(self.features, backend=_inductor_lowering_norm, dynamic=False)
        elif mode == "jit":
            self._jit = torch.compile(self.features, options={"freezing": True}, dynamic=False)

    # AOT with a dynamic batch dimension (one package for every batch size): correct, but off. On torch 2.14.1 (CPU)
    # AOTInductor with freezing and a dynamic batch computes a wrong convolution when a (C_out, 1, k, k) weight has
    # channels-last strides (minimal case: nn.Conv2d(1, 8, 3, padding=1).to(memory_format=torch.channels_last),
    # relative error 1.41; NCHW strides, C_in > 1, a static batch or no freezing are right). Such weights (the first
    # convolution of a one-channel model) are given NCHW strides above, the same bytes. Measured then (AVX2, the
    # digits model, batch 36, scripts/bench_inference.py --modes eager,aot,aot_dynamic): static 91.5 ms per call,
    # dynamic 100.4, eager 150.6. So each batch size gets its own package (the key holds it) by default.
    dynamic_batch = False

    def check_input(self, name: str, x: Any) -> torch.Tensor:
        """Images this network takes: the model's own check, in float32 (the face of every precision)."""
        from ncsn_fast.validation import check_model_input

        m = self.model
        return check_model_input(
            name, x, m.config.data.channels, m.downsample_factor, type(m).__name__, torch.float32, self.device
        )

    def __call__(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        if isinstance(c, torch.Tensor) and not c.is_floating_point() and not c.is_complex():
            return self.forward(x, c)
        return self.score(x, c)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The score at noise-level labels y (N,) long (the model's ``forward``)."""
        if self.mode is None:
            return self.eager(x, y)
        from ncsn_fast.validation import check_labels

        self.check_input("x", x)
        m = self.model
        levels = m.num_classes if self.conditional else len(m.sigmas)
        check_labels("y", y, x.shape[0], levels, "; for a noise level σ call net.score(x, sigma)")
        h = self._features(x, y if self.conditional else None)
        return h if self.conditional else h / m.sigmas[y].view(-1, 1, 1, 1)

    def score(self, x: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
        """s_θ(x, σ) for σ > 0 per sample (the model's ``score``)."""
        if self.mode is None:
            return self.eager.score(x, sigma)
        self.check_input("x", x)
        labels, div = self.model.condition(x, sigma)
        h = self._features(x, labels)
        return h if labels is not None else h / div

    def _features(self, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        args = (x,) if y is None else (x, y)
        with torch.no_grad():
            if self.mode == "jit":
                return self._jit(*args)
            key = (self._shape(x), x.device)
            fn = self._fns.get(key)
            if fn is None:
                fn = self._fns[key] = self._package(x, y)
            return fn(*[a.contiguous(memory_format=self.memory_format) if a.dim() == 4 else a for a in args])

    def _shape(self, x: torch.Tensor) -> tuple:
        """The shape a package is compiled for: x's, with "N" for the batch size when it is dynamic."""
        return ("N", *x.shape[1:]) if self.dynamic_batch else tuple(x.shape)

    def _package(self, x: torch.Tensor, y: torch.Tensor | None) -> Any:
        """The AOT package of x's shape: loaded from the cache, else compiled, written atomically and loaded."""
        if self._weights is None:
            self._weights = weights_hash(self.model)
        key = cache_key(self._weights, self._shape(x), self.conditional, self.precision, self.device, self.lower_norm)
        path = cache_root(self.cache_dir) / f"{type(self.model).__name__.lower()}-{key}.pt2"
        self.paths[(self._shape(x), x.device)] = path
        if path.is_file():
            try:
                fn = self._load(path)
                self.loads += 1
                return fn
            except Exception as e:  # a torn or stale package: compile it again
                why = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                warnings.warn(f"cached package {path} is unreadable ({why}); rebuilding it", stacklevel=4)
        check_cache_dir(self.cache_dir)  # before a minute of compiling: an error naming where the folder comes from
        _compile_package(self, x, y, path)
        self.compiles += 1
        return self._load(path)

    def _load(self, path: Path) -> Any:
        """The package's runner, through AOTInductor's C++ loader: what ``torch._inductor.aoti_load_package`` does
        for a package of one model taking and returning flat tensors, without importing Inductor (2–3 s of a
        command's startup on a CPU)."""
        index = self.device.index if self.device.type == "cuda" and self.device.index is not None else -1
        loader = torch._C._aoti.AOTIModelPackageLoader(str(path), "model", False, 1, index)

        def run(*args: torch.Tensor) -> torch.Tensor:
            return loader.boxed_run(list(args))[0]

        return run


def _inductor_lowering_norm(gm: torch.fx.GraphModule, example_inputs: list) -> Any:
    """torch.compile backend: Inductor with freezing, InstanceNorm++ + ELU lowered from aten ops (``lower_norm``)."""
    from torch._inductor.compile_fx import compile_fx
    from torch._inductor.decomposition import select_decomp_table

    from ncsn_fast.ops.instance_norm_pp_elu import inductor_decompositions

    table = {**select_decomp_table(), **inductor_decompositions()}
    return compile_fx(gm, example_inputs, config_patches={"freezing": True}, decompositions=table)


def _compile_package(net: InferenceNetwork, x: torch.Tensor, y: torch.Tensor | None, path: Path) -> None:
    """torch.export of the features at x's shape, AOTInductor with freezing, into ``path`` (temp file, rename)."""
    import tempfile

    import torch._inductor

    start = time.perf_counter()
    dynamic = None
    if net.dynamic_batch:  # one package for every batch size; an example of 2 (export specializes a size of 1)
        x, y = x[:1].repeat(2, 1, 1, 1), None if y is None else y[:1].repeat(2)
        batch = torch.export.Dim("batch", min=1, max=1 << 20)
        dynamic = ({0: batch},) if y is None else ({0: batch}, {0: batch})
    xs = x.detach().to(torch.float32).contiguous(memory_format=net.memory_format)
    args = (xs,) if y is None else (xs, y)
    with torch.no_grad():
        program = torch.export.export(net.features, args, dynamic_shapes=dynamic)
        if net.lower_norm:
            from ncsn_fast.ops.instance_norm_pp_elu import inductor_decompositions

            program = program.run_decompositions(inductor_decompositions())
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp.pt2", dir=path.parent)
    os.close(fd)
    quiet = logging.getLogger("torch.utils.cpp_extension")  # "No CUDA runtime is found" on every CPU-only compile
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        torch._inductor.aoti_compile_and_package(program, package_path=tmp, inductor_configs={"freezing": True})
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 would keep a shared cache from others
        os.replace(tmp, path)
    finally:
        quiet.setLevel(level)
        if os.path.exists(tmp):
            os.unlink(tmp)
    shape = "×".join(map(str, net._shape(x)))
    took = time.perf_counter() - start
    print(
        f"ncsn-fast: compiled {type(net.model).__name__} ({shape}, {net.precision}, {device_tag(net.device)}) ahead "
        f"of time in {took:.1f} s → {path}",
        file=sys.stderr,
        flush=True,
    )


def _umask() -> int:
    """The process's umask, read without setting it (os.umask would, for a moment, for every thread)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


def inference_network(
    model: torch.nn.Module,
    precision: str = "fp32",
    compile: bool | str = False,
    device: torch.device | str | None = None,
    cache_dir: str | os.PathLike | None = None,
    lower_norm: bool = False,
) -> InferenceNetwork:
    """The ncsn-fast ``model`` for inference: ``net(x, c)`` (c = σ (N,) float or labels (N,) long) and
    ``net.score(x, σ)``, float32 in and out, in ``precision`` ("fp32", "bf16", "fp16"), eager (``compile=False``),
    compiled with Inductor and freezing (True or "jit", torch.compile's sense; the CLI's bare ``--compile`` is
    "aot", since a command is one process) or as an AOT package from the cache ("aot"). Compiling is lazy: the first
    call of each input shape compiles (jit), or loads or compiles and caches the package of that shape (aot, one per
    batch size; it prints what it compiled and how long it took). This function compiles whenever asked, also where
    the CLI would run eager (:func:`compile_pays`). ``device``
    (default: the model's) is where it runs; ``cache_dir`` overrides the AOT cache folder. ``lower_norm`` (compiled
    paths only): Inductor lowers InstanceNorm++ + ELU from aten ops
    (:func:`ncsn_fast.ops.instance_norm_pp_elu.decomposition`), free to fuse it with its neighbours, instead of
    calling the fused kernel — off by default: on an AVX2 CPU in fp32 it was slower (see :mod:`ncsn_fast.inference`).
    See :mod:`ncsn_fast.inference`. Errors name the parameter (``cache_dir`` or the environment variable when the
    cache folder cannot be made or written)."""
    from ncsn_fast.validation import describe

    if not (isinstance(model, torch.nn.Module) and callable(getattr(model, "features", None))):
        raise TypeError(f"model: expected an ncsn-fast model (NCSN/NCSNv2), got {describe(model)}")
    check_precision("precision", precision)
    mode = check_compile("compile", compile)
    if not isinstance(lower_norm, bool):
        raise TypeError(f"lower_norm: expected True or False, got {describe(lower_norm)}")
    if lower_norm and mode is None:
        raise ValueError("lower_norm: lowers the norm for a compiler; pass compile=True or 'aot' with it")
    weights = next(model.parameters())
    device = weights.device if device is None else torch.device(device)
    if device != weights.device:
        model = copy.deepcopy(model).to(device)
    return InferenceNetwork(model, precision, mode, device, None if cache_dir is None else Path(cache_dir), lower_norm)
