"""Annealed Langevin dynamics (NCSN Algorithm 1, NCSNv2 Section 3) with denoising, interpolation, inpainting.

For noise level i (σ_i descending, label i) with α_i = ε·(σ_i/σ_L)², T updates

    x ← x + α_i·s_θ(x, i) + √(2α_i)·z,    z ~ N(0, I)

then, with ``denoise``, one Tweedie step x ← x + σ_L²·s_θ(x, L) (NCSNv2 Appendix; Jolicoeur-Martineau et al.).
``backend="torch"`` draws z exactly as the official sampler does (one ``torch.randn`` of x's shape per step, in
order, from ``generator``), so with the same seed it reproduces the official samples. Every other backend runs the
fused op :func:`ncsn_fast.ops.langevin_step_` (one pass, noise generated in the kernel from Philox keyed by
``seed`` at counter (element, global step)): the run is deterministic and resumable from any level
(``start_level``), and the same seed gives the same samples on the CPU and on a GPU up to the network's
floating-point differences.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from tqdm import tqdm

from ncsn_fast.techniques import geometric_ratio, langevin_step_lr

Score = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
BACKENDS = ("auto", "torch", "cpu", "cuda", "triton", "reference")  # all but "torch": the fused op, that backend
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def init_samples(
    n: int,
    shape: Sequence[int],
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
    data: torch.Tensor | None = None,
    sigma: float | None = None,
) -> torch.Tensor:
    """Initial state as the official sampler: uniform in [0, 1]; or, with ``data``, data + σ_1·noise."""
    if n < 1:
        raise ValueError(f"n: number of samples must be at least 1, got {n}")
    if data is None:
        return torch.rand((n, *shape), generator=generator).to(device)
    if sigma is None:
        raise ValueError("sigma: data initialization needs σ_1 (sigma=None given)")
    idx = torch.randint(0, data.shape[0], (n,), generator=generator)
    x = data[idx].float()
    return (x + sigma * torch.randn(x.shape, generator=generator)).to(device)


def _randn(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    if generator is None or generator.device == x.device:
        return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return torch.randn(x.shape, generator=generator, device=generator.device, dtype=x.dtype).to(x.device)


def _level_labels(sigmas: torch.Tensor, labels: Sequence[int] | torch.Tensor | None) -> list[int]:
    if labels is None:
        return list(range(len(sigmas)))
    out = [int(v) for v in labels]
    if len(out) != len(sigmas):
        raise ValueError(f"labels: need one label per σ ({len(sigmas)}), got {len(out)}")
    return out


def _check(x0: torch.Tensor, sigmas: torch.Tensor, n_steps_each: int, step_lr: float, backend: str) -> None:
    if not torch.is_tensor(x0) or not x0.is_floating_point():
        raise TypeError(f"x0: expected a floating-point tensor, got {getattr(x0, 'dtype', type(x0).__name__)}")
    if x0.dim() < 2 or x0.shape[0] < 1:
        raise ValueError(f"x0: expected a non-empty batch (N, ...), got shape {tuple(x0.shape)}")
    if len(sigmas) < 1:
        raise ValueError("sigmas: empty noise schedule")
    if n_steps_each < 0:
        raise ValueError(f"n_steps_each: must be ≥ 0, got {n_steps_each}")
    if not step_lr > 0:
        raise ValueError(f"step_lr: must be positive, got {step_lr}")
    if backend not in BACKENDS:
        raise ValueError(f"backend: unknown sampler backend {backend!r}; choose one of {BACKENDS}")


def _with_precision(score: Score, precision: str, device: torch.device) -> Score:
    """The network under autocast in bf16/fp16; the sampler state and the update stay float32."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision: unknown {precision!r}; choose one of {sorted(PRECISIONS)}")
    dtype = PRECISIONS[precision]
    if dtype is None:
        return score

    def autocast_score(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device.type, dtype=dtype):
            return score(x, y)

    return autocast_score


