"""A noise schedule tuned to the model: Align Your Steps (Sabour, Fidler, Kreis 2024, "Align Your Steps: Optimizing
Sampling Schedules in Diffusion Models", arXiv:2404.14507), and its storage beside the weights.

The VE process here is x_σ = x_0 + σ·z, which is EDM's σ(t) = t: forward dx = √(2σ) dW in σ, reverse SDE
dx = −2σ·∇log p_σ(x) dσ + √(2σ) dW̄ = −(2/σ)·(D(x, σ) − x) dσ + √(2σ) dW̄ with D(x, σ) = x + σ²·s(x, σ) (Tweedie).
A first-order stochastic solver (stochastic DDIM; :func:`~ncsn_fast.sampling.dpm.dpmpp_2m_sde` on its first step)
solves the *linearised* SDE exactly on each interval [σ_{i+1}, σ_i] of the schedule: the same SDE with D frozen at
the interval's start, D(x_{σ_i}, σ_i). Girsanov's theorem bounds the KL divergence between the true and the
linearised path measures by ½·E∫‖drift difference‖²/g² dσ (the paper's KLUB, Sec. 3.1, derived in its Appendix
A.2); with the drift difference (2/σ)·(D(x_σ, σ) − D(x_{σ_i}, σ_i)) and g² = 2σ it is, per interval (the paper's
Theorem 3.1 in the VE/EDM case σ(t) = t, derived here),

    KLUB(σ_{i+1}, σ_i) = ∫_{σ_{i+1}}^{σ_i} σ⁻³ · E_{x_0 ∼ data, x_σ, x_{σ_i}} ‖D(x_σ, σ) − D(x_{σ_i}, σ_i)‖² dσ,

the expectation over the forward process's joint law of (x_σ, x_{σ_i}), which is the reverse path's law for an exact
model. It is estimated by Monte Carlo on training data as in the paper — x_0 from the data, σ from an importance
distribution on the interval — with π(σ) ∝ σ⁻³ here (the integrand's own weight, so the estimate is
½(σ_{i+1}⁻² − σ_i⁻²) times the mean of ‖ΔD‖²; whether the paper's π is this one was not checked),
x_{σ_i} = x_0 + σ_i·z and x_σ from the Brownian bridge between x_0 and x_{σ_i}. The schedule's
objective is the sum over its intervals.

``solver="ode"`` is this module's own discretisation-error proxy for a first-order deterministic solver (DDIM /
DPM-Solver-1 in λ = −ln σ), not the paper's: the DDIM step from σ_i to σ_{i+1} freezes D in
x_{σ_{i+1}}/σ_{i+1} = x_{σ_i}/σ_i + ∫ D/σ² dσ, so its local error relative to σ_{i+1} is ∫ (D(x_σ, σ) − D_i)/σ² dσ,
and by Cauchy–Schwarz ‖·‖² ≤ (σ_{i+1}⁻¹ − σ_i⁻¹)·∫ σ⁻² ‖ΔD‖² dσ. It is estimated on the *deterministic* path:
x_{σ_i} = x_0 + σ_i z from the data, x_σ the DDIM step from it to σ (the flow to first order), σ ∼ π(σ) ∝ σ⁻². (The
SDE's Brownian coupling would add the noise of x_σ − x_{σ_i} to ΔD, which no ODE path has.) On N(0, 1) data it
halves DDIM's output KL at nfe 4, 6 and 10 (the tests); the paper reports that its SDE schedules serve ODE solvers
too — this proxy is offered for deterministic samplers, keyed apart from the SDE's.

The optimisation is the paper's Algorithm 1 (iterative coordinate descent of the interior points, endpoints fixed,
with early stopping): interior σ's of one parity are independent given the others (each enters two neighbouring
intervals only), so each iteration updates the odd-indexed points, then the even-indexed ones, each to the best of a
log-spaced set of candidates between its neighbours (and its current value) — the candidates compared on common
random numbers (the same x_0, z, and σ quantiles), so the comparison is not drowned by Monte Carlo noise. The window
halves each iteration. After each iteration the whole objective is estimated on one fixed evaluation set; the run
stops when it improves by less than ``tol`` (relative), and the best schedule seen is returned. Early stopping is
more than a saving (the paper's Appendix A.3, "Early Stopping is a Necessity"): the KLUB bounds the KL of the whole
path, and minimised to the end it crowds steps at small σ, where the path's own noise dominates ‖ΔD‖² while the
samples hardly change — measured on N(0, 1) at nfe 4, six rounds from Karras take the output's KL from 0.50 to 1.51.
The default of 4 rounds, with the window halving, keeps each point within about its neighbours' span of the start.

Equation numbers: this text was written without the paper at hand, so it names the sections, Theorem 3.1,
Algorithm 1 and Appendix A.2/A.3 and writes every formula out rather than citing equation numbers it cannot check.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
from pathlib import Path
from typing import Any

import torch

from ncsn_fast.sampling import runtime
from ncsn_fast.sampling.schedules import geometric_sigmas, karras_sigmas
from ncsn_fast.validation import check_batch, check_choice, check_input_for, check_int, check_positive

SOLVERS = ("sde", "ode")
INITS = ("karras", "geometric")
CHUNK = 512  # images per network call


def _interval_sigma(u: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, solver: str) -> torch.Tensor:
    """σ in [lo, hi] at quantile u of π(σ) ∝ σ⁻³ (sde) or σ⁻² (ode), by the inverse CDF."""
    if solver == "sde":
        a, b = lo.pow(-2), hi.pow(-2)
        return (a - u * (a - b)).pow(-0.5)
    a, b = lo.reciprocal(), hi.reciprocal()
    return (a - u * (a - b)).reciprocal()


def _weight(lo: torch.Tensor, hi: torch.Tensor, solver: str) -> torch.Tensor:
    """The interval's factor: ∫σ⁻³ = ½(lo⁻² − hi⁻²) (sde); (lo⁻¹ − hi⁻¹)·∫σ⁻² = (lo⁻¹ − hi⁻¹)² (ode)."""
    if solver == "sde":
        return 0.5 * (lo.pow(-2) - hi.pow(-2))
    return (lo.reciprocal() - hi.reciprocal()).square()


