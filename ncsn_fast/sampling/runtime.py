"""What every sampler runs on: the network's precision, backend and CUDA graph, the noise stream, non-finite checks.

- ``precision``: "fp32", or "bf16"/"fp16" (the network under autocast; the sampler state stays float32);
- ``backend``: the ops backend of the whole run — the network's fused InstanceNorm++ and the fused noisy update
  (``auto``, ``cpu``, ``cuda``, ``triton``, ``reference``; see :mod:`ncsn_fast.ops._backend`), or ``torch``: the
  official computation, with the reference ops in the network and the update done in PyTorch with ``torch.randn``
  noise drawn from ``generator`` (the official noise stream);
- ``cuda_graphs``: the network captured once in a CUDA graph (labels/σ as tensor inputs, so one graph serves
  every step) and replayed;
- ``compile`` (:func:`network` only): the ncsn-fast model through :func:`ncsn_fast.inference.inference_network`
  (``True``/"jit": torch.compile with freezing; "aot": a cached AOTInductor package). Samplers reach it by taking
  such a network as their ``score``: it carries its own precision and is not wrapped again.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch

from ncsn_fast.ops._backend import use_backend
from ncsn_fast.precision import check_precision
from ncsn_fast.validation import check_input_for, describe
from ncsn_fast.vocab import SAMPLER_BACKENDS

Score = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""A score network or function ``score(x, c)``: c is a label tensor (N,) long, or a σ tensor (N,) float."""

BACKENDS = SAMPLER_BACKENDS


def check_backend(name: str, value: str) -> str:
    if value not in BACKENDS:
        raise ValueError(f"{name}: unknown backend {value!r}; choose one of {', '.join(BACKENDS)}")
    return value