class _GraphedScore:
    """The network of one Langevin step captured once in a CUDA graph and replayed (no per-kernel launch cost).

    Inputs are copied into static buffers (labels included: they index σ or the embeddings on the device, so one
    graph serves every level); the output buffer is overwritten by the next replay, which is safe because the
    sampler consumes it at once. Only built for CUDA tensors (torch.cuda.CUDAGraph); on failure the caller falls
    back to the eager network with a warning.
    """

    def __init__(self, score: Score, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x.clone(), y.clone()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up outside the graph (allocator, cuDNN/cuBLAS handles, Triton JIT)
            for _ in range(2):
                score(self.x, self.y)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.out = score(self.x, self.y)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.x.copy_(x)
        self.y.copy_(y)
        self.graph.replay()
        return self.out


def _maybe_graphed(score: Score, x: torch.Tensor, cuda_graphs: bool) -> Score:
    if not cuda_graphs:
        return score
    if x.device.type != "cuda":
        raise ValueError(f"cuda_graphs: needs CUDA tensors, x is on {x.device}")
    state: dict[str, Any] = {}

    def graphed(xx: torch.Tensor, yy: torch.Tensor) -> torch.Tensor:
        if "fn" not in state:
            try:
                state["fn"] = _GraphedScore(score, xx, yy)
            except Exception as e:  # capture is not possible for every network / torch build: run eagerly
                import warnings

                warnings.warn(f"CUDA graph capture failed ({type(e).__name__}: {e}); sampling eagerly", stacklevel=2)
                state["fn"] = score
        return state["fn"](xx, yy)

    return graphed


class _TorchUpdate:
    """x + α·s + √(2α)·z with z from ``noise_fn`` (the official sampler's arithmetic and noise stream)."""

    fused = False

    def __init__(self, noise_fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.noise_fn = noise_fn

    def __call__(self, x: torch.Tensor, grad: torch.Tensor, alpha: float, step: int, want_stats: bool):
        z = self.noise_fn(x)
        x = x + alpha * grad.to(x.dtype) + math.sqrt(2.0 * alpha) * z
        if not want_stats:
            return x, None
        norms = [t.flatten(1).norm(dim=1).mean().item() for t in (grad.float(), z, x)]
        return x, norms


class _FusedUpdate:
    """The fused op, in place on a float32 NCHW-contiguous state; its per-sample sums give the diagnostics and a
    cheap non-finite check (every step on the CPU; once per level on a GPU, where the check would synchronize)."""

    fused = True

    def __init__(self, seed: int, backend: str, n: int, device: torch.device) -> None:
        from ncsn_fast.ops.langevin_step import langevin_step_

        self.op, self.seed, self.backend = langevin_step_, seed, backend
        self.stats = torch.zeros(n, 3, device=device)
        self.check_every_step = device.type == "cpu"

    def __call__(self, x: torch.Tensor, grad: torch.Tensor, alpha: float, step: int, want_stats: bool):
        if grad.dtype not in (torch.float32, torch.bfloat16, torch.float16):
            grad = grad.float()
        self.op(x, grad, alpha, self.seed, step, self.stats, backend=self.backend)
        if not want_stats:
            return x, None
        return x, [v.item() for v in self.stats.sqrt().mean(dim=0)]


@torch.no_grad()
def _langevin(
    score: Score,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    labels: list[int],
    n_steps_each: int,
    step_lr: float,
    denoise: bool,
    update: _TorchUpdate | _FusedUpdate,
    pre_step: Callable[[torch.Tensor, int, float], torch.Tensor] | None,
    final_only: bool,
    callback: Callable[[dict[str, Any]], None] | None,
    progress: bool,
    start_level: int = 0,
) -> torch.Tensor | list[torch.Tensor]:
    sig = [float(s) for s in sigmas]
    sigma_last = sig[-1]
    n = x.shape[0]
    images: list[torch.Tensor] = []
    todo = (len(sig) - start_level) * n_steps_each
    bar = tqdm(total=todo, desc="sampling", disable=not progress, dynamic_ncols=True, leave=False)
    for level in range(start_level, len(sig)):
        sigma, label = sig[level], labels[level]
        y = torch.full((n,), label, dtype=torch.long, device=x.device)
        alpha = step_lr * (sigma / sigma_last) ** 2
        for step in range(n_steps_each):
            if pre_step is not None:
                x = pre_step(x, level, sigma)
            grad = score(x, y)
            want = callback is not None and step == n_steps_each - 1
            x, norms = update(x, grad, alpha, level * n_steps_each + step, want)
            if update.fused and update.check_every_step and not torch.isfinite(update.stats).all():
                bar.close()
                raise FloatingPointError(
                    f"sampling diverged: non-finite score or state at level {level} (σ = {sigma:.4g}), step {step}"
                )
            if not final_only:
                images.append(x.to("cpu", copy=True))  # x is updated in place by the fused op
            if want:
                g, zz, xx = norms
                callback(
                    {
                        "level": level,
                        "sigma": sigma,
                        "step_size": alpha,
                        "grad_norm": g,
                        "noise_norm": zz,
                        "x_norm": xx,
                        "snr": math.sqrt(alpha / 2.0) * g / max(zz, 1e-30),
                    }
                )
            bar.update(1)
        # One check per level (at least): a diverging chain stops here instead of writing a grid of NaNs.
        if not (torch.isfinite(update.stats).all() if update.fused else torch.isfinite(x).all()):
            bar.close()
            raise FloatingPointError(
                f"sampling diverged: non-finite values at level {level} (σ = {sigma:.4g}), step {n_steps_each}"
            )
    bar.close()
    if denoise:
        y = torch.full((n,), labels[-1], dtype=torch.long, device=x.device)
        if pre_step is not None:
            x = pre_step(x, len(sig) - 1, sigma_last)
        x = x + sigma_last**2 * score(x, y).to(x.dtype)  # Tweedie's formula: E[x_0 | x] for the last level
        if not torch.isfinite(x).all():
            raise FloatingPointError("sampling diverged: non-finite values after the denoising step")
        if not final_only:
            images.append(x.to("cpu"))
    return x if final_only else images


def annealed_langevin(
    score: Score,
    x0: torch.Tensor,
    sigmas: torch.Tensor | Sequence[float],
    n_steps_each: int,
    step_lr: float,
    denoise: bool = True,
    generator: torch.Generator | None = None,
    backend: str = "auto",
    final_only: bool = True,
    callback: Callable[[dict[str, Any]], None] | None = None,
    labels: Sequence[int] | None = None,
    progress: bool = False,
    noise_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
    seed: int | None = None,
    start_level: int = 0,
    precision: str = "fp32",
    cuda_graphs: bool = False,
) -> torch.Tensor | list[torch.Tensor]:
    """Annealed Langevin dynamics from ``x0``; returns the final x (or all intermediates, on the CPU).

    ``score(x, labels)`` is any callable: a model or an analytic score. ``labels`` maps each level to the
    label passed to ``score`` (default: its position; give the model's own indices when ``sigmas`` is a
    subset of its schedule). ``callback`` receives per-level diagnostics (‖s‖, ‖z‖, ‖x‖, SNR), which are
    computed only when it is given. ``noise_fn(x)`` replaces the standard-normal draw (interpolation uses it)
    and implies the torch update.

    Fused backends (all but ``"torch"``): the noise of step t of level i is keyed by ``seed`` (default: drawn
    from ``generator``) at offset i·T + t, so ``start_level=k`` with x0 = the state after level k − 1 continues a
    run exactly. ``precision`` "bf16"/"fp16" runs the network under autocast; the state stays float32.
    ``cuda_graphs`` (CUDA tensors only) captures the network once in a CUDA graph and replays it every step.
    """
    sigmas = torch.as_tensor(sigmas, dtype=torch.float32)
    _check(x0, sigmas, n_steps_each, step_lr, backend)
    if not 0 <= start_level < len(sigmas):
        raise ValueError(f"start_level: must be in [0, {len(sigmas)}), got {start_level}")
    score = _maybe_graphed(_with_precision(score, precision, x0.device), x0, cuda_graphs)
    if backend == "torch" or noise_fn is not None or (backend == "auto" and x0.dtype == torch.float64):
        # float64 chains (analytic scores, tests of the discretization) keep float64 arithmetic
        noise = noise_fn if noise_fn is not None else (lambda x: _randn(x, generator))
        update: _TorchUpdate | _FusedUpdate = _TorchUpdate(noise)
        x = x0.clone()
    else:
        if seed is None:
            seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=_generator_device(generator)))
        update = _FusedUpdate(seed, backend, x0.shape[0], x0.device)
        x = x0.to(torch.float32, memory_format=torch.contiguous_format, copy=True)
    return _langevin(
        score,
        x,
        sigmas,
        _level_labels(sigmas, labels),
        n_steps_each,
        step_lr,
        denoise,
        update,
        None,
        final_only,
        callback,
        progress,
        start_level,
    )