class _Draws:
    """Common random numbers for M samples of one interval: x_0 (indices into the data), z (x at the anchor), ε (the
    bridge), u (σ's quantile)."""

    def __init__(self, data: torch.Tensor, m: int, generator: torch.Generator | None) -> None:
        shape = (m, *data.shape[1:])
        idx = torch.randint(len(data), (m,), generator=generator)
        self.x0 = data[idx.to(data.device)]
        self.z = torch.randn(shape, generator=generator, dtype=torch.float64).to(data.device, data.dtype)
        self.eps = torch.randn(shape, generator=generator, dtype=torch.float64).to(data.device, data.dtype)
        self.u = torch.rand(m, generator=generator, dtype=torch.float64)


class _Objective:
    """The per-interval objective by Monte Carlo, counting network evaluations (images)."""

    def __init__(self, score: runtime.Score, data: torch.Tensor, solver: str) -> None:
        self.score, self.data, self.solver = score, data, solver
        self.evaluations = 0

    def _denoise(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """D(x, σ) = x + σ²·s(x, σ) for per-sample σ (float64, (B,)), in chunks of CHUNK images."""
        out = []
        for i in range(0, len(x), CHUNK):
            xi, si = x[i : i + CHUNK], sigma[i : i + CHUNK].to(x.device, x.dtype)
            s = self.score(xi, si).to(x.dtype)
            out.append(xi + si.view(-1, *([1] * (x.dim() - 1))) ** 2 * s)
        self.evaluations += len(x)
        return torch.cat(out)

    def anchor(self, d: _Draws, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(x_hi, D(x_hi, hi)) for each (candidate, sample): ``hi`` (C,) → tensors (C·M, …)."""
        c, m = len(hi), len(d.x0)
        h = hi.repeat_interleave(m)
        view = (-1, *([1] * (d.x0.dim() - 1)))
        x = d.x0.repeat(c, *([1] * (d.x0.dim() - 1))) + h.view(view).to(d.x0) * d.z.repeat(c, *([1] * (d.z.dim() - 1)))
        return x, self._denoise(x, h)

    def intervals(
        self, d: _Draws, lo: torch.Tensor, hi: torch.Tensor, anchor: tuple[torch.Tensor, torch.Tensor]
    ) -> torch.Tensor:
        """The objective of the intervals [lo_c, hi_c] (C,) on the draws ``d``, with x_hi and D(x_hi, hi) given: x_σ
        on the Brownian bridge x_0 → x_hi (sde) or the DDIM step from x_hi (ode)."""
        c, m = len(lo), len(d.x0)
        rep = (c, *([1] * (d.x0.dim() - 1)))
        l, h = lo.repeat_interleave(m), hi.repeat_interleave(m)
        sigma = _interval_sigma(d.u.repeat(c), l, h, self.solver).clamp(min=l, max=h)
        view = (-1, *([1] * (d.x0.dim() - 1)))
        t = (sigma.square() / h.square()).view(view).to(d.x0)  # σ²/σ_hi²
        std = (sigma.square() * (1 - sigma.square() / h.square())).clamp(min=0).sqrt().view(view).to(d.x0)
        x_hi, d_hi = anchor
        if self.solver == "sde":
            x0 = d.x0.repeat(rep)
            x = x0 + t * (x_hi - x0) + std * d.eps.repeat(rep)  # the Brownian bridge x_0 → x_hi at σ
        else:
            r = (sigma / h).view(view).to(d.x0)
            x = r * x_hi + (1 - r) * d_hi  # the deterministic path: the DDIM step from x_hi to σ
        diff = (self._denoise(x, sigma) - d_hi).double().flatten(1).square().sum(1).view(c, m).mean(1)
        return _weight(lo, hi, self.solver) * diff

    def total(self, sigmas: torch.Tensor, draws: list[_Draws]) -> float:
        """The schedule's objective: the sum over its intervals, interval i on ``draws[i]``."""
        value = 0.0
        for i in range(len(sigmas) - 1):
            lo, hi = sigmas[i + 1 : i + 2], sigmas[i : i + 1]
            value += float(self.intervals(draws[i], lo, hi, self.anchor(draws[i], hi))[0])
        return value


def _check(score: Any, data: Any, nfe: Any, sigma_max: Any, sigma_min: Any, solver: Any) -> torch.Tensor:
    check_int("nfe", nfe, 2)
    check_positive("sigma_max", sigma_max)
    check_positive("sigma_min", sigma_min)
    if not sigma_min < sigma_max:
        raise ValueError(f"sigma_min: must be below sigma_max ({sigma_max}), got {sigma_min}")
    check_choice("solver", solver, SOLVERS)
    data = check_batch("data", data)
    if data.dim() < 2:
        raise ValueError(f"data: expected a batch of training samples (N, …) with N ≥ 1, got shape {tuple(data.shape)}")
    check_input_for(score, "data", data[:1])
    return data


def initial_schedule(init: str | torch.Tensor, nfe: int, sigma_max: float, sigma_min: float) -> torch.Tensor:
    """The starting schedule (float64, (nfe,)): "karras" (ρ = 7), "geometric", or a given descending one."""
    if isinstance(init, str):
        check_choice("init", init, INITS)
        karras = init == "karras"
        s = karras_sigmas(sigma_max, sigma_min, nfe)[:-1] if karras else geometric_sigmas(sigma_max, sigma_min, nfe)
    else:
        s = torch.as_tensor(init, dtype=torch.float64).flatten().clone()
        close = len(s) == nfe and math.isclose(float(s[0]), sigma_max, rel_tol=1e-6)
        if not (close and math.isclose(float(s[-1]), sigma_min, rel_tol=1e-6) and bool((s[1:] < s[:-1]).all())):
            raise ValueError(
                f"init: a schedule of {nfe} strictly decreasing σ from {sigma_max} to {sigma_min}, got {init}"
            )
    s[0], s[-1] = sigma_max, sigma_min  # exactly: the ρ-power and exp round them
    return s


@torch.no_grad()
def schedule_objective(
    score: Any,
    data: torch.Tensor,
    sigmas: torch.Tensor | list[float],
    *,
    solver: str = "sde",
    samples: int = 256,
    generator: torch.Generator | None = None,
) -> float:
    """The objective :func:`align_your_steps` minimises (the KLUB for ``solver="sde"``, module docstring) of the
    schedule ``sigmas`` (descending σ_max … σ_min, no trailing 0), by Monte Carlo with ``samples`` per interval."""
    s = torch.as_tensor(sigmas, dtype=torch.float64).flatten()
    if s[-1] == 0:
        s = s[:-1]
    data = _check(score, data, len(s), float(s[0]), float(s[-1]), solver)
    if not bool((s[1:] < s[:-1]).all()):
        raise ValueError(f"sigmas: must decrease strictly, got {s.tolist()}")
    check_int("samples", samples, 1)
    objective = _Objective(runtime.score_function(score), data, solver)
    return objective.total(s, [_Draws(data, samples, generator) for _ in range(len(s) - 1)])


@torch.no_grad()
def align_your_steps(
    score: Any,
    data: torch.Tensor,
    nfe: int,
    sigma_max: float,
    sigma_min: float,
    *,
    solver: str = "sde",
    iterations: int = 4,
    samples: int = 16,
    candidates: int = 6,
    eval_samples: int = 64,
    tol: float = 0.01,
    init: str | torch.Tensor = "karras",
    generator: torch.Generator | None = None,
    progress: bool | Any = False,
    info: dict | None = None,
) -> torch.Tensor:
    """A schedule of ``nfe`` noise levels σ_max = σ_0 > … > σ_{nfe−1} = σ_min (float64, (nfe,); the sampler appends
    the trailing 0) minimising the KLUB of Align Your Steps (Sabour et al. 2024) on the training ``data``.

    The objective (module docstring; the paper's Sec. 3.1 and Theorem 3.1 in the VE case σ(t) = t) is
    Σ_i ∫_{σ_{i+1}}^{σ_i} σ⁻³ E‖D(x_σ, σ) − D(x_{σ_i}, σ_i)‖² dσ, by Monte Carlo: x_0 from ``data`` (N, …) in the
    model's data space, σ ∼ π(σ) ∝ σ⁻³ on the interval, x_{σ_i} = x_0 + σ_i z and x_σ on the bridge between them.
    ``solver="ode"`` minimises this module's deterministic-solver proxy instead (not the paper's; module docstring).
    The optimisation is the paper's Algorithm 1: from ``init`` ("karras" ρ = 7, "geometric", or a schedule), at most
    ``iterations`` rounds of coordinate descent on the interior points (odd indices, then even), each point moved to
    the best of ``candidates`` log-spaced values between its neighbours and its current one, ``samples`` draws per
    candidate on common random numbers; early stopping when the objective on a fixed set of ``eval_samples`` draws per
    interval improves by less than ``tol`` (relative). The best schedule seen is returned: never worse than ``init`` on
    that set. Cost per round ≈ (nfe − 2)·samples·(3·candidates + 4) images through the network, plus
    2·(nfe − 1)·eval_samples per evaluation (nfe 10 with the defaults: 3 968 per round; 3 rounds and the first
    evaluation 13 056).

    ``score``: s(x, σ) with a per-sample σ (N,), or a σ-continuous model (NCSNv2: Technique 3). Deterministic given
    ``generator`` (fresh entropy when None). ``progress``: a tqdm bar over the coordinate updates. ``info``, when a
    dict, receives ``objective_init``, ``objective`` (on the evaluation set), ``history`` (per round),
    ``iterations``, ``evaluations`` (images through the network) and ``stopped`` (why). Raises ValueError naming
    ``nfe``, ``sigma_max``/``sigma_min``, ``solver``, ``data`` (wrong shape for the model), ``init``,
    ``iterations``/``samples``/``candidates``/``eval_samples``, ``tol``.
    """
    data = _check(score, data, nfe, sigma_max, sigma_min, solver)
    for name, value in (("iterations", iterations), ("samples", samples), ("candidates", candidates),
                        ("eval_samples", eval_samples)):  # fmt: skip
        check_int(name, value, 1)
    check_positive("tol", tol, allow_zero=True)
    sigma_max, sigma_min = float(sigma_max), float(sigma_min)
    sigmas = initial_schedule(init, nfe, sigma_max, sigma_min)
    if generator is None:
        generator = torch.Generator().manual_seed(int(torch.randint(2**62, (1,))))
    objective = _Objective(runtime.score_function(score), data, solver)
    evaluation = [_Draws(data, eval_samples, generator) for _ in range(nfe - 1)]
    best = objective.total(sigmas, evaluation) if nfe > 2 else 0.0
    history, stopped, best_sigmas = [best], "no interior points" if nfe == 2 else "iterations", sigmas.clone()
    bar = runtime.progress_bar(iterations * (nfe - 2), f"align_your_steps nfe {nfe}", progress)
    rounds = 0
    for r in range(iterations if nfe > 2 else 0):
        rounds += 1
        width = 0.5**r  # fraction of the neighbours' log-span searched around the current value
        for parity in (1, 0):
            for k in range(1, nfe - 1):
                if k % 2 != parity:
                    continue
                lo, hi, now = (float(v) for v in (sigmas[k + 1], sigmas[k - 1], sigmas[k]))
                llo, lhi, lnow = math.log(lo), math.log(hi), math.log(now)
                half = 0.5 * width * (lhi - llo)
                a, b = max(llo, lnow - half), min(lhi, lnow + half)
                grid = torch.linspace(a, b, candidates + 2, dtype=torch.float64)[1:-1].exp()
                cand = torch.cat([torch.tensor([now], dtype=torch.float64), grid])
                cand = cand[(cand > lo) & (cand < hi)]
                up, down = _Draws(data, samples, generator), _Draws(data, samples, generator)
                his = torch.full((1,), hi, dtype=torch.float64)
                x_hi, d_hi = objective.anchor(up, his)
                n = len(cand)
                rep = (n, *([1] * (x_hi.dim() - 1)))
                upper = objective.intervals(up, cand, his.expand(n), (x_hi.repeat(rep), d_hi.repeat(rep)))
                lower = objective.intervals(down, torch.full_like(cand, lo), cand, objective.anchor(down, cand))
                sigmas[k] = cand[int(torch.argmin(upper + lower))]
                bar.update(1)
        value = objective.total(sigmas, evaluation)
        history.append(value)
        if value < best:
            improved = (best - value) / best if best > 0 else 0.0
            best, best_sigmas = value, sigmas.clone()
            if improved < tol:
                stopped = f"early stop: improved by {improved:.2%} < tol"
                break
        else:
            stopped = "early stop: no improvement"
            break
    bar.close()
    if info is not None:
        info.update(objective_init=history[0], objective=best, history=history, iterations=rounds,
                    evaluations=objective.evaluations, stopped=stopped)  # fmt: skip
    return best_sigmas


# ---- storage: <checkpoint>.schedules.json beside the weights ----------------------------------------------------

SCHEDULES_FORMAT = "ncsn_fast.schedules"
SCHEDULES_VERSION = 1
SIDECAR_SUFFIX = ".schedules.json"
FOLDER_FILE = "schedules.json"  # inside a save_pretrained folder (the bundled model's included)


def _weights(model_source: str | os.PathLike | None, ema: bool = True) -> tuple[Path, Path]:
    """(the weights file that is hashed, the schedules file) of what a user names: a checkpoint file (sidecar
    ``<file>.schedules.json``), a save_pretrained folder (``schedules.json`` inside, the weights
    ``model.safetensors`` or, with ``ema=False``, ``model_raw.safetensors`` when it has one), a training workdir or
    run folder (its latest checkpoint), or None: the bundled digits model."""
    from ncsn_fast.checkpoint import SAFETENSORS_RAW, SAFETENSORS_WEIGHTS
    from ncsn_fast.pretrained import pretrained_path, resolve_checkpoint

    path = pretrained_path("digits") if model_source is None else resolve_checkpoint(model_source)
    if path.is_dir():
        weights = path / (SAFETENSORS_RAW if not ema and (path / SAFETENSORS_RAW).is_file() else SAFETENSORS_WEIGHTS)
        return weights, path / FOLDER_FILE
    return path, path.with_name(path.name + SIDECAR_SUFFIX)


def schedules_path(model_source: str | os.PathLike | None) -> Path:
    """Where the tuned schedules of a model are stored (see :func:`save_tuned_schedule`)."""
    return _weights(model_source)[1]


def weights_hash(path: str | os.PathLike) -> str:
    """SHA-256 of a weights file (hex, first 16 digits): a retrained checkpoint gets another key."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def schedule_key(solver: str, nfe: int, sigma_max: float, sigma_min: float, weights: str, ema: bool = True) -> dict:
    """The key a stored schedule is found by."""
    return {"solver": solver, "nfe": int(nfe), "sigma_max": float(sigma_max), "sigma_min": float(sigma_min),
            "weights_sha256": weights, "ema": bool(ema)}  # fmt: skip


def _matches(entry: dict, key: dict) -> bool:
    try:
        return (
            entry["solver"] == key["solver"]
            and int(entry["nfe"]) == key["nfe"]
            and entry["weights_sha256"] == key["weights_sha256"]
            and bool(entry.get("ema", True)) == key["ema"]
            and math.isclose(float(entry["sigma_max"]), key["sigma_max"], rel_tol=1e-6)
            and math.isclose(float(entry["sigma_min"]), key["sigma_min"], rel_tol=1e-6)
        )
    except (KeyError, TypeError, ValueError):
        return False


def _read(path: Path) -> list[dict] | None:
    """The entries of a schedules file; None (with a warning naming the file) when it cannot be read."""
    try:
        payload = json.loads(path.read_text())
        if not isinstance(payload, dict) or payload.get("format") != SCHEDULES_FORMAT:
            raise ValueError(f"not a {SCHEDULES_FORMAT} file")
        entries = payload["schedules"]
        if not isinstance(entries, list):
            raise ValueError("'schedules' is not a list")
        return [e for e in entries if isinstance(e, dict)]
    except (OSError, ValueError, KeyError) as exc:
        warnings.warn(f"tuned schedules: ignoring {str(path)!r}: unreadable ({exc})", stacklevel=3)
        return None


def save_tuned_schedule(
    model_source: str | os.PathLike | None,
    sigmas: torch.Tensor | list[float],
    *,
    solver: str = "sde",
    ema: bool = True,
    info: dict | None = None,
) -> Path:
    """Store ``sigmas`` (descending σ_max … σ_min, the nfe levels without the trailing 0) for the model at
    ``model_source`` (a checkpoint file, save_pretrained folder, training workdir, or None: the bundled digits model)
    and ``solver`` ("sde"/"ode"), replacing an entry with the same key (:func:`schedule_key`: solver, nfe, σ_max,
    σ_min, the weights file's SHA-256, EMA or raw weights). The file — ``<checkpoint>.schedules.json`` beside a
    checkpoint file, ``schedules.json`` in a folder — is rewritten atomically (a corrupt one is replaced, with a
    warning); ``info`` (JSON-serialisable) is stored beside the σ's. Returns the file's path."""
    from ncsn_fast.io import write_json

    check_choice("solver", solver, SOLVERS)
    s = torch.as_tensor(sigmas, dtype=torch.float64).flatten()
    if len(s) < 2 or not bool((s[1:] < s[:-1]).all()) or float(s[-1]) <= 0:
        raise ValueError(f"sigmas: need at least 2 positive, strictly decreasing σ, got {s.tolist()}")
    weights, path = _weights(model_source, ema)
    key = schedule_key(solver, len(s), float(s[0]), float(s[-1]), weights_hash(weights), ema)
    entries = (_read(path) or []) if path.exists() else []
    entries = [e for e in entries if not _matches(e, key)]
    entries.append({**key, "sigmas": [float(v) for v in s], **({"info": info} if info else {})})
    entries.sort(key=lambda e: (str(e.get("solver")), int(e.get("nfe", 0)), str(e.get("weights_sha256"))))
    write_json(path, {"format": SCHEDULES_FORMAT, "version": SCHEDULES_VERSION, "schedules": entries})
    return path


def load_tuned_schedule(
    model_source: str | os.PathLike | None,
    nfe: int,
    *,
    sigma_max: float,
    sigma_min: float,
    solver: str = "sde",
    ema: bool = True,
) -> torch.Tensor | None:
    """The stored schedule (float64, (nfe,), σ_max … σ_min) of :func:`save_tuned_schedule` for this key, or None: no
    file, no entry for the key (another nfe, σ range or solver, or weights that changed since it was tuned), or a
    corrupt file or entry (with a warning naming the file)."""
    check_int("nfe", nfe, 2)
    check_choice("solver", solver, SOLVERS)
    weights, path = _weights(model_source, ema)
    if not path.is_file():
        return None
    entries = _read(path)
    if entries is None:
        return None
    key = schedule_key(solver, nfe, sigma_max, sigma_min, weights_hash(weights), ema)
    for entry in entries:
        if _matches(entry, key):
            try:
                s = torch.tensor([float(v) for v in entry["sigmas"]], dtype=torch.float64)
            except (KeyError, TypeError, ValueError):
                s = torch.empty(0)
            if len(s) != nfe or not bool((s[1:] < s[:-1]).all()) or not bool((s > 0).all()):
                warnings.warn(f"tuned schedules: ignoring a malformed entry in {str(path)!r} (nfe {nfe})", stacklevel=2)
                return None
            return s
    return None