def randn_like(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Standard normals of x's shape from ``generator`` (drawn on the generator's device, moved to x's)."""
    if generator is None or generator.device == x.device:
        return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return torch.randn(x.shape, generator=generator, device=generator.device, dtype=x.dtype).to(x.device)


def draw_seed(generator: torch.Generator | None) -> int:
    """A Philox seed in [0, 2^62) drawn from ``generator`` (the global RNG when None)."""
    device = generator.device if generator is not None else torch.device("cpu")
    return int(torch.randint(0, 2**62, (1,), generator=generator, device=device))


def _with_precision(score: Score, precision: str, device: torch.device) -> Score:
    """The network in bf16/fp16; the sampler state and the update stay float32.

    An ncsn-fast model (or its bound ``score``/``forward``) is copied once per run with its weights in the precision
    and channels-last (:func:`ncsn_fast.precision.half_network`: no per-call weight casts, σ and Technique 3 in
    float32); any other callable runs under autocast."""
    from ncsn_fast.precision import half_network

    dtype = check_precision("precision", precision)
    if dtype is None or is_inference_network(score):
        return score
    model = model_of(score)
    name = "forward" if score is model else getattr(score, "__name__", None)
    if model is not None and name in ("forward", "score"):
        return getattr(half_network(model, precision), name)

    def autocast_score(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device.type, dtype=dtype):
            return score(x, y)

    return autocast_score


def _with_backend(score: Score, backend: str) -> Score:
    """The network's ops on the run's backend (``torch``: the reference ops, the official computation)."""
    op_backend = "reference" if backend == "torch" else backend
    if op_backend == "auto":
        return score

    def backend_score(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with use_backend(op_backend):
            return score(x, y)

    return backend_score


class _GraphedScore:
    """The network of one step captured once in a CUDA graph and replayed (no per-kernel launch cost).

    Inputs are copied into static buffers (labels or σ included: they index σ or the embeddings on the device, so
    one graph serves every level); the output buffer is overwritten by the next replay, which is safe because the
    samplers consume it at once. Only built for CUDA tensors (torch.cuda.CUDAGraph). The network must not
    synchronize with the host while captured (ncsn-fast models check σ only outside a capture).
    """

    def __init__(self, score: Score, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x.clone(), y.clone()
        stream = torch.cuda.current_stream()
        side = torch.cuda.Stream()
        side.wait_stream(stream)
        with torch.cuda.stream(side):  # warm-up outside the graph (allocator, cuDNN/cuBLAS handles, Triton JIT)
            for _ in range(2):
                score(self.x, self.y)
        stream.wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(self.graph):
                self.out = score(self.x, self.y)
        finally:  # a failed capture leaves torch.cuda.graph's capture stream current (its __exit__ raises first)
            torch.cuda.set_stream(stream)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.x.copy_(x)
        self.y.copy_(y)
        self.graph.replay()
        return self.out


class GraphedNetwork:
    """``score`` through CUDA graphs: captured once per input shape, replayed after. A capture that fails warns and
    runs that shape eagerly; ``fallback`` then says why, and ``captures``/``replays`` count what really happened
    (a graphed run and a silent eager one give the same samples, so only these tell them apart)."""

    def __init__(self, score: Score, device: torch.device) -> None:
        self._require_cuda(device)
        self.score = score
        self.fn: Score | None = None
        self.key: tuple | None = None
        self.captures = 0
        self.replays = 0
        self.fallback: str | None = None

    @staticmethod
    def _require_cuda(device: torch.device) -> None:
        if device.type != "cuda":
            raise ValueError(f"cuda_graphs: needs CUDA tensors, the samples are on {device}")

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        key = (x.shape, y.shape, y.dtype)
        if self.fn is None or self.key != key:
            try:
                self.fn = _GraphedScore(self.score, x, y)
                self.captures += 1
            except Exception as e:  # capture is not possible for every network / torch build: run eagerly
                self.fallback = f"{type(e).__name__}: {e}"
                warnings.warn(f"CUDA graph capture failed ({self.fallback}); sampling eagerly", stacklevel=2)
                self.fn = self.score
            self.key = key
        if self.fn is not self.score:
            self.replays += 1
        return self.fn(x, y)


def is_inference_network(score: Any) -> bool:
    """Whether ``score`` (or the object of a bound method) is an :class:`ncsn_fast.inference.InferenceNetwork`:
    float32 in and out in its own precision, passed through by the precision wrapper."""
    return bool(getattr(getattr(score, "__self__", score), "ncsn_fast_inference", False))


def network(
    score: Score,
    device: torch.device,
    precision: str = "fp32",
    backend: str = "auto",
    cuda_graphs: bool = False,
    compile: bool | str = False,
) -> Score:
    """``score`` wrapped for a run: backend, then precision, then (outermost) the CUDA graph.

    ``compile`` (False, True/"jit", "aot"): an ncsn-fast model (or its bound ``score``/``forward``) runs as
    :func:`~ncsn_fast.inference.inference_network` ``(model, precision, compile, device)``; a ValueError naming
    ``compile`` for any other callable (compile a plain function yourself with torch.compile). An inference network
    passed as ``score`` keeps its own precision and compilation (``precision`` and ``compile`` do not rewrap it)."""
    check_backend("backend", backend)
    if compile not in (False, None) and not is_inference_network(score):
        from ncsn_fast.inference import check_compile, inference_network

        check_compile("compile", compile)
        model = model_of(score)
        if model is None:
            raise ValueError(
                f"compile: compiles ncsn-fast models (NCSN/NCSNv2 or their bound score/forward), got "
                f"{describe(score)}; torch.compile a plain score function yourself"
            )
        score = inference_network(model, precision, compile, device)
    wrapped = _with_backend(score, backend)
    if not is_inference_network(score):
        wrapped = _with_precision(wrapped, precision, device)
    return GraphedNetwork(wrapped, device) if cuda_graphs else wrapped


def check_finite(x: torch.Tensor, sampler: str, step: int, sigma: float) -> None:
    """A diverging chain stops here, naming the step, instead of returning a grid of NaNs."""
    if not torch.isfinite(x).all():
        raise FloatingPointError(f"{sampler} sampler diverged: non-finite values at step {step} (σ = {sigma:.4g})")


class _SharedBar:
    """An outer progress bar lent to an inner loop: updates go to it, closing is the owner's business."""

    def __init__(self, bar: Any) -> None:
        self.bar = bar

    def update(self, n: int = 1) -> None:
        self.bar.update(n)

    def close(self) -> None:
        pass


def progress_bar(total: int, desc: str, progress: Any) -> Any:
    """A tqdm bar counting network evaluations; ``progress`` is a bool, or a bar of an outer loop to update."""
    if hasattr(progress, "update"):
        return _SharedBar(progress)
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, disable=not progress, dynamic_ncols=True, leave=False)


def model_of(score: Any) -> Any:
    """The ncsn-fast model behind a score callable (the model itself or its bound ``score`` method), else None."""
    owner = getattr(score, "__self__", score)
    return owner if hasattr(owner, "downsample_factor") and hasattr(owner, "config") else None


def check_x0(x0: Any, score: Any, name: str = "x0") -> torch.Tensor:
    """A floating-point batch (N, ...); for an ncsn-fast model (or its bound method), images it takes
    (:meth:`~ncsn_fast.models.refinenet.RefineNetScore.check_input`: shape, dtype, device). Errors name ``name``
    and say what ``x0`` was."""
    return check_input_for(score, name, x0)


def score_function(score: Any, name: str = "score") -> Score:
    """What the σ-conditioned samplers call: ``score(x, sigma)``. A model passed as it is (whose ``forward`` takes
    noise-level labels) is taken as its ``score`` method; anything else must be callable."""
    if isinstance(score, torch.nn.Module) and callable(getattr(score, "score", None)):
        return score.score
    if not callable(score):
        raise TypeError(f"{name}: expected a score function score(x, sigma) or a model, got {describe(score)}")
    return score


class NoiseStream:
    """The noise of every stochastic step of a run: x ← c·x + a·d + b·z in place.

    Fused backends call :func:`ncsn_fast.ops.sde_step_` with Philox keyed by ``seed`` at offset = the number of
    noisy steps taken so far, so a run is deterministic per seed and draws the same noise on the CPU, CUDA and Triton
    backends up to float rounding (the noise never exists as a tensor). ``backend="torch"`` — and states that are
    not float32 (float64 chains of analytic tests) — draw z with ``torch.randn`` from ``generator`` instead.
    ``stats`` receives per-sample Σd², Σz², Σx² of the last fused step (a cheap non-finite check on the CPU).
    """

    def __init__(self, seed: int | None, backend: str = "auto", generator: torch.Generator | None = None) -> None:
        check_backend("backend", backend)
        self.seed = draw_seed(generator) if seed is None else seed
        self.backend, self.generator = backend, generator
        self.offset = 0
        self.stats: torch.Tensor | None = None
        self._zeros: torch.Tensor | None = None

    def fused(self, x: torch.Tensor) -> bool:
        return self.backend != "torch" and x.dtype == torch.float32

    def step_(self, x: torch.Tensor, drift: torch.Tensor | None, c: float, a: float, b: float) -> torch.Tensor:
        """x ← c·x + a·drift + b·z, z ~ N(0, I), in place on a contiguous x; drift None means a = 0."""
        if not self.fused(x):
            z = randn_like(x, self.generator)
            x.mul_(c).add_(z, alpha=b)
            if drift is not None and a != 0:
                x.add_(drift.to(x.dtype), alpha=a)
        else:
            from ncsn_fast.ops.sde_step import sde_step_

            if drift is None:
                if self._zeros is None or self._zeros.shape != x.shape or self._zeros.device != x.device:
                    self._zeros = torch.zeros_like(x)
                drift, a = self._zeros, 0.0
            if self.stats is None or self.stats.shape[0] != x.shape[0] or self.stats.device != x.device:
                self.stats = torch.zeros(x.shape[0], 3, device=x.device)
            sde_step_(x, drift, c, a, b, self.seed, self.offset, self.stats, backend=self.backend)
        self.offset += 1
        return x

    def normal(self, x: torch.Tensor) -> torch.Tensor:
        """z ~ N(0, I) of x's shape as a tensor, the next draw of this stream (for samplers whose update needs z
        twice, e.g. the adaptive solver's two increments): the fused op's Philox z on a zero state, or
        ``torch.randn`` from ``generator`` where the stream is not fused."""
        if not self.fused(x):
            self.offset += 1
            return randn_like(x, self.generator)
        return self.step_(torch.zeros_like(x, memory_format=torch.contiguous_format), None, 1.0, 0.0, 1.0)

    def finite(self, x: torch.Tensor) -> bool:
        """Whether the last step left x finite (from the fused op's sums on the CPU; a check of x otherwise)."""
        if self.fused(x) and self.stats is not None and x.device.type == "cpu":
            return bool(torch.isfinite(self.stats).all())
        return bool(torch.isfinite(x).all())


def state(x0: torch.Tensor, noise: NoiseStream) -> torch.Tensor:
    """The sampler state: a fresh contiguous copy of x0 (float32 for the fused op; float64 stays float64)."""
    dtype = torch.float32 if noise.backend != "torch" and x0.dtype != torch.float64 else x0.dtype
    return x0.to(dtype, memory_format=torch.contiguous_format, copy=True)