def _generator_device(generator: torch.Generator | None) -> torch.device:
    return generator.device if generator is not None else torch.device("cpu")


def interpolation_weights(n_interpolations: int) -> torch.Tensor:
    """(cos, sin) of kπ/(2(N+1)) for k = 0 … N+1 (Appendix B.2): endpoints included, shape (N+2, 2)."""
    if n_interpolations < 1:
        raise ValueError(f"n_interpolations: must be at least 1, got {n_interpolations}")
    k = torch.arange(n_interpolations + 2, dtype=torch.float64)
    angle = k * math.pi / (2 * (n_interpolations + 1))
    return torch.stack([angle.cos(), angle.sin()], dim=1)


def interpolate(
    score: Score,
    x0: torch.Tensor,
    sigmas: torch.Tensor | Sequence[float],
    n_steps_each: int,
    step_lr: float,
    n_interpolations: int,
    generators: tuple[torch.Generator, torch.Generator],
    denoise: bool = True,
    labels: Sequence[int] | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Interpolate between samples by mixing their Langevin noise (paper Appendix B.2).

    For each row r of ``x0`` (R rows), two noise sequences z⁽¹⁾ (drawn from ``generators[0]``) and z⁽²⁾ (from
    ``generators[1]``), each of shape x0 per step, and the shared start x0[r]: the k-th of the N+2 samples
    (k = 0 … N+1) uses cos(kπ/(2(N+1)))·z⁽¹⁾ + sin(kπ/(2(N+1)))·z⁽²⁾ at every step. k = 0 is exactly the plain
    sample with generator 1 (``annealed_langevin(..., backend="torch")``), k = N+1 the one with generator 2.
    Returns (R·(N+2), C, H, W), row-major.
    """
    w = interpolation_weights(n_interpolations).to(x0.dtype)
    rows, k = x0.shape[0], w.shape[0]
    cos = w[:, 0].to(x0.device).view(1, k, *([1] * (x0.dim() - 1)))
    sin = w[:, 1].to(x0.device).view(1, k, *([1] * (x0.dim() - 1)))
    base = x0.clone()

    def noise(x: torch.Tensor) -> torch.Tensor:
        z1 = _randn(base, generators[0]).unsqueeze(1)
        z2 = _randn(base, generators[1]).unsqueeze(1)
        return (cos * z1 + sin * z2).reshape(x.shape)

    start = x0.unsqueeze(1).expand(rows, k, *x0.shape[1:]).reshape(rows * k, *x0.shape[1:])
    return annealed_langevin(
        score, start, sigmas, n_steps_each, step_lr, denoise, labels=labels, progress=progress, noise_fn=noise
    )


def inpaint(
    score: Score,
    x0: torch.Tensor,
    data: torch.Tensor,
    mask: torch.Tensor,
    sigmas: torch.Tensor | Sequence[float],
    n_steps_each: int,
    step_lr: float,
    denoise: bool = True,
    generator: torch.Generator | None = None,
    labels: Sequence[int] | None = None,
    restore_known: bool = True,
    progress: bool = False,
) -> torch.Tensor:
    """Inpainting for any image size and mask: before every step the known pixels (``mask`` = 1) are set to
    data + σ_i·z, and the rest evolves by annealed Langevin dynamics (official ``..._inpainting``, generalised
    from "the right half of 32×32" to any mask). ``restore_known`` pastes the exact data back at the end.

    ``data`` broadcasts against ``x0`` ((C, H, W) or (N, C, H, W)); ``mask`` broadcasts against it too.
    """
    sigmas = torch.as_tensor(sigmas, dtype=torch.float32)
    _check(x0, sigmas, n_steps_each, step_lr, "torch")
    data = data.to(x0.device, x0.dtype)
    mask = mask.to(x0.device, x0.dtype)
    try:
        known = torch.broadcast_tensors(x0, data, mask)
    except RuntimeError:
        raise ValueError(
            f"mask: shape {tuple(mask.shape)} and data shape {tuple(data.shape)} must broadcast to the samples' "
            f"shape {tuple(x0.shape)}"
        ) from None
    _, data, mask = known

    def pre_step(x: torch.Tensor, level: int, sigma: float) -> torch.Tensor:
        corrupted = data + sigma * _randn(x, generator)
        return mask * corrupted + (1 - mask) * x

    out = _langevin(
        score,
        x0.clone(),
        sigmas,
        _level_labels(sigmas, labels),
        n_steps_each,
        step_lr,
        denoise,
        _TorchUpdate(lambda x: _randn(x, generator)),
        pre_step,
        True,
        None,
        progress,
    )
    return mask * data + (1 - mask) * out if restore_known else out


def thin_schedule(sigmas: torch.Tensor, every: int, n_steps_each: int) -> tuple[torch.Tensor, list[int], float]:
    """Every ``every``-th σ (the last always kept) and the step size ε that Technique 4 gives for the thinned
    geometric schedule — for fast previews. Returns (sigmas, their labels in the full schedule, ε)."""
    if every < 1:
        raise ValueError(f"every: must be at least 1, got {every}")
    L = len(sigmas)
    idx = list(range(0, L, every))
    if idx[-1] != L - 1:
        idx.append(L - 1)
    thinned = sigmas[idx]
    if len(idx) < 2:
        raise ValueError(f"every: {every} leaves a single noise level of {L}; use a smaller value")
    gamma = geometric_ratio(float(thinned[0]), float(thinned[-1]), len(idx))
    return thinned, idx, langevin_step_lr(gamma, float(thinned[-1]), n_steps_each)


# ---------------------------------------------------------------------------------------------------------------
# Samplers with an evaluation budget. Each is ``NAME(score, x0, nfe, sigma_max, sigma_min, generator=None, **opts)``
# where ``score(x, sigma)`` takes a per-sample σ tensor of shape (N,) — e.g. ``model.score`` of an NCSNv2, which
# Technique 3 makes σ-continuous — and ``nfe`` bounds the number of score calls.
# ---------------------------------------------------------------------------------------------------------------

SigmaScore = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def geometric_sigmas(sigma_max: float, sigma_min: float, n: int) -> torch.Tensor:
    """n levels from σ_max down to σ_min, equally spaced in log σ (float64)."""
    if not (sigma_max > sigma_min > 0):
        raise ValueError(f"sigma_max, sigma_min: need sigma_max > sigma_min > 0, got {sigma_max}, {sigma_min}")
    if n < 1:
        raise ValueError(f"number of noise levels must be at least 1, got {n}")
    if n == 1:
        return torch.tensor([float(sigma_max)], dtype=torch.float64)
    return torch.exp(torch.linspace(math.log(sigma_max), math.log(sigma_min), n, dtype=torch.float64))


def karras_sigmas(sigma_max: float, sigma_min: float, n: int, rho: float = 7.0) -> torch.Tensor:
    """Karras et al. (2022) Eq. (5): σ_i = (σ_max^{1/ρ} + i/(n−1)·(σ_min^{1/ρ} − σ_max^{1/ρ}))^ρ, then σ_n = 0."""
    if not (sigma_max > sigma_min > 0):
        raise ValueError(f"sigma_max, sigma_min: need sigma_max > sigma_min > 0, got {sigma_max}, {sigma_min}")
    if n < 2:
        raise ValueError(f"the Karras schedule needs at least 2 levels, got {n}")
    i = torch.arange(n, dtype=torch.float64)
    s = (sigma_max ** (1 / rho) + i / (n - 1) * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
    return torch.cat([s, torch.zeros(1, dtype=torch.float64)])


def prior_samples(
    n: int, shape: Sequence[int], sigma_max: float, generator: torch.Generator | None = None, device="cpu"
) -> torch.Tensor:
    """x_T ~ N(0, σ_max² I): the start of the VE-SDE samplers (pc, heun, cas)."""
    if n < 1:
        raise ValueError(f"n: number of samples must be at least 1, got {n}")
    return (sigma_max * torch.randn((n, *shape), generator=generator)).to(device)


def _min_nfe(name: str, nfe: int, minimum: int) -> None:
    if not isinstance(nfe, int) or nfe < minimum:
        raise ValueError(f"nfe: the {name} sampler needs at least {minimum} score evaluations, got {nfe}")


def _sig(x: torch.Tensor, value: float) -> torch.Tensor:
    return torch.full((x.shape[0],), float(value), dtype=torch.float32, device=x.device)


def _finite(x: torch.Tensor, name: str, step: int, sigma: float) -> None:
    if not torch.isfinite(x).all():
        raise FloatingPointError(f"{name} sampler diverged: non-finite values at step {step} (σ = {sigma:.4g})")


def ald(
    score: SigmaScore,
    x0: torch.Tensor,
    nfe: int,
    sigma_max: float,
    sigma_min: float,
    generator: torch.Generator | None = None,
    n_steps_each: int = 5,
    step_lr: float | None = None,
    denoise: bool = True,
    progress: bool = False,
) -> torch.Tensor:
    """Annealed Langevin dynamics (NCSNv2 Algorithm 1) on L = ⌊(nfe − denoise)/T⌋ geometric levels, ε from
    Technique 4 (Eq. (6)) unless given. With the model's own schedule and ε it is :func:`annealed_langevin`."""
    _min_nfe("ald", nfe, 2 * n_steps_each + int(denoise))
    L = (nfe - int(denoise)) // n_steps_each
    sigmas = geometric_sigmas(sigma_max, sigma_min, L)
    if step_lr is None:
        step_lr = langevin_step_lr(geometric_ratio(sigma_max, sigma_min, L), sigma_min, n_steps_each)
    sig32 = sigmas.float().to(x0.device)
    return annealed_langevin(
        lambda x, y: score(x, sig32[y]),
        x0,
        sigmas.float(),
        n_steps_each,
        step_lr,
        denoise,
        generator,
        progress=progress,
    )


@torch.no_grad()
def cas(
    score: SigmaScore,
    x0: torch.Tensor,
    nfe: int,
    sigma_max: float,
    sigma_min: float,
    generator: torch.Generator | None = None,
    eta: float | None = None,
    denoise: bool = True,
    progress: bool = False,
) -> torch.Tensor:
    """Consistent annealed sampling (Jolicoeur-Martineau et al., ICLR 2021, Algorithm 2).

    One step per level on a geometric schedule σ_0 = σ_max … σ_{L−1} = σ_min, γ = σ_i/σ_{i+1}:

        x ← x + η·σ_i²·s(x, σ_i) + β·σ_{i+1}·z,   β = √(1 − ((1 − η)·γ)²),

    β chosen so that, if x has noise level σ_i and the score is exact, x has noise level σ_{i+1} after the step
    (the step keeps (1 − η)σ_i of the old noise and adds βσ_{i+1} of new). Needs η > 1 − 1/γ; η = 1 is "denoise,
    then re-noise to σ_{i+1}". The consistency argument assumes a perfect denoiser; a real one leaves posterior
    variance behind, so large η shrinks the samples (on the 64-D mixture of the tests, η = 1 gives per-mode
    standard deviations 30% too small). The default η = 1 − 0.95/γ, just above the bound, keeps them within 8%
    from 25 evaluations on. With ``denoise`` the last level is followed by x ← x + σ_min²·s(x, σ_min).
    Score evaluations: L − 1 updates (+1 for the denoising step) = nfe.
    """
    _min_nfe("cas", nfe, 2)
    L = nfe + (0 if denoise else 1)
    sigmas = geometric_sigmas(sigma_max, sigma_min, L).tolist()
    gamma = sigmas[0] / sigmas[1]
    if eta is None:
        eta = 1 - 0.95 / gamma
    if not (1 - 1 / gamma < eta <= 1):
        raise ValueError(f"eta: must be in ({1 - 1 / gamma:.4f}, 1] for this schedule (γ = {gamma:.4f}), got {eta}")
    beta = math.sqrt(max(0.0, 1 - ((1 - eta) * gamma) ** 2))
    x = x0.clone()
    for i in tqdm(range(L - 1), desc="cas", disable=not progress, leave=False):
        s_i, s_next = sigmas[i], sigmas[i + 1]
        x = x + eta * s_i**2 * score(x, _sig(x, s_i)) + beta * s_next * _randn(x, generator)
        _finite(x, "cas", i, s_i)
    if denoise:
        x = x + sigmas[-1] ** 2 * score(x, _sig(x, sigmas[-1]))
        _finite(x, "cas", L - 1, sigmas[-1])
    return x


@torch.no_grad()
def pc(
    score: SigmaScore,
    x0: torch.Tensor,
    nfe: int,
    sigma_max: float,
    sigma_min: float,
    generator: torch.Generator | None = None,
    snr: float = 0.16,
    n_corrector: int = 1,
    progress: bool = False,
) -> torch.Tensor:
    """Predictor–corrector sampling of the VE SDE (Song et al., ICLR 2021, Algorithms 2–4).

    On N = ⌊nfe/(1 + n_corrector)⌋ geometric levels σ_0 = σ_max … σ_{N−1} = σ_min (σ_N = 0), at each level
    ``n_corrector`` Langevin corrector steps with the step size set by the signal-to-noise ratio r = ``snr``,
    ε = 2(r‖z‖/‖s‖)² (batch-mean norms, Algorithm 5), x ← x + ε·s + √(2ε)·z; then one reverse-diffusion
    predictor step x ← x + (σ_i² − σ_{i+1}²)·s(x, σ_i) + √(σ_i² − σ_{i+1}²)·z. The last predictor step returns
    its mean (no noise), i.e. the denoised sample. Score evaluations: N·(1 + n_corrector) ≤ nfe.
    """
    if n_corrector < 0:
        raise ValueError(f"n_corrector: must be ≥ 0, got {n_corrector}")
    if not snr > 0:
        raise ValueError(f"snr: must be positive, got {snr}")
    _min_nfe("pc", nfe, 2 * (1 + n_corrector))
    N = nfe // (1 + n_corrector)
    sigmas = geometric_sigmas(sigma_max, sigma_min, N).tolist() + [0.0]
    x = x0.clone()
    for i in tqdm(range(N), desc="pc", disable=not progress, leave=False):
        s_i, s_next = sigmas[i], sigmas[i + 1]
        sig = _sig(x, s_i)
        for _ in range(n_corrector):
            grad = score(x, sig)
            z = _randn(x, generator)
            g_norm = grad.flatten(1).norm(dim=1).mean()
            z_norm = z.flatten(1).norm(dim=1).mean()
            eps = 2 * (snr * z_norm / g_norm.clamp_min(1e-30)) ** 2
            x = x + eps * grad + torch.sqrt(2 * eps) * z
        var = s_i**2 - s_next**2
        x = x + var * score(x, sig)
        if i < N - 1:
            x = x + math.sqrt(var) * _randn(x, generator)
        _finite(x, "pc", i, s_i)
    return x


@torch.no_grad()
def heun(
    score: SigmaScore,
    x0: torch.Tensor,
    nfe: int,
    sigma_max: float,
    sigma_min: float,
    generator: torch.Generator | None = None,
    rho: float = 7.0,
    churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = float("inf"),
    s_noise: float = 1.0,
    progress: bool = False,
) -> torch.Tensor:
    """Heun's method on the probability-flow ODE dx/dσ = −σ·s(x, σ) (Karras et al., NeurIPS 2022, Algorithm 2).

    σ schedule of Eq. (5) with ρ = ``rho`` over N = ⌊(nfe + 1)/2⌋ levels from σ_max to σ_min, then σ_N = 0; the
    last step (σ_min → 0) is an Euler step, as in that paper. ``churn`` > 0 adds the stochastic "churn":
    σ̂ = σ_i(1 + γ_i), γ_i = min(churn/N, √2 − 1) for σ_i in [s_tmin, s_tmax], x̂ = x + √(σ̂² − σ_i²)·s_noise·z.
    Score evaluations: 2N − 1 ≤ nfe.
    """
    _min_nfe("heun", nfe, 3)
    if churn < 0:
        raise ValueError(f"churn: must be ≥ 0, got {churn}")
    N = (nfe + 1) // 2
    sigmas = karras_sigmas(sigma_max, sigma_min, N, rho).tolist()
    x = x0.clone()
    for i in tqdm(range(N), desc="heun", disable=not progress, leave=False):
        s_cur, s_next = sigmas[i], sigmas[i + 1]
        g = min(churn / N, math.sqrt(2) - 1) if (churn > 0 and s_tmin <= s_cur <= s_tmax) else 0.0
        s_hat = s_cur * (1 + g)
        if g > 0:
            x = x + math.sqrt(s_hat**2 - s_cur**2) * s_noise * _randn(x, generator)
        d = -s_hat * score(x, _sig(x, s_hat))  # dx/dσ
        x_next = x + (s_next - s_hat) * d
        if s_next > 0:
            d2 = -s_next * score(x_next, _sig(x, s_next))
            x_next = x + (s_next - s_hat) * 0.5 * (d + d2)
        x = x_next
        _finite(x, "heun", i, s_cur)
    return x


SAMPLERS: dict[str, Callable[..., torch.Tensor]] = {"ald": ald, "cas": cas, "pc": pc, "heun": heun}


def get_sampler(name: str) -> Callable[..., torch.Tensor]:
    if name not in SAMPLERS:
        raise ValueError(f"--sampler: unknown sampler {name!r}; choose one of {sorted(SAMPLERS)}")
    return SAMPLERS[name]
